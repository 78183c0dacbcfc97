//! [`MacAddr`]: an Ethernet address, written `02:00:00:00:00:01`.

use std::fmt;
use std::str::FromStr;

/// An Ethernet (EUI-48) address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
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

/// A MAC a single host can own: the multicast bit clear, not all zero.
pub(crate) fn unicast_mac(text: &str) -> Result<MacAddr, String> {
    let mac: MacAddr = text.parse()?;
    if !mac.is_unicast() {
        return Err(format!("{text:?} is a multicast MAC address"));
    }
    if mac.0 == [0; 6] {
        return Err(format!("{text:?} is the all-zero MAC address"));
    }
    Ok(mac)
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
        assert!("02:00:00:00:00".parse::<MacAddr>().is_err());
        assert!("02:00:00:00:00:zz".parse::<MacAddr>().is_err());
        assert!("02:00:00:00:00:+a".parse::<MacAddr>().is_err());
    }

    #[test]
    fn unicast() {
        assert!(unicast_mac("01:00:5e:00:00:01").is_err());
        assert!(unicast_mac("00:00:00:00:00:00").is_err());
        assert_eq!(
            unicast_mac("02:11:22:33:44:55").map(MacAddr::octets),
            Ok([2, 0x11, 0x22, 0x33, 0x44, 0x55])
        );
    }
}
