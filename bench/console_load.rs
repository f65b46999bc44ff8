//! Load program of the console benchmark (`bench/console.sh`).
//!
//! Serves `--consoles` simulated BMC serial consoles over SSH in this one
//! process (`redfish::simssh`, one russh server per address, consecutive
//! loopback addresses from `--first`, all on `--port`), each printing
//! `--rate` bytes per second as 10 lines a second, every line stamped with
//! the time it was handed to SSH. It enrolls a node and its BMC per console
//! through the appliance's API (with default BMC credentials), waits until
//! the appliance's console service has every console connected, then for
//! `--duration` seconds keeps one WebSocket viewer on the first console
//! (`?mode=tail&follow=true`) and measures, per line stamped after the
//! viewer attached, the time from stamp to arrival at the viewer (earlier
//! lines, the tail and what the console's socket held at the attach, are
//! counted apart). It samples the appliance's CPU time and resident
//! memory from /proc and its console log bytes from the state directory, and
//! prints every figure.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use openchami::redfish::simssh::{self, ConsoleFeed, SshConsoles, SshSimConfig};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

struct Args {
    api: String,
    ca: String,
    token: String,
    pid: u32,
    state_dir: PathBuf,
    consoles: usize,
    first: Ipv4Addr,
    port: u16,
    rate: usize,
    duration: Duration,
}

fn args() -> Result<Args, String> {
    let mut a = std::env::args().skip(1);
    let mut get = |name: &str| -> Result<String, String> {
        match (a.next(), a.next()) {
            (Some(k), Some(v)) if k == name => Ok(v),
            (k, _) => Err(format!("expected {name} VALUE, got {k:?}")),
        }
    };
    let api = get("--api")?;
    let ca = std::fs::read_to_string(get("--ca")?).map_err(|e| format!("--ca: {e}"))?;
    let token = get("--token")?;
    let pid = get("--pid")?.parse().map_err(|e| format!("--pid: {e}"))?;
    let state_dir = get("--state-dir")?.into();
    let consoles = get("--consoles")?
        .parse()
        .map_err(|e| format!("--consoles: {e}"))?;
    let first = get("--first")?
        .parse()
        .map_err(|e| format!("--first: {e}"))?;
    let port = get("--port")?.parse().map_err(|e| format!("--port: {e}"))?;
    let rate = get("--rate")?.parse().map_err(|e| format!("--rate: {e}"))?;
    let duration = Duration::from_secs(
        get("--duration")?
            .parse()
            .map_err(|e| format!("--duration: {e}"))?,
    );
    Ok(Args {
        api,
        ca,
        token,
        pid,
        state_dir,
        consoles,
        first,
        port,
        rate,
        duration,
    })
}

const PASSWORD: &str = "bench-console";
/// Lines per console per second.
const LINES_PER_SEC: usize = 10;

fn node(i: usize) -> String {
    format!("x{}c0s{}b0n0", 1000 + i / 64, i % 64)
}

fn bmc(i: usize) -> String {
    format!("x{}c0s{}b0", 1000 + i / 64, i % 64)
}

fn now_us() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0)
}

/// utime + stime of a process, in clock ticks (100 Hz on Linux).
fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // Fields after the command: state is index 0, utime 11, stime 12.
    n(11) + n(12)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn log_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir.join("consoles"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn http(ca: &str) -> reqwest::Client {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca.as_bytes()).flatten() {
        let _ = roots.add(cert);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots).with_no_client_auth());
    let mut b = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60));
    if let Ok(tls) = tls {
        b = b.tls_backend_preconfigured(tls);
    }
    b.build().unwrap_or_default()
}

async fn post(c: &reqwest::Client, a: &Args, path: &str, body: &Value) -> Result<(), String> {
    send(c, a, reqwest::Method::POST, path, body).await
}

async fn send(
    c: &reqwest::Client,
    a: &Args,
    method: reqwest::Method,
    path: &str,
    body: &Value,
) -> Result<(), String> {
    let r = c
        .request(method, format!("{}{path}", a.api))
        .bearer_auth(&a.token)
        .json(body)
        .send()
        .await
        .map_err(|e| format!("{path}: {e}"))?;
    if !r.status().is_success() {
        let s = r.status();
        return Err(format!(
            "{path}: {s} {}",
            r.text().await.unwrap_or_default()
        ));
    }
    Ok(())
}

async fn enroll(c: &reqwest::Client, a: &Args) -> Result<(), String> {
    send(
        c,
        a,
        reqwest::Method::PUT,
        "/discovery/v1/credentials/default",
        &json!({"username": "admin", "password": PASSWORD}),
    )
    .await?;
    let comps: Vec<Value> = (0..a.consoles)
        .map(|i| json!({"ID": node(i), "Type": "Node", "State": "On", "Enabled": true}))
        .collect();
    for chunk in comps.chunks(500) {
        post(
            c,
            a,
            "/hsm/v2/State/Components",
            &json!({"Components": chunk}),
        )
        .await?;
    }
    let base = u32::from(a.first);
    let eps: Vec<(String, Ipv4Addr)> = (0..a.consoles)
        .map(|i| (bmc(i), Ipv4Addr::from(base + i as u32)))
        .collect();
    let results = futures_util::stream::iter(eps.into_iter().map(|(id, ip)| async move {
        post(
            c,
            a,
            "/hsm/v2/Inventory/RedfishEndpoints",
            &json!({"ID": id, "IPAddress": ip.to_string(), "Enabled": true, "RediscoverOnUpdate": false}),
        )
        .await
    }))
    .buffer_unordered(16)
    .collect::<Vec<_>>()
    .await;
    results.into_iter().collect::<Result<Vec<()>, String>>()?;
    Ok(())
}

async fn connected(c: &reqwest::Client, a: &Args) -> usize {
    let Ok(r) = c
        .get(format!("{}/remote-console/consoles", a.api))
        .bearer_auth(&a.token)
        .send()
        .await
    else {
        return 0;
    };
    let v: Value = r.json().await.unwrap_or(Value::Null);
    v["consoles"]
        .as_array()
        .map(|a| a.iter().filter(|c| c["state"] == "connected").count())
        .unwrap_or(0)
}

/// Prints `rate` bytes a second on every console, as 10 stamped lines;
/// counts the bytes handed to connected consoles in `sent`.
fn generate(feeds: Vec<ConsoleFeed>, rate: usize, sent: Arc<AtomicU64>) {
    let line_len = (rate / LINES_PER_SEC).max(40);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(1000 / LINES_PER_SEC as u64));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seq = 0u64;
        loop {
            tick.tick().await;
            seq += 1;
            for (i, f) in feeds.iter().enumerate() {
                if f.output.receiver_count() == 0 {
                    continue;
                }
                let mut line = format!("T {} c{i} s{seq} ", now_us());
                while line.len() < line_len - 2 {
                    line.push('.');
                }
                line.push_str("\r\n");
                sent.fetch_add(line.len() as u64, Ordering::Relaxed);
                let _ = f.output.send(Bytes::from(line));
            }
        }
    });
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn run(a: Args) -> Result<(), String> {
    let c = http(&a.ca);
    let base = u32::from(a.first);
    let addrs: Vec<SocketAddr> = (0..a.consoles)
        .map(|i| SocketAddr::from((Ipv4Addr::from(base + i as u32), a.port)))
        .collect();
    let mut feeds = Vec::with_capacity(a.consoles);
    let mut keys = Vec::with_capacity(a.consoles);
    for _ in 0..a.consoles {
        let (f, k) = ConsoleFeed::new();
        feeds.push(f);
        keys.push(k);
    }
    let cfg = SshSimConfig {
        addrs,
        username: "admin".into(),
        password: PASSWORD.into(),
        host_key: simssh::host_key().map_err(|e| e.to_string())?,
    };
    let sims = SshConsoles::start(cfg, feeds.clone())
        .await
        .map_err(|e| e.to_string())?;
    // Keystrokes are not part of the load: drain them.
    for mut k in keys {
        tokio::spawn(async move { while k.recv().await.is_some() {} });
    }
    let sent = Arc::new(AtomicU64::new(0));
    generate(feeds, a.rate, sent.clone());

    let t = Instant::now();
    enroll(&c, &a).await?;
    println!(
        "enrolled {} nodes and BMCs in {:.1} s",
        a.consoles,
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    loop {
        let n = connected(&c, &a).await;
        if n == a.consoles {
            break;
        }
        if t.elapsed() > Duration::from_secs(300) {
            return Err(format!(
                "only {n} of {} consoles connected after 300 s",
                a.consoles
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "all {} consoles connected {:.1} s after enrollment",
        a.consoles,
        t.elapsed().as_secs_f64()
    );

    // One viewer on the first console, following its log.
    let path = format!(
        "{}/remote-console/consoles/{}?mode=tail&follow=true&lines=1",
        a.api,
        node(0)
    );
    let resp = c
        .get(&path)
        .version(reqwest::Version::HTTP_11)
        .bearer_auth(&a.token)
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .map_err(|e| format!("viewer: {e}"))?;
    if resp.status() != 101 {
        return Err(format!("viewer: {}", resp.status()));
    }
    let up = resp.upgrade().await.map_err(|e| format!("viewer: {e}"))?;
    let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
        up,
        tokio_tungstenite::tungstenite::protocol::Role::Client,
        None,
    )
    .await;

    // Lines stamped before this are history (the tail asked for, and what
    // the console's socket held when the viewer attached), not live output.
    let attached = now_us();
    let mut history: Vec<u64> = Vec::new();
    let pid = a.pid;
    let cpu0 = cpu_ticks(pid);
    let log0 = log_bytes(&a.state_dir);
    let sent0 = sent.load(Ordering::Relaxed);
    let started = Instant::now();
    let mut rss_peak = rss_kib(pid);
    let mut lat: Vec<u64> = Vec::new();
    let mut partial = String::new();
    let mut sample = tokio::time::interval(Duration::from_secs(1));
    let end = tokio::time::sleep(a.duration);
    tokio::pin!(end);
    loop {
        tokio::select! {
            _ = &mut end => break,
            _ = sample.tick() => rss_peak = rss_peak.max(rss_kib(pid)),
            m = ws.next() => {
                let arrived = now_us();
                let text = match m {
                    Some(Ok(Message::Text(t))) => t.to_string(),
                    Some(Ok(Message::Binary(b))) => String::from_utf8_lossy(&b).into_owned(),
                    Some(Ok(Message::Close(f))) => return Err(format!("viewer closed: {f:?}")),
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Err(format!("viewer: {e}")),
                    None => return Err("viewer ended".into()),
                };
                partial.push_str(&text);
                while let Some(i) = partial.find('\n') {
                    let line: String = partial.drain(..=i).collect();
                    if let Some(ts) = line
                        .strip_prefix("T ")
                        .and_then(|r| r.split_whitespace().next())
                        .and_then(|v| v.parse::<u128>().ok())
                    {
                        let took = arrived.saturating_sub(ts) as u64;
                        if ts < attached {
                            history.push(took);
                        } else {
                            lat.push(took);
                        }
                    }
                }
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu = cpu_ticks(pid).saturating_sub(cpu0) as f64 / 100.0;
    let logged = log_bytes(&a.state_dir).saturating_sub(log0);
    let generated = sent.load(Ordering::Relaxed).saturating_sub(sent0);
    let rss_end = rss_kib(pid);
    let still = connected(&c, &a).await;
    // Which live line was slowest (1 = the first after the attach).
    let worst = lat
        .iter()
        .enumerate()
        .max_by_key(|(_, l)| **l)
        .map_or(0, |(i, _)| i + 1);
    lat.sort_unstable();
    let ms = |us: u64| us as f64 / 1000.0;
    println!(
        "window: {secs:.1} s, {} consoles at {} B/s each, {still} connected at the end",
        a.consoles, a.rate
    );
    println!(
        "appliance CPU: {:.1} % of one core (target < 10 %)",
        cpu / secs * 100.0
    );
    println!(
        "appliance RSS: {:.1} MiB at the end, {:.1} MiB peak",
        rss_end as f64 / 1024.0,
        rss_peak.max(rss_end) as f64 / 1024.0
    );
    println!(
        "console log bytes written: {logged} ({:.1} KiB/s); the simulated BMCs printed {generated} B",
        logged as f64 / secs / 1024.0,
    );
    println!(
        "viewer latency over {} lines: p50 {:.1} ms, p99 {:.1} ms (target < 100 ms), max {:.1} ms (line {worst})",
        lat.len(),
        ms(percentile(&lat, 0.50)),
        ms(percentile(&lat, 0.99)),
        ms(lat.last().copied().unwrap_or(0)),
    );
    println!(
        "viewer history: {} lines stamped before it attached, the oldest {:.1} ms old on arrival (not counted above)",
        history.len(),
        ms(history.iter().copied().max().unwrap_or(0)),
    );
    let _ = ws.close(None).await;
    sims.shutdown().await;
    Ok(())
}

fn main() {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("console_load: {e}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| {
            eprintln!("console_load: {e}");
            std::process::exit(1)
        });
    if let Err(e) = rt.block_on(run(a)) {
        eprintln!("console_load: {e}");
        std::process::exit(1);
    }
}
