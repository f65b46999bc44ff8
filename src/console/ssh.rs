//! The SSH backend: one session to a BMC's console (Redfish
//! `SerialConsole.SSH`, OpenBMC's host-console port, or a vendor console
//! command run on the BMC's shell), with a PTY so the BMC sends the console
//! as a terminal would see it. Host keys are checked against the pin the
//! caller hands in; the key seen is handed back so a first connection can
//! be pinned.
//!
//! The console's output is handed to the caller's [`Output`] from russh's
//! own session task as each packet is decrypted, not passed on through a
//! channel to another task: with a thousand consoles of small packets, the
//! hop and the wakeup per packet were a large part of the cost. For the
//! same reason russh's keepalive timer (reset on every packet) is off; the
//! link pings a BMC that has been silent for [`KEEPALIVE`] instead.
//!
//! The socket is read through [`Paced`]: at once while a viewer watches
//! the console or the session is starting, in batches a pace apart while
//! nobody watches (see `pace`). The ping and its answer are unaffected (a
//! write ends a rest); output, and the session's end, may reach the hub up
//! to a pace late, far inside [`KEEPALIVE`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use russh::ChannelId;
use russh::client::{self, Handle, Msg};
use russh::keys::{HashAlg, PublicKey, PublicKeyOrCertificate};
use tokio_util::sync::CancellationToken;

use super::pace::{Paced, Watch};
use super::session::Failure;
use super::targets::Target;
use crate::redfish::Credentials;

/// Where a console's output goes, called from russh's session task.
pub type Output = Arc<dyn Fn(&[u8]) + Send + Sync>;

/// A BMC silent this long is pinged.
const KEEPALIVE: Duration = Duration::from_secs(30);
/// A ping unanswered this long ends the session.
const KEEPALIVE_WAIT: Duration = Duration::from_secs(60);

/// russh's ciphers, AES-GCM first: a console is many small packets, and
/// AES-GCM runs on the CPU's AES and carry-less multiply instructions, a
/// smaller cost per packet than ChaCha20-Poly1305 (a BMC without it gets
/// the next one it offers).
const CIPHERS: &[russh::cipher::Name] = &[
    russh::cipher::AES_256_GCM,
    russh::cipher::CHACHA20_POLY1305,
    russh::cipher::AES_256_CTR,
    russh::cipher::AES_192_CTR,
    russh::cipher::AES_128_CTR,
];

/// A host key as pinned: OpenSSH one-line form and SHA-256 fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenKey {
    pub openssh: String,
    pub fingerprint: String,
}

impl SeenKey {
    fn of(k: &PublicKey) -> SeenKey {
        let mut k = k.clone();
        k.set_comment("");
        SeenKey {
            openssh: k.to_openssh().unwrap_or_default(),
            fingerprint: k.fingerprint(HashAlg::Sha256).to_string(),
        }
    }
}

/// True when `pinned` (OpenSSH form) is the same key as `seen`.
fn same_key(pinned: &str, seen: &PublicKey) -> bool {
    PublicKey::from_openssh(pinned.trim()).is_ok_and(|p| p.key_data() == seen.key_data())
}

struct Checker {
    pinned: Option<String>,
    seen: Arc<Mutex<Option<SeenKey>>>,
    out: Output,
    /// Set by every packet of output; the link's keepalive clears it.
    heard: Arc<AtomicBool>,
    /// Cancelled when the console ends: EOF, close, exit, or the session
    /// task gone (the handler is dropped with it, however it ended).
    ended: CancellationToken,
}

impl Drop for Checker {
    fn drop(&mut self) {
        self.ended.cancel();
    }
}

impl client::Handler for Checker {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let PublicKeyOrCertificate::PublicKey { key, .. } = key else {
            // A BMC presenting a host certificate: we hold no CA to check it.
            return Ok(false);
        };
        if let Ok(mut s) = self.seen.lock() {
            *s = Some(SeenKey::of(key));
        }
        Ok(match &self.pinned {
            Some(p) => same_key(p, key),
            None => true,
        })
    }

    async fn data(
        &mut self,
        _channel: ChannelId,
        data: &[u8],
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        self.heard.store(true, Ordering::Relaxed);
        (self.out)(data);
        Ok(())
    }

    async fn extended_data(
        &mut self,
        _channel: ChannelId,
        _ext: u32,
        data: &[u8],
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        self.heard.store(true, Ordering::Relaxed);
        (self.out)(data);
        Ok(())
    }

    async fn channel_eof(
        &mut self,
        _channel: ChannelId,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        self.ended.cancel();
        Ok(())
    }

    async fn channel_close(
        &mut self,
        _channel: ChannelId,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        self.ended.cancel();
        Ok(())
    }

    async fn exit_status(
        &mut self,
        _channel: ChannelId,
        _status: u32,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        self.ended.cancel();
        Ok(())
    }

    async fn exit_signal(
        &mut self,
        _channel: ChannelId,
        _signal: russh::Sig,
        _core_dumped: bool,
        _message: &str,
        _lang: &str,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        self.ended.cancel();
        Ok(())
    }
}

/// An open console.
pub struct Link {
    handle: Handle<Checker>,
    write: russh::ChannelWriteHalf<Msg>,
    heard: Arc<AtomicBool>,
    ended: CancellationToken,
    keepalive: tokio::time::Interval,
    /// The host key the BMC presented.
    pub key: SeenKey,
}

/// Connects, checks the host key, logs in and starts the console, whose
/// output goes to `out` from then on.
pub async fn connect(
    t: &Target,
    creds: &Credentials,
    pinned: Option<&str>,
    timeout: Duration,
    pty: bool,
    out: Output,
    watch: Arc<Watch>,
) -> Result<Link, Failure> {
    let config = Arc::new(client::Config {
        preferred: russh::Preferred {
            cipher: std::borrow::Cow::Borrowed(CIPHERS),
            ..Default::default()
        },
        inactivity_timeout: None,
        keepalive_interval: None,
        nodelay: true,
        ..Default::default()
    });
    let seen = Arc::new(Mutex::new(None));
    let heard = Arc::new(AtomicBool::new(false));
    let ended = CancellationToken::new();
    let checker = Checker {
        pinned: pinned.map(str::to_string),
        seen: seen.clone(),
        out,
        heard: heard.clone(),
        ended: ended.clone(),
    };
    let seen_key = || seen.lock().ok().and_then(|s| s.clone());
    // Configured addresses are IP literals (no glibc resolver in the
    // static binary): a name that does not parse is refused here.
    let ip: std::net::IpAddr = t.host.parse().map_err(|_| {
        Failure::Transport(format!("BMC address {:?} is not an IP address", t.host))
    })?;
    let mut pacing = None;
    let connecting = async {
        let tcp = tokio::net::TcpStream::connect((ip, t.port))
            .await
            .map_err(russh::Error::from)?;
        let _ = tcp.set_nodelay(true);
        // russh reads a packet's length, then its rest, each a read of the
        // stream; buffered, a small console packet costs no system call of
        // its own, and nobody watching, a pace's packets cost one.
        let (stream, p) = Paced::new(tcp, watch, super::PACE);
        pacing = Some(p);
        client::connect_stream(config, stream, checker).await
    };
    let mut handle = match tokio::time::timeout(timeout, connecting).await {
        Err(_) => {
            return Err(Failure::Transport(format!(
                "no SSH handshake with {}:{} within {timeout:?}",
                t.host, t.port
            )));
        }
        Ok(Err(e)) => {
            if let (Some(p), Some(k)) = (pinned, seen_key())
                && !PublicKey::from_openssh(p.trim())
                    .is_ok_and(|pk| SeenKey::of(&pk).openssh == k.openssh)
            {
                return Err(Failure::HostKeyChanged(format!(
                    "BMC {} presented host key {} but {} is pinned; delete the pin if the BMC was replaced",
                    t.bmc,
                    k.fingerprint,
                    PublicKey::from_openssh(p.trim())
                        .map(|pk| SeenKey::of(&pk).fingerprint)
                        .unwrap_or_else(|_| "an unreadable key".into())
                )));
            }
            return Err(Failure::Transport(format!(
                "SSH to {}:{}: {e}",
                t.host, t.port
            )));
        }
        Ok(Ok(h)) => h,
    };
    let key = seen_key().ok_or_else(|| Failure::Transport("no host key seen".into()))?;
    let auth = tokio::time::timeout(
        timeout,
        handle.authenticate_password(creds.username.clone(), creds.password.clone()),
    )
    .await
    .map_err(|_| Failure::Transport("SSH authentication timed out".into()))?
    .map_err(|e| Failure::Transport(format!("SSH authentication: {e}")))?;
    if !auth.success() {
        return Err(Failure::Credentials(format!(
            "BMC {} refused user {:?}",
            t.bmc, creds.username
        )));
    }
    let start = async {
        let ch = handle.channel_open_session().await?;
        if pty {
            ch.request_pty(false, "vt100", 80, 24, 0, 0, &[]).await?;
        }
        if t.command.is_empty() {
            ch.request_shell(true).await?;
        } else {
            ch.exec(true, t.command.as_bytes()).await?;
        }
        Ok::<_, russh::Error>(ch)
    };
    let ch = tokio::time::timeout(timeout, start)
        .await
        .map_err(|_| Failure::Transport("SSH console start timed out".into()))?
        .map_err(|e| Failure::Transport(format!("SSH console start: {e}")))?;
    // Output reaches the handler; the channel's own queue of it is not read.
    let (_, write) = ch.split();
    // Started: from now on the console is read in batches while unwatched.
    if let Some(p) = pacing {
        p.start();
    }
    let mut keepalive =
        tokio::time::interval_at(tokio::time::Instant::now() + KEEPALIVE, KEEPALIVE);
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    Ok(Link {
        handle,
        write,
        heard,
        ended,
        keepalive,
        key,
    })
}

impl Link {
    /// Waits until the console ends (output goes to the connection's
    /// [`Output`] meanwhile), pinging the BMC when it has been silent; a
    /// ping left unanswered ends it too. Cancel-safe.
    pub async fn ended(&mut self) {
        loop {
            tokio::select! {
                _ = self.ended.cancelled() => return,
                _ = self.keepalive.tick() => {}
            }
            if self.heard.swap(false, Ordering::Relaxed) {
                continue;
            }
            let ping = tokio::time::timeout(KEEPALIVE_WAIT, self.handle.send_ping());
            tokio::select! {
                _ = self.ended.cancelled() => return,
                r = ping => if !matches!(r, Ok(Ok(()))) {
                    return;
                },
            }
        }
    }

    /// Keystrokes to the console.
    pub async fn send(&self, data: Bytes) -> Result<(), Failure> {
        self.write
            .data_bytes(data)
            .await
            .map_err(|e| Failure::Transport(format!("console write: {e}")))
    }

    /// Ends the session politely (a BMC counts open sessions).
    pub async fn close(self) {
        let _ = self.write.eof().await;
        let _ = self
            .handle
            .disconnect(russh::Disconnect::ByApplication, "closing", "en")
            .await;
    }
}
