//! Classic BPF socket filters: what the kernel should drop before this
//! process is woken for it.
//!
//! Two services hand the kernel work they would otherwise do per packet:
//! the node listener drops the SYNs of an address at its connection share
//! (`http::share_filter`), and DHCP drops the DISCOVERs another head
//! answers (`dhcp::balance`). Each builds its program as data, pure and
//! tested against [`run`], a model of the kernel's interpreter for the
//! instructions used here; attaching is one `setsockopt` and needs no
//! privilege.

use std::os::fd::AsFd;

/// One instruction: code, jump-if-true, jump-if-false, constant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn(pub u16, pub u8, pub u8, pub u32);

// Opcodes (linux/bpf_common.h): class | size | mode, or class | operation |
// source.
/// BPF_LD | BPF_W | BPF_ABS
pub const LD_W_ABS: u16 = 0x20;
/// BPF_LD | BPF_H | BPF_ABS
pub const LD_H_ABS: u16 = 0x28;
/// BPF_LD | BPF_B | BPF_ABS
pub const LD_B_ABS: u16 = 0x30;
/// BPF_ALU | BPF_AND | BPF_K
pub const ALU_AND_K: u16 = 0x54;
/// BPF_ALU | BPF_RSH | BPF_K
pub const ALU_RSH_K: u16 = 0x74;
/// BPF_ALU | BPF_MOD | BPF_K
pub const ALU_MOD_K: u16 = 0x94;
/// BPF_ALU | BPF_XOR | BPF_X
pub const ALU_XOR_X: u16 = 0xac;
/// BPF_MISC | BPF_TAX
pub const MISC_TAX: u16 = 0x07;
/// BPF_JMP | BPF_JA
pub const JMP_JA: u16 = 0x05;
/// BPF_JMP | BPF_JEQ | BPF_K
pub const JMP_JEQ_K: u16 = 0x15;
/// BPF_JMP | BPF_JGT | BPF_K
pub const JMP_JGT_K: u16 = 0x25;
/// BPF_RET | BPF_K
pub const RET_K: u16 = 0x06;
/// Offsets from here on address the network header (SKF_NET_OFF); plain
/// ones the transport header, where a socket's program starts.
pub const NET: u32 = (-0x10_0000i32) as u32;
/// What a program returns to keep a packet whole, or to drop it.
pub const KEEP: u32 = u32::MAX;
pub const DROP: u32 = 0;

/// Runs `prog` on `sock`'s packets from now on; `None` removes any.
pub fn attach(sock: &impl AsFd, prog: Option<&[Insn]>) -> std::io::Result<()> {
    let s = socket2::SockRef::from(sock);
    match prog {
        None => match s.detach_filter() {
            // ENOENT: there was none.
            Err(e) if e.raw_os_error() != Some(libc::ENOENT) => Err(e),
            _ => Ok(()),
        },
        Some(p) => {
            let p: Vec<socket2::SockFilter> = p
                .iter()
                .map(|&Insn(c, t, f, k)| socket2::SockFilter::new(c, t, f, k))
                .collect();
            s.attach_filter(&p)
        }
    }
}

/// Runs `prog` as the kernel does on a packet whose network header is
/// `net` and whose transport header and payload are `transport`; a load
/// past the end drops the packet, as in the kernel.
#[cfg(test)]
pub fn run(prog: &[Insn], net: &[u8], transport: &[u8]) -> u32 {
    let load = |k: u32, n: usize| -> Option<u32> {
        let (buf, off) = if k >= NET {
            (net, (k - NET) as usize)
        } else {
            (transport, k as usize)
        };
        let b = buf.get(off..off + n)?;
        Some(b.iter().fold(0u32, |a, b| (a << 8) | u32::from(*b)))
    };
    let (mut a, mut x, mut pc) = (0u32, 0u32, 0usize);
    loop {
        let Insn(code, jt, jf, k) = prog[pc];
        pc += 1;
        match code {
            LD_B_ABS | LD_H_ABS | LD_W_ABS => {
                let n = match code {
                    LD_B_ABS => 1,
                    LD_H_ABS => 2,
                    _ => 4,
                };
                match load(k, n) {
                    Some(v) => a = v,
                    None => return DROP,
                }
            }
            ALU_AND_K => a &= k,
            ALU_RSH_K => a >>= k,
            ALU_MOD_K => a %= k,
            ALU_XOR_X => a ^= x,
            MISC_TAX => x = a,
            JMP_JA => pc += k as usize,
            JMP_JEQ_K => pc += usize::from(if a == k { jt } else { jf }),
            JMP_JGT_K => pc += usize::from(if a > k { jt } else { jf }),
            RET_K => return k,
            other => panic!("unexpected opcode {other:#x}"),
        }
    }
}
