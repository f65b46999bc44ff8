//! The SSH backend: one session to a BMC's console (Redfish
//! `SerialConsole.SSH`, OpenBMC's host-console port, or a vendor console
//! command run on the BMC's shell), with a PTY so the BMC sends the console
//! as a terminal would see it. Host keys are checked against the pin the
//! caller hands in; the key seen is handed back so a first connection can
//! be pinned.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use russh::ChannelMsg;
use russh::client::{self, Handle, Msg};
use russh::keys::{HashAlg, PublicKey, PublicKeyOrCertificate};

use super::session::Failure;
use super::targets::Target;
use crate::redfish::Credentials;

/// Bytes read from a BMC's socket at a time.
const READ_BUFFER: usize = 8 * 1024;

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
}

/// An open console.
pub struct Link {
    handle: Handle<Checker>,
    read: russh::ChannelReadHalf,
    write: russh::ChannelWriteHalf<Msg>,
    /// The host key the BMC presented.
    pub key: SeenKey,
}

/// Connects, checks the host key, logs in and starts the console.
pub async fn connect(
    t: &Target,
    creds: &Credentials,
    pinned: Option<&str>,
    timeout: Duration,
    pty: bool,
) -> Result<Link, Failure> {
    let config = Arc::new(client::Config {
        preferred: russh::Preferred {
            cipher: std::borrow::Cow::Borrowed(CIPHERS),
            ..Default::default()
        },
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(30)),
        keepalive_max: 3,
        nodelay: true,
        ..Default::default()
    });
    let seen = Arc::new(Mutex::new(None));
    let checker = Checker {
        pinned: pinned.map(str::to_string),
        seen: seen.clone(),
    };
    let seen_key = || seen.lock().ok().and_then(|s| s.clone());
    // Configured addresses are IP literals (no glibc resolver in the
    // static binary): a name that does not parse is refused here.
    let ip: std::net::IpAddr = t.host.parse().map_err(|_| {
        Failure::Transport(format!("BMC address {:?} is not an IP address", t.host))
    })?;
    let connecting = async {
        let tcp = tokio::net::TcpStream::connect((ip, t.port))
            .await
            .map_err(russh::Error::from)?;
        let _ = tcp.set_nodelay(true);
        // russh reads a packet's length, then its rest, each a read of the
        // stream; buffered, a small console packet costs one system call.
        let stream = tokio::io::BufReader::with_capacity(READ_BUFFER, tcp);
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
    let (read, write) = ch.split();
    Ok(Link {
        handle,
        read,
        write,
        key,
    })
}

impl Link {
    /// The next output from the console; `None` when it closed.
    pub async fn recv(&mut self) -> Option<Bytes> {
        loop {
            match self.read.wait().await? {
                ChannelMsg::Data { data } | ChannelMsg::ExtendedData { data, .. } => {
                    return Some(data);
                }
                ChannelMsg::Eof | ChannelMsg::Close => return None,
                ChannelMsg::ExitStatus { .. } | ChannelMsg::ExitSignal { .. } => return None,
                _ => {}
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
