//! The accept loop shared by both listeners.
//!
//! A listener takes an already bound socket (tests bind port 0 and read the
//! address back), serves until the shutdown token fires, then gives in-flight
//! requests a bounded grace period. TLS handshakes run on the connection's own
//! task with a deadline, so a slow or hostile client cannot stall accepts.
//!
//! Every open connection costs a file descriptor, and descriptors are shared
//! by both listeners, the store, TFTP and the Redfish clients. So each
//! listener holds at most [`Limits::max_connections`] (a budget `app.rs`
//! carves out of the process's descriptor limit, leaving headroom for the
//! rest), the node listener at most [`Limits::per_peer`] per client
//! address: a flood on the node listener cannot starve the API.
//!
//! A connection over a cap costs as little as the kernel lets it: the loop
//! accepts with a plain `accept(2)`, in batches, and a refused socket is
//! closed before it is registered with the reactor, given a task or
//! logged; it is counted with one atomic add. While an address is at its
//! share, its new connections do not reach the process at all: a socket
//! filter on the listener drops their SYNs (`share_filter`), and its TCP
//! tries again later, as it would at a full listen queue. A refused
//! connection is closed with a plain `close(2)`, not a reset (SO_LINGER 0):
//! reset, the slowloris benchmark's attacker saw its connect fail and came
//! back at once rather than a round later, twice as many connects a second.
//! Holding refused sockets unread for a while (a tarpit) was measured and
//! left out too: a client that keeps N connections in play and reopens each
//! R s after it is closed makes about (N - held) / R connects a second, so
//! only a tarpit of most of N would help, and one of the listener's free
//! budget made the benchmark no better (bench/README.md, "Slowloris"). A
//! connection must deliver a request head within `header_read_timeout`
//! once it starts sending one, and one with no request running and no bytes
//! moving for `idle_timeout` is closed; both are watched here, for HTTP/1
//! and HTTP/2 alike, by one timer per connection. HTTP/2 runs with a bounded
//! number of streams, header list size and reset streams (rapid reset,
//! CVE-2023-44487; h2 bounds CONTINUATION frames by the header list size).
//!
//! A refused request (401, 404, 413 …) is answered only after its body, if
//! small, has been read: answering first makes hyper reset an HTTP/2 stream
//! whose body is still coming, and curl reports that reset as a framing
//! error instead of the answer.

use std::collections::{BTreeSet, HashMap};
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Request;
use axum::response::Response;
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use prometheus_client::metrics::counter::Counter;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::share_filter::ShareFilter;

/// The TCP peer of a request, inserted for every request.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// Our end of a request's connection: the address the caller reached us at,
/// which is the address a node is sent back to (see `boot::base`).
#[derive(Debug, Clone, Copy)]
pub struct Local(pub SocketAddr);

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// HTTP/2 streams open at once on one connection.
pub const H2_MAX_STREAMS: u32 = 100;
/// Streams a client may reset before the server accepted them; more is a
/// rapid-reset attack and ends the connection (GOAWAY).
const H2_MAX_PENDING_RESETS: usize = 20;
/// Streams the server may reset for a client's protocol errors before it
/// ends the connection.
const H2_MAX_LOCAL_RESETS: usize = 256;
/// Largest decoded header list of one request (HEADERS plus CONTINUATION).
const H2_MAX_HEADER_LIST: u32 = 64 * 1024;
/// A refused request's body is read up to this size before the answer
/// goes; a larger one is left unread (and its stream reset).
const DRAIN_LIMIT: usize = 1 << 20;
/// ... and for at most this long.
const DRAIN_TIME: Duration = Duration::from_secs(2);
/// Connections accepted in one go before other tasks get a turn.
const ACCEPT_BATCH: usize = 64;
/// An address that fell below its share is let through the listener's
/// filter this long after (with others freed meanwhile): its client's TCP
/// resends a dropped SYN after a second at the soonest, and a flood's
/// address, let in, is at its share again at once, which would otherwise
/// rebuild the filter for every connection it loses.
const UNBLOCK_DELAY: Duration = Duration::from_millis(200);
/// How often SYNs dropped by the filter are read into the counters.
const DROPS_EVERY: Duration = Duration::from_secs(1);

/// What one listener accepts.
#[derive(Debug, Clone)]
pub struct Limits {
    /// `api` or `node`: the label of its counters.
    pub name: &'static str,
    /// Connections open at once.
    pub max_connections: usize,
    /// Connections open at once from one client address, if capped.
    pub per_peer: Option<usize>,
    /// Addresses exempt from `per_peer` (trusted reverse proxies).
    pub exempt: Vec<IpAddr>,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
}

/// The counter of connections closed by a limit, by (listener, reason);
/// asked once per pair, the first time it is needed.
pub type Shed = Arc<dyn Fn(&'static str, &'static str) -> Counter + Send + Sync>;

/// Why a listener closed a connection: its counter's `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    AcceptFailed,
    ListenerFull,
    PeerShare,
    /// SYNs of an address at its share, dropped by the listener's filter
    /// (a client's resent SYNs each count).
    PeerShareSyn,
    HeaderTimeout,
    Idle,
}

impl Reason {
    const COUNT: usize = 6;

    fn label(self) -> &'static str {
        match self {
            Reason::AcceptFailed => "accept_failed",
            Reason::ListenerFull => "listener_full",
            Reason::PeerShare => "peer_share",
            Reason::PeerShareSyn => "peer_share_syn",
            Reason::HeaderTimeout => "header_timeout",
            Reason::Idle => "idle",
        }
    }
}

/// One listener's shed counters, each looked up once.
struct Counts {
    listener: &'static str,
    shed: Shed,
    cells: [OnceLock<Counter>; Reason::COUNT],
}

impl Counts {
    fn new(listener: &'static str, shed: Shed) -> Counts {
        Counts {
            listener,
            shed,
            cells: Default::default(),
        }
    }

    fn inc(&self, r: Reason) {
        self.add(r, 1);
    }

    fn add(&self, r: Reason, n: u64) {
        self.cells[r as usize]
            .get_or_init(|| (self.shed)(self.listener, r.label()))
            .inc_by(n);
    }
}

/// Serves `app` on `listener` until `shutdown`, then drains for `grace`.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: Router,
    shutdown: CancellationToken,
    grace: Duration,
    limits: Limits,
    shed: Shed,
) {
    let acceptor = tls.map(TlsAcceptor::from);
    let graceful = GracefulShutdown::new();
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http2()
        .max_concurrent_streams(H2_MAX_STREAMS)
        .max_pending_accept_reset_streams(H2_MAX_PENDING_RESETS)
        .max_local_error_reset_streams(H2_MAX_LOCAL_RESETS)
        .max_header_list_size(H2_MAX_HEADER_LIST);
    if acceptor.is_none() {
        // Plain HTTP is the node listener: firmware, curl and cloud-init
        // speak HTTP/1.x and no route upgrades. Declaring it (and serving
        // without upgrade support, below) saves the auto builder's extra
        // read that sniffs for the HTTP/2 preface on every connection: one
        // syscall per boot script request, which is one connection.
        builder = builder.http1_only();
    }
    let counts = Arc::new(Counts::new(limits.name, shed));
    let listener = match listener.into_std().and_then(watch_listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(listener = limits.name, error = %e, "cannot watch the listening socket");
            return;
        }
    };
    let conn = Conn {
        app,
        builder,
        graceful: &graceful,
        acceptor,
        limits: Arc::new(limits),
        counts,
    };
    let open = Arc::new(Open::default());
    // The listener's filter, where addresses have a share (see
    // `share_filter`); gone if the kernel will not take it.
    let mut filter = conn.limits.per_peer.map(|_| ShareFilter::default());
    // When addresses that fell below their share are let through.
    let mut unblock: Option<tokio::time::Instant> = None;
    let mut read_drops = tokio::time::Instant::now();
    loop {
        let filtering = filter.as_ref().is_some_and(ShareFilter::active);
        let mut ready = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = open.freed.notified(), if filter.is_some() && unblock.is_none() => {
                unblock = Some(tokio::time::Instant::now() + UNBLOCK_DELAY);
                continue;
            }
            _ = tokio::time::sleep_until(unblock.unwrap_or(read_drops)), if unblock.is_some() => {
                unblock = None;
                refilter(&mut filter, &listener, &open, &conn);
                continue;
            }
            _ = tokio::time::sleep_until(read_drops), if filtering => {
                read_drops = tokio::time::Instant::now() + DROPS_EVERY;
                if let Some(f) = filter.as_mut() {
                    conn.counts.add(Reason::PeerShareSyn, f.dropped(listener.get_ref()));
                }
                continue;
            }
            ready = listener.readable() => match ready {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(listener = conn.limits.name, error = %e, "cannot poll the listening socket");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let mut filled = false;
        for _ in 0..ACCEPT_BATCH {
            let (stream, peer) = match ready.try_io(|l| l.get_ref().accept()) {
                Err(_would_block) => break,
                Ok(Ok(pair)) => pair,
                Ok(Err(e)) => {
                    conn.counts.inc(Reason::AcceptFailed);
                    if out_of_descriptors(&e) {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(listener = conn.limits.name, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        break;
                    }
                    tracing::debug!(listener = conn.limits.name, error = %e, "accept failed");
                    continue;
                }
            };
            match open.admit(peer.ip(), &conn.limits) {
                Ok((held, full)) => {
                    filled |= full;
                    conn.spawn(stream, peer, held);
                }
                Err(reason) => {
                    conn.counts.inc(reason);
                    drop(stream);
                }
            }
        }
        if filled && filter.is_some() {
            // At once: until the filter has it, the address's connections
            // are accepted and closed.
            unblock = None;
            refilter(&mut filter, &listener, &open, &conn);
        }
    }
    drop(listener);
    drop(conn);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(grace) => {
            tracing::warn!(?grace, "grace period over; closing connections still open");
        }
    }
}

/// What serving an admitted connection needs.
struct Conn<'a> {
    app: Router,
    builder: Builder<TokioExecutor>,
    graceful: &'a GracefulShutdown,
    acceptor: Option<TlsAcceptor>,
    limits: Arc<Limits>,
    counts: Arc<Counts>,
}

impl Conn<'_> {
    /// Serves an admitted connection on its own task.
    fn spawn(&self, stream: std::net::TcpStream, peer: SocketAddr, held: Held) {
        let stream = match stream
            .set_nonblocking(true)
            .and_then(|()| tokio::net::TcpStream::from_std(stream))
        {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "cannot register an accepted connection");
                return;
            }
        };
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::new());
        let svc = Svc {
            app: self.app.clone(),
            peer,
            local: stream.local_addr().ok(),
            activity: activity.clone(),
        };
        let stream = Watched {
            inner: stream,
            activity: activity.clone(),
        };
        let builder = self.builder.clone();
        let watcher = self.graceful.watcher();
        let acceptor = self.acceptor.clone();
        let limits = self.limits.clone();
        let counts = self.counts.clone();
        tokio::spawn(async move {
            let _held = held;
            let served = async {
                match acceptor {
                    Some(acceptor) => {
                        let tls =
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                                .await
                            {
                                Ok(Ok(s)) => s,
                                Ok(Err(e)) => {
                                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                    return;
                                }
                                Err(_) => {
                                    tracing::debug!(%peer, "TLS handshake timed out");
                                    return;
                                }
                            };
                        let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), svc);
                        if let Err(e) = watcher.watch(conn.into_owned()).await {
                            tracing::debug!(%peer, error = %e, "connection ended with an error");
                        }
                    }
                    None => {
                        let conn = builder.serve_connection(TokioIo::new(stream), svc);
                        if let Err(e) = watcher.watch(conn.into_owned()).await {
                            tracing::debug!(%peer, error = %e, "connection ended with an error");
                        }
                    }
                }
            };
            tokio::select! {
                _ = served => {}
                reason = activity.watch(limits.header_read_timeout, limits.idle_timeout) => {
                    tracing::debug!(listener = limits.name, %peer, reason = reason.label(), "connection closed");
                    counts.inc(reason);
                }
            }
        });
    }
}

/// Makes the listener's filter refuse the addresses now at their share,
/// counting the SYNs it dropped so far; drops the filter if the kernel
/// refuses it (connections over the share are then accepted and closed).
fn refilter(
    filter: &mut Option<ShareFilter>,
    listener: &AsyncFd<std::net::TcpListener>,
    open: &Open,
    conn: &Conn<'_>,
) {
    let Some(f) = filter.as_mut() else { return };
    match f.set(listener.get_ref(), &open.full()) {
        Ok(dropped) => conn.counts.add(Reason::PeerShareSyn, dropped),
        Err(e) => {
            tracing::warn!(listener = conn.limits.name, error = %e,
                "cannot filter the listening socket; connections over an address's share are accepted and closed");
            let _ = socket2::SockRef::from(listener.get_ref()).detach_filter();
            *filter = None;
        }
    }
}

/// The listening socket, watched by the reactor for readiness only, so
/// that accepting does not register the accepted socket (as
/// `tokio::net::TcpListener::accept` does) before it is admitted.
#[allow(unsafe_code)]
fn watch_listener(l: std::net::TcpListener) -> std::io::Result<AsyncFd<std::net::TcpListener>> {
    // SAFETY: a std listener owns its descriptor and always returns that
    // one from `as_raw_fd`, until it is dropped with the `AsyncFd`.
    unsafe { AsyncFd::register_with_interest(l, Interest::READABLE) }.map_err(std::io::Error::from)
}

/// Whether an accept failed for want of descriptors or memory, which
/// retrying at once cannot cure.
fn out_of_descriptors(e: &std::io::Error) -> bool {
    use rustix::io::Errno;
    let e = Errno::from_io_error(e);
    [Errno::MFILE, Errno::NFILE, Errno::NOBUFS, Errno::NOMEM]
        .iter()
        .any(|x| e == Some(*x))
}

// ------------------------------------------------------------- connections

/// The connections a listener holds, in total and per client address.
#[derive(Default)]
struct Open {
    inner: Mutex<OpenInner>,
    /// Woken when an address at its share falls below it.
    freed: Notify,
}

#[derive(Default)]
struct OpenInner {
    total: usize,
    per_peer: HashMap<IpAddr, usize>,
    /// The addresses at their share (exempt ones never are).
    full: BTreeSet<IpAddr>,
}

/// One admitted connection; released when dropped.
struct Held {
    open: Arc<Open>,
    ip: IpAddr,
}

impl Open {
    fn lock(&self) -> std::sync::MutexGuard<'_, OpenInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The connection admitted, and whether its address is now at its
    /// share; or why not.
    fn admit(self: &Arc<Self>, ip: IpAddr, limits: &Limits) -> Result<(Held, bool), Reason> {
        let mut o = self.lock();
        if o.total >= limits.max_connections {
            return Err(Reason::ListenerFull);
        }
        let mine = o.per_peer.get(&ip).copied().unwrap_or(0);
        let exempt = limits.exempt.contains(&ip);
        if let Some(cap) = limits.per_peer
            && mine >= cap
            && !exempt
        {
            return Err(Reason::PeerShare);
        }
        o.total += 1;
        o.per_peer.insert(ip, mine + 1);
        let full = limits.per_peer == Some(mine + 1) && !exempt && o.full.insert(ip);
        let held = Held {
            open: self.clone(),
            ip,
        };
        Ok((held, full))
    }

    fn full(&self) -> BTreeSet<IpAddr> {
        self.lock().full.clone()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let freed = {
            let mut o = self.open.lock();
            o.total -= 1;
            if let Some(n) = o.per_peer.get_mut(&self.ip) {
                *n -= 1;
                if *n == 0 {
                    o.per_peer.remove(&self.ip);
                }
            }
            o.full.remove(&self.ip)
        };
        if freed {
            self.open.freed.notify_one();
        }
    }
}

// ---------------------------------------------------------------- activity

/// What the connection's watchdog reads: when bytes last moved, whether a
/// request is being handled, and since when a request head is coming.
struct Activity {
    epoch: Instant,
    /// Milliseconds since `epoch` (plus one, so 0 means "never").
    last_io: AtomicU64,
    /// When the first byte of a request head arrived; 0 when none is coming.
    head_since: AtomicU64,
    in_flight: AtomicUsize,
    head_started: Notify,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            epoch: Instant::now(),
            last_io: AtomicU64::new(1),
            head_since: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            head_started: Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    fn read(&self) {
        let now = self.now();
        self.last_io.store(now, Ordering::Relaxed);
        if self.in_flight.load(Ordering::Relaxed) == 0
            && self
                .head_since
                .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.head_started.notify_one();
        }
    }

    fn wrote(&self) {
        self.last_io.store(self.now(), Ordering::Relaxed);
    }

    /// Returns why the connection must close: a request head not complete
    /// within `header` of its first byte, or nothing for `idle`.
    async fn watch(&self, header: Duration, idle: Duration) -> Reason {
        let (header, idle) = (header.as_millis() as u64, idle.as_millis() as u64);
        loop {
            let now = self.now();
            let mut wait = idle;
            if self.in_flight.load(Ordering::Relaxed) == 0 {
                let quiet = now.saturating_sub(self.last_io.load(Ordering::Relaxed));
                if quiet >= idle {
                    return Reason::Idle;
                }
                wait = idle - quiet;
                let since = self.head_since.load(Ordering::Relaxed);
                if since != 0 {
                    let waited = now.saturating_sub(since);
                    if waited >= header {
                        return Reason::HeaderTimeout;
                    }
                    wait = wait.min(header - waited);
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(wait.max(1))) => {}
                _ = self.head_started.notified() => {}
            }
        }
    }
}

/// A request being handled: no timeouts apply meanwhile (the request
/// timeout layer bounds it).
struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(a: Arc<Activity>) -> InFlight {
        a.in_flight.fetch_add(1, Ordering::Relaxed);
        a.head_since.store(0, Ordering::Relaxed);
        InFlight(a)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.wrote();
    }
}

/// The TCP stream, noting every byte that moves.
struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

// ----------------------------------------------------------------- service

/// The router as hyper calls it: marks the request in flight, tells it its
/// peer, and reads what is left of a small body the router did not.
#[derive(Clone)]
struct Svc {
    app: Router,
    peer: SocketAddr,
    /// Our end of the connection (see [`Local`]).
    local: Option<SocketAddr>,
    activity: Arc<Activity>,
}

type Unread = Arc<Mutex<Option<Incoming>>>;

impl hyper::service::Service<hyper::Request<Incoming>> for Svc {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn call(&self, req: hyper::Request<Incoming>) -> Self::Future {
        let guard = InFlight::new(self.activity.clone());
        let (mut parts, body) = req.into_parts();
        parts.extensions.insert(Peer(self.peer));
        if let Some(l) = self.local {
            parts.extensions.insert(Local(l));
        }
        let app = self.app.clone();
        if body.is_end_stream() {
            return Box::pin(async move {
                let r = app.oneshot(Request::from_parts(parts, body)).await;
                drop(guard);
                r
            });
        }
        let unread: Unread = Arc::default();
        let body = Tracked {
            inner: Some(body),
            unread: unread.clone(),
        };
        let req = Request::from_parts(parts, axum::body::Body::new(body));
        Box::pin(async move {
            let r = app.oneshot(req).await;
            let left = unread.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(body) = left {
                drain(body).await;
            }
            drop(guard);
            r
        })
    }
}

/// Reads and discards up to [`DRAIN_LIMIT`] bytes for at most [`DRAIN_TIME`].
async fn drain(mut body: Incoming) {
    use http_body_util::BodyExt;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        let mut read = 0usize;
        while read <= DRAIN_LIMIT {
            match body.frame().await {
                Some(Ok(f)) => read += f.data_ref().map_or(0, |d| d.len()),
                _ => break,
            }
        }
    })
    .await;
}

/// A request body that, dropped before its end, hands itself back.
struct Tracked {
    inner: Option<Incoming>,
    unread: Unread,
}

impl hyper::body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match self.inner.as_mut() {
            Some(b) => Pin::new(b).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint())
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if let Some(b) = self.inner.take()
            && !b.is_end_stream()
        {
            let small = b
                .size_hint()
                .upper()
                .is_none_or(|n| n <= DRAIN_LIMIT as u64);
            if small {
                *self.unread.lock().unwrap_or_else(|p| p.into_inner()) = Some(b);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpSocket;

    /// Guards the waits below against a hang; nothing is timed.
    const GUARD: Duration = Duration::from_secs(20);

    struct Server {
        addr: SocketAddr,
        stop: CancellationToken,
        shed: Arc<Mutex<HashMap<&'static str, Counter>>>,
        task: tokio::task::JoinHandle<()>,
    }

    /// A bound listener not served yet: connections to it wait in the
    /// kernel's queue.
    struct Bound(TcpListener);

    impl Bound {
        async fn new(addr: &str) -> Bound {
            Bound(TcpListener::bind(addr).await.expect("bind"))
        }

        fn addr(&self) -> SocketAddr {
            self.0.local_addr().expect("local address")
        }

        fn serve(self, max_connections: usize, per_peer: usize) -> Server {
            let addr = self.addr();
            let app = Router::new().route("/x", axum::routing::get(|| async { "ok" }));
            let shed: Arc<Mutex<HashMap<&'static str, Counter>>> = Arc::default();
            let counters = shed.clone();
            let limits = Limits {
                name: "node",
                max_connections,
                per_peer: Some(per_peer),
                exempt: Vec::new(),
                header_read_timeout: Duration::from_secs(3600),
                idle_timeout: Duration::from_secs(3600),
            };
            let stop = CancellationToken::new();
            let task = tokio::spawn(serve(
                self.0,
                None,
                app,
                stop.clone(),
                Duration::from_secs(1),
                limits,
                Arc::new(move |_: &'static str, reason: &'static str| -> Counter {
                    let mut c = counters.lock().unwrap();
                    c.entry(reason).or_default().clone()
                }),
            ));
            Server {
                addr,
                stop,
                shed,
                task,
            }
        }
    }

    impl Server {
        async fn start(max_connections: usize, per_peer: usize) -> Server {
            Bound::new("127.0.0.1:0")
                .await
                .serve(max_connections, per_peer)
        }

        fn shed(&self, reason: &str) -> u64 {
            self.shed.lock().unwrap().get(reason).map_or(0, |c| c.get())
        }

        /// Waits for the `reason` counter to reach `n`.
        async fn shed_reaches(&self, reason: &str, n: u64) {
            let reached = tokio::time::timeout(GUARD, async {
                while self.shed(reason) < n {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
            .await;
            assert!(reached.is_ok(), "{reason}: {} of {n}", self.shed(reason));
        }

        async fn stop(self) {
            self.stop.cancel();
            tokio::time::timeout(GUARD, self.task)
                .await
                .expect("the listener stops")
                .expect("the listener task ends cleanly");
        }
    }

    async fn connect(from: impl Into<IpAddr>, to: SocketAddr) -> tokio::net::TcpStream {
        let from = from.into();
        let sock = match from {
            IpAddr::V4(_) => TcpSocket::new_v4(),
            IpAddr::V6(_) => TcpSocket::new_v6(),
        }
        .expect("socket");
        sock.bind(SocketAddr::new(from, 0))
            .expect("bind a loopback address");
        tokio::time::timeout(GUARD, sock.connect(to))
            .await
            .expect("connected in time")
            .expect("connect")
    }

    /// A keep-alive request on `s`, answered.
    async fn get(s: &mut tokio::net::TcpStream) {
        s.write_all(b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .expect("write");
        let mut got = Vec::new();
        tokio::time::timeout(GUARD, async {
            let mut b = [0u8; 1024];
            while !got.ends_with(b"\r\n\r\nok") {
                match s.read(&mut b).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&b[..n]),
                }
            }
        })
        .await
        .expect("an answer");
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    }

    /// Waits for the server to close `s` (a reset or an end of stream).
    async fn closed(s: &mut tokio::net::TcpStream) {
        let mut b = [0u8; 64];
        let r = tokio::time::timeout(GUARD, s.read(&mut b)).await;
        assert!(
            matches!(r, Ok(Ok(0)) | Ok(Err(_))),
            "still open or answered: {r:?}"
        );
    }

    #[tokio::test]
    async fn an_address_at_its_share_is_refused_by_the_kernel_until_it_has_room() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("an address");
        #[rustfmt::skip]
        let cases = [
            // listener, the client filling its share, another client
            ("127.0.0.1:0", ip("127.0.0.1"), Some(ip("127.0.0.2"))),
            ("[::1]:0", ip("::1"), None),
            // Dual stack: IPv4 clients seen as IPv4-mapped addresses.
            ("[::]:0", ip("127.0.0.1"), Some(ip("127.0.0.2"))),
        ];
        for (listen, one, other) in cases {
            let server = Bound::new(listen).await.serve(4, 2);
            let to = SocketAddr::new(one, server.addr.port());
            let mut admitted = Vec::new();
            for _ in 0..2 {
                let mut s = connect(one, to).await;
                get(&mut s).await;
                admitted.push(s);
            }
            // At its share: the next connection's SYN is dropped, counted,
            // and nothing more happens to it while the share is full.
            let waiting = tokio::spawn(async move { connect(one, to).await });
            server.shed_reaches("peer_share_syn", 1).await;
            assert!(!waiting.is_finished(), "{listen}: admitted over the share");
            assert_eq!(server.shed("peer_share"), 0, "{listen}");
            // Others are not affected, and the admitted ones are served.
            if let Some(other) = other {
                let mut s = connect(other, to).await;
                get(&mut s).await;
            }
            for s in &mut admitted {
                get(s).await;
            }
            // With room again, the client's TCP gets in when it resends.
            admitted.pop();
            let mut s = tokio::time::timeout(GUARD, waiting)
                .await
                .expect("admitted once there is room")
                .expect("the connecting task");
            get(&mut s).await;
            assert_eq!(server.shed("peer_share"), 0, "{listen}");
            assert_eq!(server.shed("listener_full"), 0, "{listen}");
            drop((admitted, s));
            server.stop().await;
        }
    }

    #[tokio::test]
    async fn connections_over_the_share_that_reach_accept_are_closed_and_counted() {
        // Queued before the listener is served, so the filter cannot have
        // kept the third one out.
        let bound = Bound::new("127.0.0.1:0").await;
        let one = [127, 0, 0, 1];
        let mut queued = Vec::new();
        for _ in 0..3 {
            queued.push(connect(one, bound.addr()).await);
        }
        let server = bound.serve(4, 2);
        // Accepted in order: the first two are served, the third closed.
        let (first, rest) = queued.split_at_mut(2);
        for s in first {
            get(s).await;
        }
        closed(&mut rest[0]).await;
        assert_eq!(server.shed("peer_share"), 1);
        // Another address still has room.
        let mut other = connect([127, 0, 0, 2], server.addr).await;
        get(&mut other).await;
        drop((queued, other));
        server.stop().await;
    }

    #[tokio::test]
    async fn a_full_listener_closes_at_once() {
        let server = Server::start(1, 1).await;
        let mut admitted = connect([127, 0, 0, 1], server.addr).await;
        get(&mut admitted).await;
        // A listener full is no address's share: no filter, closed.
        for from in [[127, 0, 0, 2], [127, 0, 0, 3]] {
            let mut s = connect(from, server.addr).await;
            closed(&mut s).await;
        }
        assert_eq!(server.shed("listener_full"), 2);
        assert_eq!(server.shed("peer_share"), 0);
        drop(admitted);
        server.stop().await;
    }
}
