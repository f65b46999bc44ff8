//! `openchami console`: the console list, a node's log (`--tail`, with
//! `--follow` to keep reading), or the interactive console in a raw
//! terminal (Ctrl-] leaves). A WebSocket client of `/remote-console`.

use std::io::Write;

use anyhow::{Context, bail};
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use super::client::Client;
use super::output::{Format, render};

#[derive(Args, Debug)]
pub struct ConsoleArgs {
    /// A node's xname, `list` for every console and its state, or
    /// `hostkeys` for the pinned BMC host keys
    pub target: String,
    /// Forget the pinned host key of this node's BMC (or of this BMC), after
    /// replacing or re-keying it; the next connection pins the new key
    #[arg(long, conflicts_with_all = ["tail", "follow", "lines"])]
    pub forget_host_key: bool,
    /// Print the node's console log instead of attaching
    #[arg(long)]
    pub tail: bool,
    /// With --tail: keep printing as the console writes
    #[arg(long, requires = "tail")]
    pub follow: bool,
    /// With --tail: only the last N lines (default: the whole current log)
    #[arg(long, requires = "tail")]
    pub lines: Option<i64>,
}

const COLUMNS: &[(&str, &str)] = &[
    ("XNAME", "/id"),
    ("BMC", "/bmc"),
    ("TYPE", "/connectionType"),
    ("HOST", "/connectionHost"),
    ("PORT", "/connectionPort"),
    ("STATE", "/state"),
    ("VIEWERS", "/viewers"),
    ("ERROR", "/error"),
];

const KEY_COLUMNS: &[(&str, &str)] = &[
    ("BMC", "/bmc"),
    ("FINGERPRINT", "/fingerprint"),
    ("ADDRESS", "/address"),
    ("PINNED", "/pinned_at"),
];

/// Leaves an interactive console (Ctrl-]).
const ESCAPE: u8 = 0x1d;

/// Runs the command; what is returned is printed after it (output that
/// streams is written as it comes).
pub async fn run(client: &Client, format: Format, a: ConsoleArgs) -> anyhow::Result<String> {
    if a.target == "list" {
        let found = client.get("/remote-console/consoles").await?;
        let rows = found["consoles"].as_array().cloned().unwrap_or_default();
        return Ok(render(format, COLUMNS, &rows, &found));
    }
    if a.target == "hostkeys" {
        let found = client.get("/remote-console/hostkeys").await?;
        let rows = found["hostkeys"].as_array().cloned().unwrap_or_default();
        return Ok(render(format, KEY_COLUMNS, &rows, &found));
    }
    let node = crate::inventory::xname::normalize(&a.target)
        .map_err(|_| anyhow::anyhow!("{:?} is not an xname (or `list`, `hostkeys`)", a.target))?;
    if a.forget_host_key {
        let bmc = match crate::inventory::xname::type_of(&node) {
            Some(crate::inventory::enums::HmsType::Node) => {
                crate::inventory::xname::parent(&node).unwrap_or(node)
            }
            _ => node,
        };
        let old = client
            .send(
                reqwest::Method::DELETE,
                &format!("/remote-console/hostkeys/{bmc}"),
                None,
            )
            .await?;
        return Ok(format!(
            "forgot host key {} of {bmc}\n",
            old["fingerprint"].as_str().unwrap_or("?")
        ));
    }
    if a.tail {
        let lines = a.lines.unwrap_or(0);
        let path = format!(
            "/remote-console/consoles/{node}?mode=tail&follow={}&lines={lines}",
            a.follow
        );
        let mut ws = client.websocket(&path).await?;
        let mut out = String::new();
        while let Some(m) = ws.next().await {
            match m.context("console connection")? {
                Message::Text(t) if a.follow => {
                    let mut o = std::io::stdout().lock();
                    o.write_all(t.as_bytes())?;
                    o.flush()?;
                }
                Message::Text(t) => out.push_str(&t),
                Message::Close(Some(f)) if f.code != 1000.into() => {
                    bail!("console {node}: {} ({})", f.reason, u16::from(f.code));
                }
                Message::Close(Some(f)) if f.reason == "console log not available" => {
                    bail!("console {node}: {}", f.reason);
                }
                Message::Close(_) => break,
                _ => {}
            }
        }
        return Ok(out);
    }
    interactive(client, &node).await?;
    Ok(String::new())
}

/// Puts the terminal in raw mode while alive.
struct Raw(Option<rustix::termios::Termios>);

impl Raw {
    fn enter() -> Raw {
        let stdin = std::io::stdin();
        let Ok(saved) = rustix::termios::tcgetattr(&stdin) else {
            return Raw(None);
        };
        let mut raw = saved.clone();
        raw.make_raw();
        if rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &raw).is_err()
        {
            return Raw(None);
        }
        Raw(Some(saved))
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            let _ = rustix::termios::tcsetattr(
                std::io::stdin(),
                rustix::termios::OptionalActions::Now,
                t,
            );
        }
    }
}

async fn interactive(client: &Client, node: &str) -> anyhow::Result<()> {
    use tokio::io::AsyncReadExt;
    let path = format!("/remote-console/consoles/{node}?mode=interactive");
    let ws = client.websocket(&path).await?;
    eprintln!("[connected to {node}; Ctrl-] leaves]\r");
    let (mut tx, mut rx) = ws.split();
    let _raw = Raw::enter();
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 1024];
    let why = loop {
        tokio::select! {
            n = stdin.read(&mut buf) => {
                let n = n.context("reading the terminal")?;
                if n == 0 {
                    break String::from("end of input");
                }
                let keys = &buf[..n];
                let (keys, leave) = match keys.iter().position(|b| *b == ESCAPE) {
                    Some(i) => (&keys[..i], true),
                    None => (keys, false),
                };
                if !keys.is_empty() {
                    tx.send(Message::Binary(keys.to_vec().into())).await.context("sending keystrokes")?;
                }
                if leave {
                    break String::from("left");
                }
            }
            m = rx.next() => match m {
                Some(Ok(Message::Binary(b))) => {
                    let mut o = std::io::stdout().lock();
                    o.write_all(&b)?;
                    o.flush()?;
                }
                Some(Ok(Message::Text(t))) => {
                    let mut o = std::io::stdout().lock();
                    o.write_all(t.as_bytes())?;
                    o.flush()?;
                }
                Some(Ok(Message::Close(f))) => {
                    break f.map(|f| f.reason.to_string()).unwrap_or_else(|| "closed".into());
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => break format!("connection lost: {e}"),
                None => break String::from("closed"),
            }
        }
    };
    let _ = tx.send(Message::Close(None)).await;
    drop(_raw);
    eprintln!("\r\n[{node}: {why}]");
    Ok(())
}
