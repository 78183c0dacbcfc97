//! sk_lookup in the agent's namespace: inside DNS (UDP and TCP port 53) to any host but the
//! gateway goes to the DNS server's transparent sockets, other inside TCP to any host but the
//! gateway to the transparent listener.
//!
//! The agent's policy route (`iif <inside> lookup <table>` with `local 0.0.0.0/0 dev lo`) makes
//! the kernel deliver everything from the inside locally, so the socket lookup decides where
//! it lands. What is for the gateway's own inside address (and DHCP broadcasts) takes the
//! normal lookup. Steered TCP goes to the listener in `STEER_SOCKETS`; **an empty slot never
//! falls through**: with `local 0.0.0.0/0` the normal lookup would hand the connection to any
//! host socket bound to 0.0.0.0, so a missing listener (start-up, a crash, a stop) means
//! `SK_DROP`. Anything else from the inside to other hosts is dropped too.

use aya_ebpf::{
    bindings::sk_action::{SK_DROP, SK_PASS},
    macros::sk_lookup,
    programs::SkLookupContext,
};
use gateway_common::maps::{
    steer, CONFIG_FLAG_STEER_DNS, CONFIG_FLAG_STEER_TCP, IPPROTO_TCP, IPPROTO_UDP,
};

use crate::{
    maps::{config, STEER_SOCKETS},
    packet::{DHCP_SERVER_PORT, DNS_PORT},
};

#[sk_lookup]
pub fn inside_steer(ctx: SkLookupContext) -> u32 {
    // SAFETY: the kernel hands the program a valid bpf_sk_lookup context.
    let lookup = unsafe { &*ctx.lookup };
    let Some(cfg) = config() else {
        // Nothing configured: the inside XDP program drops everything anyway.
        return SK_PASS;
    };
    if lookup.ingress_ifindex != cfg.inside_ifindex {
        return SK_PASS; // not from the inside: loopback, the uplink
    }
    if lookup.local_ip4 == cfg.inside_ip {
        return SK_PASS; // the gateway's own services
    }
    if lookup.protocol == u32::from(IPPROTO_UDP) && lookup.local_port == u32::from(DHCP_SERVER_PORT)
    {
        return SK_PASS; // DHCP broadcasts to the server
    }
    if lookup.local_port == u32::from(DNS_PORT) && cfg.flags & CONFIG_FLAG_STEER_DNS != 0 {
        let slot = if lookup.protocol == u32::from(IPPROTO_UDP) {
            steer::DNS_UDP
        } else {
            steer::DNS_TCP
        };
        return match STEER_SOCKETS.redirect_sk_lookup(&ctx, slot, 0) {
            Ok(()) => SK_PASS,
            Err(_) => SK_DROP,
        };
    }
    if lookup.protocol == u32::from(IPPROTO_TCP) && cfg.flags & CONFIG_FLAG_STEER_TCP != 0 {
        return match STEER_SOCKETS.redirect_sk_lookup(&ctx, steer::TCP, 0) {
            Ok(()) => SK_PASS,
            Err(_) => SK_DROP,
        };
    }
    SK_DROP
}
