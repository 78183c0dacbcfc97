//! The DHCP wire decoder (`gateway_agent::dhcp::wire`), as both the inside server and the
//! uplink client call it: any bytes, either direction, then what each side reads from the
//! result. A panic is a bug.
#![no_main]

use gateway_agent::dhcp::wire::{self, Sender};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for sender in [Sender::Client, Sender::Server] {
        let Ok(packet) = wire::decode(data, sender) else {
            continue;
        };
        // What each side reads from it must not panic either.
        let _ = (packet.chaddr(), packet.message_type(), packet.option(61));
        let message = packet.message();
        let _ = (
            message.chaddr(),
            message.opts().msg_type(),
            message.to_string(),
        );
        // The server's view of a client message.
        if sender == Sender::Client {
            let _ = gateway_agent::dhcp::decode_request(data);
        }
    }
});
