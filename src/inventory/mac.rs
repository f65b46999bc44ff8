//! MAC addresses as SMD spells them.
//!
//! A NIC's MAC is both a lookup key (the EthernetInterface ID, which is the
//! MAC in lower-case hex without separators) and a displayed value (lower
//! case with colons). Clients, BMCs and switches write MACs with colons,
//! dashes, Cisco dots or nothing at all, in either case; parsing them all
//! into the same six bytes is what makes the 409 on a duplicate MAC and
//! the DHCP lookup by MAC reliable. Only 48-bit addresses are accepted:
//! SMD's IDs, DHCP's `chaddr` matching and the boot scripts all assume them.

/// A string that is not a 48-bit MAC address in any accepted spelling.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("invalid MAC address {0:?}")]
pub struct MacError(pub String);

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Exactly twelve hex digits, nothing else.
fn from_hex12(hex: &[u8]) -> Option<[u8; 6]> {
    if hex.len() != 12 {
        return None;
    }
    let mut out = [0u8; 6];
    for (o, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        let &[hi, lo] = pair else {
            return None;
        };
        *o = (hex_value(hi)? << 4) | hex_value(lo)?;
    }
    Some(out)
}

/// Splits on `sep`, requires `groups` groups of `width` characters each,
/// and collects the digits into `out` (twelve of them, or `None`).
fn grouped(s: &[u8], sep: u8, groups: usize, width: usize) -> Option<[u8; 12]> {
    let mut out = [0u8; 12];
    let mut n = 0;
    let mut parts = 0;
    for part in s.split(|c| *c == sep) {
        parts += 1;
        if parts > groups || part.len() != width || n + width > out.len() {
            return None;
        }
        out[n..n + width].copy_from_slice(part);
        n += width;
    }
    (parts == groups && n == out.len()).then_some(out)
}

/// Accepts `"52:54:00:BE:EF:01"`, `"52-54-00-be-ef-01"`, `"525400beef01"`
/// and `"5254.00be.ef01"` (any case, surrounding whitespace ignored); six
/// octets only, each written with two digits and one kind of separator.
pub fn parse(s: &str) -> Result<[u8; 6], MacError> {
    let t = s.trim().as_bytes();
    let hex = if t.contains(&b':') {
        grouped(t, b':', 6, 2)
    } else if t.contains(&b'-') {
        grouped(t, b'-', 6, 2)
    } else if t.contains(&b'.') {
        grouped(t, b'.', 3, 4)
    } else {
        <[u8; 12]>::try_from(t).ok()
    };
    hex.as_ref()
        .and_then(|h| from_hex12(h))
        .ok_or_else(|| MacError(s.to_string()))
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Lower case with colons, as SMD emits `MACAddress`: `"52:54:00:be:ef:01"`.
pub fn to_colon(m: &[u8; 6]) -> String {
    let mut out = String::with_capacity(17);
    for (i, b) in m.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    out
}

/// Lower-case hex without separators, the SMD EthernetInterface ID:
/// `"525400beef01"`.
pub fn to_id(m: &[u8; 6]) -> String {
    let mut out = String::with_capacity(12);
    for b in m {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    out
}

/// Any accepted spelling → the colon form.
pub fn normalize(s: &str) -> Result<String, MacError> {
    parse(s).map(|m| to_colon(&m))
}

/// Any accepted spelling → the EthernetInterface ID form. The canonical
/// colon form (what every lookup on the boot path holds) takes a short cut.
pub fn id_of(s: &str) -> Result<String, MacError> {
    let b = s.as_bytes();
    let canonical = b.len() == 17
        && b.iter().enumerate().all(|(i, c)| {
            if i % 3 == 2 {
                *c == b':'
            } else {
                c.is_ascii_digit() || (b'a'..=b'f').contains(c)
            }
        });
    if canonical {
        return Ok(b
            .iter()
            .filter(|c| **c != b':')
            .map(|c| *c as char)
            .collect());
    }
    parse(s).map(|m| to_id(&m))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0xbe, 0xef, 0x01];

    #[test]
    fn accepted_spellings() {
        for s in [
            "52:54:00:BE:EF:01",
            "52:54:00:be:ef:01",
            "52-54-00-be-ef-01",
            "52-54-00-BE-EF-01",
            "525400beef01",
            "525400BEEF01",
            "5254.00be.ef01",
            "5254.00BE.EF01",
            "  52:54:00:be:ef:01\n",
        ] {
            assert_eq!(parse(s), Ok(MAC), "{s:?}");
            assert_eq!(normalize(s).as_deref(), Ok("52:54:00:be:ef:01"));
            assert_eq!(id_of(s).as_deref(), Ok("525400beef01"));
        }
    }

    #[test]
    fn formatting() {
        assert_eq!(to_colon(&MAC), "52:54:00:be:ef:01");
        assert_eq!(to_id(&MAC), "525400beef01");
        assert_eq!(to_colon(&[0; 6]), "00:00:00:00:00:00");
        assert_eq!(to_id(&[0xff; 6]), "ffffffffffff");
    }

    #[test]
    fn rejected_spellings() {
        for s in [
            "",
            " ",
            "52:54:00:be:ef",
            "52:54:00:be:ef:01:02",
            "52:54:00:be:ef:1",
            "52:54:0:be:ef:01",
            "52:54:00:be:ef:0g",
            "52:54:00-be-ef-01",
            "52:54:00:be:ef:01:",
            ":52:54:00:be:ef:01",
            "52::54:00:be:ef:01",
            "525400beef0",
            "525400beef011",
            "525400beef0g",
            "5254.00be.ef01.0203",
            "52540.0be.ef01",
            "5254.00be",
            "52 54 00 be ef 01",
            "52:54:00:be:ef:01:02:03",
            "0102030405060708",
            "80:00:02:08:fe:80:00:00:00:00:00:00:00:02:c9:03:00:a1:b2:c3",
            "+1:54:00:be:ef:01",
            "５２:54:00:be:ef:01",
            "52:54:00:be:ef:0١",
            "5254\u{00e9}0beef01",
        ] {
            assert_eq!(parse(s), Err(MacError(s.to_string())), "{s:?}");
            assert!(normalize(s).is_err());
            assert!(id_of(s).is_err());
        }
    }

    #[test]
    fn error_message() {
        assert_eq!(
            MacError("zz".into()).to_string(),
            "invalid MAC address \"zz\""
        );
    }

    proptest! {
        #[test]
        fn never_panics(s in any::<String>()) {
            if let Ok(m) = parse(&s) {
                prop_assert_eq!(parse(&to_colon(&m)), Ok(m));
            }
            // The colon-form short cut agrees with the full parser.
            prop_assert_eq!(id_of(&s).ok(), parse(&s).ok().map(|m| to_id(&m)));
        }

        #[test]
        fn round_trips(m in any::<[u8; 6]>(), style in 0usize..5) {
            let id = to_id(&m);
            let text = match style {
                0 => to_colon(&m),
                1 => to_colon(&m).replace(':', "-").to_uppercase(),
                2 => id.clone(),
                3 => format!("{}.{}.{}", &id[0..4], &id[4..8], &id[8..12]),
                _ => to_colon(&m).to_uppercase(),
            };
            prop_assert_eq!(parse(&text), Ok(m));
            prop_assert_eq!(normalize(&text), Ok(to_colon(&m)));
            prop_assert_eq!(id_of(&text), Ok(id.clone()));
            prop_assert_eq!(normalize(&to_colon(&m)), Ok(to_colon(&m)));
            prop_assert_eq!(to_colon(&m).len(), 17);
            prop_assert_eq!(id.len(), 12);
        }
    }
}
