//! TFTP against a running appliance. A small client written here drives the
//! protocol's edge cases (lost and duplicated ACKs, windowsize, block numbers
//! wrapping past 65535, the UEFI size probe, malformed packets and options,
//! the cap on concurrent transfers); real clients (tftp-hpa, curl, atftp)
//! fetch Debian's iPXE binaries and must get them byte for byte.
//!
//! The real clients and the `ipxe` package are required: a missing one fails
//! the test with the Debian package to install (`.ci/run` installs them).
//! Everything talks to 127.0.0.1 only.

mod common;

use std::io::Read as _;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Harness;
use openchami::config::Config;
use serde_json::json;

/// How long the client waits for any one packet before giving up. The server
/// resends after 1 s (see [`Server::start_with`]), so this is generous.
const WAIT: Duration = Duration::from_secs(10);

/// Debian's iPXE binaries, the package fallbacks for an empty root.
const UNDIONLY: &str = "/usr/lib/ipxe/undionly.kpxe";
const IPXE_EFI: &str = "/usr/lib/ipxe/ipxe.efi";

// ------------------------------------------------------------------ server

/// The appliance with TFTP on a loopback port. It runs on a runtime of its
/// own so the tests can use blocking sockets and child processes.
struct Server {
    rt: Option<tokio::runtime::Runtime>,
    h: Option<Harness>,
    addr: SocketAddr,
}

impl Server {
    fn start() -> Server {
        Self::start_with(|_| {})
    }

    /// TFTP enabled on `127.0.0.1:0` with a 1 s resend timeout and the root
    /// left empty (so `<state_dir>/tftp`, with no iPXE files in it); then `f`.
    fn start_with(f: impl FnOnce(&mut Config)) -> Server {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let h = rt.block_on(Harness::start_with(|c| {
            c.tftp.enabled = Some(true);
            c.tftp.listen = "127.0.0.1:0".parse().expect("addr");
            c.tftp.timeout_secs = 1;
            f(c);
        }));
        let addr = h.app().tftp_addr.expect("TFTP is listening");
        assert!(addr.ip().is_loopback(), "TFTP bound to {addr}");
        Server {
            rt: Some(rt),
            h: Some(h),
            addr,
        }
    }

    fn harness(&self) -> &Harness {
        self.h.as_ref().expect("running")
    }

    fn root(&self) -> PathBuf {
        self.harness().config.tftp_root()
    }

    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.as_ref().expect("runtime").block_on(f)
    }

    /// Writes `data` into the root as `name`.
    fn put(&self, name: &str, data: &[u8]) {
        std::fs::write(self.root().join(name), data).expect("write into the TFTP root");
    }

    /// The root's entries, to show nothing was written.
    fn listing(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.root())
            .expect("read the root")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // The harness cancels the appliance; the runtime then ends its tasks.
        drop(self.h.take());
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

// ----------------------------------------------------------------- packets

const RRQ: u16 = 1;
const WRQ: u16 = 2;
const DATA: u16 = 3;
const ACK: u16 = 4;
const ERROR: u16 = 5;
const OACK: u16 = 6;

#[derive(Debug, Clone, PartialEq)]
enum Pkt {
    Data(u16, Vec<u8>),
    Ack(u16),
    Error(u16, String),
    Oack(Vec<(String, String)>),
    Other(Vec<u8>),
}

fn request(op: u16, file: &str, mode: &str, opts: &[(&str, &str)]) -> Vec<u8> {
    let mut b = op.to_be_bytes().to_vec();
    for s in [file, mode] {
        b.extend_from_slice(s.as_bytes());
        b.push(0);
    }
    for (k, v) in opts {
        b.extend_from_slice(k.as_bytes());
        b.push(0);
        b.extend_from_slice(v.as_bytes());
        b.push(0);
    }
    b
}

fn rrq(file: &str, opts: &[(&str, &str)]) -> Vec<u8> {
    request(RRQ, file, "octet", opts)
}

fn ack(block: u16) -> Vec<u8> {
    let mut b = ACK.to_be_bytes().to_vec();
    b.extend_from_slice(&block.to_be_bytes());
    b
}

fn error(code: u16, msg: &str) -> Vec<u8> {
    let mut b = ERROR.to_be_bytes().to_vec();
    b.extend_from_slice(&code.to_be_bytes());
    b.extend_from_slice(msg.as_bytes());
    b.push(0);
    b
}

fn parse(b: &[u8]) -> Pkt {
    let u16_at = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
    if b.len() < 2 {
        return Pkt::Other(b.to_vec());
    }
    match u16_at(0) {
        DATA if b.len() >= 4 => Pkt::Data(u16_at(2), b[4..].to_vec()),
        ACK if b.len() == 4 => Pkt::Ack(u16_at(2)),
        ERROR if b.len() >= 5 && b.last() == Some(&0) => Pkt::Error(
            u16_at(2),
            String::from_utf8_lossy(&b[4..b.len() - 1]).into_owned(),
        ),
        OACK if b.last() == Some(&0) => {
            let fields: Vec<String> = b[2..b.len() - 1]
                .split(|c| *c == 0)
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect();
            if !fields.len().is_multiple_of(2) {
                return Pkt::Other(b.to_vec());
            }
            Pkt::Oack(
                fields
                    .chunks(2)
                    .map(|kv| (kv[0].to_ascii_lowercase(), kv[1].clone()))
                    .collect(),
            )
        }
        _ => Pkt::Other(b.to_vec()),
    }
}

fn opt<'a>(oack: &'a [(String, String)], name: &str) -> Option<&'a str> {
    oack.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

// ------------------------------------------------------------------ client

/// One UDP socket on loopback: sends requests to the server's port, then
/// talks to the port the server answered from (the transfer ID).
struct Client {
    sock: UdpSocket,
    server: SocketAddr,
}

impl Client {
    fn new(server: SocketAddr) -> Client {
        Self::bound("127.0.0.1:0", server)
    }

    /// A client on another loopback address (all of 127/8 is local).
    fn bound(local: &str, server: SocketAddr) -> Client {
        let sock = UdpSocket::bind(local).expect("bind a client socket");
        Client { sock, server }
    }

    fn send(&self, bytes: &[u8]) {
        self.sock.send_to(bytes, self.server).expect("send");
    }

    fn send_to(&self, to: SocketAddr, bytes: &[u8]) {
        self.sock.send_to(bytes, to).expect("send");
    }

    /// The next packet from anyone, or `None` after `wait`.
    fn recv_within(&self, wait: Duration) -> Option<(Pkt, SocketAddr)> {
        let mut buf = vec![0u8; 65536];
        self.sock
            .set_read_timeout(Some(wait.max(Duration::from_millis(1))))
            .expect("timeout");
        match self.sock.recv_from(&mut buf) {
            Ok((n, from)) => Some((parse(&buf[..n]), from)),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            Err(e) => panic!("recv: {e}"),
        }
    }

    #[track_caller]
    fn recv(&self) -> (Pkt, SocketAddr) {
        self.recv_within(WAIT)
            .unwrap_or_else(|| panic!("no answer from the server within {WAIT:?}"))
    }

    /// Packets that arrive within `wait`.
    fn drain(&self, wait: Duration) -> Vec<(Pkt, SocketAddr)> {
        let deadline = Instant::now() + wait;
        let mut out = Vec::new();
        while let Some(p) = self.recv_within(deadline.saturating_duration_since(Instant::now())) {
            out.push(p);
        }
        out
    }
}

/// How the client acknowledges.
#[derive(Debug, Clone)]
struct Acking {
    /// Window-ending data packets (counted from 1 in arrival order) whose
    /// ACK is not sent, so the server must resend.
    drop: Vec<u64>,
    /// Each ACK is sent this many times.
    copies: usize,
}

impl Default for Acking {
    fn default() -> Self {
        Acking {
            drop: Vec::new(),
            copies: 1,
        }
    }
}

/// A finished read.
#[derive(Debug)]
struct Got {
    data: Vec<u8>,
    oack: Option<Vec<(String, String)>>,
    /// Data packets received that were not the next block expected
    /// (resends after a lost ACK, or duplicates).
    repeats: u64,
    /// Block number 0 was seen, i.e. the numbers wrapped past 65535.
    wrapped: bool,
}

/// A read request the server answered.
struct Transfer {
    c: Client,
    tid: SocketAddr,
    first: Pkt,
}

impl Transfer {
    /// Sends the RRQ and waits for the first answer; `Err` is the server's
    /// error packet.
    fn start(server: SocketAddr, file: &str, opts: &[(&str, &str)]) -> Result<Transfer, Pkt> {
        let c = Client::new(server);
        c.send(&rrq(file, opts));
        Self::answered(c)
    }

    /// A transfer whose client has acknowledged the server's first packet
    /// (its OACK), with the first data block received.
    fn acknowledged(server: SocketAddr, file: &str) -> Transfer {
        let c = Client::new(server);
        c.send(&rrq(file, &[("tsize", "0")]));
        let (first, tid) = c.recv();
        assert!(matches!(first, Pkt::Oack(_)), "{first:?}");
        c.send_to(tid, &ack(0));
        let (first, from) = c.recv();
        assert_eq!(from, tid);
        assert!(matches!(first, Pkt::Data(1, _)), "{first:?}");
        Transfer { c, tid, first }
    }

    fn answered(c: Client) -> Result<Transfer, Pkt> {
        let (first, tid) = c.recv();
        match first {
            Pkt::Oack(_) | Pkt::Data(..) => {
                assert_ne!(tid, c.server, "the transfer must come from a new port");
                Ok(Transfer { c, tid, first })
            }
            e @ Pkt::Error(..) => Err(e),
            other => panic!("unexpected first answer {other:?}"),
        }
    }

    /// Receives the rest, acknowledging as `acking` says.
    fn finish(self, acking: &Acking) -> Result<Got, Pkt> {
        let Transfer { c, tid, first } = self;
        let send_ack = |n: u16| {
            for _ in 0..acking.copies {
                c.send_to(tid, &ack(n));
            }
        };
        let mut blksize = 512usize;
        let mut window = 1u64;
        let mut oack = None;
        let mut pending = None;
        match first {
            Pkt::Oack(o) => {
                if let Some(b) = opt(&o, "blksize") {
                    blksize = b.parse().expect("numeric blksize in the OACK");
                }
                if let Some(w) = opt(&o, "windowsize") {
                    window = w.parse().expect("numeric windowsize in the OACK");
                }
                oack = Some(o);
                send_ack(0);
            }
            d => pending = Some(d),
        }
        let mut got = Got {
            data: Vec::new(),
            oack,
            repeats: 0,
            wrapped: false,
        };
        let mut expected: u16 = 1;
        let mut in_window = 0u64;
        let mut received = 0u64;
        loop {
            let pkt = match pending.take() {
                Some(p) => p,
                None => {
                    let (p, from) = c.recv();
                    if from != tid {
                        panic!("a packet from {from}, not the transfer's {tid}: {p:?}");
                    }
                    p
                }
            };
            match pkt {
                Pkt::Data(n, d) if n == expected => {
                    assert!(d.len() <= blksize, "block {n} is {} bytes", d.len());
                    let last = d.len() < blksize;
                    got.data.extend_from_slice(&d);
                    got.wrapped |= n == 0;
                    expected = expected.wrapping_add(1);
                    received += 1;
                    in_window += 1;
                    if last || in_window == window {
                        in_window = 0;
                        if !acking.drop.contains(&received) {
                            send_ack(n);
                        }
                    }
                    if last {
                        return Ok(got);
                    }
                }
                Pkt::Data(..) => {
                    // A resend: acknowledge what we have so the server moves on.
                    got.repeats += 1;
                    in_window = 0;
                    send_ack(expected.wrapping_sub(1));
                }
                e @ Pkt::Error(..) => return Err(e),
                other => panic!("unexpected packet during the transfer: {other:?}"),
            }
        }
    }
}

/// Fetches `file` completely.
#[track_caller]
fn fetch(server: SocketAddr, file: &str, opts: &[(&str, &str)], acking: &Acking) -> Got {
    // A transfer's slot is freed when its task has read the last ACK (or the
    // client's error), which on a loaded machine can come after our next
    // request: with a transfer cap, "busy" right after a transfer is retried.
    let mut tries = 0;
    let transfer = loop {
        match Transfer::start(server, file, opts) {
            Err(Pkt::Error(0, msg)) if msg.contains("busy") && tries < 50 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            other => break other,
        }
    };
    transfer
        .unwrap_or_else(|e| panic!("{file}: refused: {e:?}"))
        .finish(acking)
        .unwrap_or_else(|e| panic!("{file}: failed: {e:?}"))
}

/// The error a request gets.
#[track_caller]
fn refused(server: SocketAddr, bytes: &[u8]) -> (u16, String) {
    let c = Client::new(server);
    c.send(bytes);
    match c.recv().0 {
        Pkt::Error(code, msg) => (code, msg),
        other => panic!("wanted an error, got {other:?}"),
    }
}

#[track_caller]
fn same_bytes(what: &str, got: &[u8], want: &[u8]) {
    if got != want {
        let at = got.iter().zip(want).position(|(a, b)| a != b);
        panic!(
            "{what}: {} bytes received, {} expected; first difference at {at:?}",
            got.len(),
            want.len()
        );
    }
}

/// Deterministic pseudo-random bytes (xorshift64*).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

// ------------------------------------------------------------ real clients

/// The path of `bin`, or a failure naming the Debian package providing it.
#[track_caller]
fn need(bin: &str, package: &str) -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("`{bin}` is not installed: apt-get install {package} (.ci/run installs it)")
        })
}

/// Debian's iPXE binary at `path`.
#[track_caller]
fn ipxe_file(path: &str) -> Vec<u8> {
    std::fs::read(path)
        .unwrap_or_else(|e| panic!("{path}: {e}: apt-get install ipxe (.ci/run installs it)"))
}

/// A child process killed when dropped, however the test ends.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `cmd` for at most `limit`; returns its exit code and output.
fn run(cmd: &mut Command, limit: Duration) -> (Option<i32>, String) {
    let what = format!("{cmd:?}");
    let mut child = Reaped(
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{what}: {e}")),
    );
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.0.try_wait().expect("wait") {
            let mut text = String::new();
            for r in [
                child
                    .0
                    .stdout
                    .take()
                    .map(|s| Box::new(s) as Box<dyn std::io::Read>),
                child
                    .0
                    .stderr
                    .take()
                    .map(|s| Box::new(s) as Box<dyn std::io::Read>),
            ]
            .into_iter()
            .flatten()
            {
                let mut r = r;
                let _ = r.read_to_string(&mut text);
            }
            return (status.code(), text);
        }
        assert!(
            Instant::now() < deadline,
            "{what} still running after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn read_out(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn tftp_hpa_fetches_undionly_from_the_package() {
    let tftp = need("tftp", "tftp-hpa");
    let want = ipxe_file(UNDIONLY);
    let s = Server::start();
    let out = tempfile::tempdir().expect("temp dir");
    let file = out.path().join("undionly.kpxe");
    let (code, text) = run(
        Command::new(&tftp)
            .args(["-m", "binary", "127.0.0.1", &s.addr.port().to_string()])
            .arg("-c")
            .arg("get")
            .arg("undionly.kpxe")
            .arg(&file),
        Duration::from_secs(60),
    );
    assert_eq!(code, Some(0), "tftp-hpa: {text}");
    same_bytes("tftp-hpa undionly.kpxe", &read_out(&file), &want);

    // A missing file: tftp-hpa reports the server's error 1.
    let missing = out.path().join("missing");
    let (_, text) = run(
        Command::new(&tftp)
            .args(["-m", "binary", "127.0.0.1", &s.addr.port().to_string()])
            .arg("-c")
            .arg("get")
            .arg("no-such-file")
            .arg(&missing),
        Duration::from_secs(60),
    );
    assert!(
        text.contains("Error code 1"),
        "tftp-hpa on a missing file: {text}"
    );
    assert!(
        s.listing().is_empty(),
        "the root changed: {:?}",
        s.listing()
    );
}

#[test]
fn curl_fetches_the_efi_binary_and_reports_missing_files() {
    let curl = need("curl", "curl");
    let want = ipxe_file(IPXE_EFI);
    let s = Server::start();
    let out = tempfile::tempdir().expect("temp dir");
    let file = out.path().join("ipxe.efi");
    let url = |name: &str| format!("tftp://127.0.0.1:{}/{name}", s.addr.port());
    let (code, text) = run(
        Command::new(&curl)
            .args([
                "-s",
                "-S",
                "--max-time",
                "60",
                "--tftp-blksize",
                "1468",
                "-o",
            ])
            .arg(&file)
            .arg(url("ipxe-x86_64.efi")),
        Duration::from_secs(90),
    );
    assert_eq!(code, Some(0), "curl: {text}");
    same_bytes("curl ipxe-x86_64.efi", &read_out(&file), &want);

    // Missing: curl's exit code for a TFTP "file not found" is 68.
    let (code, text) = run(
        Command::new(&curl)
            .args(["-s", "-S", "--max-time", "60", "-o"])
            .arg(out.path().join("x"))
            .arg(url("no-such-file")),
        Duration::from_secs(90),
    );
    assert_eq!(code, Some(68), "curl on a missing file: {text}");

    // The generated script, with curl's default block size.
    let (code, text) = run(
        Command::new(&curl)
            .args(["-s", "-S", "--max-time", "60"])
            .arg(url("autoexec.ipxe")),
        Duration::from_secs(90),
    );
    assert_eq!(code, Some(0), "curl autoexec.ipxe: {text}");
    assert!(text.starts_with("#!ipxe\nchain "), "{text}");

    // Each transfer is counted and timed by how it ended (the server sees
    // the end a moment after curl does).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let m = s.harness().app().state.metrics.render(&[]);
        let done = [
            r#"openchami_tftp_transfers_total{outcome="sent"} 2"#,
            r#"openchami_tftp_transfers_total{outcome="not_found"} 1"#,
            r#"openchami_tftp_transfer_duration_seconds_count{outcome="sent"} 2"#,
        ]
        .iter()
        .all(|want| m.contains(want));
        if done {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{m}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn atftp_fetches_with_windowsize_16() {
    let atftp = need("atftp", "atftp");
    let want = ipxe_file(IPXE_EFI);
    let s = Server::start();
    let out = tempfile::tempdir().expect("temp dir");
    let file = out.path().join("ipxe.efi");
    let (code, text) = run(
        Command::new(&atftp)
            .args([
                "--option",
                "windowsize 16",
                "--option",
                "blksize 1468",
                "--tftp-timeout",
                "2",
                "-g",
                "-r",
                "ipxe-x86_64.efi",
                "-l",
            ])
            .arg(&file)
            .args(["127.0.0.1", &s.addr.port().to_string()]),
        Duration::from_secs(90),
    );
    assert_eq!(code, Some(0), "atftp: {text}");
    same_bytes("atftp ipxe-x86_64.efi", &read_out(&file), &want);
}

// ---------------------------------------------------------- the test client

#[test]
fn package_fallbacks_and_files_in_the_root() {
    let undionly = ipxe_file(UNDIONLY);
    let efi = ipxe_file(IPXE_EFI);
    let s = Server::start();
    assert!(s.listing().is_empty(), "the root starts empty");
    let got = fetch(s.addr, "undionly.kpxe", &[], &Acking::default());
    same_bytes("undionly.kpxe", &got.data, &undionly);
    assert_eq!(got.oack, None, "no options asked, none acknowledged");

    let got = fetch(
        s.addr,
        "/ipxe-x86_64.efi",
        &[("blksize", "1468"), ("tsize", "0")],
        &Acking::default(),
    );
    same_bytes("ipxe-x86_64.efi", &got.data, &efi);
    let oack = got.oack.expect("options acknowledged");
    assert_eq!(opt(&oack, "blksize"), Some("1468"));
    assert_eq!(opt(&oack, "tsize"), Some(efi.len().to_string().as_str()));

    // A file in the root wins over the package, even one put there later.
    s.put("undionly.kpxe", b"site build");
    let got = fetch(s.addr, "undionly.kpxe", &[], &Acking::default());
    assert_eq!(got.data, b"site build");
    // Names with no package file and nothing in the root: error 1.
    assert_eq!(refused(s.addr, &rrq("ipxe-i386.efi", &[])).0, 1);
}

#[test]
fn reads_only_inside_the_root() {
    let s = Server::start();
    s.put("hello.txt", b"hello\n");
    let before = s.listing();

    // Writes: error 2, nothing created, with or without options.
    for (name, opts) in [
        ("new.bin", &[][..]),
        ("hello.txt", &[("tsize", "6"), ("blksize", "512")][..]),
    ] {
        let (code, msg) = refused(s.addr, &request(WRQ, name, "octet", opts));
        assert_eq!(code, 2, "WRQ {name}: {msg}");
    }
    // Paths out of the root: error 2.
    for name in [
        "../etc/passwd",
        "/../etc/passwd",
        "a/../../etc/passwd",
        "..",
        "",
    ] {
        let (code, msg) = refused(s.addr, &rrq(name, &[]));
        assert_eq!(code, 2, "RRQ {name:?}: {msg}");
    }
    #[cfg(unix)]
    {
        let outside = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(outside.path(), b"secret").expect("write");
        std::os::unix::fs::symlink(outside.path(), s.root().join("leak")).expect("symlink");
        let (code, msg) = refused(s.addr, &rrq("leak", &[]));
        assert_eq!(code, 2, "a symlink out of the root: {msg}");
        std::fs::remove_file(s.root().join("leak")).expect("remove the symlink");
    }
    // Missing: error 1.
    assert_eq!(refused(s.addr, &rrq("nope.bin", &[])).0, 1);
    assert_eq!(refused(s.addr, &rrq("dir/nope.bin", &[])).0, 1);

    assert_eq!(s.listing(), before, "the root changed");
    assert_eq!(
        std::fs::read(s.root().join("hello.txt")).expect("read"),
        b"hello\n"
    );
    let got = fetch(s.addr, "hello.txt", &[], &Acking::default());
    assert_eq!(got.data, b"hello\n");
}

#[test]
fn autoexec_ipxe_names_the_client_by_its_inventory_mac() {
    let s = Server::start();
    let node_base = format!("http://{}", s.harness().node_addr());

    // Unknown client: iPXE fills in the MAC itself.
    let got = fetch(
        s.addr,
        "autoexec.ipxe",
        &[("tsize", "0")],
        &Acking::default(),
    );
    let text = String::from_utf8(got.data).expect("text");
    assert_eq!(
        text,
        format!("#!ipxe\nchain {node_base}/boot/v1/bootscript?mac=${{netX/mac}} || reboot\n")
    );
    let oack = got.oack.expect("tsize acknowledged");
    assert_eq!(opt(&oack, "tsize"), Some(text.len().to_string().as_str()));

    // Once the inventory has an interface with the client's address, its MAC.
    let h = s.harness();
    s.block_on(async {
        h.api
            .post(
                "/hsm/v2/State/Components",
                &json!({"Components": [{"ID": "x1000c0s0b0n0", "State": "Ready", "NID": 1}]}),
            )
            .await
            .status(204);
        let r = h
            .api
            .post(
                "/hsm/v2/Inventory/EthernetInterfaces",
                &json!({
                    "MACAddress": "52:54:00:12:34:56",
                    "ComponentID": "x1000c0s0b0n0",
                    "IPAddresses": [{"IPAddress": "127.0.0.1"}]
                }),
            )
            .await;
        assert!((200..300).contains(&r.status), "{}: {}", r.status, r.text());
    });
    let got = fetch(s.addr, "autoexec.ipxe", &[], &Acking::default());
    assert_eq!(
        String::from_utf8(got.data).expect("text"),
        format!("#!ipxe\nchain {node_base}/boot/v1/bootscript?mac=52:54:00:12:34:56 || reboot\n")
    );
}

#[test]
fn netascii_is_converted() {
    let s = Server::start();
    s.put("t.txt", b"one\ntwo\r\nthree\r");
    let c = Client::new(s.addr);
    c.send(&request(RRQ, "t.txt", "NetASCII", &[("tsize", "0")]));
    let got = Transfer::answered(c)
        .expect("served")
        .finish(&Acking::default())
        .expect("read");
    let want = b"one\r\ntwo\r\0\r\nthree\r\0";
    assert_eq!(got.data, want);
    let oack = got.oack.expect("tsize acknowledged");
    assert_eq!(opt(&oack, "tsize"), Some(want.len().to_string().as_str()));
}

#[test]
fn lost_acks_are_recovered_by_resending() {
    let s = Server::start();
    let data = noise(40 * 512 + 100, 1);
    s.put("f.bin", &data);

    // Lockstep: the ACKs of blocks 3 and 10 are lost; the server resends
    // those blocks after its timeout and the transfer completes.
    let got = fetch(
        s.addr,
        "f.bin",
        &[],
        &Acking {
            drop: vec![3, 10],
            ..Acking::default()
        },
    );
    same_bytes("lockstep with lost ACKs", &got.data, &data);
    assert!(got.repeats >= 2, "resends seen: {}", got.repeats);

    // Windowed: the ACK closing the second window of 8 is lost; the server
    // resends the window.
    let got = fetch(
        s.addr,
        "f.bin",
        &[("windowsize", "8"), ("blksize", "512")],
        &Acking {
            drop: vec![16],
            ..Acking::default()
        },
    );
    same_bytes("windowed with a lost ACK", &got.data, &data);
    assert!(got.repeats >= 1, "resends seen: {}", got.repeats);
}

#[test]
fn duplicated_acks_do_not_duplicate_data() {
    let s = Server::start();
    let data = noise(100 * 512, 2); // a multiple: ends with an empty block
    s.put("f.bin", &data);
    for opts in [
        &[][..],
        &[("windowsize", "4")][..],
        &[("windowsize", "16"), ("blksize", "1468")][..],
    ] {
        let got = fetch(
            s.addr,
            "f.bin",
            opts,
            &Acking {
                copies: 3,
                ..Acking::default()
            },
        );
        same_bytes(
            &format!("{opts:?} with every ACK sent thrice"),
            &got.data,
            &data,
        );
        // No Sorcerer's Apprentice: each block arrives once.
        assert_eq!(got.repeats, 0, "{opts:?}: blocks sent twice");
    }
}

#[test]
fn windowsize_and_block_size_are_negotiated_within_limits() {
    let s = Server::start_with(|c| {
        c.tftp.max_block_size = 1468;
        c.tftp.max_window_size = 64;
    });
    let data = noise(300_000, 3);
    s.put("f.bin", &data);
    // Options asked, blksize granted, windowsize granted.
    type Case = (
        &'static [(&'static str, &'static str)],
        Option<&'static str>,
        Option<&'static str>,
    );
    let cases: &[Case] = &[
        (&[("windowsize", "16")], None, Some("16")),
        (&[("windowsize", "65")], None, Some("64")),
        (&[("windowsize", "0")], None, None),
        (&[("windowsize", "x")], None, None),
        (&[("blksize", "65464")], Some("1468"), None),
        (&[("blksize", "8")], Some("8"), None),
        (&[("blksize", "0")], None, None),
        (&[("blksize", "7")], None, None),
        (&[("blksize", "70000")], None, None),
        (&[("blksize", "-1")], None, None),
        (&[("blksize", "lots")], None, None),
        (
            &[("BLKSIZE", "1024"), ("WindowSize", "3")],
            Some("1024"),
            Some("3"),
        ),
        (
            &[("no-such-option", "1"), ("blksize", "1000")],
            Some("1000"),
            None,
        ),
    ];
    for (opts, blksize, window) in cases {
        let got = fetch(s.addr, "f.bin", opts, &Acking::default());
        same_bytes(&format!("{opts:?}"), &got.data, &data);
        let oack = got.oack.unwrap_or_default();
        assert_eq!(opt(&oack, "blksize"), *blksize, "{opts:?}: {oack:?}");
        assert_eq!(opt(&oack, "windowsize"), *window, "{opts:?}: {oack:?}");
        assert!(
            oack.iter()
                .all(|(k, _)| ["blksize", "windowsize", "tsize", "timeout"].contains(&k.as_str())),
            "{opts:?}: only known options are acknowledged: {oack:?}"
        );
    }
}

#[test]
fn block_numbers_wrap_past_65535() {
    // Over 32 MiB: at 512 bytes a block the numbers pass 65535.
    let s = Server::start();
    let data = noise(40 * 1024 * 1024 + 1234, 4);
    s.put("big.bin", &data);

    // Windows of 13 do not divide 65536, so one straddles the wrap.
    let got = fetch(
        s.addr,
        "big.bin",
        &[("blksize", "512"), ("windowsize", "13")],
        &Acking::default(),
    );
    assert!(got.wrapped, "block numbers did not wrap");
    same_bytes("windowed, blksize 512", &got.data, &data);

    let got = fetch(s.addr, "big.bin", &[("blksize", "512")], &Acking::default());
    assert!(got.wrapped, "block numbers did not wrap");
    same_bytes("lockstep, blksize 512", &got.data, &data);

    let curl = need("curl", "curl");
    let out = tempfile::tempdir().expect("temp dir");
    let file = out.path().join("big.bin");
    let (code, text) = run(
        Command::new(&curl)
            .args([
                "-s",
                "-S",
                "--max-time",
                "120",
                "--tftp-blksize",
                "512",
                "-o",
            ])
            .arg(&file)
            .arg(format!("tftp://127.0.0.1:{}/big.bin", s.addr.port())),
        Duration::from_secs(150),
    );
    assert_eq!(code, Some(0), "curl: {text}");
    same_bytes("curl, blksize 512", &read_out(&file), &data);
}

#[test]
fn the_uefi_size_probe_is_taken_quietly() {
    // One transfer at a time: a probe that kept its slot would block the next.
    let s = Server::start_with(|c| c.tftp.max_transfers = 1);
    let efi = ipxe_file(IPXE_EFI);

    // UEFI PXE asks for the size, then aborts with error 8 after the OACK.
    let probe = Client::new(s.addr);
    probe.send(&rrq(
        "ipxe-x86_64.efi",
        &[("tsize", "0"), ("blksize", "1468")],
    ));
    let (first, tid) = probe.recv();
    let Pkt::Oack(oack) = first else {
        panic!("wanted an OACK, got {first:?}");
    };
    assert_eq!(opt(&oack, "tsize"), Some(efi.len().to_string().as_str()));
    probe.send_to(tid, &error(8, "User aborted the transfer"));

    // Then it reads the file: from another port ...
    let got = fetch(
        s.addr,
        "ipxe-x86_64.efi",
        &[("blksize", "1468")],
        &Acking::default(),
    );
    same_bytes("after a probe", &got.data, &efi);
    // ... or from the same one.
    probe.send(&rrq("ipxe-x86_64.efi", &[("blksize", "1468")]));
    let got = Transfer::answered(probe)
        .expect("the same port is served again")
        .finish(&Acking::default())
        .expect("read after a probe");
    same_bytes("from the probe's port", &got.data, &efi);

    // The aborted transfer stays quiet: no OACK resent, no error in reply.
    // (The slot of the read before is freed when the server has read its
    // last ACK, which may come after this request: "busy" is retried.)
    let probe = Client::new(s.addr);
    let mut tries = 0;
    let (first, tid) = loop {
        probe.send(&rrq("undionly.kpxe", &[("tsize", "0")]));
        match probe.recv() {
            (Pkt::Error(0, msg), _) if msg.contains("busy") && tries < 50 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            other => break other,
        }
    };
    assert!(matches!(first, Pkt::Oack(_)), "{first:?}");
    probe.send_to(tid, &error(8, "User aborted the transfer"));
    let stray = probe.drain(Duration::from_millis(2500));
    assert!(stray.is_empty(), "after the client's error 8: {stray:?}");
}

#[test]
fn concurrent_transfers_are_capped() {
    let s = Server::start_with(|c| c.tftp.max_transfers = 2);
    let data = noise(10 * 512, 5);
    s.put("f.bin", &data);

    // Two transfers in progress (each has acknowledged), a third refused.
    let a = Transfer::acknowledged(s.addr, "f.bin");
    let b = Transfer::acknowledged(s.addr, "f.bin");
    match Transfer::start(s.addr, "f.bin", &[]) {
        Err(Pkt::Error(_, msg)) => assert!(!msg.is_empty()),
        Err(other) => panic!("{other:?}"),
        Ok(_) => panic!("a third transfer was started with max_transfers = 2"),
    }
    for t in [a, b] {
        let got = t.finish(&Acking::default()).expect("transfer completes");
        same_bytes("capped transfer", &got.data, &data);
    }
    // Once they ended, new transfers are served.
    for _ in 0..3 {
        let got = fetch(s.addr, "f.bin", &[], &Acking::default());
        same_bytes("after the cap", &got.data, &data);
    }

    // A transfer the client abandons by error frees its slot too.
    let a = Transfer::acknowledged(s.addr, "f.bin");
    a.c.send_to(a.tid, &error(0, "going away"));
    let b = Transfer::acknowledged(s.addr, "f.bin");
    // The server frees the slot when it reads the error, which may come a
    // moment after our next request: retry briefly rather than race it.
    let mut c = Transfer::start(s.addr, "f.bin", &[]);
    for _ in 0..100 {
        if c.is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        c = Transfer::start(s.addr, "f.bin", &[]);
    }
    let c = c.expect("the abandoned slot is free");
    for t in [b, c] {
        t.finish(&Acking::default()).expect("transfer completes");
    }

    // Full, with one transfer that never acknowledged: a new request takes
    // its slot over (its client gets an error), the live one goes on. (The
    // transfers above free their slots once the server reads their last
    // ACK: give it a moment.)
    std::thread::sleep(Duration::from_millis(500));
    let live = Transfer::acknowledged(s.addr, "f.bin");
    let silent = Transfer::start(s.addr, "f.bin", &[]).expect("transfer");
    let newer = Transfer::start(s.addr, "f.bin", &[]).expect("the silent slot is taken over");
    let ended = silent
        .c
        .drain(Duration::from_secs(3))
        .into_iter()
        .find(|(p, _)| matches!(p, Pkt::Error(..)));
    assert!(ended.is_some(), "the taken-over client is told");
    for t in [live, newer] {
        let got = t.finish(&Acking::default()).expect("transfer completes");
        same_bytes("beside a take-over", &got.data, &data);
    }
}

#[test]
fn one_client_address_holds_a_bounded_share() {
    let s = Server::start_with(|c| c.tftp.max_transfers_per_client = 3);
    let data = noise(10 * 512, 7);
    s.put("f.bin", &data);
    let held: Vec<Transfer> = (0..3)
        .map(|_| Transfer::acknowledged(s.addr, "f.bin"))
        .collect();
    match Transfer::start(s.addr, "f.bin", &[]) {
        Err(Pkt::Error(0, msg)) => assert!(msg.contains("this address"), "{msg}"),
        Err(other) => panic!("{other:?}"),
        Ok(_) => panic!("a fourth transfer from one address was started"),
    }
    // Another address is served meanwhile.
    let other = Client::bound("127.0.0.2:0", s.addr);
    other.send(&rrq("f.bin", &[]));
    let got = Transfer::answered(other)
        .expect("another address is served")
        .finish(&Acking::default())
        .expect("transfer completes");
    same_bytes("from another address", &got.data, &data);
    for t in held {
        t.finish(&Acking::default()).expect("transfer completes");
    }
}

/// Raises this process's soft limit on open files to the hard limit (the
/// floods below hold a socket per request).
fn raise_fd_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let lim = getrlimit(Resource::Nofile);
    let _ = setrlimit(
        Resource::Nofile,
        rustix::process::Rlimit {
            current: lim.maximum,
            maximum: lim.maximum,
        },
    );
}

#[test]
fn never_acknowledged_requests_do_not_keep_a_real_client_out() {
    raise_fd_limit();
    let curl = need("curl", "curl");
    let want = ipxe_file(IPXE_EFI);
    // The default transfer cap; the server resends after 1 s, 5 times.
    let s = Server::start_with(|c| c.tftp.max_transfers = 1000);
    s.put("ipxe.efi", &want);
    let out = tempfile::tempdir().expect("temp dir");
    // (what, source addresses) for 1,000 requests asking timeout=255 that
    // are never acknowledged: from one address, and spread over 125 so
    // that every transfer slot is held.
    let one: Vec<String> = vec!["127.0.0.2".into()];
    let many: Vec<String> = (0..125).map(|i| format!("127.0.1.{}", i + 1)).collect();
    for (what, addrs) in [("one address", one), ("125 addresses", many)] {
        let flood: Vec<Client> = (0..1000)
            .map(|i| Client::bound(&format!("{}:0", addrs[i % addrs.len()]), s.addr))
            .collect();
        for c in &flood {
            c.send(&rrq("ipxe.efi", &[("timeout", "255")]));
        }
        // Some of them were answered, none with the timeout they asked.
        let (first, _) = flood[flood.len() - 1].recv();
        if let Pkt::Oack(o) = &first {
            assert_eq!(opt(o, "timeout"), None, "{what}: timeout=255 granted");
        }
        let file = out.path().join("ipxe.efi");
        let _ = std::fs::remove_file(&file);
        let (code, text) = run(
            Command::new(&curl)
                .args([
                    "-s",
                    "-S",
                    "--max-time",
                    "10",
                    "--tftp-blksize",
                    "1468",
                    "-o",
                ])
                .arg(&file)
                .arg(format!("tftp://127.0.0.1:{}/ipxe.efi", s.addr.port())),
            Duration::from_secs(20),
        );
        assert_eq!(code, Some(0), "{what}: curl during the flood: {text}");
        same_bytes(&format!("{what}: ipxe.efi"), &read_out(&file), &want);
        // Let the flood's transfers run out (1 s timeout, 5 resends).
        drop(flood);
        std::thread::sleep(Duration::from_secs(7));
    }
}

#[test]
fn malformed_packets_are_refused_or_ignored() {
    let s = Server::start();
    let data = noise(3000, 6);
    s.put("f.bin", &data);
    let before = s.listing();
    let generation = s.harness().generation();

    // What each gets: an error packet with this code, or (None) nothing.
    // Requests that cannot be parsed are refused with error 4 (8 for a
    // broken option list); packets that are not requests are ignored.
    let long_name = "a".repeat(3000);
    let garbage: Vec<(&str, Vec<u8>, Option<u16>)> = vec![
        ("empty", vec![], None),
        ("one byte", vec![0], None),
        ("opcode only", RRQ.to_be_bytes().to_vec(), Some(4)),
        ("unknown opcode 0", request(0, "f.bin", "octet", &[]), None),
        ("unknown opcode 9", request(9, "f.bin", "octet", &[]), None),
        (
            "unknown opcode 0xffff",
            request(0xffff, "f.bin", "octet", &[]),
            None,
        ),
        ("RRQ without NULs", b"\x00\x01f.binoctet".to_vec(), Some(4)),
        ("RRQ without mode", b"\x00\x01f.bin\x00".to_vec(), Some(4)),
        (
            "RRQ mode unterminated",
            b"\x00\x01f.bin\x00octet".to_vec(),
            Some(4),
        ),
        (
            "RRQ mode bogus",
            request(RRQ, "f.bin", "binary", &[]),
            Some(4),
        ),
        ("RRQ mode mail", request(RRQ, "f.bin", "mail", &[]), Some(4)),
        ("RRQ mode empty", request(RRQ, "f.bin", "", &[]), Some(4)),
        (
            "RRQ option without value",
            b"\x00\x01f.bin\x00octet\x00blksize\x00".to_vec(),
            Some(8),
        ),
        (
            "RRQ option value unterminated",
            b"\x00\x01f.bin\x00octet\x00blksize\x001024".to_vec(),
            Some(4),
        ),
        (
            "RRQ name not UTF-8",
            b"\x00\x01f\xff\xfe.bin\x00octet\x00".to_vec(),
            Some(1),
        ),
        (
            "RRQ name too long",
            rrq(&long_name, &[("blksize", "1468")]),
            Some(1),
        ),
        (
            "RRQ jumbo",
            {
                let mut p = rrq("f.bin", &[]);
                p.resize(9000, b'x');
                p
            },
            Some(4),
        ),
        (
            "DATA to the server port",
            {
                let mut p = DATA.to_be_bytes().to_vec();
                p.extend_from_slice(&[0, 1, 1, 2, 3]);
                p
            },
            None,
        ),
        ("ACK to the server port", ack(1), None),
        ("ACK truncated", vec![0, 4, 0], None),
        (
            "ERROR to the server port",
            error(8, "nothing to abort"),
            None,
        ),
        (
            "OACK to the server port",
            {
                let mut p = OACK.to_be_bytes().to_vec();
                p.extend_from_slice(b"blksize\x001024\x00");
                p
            },
            None,
        ),
        (
            "WRQ escaping the root",
            request(WRQ, "../x", "octet", &[]),
            Some(2),
        ),
        (
            "WRQ netascii",
            request(WRQ, "f.bin", "netascii", &[]),
            Some(2),
        ),
    ];

    let clients: Vec<(&str, Client, Option<u16>)> = garbage
        .into_iter()
        .map(|(what, bytes, want)| {
            let c = Client::new(s.addr);
            c.send(&bytes);
            (what, c, want)
        })
        .collect();

    // The server keeps serving.
    let got = fetch(s.addr, "f.bin", &[("blksize", "1024")], &Acking::default());
    same_bytes("after the garbage", &got.data, &data);

    for (what, c, want) in &clients {
        let got: Vec<Pkt> = c
            .drain(Duration::from_millis(150))
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        match want {
            None => assert!(got.is_empty(), "{what}: answered with {got:?}"),
            Some(code) => assert!(
                matches!(got.as_slice(), [Pkt::Error(c, _)] if c == code),
                "{what}: wanted one error {code}, got {got:?}"
            ),
        }
    }
    assert_eq!(s.listing(), before, "the root changed");
    assert_eq!(
        s.harness().generation(),
        generation,
        "the inventory changed"
    );
}

#[test]
fn unanswered_transfers_end_with_an_error() {
    // Two resends (1 s apart), then an error packet; the slot is freed.
    let s = Server::start_with(|c| {
        c.tftp.retries = 2;
        c.tftp.max_transfers = 1;
    });
    let data = noise(2000, 8);
    s.put("f.bin", &data);
    let t = Transfer::start(s.addr, "f.bin", &[]).expect("transfer");
    assert!(matches!(t.first, Pkt::Data(1, _)), "{:?}", t.first);
    let mut resent = 0;
    loop {
        match t.c.recv().0 {
            Pkt::Data(1, _) => resent += 1,
            Pkt::Error(_, msg) => {
                assert!(!msg.is_empty());
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(resent, 2, "resends before giving up");
    let got = fetch(s.addr, "f.bin", &[], &Acking::default());
    same_bytes("after an abandoned transfer", &got.data, &data);
}

#[test]
fn transfer_ids_are_checked() {
    // Packets from another port do not disturb a transfer (RFC 1350 §4).
    let s = Server::start();
    let data = noise(20 * 512, 7);
    s.put("f.bin", &data);
    let t = Transfer::start(s.addr, "f.bin", &[]).expect("transfer");
    let intruder = Client::new(s.addr);
    intruder.send_to(t.tid, &ack(1));
    intruder.send_to(t.tid, &error(0, "stop"));
    intruder.send_to(t.tid, &[0xde, 0xad]);
    let got = t
        .finish(&Acking::default())
        .expect("the transfer completes");
    same_bytes("with an intruder", &got.data, &data);
    for (p, _) in intruder.drain(Duration::from_millis(300)) {
        // An error 5 (unknown transfer ID) is allowed, data is not.
        assert!(matches!(p, Pkt::Error(..)), "the intruder got {p:?}");
    }
}
