//! The config's MAC parser: [`MacAddr`] (in `crate::mac`) with the rules for a MAC one host owns.

pub use crate::mac::MacAddr;

/// A MAC a single host can own: the multicast bit clear, not all zero.
pub(crate) fn unicast_mac(text: &str) -> Result<MacAddr, String> {
    let mac: MacAddr = text.parse()?;
    if !mac.is_unicast() {
        return Err(format!("{text:?} is a multicast MAC address"));
    }
    if mac.is_zero() {
        return Err(format!("{text:?} is the all-zero MAC address"));
    }
    Ok(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

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
