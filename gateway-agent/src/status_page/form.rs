//! `application/x-www-form-urlencoded` bodies, the only kind the page's forms send.

/// At most this many fields in one form.
const MAX_FIELDS: usize = 16;

/// The fields of `body`, decoded; `None` for anything malformed (bad `%`, not UTF-8, too
/// many fields).
pub fn parse(body: &[u8]) -> Option<Vec<(String, String)>> {
    let mut fields = Vec::new();
    if body.is_empty() {
        return Some(fields);
    }
    for pair in body.split(|&b| b == b'&') {
        if pair.is_empty() {
            continue;
        }
        if fields.len() == MAX_FIELDS {
            return None;
        }
        let (name, value) = match pair.iter().position(|&b| b == b'=') {
            Some(at) => (&pair[..at], &pair[at + 1..]),
            None => (pair, &b""[..]),
        };
        fields.push((decode(name)?, decode(value)?));
    }
    Some(fields)
}

/// The value of the first field called `name`.
pub fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn decode(text: &[u8]) -> Option<String> {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.iter();
    while let Some(&b) = bytes.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = (*bytes.next()? as char).to_digit(16)?;
                let lo = (*bytes.next()? as char).to_digit(16)?;
                out.push((hi * 16 + lo) as u8);
            }
            other => out.push(other),
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_decoded() {
        let fields =
            parse(b"url=http%3A%2F%2Fwww.origin.test%2Fa+b&token=1.ab&empty=&flag").unwrap();
        assert_eq!(field(&fields, "url"), Some("http://www.origin.test/a b"));
        assert_eq!(field(&fields, "token"), Some("1.ab"));
        assert_eq!(field(&fields, "empty"), Some(""));
        assert_eq!(field(&fields, "flag"), Some(""));
        assert_eq!(field(&fields, "missing"), None);
        assert_eq!(parse(b""), Some(vec![]));
    }

    #[test]
    fn malformed_bodies_are_refused() {
        for bad in [
            &b"a=%"[..],
            &b"a=%4"[..],
            &b"a=%zz"[..],
            &b"a=%ff%fe"[..],
            &b"%=1"[..],
        ] {
            assert_eq!(parse(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
        let many = vec!["a=1"; MAX_FIELDS + 1].join("&");
        assert_eq!(parse(many.as_bytes()), None);
    }
}
