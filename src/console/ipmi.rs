//! The IPMI serial-over-LAN backend: `ipmitool -I lanplus ... sol activate`
//! run as a child process on a pseudo-terminal, one per session.
//!
//! Why a child process: no maintained Rust crate implements RMCP+ with the
//! SOL payload, and writing one (RAKP, the integrity and confidentiality
//! algorithms, SOL's sequence/ack/retry rules and vendor quirks) would be
//! a protocol stack of its own to keep alive against BMCs we cannot test.
//! ipmitool is packaged everywhere (Debian and RHEL `ipmitool`) and talks
//! to OpenIPMI's `ipmi_sim` as it is; FreeIPMI's `ipmiconsole` was tried
//! and needed four vendor workaround flags against it, then carried no
//! data. ipmitool reads its keyboard from a terminal only, hence the PTY.
//!
//! The password reaches ipmitool in its environment (`-E`), never on its
//! command line. Keystrokes pass through [`Escaper`], so a viewer typing
//! `~.` at the start of a line does not end the session. A session ends
//! politely (`~.`, which deactivates the SOL payload) and the child is
//! killed if it does not leave.
//!
//! A BMC that restarts under an idle session is noticed by ipmitool's own
//! keepalive (about a minute and a half), or at the next keystroke within
//! seconds; either way the session ends and the usual back-off reconnects.

use std::os::fd::{AsFd, OwnedFd};
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use rustix::pty::OpenptFlags;
use tokio::io::unix::AsyncFd;
use tokio::process::{Child, Command};

use super::session::Failure;
use super::targets::Target;
use crate::redfish::Credentials;

/// ipmitool's SOL escape character (its default).
const ESCAPE: u8 = b'~';
/// The line ipmitool prints once the SOL payload is active.
const READY: &str = "SOL Session operational";
/// Most bytes of ipmitool's chatter kept for an error message.
const CHATTER: usize = 4096;

/// Keeps viewers' keystrokes from reaching ipmitool as escape sequences:
/// at the start of a line ipmitool reads `~` as its escape, and `~~` as a
/// plain `~`. Pure.
#[derive(Debug, Clone)]
pub struct Escaper {
    line_start: bool,
}

impl Default for Escaper {
    fn default() -> Self {
        Escaper { line_start: true }
    }
}

impl Escaper {
    pub fn escape(&mut self, input: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(input.len() + 1);
        for &b in input {
            if self.line_start && b == ESCAPE {
                out.push(ESCAPE);
            }
            out.push(b);
            self.line_start = b == b'\r' || b == b'\n';
        }
        out
    }

    /// What ends the session: its escape, at the start of a line.
    fn goodbye(&self) -> &'static [u8] {
        if self.line_start { b"~." } else { b"\r~." }
    }
}

/// What ipmitool's messages before the SOL session say went wrong.
pub fn classify(chatter: &str, t: &Target, user: &str) -> Failure {
    let lower = chatter.to_ascii_lowercase();
    let said = chatter
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("Loading IANA"))
        .collect::<Vec<_>>()
        .join("; ");
    let said = if said.is_empty() {
        "ipmitool ended without a word".to_string()
    } else {
        said
    };
    let refused = [
        "unauthorized name",
        "hmac is invalid",
        "invalid authentication",
        "insufficient privilege",
        "unauthorized role",
        "password",
    ];
    if refused.iter().any(|r| lower.contains(r)) {
        Failure::Credentials(format!(
            "BMC {} refused user {user:?} over IPMI: {said}",
            t.bmc
        ))
    } else {
        Failure::Transport(format!("IPMI SOL to {}:{}: {said}", t.host, t.port))
    }
}

/// An open IPMI console.
pub struct Link {
    child: Child,
    master: AsyncFd<OwnedFd>,
    escaper: Escaper,
    /// Console output that came with the ready line.
    pending: Option<Bytes>,
}

fn pty() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let flags = OpenptFlags::RDWR | OpenptFlags::NOCTTY;
    let master = rustix::pty::openpt(flags)?;
    rustix::pty::grantpt(&master)?;
    rustix::pty::unlockpt(&master)?;
    // The peer straight from the master where the kernel can (a
    // container's /dev/pts may not be the master's), else by name.
    let slave = match rustix::pty::ioctl_tiocgptpeer(&master, flags) {
        Ok(fd) => fd,
        Err(_) => {
            let name = rustix::pty::ptsname(&master, Vec::new())?;
            rustix::fs::open(
                name.as_c_str(),
                rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NOCTTY | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )?
        }
    };
    // Raw from the start, so nothing typed early is echoed or rewritten.
    let mut t = rustix::termios::tcgetattr(&slave)?;
    t.make_raw();
    rustix::termios::tcsetattr(&slave, rustix::termios::OptionalActions::Now, &t)?;
    let size = rustix::termios::Winsize {
        ws_row: 24,
        ws_col: 80,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    rustix::termios::tcsetwinsize(&slave, size)?;
    rustix::io::ioctl_fionbio(&master, true)?;
    Ok((master, slave))
}

/// Starts `ipmitool sol activate` and waits until the SOL payload is
/// active (or ipmitool gives up, or `timeout` passes).
pub async fn connect(
    t: &Target,
    creds: &Credentials,
    timeout: Duration,
    program: &str,
    cipher_suite: u8,
) -> Result<Link, Failure> {
    let mut link = spawn(t, creds, program, cipher_suite, &["sol", "activate"])?;
    let mut chatter = Vec::new();
    let ready = tokio::time::timeout(timeout, async {
        loop {
            let Some(data) = link.read().await else {
                return false;
            };
            chatter.extend_from_slice(&data);
            if let Some(at) = find(&chatter, READY.as_bytes()) {
                // The rest of the ready line is ipmitool's; after it, the console's.
                let end = chatter[at..]
                    .iter()
                    .position(|b| *b == b'\n')
                    .map(|p| at + p + 1);
                if let Some(end) = end {
                    if end < chatter.len() {
                        link.pending = Some(Bytes::copy_from_slice(&chatter[end..]));
                    }
                    return true;
                }
            }
            if chatter.len() > CHATTER {
                chatter.drain(..chatter.len() - CHATTER);
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&chatter).into_owned();
    match ready {
        Ok(true) => Ok(link),
        Ok(false) => {
            link.kill().await;
            if text.contains("already active") {
                // A session of ours that died without deactivating (or
                // someone else's): take the payload back for the next try.
                if let Ok(mut d) = spawn(t, creds, program, cipher_suite, &["sol", "deactivate"]) {
                    let _ =
                        tokio::time::timeout(timeout, async { while d.read().await.is_some() {} })
                            .await;
                    d.kill().await;
                }
                return Err(Failure::Transport(format!(
                    "IPMI SOL on BMC {} was active in another session; deactivated it",
                    t.bmc
                )));
            }
            Err(classify(&text, t, &creds.username))
        }
        Err(_) => {
            link.kill().await;
            Err(Failure::Transport(format!(
                "no IPMI SOL session with {}:{} within {timeout:?}{}",
                t.host,
                t.port,
                if text.trim().is_empty() {
                    String::new()
                } else {
                    format!(" (ipmitool: {})", text.trim())
                }
            )))
        }
    }
}

/// The terminal's master side, watched by the reactor.
#[allow(unsafe_code)]
fn watch(fd: OwnedFd) -> std::io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd owns its descriptor and always returns that one
    // from `as_raw_fd`, until it is dropped with the `AsyncFd`.
    unsafe { AsyncFd::register(fd) }.map_err(std::io::Error::from)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn spawn(
    t: &Target,
    creds: &Credentials,
    program: &str,
    cipher_suite: u8,
    action: &[&str],
) -> Result<Link, Failure> {
    let (master, slave) = pty()
        .map_err(|e| Failure::Transport(format!("cannot open a terminal for ipmitool: {e}")))?;
    let io = |fd: &OwnedFd| {
        fd.try_clone()
            .map(Stdio::from)
            .map_err(|e| Failure::Transport(format!("cannot open a terminal for ipmitool: {e}")))
    };
    let mut cmd = Command::new(program);
    cmd.args(["-I", "lanplus", "-H", &t.host, "-p"])
        .arg(t.port.to_string())
        .arg("-U")
        .arg(&creds.username)
        .arg("-E")
        .arg("-C")
        .arg(cipher_suite.to_string())
        .arg("-v")
        .args(action)
        .env("IPMI_PASSWORD", &creds.password)
        .stdin(io(&slave)?)
        .stdout(io(&slave)?)
        .stderr(io(&slave)?)
        .kill_on_drop(true);
    let child = cmd.spawn().map_err(|e| {
        Failure::Transport(if e.kind() == std::io::ErrorKind::NotFound {
            format!("{program} is not installed (package ipmitool); IPMI consoles need it")
        } else {
            format!("cannot start {program}: {e}")
        })
    })?;
    // Only the child holds the terminal now: its exit reads as end of file.
    drop(slave);
    let master = watch(master)
        .map_err(|e| Failure::Transport(format!("cannot watch ipmitool's terminal: {e}")))?;
    Ok(Link {
        child,
        master,
        escaper: Escaper::default(),
        pending: None,
    })
}

impl Link {
    async fn read(&self) -> Option<Bytes> {
        let mut buf = vec![0u8; 8192];
        loop {
            let mut guard = self.master.readable().await.ok()?;
            match guard.try_io(|fd| {
                rustix::io::read(fd.get_ref().as_fd(), &mut buf).map_err(std::io::Error::from)
            }) {
                Ok(Ok(0)) => return None,
                Ok(Ok(n)) => return Some(Bytes::copy_from_slice(&buf[..n])),
                // EIO: every holder of the terminal's other side is gone.
                Ok(Err(_)) => return None,
                Err(_would_block) => continue,
            }
        }
    }

    async fn write_all(&self, mut data: &[u8]) -> std::io::Result<()> {
        while !data.is_empty() {
            let mut guard = self.master.writable().await?;
            match guard.try_io(|fd| {
                rustix::io::write(fd.get_ref().as_fd(), data).map_err(std::io::Error::from)
            }) {
                Ok(Ok(n)) => data = &data[n..],
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }

    /// The next output from the console; `None` when it closed.
    pub async fn recv(&mut self) -> Option<Bytes> {
        if let Some(p) = self.pending.take() {
            return Some(p);
        }
        self.read().await
    }

    /// Keystrokes to the console.
    pub async fn send(&mut self, data: Bytes) -> Result<(), Failure> {
        let escaped = self.escaper.escape(&data);
        self.write_all(&escaped)
            .await
            .map_err(|e| Failure::Transport(format!("console write: {e}")))
    }

    async fn kill(&mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }

    /// Ends the session politely (ipmitool deactivates the SOL payload on
    /// its escape), then makes sure the child is gone.
    pub async fn close(mut self) {
        let bye = self.escaper.goodbye();
        if tokio::time::timeout(Duration::from_secs(1), self.write_all(bye))
            .await
            .is_ok_and(|r| r.is_ok())
        {
            let waited = tokio::time::timeout(Duration::from_secs(3), self.child.wait()).await;
            if waited.is_ok() {
                return;
            }
        }
        self.kill().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_only_at_line_start() {
        // Keystroke chunks, what ipmitool is sent, the goodbye after them.
        type Case = (&'static [&'static [u8]], &'static [u8], &'static [u8]);
        let table: &[Case] = &[
            (&[b"hello\r"], b"hello\r", b"~."),
            (&[b"~."], b"~~.", b"\r~."),
            (&[b"a~.\r~.\n~~"], b"a~.\r~~.\n~~~", b"\r~."),
            (&[b"ls\r", b"~", b"."], b"ls\r~~.", b"\r~."),
            (&[b"x"], b"x", b"\r~."),
        ];
        for (chunks, want, bye) in table {
            let mut e = Escaper::default();
            let got: Vec<u8> = chunks.iter().flat_map(|c| e.escape(c)).collect();
            assert_eq!(
                (
                    String::from_utf8_lossy(&got),
                    String::from_utf8_lossy(e.goodbye())
                ),
                (String::from_utf8_lossy(want), String::from_utf8_lossy(bye)),
                "{chunks:?}"
            );
        }
    }

    fn target() -> Target {
        Target {
            node: "x1c0s0b0n0".into(),
            bmc: "x1c0s0b0".into(),
            host: "10.0.0.1".into(),
            port: 623,
            command: String::new(),
            backend: super::super::targets::Backend::Ipmi,
        }
    }

    #[tokio::test]
    async fn a_missing_ipmitool_is_named() {
        let creds = Credentials {
            username: "admin".into(),
            password: "secret".into(),
        };
        let Err(f) = connect(
            &target(),
            &creds,
            Duration::from_secs(5),
            "/nonexistent/ipmitool",
            3,
        )
        .await
        else {
            panic!("a session without ipmitool");
        };
        assert!(matches!(f, Failure::Transport(_)), "{f:?}");
        assert!(f.message().contains("not installed"), "{f:?}");
    }

    #[test]
    fn classifies_ipmitool_errors() {
        let t = target();
        let table = [
            (
                "Loading IANA PEN Registry...\r\n> RAKP 2 HMAC is invalid\r\nError: Unable to establish IPMI v2 / RMCP+ session\r\n",
                true,
            ),
            (
                "RAKP 2 message indicates an error : unauthorized name\r\n",
                true,
            ),
            (
                "Get Auth Capabilities error\r\nError issuing Get Channel Authentication Capabilities request\r\n",
                false,
            ),
            ("", false),
        ];
        for (said, refused) in table {
            let f = classify(said, &t, "admin");
            assert_eq!(
                matches!(f, Failure::Credentials(_)),
                refused,
                "{said:?}: {f:?}"
            );
            assert!(!f.message().contains("IANA"), "{f:?}");
        }
    }
}
