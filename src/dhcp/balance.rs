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
//! queued, copied or woken for, and so is the REQUEST that follows it,
//! which every head hears but which names the head that offered: half of
//! what a second head received was these. A head then pays next to nothing
//! for the other heads' clients; the policy's own checks catch what the
//! filter lets through (a message type that is not the first option, a
//! server identifier past the options the filter reads).
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

use std::net::Ipv4Addr;

use crate::bpf::{
    ALU_ADD_K, ALU_ADD_X, ALU_MOD_K, ALU_SUB_K, ALU_XOR_X, Asm, DROP, Insn, JMP_JEQ_K, JMP_JGE_X,
    JMP_JGT_K, JMP_JGT_X, KEEP, LD_B_ABS, LD_B_IND, LD_H_ABS, LD_LEN, LD_W_IND, LDX_IMM, MISC_TAX,
    MISC_TXA, RET_K,
};

/// Where a UDP socket's filter sees the DHCP message: after the 8-byte UDP
/// header.
const AT: u32 = 8;

/// Options after the message type the filter looks through for a server
/// identifier; a REQUEST with more before it goes to the policy.
pub const WALK: usize = 16;

/// At most this many of the socket's own addresses go into the program;
/// with more, REQUESTs are all left to the policy.
pub const MAX_OWN: usize = 16;

/// The socket filter for `share`, on a socket whose addresses are `own`:
///
/// - drops a DISCOVER (message type as the first option, Ethernet, `secs`
///   at most [`MAX_SECS`]) whose bucket is another head's;
/// - drops a REQUEST (message type first) whose server identifier is none
///   of `own`: the client chose another head's offer, and nothing here
///   holds an offer for it (its DISCOVER never reached this head) unless
///   it waited past [`MAX_SECS`], when the offer this head made is freed
///   by its hold running out instead of at once. Empty `own` (proxyDHCP,
///   the PXE port, or more than [`MAX_OWN`] addresses): none dropped;
/// - passes everything else, except a packet too short to hold a message
///   type or whose options run past its end on the way to a server
///   identifier, which no policy answers either.
///
/// `None`: nothing to drop (the whole share).
pub fn filter(share: Share, own: &[Ipv4Addr]) -> Option<Vec<Insn>> {
    let Share::Part { index, of } = share else {
        return None;
    };
    let own = if own.len() > MAX_OWN { &[][..] } else { own };
    let mut a = Asm::default();
    // Conditional jumps reach 255 instructions: the DISCOVER part returns
    // through its own pair, the REQUEST walk through the last.
    let (pass0, drop0) = (a.label(), a.label());
    let (pass, drop, request) = (a.label(), a.label(), a.label());
    a.op(LD_B_ABS, AT + 1); // htype
    a.jump(JMP_JEQ_K, 1, None, Some(pass0)); // Ethernet
    a.op(LD_B_ABS, AT + 2); // hlen
    a.jump(JMP_JEQ_K, 6, None, Some(pass0));
    a.op(LD_B_ABS, AT + 240); // first option
    a.jump(JMP_JEQ_K, 53, None, Some(pass0)); // message type
    a.op(LD_B_ABS, AT + 242); // its value
    let not_discover = a.label();
    a.jump(JMP_JEQ_K, 1, None, Some(not_discover));
    a.op(LD_H_ABS, AT + 8); // secs
    a.jump(JMP_JGT_K, u32::from(MAX_SECS), Some(pass0), None);
    a.op(LD_B_ABS, AT + 28 + 3); // chaddr[3]
    a.op(MISC_TAX, 0);
    a.op(LD_B_ABS, AT + 28 + 4);
    a.op(ALU_XOR_X, 0);
    a.op(MISC_TAX, 0);
    a.op(LD_B_ABS, AT + 28 + 5);
    a.op(ALU_XOR_X, 0); // bucket
    a.op(ALU_MOD_K, u32::from(of));
    a.jump(JMP_JEQ_K, u32::from(index), Some(pass0), Some(drop0));
    a.bind(not_discover);
    if own.is_empty() {
        a.ja(pass0);
    } else {
        a.jump(JMP_JEQ_K, 3, Some(request), Some(pass0));
    }
    a.bind(drop0);
    a.op(RET_K, DROP);
    a.bind(pass0);
    a.op(RET_K, KEEP);
    if !own.is_empty() {
        a.bind(request);
        walk_to_server_id(&mut a, own, pass, drop);
        a.bind(drop);
        a.op(RET_K, DROP);
        a.bind(pass);
        a.op(RET_K, KEEP);
    }
    a.finish().ok()
}

/// The REQUEST part of [`filter`]: X walks the options from the one after
/// the message type (at 243), [`WALK`] of them unrolled (classic BPF has no
/// backward jump); each block checks the option is inside the packet
/// before reading it. Conditional jumps reach only 255 instructions, so
/// each block leaves through jumps of its own.
fn walk_to_server_id(
    a: &mut Asm,
    own: &[Ipv4Addr],
    pass: crate::bpf::Label,
    drop: crate::bpf::Label,
) {
    let found = a.label();
    a.op(LDX_IMM, 243);
    for _ in 0..WALK {
        let (next, pad, out, hit) = (a.label(), a.label(), a.label(), a.label());
        a.op(LD_LEN, 0);
        a.op(ALU_SUB_K, AT);
        a.jump(JMP_JGT_X, 0, None, Some(out)); // the code byte is inside
        a.op(LD_B_IND, AT);
        a.jump(JMP_JEQ_K, 54, Some(hit), None);
        a.jump(JMP_JEQ_K, 255, Some(out), None); // end: no server identifier
        a.jump(JMP_JEQ_K, 0, Some(pad), None);
        a.op(LD_LEN, 0);
        a.op(ALU_SUB_K, AT + 1);
        a.jump(JMP_JGT_X, 0, None, Some(out)); // the length byte is inside
        a.op(LD_B_IND, AT + 1);
        a.op(ALU_ADD_K, 2);
        a.op(ALU_ADD_X, 0);
        a.op(MISC_TAX, 0);
        a.ja(next);
        a.bind(pad);
        a.op(MISC_TXA, 0);
        a.op(ALU_ADD_K, 1);
        a.op(MISC_TAX, 0);
        a.ja(next);
        a.bind(out);
        a.ja(pass);
        a.bind(hit);
        a.ja(found);
        a.bind(next);
    }
    a.ja(pass);
    a.bind(found);
    a.op(LD_LEN, 0);
    a.op(ALU_SUB_K, AT + 6);
    a.jump(JMP_JGE_X, 0, None, Some(pass)); // code, length and 4 bytes inside
    a.op(LD_B_IND, AT + 1);
    a.jump(JMP_JEQ_K, 4, None, Some(pass));
    a.op(LD_W_IND, AT + 2);
    for ip in own {
        a.jump(JMP_JEQ_K, u32::from(*ip), Some(pass), None);
    }
    a.ja(drop);
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
        assert_eq!(filter(Share::All, &[]), None);
        let discover = [53, 1, 1];
        let request = [53, 1, 3];
        let late_type = [61, 1, 0, 53, 1, 1];
        for of in 2..=3u16 {
            for index in 0..of {
                let share = Share::Part { index, of };
                let p = filter(share, &[]).expect("a program");
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

    /// REQUESTs naming another server are dropped wherever the server
    /// identifier sits among the options; everything the filter cannot be
    /// sure of goes to the policy.
    #[test]
    fn requests_naming_another_server_are_dropped() {
        let own = [Ipv4Addr::new(10, 1, 250, 1), Ipv4Addr::new(192, 168, 7, 1)];
        let other = [10, 1, 250, 2];
        let sid = |ip: [u8; 4]| [54, 4, ip[0], ip[1], ip[2], ip[3]];
        let cat = |parts: &[&[u8]]| parts.concat();
        let request: &[u8] = &[53, 1, 3];
        let req_ip: &[u8] = &[50, 4, 10, 1, 0, 9];
        let many: Vec<u8> = (0..WALK as u8).flat_map(|i| [60, 1, i]).collect();
        let before_limit: Vec<u8> = (0..WALK as u8 - 1).flat_map(|i| [60, 1, i]).collect();
        let cases: Vec<(&str, Vec<u8>, bool)> = vec![
            ("names another head", cat(&[request, &sid(other)]), false),
            (
                "after other options",
                cat(&[request, req_ip, &[61, 7, 1, 2, 3, 4, 5, 6, 7], &sid(other)]),
                false,
            ),
            (
                "after padding",
                cat(&[request, &[0, 0, 0], &sid(other)]),
                false,
            ),
            (
                "names this head",
                cat(&[request, req_ip, &sid([10, 1, 250, 1])]),
                true,
            ),
            (
                "names its other address",
                cat(&[request, &sid([192, 168, 7, 1])]),
                true,
            ),
            (
                "no server identifier (renewing, init-reboot)",
                cat(&[request, req_ip]),
                true,
            ),
            (
                "identifier of the wrong length",
                cat(&[request, &[54, 3, 10, 1, 250]]),
                true,
            ),
            (
                "last option the walk reads",
                cat(&[request, &before_limit, &sid(other)]),
                false,
            ),
            (
                "past the options the walk reads",
                cat(&[request, &many, &sid(other)]),
                true,
            ),
            (
                "a DISCOVER naming a server",
                cat(&[&[53, 1, 1], &sid(other)]),
                true,
            ),
            (
                "a DECLINE naming another server",
                cat(&[&[53, 1, 4], &sid(other)]),
                true,
            ),
            ("type not first", cat(&[req_ip, request, &sid(other)]), true),
        ];
        let mac = [2, 0, 0, 0, 0, 0]; // bucket 0: this head's, for the DISCOVER
        let share = Share::Part { index: 0, of: 2 };
        let p = filter(share, &own).expect("a program");
        let without = filter(share, &[]).expect("a program");
        for (what, options, passes) in &cases {
            let pkt = packet(mac, 0, options);
            assert_eq!(run(&p, &[], &pkt) != 0, *passes, "{what}");
            assert_ne!(run(&without, &[], &pkt), 0, "{what}, no own addresses");
        }
        // Options cut short by the end of the packet, however they end.
        let full = packet(mac, 0, &cat(&[request, req_ip, &sid(other)]));
        for cut in 8 + 243..full.len() {
            let verdict = run(&p, &[], &full[..cut]);
            assert!(verdict == 0 || verdict == KEEP, "cut at {cut}");
        }
        // Too many addresses to hold: the policy decides.
        let lots: Vec<Ipv4Addr> = (0..=MAX_OWN as u8)
            .map(|i| Ipv4Addr::new(10, 9, 0, i))
            .collect();
        let pkt = packet(mac, 0, &cat(&[request, &sid(other)]));
        assert_ne!(run(&filter(share, &lots).unwrap(), &[], &pkt), 0);
    }
}
