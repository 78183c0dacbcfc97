//! TC egress on the outside device: nothing sourced from the inside subnet ever leaves.
//!
//! The agent never forwards, so such a packet means a misconfiguration or a bypass; it is
//! dropped, counted and logged (at most once a second per CPU, so whoever can trigger such
//! packets cannot flood the journal; the log names no destination).

use aya_ebpf::{
    bindings::{TC_ACT_SHOT, TC_ACT_UNSPEC},
    macros::classifier,
    programs::TcContext,
};
use aya_log_ebpf::warn;
use gateway_common::DropReason;

use crate::{
    counters::{count_drop, log_allowed},
    maps::config,
    packet::{ETH_HLEN, ETH_P_ARP, ETH_P_IP},
};

#[classifier]
pub fn outside_egress(ctx: TcContext) -> i32 {
    match check(&ctx) {
        Ok(()) => TC_ACT_UNSPEC, // let the next program or the stack decide
        Err(reason) => {
            count_drop(reason);
            TC_ACT_SHOT as i32
        }
    }
}

#[inline(always)]
fn check(ctx: &TcContext) -> Result<(), DropReason> {
    let Ok(ethertype) = ctx.load::<u16>(12).map(u16::from_be) else {
        return Ok(()); // not Ethernet-sized: nothing the stack will send anyway
    };
    // The source address: IPv4 source, or the ARP sender protocol address.
    let src_offset = match ethertype {
        ETH_P_IP => ETH_HLEN + 12,
        ETH_P_ARP => ETH_HLEN + 14,
        _ => return Ok(()),
    };
    let Some(cfg) = config() else {
        return Err(DropReason::NotConfigured);
    };
    let Ok(src) = ctx.load::<u32>(src_offset) else {
        return Err(DropReason::Truncated);
    };
    if cfg.is_inside(src) {
        if log_allowed() {
            warn!(
                ctx,
                "dropped a packet leaving the outside interface with inside source {:i}",
                u32::from_be(src)
            );
        }
        return Err(DropReason::InsideSourceEgress);
    }
    Ok(())
}
