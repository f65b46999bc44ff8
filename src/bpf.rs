//! Classic BPF socket filters: what the kernel should drop before this
//! process is woken for it.
//!
//! Two services hand the kernel work they would otherwise do per packet:
//! the node listener drops the SYNs of an address at its connection share
//! (`http::share_filter`), and DHCP drops the DISCOVERs another head
//! answers and the REQUESTs that name another server (`dhcp::balance`).
//! Each builds its program as data ([`Asm`] for the longer one), pure and
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
/// BPF_LD | BPF_W | BPF_IND: the word at X + k
pub const LD_W_IND: u16 = 0x40;
/// BPF_LD | BPF_B | BPF_IND: the byte at X + k
pub const LD_B_IND: u16 = 0x50;
/// BPF_LDX | BPF_W | BPF_IMM: X = k
pub const LDX_IMM: u16 = 0x01;
/// BPF_LD | BPF_W | BPF_LEN: the length from the transport header on
pub const LD_LEN: u16 = 0x80;
/// BPF_ALU | BPF_ADD | BPF_K
pub const ALU_ADD_K: u16 = 0x04;
/// BPF_ALU | BPF_ADD | BPF_X
pub const ALU_ADD_X: u16 = 0x0c;
/// BPF_ALU | BPF_SUB | BPF_K
pub const ALU_SUB_K: u16 = 0x14;
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
/// BPF_MISC | BPF_TXA
pub const MISC_TXA: u16 = 0x87;
/// BPF_JMP | BPF_JA
pub const JMP_JA: u16 = 0x05;
/// BPF_JMP | BPF_JEQ | BPF_K
pub const JMP_JEQ_K: u16 = 0x15;
/// BPF_JMP | BPF_JGT | BPF_K
pub const JMP_JGT_K: u16 = 0x25;
/// BPF_JMP | BPF_JGT | BPF_X
pub const JMP_JGT_X: u16 = 0x2d;
/// BPF_JMP | BPF_JGE | BPF_X
pub const JMP_JGE_X: u16 = 0x3d;
/// BPF_RET | BPF_K
pub const RET_K: u16 = 0x06;
/// Offsets from here on address the network header (SKF_NET_OFF); plain
/// ones the transport header, where a socket's program starts.
pub const NET: u32 = (-0x10_0000i32) as u32;
/// What a program returns to keep a packet whole, or to drop it.
pub const KEEP: u32 = u32::MAX;
pub const DROP: u32 = 0;

/// A place in a program under construction that jumps name before it is
/// known; see [`Asm`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Label(usize);

/// Builds a program whose jumps name [`Label`]s, so that a program with
/// repeated blocks (an unrolled loop) need not count offsets by hand.
/// Classic BPF jumps only forward, conditional ones at most 255
/// instructions: [`Asm::finish`] refuses a program that breaks either.
#[derive(Default)]
pub struct Asm {
    prog: Vec<Insn>,
    /// Instruction index → (true, false) targets; `None`: the next one.
    jumps: Vec<(usize, Option<Label>, Option<Label>)>,
    at: Vec<Option<usize>>,
}

impl Asm {
    /// A label to [`Asm::bind`] later.
    pub fn label(&mut self) -> Label {
        self.at.push(None);
        Label(self.at.len() - 1)
    }

    /// `l` names the next instruction.
    pub fn bind(&mut self, l: Label) {
        self.at[l.0] = Some(self.prog.len());
    }

    /// An instruction that does not jump.
    pub fn op(&mut self, code: u16, k: u32) {
        self.prog.push(Insn(code, 0, 0, k));
    }

    /// A conditional jump to `t` or `f` (`None`: the next instruction).
    pub fn jump(&mut self, code: u16, k: u32, t: Option<Label>, f: Option<Label>) {
        self.jumps.push((self.prog.len(), t, f));
        self.prog.push(Insn(code, 0, 0, k));
    }

    /// An unconditional jump to `l`.
    pub fn ja(&mut self, l: Label) {
        self.jumps.push((self.prog.len(), Some(l), None));
        self.prog.push(Insn(JMP_JA, 0, 0, 0));
    }

    /// The program, or why it cannot be one.
    pub fn finish(mut self) -> Result<Vec<Insn>, String> {
        for &(i, t, f) in &self.jumps {
            let off = |l: Option<Label>| -> Result<u32, String> {
                let Some(l) = l else { return Ok(0) };
                let to = self.at[l.0].ok_or_else(|| format!("label {} never bound", l.0))?;
                to.checked_sub(i + 1)
                    .map(|d| d as u32)
                    .ok_or_else(|| format!("instruction {i} jumps backwards"))
            };
            let (t, f) = (off(t)?, off(f)?);
            let insn = &mut self.prog[i];
            if insn.0 == JMP_JA {
                insn.3 = t;
            } else {
                insn.1 = u8::try_from(t).map_err(|_| format!("instruction {i}: jump too far"))?;
                insn.2 = u8::try_from(f).map_err(|_| format!("instruction {i}: jump too far"))?;
            }
        }
        if self.prog.len() > 4096 {
            return Err(format!(
                "{} instructions; the kernel takes 4096",
                self.prog.len()
            ));
        }
        Ok(self.prog)
    }
}

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
            LD_B_IND | LD_W_IND => {
                let n = if code == LD_B_IND { 1 } else { 4 };
                match x.checked_add(k).and_then(|at| load(at, n)) {
                    Some(v) => a = v,
                    None => return DROP,
                }
            }
            LD_LEN => a = transport.len() as u32,
            LDX_IMM => x = k,
            ALU_ADD_K => a = a.wrapping_add(k),
            ALU_ADD_X => a = a.wrapping_add(x),
            ALU_SUB_K => a = a.wrapping_sub(k),
            MISC_TXA => a = x,
            JMP_JGT_X => pc += usize::from(if a > x { jt } else { jf }),
            JMP_JGE_X => pc += usize::from(if a >= x { jt } else { jf }),
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
