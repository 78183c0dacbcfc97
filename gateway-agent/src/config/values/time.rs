//! Durations: [`Seconds`], and the parser that reads `90`, `"90s"`, `"30m"`, `"12h"`, `"7d"`.

use std::fmt;
use std::time::Duration;

use toml::Value;

use crate::config::reader;

/// A duration in whole seconds that fits a `u32`, as DHCP lease times and DNS TTLs carry it on
/// the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Seconds(u32);

impl Seconds {
    /// `secs` seconds.
    pub const fn new(secs: u32) -> Self {
        Seconds(secs)
    }

    /// The number of seconds, for the wire.
    pub const fn get(self) -> u32 {
        self.0
    }

    /// The same span as a [`Duration`], for timers.
    pub const fn as_duration(self) -> Duration {
        Duration::from_secs(self.0 as u64)
    }
}

impl From<Seconds> for Duration {
    fn from(secs: Seconds) -> Duration {
        secs.as_duration()
    }
}

impl From<Seconds> for u64 {
    fn from(secs: Seconds) -> u64 {
        u64::from(secs.0)
    }
}

impl fmt::Display for Seconds {
    /// `90 s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} s", self.0)
    }
}

impl PartialEq<u32> for Seconds {
    fn eq(&self, other: &u32) -> bool {
        self.0 == *other
    }
}

/// A duration: seconds as an integer, or a string with a unit (`"90s"`, `"30m"`, `"12h"`,
/// `"7d"`), as dnsmasq writes lease times.
pub(crate) fn duration(value: Value) -> Result<Seconds, String> {
    let hint = "a number of seconds or a string like \"30m\", \"12h\", \"7d\"";
    let secs: u64 = match value {
        Value::Integer(n) => u64::try_from(n).map_err(|_| format!("{n} is negative"))?,
        Value::String(text) => {
            // Not split_at: a multi-byte last character would make it panic.
            let Some((digits, unit)) = text.split_at_checked(text.len().saturating_sub(1)) else {
                return Err(format!("{text:?} is not {hint}"));
            };
            let multiplier = match unit {
                "s" => 1,
                "m" => 60,
                "h" => 3600,
                "d" => 86_400,
                _ => return Err(format!("{text:?} is not {hint}")),
            };
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("{text:?} is not {hint}"));
            }
            digits
                .parse::<u64>()
                .map_err(|_| format!("{text:?} is too long"))?
                .saturating_mul(multiplier)
        }
        other => return Err(reader::expected(hint, &other)),
    };
    u32::try_from(secs)
        .map(Seconds)
        .map_err(|_| format!("{secs} seconds is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Value {
        Value::String(s.into())
    }

    #[test]
    fn durations() {
        assert_eq!(duration(Value::Integer(90)), Ok(Seconds::new(90)));
        assert_eq!(duration(text("12h")), Ok(Seconds::new(43_200)));
        assert_eq!(duration(text("2m")), Ok(Seconds::new(120)));
        assert!(duration(text("12")).is_err());
        assert!(duration(text("h")).is_err());
        assert!(duration(text("12é")).is_err());
        assert!(duration(text("-1h")).is_err());
        assert!(duration(text("99999999999999999999999d")).is_err());
        assert!(duration(text("50000d")).is_err(), "over u32 seconds");
        assert!(duration(Value::Integer(-5)).is_err());
        assert_eq!(Seconds::new(90).as_duration(), Duration::from_secs(90));
        assert_eq!(Seconds::new(90).to_string(), "90 s");
    }
}
