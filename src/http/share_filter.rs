//! Peers at their connection share, refused by the kernel.
//!
//! A client at its per-address share on the node listener used to have
//! each further connection accepted and closed: a handshake, an accept, a
//! close and a teardown for nothing. A slowloris that reopens its refused
//! connections every few seconds turns that into thousands a second, and
//! it took a third of the server's core from the nodes (bench/README.md,
//! "Slowloris"). So while an address is at its share, a classic BPF program
//! on the listening socket drops the opening SYN of its connections in the
//! kernel, before a handshake, a listen queue entry or a wakeup of this
//! process. The client's TCP sends its SYN again (after 1 s, 3 s, …) and is
//! let in once the address has room, as if the listen queue were full;
//! nothing answers it meanwhile, so a flood learns nothing to hurry it.
//!
//! Only a SYN without ACK is matched: handshakes under way and established
//! connections (which inherit the listener's program) are never touched.
//! The program holds at most [`MAX_ADDRS`] addresses (the kernel bounds a
//! program's length, and it runs for every SYN); an address over its share
//! beyond those, or whose connection raced the program's update, is still
//! accepted and closed. Attaching needs no privilege. Dropped SYNs are read
//! back from the listening socket's drop count (`SO_MEMINFO`), which the
//! kernel also raises when the listen queue overflows.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd};

use crate::bpf::{
    ALU_AND_K, ALU_RSH_K, DROP, Insn, JMP_JA, JMP_JEQ_K, KEEP, LD_B_ABS, LD_W_ABS, NET, RET_K,
};

/// Addresses the program refuses at most.
pub const MAX_ADDRS: usize = 64;

/// The TCP header's flags byte, and its SYN and ACK bits.
const TCP_FLAGS: u32 = 13;
const SYN: u32 = 0x02;
const ACK: u32 = 0x10;

/// The program dropping opening SYNs from `blocked` (IPv4-mapped IPv6
/// addresses match the IPv4 packets a dual-stack listener gets).
pub fn program<'a>(blocked: impl IntoIterator<Item = &'a IpAddr>) -> Vec<Insn> {
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    for ip in blocked {
        match ip.to_canonical() {
            IpAddr::V4(a) => v4.push(u32::from(a)),
            IpAddr::V6(a) => v6.push(a.octets()),
        }
    }
    let mut p = vec![
        Insn(LD_B_ABS, 0, 0, TCP_FLAGS),
        Insn(ALU_AND_K, 0, 0, SYN | ACK),
        Insn(JMP_JEQ_K, 1, 0, SYN),
        Insn(RET_K, 0, 0, KEEP),
        // The IP version, from the network header's first nibble.
        Insn(LD_B_ABS, 0, 0, NET),
        Insn(ALU_RSH_K, 0, 0, 4),
        Insn(JMP_JEQ_K, 1, 0, 4),
    ];
    // IPv6 (or anything else): over the IPv4 block; a long jump, since a
    // conditional one reaches at most 255 instructions.
    let v4_len = 2 + 2 * v4.len() as u32;
    p.push(Insn(JMP_JA, 0, 0, v4_len));
    p.push(Insn(LD_W_ABS, 0, 0, NET + 12));
    for a in v4 {
        p.push(Insn(JMP_JEQ_K, 0, 1, a));
        p.push(Insn(RET_K, 0, 0, DROP));
    }
    p.push(Insn(RET_K, 0, 0, KEEP));
    for a in v6 {
        // Four words from the source address (offset 8); a mismatch skips
        // the rest of this address's instructions.
        for (i, w) in a.chunks_exact(4).enumerate() {
            let word = u32::from_be_bytes([w[0], w[1], w[2], w[3]]);
            let rest = (2 * (3 - i) + 1) as u8;
            p.push(Insn(LD_W_ABS, 0, 0, NET + 8 + 4 * i as u32));
            p.push(Insn(JMP_JEQ_K, 0, rest, word));
        }
        p.push(Insn(RET_K, 0, 0, DROP));
    }
    p.push(Insn(RET_K, 0, 0, KEEP));
    p
}

/// The program on one listening socket, and the SYNs it dropped.
#[derive(Debug, Default)]
pub struct ShareFilter {
    /// The addresses the attached program refuses; empty when none is.
    blocked: BTreeSet<IpAddr>,
    /// The socket's drop count when last read.
    drops: u32,
}

impl ShareFilter {
    /// Whether a program is attached.
    pub fn active(&self) -> bool {
        !self.blocked.is_empty()
    }

    /// Refuses `blocked` (its first [`MAX_ADDRS`]) from now on, and returns
    /// the SYNs dropped since the last call.
    pub fn set(&mut self, sock: &impl AsFd, blocked: &BTreeSet<IpAddr>) -> std::io::Result<u64> {
        let want: BTreeSet<IpAddr> = blocked.iter().take(MAX_ADDRS).copied().collect();
        let dropped = self.dropped(sock);
        if want == self.blocked {
            return Ok(dropped);
        }
        if want.is_empty() {
            // Nothing to refuse: no program runs at all.
            crate::bpf::attach(sock, None)?;
        } else {
            crate::bpf::attach(sock, Some(&program(&want)))?;
            if self.blocked.is_empty() {
                self.drops = drop_count(sock).unwrap_or(0);
            }
        }
        self.blocked = want;
        Ok(dropped)
    }

    /// SYNs dropped since the last reading, while a program was attached.
    pub fn dropped(&mut self, sock: &impl AsFd) -> u64 {
        if !self.active() {
            return 0;
        }
        let Some(now) = drop_count(sock) else {
            return 0;
        };
        let n = now.wrapping_sub(self.drops);
        self.drops = now;
        u64::from(n)
    }
}

/// The socket's count of packets dropped (`SK_MEMINFO_DROPS` of
/// `SO_MEMINFO`; a wrapping 32-bit count).
#[allow(unsafe_code)]
fn drop_count(sock: &impl AsFd) -> Option<u32> {
    // SO_MEMINFO (asm-generic/socket.h; libc does not name it here).
    const SO_MEMINFO: libc::c_int = 55;
    const VARS: usize = 9;
    let mut info = [0u32; VARS];
    let mut len = std::mem::size_of_val(&info) as libc::socklen_t;
    // SAFETY: the buffer is `len` bytes long and outlives the call; the
    // kernel writes at most `len` bytes and stores the length it wrote.
    let r = unsafe {
        libc::getsockopt(
            sock.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            SO_MEMINFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    let drops = libc::SK_MEMINFO_DROPS as usize;
    (r == 0 && len as usize > drops * 4).then(|| info[drops])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpf::run;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn packet(src: IpAddr, flags: u8) -> (Vec<u8>, Vec<u8>) {
        let net = match src {
            IpAddr::V4(a) => {
                let mut h = vec![0x45u8; 20];
                h[12..16].copy_from_slice(&a.octets());
                h
            }
            IpAddr::V6(a) => {
                let mut h = vec![0x60u8; 40];
                h[8..24].copy_from_slice(&a.octets());
                h
            }
        };
        let mut tcp = vec![0u8; 20];
        tcp[13] = flags;
        (net, tcp)
    }

    #[test]
    fn drops_only_opening_syns_of_blocked_addresses() {
        let v4 = |a, b, c, d| IpAddr::V4(Ipv4Addr::new(a, b, c, d));
        let v6 = |s: &str| IpAddr::V6(s.parse::<Ipv6Addr>().unwrap());
        let blocked = [
            v4(127, 2, 0, 1),
            v4(10, 0, 0, 9),
            v6("fd00::7"),
            v6("::ffff:192.0.2.1"),
        ];
        let (syn, synack, ack, syn_psh) = (0x02, 0x12, 0x10, 0x0a);
        #[rustfmt::skip]
        let cases = [
            // source, TCP flags, dropped
            (v4(127, 2, 0, 1), syn, true),
            (v4(10, 0, 0, 9), syn, true),
            (v4(10, 0, 0, 9), syn_psh, true),
            (v4(10, 0, 0, 9), ack, false),
            (v4(10, 0, 0, 9), synack, false),
            (v4(127, 2, 0, 2), syn, false),
            (v4(10, 0, 0, 8), syn, false),
            (v6("fd00::7"), syn, true),
            (v6("fd00::7"), ack, false),
            (v6("fd00::8"), syn, false),
            (v6("fd01::7"), syn, false),
            // A mapped address matches the IPv4 packets of a dual-stack
            // listener.
            (v4(192, 0, 2, 1), syn, true),
            (v6("::ffff:192.0.2.2"), syn, false),
        ];
        let prog = program(&blocked);
        for (src, flags, dropped) in cases {
            let (net, tcp) = packet(src, flags);
            let got = run(&prog, &net, &tcp) == DROP;
            assert_eq!(got, dropped, "{src} flags {flags:#x}");
        }
        // With nothing blocked, or only one family, everything else passes.
        for blocked in [vec![], vec![v4(127, 2, 0, 1)], vec![v6("fd00::7")]] {
            let prog = program(&blocked);
            for src in [v4(127, 2, 0, 2), v6("fd00::8")] {
                let (net, tcp) = packet(src, syn);
                assert_eq!(run(&prog, &net, &tcp), KEEP, "{src} with {blocked:?}");
            }
        }
    }

    #[test]
    fn the_longest_program_stays_within_the_kernels_bounds() {
        let many: Vec<IpAddr> = (0..MAX_ADDRS as u16)
            .map(|i| IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, i)))
            .collect();
        let prog = program(&many);
        // BPF_MAXINSNS, and the socket option memory a listener's children
        // are charged for it (net.core.optmem_max, 20 KiB at the least).
        assert!(prog.len() <= 4096, "{} instructions", prog.len());
        assert!(prog.len() * 8 <= 10 * 1024, "{} instructions", prog.len());
    }
}
