//! DNS names as the config accepts them: [`DnsLabel`] (one host label) and [`DomainName`].
//! Only the parsers make them, so a service holding one never checks it again.

use std::fmt;
use std::ops::Deref;
use std::str::FromStr;

/// Longest DNS label (RFC 1035 §2.3.4).
const MAX_LABEL: usize = 63;

/// Longest domain name in text form without the trailing dot (255 bytes on the wire).
const MAX_NAME: usize = 253;

/// One RFC 1123 host label, lowercased: ASCII letters, digits and inner `-`, 1 to 63 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DnsLabel(String);

impl DnsLabel {
    /// The label, lowercase.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for DnsLabel {
    /// The problem, worded for a config error.
    type Err = String;

    /// Accepts any case; the label is kept lowercase (DNS names are case-insensitive).
    fn from_str(text: &str) -> Result<Self, String> {
        let ok = !text.is_empty()
            && text.len() <= MAX_LABEL
            && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !text.starts_with('-')
            && !text.ends_with('-');
        if ok {
            Ok(DnsLabel(text.to_ascii_lowercase()))
        } else {
            Err(format!(
                "{text:?} is not a host name label (letters, digits and inner '-', at most 63)"
            ))
        }
    }
}

/// A domain name of [`DnsLabel`]s, lowercased and without the trailing dot, like `home.arpa`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DomainName(String);

impl DomainName {
    /// The name, lowercase, without the trailing dot.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for DomainName {
    /// The problem, worded for a config error.
    type Err = String;

    /// Accepts one trailing dot and any case.
    fn from_str(text: &str) -> Result<Self, String> {
        let trimmed = text.strip_suffix('.').unwrap_or(text);
        if trimmed.is_empty() || trimmed.len() > MAX_NAME {
            return Err(format!("{text:?} is not a domain name like \"home.arpa\""));
        }
        trimmed
            .split('.')
            .map(DnsLabel::from_str)
            .collect::<Result<Vec<_>, _>>()
            .map(|labels| {
                let labels: Vec<&str> = labels.iter().map(DnsLabel::as_str).collect();
                DomainName(labels.join("."))
            })
            .map_err(|problem| format!("{text:?} is not a domain name: {problem}"))
    }
}

/// The string-like impls both name types share: read them as `&str`, print and compare them.
macro_rules! text_impls {
    ($name:ident) => {
        impl Deref for $name {
            type Target = str;

            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<$name> for String {
            fn from(name: $name) -> String {
                name.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

text_impls!(DnsLabel);
text_impls!(DomainName);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(
            "NAS-1".parse::<DnsLabel>().map(String::from),
            Ok("nas-1".into())
        );
        assert!("-nas".parse::<DnsLabel>().is_err());
        assert!("a.b".parse::<DnsLabel>().is_err());
        assert!("".parse::<DnsLabel>().is_err());
        assert!("a".repeat(64).parse::<DnsLabel>().is_err());
        assert!("a".repeat(63).parse::<DnsLabel>().is_ok());
    }

    #[test]
    fn domains() {
        let name: DomainName = "Home.Arpa.".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(name, "home.arpa");
        assert_eq!(name.to_string(), "home.arpa");
        assert!("home..arpa".parse::<DomainName>().is_err());
        assert!("../etc".parse::<DomainName>().is_err());
        assert!("".parse::<DomainName>().is_err());
        assert!(".".parse::<DomainName>().is_err());
        let long = [
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(62),
        ]
        .join(".");
        assert_eq!(long.len(), 254);
        assert!(long.parse::<DomainName>().is_err());
        assert!(long[1..].parse::<DomainName>().is_ok());
    }
}
