//! xnames: the location-based IDs of every inventory record.
//!
//! An xname is the primary key of a component, a RedfishEndpoint, a group
//! member and a boot parameter target, so one physical location must have
//! exactly one spelling: `X1000C0S01B0N0`, ` x1000c0s1b0n0` and
//! `x1000c0s1b0n0` are the same node, and storing them under three keys
//! would split its history, NID and group memberships. Everything is
//! therefore normalised (trimmed, lower-cased, leading zeros stripped from
//! every number) before it is used, exactly as upstream's
//! `NormalizeHMSCompID` does, and then checked against the grammar so that a
//! typo is a 400 rather than a phantom component.
//!
//! The grammar is upstream `hms-xname`'s recognition table, applied after
//! normalisation as upstream does (so `x0000` is cabinet 0 while `x10000`
//! is out of range). It is matched by hand, as a sequence of
//! letters-plus-number tokens against a table of patterns, which keeps the
//! parser total: there is no input it panics on. Two places are stricter
//! than upstream's regular expressions: only ASCII is accepted (a
//! Unicode lower-casing could otherwise fold a look-alike letter into an
//! xname), and a partition's separator must be a literal `.` (upstream's
//! unescaped regex dot accepts any character there).

use super::enums::HmsType;

/// A string that is not an xname of any HMS type.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("invalid xname {0:?}")]
pub struct XnameError(pub String);

/// What a token's number may be (checked on the normalised number).
#[derive(Debug, Clone, Copy)]
enum Num {
    /// Any number (`[0-9]+`).
    Any,
    /// An inclusive range.
    Range(u64, u64),
    /// One or more (`[1-9][0-9]*`).
    Positive,
}

type Segment = (&'static str, Num);

const X: Segment = ("x", Num::Range(0, 9999));
const C: Segment = ("c", Num::Range(0, 7));
const S: Segment = ("s", Num::Any);
const B: Segment = ("b", Num::Any);
const N: Segment = ("n", Num::Any);
const R: Segment = ("r", Num::Any);
const M: Segment = ("m", Num::Range(0, 3));
const P: Segment = ("p", Num::Range(0, 7));
const NIC: Segment = ("i", Num::Range(0, 3));

/// Every xname form, as the letters and number limits of its tokens.
/// (Dotted partitions, `p#.#`, are handled separately.)
const PATTERNS: &[(HmsType, &[Segment])] = &[
    (HmsType::System, &[("s", Num::Range(0, 0))]),
    (HmsType::Partition, &[("p", Num::Any)]),
    (HmsType::SMSBox, &[("sms", Num::Any)]),
    (HmsType::CDU, &[("d", Num::Any)]),
    (HmsType::CDUMgmtSwitch, &[("d", Num::Any), ("w", Num::Any)]),
    (HmsType::Cabinet, &[X]),
    (HmsType::CabinetCDU, &[X, ("d", Num::Range(0, 1))]),
    (HmsType::CabinetBMC, &[X, ("b", Num::Range(0, 0))]),
    (HmsType::CEC, &[X, ("e", Num::Range(0, 1))]),
    (HmsType::CabinetPDUController, &[X, M]),
    (HmsType::CabinetPDU, &[X, M, P]),
    (HmsType::CabinetPDUNic, &[X, M, NIC]),
    (HmsType::CabinetPDUOutlet, &[X, M, P, ("j", Num::Positive)]),
    (
        HmsType::CabinetPDUPowerConnector,
        &[X, M, P, ("v", Num::Positive)],
    ),
    (HmsType::Chassis, &[X, C]),
    (HmsType::ChassisBMC, &[X, C, ("b", Num::Range(0, 0))]),
    (
        HmsType::ChassisBMCNic,
        &[X, C, ("b", Num::Range(0, 0)), NIC],
    ),
    (HmsType::CMMRectifier, &[X, C, ("t", Num::Range(0, 9))]),
    (HmsType::CMMFpga, &[X, C, ("f", Num::Range(0, 0))]),
    (HmsType::ComputeModule, &[X, C, S]),
    (HmsType::NodeEnclosure, &[X, C, S, ("e", Num::Any)]),
    (
        HmsType::NodeEnclosurePowerSupply,
        &[X, C, S, ("e", Num::Any), ("t", Num::Any)],
    ),
    // 'j' is upstream's deprecated spelling of 'v'; both are accepted and
    // kept as given, as upstream does.
    (
        HmsType::NodePowerConnector,
        &[X, C, S, ("v", Num::Range(1, 2))],
    ),
    (
        HmsType::NodePowerConnector,
        &[X, C, S, ("j", Num::Range(1, 2))],
    ),
    (HmsType::NodeBMC, &[X, C, S, B]),
    (HmsType::NodeBMCNic, &[X, C, S, B, NIC]),
    (HmsType::NodeFpga, &[X, C, S, B, ("f", Num::Range(0, 0))]),
    (HmsType::Node, &[X, C, S, B, N]),
    (HmsType::VirtualNode, &[X, C, S, B, N, ("v", Num::Any)]),
    (HmsType::NodeNic, &[X, C, S, B, N, NIC]),
    (
        HmsType::NodeHsnNic,
        &[X, C, S, B, N, ("h", Num::Range(0, 3))],
    ),
    (
        HmsType::Processor,
        &[X, C, S, B, N, ("p", Num::Range(0, 3))],
    ),
    (HmsType::Memory, &[X, C, S, B, N, ("d", Num::Any)]),
    (HmsType::NodeAccel, &[X, C, S, B, N, ("a", Num::Any)]),
    (
        HmsType::NodeAccelRiser,
        &[X, C, S, B, N, ("r", Num::Range(0, 7))],
    ),
    (HmsType::StorageGroup, &[X, C, S, B, N, ("g", Num::Any)]),
    (
        HmsType::Drive,
        &[X, C, S, B, N, ("g", Num::Any), ("k", Num::Any)],
    ),
    (HmsType::RouterModule, &[X, C, R]),
    (HmsType::RouterBMC, &[X, C, R, ("b", Num::Any)]),
    (HmsType::RouterBMCNic, &[X, C, R, ("b", Num::Any), NIC]),
    (HmsType::RouterFpga, &[X, C, R, ("f", Num::Range(0, 1))]),
    (HmsType::RouterTOR, &[X, C, R, ("t", Num::Any)]),
    (
        HmsType::RouterTORFpga,
        &[X, C, R, ("t", Num::Any), ("f", Num::Range(0, 1))],
    ),
    (
        HmsType::RouterPowerConnector,
        &[X, C, R, ("v", Num::Range(1, 2))],
    ),
    (HmsType::HSNBoard, &[X, C, R, ("e", Num::Any)]),
    (HmsType::HSNAsic, &[X, C, R, ("a", Num::Range(0, 3))]),
    (
        HmsType::HSNLink,
        &[X, C, R, ("a", Num::Range(0, 3)), ("l", Num::Any)],
    ),
    (HmsType::HSNConnector, &[X, C, R, ("j", Num::Positive)]),
    (
        HmsType::HSNConnectorPort,
        &[X, C, R, ("j", Num::Positive), ("p", Num::Range(0, 2))],
    ),
    (HmsType::MgmtSwitch, &[X, C, ("w", Num::Positive)]),
    (
        HmsType::MgmtSwitchConnector,
        &[X, C, ("w", Num::Positive), ("j", Num::Positive)],
    ),
    (
        HmsType::MgmtHLSwitchEnclosure,
        &[X, C, ("h", Num::Positive)],
    ),
    (
        HmsType::MgmtHLSwitch,
        &[X, C, ("h", Num::Positive), ("s", Num::Range(1, 9))],
    ),
];

/// A regular expression every normalised xname of a known form matches
/// (lower case, numbers without leading zeros beyond their width): the
/// same table as the parser, for documents that describe xnames.
pub fn pattern() -> String {
    fn num(n: Num) -> String {
        match n {
            Num::Any => "[0-9]{1,4}".into(),
            Num::Positive => "[1-9][0-9]{0,3}".into(),
            Num::Range(a, b) if b <= 9 => format!("[{a}-{b}]"),
            // The only wider range is a cabinet's, 0 to 9999.
            Num::Range(_, b) => format!("[0-9]{{1,{}}}", b.to_string().len()),
        }
    }
    let mut forms: Vec<String> = PATTERNS
        .iter()
        .map(|(_, segs)| {
            segs.iter()
                .map(|(l, n)| format!("{l}{}", num(*n)))
                .collect()
        })
        .collect();
    forms.push("p[0-9]{1,4}\\.[0-9]{1,4}".into());
    format!("^({})$", forms.join("|"))
}

/// One normalised letters-plus-number pair.
struct Token {
    letters: String,
    digits: String,
}

/// `digits` without leading zeros ("000" → "0").
fn strip_zeros(digits: &str) -> &str {
    let t = digits.trim_start_matches('0');
    if t.is_empty() { "0" } else { t }
}

impl Num {
    fn accepts(self, digits: &str) -> bool {
        match self {
            Num::Any => true,
            Num::Positive => digits != "0",
            Num::Range(lo, hi) => {
                // A normalised number longer than 19 digits exceeds any range.
                digits.len() <= 19 && digits.parse::<u64>().is_ok_and(|v| (lo..=hi).contains(&v))
            }
        }
    }
}

/// Splits a trimmed xname into normalised tokens; None if it is not a
/// sequence of (ASCII letters, ASCII digits) pairs.
fn tokenize(s: &str) -> Option<Vec<Token>> {
    if !s.is_ascii() {
        return None;
    }
    let bytes = s.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        while bytes.get(i).is_some_and(u8::is_ascii_alphabetic) {
            i += 1;
        }
        let mid = i;
        while bytes.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if mid == start || i == mid {
            return None;
        }
        tokens.push(Token {
            letters: s.get(start..mid)?.to_ascii_lowercase(),
            digits: strip_zeros(s.get(mid..i)?).to_string(),
        });
    }
    Some(tokens)
}

/// The dotted partition form `p#.#`, normalised.
fn dotted_partition(s: &str) -> Option<String> {
    let rest = s.strip_prefix(['p', 'P'])?;
    let (hard, soft) = rest.split_once('.')?;
    let digits = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
    (digits(hard) && digits(soft)).then(|| format!("p{}.{}", strip_zeros(hard), strip_zeros(soft)))
}

fn classify(tokens: &[Token]) -> Option<HmsType> {
    PATTERNS.iter().find_map(|(kind, segments)| {
        let fits = segments.len() == tokens.len()
            && segments
                .iter()
                .zip(tokens)
                .all(|((letters, num), t)| *letters == t.letters && num.accepts(&t.digits));
        fits.then_some(*kind)
    })
}

fn join(tokens: &[Token]) -> String {
    let mut out = String::new();
    for t in tokens {
        out.push_str(&t.letters);
        out.push_str(&t.digits);
    }
    out
}

/// Parses into tokens (empty for a dotted partition) and type.
fn parse_tokens(s: &str) -> Result<(Vec<Token>, String, HmsType), XnameError> {
    let err = || XnameError(s.to_string());
    let trimmed = s.trim();
    if let Some(p) = dotted_partition(trimmed) {
        return Ok((Vec::new(), p, HmsType::Partition));
    }
    let tokens = tokenize(trimmed).ok_or_else(err)?;
    let kind = classify(&tokens).ok_or_else(err)?;
    let name = join(&tokens);
    Ok((tokens, name, kind))
}

/// Normalises: trim, lower-case, strip leading zeros from every number
/// (`"X1000C0S01B0N0"` → `"x1000c0s1b0n0"`; `"x0000"` → `"x0"`).
/// Returns the normalised xname and its HMS type, or Err for anything that
/// matches no xname form.
pub fn parse(s: &str) -> Result<(String, HmsType), XnameError> {
    parse_tokens(s).map(|(_, name, kind)| (name, kind))
}

/// The normalised form of an xname (see [`parse`]).
pub fn normalize(s: &str) -> Result<String, XnameError> {
    parse(s).map(|(name, _)| name)
}

/// The HMS type of an xname, normalised or raw; None if it is not one.
pub fn type_of(s: &str) -> Option<HmsType> {
    parse(s).ok().map(|(_, kind)| kind)
}

/// The xname one level up, normalised (node `x1c0s0b0n0` → node BMC
/// `x1c0s0b0`; BMC → slot `x1c0s0`; cabinet or CDU → system `s0`). None at
/// the top (the system), for partitions and SMS boxes, which sit outside the
/// physical tree, and for anything that is not an xname.
pub fn parent(xname: &str) -> Option<String> {
    let (tokens, _, kind) = parse_tokens(xname).ok()?;
    match kind {
        HmsType::System | HmsType::Partition | HmsType::SMSBox => None,
        HmsType::Cabinet | HmsType::CDU => Some("s0".to_string()),
        _ => {
            let up = tokens.split_last().map(|(_, rest)| rest)?;
            Some(join(up))
        }
    }
}

/// True if `child` is `ancestor` or lies below it in the physical tree
/// (both are normalised first; anything that is not an xname is false).
/// Compared token-wise, so `x1c10` is not below `x1c1`; everything in a
/// cabinet or CDU is below `s0`.
pub fn is_descendant_or_self(child: &str, ancestor: &str) -> bool {
    let (Ok(ancestor), Ok(mut current)) = (normalize(ancestor), normalize(child)) else {
        return false;
    };
    loop {
        if current == ancestor {
            return true;
        }
        match parent(&current) {
            Some(up) => current = up,
            None => return false,
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn every_form_of_the_pattern_parses_at_its_bounds() {
        let bound = |n: Num, high: bool| match (n, high) {
            (Num::Any, false) => 0,
            (Num::Any, true) | (Num::Positive, true) => 9999,
            (Num::Positive, false) => 1,
            (Num::Range(a, _), false) => a,
            (Num::Range(_, b), true) => b,
        };
        for (kind, segs) in PATTERNS {
            for high in [false, true] {
                let x: String = segs
                    .iter()
                    .map(|(l, n)| format!("{l}{}", bound(*n, high)))
                    .collect();
                assert_eq!(parse(&x).map(|(_, k)| k), Ok(*kind), "{x}");
            }
        }
        assert!(
            pattern().starts_with("^(s[0-0]|p[0-9]{1,4}|"),
            "{}",
            pattern()
        );
    }
    use super::*;
    use proptest::prelude::*;

    /// (input, normalised, type) for every HMS type, plus boundary values.
    const VALID: &[(&str, &str, HmsType)] = &[
        ("s0", "s0", HmsType::System),
        ("S00", "s0", HmsType::System),
        ("p0", "p0", HmsType::Partition),
        ("p1.2", "p1.2", HmsType::Partition),
        ("P01.002", "p1.2", HmsType::Partition),
        ("p12345", "p12345", HmsType::Partition),
        ("sms1", "sms1", HmsType::SMSBox),
        ("SMS007", "sms7", HmsType::SMSBox),
        ("d0", "d0", HmsType::CDU),
        ("d123", "d123", HmsType::CDU),
        ("d1w0", "d1w0", HmsType::CDUMgmtSwitch),
        ("d1w12", "d1w12", HmsType::CDUMgmtSwitch),
        ("x0", "x0", HmsType::Cabinet),
        ("x0000", "x0", HmsType::Cabinet),
        ("x9999", "x9999", HmsType::Cabinet),
        ("x01000", "x1000", HmsType::Cabinet),
        ("x1000d0", "x1000d0", HmsType::CabinetCDU),
        ("x1000d1", "x1000d1", HmsType::CabinetCDU),
        ("x1000b0", "x1000b0", HmsType::CabinetBMC),
        ("x1000e1", "x1000e1", HmsType::CEC),
        ("x1000m0", "x1000m0", HmsType::CabinetPDUController),
        ("x1000m3", "x1000m3", HmsType::CabinetPDUController),
        ("x1000m0p7", "x1000m0p7", HmsType::CabinetPDU),
        ("x1000m0i3", "x1000m0i3", HmsType::CabinetPDUNic),
        ("x1000m0p0j1", "x1000m0p0j1", HmsType::CabinetPDUOutlet),
        ("x1000m0p0j48", "x1000m0p0j48", HmsType::CabinetPDUOutlet),
        (
            "x1000m0p0v2",
            "x1000m0p0v2",
            HmsType::CabinetPDUPowerConnector,
        ),
        ("x1000c0", "x1000c0", HmsType::Chassis),
        ("x1000c7", "x1000c7", HmsType::Chassis),
        ("x1000c0b0", "x1000c0b0", HmsType::ChassisBMC),
        ("x1000c0b0i3", "x1000c0b0i3", HmsType::ChassisBMCNic),
        ("x1000c0t9", "x1000c0t9", HmsType::CMMRectifier),
        ("x1000c0f0", "x1000c0f0", HmsType::CMMFpga),
        ("x1000c0s0", "x1000c0s0", HmsType::ComputeModule),
        ("x1000c0s64", "x1000c0s64", HmsType::ComputeModule),
        ("x1000c0s0e0", "x1000c0s0e0", HmsType::NodeEnclosure),
        (
            "x1000c0s0e0t1",
            "x1000c0s0e0t1",
            HmsType::NodeEnclosurePowerSupply,
        ),
        ("x1000c0s0v1", "x1000c0s0v1", HmsType::NodePowerConnector),
        ("x1000c0s0j2", "x1000c0s0j2", HmsType::NodePowerConnector),
        ("x1000c0s0b0", "x1000c0s0b0", HmsType::NodeBMC),
        ("x1000c0s0b1", "x1000c0s0b1", HmsType::NodeBMC),
        ("x1000c0s0b0i0", "x1000c0s0b0i0", HmsType::NodeBMCNic),
        ("x1000c0s0b0f0", "x1000c0s0b0f0", HmsType::NodeFpga),
        ("x1000c0s0b0n0", "x1000c0s0b0n0", HmsType::Node),
        ("X1000C0S01B0N0", "x1000c0s1b0n0", HmsType::Node),
        ("  x1000c0s0b0n1\t\n", "x1000c0s0b0n1", HmsType::Node),
        ("x1000c0s0b0n0v12", "x1000c0s0b0n0v12", HmsType::VirtualNode),
        ("x1000c0s0b0n0i3", "x1000c0s0b0n0i3", HmsType::NodeNic),
        ("x1000c0s0b0n0h3", "x1000c0s0b0n0h3", HmsType::NodeHsnNic),
        ("x1000c0s0b0n0p3", "x1000c0s0b0n0p3", HmsType::Processor),
        ("x1000c0s0b0n0d15", "x1000c0s0b0n0d15", HmsType::Memory),
        ("x1000c0s0b0n0a7", "x1000c0s0b0n0a7", HmsType::NodeAccel),
        (
            "x1000c0s0b0n0r7",
            "x1000c0s0b0n0r7",
            HmsType::NodeAccelRiser,
        ),
        ("x1000c0s0b0n0g1", "x1000c0s0b0n0g1", HmsType::StorageGroup),
        ("x1000c0s0b0n0g1k2", "x1000c0s0b0n0g1k2", HmsType::Drive),
        ("x1000c0r0", "x1000c0r0", HmsType::RouterModule),
        ("x1000c0r7b0", "x1000c0r7b0", HmsType::RouterBMC),
        ("x1000c0r7b0i1", "x1000c0r7b0i1", HmsType::RouterBMCNic),
        ("x1000c0r7f1", "x1000c0r7f1", HmsType::RouterFpga),
        ("x1000c0r7t3", "x1000c0r7t3", HmsType::RouterTOR),
        ("x1000c0r7t3f0", "x1000c0r7t3f0", HmsType::RouterTORFpga),
        ("x1000c0r7v1", "x1000c0r7v1", HmsType::RouterPowerConnector),
        ("x1000c0r7e0", "x1000c0r7e0", HmsType::HSNBoard),
        ("x1000c0r7a3", "x1000c0r7a3", HmsType::HSNAsic),
        ("x1000c0r7a0l12", "x1000c0r7a0l12", HmsType::HSNLink),
        ("x1000c0r7j1", "x1000c0r7j1", HmsType::HSNConnector),
        ("x1000c0r7j1p2", "x1000c0r7j1p2", HmsType::HSNConnectorPort),
        ("x1000c0w1", "x1000c0w1", HmsType::MgmtSwitch),
        ("x3000c0w14", "x3000c0w14", HmsType::MgmtSwitch),
        ("x1000c0w1j48", "x1000c0w1j48", HmsType::MgmtSwitchConnector),
        ("x1000c0h1", "x1000c0h1", HmsType::MgmtHLSwitchEnclosure),
        ("x1000c0h1s9", "x1000c0h1s9", HmsType::MgmtHLSwitch),
    ];

    const INVALID: &[&str] = &[
        "",
        " ",
        "x",
        "c0",
        "0",
        "1000",
        "x1000c",
        "x-1",
        "x1 c0",
        "x1000c0s0b0n0 x",
        "x1000_c0",
        "xx1",
        "x1000x1",
        // Out of range.
        "s1",
        "x10000",
        "x01000000",
        "x1000c8",
        "x1000c0b1",
        "x1000c0b0i4",
        "x1000m4",
        "x1000m0p8",
        "x1000m0i4",
        "x1000m0p0j0",
        "x1000m0p0v0",
        "x1000d2",
        "x1000b1",
        "x1000e2",
        "x1000c0f1",
        "x1000c0s0b0f1",
        "x1000c0s0v0",
        "x1000c0s0v3",
        "x1000c0s0b0i4",
        "x1000c0s0b0n0i4",
        "x1000c0s0b0n0h4",
        "x1000c0s0b0n0p4",
        "x1000c0s0b0n0r8",
        "x1000c0r0f2",
        "x1000c0r0v3",
        "x1000c0r0a4",
        "x1000c0r0j0",
        "x1000c0r0j1p3",
        "x1000c0w0",
        "x1000c0w1j0",
        "x1000c0h0",
        "x1000c0h1s0",
        "x1000c0h1s10",
        "x1000c0t10",
        "x1000c99999999999999999999999",
        // Not a form at all.
        "x1000c0s0n0",
        "x1000c0s0b0n0n0",
        "x1000c0s0b0n0v0i0",
        "x1000c0b",
        "p1.",
        "p.1",
        "p1.2.3",
        "p1x2",
        "pp1",
        "all",
        "all_comp",
        "INVALID",
        // Unicode: look-alikes, full-width digits, non-ASCII whitespace inside.
        "x1000c0s0b0n\u{0660}",
        "x1000c0s0b0n１",
        "\u{212A}1",
        "x1000c0s0b0\u{00A0}n0",
        "ｘ1000",
        "x1000c0s0b0n0é",
    ];

    #[test]
    fn valid_table() {
        let mut seen = std::collections::BTreeSet::new();
        for &(input, norm, kind) in VALID {
            assert_eq!(parse(input), Ok((norm.to_string(), kind)), "{input:?}");
            assert_eq!(normalize(input).as_deref(), Ok(norm));
            assert_eq!(type_of(input), Some(kind));
            assert_eq!(type_of(norm), Some(kind));
            seen.insert(kind);
        }
        // Every type is exercised.
        let all: std::collections::BTreeSet<_> = HmsType::all().iter().copied().collect();
        assert_eq!(seen, all);
    }

    #[test]
    fn invalid_table() {
        for &input in INVALID {
            assert_eq!(
                parse(input),
                Err(XnameError(input.to_string())),
                "{input:?}"
            );
            assert_eq!(type_of(input), None, "{input:?}");
            assert_eq!(parent(input), None, "{input:?}");
        }
    }

    #[test]
    fn normalisation_example() {
        assert_eq!(normalize("X1000C0S01B0N0").as_deref(), Ok("x1000c0s1b0n0"));
        assert_eq!(normalize("x0000").as_deref(), Ok("x0"));
        assert_eq!(normalize("x0c00s000b0n00").as_deref(), Ok("x0c0s0b0n0"));
        assert_eq!(normalize("x3000C0W001").as_deref(), Ok("x3000c0w1"));
    }

    #[test]
    fn error_carries_input() {
        let e = parse(" bogus ").unwrap_err();
        assert_eq!(e, XnameError(" bogus ".into()));
        assert_eq!(e.to_string(), "invalid xname \" bogus \"");
    }

    #[test]
    fn patterns_are_unambiguous() {
        let mut shapes: Vec<Vec<&str>> = PATTERNS
            .iter()
            .map(|(_, segs)| segs.iter().map(|(l, _)| *l).collect())
            .collect();
        let n = shapes.len();
        shapes.sort();
        shapes.dedup();
        assert_eq!(shapes.len(), n);
    }

    #[test]
    fn parents() {
        let chain = [
            "x1c0s0b0n0p1",
            "x1c0s0b0n0",
            "x1c0s0b0",
            "x1c0s0",
            "x1c0",
            "x1",
            "s0",
        ];
        for w in chain.windows(2) {
            assert_eq!(parent(w[0]).as_deref(), Some(w[1]), "{}", w[0]);
        }
        assert_eq!(parent("s0"), None);
        assert_eq!(parent("p1"), None);
        assert_eq!(parent("p1.2"), None);
        assert_eq!(parent("sms1"), None);
        assert_eq!(parent("d3").as_deref(), Some("s0"));
        assert_eq!(parent("d3w1").as_deref(), Some("d3"));
        assert_eq!(parent("X01C0S01B0N0").as_deref(), Some("x1c0s1b0"));
        assert_eq!(parent("x1c0s0b0n0v3").as_deref(), Some("x1c0s0b0n0"));
        assert_eq!(parent("x1m0p0j1").as_deref(), Some("x1m0p0"));
        assert_eq!(parent("x1c0r0b0").as_deref(), Some("x1c0r0"));
        assert_eq!(parent("x1c0w1").as_deref(), Some("x1c0"));
        assert_eq!(parent("x1c0h1s1").as_deref(), Some("x1c0h1"));
        assert_eq!(parent("x1c0s0j1").as_deref(), Some("x1c0s0"));
    }

    #[test]
    fn every_parent_is_an_xname() {
        for &(input, _, _) in VALID {
            if let Some(p) = parent(input) {
                assert!(type_of(&p).is_some(), "parent {p:?} of {input:?}");
                assert!(is_descendant_or_self(input, &p));
                assert!(!is_descendant_or_self(&p, input));
            }
        }
    }

    #[test]
    fn descendants() {
        assert!(is_descendant_or_self("x1c0s0b0n0", "x1c0s0b0n0"));
        assert!(is_descendant_or_self("x1c0s0b0n0", "X01C0S0B0N0"));
        assert!(is_descendant_or_self("x1c0s0b0n0", "x1c0"));
        assert!(is_descendant_or_self("x1c0s0b0n0", "x1"));
        assert!(is_descendant_or_self("x1c0s0b0n0", "s0"));
        assert!(is_descendant_or_self("d1w1", "s0"));
        assert!(is_descendant_or_self("x1c0s0b0n0i1", "x1c0s0b0"));
        assert!(!is_descendant_or_self("x1c10s0", "x1c1"));
        assert!(!is_descendant_or_self("x10c0", "x1"));
        assert!(!is_descendant_or_self("x1c0", "x1c0s0"));
        assert!(!is_descendant_or_self("x1c0s0b0n0", "x1c0s1"));
        assert!(!is_descendant_or_self("p1.2", "s0"));
        assert!(is_descendant_or_self("p1.2", "p01.2"));
        assert!(!is_descendant_or_self("x1c0s0b0n0", "bogus"));
        assert!(!is_descendant_or_self("bogus", "bogus"));
        assert!(!is_descendant_or_self("", ""));
    }

    /// A random instance of pattern `idx`: (raw input, expected normal form).
    fn instance(idx: usize, nums: &[u64], zeros: &[usize], upper: bool) -> (String, String) {
        let (_, segs) = PATTERNS[idx];
        let mut raw = String::new();
        let mut norm = String::new();
        for (i, (letters, num)) in segs.iter().enumerate() {
            let n = nums[i];
            let v = match *num {
                Num::Any => n,
                Num::Positive => n.max(1),
                Num::Range(lo, hi) => lo + n % (hi - lo + 1),
            };
            let l = if upper {
                letters.to_ascii_uppercase()
            } else {
                letters.to_string()
            };
            raw.push_str(&format!("{l}{}{v}", "0".repeat(zeros[i])));
            norm.push_str(&format!("{letters}{v}"));
        }
        (raw, norm)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn never_panics(s in any::<String>()) {
            let _ = parse(&s);
            let _ = parent(&s);
            let _ = is_descendant_or_self(&s, &s);
        }

        #[test]
        fn xnamish_strings(s in "[ xXcCsSbBnNpPmMjJvVwWhHdD0-9.]{0,16}") {
            if let Ok((norm, kind)) = parse(&s) {
                prop_assert_eq!(normalize(&norm), Ok(norm.clone()));
                prop_assert_eq!(type_of(&norm), Some(kind));
                prop_assert!(is_descendant_or_self(&s, &norm));
                if let Some(p) = parent(&norm) {
                    prop_assert!(type_of(&p).is_some());
                    prop_assert!(is_descendant_or_self(&norm, &p));
                }
            } else {
                prop_assert_eq!(parent(&s), None);
            }
        }

        #[test]
        fn generated_from_grammar(
            idx in 0..PATTERNS.len(),
            nums in proptest::collection::vec(0u64..100_000, 8),
            zeros in proptest::collection::vec(0usize..3, 8),
            upper in any::<bool>(),
        ) {
            let (raw, norm) = instance(idx, &nums, &zeros, upper);
            let kind = PATTERNS[idx].0;
            // Cabinets are 0-9999 and PATTERNS clamps the generated value.
            prop_assert_eq!(parse(&raw), Ok((norm.clone(), kind)));
            prop_assert_eq!(normalize(&norm), Ok(norm.clone()));
            prop_assert_eq!(type_of(&norm), Some(kind));
            let mut cur = norm.clone();
            let mut depth = 0;
            while let Some(p) = parent(&cur) {
                prop_assert!(type_of(&p).is_some());
                prop_assert!(is_descendant_or_self(&norm, &p));
                cur = p;
                depth += 1;
                prop_assert!(depth < 10);
            }
            if !matches!(kind, HmsType::Partition | HmsType::SMSBox) {
                prop_assert_eq!(cur, "s0");
            }
        }
    }
}
