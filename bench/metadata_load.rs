//! Load generator for the cloud-init meta-data benchmark (`bench/metadata.sh`).
//!
//! Node `i` (0-based) has address 127.1.(i / 250).(i % 250 + 1): the whole of
//! 127.0.0.0/8 is loopback on Linux, so a client can bind any of them without
//! set-up, and the appliance identifies each request by its source address
//! exactly as it would a node on the boot network.
//!
//! - `metadata_load cluster --nodes N` prints the cluster file (JSON) for
//!   `openchami import`: N nodes, each in 4 groups (`compute`, `rackNN`,
//!   `partK`, `gpu`/`cpu`);
//! - `metadata_load groups --nodes N` prints the group names, one a line;
//! - `metadata_load warm …` fetches every node's meta-data once (the first
//!   fetch assigns the node's instance ID, a store write);
//! - `metadata_load run …` measures: W workers, each taking nodes in turn,
//!   opening a keep-alive connection from the node's address and sending
//!   `--per-conn` requests on it, for `--duration` seconds. Every answer must
//!   be a 200 naming the node's own host name; the figure is printed.
//!
//! A minimal HTTP/1.1 client keeps the generator's own CPU use low: on a
//! 2-core machine it shares the cores with the appliance.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const RACK_SIZE: usize = 500;
const PARTITIONS: usize = 4;
/// `short-name` and `nid-length` the benchmark sets in the cluster defaults.
const SHORT_NAME: &str = "nid";
const NID_LENGTH: usize = 5;

fn address(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 1, (i / 250) as u8, (i % 250 + 1) as u8)
}

fn xname(i: usize) -> String {
    // 8 nodes per slot, 64 slots per chassis, 8 chassis per cabinet.
    let (node, slot, chassis, cab) = (i % 8, (i / 8) % 64, (i / 512) % 8, i / 4096);
    format!("x{}c{chassis}s{slot}b0n{node}", 1000 + cab)
}

fn groups_of(i: usize) -> [String; 4] {
    [
        "compute".to_string(),
        format!("rack{:02}", i / RACK_SIZE),
        format!("part{}", i % PARTITIONS),
        if i.is_multiple_of(2) { "gpu" } else { "cpu" }.to_string(),
    ]
}

fn expected_hostname(i: usize) -> String {
    format!(
        "local-hostname: {SHORT_NAME}{:0width$}\n",
        i + 1,
        width = NID_LENGTH
    )
}

struct Args {
    cmd: String,
    nodes: usize,
    target: SocketAddr,
    workers: usize,
    per_conn: usize,
    duration: Duration,
}

fn args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let cmd = it
        .next()
        .ok_or("usage: metadata_load cluster|groups|warm|run [options]")?;
    let mut a = Args {
        cmd,
        nodes: 10_000,
        target: "127.0.0.1:27778".parse().map_err(|e| format!("{e}"))?,
        workers: 64,
        per_conn: 100,
        duration: Duration::from_secs(20),
    };
    while let Some(flag) = it.next() {
        let v = it.next().ok_or(format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {v}: {e}");
        match flag.as_str() {
            "--nodes" => a.nodes = v.parse().map_err(|e| bad(&e))?,
            "--target" => a.target = v.parse().map_err(|e| bad(&e))?,
            "--workers" => a.workers = v.parse().map_err(|e| bad(&e))?,
            "--per-conn" => a.per_conn = v.parse().map_err(|e| bad(&e))?,
            "--duration" => a.duration = Duration::from_secs(v.parse().map_err(|e| bad(&e))?),
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    if a.nodes == 0 || a.nodes > 250 * 256 {
        return Err("--nodes must be between 1 and 64000".into());
    }
    Ok(a)
}

fn cluster(nodes: usize) -> String {
    let list: Vec<serde_json::Value> = (0..nodes)
        .map(|i| {
            let mac = format!("02:00:00:{:02x}:{:02x}:{:02x}", i >> 16, (i >> 8) & 255, i & 255);
            serde_json::json!({
                "xname": xname(i),
                "nid": i + 1,
                "groups": groups_of(i),
                "interfaces": [{"mac_addr": mac, "ip_addrs": [{"name": "internal", "ip_addr": address(i).to_string()}]}],
            })
        })
        .collect();
    serde_json::json!({ "nodes": list }).to_string()
}

fn group_names(nodes: usize) -> Vec<String> {
    let mut g: Vec<String> = (0..nodes).flat_map(groups_of).collect();
    g.sort();
    g.dedup();
    g
}

/// One keep-alive connection from a node's address.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

const REQUEST: &[u8] =
    b"GET /cloud-init/meta-data HTTP/1.1\r\nHost: bench\r\nUser-Agent: Cloud-Init/23.4\r\n\r\n";

impl Conn {
    async fn open(from: Ipv4Addr, target: SocketAddr) -> std::io::Result<Conn> {
        let s = TcpSocket::new_v4()?;
        s.bind(SocketAddr::from((from, 0)))?;
        let stream = s.connect(target).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(8192),
        })
    }

    /// Sends one request; returns the status and whether the body holds `want`.
    async fn get(&mut self, want: &[u8]) -> std::io::Result<(u16, bool)> {
        self.stream.write_all(REQUEST).await?;
        self.buf.clear();
        let mut chunk = [0u8; 8192];
        let head_end = loop {
            if let Some(p) = find(&self.buf, b"\r\n\r\n") {
                break p + 4;
            }
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        };
        let head = std::str::from_utf8(&self.buf[..head_end]).unwrap_or("");
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .ok_or_else(|| std::io::Error::other("no content-length"))?;
        while self.buf.len() < head_end + len {
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
        let body = &self.buf[head_end..head_end + len];
        Ok((status, find(body, want).is_some()))
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[derive(Default)]
struct Totals {
    ok: AtomicU64,
    errors: AtomicU64,
    wrong: AtomicU64,
    connections: AtomicU64,
}

async fn worker(
    a: Arc<Args>,
    first: usize,
    totals: Arc<Totals>,
    stop: Arc<AtomicBool>,
    once: bool,
    lat: Arc<std::sync::Mutex<Vec<u32>>>,
) {
    let mut i = first;
    let mut samples = Vec::new();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        if once && i >= a.nodes {
            break;
        }
        let node = i % a.nodes;
        i += a.workers;
        let want = expected_hostname(node);
        let Ok(mut c) = Conn::open(address(node), a.target).await else {
            totals.errors.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        totals.connections.fetch_add(1, Ordering::Relaxed);
        let reqs = if once { 1 } else { a.per_conn };
        for _ in 0..reqs {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let t = Instant::now();
            match c.get(want.as_bytes()).await {
                Ok((200, true)) => {
                    totals.ok.fetch_add(1, Ordering::Relaxed);
                }
                Ok((200, false)) => {
                    totals.wrong.fetch_add(1, Ordering::Relaxed);
                }
                _ => {
                    totals.errors.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
            n += 1;
            if n.is_multiple_of(16) {
                samples.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
            }
        }
    }
    if let Ok(mut l) = lat.lock() {
        l.extend(samples);
    }
}

async fn load(a: Arc<Args>, once: bool) -> bool {
    let totals = Arc::new(Totals::default());
    let stop = Arc::new(AtomicBool::new(false));
    let lat = Arc::new(std::sync::Mutex::new(Vec::new()));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..a.workers {
        tasks.push(tokio::spawn(worker(
            a.clone(),
            w,
            totals.clone(),
            stop.clone(),
            once,
            lat.clone(),
        )));
    }
    if !once {
        tokio::time::sleep(a.duration).await;
        stop.store(true, Ordering::Relaxed);
    }
    for t in tasks {
        let _ = t.await;
    }
    let secs = started.elapsed().as_secs_f64();
    let ok = totals.ok.load(Ordering::Relaxed);
    let errors = totals.errors.load(Ordering::Relaxed);
    let wrong = totals.wrong.load(Ordering::Relaxed);
    let conns = totals.connections.load(Ordering::Relaxed);
    if once {
        println!(
            "warm-up: {ok} nodes fetched their meta-data once in {secs:.1} s ({errors} errors, {wrong} wrong answers)"
        );
        return errors == 0 && wrong == 0 && ok == a.nodes as u64;
    }
    let mut l = lat.lock().map(|l| l.clone()).unwrap_or_default();
    l.sort_unstable();
    let pct = |p: f64| {
        l.get(((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    println!(
        "meta-data: {} nodes, 4 groups each; {} workers, {} requests per connection, {} connections from {} source addresses",
        a.nodes,
        a.workers,
        a.per_conn,
        conns,
        (conns as usize).min(a.nodes)
    );
    println!("requests: {ok} ok, {errors} errors, {wrong} wrong answers in {secs:.1} s");
    println!("latency: p50 {:.2} ms, p99 {:.2} ms", pct(0.50), pct(0.99));
    println!(
        "throughput: {:.0} req/s (target >= 20000 req/s)",
        ok as f64 / secs
    );
    errors == 0 && wrong == 0
}

fn main() -> std::process::ExitCode {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("metadata_load: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match a.cmd.as_str() {
        "cluster" => {
            println!("{}", cluster(a.nodes));
            std::process::ExitCode::SUCCESS
        }
        "groups" => {
            for g in group_names(a.nodes) {
                println!("{g}");
            }
            std::process::ExitCode::SUCCESS
        }
        "warm" | "run" => {
            // One thread: the generator must leave the appliance its share of
            // a small machine.
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("metadata_load: {e}");
                    return std::process::ExitCode::FAILURE;
                }
            };
            let once = a.cmd == "warm";
            if rt.block_on(load(Arc::new(a), once)) {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::FAILURE
            }
        }
        other => {
            eprintln!("metadata_load: unknown command {other}");
            std::process::ExitCode::from(2)
        }
    }
}
