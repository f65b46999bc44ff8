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
//! rest), the node listener at most [`Limits::per_peer`] per client address,
//! and a connection over either is closed as soon as it is accepted (and
//! counted): a flood on the node listener cannot starve the API. A
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

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Request;
use axum::response::Response;
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

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

/// Called with (listener, reason) for every connection closed by a limit.
pub type Shed = Arc<dyn Fn(&'static str, &'static str) + Send + Sync>;

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
    let open = Arc::new(Open::default());
    let limits = Arc::new(limits);
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(listener = limits.name, error = %e, "accept failed");
                    shed(limits.name, "accept_failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let held = match open.admit(peer.ip(), &limits) {
            Ok(h) => h,
            Err(reason) => {
                // Closed at once: the descriptor is back before the next
                // accept, and the client learns it is not served.
                drop(stream);
                shed(limits.name, reason);
                tracing::debug!(listener = limits.name, %peer, reason, "connection refused");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::new());
        let stream = Watched {
            inner: stream,
            activity: activity.clone(),
        };
        let svc = Svc {
            app: app.clone(),
            peer,
            local: stream.inner.local_addr().ok(),
            activity: activity.clone(),
        };
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let acceptor = acceptor.clone();
        let limits = limits.clone();
        let shed = shed.clone();
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
                    tracing::debug!(listener = limits.name, %peer, reason, "connection closed");
                    shed(limits.name, reason);
                }
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(grace) => {
            tracing::warn!(?grace, "grace period over; closing connections still open");
        }
    }
}

// ------------------------------------------------------------- connections

/// The connections a listener holds, in total and per client address.
#[derive(Default)]
struct Open(Mutex<OpenInner>);

#[derive(Default)]
struct OpenInner {
    total: usize,
    per_peer: HashMap<IpAddr, usize>,
}

/// One admitted connection; released when dropped.
struct Held {
    open: Arc<Open>,
    ip: IpAddr,
}

impl Open {
    fn admit(self: &Arc<Self>, ip: IpAddr, limits: &Limits) -> Result<Held, &'static str> {
        let mut o = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if o.total >= limits.max_connections {
            return Err("listener_full");
        }
        let mine = o.per_peer.get(&ip).copied().unwrap_or(0);
        if let Some(cap) = limits.per_peer
            && mine >= cap
            && !limits.exempt.contains(&ip)
        {
            return Err("peer_share");
        }
        o.total += 1;
        o.per_peer.insert(ip, mine + 1);
        Ok(Held {
            open: self.clone(),
            ip,
        })
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut o = self.open.0.lock().unwrap_or_else(|p| p.into_inner());
        o.total -= 1;
        if let Some(n) = o.per_peer.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                o.per_peer.remove(&self.ip);
            }
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
    async fn watch(&self, header: Duration, idle: Duration) -> &'static str {
        let (header, idle) = (header.as_millis() as u64, idle.as_millis() as u64);
        loop {
            let now = self.now();
            let mut wait = idle;
            if self.in_flight.load(Ordering::Relaxed) == 0 {
                let quiet = now.saturating_sub(self.last_io.load(Ordering::Relaxed));
                if quiet >= idle {
                    return "idle";
                }
                wait = idle - quiet;
                let since = self.head_since.load(Ordering::Relaxed);
                if since != 0 {
                    let waited = now.saturating_sub(since);
                    if waited >= header {
                        return "header_timeout";
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
