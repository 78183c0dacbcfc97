//! The gateway's eBPF programs. Each program is a thin entry point; the decisions live in small
//! modules so they read like the policy in docs/ARCHITECTURE.md.
#![no_std]
#![no_main]

mod counters;
mod events;
mod inside_ingress;
mod inside_steer;
mod inside_vlan;
mod maps;
mod outside_egress;
mod outside_ingress;
mod packet;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any reachable panic, so this is never called at run time.
    loop {}
}
