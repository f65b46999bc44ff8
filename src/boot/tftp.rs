//! TFTP for firmware: iPXE binaries and a per-client `autoexec.ipxe`.
//!
//! Read-only. A write request or a path leaving the root is an access
//! violation (TFTP error 2), a missing file error 1. This module decides what
//! a request gets — a file from the root, an iPXE binary from the
//! distribution's package, a generated script, or an error — and runs the
//! transfers: RFC 1350 (octet and netascii), RFC 2347 option negotiation,
//! RFC 2348 `blksize`, RFC 2349 `timeout` and `tsize`, RFC 7440
//! `windowsize`; block numbers wrap past 65535 to 0.
//!
//! One receive loop on the listening socket; each transfer is a task with a
//! socket of its own, connected to the client, so the kernel drops strays
//! and reports a client that went away. A client's error packet ends its
//! transfer at once (UEFI PXE asks for `tsize`, then aborts with error 8).
//! Files up to [`MEMORY_LIMIT`] are read once and shared by every transfer
//! of them; larger ones are read in chunks as the transfer goes.
//!
//! A read request costs a transfer slot, a socket and a task, so what a
//! client may ask for is bounded (the limits are `[tftp]` settings):
//! `blksize` is lowered to `max_block_size`, `windowsize` to
//! `max_window_size` and further so a window stays within [`WINDOW_BYTES`];
//! a `timeout` above `max_client_timeout_secs` is left out of the OACK (RFC
//! 2349 lets the server only take or refuse it) and the server's own
//! `timeout_secs` applies; `tsize` in a read request is answered with the
//! file's size whatever number it carries. One client address holds at most
//! `max_transfers_per_client` transfers. When every slot is taken, a new
//! request takes over the oldest transfer whose client has not acknowledged
//! anything yet (a real client answers within a round trip; one that never
//! does is a lost packet or a flood), so requests that never ACK cannot keep
//! a booting node out.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::net::UdpSocket;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::steps::{self, BootSteps, Step};
use crate::inventory::Store;

/// Boot file names and where distributions install them (RHEL family first,
/// then Debian family).
pub const PACKAGE_PATHS: &[(&str, &[&str])] = &[
    (
        "undionly.kpxe",
        &[
            "/usr/share/ipxe/undionly.kpxe",
            "/usr/lib/ipxe/undionly.kpxe",
        ],
    ),
    (
        "ipxe-x86_64.efi",
        &["/usr/share/ipxe/ipxe-x86_64.efi", "/usr/lib/ipxe/ipxe.efi"],
    ),
    (
        "snponly-x86_64.efi",
        &[
            "/usr/share/ipxe/ipxe-snponly-x86_64.efi",
            "/usr/lib/ipxe/snponly.efi",
        ],
    ),
    ("ipxe-arm64.efi", &["/usr/share/ipxe/arm64-efi/ipxe.efi"]),
    ("ipxe-i386.efi", &[]),
    ("ipxe-arm32.efi", &[]),
];

/// The name answered with a generated script.
pub const AUTOEXEC: &str = "autoexec.ipxe";

/// Files up to this size are held in memory, once, while in use; larger
/// ones are read in chunks.
pub const MEMORY_LIMIT: u64 = 16 << 20;

/// Files up to this size stay in memory after their transfers end.
const KEEP_LIMIT: u64 = 4 << 20;

/// Bytes read at a time from a file larger than [`MEMORY_LIMIT`].
const CHUNK: usize = 1 << 20;

/// Most bytes one window of a transfer holds (`windowsize` × `blksize`).
pub const WINDOW_BYTES: usize = 1 << 20;

/// What a read request gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    File(PathBuf),
    Generated(Vec<u8>),
    /// Error 1.
    NotFound,
    /// Error 2: the path leaves the root.
    Denied,
}

/// The script iPXE runs on its own when it finds `autoexec.ipxe`: chain to
/// this node's boot script. With no MAC known for the client, iPXE fills in
/// the MAC of the interface it booted from.
pub fn autoexec(node_base: &str, mac: Option<&str>) -> String {
    let mac = mac.unwrap_or("${netX/mac}");
    format!("#!ipxe\nchain {node_base}/boot/v1/bootscript?mac={mac} || reboot\n")
}

/// A request path made relative to the root, or `None` if it would leave it.
pub fn clean_path(requested: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in requested.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    if out.as_os_str().is_empty() {
        None
    } else {
        Some(out)
    }
}

/// Decides what `requested` is, given the root and the package fallbacks.
pub fn resolve(
    requested: &Path,
    root: &Path,
    fallbacks: &[(String, PathBuf)],
    autoexec_for: impl FnOnce() -> String,
) -> Resolved {
    let Some(rel) = clean_path(requested) else {
        return Resolved::Denied;
    };
    let in_root = root.join(&rel);
    if in_root.is_file() {
        // A symlink inside the root may still point outside it.
        return match (in_root.canonicalize(), root.canonicalize()) {
            (Ok(f), Ok(r)) if f.starts_with(&r) => Resolved::File(f),
            _ => Resolved::Denied,
        };
    }
    let name = rel.to_string_lossy();
    if name == AUTOEXEC {
        return Resolved::Generated(autoexec_for().into_bytes());
    }
    match fallbacks.iter().find(|(n, _)| *n == name) {
        Some((_, p)) => Resolved::File(p.clone()),
        None => Resolved::NotFound,
    }
}

/// The package files that stand in for boot files missing from the root.
/// Logs each name that neither provides.
pub fn find_fallbacks(root: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for (name, candidates) in PACKAGE_PATHS {
        if root.join(name).is_file() {
            continue;
        }
        match candidates.iter().map(PathBuf::from).find(|p| p.is_file()) {
            Some(p) => {
                tracing::info!(name, path = %p.display(), "tftp: serving boot file from the iPXE package");
                out.push((name.to_string(), p));
            }
            None => tracing::warn!(
                name,
                root = %root.display(),
                "tftp: boot file missing; firmware that needs it gets none (install the iPXE package or put it in the root)"
            ),
        }
    }
    out
}

/// Settings the server runs with.
#[derive(Debug, Clone)]
pub struct TftpSettings {
    pub root: PathBuf,
    /// `autoexec.ipxe` chains to this, at the address the client reached.
    pub node_base: super::base::NodeBase,
    pub max_transfers: usize,
    pub max_block_size: u16,
    pub max_window_size: u16,
    pub timeout: Duration,
    pub retries: u32,
    /// Largest `timeout` option granted; larger ones are left out.
    pub max_client_timeout: u8,
    /// Transfers one client address may hold at once.
    pub max_transfers_per_client: usize,
}

/// Called with the reason of every refusal, take-over and clamped option,
/// so the caller can count them.
pub type Count = Arc<dyn Fn(&'static str) + Send + Sync>;

// ------------------------------------------------------------------ packets

const RRQ: u16 = 1;
const WRQ: u16 = 2;
const DATA: u16 = 3;
const ACK: u16 = 4;
const ERROR: u16 = 5;
const OACK: u16 = 6;

/// TFTP error codes (RFC 1350, RFC 2347).
pub mod code {
    pub const UNDEFINED: u16 = 0;
    pub const NOT_FOUND: u16 = 1;
    pub const ACCESS: u16 = 2;
    pub const ILLEGAL: u16 = 4;
    pub const OPTIONS: u16 = 8;
}

/// Options of a read request that the server understands; the others are
/// ignored, as are values out of range (RFC 2347: the server leaves out of
/// its OACK what it does not grant).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// 8–65464 (RFC 2348).
    pub blksize: Option<u16>,
    /// Seconds, 1–255 (RFC 2349).
    pub timeout: Option<u8>,
    /// The client asks for the size (RFC 2349).
    pub tsize: bool,
    /// 1–65535 (RFC 7440).
    pub windowsize: Option<u16>,
}

/// A read request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRequest {
    pub file: String,
    pub netascii: bool,
    pub options: Options,
}

/// What arrived on the listening socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    Read(ReadRequest),
    Write(String),
    /// A request that cannot be served: answered with this error.
    Refused(u16, &'static str),
    /// Not a request (data, ACK, error, OACK, unknown opcode, runt): ignored.
    Ignored,
}

/// Parses a packet sent to the listening port.
pub fn parse_request(b: &[u8]) -> Incoming {
    if b.len() < 2 {
        return Incoming::Ignored;
    }
    let op = u16::from_be_bytes([b[0], b[1]]);
    if op != RRQ && op != WRQ {
        return Incoming::Ignored;
    }
    let body = &b[2..];
    if body.last() != Some(&0) {
        return Incoming::Refused(code::ILLEGAL, "request not NUL-terminated");
    }
    let mut fields: Vec<&[u8]> = body[..body.len() - 1].split(|c| *c == 0).collect();
    // Some PXE ROMs pad the request with NULs: an odd empty field at the
    // end is padding (pairs of them read as an option with no name, which
    // is ignored). An option may have an empty value (RFC 2090 multicast).
    if fields.len() > 2
        && !fields.len().is_multiple_of(2)
        && fields.last().is_some_and(|f| f.is_empty())
    {
        fields.pop();
    }
    if fields.len() < 2 {
        return Incoming::Refused(code::ILLEGAL, "request without a transfer mode");
    }
    if !fields.len().is_multiple_of(2) {
        return Incoming::Refused(code::OPTIONS, "option without a value");
    }
    let Ok(file) = std::str::from_utf8(fields[0]) else {
        return Incoming::Refused(code::NOT_FOUND, "file name is not UTF-8");
    };
    let mode = String::from_utf8_lossy(fields[1]).to_ascii_lowercase();
    let netascii = match mode.as_str() {
        "octet" => false,
        "netascii" => true,
        "mail" => return Incoming::Refused(code::ILLEGAL, "mail mode is not supported"),
        _ => return Incoming::Refused(code::ILLEGAL, "unknown transfer mode"),
    };
    if op == WRQ {
        return Incoming::Write(file.to_string());
    }
    let mut options = Options::default();
    for kv in fields[2..].chunks(2) {
        let name = String::from_utf8_lossy(kv[0]).to_ascii_lowercase();
        let value = std::str::from_utf8(kv[1]).unwrap_or("").trim();
        match name.as_str() {
            "blksize" => {
                options.blksize = options.blksize.or(value
                    .parse::<u16>()
                    .ok()
                    .filter(|v| (8..=65464).contains(v)))
            }
            "timeout" => {
                options.timeout = options
                    .timeout
                    .or(value.parse::<u8>().ok().filter(|v| *v >= 1))
            }
            "tsize" => options.tsize |= value.parse::<u64>().is_ok(),
            "windowsize" => {
                options.windowsize = options
                    .windowsize
                    .or(value.parse::<u16>().ok().filter(|v| *v >= 1))
            }
            _ => {}
        }
    }
    Incoming::Read(ReadRequest {
        file: file.to_string(),
        netascii,
        options,
    })
}

fn error_packet(code: u16, msg: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(5 + msg.len());
    p.extend_from_slice(&ERROR.to_be_bytes());
    p.extend_from_slice(&code.to_be_bytes());
    p.extend_from_slice(msg.as_bytes());
    p.push(0);
    p
}

/// What a client sends during a transfer.
enum Reply {
    Ack(u16),
    Error(u16, String),
    Other,
}

fn parse_reply(b: &[u8]) -> Reply {
    if b.len() < 4 {
        return Reply::Other;
    }
    let n = u16::from_be_bytes([b[2], b[3]]);
    match u16::from_be_bytes([b[0], b[1]]) {
        ACK => Reply::Ack(n),
        ERROR => Reply::Error(
            n,
            String::from_utf8_lossy(&b[4..])
                .trim_end_matches('\0')
                .to_string(),
        ),
        _ => Reply::Other,
    }
}

/// What the server grants for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    pub blksize: usize,
    pub window: u16,
    pub timeout: Duration,
    /// The OACK to send first, if any option was granted.
    pub oack: Option<Vec<u8>>,
    /// Options granted lower than asked, or refused, by the limits.
    pub clamped: Vec<&'static str>,
}

/// Grants what the request asks within the settings' limits.
pub fn negotiate(o: &Options, size: u64, s: &TftpSettings) -> Negotiated {
    let mut oack = OACK.to_be_bytes().to_vec();
    let mut clamped = Vec::new();
    let mut put = |k: &str, v: String| {
        oack.extend_from_slice(k.as_bytes());
        oack.push(0);
        oack.extend_from_slice(v.as_bytes());
        oack.push(0);
    };
    let max_block = s.max_block_size.max(8);
    let blksize = o.blksize.map(|b| b.min(max_block));
    if o.blksize.is_some_and(|b| b > max_block) {
        clamped.push("blksize");
    }
    if let Some(b) = blksize {
        put("blksize", b.to_string());
    }
    let timeout = o.timeout.filter(|t| *t <= s.max_client_timeout);
    if o.timeout.is_some() && timeout.is_none() {
        clamped.push("timeout");
    }
    if let Some(t) = timeout {
        put("timeout", t.to_string());
    }
    if o.tsize {
        put("tsize", size.to_string());
    }
    let block = usize::from(blksize.unwrap_or(512));
    let max_window = s
        .max_window_size
        .max(1)
        .min(u16::try_from((WINDOW_BYTES / block).max(1)).unwrap_or(u16::MAX));
    let window = o.windowsize.map(|w| w.min(max_window));
    if o.windowsize.is_some_and(|w| w > max_window) {
        clamped.push("windowsize");
    }
    if let Some(w) = window {
        put("windowsize", w.to_string());
    }
    Negotiated {
        blksize: block,
        window: window.unwrap_or(1),
        timeout: timeout
            .map(|t| Duration::from_secs(u64::from(t)))
            .unwrap_or(s.timeout),
        oack: (oack.len() > 2).then_some(oack),
        clamped,
    }
}

/// LF → CR LF, CR → CR NUL (RFC 1350 netascii).
pub fn to_netascii(d: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(d.len() + d.len() / 16);
    for &b in d {
        match b {
            b'\n' => out.extend_from_slice(b"\r\n"),
            b'\r' => out.extend_from_slice(b"\r\0"),
            _ => out.push(b),
        }
    }
    out
}

// ------------------------------------------------------------------- server

/// Runs the server on `socket` until it fails; the caller cancels it by
/// dropping the future, which also ends every transfer.
pub async fn serve(
    socket: std::net::UdpSocket,
    settings: TftpSettings,
    store: Store,
    steps: Arc<BootSteps>,
    metrics: Arc<crate::metrics::Metrics>,
    count: Count,
) -> io::Result<()> {
    let local_ip = socket.local_addr()?.ip();
    socket.set_nonblocking(true)?;
    let socket = UdpSocket::from_std(socket)?;
    let fallbacks = find_fallbacks(&settings.root);
    let stop = CancellationToken::new();
    let _stop_transfers = stop.clone().drop_guard();
    let server = Arc::new(Server {
        settings,
        fallbacks,
        store,
        steps,
        metrics,
        local_ip,
        slots: Mutex::new(Slots::default()),
        count,
        peers: Mutex::new(HashSet::new()),
        cache: Mutex::new(HashMap::new()),
    });
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) if transient(&e) => continue,
            Err(e) => return Err(e),
        };
        match parse_request(&buf[..n]) {
            Incoming::Read(req) => {
                let snap = server.store.snapshot();
                let now_ms = chrono::Utc::now().timestamp_millis();
                let who = steps::caller(&snap, None, Some(peer.ip()), now_ms / 1000);
                server.steps.record(&who, Step::Tftp, &req.file, now_ms);
                // A client resending its request while the first is being
                // served must not start a second transfer.
                if !lock(&server.peers).insert(peer) {
                    continue;
                }
                let server = server.clone();
                let stop = stop.clone();
                let id = NEXT_TRANSFER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let span = tracing::info_span!("tftp", id = format_args!("t{id:x}"));
                tokio::spawn(
                    async move {
                        let _peer = PeerGuard(&server, peer);
                        let started = std::time::Instant::now();
                        let file = req.file.clone();
                        let outcome = tokio::select! {
                            _ = stop.cancelled() => "stopped",
                            o = server.read(peer, req) => o,
                        };
                        server.account(peer, &file, outcome, started.elapsed());
                    }
                    .instrument(span),
                );
            }
            Incoming::Write(file) => {
                tracing::info!(client = %peer, path = %file, "tftp: refused a write request");
                let _ = socket
                    .send_to(&error_packet(code::ACCESS, "read-only server"), peer)
                    .await;
            }
            Incoming::Refused(code, msg) => {
                tracing::debug!(client = %peer, msg, "tftp: refused a malformed request");
                let _ = socket.send_to(&error_packet(code, msg), peer).await;
            }
            Incoming::Ignored => {}
        }
    }
}

/// Errors of a UDP receive that say nothing about the socket itself.
fn transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct Server {
    settings: TftpSettings,
    fallbacks: Vec<(String, PathBuf)>,
    store: Store,
    /// Where each node got to in its boot; every read request is a step.
    steps: Arc<BootSteps>,
    metrics: Arc<crate::metrics::Metrics>,
    local_ip: IpAddr,
    slots: Mutex<Slots>,
    count: Count,
    /// Clients with a transfer in progress.
    peers: Mutex<HashSet<SocketAddr>>,
    /// Files held in memory, by path.
    cache: Mutex<HashMap<PathBuf, Cached>>,
}

/// A file's content, read once by whichever transfer comes first.
#[derive(Clone)]
struct Cached {
    len: u64,
    modified: Option<SystemTime>,
    data: Arc<OnceCell<Arc<[u8]>>>,
}

/// The inventory MAC of the interface holding the client's address, else
/// the MAC of its DHCP lease (a pool address).
fn mac_of(store: &Store, ip: IpAddr) -> Option<String> {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    let snap = store.snapshot();
    snap.interfaces_with_ip(ip)
        .first()
        .map(|i| i.mac_address.clone())
        .or_else(|| snap.leases.get(&ip).map(|l| l.mac.clone()))
}

impl Cached {
    /// Being read, or held by a transfer.
    fn in_use(&self) -> bool {
        self.data.get().is_none_or(|d| Arc::strong_count(d) > 1)
    }
}

/// Removes the client from the transfers in progress.
struct PeerGuard<'a>(&'a Server, SocketAddr);

impl Drop for PeerGuard<'_> {
    fn drop(&mut self) {
        lock(&self.0.peers).remove(&self.1);
    }
}

/// The transfers holding slots, oldest first.
#[derive(Default)]
struct Slots {
    held: std::collections::BTreeMap<u64, Held>,
    per_client: HashMap<IpAddr, usize>,
    next: u64,
}

struct Held {
    client: IpAddr,
    /// The client has acknowledged something: not taken over.
    acked: bool,
    /// Cancelled when a new request takes the slot over.
    taken: CancellationToken,
}

impl Slots {
    fn release(&mut self, id: u64) {
        if let Some(h) = self.held.remove(&id)
            && let Some(n) = self.per_client.get_mut(&h.client)
        {
            *n -= 1;
            if *n == 0 {
                self.per_client.remove(&h.client);
            }
        }
    }
}

/// Why a request got no slot.
enum NoSlot {
    PerClient,
    Busy,
}

/// Holds one of the `max_transfers` slots until dropped.
struct Slot<'a> {
    server: &'a Server,
    id: u64,
    acked: std::sync::atomic::AtomicBool,
    taken: CancellationToken,
}

impl Slot<'_> {
    /// The client acknowledged a packet: its slot is no longer taken over.
    fn acked(&self) {
        if !self.acked.swap(true, std::sync::atomic::Ordering::Relaxed)
            && let Some(h) = lock(&self.server.slots).held.get_mut(&self.id)
        {
            h.acked = true;
        }
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        lock(&self.server.slots).release(self.id);
    }
}

/// The bytes a transfer sends.
enum Source {
    Memory(Arc<[u8]>),
    File {
        file: Arc<std::fs::File>,
        len: u64,
        /// Bytes from `at`.
        buf: Vec<u8>,
        at: u64,
    },
}

impl Source {
    fn len(&self) -> u64 {
        match self {
            Source::Memory(d) => d.len() as u64,
            Source::File { len, .. } => *len,
        }
    }

    /// Bytes `offset..offset + want`, cut at the end.
    async fn range(&mut self, offset: u64, want: usize) -> io::Result<&[u8]> {
        let end = (offset + want as u64).min(self.len());
        let offset = offset.min(end);
        match self {
            Source::Memory(d) => Ok(&d[offset as usize..end as usize]),
            Source::File { file, len, buf, at } => {
                if offset < *at || end > *at + buf.len() as u64 {
                    let file = file.clone();
                    let n = (want.max(CHUNK) as u64).min(*len - offset) as usize;
                    let fresh = tokio::task::spawn_blocking(move || {
                        use std::os::unix::fs::FileExt;
                        let mut b = vec![0u8; n];
                        file.read_exact_at(&mut b, offset)?;
                        Ok::<_, io::Error>(b)
                    })
                    .await
                    .map_err(io::Error::other)??;
                    *buf = fresh;
                    *at = offset;
                }
                Ok(&buf[(offset - *at) as usize..(end - *at) as usize])
            }
        }
    }
}

/// How a transfer ended, other than complete.
#[derive(Debug)]
enum End {
    /// The client sent an error packet (e.g. 8 after a size probe).
    ClientError(u16, String),
    /// The client's port is closed.
    ClientGone,
    /// No ACK after every resend.
    TimedOut,
    /// Nothing acknowledged yet, and a newer request needed the slot.
    TakenOver,
    Io(io::Error),
}

impl From<io::Error> for End {
    fn from(e: io::Error) -> End {
        if e.kind() == io::ErrorKind::ConnectionRefused {
            End::ClientGone
        } else {
            End::Io(e)
        }
    }
}

/// Transfer IDs for spans: unique within a process.
static NEXT_TRANSFER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl Server {
    /// The access line, counter and duration of one finished transfer.
    fn account(&self, peer: SocketAddr, file: &str, outcome: &str, took: Duration) {
        self.metrics.add(
            "openchami_tftp_transfers_total",
            "TFTP read requests by outcome.",
            &[("outcome", outcome)],
            1,
        );
        self.metrics.observe(
            "openchami_tftp_transfer_duration_seconds",
            "Time from read request to the transfer's end, by outcome.",
            &[("outcome", outcome)],
            took,
        );
        if crate::logging::access_allowed(crate::logging::Access::Tftp) {
            tracing::info!(
                client = %peer,
                path = file,
                outcome,
                ms = took.as_secs_f64() * 1000.0,
                "tftp transfer"
            );
        }
    }

    /// Serves one read request, start to end; says how it ended.
    async fn read(&self, peer: SocketAddr, req: ReadRequest) -> &'static str {
        let sock = match self.transfer_socket(peer) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(client = %peer, error = %e, "tftp: cannot open a transfer socket");
                return "error";
            }
        };
        // Errors are sent once and never acknowledged (RFC 1350).
        let refuse = async |code: u16, msg: &str| {
            let _ = sock.send(&error_packet(code, msg)).await;
        };
        // The transfer socket is connected to the client: its local address
        // is ours facing the client, where `autoexec.ipxe` sends it.
        let local = sock.local_addr().map_or(self.local_ip, |a| a.ip());
        let resolved = match self.resolve(peer, local, &req.file).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(client = %peer, error = %e, "tftp: cannot resolve a request");
                refuse(code::UNDEFINED, "server error").await;
                return "error";
            }
        };
        let slot = match resolved {
            Resolved::NotFound => {
                tracing::debug!(client = %peer, path = %req.file, "tftp: no such file");
                refuse(code::NOT_FOUND, "file not found").await;
                return "not_found";
            }
            Resolved::Denied => {
                tracing::info!(client = %peer, path = %req.file, "tftp: refused a path outside the root");
                refuse(code::ACCESS, "access violation").await;
                return "denied";
            }
            _ => match self.slot(peer.ip()) {
                Ok(s) => s,
                Err(NoSlot::PerClient) => {
                    (self.count)("per_client");
                    tracing::info!(client = %peer, "tftp: too many transfers for this client; refusing");
                    refuse(code::UNDEFINED, "too many transfers from this address").await;
                    return "per_client";
                }
                Err(NoSlot::Busy) => {
                    (self.count)("busy");
                    tracing::warn!(client = %peer, "tftp: too many transfers in progress; refusing");
                    refuse(code::UNDEFINED, "server busy, try again").await;
                    return "busy";
                }
            },
        };
        let mut source = match self.load(resolved, req.netascii).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(client = %peer, path = %req.file, error = %e, "tftp: cannot read file");
                refuse(code::NOT_FOUND, "cannot read file").await;
                return "error";
            }
        };
        let n = negotiate(&req.options, source.len(), &self.settings);
        for option in &n.clamped {
            (self.count)(option);
        }
        let r = tokio::select! {
            r = self.send_file(&sock, &mut source, &n, &slot) => r,
            _ = slot.taken.cancelled() => Err(End::TakenOver),
        };
        drop(slot);
        match r {
            Ok(()) => {
                tracing::debug!(client = %peer, path = %req.file, bytes = source.len(), "tftp: sent");
                "sent"
            }
            Err(End::ClientError(c, msg)) => {
                tracing::debug!(client = %peer, path = %req.file, code = c, msg, "tftp: the client ended the transfer");
                "client_error"
            }
            Err(End::ClientGone) => {
                tracing::debug!(client = %peer, path = %req.file, "tftp: the client went away");
                "client_gone"
            }
            Err(End::TakenOver) => {
                tracing::info!(client = %peer, path = %req.file, "tftp: nothing acknowledged and the server is full; slot given to a newer request");
                refuse(code::UNDEFINED, "server busy, try again").await;
                "taken_over"
            }
            Err(End::TimedOut) => {
                tracing::info!(client = %peer, path = %req.file, "tftp: no ACK after every resend; abandoned");
                refuse(code::UNDEFINED, "timed out").await;
                "timed_out"
            }
            Err(End::Io(e)) => {
                tracing::warn!(client = %peer, path = %req.file, error = %e, "tftp: transfer failed");
                refuse(code::UNDEFINED, "server error").await;
                "error"
            }
        }
    }

    fn transfer_socket(&self, peer: SocketAddr) -> io::Result<UdpSocket> {
        let s = std::net::UdpSocket::bind(SocketAddr::new(self.local_ip, 0))?;
        s.connect(peer)?;
        s.set_nonblocking(true)?;
        UdpSocket::from_std(s)
    }

    /// A slot for a transfer to `client`: free, or taken over from the
    /// oldest transfer that has had no acknowledgement.
    fn slot(&self, client: IpAddr) -> Result<Slot<'_>, NoSlot> {
        let mut slots = lock(&self.slots);
        if slots.per_client.get(&client).copied().unwrap_or(0)
            >= self.settings.max_transfers_per_client
        {
            return Err(NoSlot::PerClient);
        }
        if slots.held.len() >= self.settings.max_transfers {
            let oldest = slots
                .held
                .iter()
                .find(|(_, h)| !h.acked)
                .map(|(id, h)| (*id, h.taken.clone()));
            let Some((id, taken)) = oldest else {
                return Err(NoSlot::Busy);
            };
            taken.cancel();
            slots.release(id);
            (self.count)("taken_over");
        }
        let id = slots.next;
        slots.next += 1;
        let taken = CancellationToken::new();
        slots.held.insert(
            id,
            Held {
                client,
                acked: false,
                taken: taken.clone(),
            },
        );
        *slots.per_client.entry(client).or_insert(0) += 1;
        Ok(Slot {
            server: self,
            id,
            acked: std::sync::atomic::AtomicBool::new(false),
            taken,
        })
    }

    /// [`resolve`], off the event loop (it touches the file system).
    async fn resolve(&self, peer: SocketAddr, local: IpAddr, file: &str) -> io::Result<Resolved> {
        let file = PathBuf::from(file);
        let root = self.settings.root.clone();
        let fallbacks = self.fallbacks.clone();
        let node_base = self.settings.node_base.for_local(local);
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            resolve(&file, &root, &fallbacks, || {
                autoexec(&node_base, mac_of(&store, peer.ip()).as_deref())
            })
        })
        .await
        .map_err(io::Error::other)
    }

    /// The bytes to send for a resolved request.
    async fn load(&self, r: Resolved, netascii: bool) -> io::Result<Source> {
        let source = match r {
            Resolved::Generated(b) => Source::Memory(b.into()),
            Resolved::File(path) => {
                let p = path.clone();
                let (file, len, modified) = tokio::task::spawn_blocking(move || {
                    let f = std::fs::File::open(&p)?;
                    let m = f.metadata()?;
                    Ok::<_, io::Error>((f, m.len(), m.modified().ok()))
                })
                .await
                .map_err(io::Error::other)??;
                if len > MEMORY_LIMIT && !netascii {
                    Source::File {
                        file: Arc::new(file),
                        len,
                        buf: Vec::new(),
                        at: 0,
                    }
                } else {
                    Source::Memory(self.cached(path, file, len, modified).await?)
                }
            }
            Resolved::NotFound | Resolved::Denied => {
                return Err(io::Error::from(io::ErrorKind::NotFound));
            }
        };
        Ok(match source {
            Source::Memory(d) if netascii => Source::Memory(to_netascii(&d).into()),
            s => s,
        })
    }

    /// The file's content, read once while it is unchanged.
    async fn cached(
        &self,
        path: PathBuf,
        file: std::fs::File,
        len: u64,
        modified: Option<SystemTime>,
    ) -> io::Result<Arc<[u8]>> {
        let entry = {
            let mut cache = lock(&self.cache);
            let fresh = cache
                .get(&path)
                .is_some_and(|c| c.len == len && c.modified == modified);
            if !fresh {
                // Keep small files, and large ones only while in use.
                cache.retain(|_, c| c.len <= KEEP_LIMIT || c.in_use());
                cache.insert(
                    path.clone(),
                    Cached {
                        len,
                        modified,
                        data: Arc::new(OnceCell::new()),
                    },
                );
            }
            cache[&path].clone()
        };
        let data = entry
            .data
            .get_or_try_init(|| async move {
                tokio::task::spawn_blocking(move || {
                    use std::io::Read;
                    let mut b = Vec::with_capacity(len as usize);
                    file.take(len).read_to_end(&mut b)?;
                    Ok::<_, io::Error>(Arc::<[u8]>::from(b))
                })
                .await
                .map_err(io::Error::other)?
            })
            .await?;
        Ok(data.clone())
    }

    /// Sends the OACK (if any) and the data, window by window.
    async fn send_file(
        &self,
        sock: &UdpSocket,
        source: &mut Source,
        n: &Negotiated,
        slot: &Slot<'_>,
    ) -> Result<(), End> {
        let mut window: VecDeque<Vec<u8>> = VecDeque::new();
        if let Some(oack) = &n.oack {
            window.push_back(oack.clone());
            self.exchange(sock, &window, 0, n.timeout, slot).await?;
            window.clear();
        }
        let blksize = n.blksize as u64;
        // Blocks 1..=last; the last is shorter than blksize, maybe empty.
        let last = source.len() / blksize + 1;
        let mut base = 1u64; // first block not yet acknowledged
        let mut next = 1u64; // first block not yet in the window
        while base <= last {
            let end = (base + u64::from(n.window)).min(last + 1);
            if next < end {
                let bytes = source
                    .range((next - 1) * blksize, ((end - next) * blksize) as usize)
                    .await?;
                let mut chunks = bytes.chunks(n.blksize);
                for b in next..end {
                    let data = chunks.next().unwrap_or(&[]);
                    let mut p = Vec::with_capacity(4 + data.len());
                    p.extend_from_slice(&DATA.to_be_bytes());
                    p.extend_from_slice(&(b as u16).to_be_bytes());
                    p.extend_from_slice(data);
                    window.push_back(p);
                }
                next = end;
            }
            let acked = self
                .exchange(sock, &window, base as u16, n.timeout, slot)
                .await?;
            window.drain(..acked);
            base += acked as u64;
        }
        Ok(())
    }

    /// Sends `packets` (numbered from `first`) and waits for an ACK of one
    /// of them, resending them all on timeout; returns how many it
    /// acknowledges. Other ACKs (duplicates, stale ones) change nothing.
    async fn exchange(
        &self,
        sock: &UdpSocket,
        packets: &VecDeque<Vec<u8>>,
        first: u16,
        timeout: Duration,
        slot: &Slot<'_>,
    ) -> Result<usize, End> {
        let mut buf = [0u8; 1024];
        for _ in 0..=self.settings.retries {
            for p in packets {
                sock.send(p).await?;
            }
            let deadline = tokio::time::Instant::now() + timeout;
            loop {
                let n = match tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
                    Err(_) => break,
                    Ok(r) => r?,
                };
                match parse_reply(&buf[..n]) {
                    Reply::Ack(a) => {
                        slot.acked();
                        let k = usize::from(a.wrapping_sub(first));
                        if k < packets.len() {
                            return Ok(k + 1);
                        }
                    }
                    Reply::Error(code, msg) => return Err(End::ClientError(code, msg)),
                    Reply::Other => {}
                }
            }
        }
        Err(End::TimedOut)
    }
}

/// Binds the TFTP socket with a receive buffer large enough for a rack of
/// firmware asking at once (the kernel default drops such a burst); with
/// `device`, only requests arriving on that interface are received.
pub fn bind(addr: SocketAddr, device: Option<&str>) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if let Some(name) = device {
        s.bind_device(Some(name.as_bytes())).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot bind to interface {name}: {e}"))
        })?;
    }
    if let Err(e) = s.set_recv_buffer_size(8 << 20) {
        tracing::debug!(error = %e, "tftp: cannot enlarge the receive buffer");
    }
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_cannot_leave_the_root() {
        assert_eq!(
            clean_path(Path::new("/undionly.kpxe")),
            Some(PathBuf::from("undionly.kpxe"))
        );
        assert_eq!(clean_path(Path::new("a/./b")), Some(PathBuf::from("a/b")));
        assert_eq!(clean_path(Path::new("../etc/passwd")), None);
        assert_eq!(clean_path(Path::new("a/../../b")), None);
        assert_eq!(clean_path(Path::new("")), None);
    }

    #[test]
    fn resolution_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("undionly.kpxe"), b"x").unwrap();
        let fb = vec![(
            "ipxe-x86_64.efi".to_string(),
            PathBuf::from("/pkg/ipxe.efi"),
        )];
        let gen_ = || autoexec("http://h:27778", Some("52:54:00:00:00:01"));
        assert!(matches!(
            resolve(Path::new("undionly.kpxe"), dir.path(), &fb, gen_),
            Resolved::File(_)
        ));
        assert_eq!(
            resolve(Path::new("ipxe-x86_64.efi"), dir.path(), &fb, gen_),
            Resolved::File(PathBuf::from("/pkg/ipxe.efi"))
        );
        assert_eq!(
            resolve(Path::new("autoexec.ipxe"), dir.path(), &fb, gen_),
            Resolved::Generated(
                b"#!ipxe\nchain http://h:27778/boot/v1/bootscript?mac=52:54:00:00:00:01 || reboot\n".to_vec()
            )
        );
        assert_eq!(
            resolve(Path::new("nope"), dir.path(), &fb, gen_),
            Resolved::NotFound
        );
        assert_eq!(
            resolve(Path::new("../x"), dir.path(), &fb, gen_),
            Resolved::Denied
        );
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_out_of_the_root_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::NamedTempFile::new().unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("leak")).unwrap();
        assert_eq!(
            resolve(Path::new("leak"), dir.path(), &[], String::new),
            Resolved::Denied
        );
    }

    #[test]
    fn autoexec_without_a_known_mac_lets_ipxe_fill_it_in() {
        assert_eq!(
            autoexec("http://h:27778", None),
            "#!ipxe\nchain http://h:27778/boot/v1/bootscript?mac=${netX/mac} || reboot\n"
        );
    }

    fn settings() -> TftpSettings {
        TftpSettings {
            root: PathBuf::from("/nonexistent"),
            node_base: crate::boot::base::NodeBase::new("http://h:27778", ([0, 0, 0, 0], 1).into()),
            max_transfers: 10,
            max_block_size: 1468,
            max_window_size: 64,
            timeout: Duration::from_secs(3),
            retries: 5,
            max_client_timeout: 5,
            max_transfers_per_client: 4,
        }
    }

    fn read(file: &str, options: Options) -> Incoming {
        Incoming::Read(ReadRequest {
            file: file.into(),
            netascii: false,
            options,
        })
    }

    #[test]
    fn requests() {
        assert_eq!(
            parse_request(b"\0\x01a.bin\0octet\0"),
            read("a.bin", Options::default())
        );
        // Case-insensitive mode and option names; NUL padding after them.
        assert_eq!(
            parse_request(
                b"\0\x01a.bin\0OCTET\0BlkSize\x001468\0tsize\x000\0windowsize\x0016\0timeout\x002\0\0\0"
            ),
            read(
                "a.bin",
                Options {
                    blksize: Some(1468),
                    timeout: Some(2),
                    tsize: true,
                    windowsize: Some(16),
                }
            )
        );
        assert!(matches!(
            parse_request(b"\0\x01a\0netascii\0"),
            Incoming::Read(ReadRequest { netascii: true, .. })
        ));
        // Values out of range and unknown options are left out.
        assert_eq!(
            parse_request(
                b"\0\x01a\0octet\0blksize\x007\0windowsize\x000\0timeout\x00256\0tsize\0x\0multicast\0\0"
            ),
            read("a", Options::default())
        );
        assert_eq!(
            parse_request(b"\0\x02a\0octet\0"),
            Incoming::Write("a".into())
        );
        for ignored in [
            &b""[..],
            b"\0",
            b"\0\x04\0\x01",
            b"\0\x09a\0octet\0",
            b"\0\x05\0\x08\0",
        ] {
            assert_eq!(parse_request(ignored), Incoming::Ignored, "{ignored:?}");
        }
        for (refused, code) in [
            (&b"\0\x01a.bin"[..], code::ILLEGAL),
            (b"\0\x01a.bin\0", code::ILLEGAL),
            (b"\0\x01a.bin\0octet", code::ILLEGAL),
            (b"\0\x01a.bin\0mail\0", code::ILLEGAL),
            (b"\0\x01a.bin\0binary\0", code::ILLEGAL),
            (b"\0\x01a.bin\0octet\0blksize\0", code::OPTIONS),
            (b"\0\x01\xff\0octet\0", code::NOT_FOUND),
        ] {
            assert!(
                matches!(parse_request(refused), Incoming::Refused(c, _) if c == code),
                "{refused:?}: {:?}",
                parse_request(refused)
            );
        }
    }

    #[test]
    fn negotiation_stays_within_the_limits() {
        let s = settings();
        let n = negotiate(&Options::default(), 100, &s);
        assert_eq!((n.blksize, n.window, n.oack), (512, 1, None));
        let n = negotiate(
            &Options {
                blksize: Some(65464),
                timeout: Some(1),
                tsize: true,
                windowsize: Some(65535),
            },
            850528,
            &s,
        );
        assert_eq!((n.blksize, n.window), (1468, 64));
        assert_eq!(n.timeout, Duration::from_secs(1));
        assert_eq!(
            n.oack.as_deref(),
            Some(&b"\0\x06blksize\x001468\0timeout\x001\0tsize\x00850528\0windowsize\x0064\0"[..])
        );
    }

    #[test]
    fn options_beyond_the_limits_are_clamped_or_refused() {
        let mut s = settings();
        // (asked, granted timeout, OACK, clamped)
        let n = negotiate(
            &Options {
                timeout: Some(255),
                ..Options::default()
            },
            10,
            &s,
        );
        assert_eq!(n.timeout, s.timeout, "the server's own timeout applies");
        assert_eq!(n.oack, None, "a refused timeout is left out of the OACK");
        assert_eq!(n.clamped, ["timeout"]);
        let n = negotiate(
            &Options {
                timeout: Some(5),
                ..Options::default()
            },
            10,
            &s,
        );
        assert_eq!(n.timeout, Duration::from_secs(5));
        assert!(n.clamped.is_empty());
        // A window never holds more than WINDOW_BYTES.
        s.max_block_size = 65464;
        let n = negotiate(
            &Options {
                blksize: Some(65464),
                windowsize: Some(64),
                ..Options::default()
            },
            10,
            &s,
        );
        assert_eq!((n.blksize, n.window), (65464, 16));
        assert_eq!(n.clamped, ["windowsize"]);
        assert!(n.blksize * usize::from(n.window) <= WINDOW_BYTES);
    }

    #[test]
    fn netascii_conversion() {
        assert_eq!(to_netascii(b"a\nb\r\nc\r"), b"a\r\nb\r\0\r\nc\r\0");
    }
}
