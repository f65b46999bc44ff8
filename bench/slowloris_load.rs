//! Load generator for the slowloris benchmark (`bench/slowloris.sh`).
//!
//! One run, two phases of `--duration` seconds each, the same load in both:
//!
//! - boot script requests on the node listener from `--workers` tasks on
//!   127.0.0.1, one TCP connection per request, or with `KEEPALIVE=1` on
//!   persistent connections (iPXE pools its connections; the client then
//!   spends far less CPU per request, so on a two-core machine the server,
//!   not the client's core, sets the rate). With `BOOT_LOAD_CMD` a shell
//!   command runs in each phase instead (the benchmark's `wrk`, whose rate
//!   rests on no client code of ours): it gets the phase's length in
//!   `PHASE_SECONDS` and prints `REQUESTS ERRORS SECONDS` as its last line;
//! - an operator on the API: `GET /hsm/v2/State/Components` every 20 ms on
//!   a keep-alive HTTPS connection, each latency kept for the p99.
//!
//! The second phase runs beside a slowloris on the node listener: `--flood`
//! connections from `--flood-addrs` loopback addresses (127.2.x.y), each
//! sending the start of a request head and then one header line every few
//! seconds, never finishing it. A connection the server closes is opened
//! again at the next round (3 s; `RECONNECT_MS=10` makes it a connect
//! flood), one whose connect gets no answer within 2 s 100 ms later, so
//! the attacker keeps `--flood` connections in play the whole phase. The server's resident memory and open descriptors are
//! sampled from /proc every 100 ms in both phases; the peaks are printed,
//! with the CPU time the server, this generator and the attacker used
//! (in % of one core), and with `SERVER_CPU` and `CLIENT_CPU` set how busy
//! each of those two cores was (from /proc/stat, softirq included: on
//! loopback the kernel handles a packet on the sender's core, which no
//! process is charged for), which tells whose core ran out.
//!
//! A minimal HTTP/1.1 client keeps the generator's own CPU use low.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

struct Args {
    node: SocketAddr,
    api: String,
    ca: String,
    token: String,
    mac: String,
    pid: u32,
    duration: Duration,
    workers: usize,
    flood: usize,
    flood_addrs: usize,
}

fn args() -> Result<Args, String> {
    let mut a = std::env::args().skip(1);
    let mut get = |name: &str| -> Result<String, String> {
        match (a.next(), a.next()) {
            (Some(k), Some(v)) if k == name => Ok(v),
            (k, _) => Err(format!("expected {name} VALUE, got {k:?}")),
        }
    };
    let node = get("--node")?.parse().map_err(|e| format!("--node: {e}"))?;
    let api = get("--api")?;
    let ca = std::fs::read_to_string(get("--ca")?).map_err(|e| format!("--ca: {e}"))?;
    let token = get("--token")?;
    let mac = get("--mac")?;
    let pid = get("--pid")?.parse().map_err(|e| format!("--pid: {e}"))?;
    let duration = Duration::from_secs(
        get("--duration")?
            .parse()
            .map_err(|e| format!("--duration: {e}"))?,
    );
    let workers = get("--workers")?
        .parse()
        .map_err(|e| format!("--workers: {e}"))?;
    let flood = get("--flood")?
        .parse()
        .map_err(|e| format!("--flood: {e}"))?;
    let flood_addrs = get("--flood-addrs")?
        .parse()
        .map_err(|e| format!("--flood-addrs: {e}"))?;
    Ok(Args {
        node,
        api,
        ca,
        token,
        mac,
        pid,
        duration,
        workers,
        flood,
        flood_addrs,
    })
}

/// What one phase measured.
#[derive(Default)]
struct Phase {
    script_rps: f64,
    script_errors: u64,
    api_p50_ms: f64,
    api_p99_ms: f64,
    api_max_ms: f64,
    api_errors: u64,
    rss_kib: u64,
    fds: u64,
    flood_open: u64,
    flood_connects: u64,
    /// CPU used over the phase, in % of one core.
    server_cpu: f64,
    load_cpu: f64,
    /// `BOOT_LOAD_CMD` and what it ran.
    boot_cmd_cpu: f64,
    /// Per pinned core: its name, busy % and softirq % over the phase.
    cores: Vec<(String, f64, f64)>,
    flood_cpu: f64,
    /// Attacker connects per second over its run.
    flood_rate: f64,
}

#[tokio::main]
async fn main() {
    if std::env::args().nth(1).as_deref() == Some("flood") {
        return flood_main().await;
    }
    let a = match args() {
        Ok(a) => Arc::new(a),
        Err(e) => {
            eprintln!("slowloris_load: {e}");
            std::process::exit(2);
        }
    };
    raise_fd_limit();
    let base = run_phase(&a, false).await;
    let flood = run_phase(&a, true).await;
    print(&a, &base, &flood);
    let ok = base.script_errors == 0 && base.api_errors == 0;
    std::process::exit(if ok { 0 } else { 1 });
}

fn raise_fd_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let lim = getrlimit(Resource::Nofile);
    let _ = setrlimit(
        Resource::Nofile,
        Rlimit {
            current: lim.maximum,
            maximum: lim.maximum,
        },
    );
}

async fn run_phase(a: &Arc<Args>, with_flood: bool) -> Phase {
    let mut children = Vec::new();
    if with_flood {
        // A process per 8,000 connections: each stays well inside the
        // descriptor limit a container may not raise.
        let per = 8000;
        let mut first = 0;
        while first < a.flood {
            let count = per.min(a.flood - first);
            let exe = std::env::current_exe().expect("the generator's own path");
            // ATTACKER_PREFIX: a command the attacker runs under (the
            // benchmark's `chrt --idle 0`, so it never delays the nodes'
            // load on the core they share, or `setsid`, a scheduling
            // group of its own).
            let prefix = std::env::var("ATTACKER_PREFIX").unwrap_or_default();
            let mut words = prefix.split_whitespace();
            let mut cmd = match words.next() {
                Some(first) => {
                    let mut c = std::process::Command::new(first);
                    c.args(words).arg(exe);
                    c
                }
                None => std::process::Command::new(exe),
            };
            let child = cmd
                .args(["flood", "--node", &a.node.to_string()])
                .args(["--first", &first.to_string(), "--count", &count.to_string()])
                .args(["--addrs", &a.flood_addrs.to_string()])
                .args(["--seconds", &(a.duration.as_secs() + 6).to_string()])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("start a flood process");
            children.push(child);
            first += count;
        }
        // Let the attacker reach its connection count first.
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let cpu_before = (cpu_ticks(&a.pid.to_string()), cpu_ticks("self"));
    let children_before = children_ticks();
    let cores_before = core_ticks();
    let measuring = Arc::new(AtomicBool::new(true));
    let sampler = tokio::spawn(sample(a.pid, measuring.clone()));
    let started = Instant::now();
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let boot_cmd = boot_load_cmd().map(|cmd| tokio::spawn(run_boot_cmd(cmd, a.duration)));
    let mut workers = Vec::new();
    for _ in 0..if boot_cmd.is_some() { 0 } else { a.workers } {
        let (a, done, errors) = (a.clone(), done.clone(), errors.clone());
        workers.push(tokio::spawn(async move {
            let keepalive = keepalive();
            let req = format!(
                "GET /boot/v1/bootscript?mac={} HTTP/1.1\r\nHost: bench\r\nConnection: {}\r\n\r\n",
                a.mac,
                if keepalive { "keep-alive" } else { "close" }
            );
            let mut conn: Option<Conn> = None;
            while started.elapsed() < a.duration {
                let one = async {
                    if !keepalive {
                        return one_request(a.node, &req).await;
                    }
                    if conn.is_none() {
                        conn = Some(Conn::open(a.node).await?);
                    }
                    let c = conn.as_mut().expect("opened above");
                    let r = c.request(req.as_bytes()).await;
                    if !matches!(r, Ok(true)) {
                        conn = None;
                    }
                    r
                };
                match tokio::time::timeout(Duration::from_secs(5), one).await {
                    Ok(Ok(true)) => done.fetch_add(1, Ordering::Relaxed),
                    _ => {
                        conn = None;
                        errors.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    let api = tokio::spawn(api_probe(a.clone(), started));
    for w in workers {
        let _ = w.await;
    }
    // The command's own count of requests over its own run time.
    let mut script_rate = None;
    if let Some(cmd) = boot_cmd {
        let (requests, errs, seconds) = cmd.await.unwrap_or((0, 1, 0.0));
        done.store(requests, Ordering::Relaxed);
        errors.store(errs, Ordering::Relaxed);
        script_rate = (seconds > 0.0).then(|| requests as f64 / seconds);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let pct = |before: u64, after: u64| (after.saturating_sub(before)) as f64 / elapsed;
    let server_cpu = pct(cpu_before.0, cpu_ticks(&a.pid.to_string()));
    let load_cpu = pct(cpu_before.1, cpu_ticks("self"));
    // Before the attacker's processes are waited for.
    let boot_cmd_cpu = pct(children_before, children_ticks());
    let cores = core_busy(&cores_before, &core_ticks());
    let (mut lat, api_errors) = api.await.unwrap_or_default();
    measuring.store(false, Ordering::Relaxed);
    let (rss_kib, fds) = sampler.await.unwrap_or_default();
    let (mut flood_open, mut flood_connects, mut flood_ticks) = (0, 0, 0);
    for c in children {
        if let Ok(out) = c.wait_with_output() {
            let text = String::from_utf8_lossy(&out.stdout);
            let mut f = text
                .split_whitespace()
                .map(|v| v.parse::<u64>().unwrap_or(0));
            flood_open += f.next().unwrap_or(0);
            flood_connects += f.next().unwrap_or(0);
            flood_ticks += f.next().unwrap_or(0);
        }
    }
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        if lat.is_empty() {
            f64::NAN
        } else {
            lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)]
        }
    };
    // Let the server see the flood's connections go before the next phase.
    tokio::time::sleep(Duration::from_secs(2)).await;
    Phase {
        script_rps: script_rate.unwrap_or(done.load(Ordering::Relaxed) as f64 / elapsed),
        script_errors: errors.load(Ordering::Relaxed),
        api_p50_ms: pct(0.50),
        api_p99_ms: pct(0.99),
        api_max_ms: lat.last().copied().unwrap_or(f64::NAN),
        api_errors,
        rss_kib,
        fds,
        flood_open,
        flood_connects,
        server_cpu,
        load_cpu,
        boot_cmd_cpu,
        cores,
        // The attacker ran a few seconds longer than the phase.
        flood_cpu: flood_ticks as f64 / (elapsed + 6.0),
        flood_rate: flood_connects as f64 / (elapsed + 6.0),
    }
}

/// `BOOT_LOAD_CMD`, when set and not empty.
fn boot_load_cmd() -> Option<String> {
    std::env::var("BOOT_LOAD_CMD")
        .ok()
        .filter(|c| !c.trim().is_empty())
}

/// Runs `cmd` with `sh -c` for a phase; the requests, errors and seconds
/// its last line reports (no answer or no such line: one error).
async fn run_boot_cmd(cmd: String, duration: Duration) -> (u64, u64, f64) {
    let out = tokio::process::Command::new("sh")
        .args(["-c", &cmd])
        .env("PHASE_SECONDS", duration.as_secs().to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .output();
    // Bounded: the command is given the phase's length, and 30 s more.
    let out = match tokio::time::timeout(duration + Duration::from_secs(30), out).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => {
            eprintln!("slowloris_load: BOOT_LOAD_CMD: {e}");
            return (0, 1, 0.0);
        }
        Err(_) => {
            eprintln!("slowloris_load: BOOT_LOAD_CMD did not finish in time");
            return (0, 1, 0.0);
        }
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let last: Vec<&str> = text
        .lines()
        .last()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    match (
        last.first().and_then(|v| v.parse().ok()),
        last.get(1).and_then(|v| v.parse().ok()),
        last.get(2).and_then(|v| v.parse().ok()),
    ) {
        (Some(requests), Some(errors), Some(seconds)) if out.status.success() => {
            (requests, errors, seconds)
        }
        _ => {
            eprintln!(
                "slowloris_load: BOOT_LOAD_CMD ({}) printed {:?}, not REQUESTS ERRORS SECONDS",
                out.status,
                text.trim()
            );
            (0, 1, 0.0)
        }
    }
}

/// One boot script request on a new connection; true for a complete 200.
async fn one_request(node: SocketAddr, req: &str) -> std::io::Result<bool> {
    let mut s = TcpStream::connect(node).await?;
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::with_capacity(2048);
    s.read_to_end(&mut buf).await?;
    Ok(buf.starts_with(b"HTTP/1.1 200"))
}

/// `KEEPALIVE=1`: boot script requests on persistent connections, as
/// iPXE's connection pool reuses one for a node's script, kernel and initrd.
fn keepalive() -> bool {
    std::env::var("KEEPALIVE").is_ok_and(|v| v == "1")
}

/// A persistent HTTP/1.1 connection reading responses by Content-Length.
struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(node: SocketAddr) -> std::io::Result<Conn> {
        let s = TcpStream::connect(node).await?;
        s.set_nodelay(true)?;
        Ok(Conn {
            s,
            buf: Vec::with_capacity(4096),
        })
    }

    /// Sends `req` and reads one response; true for a complete 200 that
    /// leaves the connection open.
    async fn request(&mut self, req: &[u8]) -> std::io::Result<bool> {
        self.s.write_all(req).await?;
        self.buf.clear();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                let closes = head.contains("connection: close");
                while self.buf.len() < end + 4 + len {
                    let n = self.s.read(&mut chunk).await?;
                    if n == 0 {
                        return Ok(false);
                    }
                    self.buf.extend_from_slice(&chunk[..n]);
                }
                return Ok(head.starts_with("http/1.1 200") && !closes);
            }
            let n = self.s.read(&mut chunk).await?;
            if n == 0 {
                return Ok(false);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// GET the component list every 20 ms; the latencies (ms) and errors.
async fn api_probe(a: Arc<Args>, started: Instant) -> (Vec<f64>, u64) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = match tls_client(&a.ca) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("slowloris_load: {e}");
            return (Vec::new(), 1);
        }
    };
    let url = format!("{}/hsm/v2/State/Components", a.api);
    let (mut lat, mut errors) = (Vec::new(), 0);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    while started.elapsed() < a.duration {
        tick.tick().await;
        let t = Instant::now();
        let r = client.get(&url).bearer_auth(&a.token).send().await;
        match r {
            Ok(r) if r.status().is_success() => {
                let _ = r.bytes().await;
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            _ => errors += 1,
        }
    }
    (lat, errors)
}

fn tls_client(pem: &str) -> Result<reqwest::Client, String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        roots
            .add(cert.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())
}

/// `flood --node A --first I --count N --addrs M --seconds S`: keeps N
/// slowloris connections (numbered from I, spread over M addresses) for S
/// seconds, then prints the peak number open and the connects made.
async fn flood_main() {
    let v: Vec<String> = std::env::args().skip(2).collect();
    let get = |name: &str| -> usize {
        v.iter()
            .position(|k| k == name)
            .and_then(|i| v.get(i + 1))
            .and_then(|x| x.parse().ok())
            .unwrap_or(0)
    };
    let node: SocketAddr = match v
        .iter()
        .position(|k| k == "--node")
        .and_then(|i| v.get(i + 1))
    {
        Some(n) => n.parse().expect("--node ADDR"),
        None => {
            eprintln!("slowloris_load flood: --node ADDR is required");
            std::process::exit(2);
        }
    };
    raise_fd_limit();
    let (first, count, addrs) = (get("--first"), get("--count"), get("--addrs").max(1));
    let stop = Arc::new(AtomicBool::new(false));
    let open = Arc::new(AtomicU64::new(0));
    let connects = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in first..first + count {
        let k = i % addrs;
        let from = IpAddr::V4(Ipv4Addr::new(127, 2, (k / 250) as u8, (k % 250 + 1) as u8));
        // A port of its own on its address, below the kernel's ephemeral
        // range (see `flood_socket`); the kernel's choice past that.
        let port = u16::try_from(FLOOD_PORTS.start + i / addrs)
            .ok()
            .filter(|p| FLOOD_PORTS.contains(&usize::from(*p)))
            .unwrap_or(0);
        tasks.push(tokio::spawn(slowloris(
            node,
            SocketAddr::new(from, port),
            stop.clone(),
            open.clone(),
            connects.clone(),
        )));
    }
    let end = Instant::now() + Duration::from_secs(get("--seconds") as u64);
    let mut peak = 0;
    while Instant::now() < end {
        peak = peak.max(open.load(Ordering::Relaxed));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.abort();
    }
    println!(
        "{peak} {} {}",
        connects.load(Ordering::Relaxed),
        cpu_ticks("self")
    );
}

/// One slowloris connection, opened again whenever the server closes it.
async fn slowloris(
    node: SocketAddr,
    from: SocketAddr,
    stop: Arc<AtomicBool>,
    open: Arc<AtomicU64>,
    connects: Arc<AtomicU64>,
) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(sock) = flood_socket(from) else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        connects.fetch_add(1, Ordering::Relaxed);
        let Ok(Ok(mut s)) = tokio::time::timeout(Duration::from_secs(2), sock.connect(node)).await
        else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        open.fetch_add(1, Ordering::Relaxed);
        let mut line = b"GET /boot/v1/bootscript?mac=02:00:00:00:00:01 HTTP/1.1\r\n".to_vec();
        let mut buf = [0u8; 256];
        loop {
            if stop.load(Ordering::Relaxed) || s.write_all(&line).await.is_err() {
                break;
            }
            line = b"X-a: b\r\n".to_vec();
            // Wait a few seconds, or until the server closes the connection.
            match tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(_)) => break, // an answer (408/400): closed next
                Err(_) => {}
            }
        }
        open.fetch_sub(1, Ordering::Relaxed);
        // As slowloris does: a connection found closed is opened again at
        // the next round of header lines (RECONNECT_MS; 10 makes it a
        // connect flood).
        tokio::time::sleep(Duration::from_millis(reconnect_ms())).await;
    }
}

/// The source ports the attacker's connections take, one each per address.
const FLOOD_PORTS: std::ops::Range<usize> = 10_000..32_768;

/// A socket bound to `from`. A connection keeps its own port from one
/// attempt to the next (SO_REUSEADDR; 0 lets the kernel choose at
/// connect(2), IP_BIND_ADDRESS_NO_PORT). Connects waiting on a server that
/// drops their SYNs hold most of an address's ephemeral ports at once, and
/// the kernel's search for a free one then took milliseconds per connect,
/// most of the attacker's CPU, which it took from the load generator's
/// core; a remote attacker brings its own.
#[allow(unsafe_code)]
fn flood_socket(from: SocketAddr) -> std::io::Result<TcpSocket> {
    use std::os::fd::AsRawFd;
    let sock = TcpSocket::new_v4()?;
    if from.port() != 0 {
        sock.set_reuseaddr(true)?;
    } else {
        let one: libc::c_int = 1;
        // SAFETY: the option value is a c_int that outlives the call, and
        // its length is given.
        let r = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&raw const one).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    sock.bind(from)?;
    Ok(sock)
}

/// Pause before reopening a closed connection: `RECONNECT_MS`, else 3000.
fn reconnect_ms() -> u64 {
    std::env::var("RECONNECT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000)
}

/// User plus system CPU time of /proc/`pid` (a pid or `self`), in clock
/// ticks (1/100 s on Linux).
fn cpu_ticks(pid: &str) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // The command name may hold spaces; the fields after it do not.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 11 and 12 here.
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    get(11) + get(12)
}

/// CPU time of this process's children that were waited for (cutime and
/// cstime, fields 16 and 17), in clock ticks.
fn children_ticks() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0;
    };
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    get(13) + get(14)
}

/// The cores named by `SERVER_CPU` and `CLIENT_CPU` (the benchmark's
/// pinning), each with its /proc/stat counters: busy (user, nice, system,
/// irq, softirq), softirq alone, and all.
fn core_ticks() -> Vec<(String, u64, u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let mut cores = Vec::new();
    for (role, var) in [("server", "SERVER_CPU"), ("client", "CLIENT_CPU")] {
        let Ok(cpu) = std::env::var(var) else {
            continue;
        };
        let Some(line) = stat
            .lines()
            .find(|l| l.split_whitespace().next() == Some(&format!("cpu{cpu}")))
        else {
            continue;
        };
        let f: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        let get = |i: usize| f.get(i).copied().unwrap_or(0);
        // user nice system idle iowait irq softirq steal
        let busy = get(0) + get(1) + get(2) + get(5) + get(6);
        let all = (0..8).map(get).sum();
        cores.push((format!("{role} core (CPU {cpu})"), busy, get(6), all));
    }
    cores
}

/// Busy and softirq % of each core between two `core_ticks`.
fn core_busy(
    before: &[(String, u64, u64, u64)],
    after: &[(String, u64, u64, u64)],
) -> Vec<(String, f64, f64)> {
    before
        .iter()
        .zip(after)
        .map(|((name, b0, s0, t0), (_, b1, s1, t1))| {
            let all = t1.saturating_sub(*t0).max(1) as f64;
            (
                name.clone(),
                b1.saturating_sub(*b0) as f64 * 100.0 / all,
                s1.saturating_sub(*s0) as f64 * 100.0 / all,
            )
        })
        .collect()
}

/// Peak resident memory (KiB) and open descriptors of `pid` while
/// `measuring`.
async fn sample(pid: u32, measuring: Arc<AtomicBool>) -> (u64, u64) {
    let (mut rss, mut fds) = (0, 0);
    while measuring.load(Ordering::Relaxed) {
        if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status"))
            && let Some(kib) = s
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            rss = rss.max(kib);
        }
        if let Ok(d) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
            fds = fds.max(d.count() as u64);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (rss, fds)
}

fn print(a: &Args, base: &Phase, flood: &Phase) {
    let ratio = |x: f64, y: f64| if y > 0.0 { x / y } else { f64::NAN };
    let load = match std::env::var("BOOT_LOAD_DESC") {
        Ok(d) if boot_load_cmd().is_some() => d,
        _ if boot_load_cmd().is_some() => "BOOT_LOAD_CMD".to_string(),
        _ => format!(
            "{} boot script workers ({})",
            a.workers,
            if keepalive() {
                "persistent connections"
            } else {
                "a connection per request"
            }
        ),
    };
    println!(
        "slowloris: {} connections from {} address(es) on the node listener, {} s per phase, {load}",
        a.flood,
        a.flood_addrs,
        a.duration.as_secs(),
    );
    println!(
        "{:<34} {:>12} {:>12} {:>8}",
        "", "no flood", "slowloris", "ratio"
    );
    let row = |name: &str, x: f64, y: f64| {
        println!("{name:<34} {x:>12.1} {y:>12.1} {:>8.2}", ratio(y, x));
    };
    row("bootscript req/s", base.script_rps, flood.script_rps);
    row(
        "bootscript errors",
        base.script_errors as f64,
        flood.script_errors as f64,
    );
    row("API GET p50 (ms)", base.api_p50_ms, flood.api_p50_ms);
    row("API GET p99 (ms)", base.api_p99_ms, flood.api_p99_ms);
    row("API GET max (ms)", base.api_max_ms, flood.api_max_ms);
    row(
        "API errors",
        base.api_errors as f64,
        flood.api_errors as f64,
    );
    row(
        "server peak RSS (MiB)",
        base.rss_kib as f64 / 1024.0,
        flood.rss_kib as f64 / 1024.0,
    );
    row("server peak open fds", base.fds as f64, flood.fds as f64);
    row("attacker connects/s", base.flood_rate, flood.flood_rate);
    row(
        "server CPU (% of a core)",
        base.server_cpu,
        flood.server_cpu,
    );
    // What the flood costs the server per boot script, whatever held the
    // rate back.
    let per_cpu_s = |p: &Phase| {
        if p.server_cpu > 0.0 {
            p.script_rps * 100.0 / p.server_cpu
        } else {
            f64::NAN
        }
    };
    row(
        "bootscripts per server CPU second",
        per_cpu_s(base),
        per_cpu_s(flood),
    );
    if boot_load_cmd().is_some() {
        row(
            "boot script client CPU (%)",
            base.boot_cmd_cpu,
            flood.boot_cmd_cpu,
        );
        row("API prober CPU (%)", base.load_cpu, flood.load_cpu);
    } else {
        row("load generator CPU (%)", base.load_cpu, flood.load_cpu);
    }
    row("attacker CPU (%)", base.flood_cpu, flood.flood_cpu);
    for ((name, b_busy, b_soft), (_, f_busy, f_soft)) in base.cores.iter().zip(&flood.cores) {
        row(&format!("{name} busy (%)"), *b_busy, *f_busy);
        row("  of which softirq (%)", *b_soft, *f_soft);
    }
    row(
        "attacker connections open (peak)",
        base.flood_open as f64,
        flood.flood_open as f64,
    );
    row(
        "attacker connects during phase",
        base.flood_connects as f64,
        flood.flood_connects as f64,
    );
    let r = ratio(flood.script_rps, base.script_rps);
    println!(
        "target: bootscript >= 0.8x ({}), API p99 < 100 ms under the flood ({})",
        if r >= 0.8 { "met" } else { "missed" },
        if flood.api_p99_ms < 100.0 {
            "met"
        } else {
            "missed"
        }
    );
}
