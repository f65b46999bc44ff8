//! Simulated BMC serial consoles over SSH, the counterpart of `sim`'s
//! Redfish: what a BMC's `SerialConsole.SSH` service offers, so the
//! appliance's console service reaches a lab VM or a benchmark's generator
//! the way it reaches hardware (password login, host key, PTY, shell).
//!
//! Each console is a [`ConsoleFeed`]: output broadcast to every session of
//! that BMC and keystrokes queued for whoever owns the serial port. What is
//! behind the feed (a qemu chardev, a generator) is the caller's business.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use russh::keys::{PrivateKey, ssh_key};
use russh::server::{self, Auth, Msg, Session};
use russh::{Channel, ChannelId, ChannelMsg};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// One BMC's serial port as its SSH sessions see it.
#[derive(Clone)]
pub struct ConsoleFeed {
    /// What the host prints.
    pub output: broadcast::Sender<Bytes>,
    /// What sessions type.
    pub input: mpsc::Sender<Bytes>,
}

impl ConsoleFeed {
    /// A feed and the receiving end of its keystrokes.
    pub fn new() -> (ConsoleFeed, mpsc::Receiver<Bytes>) {
        let (output, _) = broadcast::channel(1024);
        let (input, rx) = mpsc::channel(256);
        (ConsoleFeed { output, input }, rx)
    }
}

/// A fresh Ed25519 host key.
pub fn host_key() -> std::io::Result<PrivateKey> {
    let mut seed = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed)
        .map_err(|_| std::io::Error::other("no randomness for a host key"))?;
    let pair = ssh_key::private::Ed25519Keypair::from_seed(&seed);
    Ok(PrivateKey::from(pair))
}

/// What every console accepts.
#[derive(Clone)]
pub struct SshSimConfig {
    /// One console per address (port 0 picks a free one), fed by `feeds[i]`.
    pub addrs: Vec<SocketAddr>,
    pub username: String,
    pub password: String,
    pub host_key: PrivateKey,
}

/// Running SSH consoles.
pub struct SshConsoles {
    addrs: Vec<SocketAddr>,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl SshConsoles {
    /// Binds every address and serves `feeds[i]` on `addrs[i]`.
    pub async fn start(cfg: SshSimConfig, feeds: Vec<ConsoleFeed>) -> std::io::Result<SshConsoles> {
        if feeds.len() != cfg.addrs.len() {
            return Err(std::io::Error::other("one feed per console address"));
        }
        let config = Arc::new(server::Config {
            keys: vec![cfg.host_key.clone()],
            auth_rejection_time: Duration::from_millis(200),
            auth_rejection_time_initial: Some(Duration::ZERO),
            inactivity_timeout: None,
            nodelay: true,
            ..Default::default()
        });
        let creds = Arc::new((cfg.username.clone(), cfg.password.clone()));
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let mut addrs = Vec::with_capacity(cfg.addrs.len());
        for (a, feed) in cfg.addrs.iter().zip(feeds) {
            let l = TcpListener::bind(a)
                .await
                .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {a}: {e}")))?;
            addrs.push(l.local_addr()?);
            let (config, creds, stop, t) =
                (config.clone(), creds.clone(), stop.clone(), tasks.clone());
            tasks.spawn(async move {
                loop {
                    let conn = tokio::select! {
                        _ = stop.cancelled() => return,
                        c = l.accept() => c,
                    };
                    let Ok((stream, _)) = conn else {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    let h = Conn {
                        creds: creds.clone(),
                        feed: feed.clone(),
                        channel: None,
                        stop: stop.clone(),
                        tasks: t.clone(),
                    };
                    let (config, stop) = (config.clone(), stop.clone());
                    t.spawn(async move {
                        let Ok(running) = server::run_stream(config, stream, h).await else {
                            return;
                        };
                        let handle = running.handle();
                        tokio::select! {
                            _ = running => {}
                            _ = stop.cancelled() => {
                                let _ = handle
                                    .disconnect(russh::Disconnect::ByApplication, "shutting down".into(), "en".into())
                                    .await;
                            }
                        }
                    });
                }
            });
        }
        tasks.close();
        Ok(SshConsoles { addrs, stop, tasks })
    }

    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Closes every session and listener.
    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.tasks.wait()).await;
    }
}

/// One SSH connection.
struct Conn {
    creds: Arc<(String, String)>,
    feed: ConsoleFeed,
    /// The session channel, until a shell or command starts it.
    channel: Option<Channel<Msg>>,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl Conn {
    /// Starts pumping the console: output to the channel, input to the feed.
    fn start(&mut self, id: ChannelId, session: &mut Session) {
        let Some(ch) = self.channel.take().filter(|c| c.id() == id) else {
            let _ = session.channel_failure(id);
            return;
        };
        let _ = session.channel_success(id);
        let (mut read, write) = ch.split();
        let mut out = self.feed.output.subscribe();
        let input = self.feed.input.clone();
        let stop = self.stop.clone();
        self.tasks.spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    o = out.recv() => match o {
                        Ok(data) => {
                            if write.data_bytes(data).await.is_err() {
                                break;
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => break,
                    },
                    m = read.wait() => match m {
                        Some(ChannelMsg::Data { data }) => {
                            let _ = input.try_send(data);
                        }
                        Some(ChannelMsg::Eof | ChannelMsg::Close) | None => break,
                        Some(_) => {}
                    },
                }
            }
            let _ = write.eof().await;
            let _ = write.close().await;
        });
    }
}

impl server::Handler for Conn {
    type Error = russh::Error;

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        Ok(if user == self.creds.0 && password == self.creds.1 {
            Auth::Accept
        } else {
            Auth::reject()
        })
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        // A BMC console is one stream per connection.
        if self.channel.is_none() {
            self.channel = Some(channel);
            reply.accept().await;
        }
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let _ = session.channel_success(channel);
        Ok(())
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.start(channel, session);
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        _data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.start(channel, session);
        Ok(())
    }
}
