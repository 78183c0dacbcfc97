//! [`MacAddr`]: the agent's one Ethernet address type, written `02:00:00:00:00:01`.
//!
//! DHCP, the lease store, the uplink's macvlan and the dataplane's maps all carry MACs; they
//! all use this type, so there is one formatter and one parser. `gateway-common`'s map keys
//! stay raw `[u8; 6]` (they are shared with the eBPF side, `repr(C)`); the `From` impls below
//! convert at that boundary.

use std::fmt;
use std::str::FromStr;

use gateway_common::maps::MacKey;
use serde::{Deserialize, Serialize};

/// An Ethernet (EUI-48) address.
///
/// Serialized as its six bytes (a JSON array), which is how the lease store has always
/// written MACs.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct MacAddr([u8; 6]);

impl MacAddr {
    /// The address with these bytes.
    pub const fn new(octets: [u8; 6]) -> Self {
        MacAddr(octets)
    }

    /// The six bytes, as netlink and DHCP carry them.
    pub const fn octets(self) -> [u8; 6] {
        self.0
    }

    /// Whether the group (multicast) bit is clear.
    pub const fn is_unicast(self) -> bool {
        self.0[0] & 1 == 0
    }

    /// Whether all six bytes are zero.
    pub const fn is_zero(self) -> bool {
        let [a, b, c, d, e, f] = self.0;
        a | b | c | d | e | f == 0
    }

    /// `bytes` as a MAC, if there are exactly six (netlink's `IFLA_ADDRESS`, a store key).
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(MacAddr)
    }
}

impl From<[u8; 6]> for MacAddr {
    fn from(octets: [u8; 6]) -> Self {
        MacAddr(octets)
    }
}

impl From<MacAddr> for [u8; 6] {
    fn from(mac: MacAddr) -> Self {
        mac.0
    }
}

impl From<MacKey> for MacAddr {
    fn from(key: MacKey) -> Self {
        MacAddr(key.addr)
    }
}

impl From<MacAddr> for MacKey {
    fn from(mac: MacAddr) -> Self {
        MacKey::new(mac.0)
    }
}

impl fmt::Display for MacAddr {
    /// Lowercase hex with colons: `02:00:00:00:00:0a`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl FromStr for MacAddr {
    /// The problem, worded for a config error.
    type Err = String;

    /// `aa:bb:cc:dd:ee:ff`, or with `-`, in either case.
    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not a MAC address like \"02:00:00:00:00:01\"");
        let parts: Vec<&str> = text.split([':', '-']).collect();
        if parts.len() != 6 {
            return Err(bad());
        }
        let mut mac = [0u8; 6];
        for (byte, part) in mac.iter_mut().zip(&parts) {
            // from_str_radix would accept "+a".
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        Ok(MacAddr(mac))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text() {
        let mac = MacAddr::new([2, 0, 0, 0, 0, 10]);
        assert_eq!("02:00:00:00:00:0a".parse(), Ok(mac));
        assert_eq!("02-00-00-00-00-0A".parse(), Ok(mac));
        assert_eq!(mac.to_string(), "02:00:00:00:00:0a");
        assert_eq!(
            MacAddr::new([0x9a, 0xd7, 0x38, 0x0c, 0x62, 0x2e]).to_string(),
            "9a:d7:38:0c:62:2e"
        );
        assert!("02:00:00:00:00".parse::<MacAddr>().is_err());
        assert!("02:00:00:00:00:zz".parse::<MacAddr>().is_err());
        assert!("02:00:00:00:00:+a".parse::<MacAddr>().is_err());
    }

    #[test]
    fn bytes_and_predicates() {
        assert!(MacAddr::default().is_zero());
        assert!(!MacAddr::new([0, 0, 0, 0, 0, 1]).is_zero());
        assert!(MacAddr::new([2, 0, 0, 0, 0, 1]).is_unicast());
        assert!(!MacAddr::new([1, 0, 0x5e, 0, 0, 1]).is_unicast());
        assert_eq!(
            MacAddr::from_slice(&[2, 0, 0, 0, 0, 1]),
            Some(MacAddr::new([2, 0, 0, 0, 0, 1]))
        );
        assert_eq!(MacAddr::from_slice(&[2, 0, 0]), None);
        assert_eq!(MacAddr::from_slice(&[2, 0, 0, 0, 0, 1, 0]), None);
        let key = MacKey::from(MacAddr::new([2, 0, 0, 0, 0, 7]));
        assert_eq!(key, MacKey::new([2, 0, 0, 0, 0, 7]));
        assert_eq!(MacAddr::from(key), MacAddr::new([2, 0, 0, 0, 0, 7]));
    }

    /// The lease store holds MACs as JSON arrays of six numbers; the type must not change that.
    #[test]
    fn serialized_as_six_bytes() {
        let mac = MacAddr::new([2, 0, 0, 0, 0, 255]);
        assert_eq!(
            serde_json::to_string(&mac).ok().as_deref(),
            Some("[2,0,0,0,0,255]")
        );
        assert_eq!(
            serde_json::from_str::<MacAddr>("[2,0,0,0,0,255]").ok(),
            Some(mac)
        );
        assert!(serde_json::from_str::<MacAddr>("[2,0,0]").is_err());
    }
}
