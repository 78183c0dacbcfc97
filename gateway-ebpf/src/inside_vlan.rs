//! TC ingress on the inside NIC, behind the XDP program: drops frames that carried an
//! 802.1Q/802.1ad tag the XDP program could not see. A NIC with receive VLAN offload (and a
//! bridge or veth in front of the gateway, which moves the tag into the packet's metadata)
//! hands XDP the frame without its tag, so a tagged frame would pass as an untagged one.

use aya_ebpf::{
    bindings::{TC_ACT_SHOT, TC_ACT_UNSPEC},
    macros::classifier,
    programs::TcContext,
};
use gateway_common::DropReason;

use crate::counters::count_drop;

#[classifier]
pub fn inside_vlan(ctx: TcContext) -> i32 {
    // SAFETY: the kernel hands the program a valid __sk_buff.
    let tagged = unsafe { (*ctx.skb.skb).vlan_present } != 0;
    if tagged {
        count_drop(DropReason::VlanTagged);
        return TC_ACT_SHOT as i32;
    }
    TC_ACT_UNSPEC // the stack (and the steering) decide the rest
}
