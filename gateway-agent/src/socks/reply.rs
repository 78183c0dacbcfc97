//! What the SOCKS client is told: reply codes for each failure, the replies the codec cannot
//! build (requests it rejected), and the isolation key of a request.

use std::hash::BuildHasher;
use std::net::IpAddr;

use tor_socksproto::{SocksAuth, SocksCmd, SocksStatus};

use crate::egress::{EgressError, Isolation};

/// RFC 1928 §6 reply codes we send.
pub(crate) mod code {
    pub const GENERAL_FAILURE: u8 = 0x01;
    pub const NOT_ALLOWED: u8 = 0x02;
    pub const HOST_UNREACHABLE: u8 = 0x04;
    pub const TTL_EXPIRED: u8 = 0x06;
    pub const COMMAND_NOT_SUPPORTED: u8 = 0x07;
    pub const ADDRTYPE_NOT_SUPPORTED: u8 = 0x08;
}

/// The reply status for an egress or lookup failure. Not ready (Tor unreachable) is a general
/// failure: the client should not conclude the host is down.
pub(crate) fn status_for(err: &EgressError) -> SocksStatus {
    SocksStatus::from(match err {
        EgressError::NotReady(_) | EgressError::Failed(_) => code::GENERAL_FAILURE,
        EgressError::Refused(_) => code::NOT_ALLOWED,
        EgressError::NotFound(_) | EgressError::Unreachable(_) => code::HOST_UNREACHABLE,
    })
}

/// The failure counter an error belongs to.
pub(crate) fn reason_for(err: &EgressError) -> &'static str {
    match err {
        EgressError::NotReady(_) => "not_ready",
        EgressError::Failed(_) => "general_failure",
        EgressError::Refused(_) => "not_allowed",
        EgressError::NotFound(_) => "host_not_found",
        EgressError::Unreachable(_) => "host_unreachable",
    }
}

/// What a SOCKS5 request the codec refused should be answered with, judged from its bytes
/// (`VER CMD RSV ATYP …`): 07 for a command other than CONNECT, RESOLVE and RESOLVE_PTR, 08
/// for an address type other than IPv4, name and IPv6, else 01.
pub(crate) fn socks5_rejection(request: &[u8]) -> u8 {
    let known_cmd = |cmd: u8| {
        let cmd = SocksCmd::from(cmd);
        cmd == SocksCmd::CONNECT || cmd == SocksCmd::RESOLVE || cmd == SocksCmd::RESOLVE_PTR
    };
    match (request.get(1), request.get(3)) {
        (Some(&cmd), _) if !known_cmd(cmd) => code::COMMAND_NOT_SUPPORTED,
        (_, Some(&atyp)) if ![1, 3, 4].contains(&atyp) => code::ADDRTYPE_NOT_SUPPORTED,
        _ => code::GENERAL_FAILURE,
    }
}

/// A SOCKS5 reply with `code` and an unspecified IPv4 bind address.
pub(crate) fn socks5_reply(code: u8) -> [u8; 10] {
    [5, code, 0, 1, 0, 0, 0, 0, 0, 0]
}

/// The SOCKS4 "request rejected or failed" reply.
pub(crate) const SOCKS4_REJECTED: [u8; 8] = [0, 0x5b, 0, 0, 0, 0, 0, 0];

/// SOCKS5 "no acceptable methods".
pub(crate) const SOCKS5_NO_METHODS: [u8; 2] = [5, 0xff];

/// The isolation key of a request: the client's address, plus its SOCKS credentials when it
/// gave any (Tor's IsolateSOCKSAuth), hashed with a per-process key so that the key (which may
/// be logged at DEBUG) does not carry the password.
pub(crate) fn isolation_key(
    client: IpAddr,
    auth: &SocksAuth,
    hasher: &impl BuildHasher,
) -> Isolation {
    let credentials = match auth {
        SocksAuth::Username(user, pass) => Some((1u8, user.as_slice(), pass.as_slice())),
        SocksAuth::Socks4(user) => Some((2u8, user.as_slice(), &[][..])),
        _ => None,
    };
    match credentials {
        None => Isolation::client(client),
        Some(parts) => Isolation(format!(
            "client:{client}/auth:{:016x}",
            hasher.hash_one(parts)
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::hash_map::RandomState;

    use super::*;

    #[test]
    fn error_codes() {
        let cases = [
            (EgressError::NotReady("x".into()), 0x01),
            (EgressError::Failed("x".into()), 0x01),
            (EgressError::Refused("x".into()), 0x02),
            (EgressError::NotFound("x".into()), 0x04),
            (EgressError::Unreachable("x".into()), 0x04),
        ];
        for (err, want) in cases {
            assert_eq!(u8::from(status_for(&err)), want, "{err}");
        }
    }

    #[test]
    fn rejections() {
        assert_eq!(socks5_rejection(&[5, 2, 0, 1]), 0x07, "BIND");
        assert_eq!(socks5_rejection(&[5, 3, 0, 1]), 0x07, "UDP ASSOCIATE");
        assert_eq!(socks5_rejection(&[5, 0x99, 0, 9]), 0x07, "command first");
        assert_eq!(socks5_rejection(&[5, 1, 0, 9]), 0x08);
        assert_eq!(socks5_rejection(&[5, 0xf0, 0, 2]), 0x08);
        assert_eq!(
            socks5_rejection(&[5, 1, 0, 3]),
            0x01,
            "a bad name is a general failure"
        );
        assert_eq!(socks5_rejection(&[5]), 0x01);
    }

    #[test]
    fn isolation_keys() {
        let hasher = RandomState::new();
        let a: IpAddr = "198.51.100.10".parse().unwrap();
        let b: IpAddr = "198.51.100.11".parse().unwrap();
        let none = isolation_key(a, &SocksAuth::NoAuth, &hasher);
        assert_eq!(none, Isolation::client(a));
        assert_ne!(none, isolation_key(b, &SocksAuth::NoAuth, &hasher));
        let alice = SocksAuth::Username(b"alice".to_vec(), b"pw".to_vec());
        let bob = SocksAuth::Username(b"bob".to_vec(), b"pw".to_vec());
        let k1 = isolation_key(a, &alice, &hasher);
        assert_eq!(k1, isolation_key(a, &alice, &hasher), "stable");
        assert_ne!(k1, isolation_key(a, &bob, &hasher));
        assert_ne!(
            k1,
            isolation_key(b, &alice, &hasher),
            "same credentials, other client"
        );
        assert_ne!(k1, none);
        assert!(!k1.0.contains("alice") && !k1.0.contains("pw"));
        // user "ab" + password "" differs from user "a" + password "b".
        let split1 = SocksAuth::Username(b"ab".to_vec(), b"".to_vec());
        let split2 = SocksAuth::Username(b"a".to_vec(), b"b".to_vec());
        assert_ne!(
            isolation_key(a, &split1, &hasher),
            isolation_key(a, &split2, &hasher)
        );
        let s4 = SocksAuth::Socks4(b"alice".to_vec());
        assert_ne!(isolation_key(a, &s4, &hasher), none);
    }
}
