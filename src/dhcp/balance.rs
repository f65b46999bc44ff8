//! Several heads on one pool: which head answers which client.
//!
//! Every head receives every broadcast on the segment. Were each to answer
//! all of them, every DISCOVER would cost every head a decision, an offer
//! and a held address, and the client would pick among offers at random.
//! Instead each client belongs to one live head, the way RFC 3074 splits
//! clients between DHCP servers: the client's hardware address is hashed
//! into one of 256 buckets with the RFC's Pearson hash, and the buckets are
//! dealt round-robin over the live heads sorted by head ID. A head answers
//! a DISCOVER, and a REQUEST a client makes before it has an address
//! (INIT-REBOOT: no server identifier, no `ciaddr`), only for its own
//! buckets. Everything else (a REQUEST naming a server, renewals, releases,
//! INFORMs) is answered by whoever receives it, as before.
//!
//! Why the hardware address and not option 61 (which RFC 3074 hashes when
//! present): a node's firmware PXE and iPXE send different client
//! identifiers, and hashing the MAC keeps both stages of one node's boot
//! on one head.
//!
//! Takeover: the live heads are those holding their `head/<id>` lease (see
//! `inventory::leases`); a head that dies stops renewing, its lease
//! expires, and the others deal its buckets among themselves within a TTL.
//! Until then a client it owned is answered by any head once the client
//! says (in `secs`) it has been trying for more than
//! [`MAX_SECS`] seconds, as ISC dhcpd's `load balance max seconds` does.
//!
//! The split saves work; it is not what keeps one address from going to two
//! MACs, which remains the store's refusal (see `records`). A head that
//! does not yet know its peers, or cannot reach the database to learn them,
//! answers everyone.

/// A client that has been trying for longer than this (the `secs` field)
/// is answered by any head.
pub const MAX_SECS: u16 = 3;

/// This head's share of the clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Share {
    /// Every client (one head, or peers unknown).
    #[default]
    All,
    /// The buckets `b` with `b % of == index`.
    Part { index: u16, of: u16 },
}

impl Share {
    /// The share of the head `me` among the live heads `live` (IDs, any
    /// order; `me` counts whether listed or not).
    pub fn among<'a>(me: &str, live: impl IntoIterator<Item = &'a str>) -> Share {
        let mut ids: Vec<&str> = live.into_iter().filter(|id| *id != me).collect();
        ids.push(me);
        ids.sort_unstable();
        ids.dedup();
        match (ids.len(), ids.iter().position(|id| *id == me)) {
            (0 | 1, _) | (_, None) => Share::All,
            (n, Some(i)) => Share::Part {
                index: i as u16,
                of: u16::try_from(n).unwrap_or(u16::MAX),
            },
        }
    }

    /// Does this head answer a client in `bucket` that has been trying for
    /// `secs` seconds?
    pub fn answers(self, bucket: u8, secs: u16) -> bool {
        match self {
            Share::All => true,
            Share::Part { index, of } => secs > MAX_SECS || u16::from(bucket) % of == index,
        }
    }
}

/// The RFC 3074 bucket of a hardware address.
pub fn bucket(chaddr: &[u8]) -> u8 {
    // RFC 3074 §6: the hash starts from the key's length and mixes the key
    // from its last byte to its first.
    let mut h = chaddr.len() as u8;
    for b in chaddr.iter().rev() {
        h = MIX[usize::from(h ^ b)];
    }
    h
}

/// RFC 3074 §6's mixing table: the 256 byte values in a fixed order.
#[rustfmt::skip]
const MIX: [u8; 256] = [
    251, 175, 119, 215,  81,  14,  79, 191, 103,  49, 181, 143, 186, 157,   0, 232,
     31,  32,  55,  60, 152,  58,  17, 237, 174,  70, 160, 144, 220,  90,  57, 223,
     59,   3,  18, 140, 111, 166, 203, 196, 134, 243, 124,  95, 222, 179, 197,  65,
    180,  48,  36,  15, 107,  46, 233, 130, 165,  30, 123, 161, 209,  23,  97,  16,
     40,  91, 219,  61, 100,  10, 210, 109, 250, 127,  22, 138,  29, 108, 244,  67,
    207,   9, 178, 204,  74,  98, 126, 249, 167, 116,  34,  77, 193, 200, 121,   5,
     20, 113,  71,  35, 128,  13, 182,  94,  25, 226, 227, 199,  75,  27,  41, 245,
    230, 224,  43, 225, 177,  26, 155, 150, 212, 142, 218, 115, 241,  73,  88, 105,
     39, 114,  62, 255, 192, 201, 145, 214, 168, 158, 221, 148, 154, 122,  12,  84,
     82, 163,  44, 139, 228, 236, 205, 242, 217,  11, 187, 146, 159,  64,  86, 239,
    195,  42, 106, 198, 118, 112, 184, 172,  87,   2, 173, 117, 176, 229, 247, 253,
    137, 185,  99, 164, 102, 147,  45,  66, 231,  52, 141, 211, 194, 206, 246, 238,
     56, 110,  78, 248,  63, 240, 189,  93,  92,  51,  53, 183,  19, 171,  72,  50,
     33, 104, 101,  69,   8, 252,  83, 120,  76, 135,  85,  54, 202, 125, 188, 213,
     96, 235, 136, 208, 162, 129, 190, 132, 156,  38,  47,   1,   7, 254,  24,   4,
    216, 131,  89,  21,  28, 133,  37, 153, 149,  80, 170,  68,   6, 169, 234, 151,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mixing_table_is_a_permutation() {
        let mut seen = [false; 256];
        for v in MIX {
            assert!(!seen[usize::from(v)], "{v} twice");
            seen[usize::from(v)] = true;
        }
    }

    #[test]
    fn buckets_follow_the_rfc_hash() {
        // Worked by hand from the table: len 1 → MIX[1 ^ k].
        assert_eq!(bucket(&[0]), MIX[1]);
        assert_eq!(bucket(&[1]), MIX[0]);
        // Two bytes: start at 2, mix the last byte, then the first.
        assert_eq!(bucket(&[5, 7]), MIX[usize::from(MIX[2 ^ 7] ^ 5)]);
        assert_eq!(bucket(&[]), 0);
    }

    #[test]
    fn shares_among_live_heads() {
        let cases: &[(&str, &[&str], Share)] = &[
            ("a", &[], Share::All),
            ("a", &["a"], Share::All),
            ("a", &["b"], Share::Part { index: 0, of: 2 }),
            ("b", &["a", "b"], Share::Part { index: 1, of: 2 }),
            ("b", &["c", "a", "b", "a"], Share::Part { index: 1, of: 3 }),
        ];
        for (me, live, want) in cases {
            assert_eq!(
                Share::among(me, live.iter().copied()),
                *want,
                "{me} {live:?}"
            );
        }
    }

    #[test]
    fn every_bucket_has_exactly_one_head_and_late_clients_any() {
        for n in 1..=4u16 {
            let heads: Vec<Share> = (0..n)
                .map(|index| {
                    if n == 1 {
                        Share::All
                    } else {
                        Share::Part { index, of: n }
                    }
                })
                .collect();
            for b in 0..=255u8 {
                let answering = heads.iter().filter(|s| s.answers(b, 0)).count();
                assert_eq!(answering, 1, "bucket {b} with {n} heads");
                assert!(heads.iter().all(|s| s.answers(b, MAX_SECS + 1)));
            }
        }
    }

    #[test]
    fn macs_spread_evenly_over_two_heads() {
        let mine = (0..10_000u32)
            .filter(|i| {
                let b = i.to_be_bytes();
                let mac = [0x52, 0x54, b[0], b[1], b[2], b[3]];
                Share::Part { index: 0, of: 2 }.answers(bucket(&mac), 0)
            })
            .count();
        assert!((4_500..=5_500).contains(&mine), "{mine} of 10000");
    }
}
