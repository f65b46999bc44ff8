//! Several heads on one pool: which head answers which client.
//!
//! Every head receives every broadcast on the segment. Were each to answer
//! all of them, every DISCOVER would cost every head a decision, an offer
//! and a held address, and the client would pick among offers at random.
//! Instead each client belongs to one live head, the way RFC 3074 splits
//! clients between DHCP servers: the client's hardware address falls in one
//! of 256 buckets, and the buckets are dealt round-robin over the live
//! heads sorted by head ID. A head answers a DISCOVER, and a REQUEST a
//! client makes before it has an address (INIT-REBOOT: no server
//! identifier, no `ciaddr`), only for its own buckets. Everything else (a
//! REQUEST naming a server, renewals, releases, INFORMs) is answered by
//! whoever receives it, as before.
//!
//! The bucket is the XOR of the MAC's last three bytes, not RFC 3074's
//! Pearson hash: the kernel must compute it. A DISCOVER for another head is
//! dropped by a classic BPF filter on the socket ([`filter`]), before it is
//! queued, copied or woken for, so a head pays next to nothing for the
//! other heads' clients; the policy's own check catches what the filter
//! lets through (a DISCOVER whose first option is not the message type).
//! The last three bytes are the ones a vendor numbers its NICs with, so
//! consecutive MACs alternate between heads. Why the hardware address and
//! not option 61 (which RFC 3074 hashes when present): a node's firmware
//! PXE and iPXE send different client identifiers, and the MAC keeps both
//! stages of one node's boot on one head.
//!
//! Takeover: the live heads are those holding their `head/<id>` lease (see
//! `inventory::leases`); a head that dies stops renewing, its lease
//! expires, and the others deal its buckets among themselves within a TTL.
//! Until then a client it owned is answered by any head once the client
//! says (in `secs`) it has been trying for more than [`MAX_SECS`] seconds,
//! as ISC dhcpd's `load balance max seconds` does.
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

/// The bucket of a hardware address: the XOR of its last three bytes
/// (what [`filter`] computes in the kernel).
pub fn bucket(chaddr: &[u8; 6]) -> u8 {
    chaddr[3] ^ chaddr[4] ^ chaddr[5]
}

use crate::bpf::{
    ALU_MOD_K, ALU_XOR_X, DROP, Insn, JMP_JEQ_K, JMP_JGT_K, KEEP, LD_B_ABS, LD_H_ABS, MISC_TAX,
    RET_K,
};

/// Where a UDP socket's filter sees the DHCP message: after the 8-byte UDP
/// header.
const AT: u32 = 8;

/// The socket filter for `share`: drops a DISCOVER (message type as the
/// first option, Ethernet, `secs` at most [`MAX_SECS`]) whose bucket is
/// another head's, and passes everything else, except a packet too short
/// to hold a message type, which no policy answers either. `None`: nothing
/// to drop.
pub fn filter(share: Share) -> Option<Vec<Insn>> {
    let Share::Part { index, of } = share else {
        return None;
    };
    // Jump offsets count from the next instruction; "to pass" from
    // instruction i is (len - 1) - (i + 1), filled in below.
    let mut p: Vec<Insn> = vec![
        Insn(LD_B_ABS, 0, 0, AT + 1),                 // 0 htype
        Insn(JMP_JEQ_K, 0, 255, 1),                   // 1 Ethernet, else pass
        Insn(LD_B_ABS, 0, 0, AT + 2),                 // 2 hlen
        Insn(JMP_JEQ_K, 0, 255, 6),                   // 3
        Insn(LD_B_ABS, 0, 0, AT + 240),               // 4 first option
        Insn(JMP_JEQ_K, 0, 255, 53),                  // 5 message type
        Insn(LD_B_ABS, 0, 0, AT + 242),               // 6 its value
        Insn(JMP_JEQ_K, 0, 255, 1),                   // 7 DISCOVER
        Insn(LD_H_ABS, 0, 0, AT + 8),                 // 8 secs
        Insn(JMP_JGT_K, 255, 0, u32::from(MAX_SECS)), // 9 waited long: pass
        Insn(LD_B_ABS, 0, 0, AT + 28 + 3),            // 10 chaddr[3]
        Insn(MISC_TAX, 0, 0, 0),                      // 11
        Insn(LD_B_ABS, 0, 0, AT + 28 + 4),            // 12
        Insn(ALU_XOR_X, 0, 0, 0),                     // 13
        Insn(MISC_TAX, 0, 0, 0),                      // 14
        Insn(LD_B_ABS, 0, 0, AT + 28 + 5),            // 15
        Insn(ALU_XOR_X, 0, 0, 0),                     // 16 bucket
        Insn(ALU_MOD_K, 0, 0, u32::from(of)),         // 17
        Insn(JMP_JEQ_K, 255, 0, u32::from(index)),    // 18 ours: pass
        Insn(RET_K, 0, 0, DROP),                      // 19 drop
        Insn(RET_K, 0, 0, KEEP),                      // 20 pass
    ];
    let last = p.len() - 1;
    for (i, insn) in p.iter_mut().enumerate().take(last) {
        let to_pass = (last - (i + 1)) as u8;
        if insn.1 == 255 {
            insn.1 = to_pass;
        }
        if insn.2 == 255 {
            insn.2 = to_pass;
        }
    }
    Some(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpf::run;

    /// A UDP header and a DHCP message with `options` after the cookie.
    fn packet(mac: [u8; 6], secs: u16, options: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; 8 + 240];
        p[8] = 1;
        p[9] = 1;
        p[10] = 6;
        p[16..18].copy_from_slice(&secs.to_be_bytes());
        p[36..42].copy_from_slice(&mac);
        p[244..248].copy_from_slice(&[99, 130, 83, 99]);
        p.extend_from_slice(options);
        p.push(255);
        p
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
    fn consecutive_macs_spread_evenly() {
        for of in 2..=3u16 {
            let mine = (0..9_999u32)
                .filter(|i| {
                    let b = i.to_be_bytes();
                    let mac = [0x52, 0x54, 0, b[1], b[2], b[3]];
                    Share::Part { index: 0, of }.answers(bucket(&mac), 0)
                })
                .count();
            let even = 9_999 / usize::from(of);
            assert!(
                mine.abs_diff(even) < even / 10,
                "{mine} of 9999 for one of {of}"
            );
        }
    }

    /// The kernel filter drops exactly the DISCOVERs the policy would leave
    /// to another head, and passes everything else.
    #[test]
    fn the_filter_agrees_with_the_share() {
        assert_eq!(filter(Share::All), None);
        let discover = [53, 1, 1];
        let request = [53, 1, 3];
        let late_type = [61, 1, 0, 53, 1, 1];
        for of in 2..=3u16 {
            for index in 0..of {
                let share = Share::Part { index, of };
                let p = filter(share).expect("a program");
                for last in 0..=255u8 {
                    let mac = [2, 0, 0, 7, 9, last];
                    let mine = share.answers(bucket(&mac), 0);
                    let cases: &[(&str, Vec<u8>, bool)] = &[
                        ("discover", packet(mac, 0, &discover), mine),
                        ("waited", packet(mac, MAX_SECS + 1, &discover), true),
                        ("at the limit", packet(mac, MAX_SECS, &discover), mine),
                        ("request", packet(mac, 0, &request), true),
                        ("type not first", packet(mac, 0, &late_type), true),
                    ];
                    for (what, pkt, passes) in cases {
                        assert_eq!(
                            run(&p, &[], pkt) != 0,
                            *passes,
                            "{what}, {share:?}, {mac:?}"
                        );
                    }
                    let mut not_eth = packet(mac, 0, &discover);
                    not_eth[9] = 6;
                    assert_ne!(run(&p, &[], &not_eth), 0, "not Ethernet");
                }
            }
        }
    }
}
