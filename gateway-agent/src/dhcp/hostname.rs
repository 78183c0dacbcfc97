//! Client host names (options 12 and 81) turned into one safe DNS label, and made unique.
//!
//! Whatever a client sends, what leaves this module is an RFC 1123 label: lowercase
//! `[a-z0-9-]`, no leading or trailing `-`, 1 to 63 bytes. Only the first label of a dotted
//! name is used (the zone is ours, not the client's to choose).

use super::config::ClientKey;

use super::packet::Fqdn;

/// Longest DNS label (RFC 1035 §2.3.4).
pub(crate) const MAX_LABEL: usize = 63;

/// Names no client may take even when no service uses them: `localhost` would shadow the
/// loopback name, `wpad` and `isatap` are classic proxy and tunnel auto-discovery hijacks.
pub(crate) const ALWAYS_RESERVED: &[&str] = &["localhost", "wpad", "isatap"];

/// The label a client asks for: option 81 wins over option 12 (RFC 4702 §3.1).
pub(crate) fn requested(fqdn: Option<&Fqdn>, hostname: Option<&[u8]>) -> Option<String> {
    fqdn.and_then(from_fqdn)
        .or_else(|| hostname.and_then(sanitize))
}

/// The first label of an option 81 name.
pub(crate) fn from_fqdn(fqdn: &Fqdn) -> Option<String> {
    if fqdn.flags & Fqdn::FLAG_E != 0 {
        // Wire format: a length byte, then the label. Lengths over 63 are compression
        // pointers or garbage, neither valid here (RFC 4702 §2.3.1).
        let (&len, rest) = fqdn.name.split_first()?;
        let len = usize::from(len);
        if len == 0 || len > MAX_LABEL {
            return None;
        }
        sanitize(rest.get(..len)?)
    } else {
        // The deprecated ASCII encoding; same rules as option 12.
        sanitize(&fqdn.name)
    }
}

/// One RFC 1123 label from raw bytes: the first dot-separated part, lowercased, every run of
/// other bytes (spaces, `_`, `/`, non-ASCII, controls) turned into one `-`, trimmed of `-`,
/// cut to 63 bytes. `None` when nothing is left.
pub(crate) fn sanitize(raw: &[u8]) -> Option<String> {
    // Some clients NUL-terminate; what follows a NUL is not part of the name.
    let raw = raw.split(|&b| b == 0).next().unwrap_or_default();
    let first = raw.split(|&b| b == b'.').next().unwrap_or_default();
    let mut label = String::with_capacity(first.len().min(MAX_LABEL));
    for &byte in first {
        let mapped = match byte {
            b'a'..=b'z' | b'0'..=b'9' => byte as char,
            b'A'..=b'Z' => byte.to_ascii_lowercase() as char,
            _ => '-',
        };
        if mapped == '-' && (label.is_empty() || label.ends_with('-')) {
            continue;
        }
        label.push(mapped);
        if label.len() == MAX_LABEL {
            break;
        }
    }
    let label = label.trim_end_matches('-');
    (!label.is_empty()).then(|| label.to_owned())
}

/// `wanted` if nobody else holds it, else the same with a suffix derived from `key` (stable
/// across restarts and clients' retries), e.g. `laptop-a1b2`; a longer suffix in the unlikely
/// case that one is taken too. `None` if even that is taken.
pub(crate) fn unique(
    wanted: &str,
    key: &ClientKey,
    taken: impl Fn(&str) -> bool,
) -> Option<String> {
    if !taken(wanted) {
        return Some(wanted.to_owned());
    }
    let hash = fnv1a(&key_bytes(key));
    [format!("{:04x}", hash & 0xffff), format!("{hash:08x}")]
        .into_iter()
        .map(|suffix| {
            let mut end = wanted.len().min(MAX_LABEL - suffix.len() - 1);
            while !wanted.is_char_boundary(end) {
                end -= 1;
            }
            let base = wanted[..end].trim_end_matches('-');
            format!("{base}-{suffix}")
        })
        .find(|name| !taken(name))
}

/// The bytes a client key is stored and hashed as: a tag, then the MAC or the identifier.
pub(crate) fn key_bytes(key: &ClientKey) -> Vec<u8> {
    match key {
        ClientKey::Mac(mac) => std::iter::once(0).chain(mac.octets()).collect(),
        ClientKey::ClientId(id) => std::iter::once(1).chain(id.iter().copied()).collect(),
    }
}

/// 32-bit FNV-1a: tiny, and fixed forever (std's hasher is not promised to be).
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |hash, &byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mac::MacAddr;

    #[test]
    fn hostile_and_odd_names() {
        let long = "a".repeat(300);
        let cases: &[(&[u8], Option<&str>)] = &[
            (b"laptop", Some("laptop")),
            (b"Laptop-01", Some("laptop-01")),
            (b"laptop.evil.example", Some("laptop")),
            (b"../../etc/passwd", None),
            (b"..", None),
            (b".", None),
            (b"", None),
            (b"---", None),
            (b"-lead-and-trail-", Some("lead-and-trail")),
            (b"my laptop", Some("my-laptop")),
            (b"a  b\t\tc", Some("a-b-c")),
            (b"under_score", Some("under-score")),
            (b"x; rm -rf /", Some("x-rm-rf")),
            (b"$(reboot)", Some("reboot")),
            (b"name\0garbage.after.nul", Some("name")),
            (b"\0hidden", None),
            ("Jöhn's iPhone".as_bytes(), Some("j-hn-s-iphone")),
            ("日本語".as_bytes(), None),
            (b"\xff\xfe\x80", None),
            (b"a\r\nb", Some("a-b")),
            (long.as_bytes(), Some(&long[..63])),
        ];
        for (raw, expected) in cases {
            assert_eq!(
                sanitize(raw).as_deref(),
                *expected,
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn output_is_always_a_label() {
        // Every single byte value, and a label cut right after a dash.
        for byte in 0..=255u8 {
            if let Some(label) = sanitize(&[b'a', byte, b'b']) {
                assert_valid(&label);
            }
        }
        let mut raw = "b".repeat(62);
        raw.push_str("-x");
        let label = sanitize(raw.as_bytes()).unwrap();
        assert_eq!(label, "b".repeat(62));
        assert_valid(&label);
    }

    #[test]
    fn fqdn_option_wire_and_ascii() {
        let wire = |name: &[u8]| Fqdn {
            flags: Fqdn::FLAG_E | Fqdn::FLAG_S,
            name: name.to_vec(),
        };
        assert_eq!(
            from_fqdn(&wire(b"\x06Laptop\x04home\x04arpa\x00")).as_deref(),
            Some("laptop")
        );
        // Compression pointer, overlong label, truncated label, empty name.
        assert_eq!(from_fqdn(&wire(b"\xc0\x0c")), None);
        let mut overlong = vec![64u8];
        overlong.extend(std::iter::repeat_n(b'a', 64));
        assert_eq!(from_fqdn(&wire(&overlong)), None);
        assert_eq!(from_fqdn(&wire(b"\x10abc")), None);
        assert_eq!(from_fqdn(&wire(b"\x00")), None);
        assert_eq!(from_fqdn(&wire(b"")), None);
        let ascii = Fqdn {
            flags: 0,
            name: b"Desk Top.example.".to_vec(),
        };
        assert_eq!(from_fqdn(&ascii).as_deref(), Some("desk-top"));
        // 81 wins over 12; 12 is the fallback when 81 is unusable.
        assert_eq!(
            requested(Some(&ascii), Some(b"other")).as_deref(),
            Some("desk-top")
        );
        assert_eq!(
            requested(Some(&wire(b"\xc0\x0c")), Some(b"other")).as_deref(),
            Some("other")
        );
    }

    #[test]
    fn suffixes_are_deterministic_and_fit() {
        let key = ClientKey::Mac(MacAddr::new([2, 0, 0, 0, 0, 1]));
        let other = ClientKey::Mac(MacAddr::new([2, 0, 0, 0, 0, 2]));
        let taken = |name: &str| name == "laptop";
        let first = unique("laptop", &key, taken).unwrap();
        assert_eq!(first, unique("laptop", &key, taken).unwrap());
        assert_ne!(first, unique("laptop", &other, taken).unwrap());
        assert!(first.starts_with("laptop-") && first.len() == "laptop-".len() + 4);
        assert_eq!(unique("free", &key, taken).as_deref(), Some("free"));

        let long = "c".repeat(63);
        let name = unique(&long, &key, |n| n == long).unwrap();
        assert_valid(&name);
        // The short suffix taken as well: the long one.
        let short = first.clone();
        let second = unique("laptop", &key, |n| n == "laptop" || n == short).unwrap();
        assert_eq!(second.len(), "laptop-".len() + 8);
        assert_eq!(unique("laptop", &key, |_| true), None);
    }

    fn assert_valid(label: &str) {
        assert!(!label.is_empty() && label.len() <= MAX_LABEL, "{label}");
        assert!(
            label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
            "{label}"
        );
        assert!(!label.starts_with('-') && !label.ends_with('-'), "{label}");
    }
}
