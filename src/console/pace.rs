//! Reading an unwatched console's BMC socket in batches.
//!
//! A console's output matters within milliseconds only to a viewer. Nobody
//! watching, it goes to the console's log, which is written out once a
//! [`LOG_FLUSH`](super::LOG_FLUSH) anyway. Read as it arrives, a console
//! printing lines costs a system call and a wake-up of its SSH session
//! task per line (each line is an SSH packet); with a thousand consoles
//! that was most of the appliance's work. So once a read has drained an
//! unwatched console's socket, the socket is left alone for a pace
//! ([`PACE`](super::PACE)): the kernel holds what arrives meanwhile (a
//! serial line prints at most about 11.5 KiB a second at 115200 baud, well
//! inside a TCP receive buffer; a faster burst is held back by TCP flow
//! control at the BMC, not lost), the next read takes all of it, and the
//! SSH session decodes those packets from memory, without a system call or
//! a wake-up each.
//!
//! A watched console (a viewer attached, see [`Watch`]) is read at once, as
//! is every console while its session starts (the SSH handshake and login
//! wait on the BMC's answers); attaching a viewer wakes a resting reader,
//! so the first live byte a viewer sees is not held back. Anything written
//! to the BMC (keystrokes, a ping, an SSH rekey) ends a rest too, so its
//! answer is read at once and the link's keepalive works as before. What a
//! rest delays, while nobody watches, is output reaching the log (and so
//! tails without follow) and noticing that the session ended: each by up
//! to a pace.
//!
//! The IPMI backend is not paced: its output comes from ipmitool through a
//! PTY read by the session task, and an ipmitool that cannot write its
//! output out stops acknowledging the BMC's SOL packets.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Bytes read from the socket at a time: a pace's worth of the fastest
/// serial console with its SSH framing, with room to spare. A burst larger
/// than this is read in several reads, back to back. Memory is taken as it
/// is written, so a console printing little holds little.
const BATCH: usize = 64 * 1024;

/// Rests end on a grid of this step: spread evenly over a second, a
/// thousand consoles' rests would end a thousand times a second, each a
/// wake-up of the runtime; on the grid, the consoles whose rests end in the
/// same step are read in one.
const GRID: Duration = Duration::from_millis(100);

/// The first point of the grid of `step` from `origin` at or after `t`.
fn on_grid(t: Instant, origin: Instant, step: Duration) -> Instant {
    let since = t.saturating_duration_since(origin).as_nanos();
    let step = step.as_nanos().max(1);
    let up = since.div_ceil(step) * step;
    origin + Duration::from_nanos(u64::try_from(up).unwrap_or(u64::MAX))
}

/// Whether anyone watches a console: shared by its hub, which counts the
/// viewers attached, and the reader of its current session, which it wakes
/// when a viewer attaches.
#[derive(Default)]
pub struct Watch {
    viewers: AtomicUsize,
    reader: AtomicWaker,
}

impl Watch {
    /// A viewer attached: the console is read at once from now on.
    pub fn attach(&self) {
        self.viewers.fetch_add(1, Ordering::SeqCst);
        self.reader.wake();
    }

    /// A viewer left.
    pub fn detach(&self) {
        self.viewers.fetch_sub(1, Ordering::SeqCst);
    }

    pub fn viewers(&self) -> usize {
        self.viewers.load(Ordering::SeqCst)
    }

    fn watched(&self) -> bool {
        self.viewers() > 0
    }
}

/// Turns a [`Paced`] stream's pacing on, once its session has started.
pub struct Pacing(Arc<AtomicBool>);

impl Pacing {
    pub fn start(&self) {
        self.0.store(true, Ordering::Release);
    }
}

/// A BMC stream, buffered, read in batches while its console is not
/// watched; writes pass through.
pub struct Paced<S> {
    inner: S,
    buf: BytesMut,
    watch: Arc<Watch>,
    pacing: Arc<AtomicBool>,
    pace: Duration,
    /// Set by a read that drained the socket while nobody watched: the
    /// socket is not read again before `rest` elapses.
    resting: bool,
    rest: Option<Pin<Box<Sleep>>>,
}

impl<S> Paced<S> {
    /// `inner` read at once until [`Pacing::start`], then paced by `pace`
    /// while `watch` has no viewer.
    pub fn new(inner: S, watch: Arc<Watch>, pace: Duration) -> (Paced<S>, Pacing) {
        let pacing = Arc::new(AtomicBool::new(false));
        let paced = Paced {
            inner,
            buf: BytesMut::with_capacity(BATCH),
            watch,
            pacing: pacing.clone(),
            pace,
            resting: false,
            rest: None,
        };
        (paced, Pacing(pacing))
    }

    /// Starts a rest now.
    fn rest(&mut self) {
        static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        let origin = *ORIGIN.get_or_init(Instant::now);
        let until = on_grid(Instant::now() + self.pace, origin, GRID);
        match &mut self.rest {
            Some(s) => s.as_mut().reset(until),
            None => self.rest = Some(Box::pin(tokio::time::sleep_until(until))),
        }
        self.resting = true;
    }

    /// Whether the socket may be read now; when not, the task is woken
    /// when the rest ends or a viewer attaches.
    fn poll_rested(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.resting {
            return Poll::Ready(());
        }
        // Registered before the check, so an attach in between wakes us.
        self.watch.reader.register(cx.waker());
        let over = self.watch.watched()
            || self
                .rest
                .as_mut()
                .is_none_or(|s| s.as_mut().poll(cx).is_ready());
        if over {
            self.resting = false;
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// A write ends a rest: its answer is wanted at once.
    fn wrote(&mut self) {
        if self.resting {
            self.resting = false;
            self.watch.reader.wake();
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Paced<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        if me.buf.is_empty() {
            std::task::ready!(me.poll_rested(cx));
            me.buf.clear();
            me.buf.reserve(BATCH);
            let room = me.buf.capacity() - me.buf.len();
            let n = std::task::ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut me.inner),
                cx,
                &mut me.buf
            ))?;
            // A read shorter than the room it had took all the socket held
            // (and tokio forgets the socket's readiness, so nothing wakes
            // this task for it until it is read again).
            if n > 0 && n < room && me.pacing.load(Ordering::Acquire) && !me.watch.watched() {
                me.rest();
            }
        }
        let n = out.remaining().min(me.buf.len());
        out.put_slice(&me.buf[..n]);
        me.buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Paced<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        let r = Pin::new(&mut me.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            me.wrote();
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        let r = Pin::new(&mut me.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            me.wrote();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::task::Wake;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// What the fake BMC socket answers to one poll.
    #[derive(Clone)]
    enum Step {
        Data(&'static [u8]),
        /// As many bytes as the read has room for.
        Fill,
        Pending,
        Eof,
        Fail(io::ErrorKind),
    }

    /// A socket answering from a script, counting reads; `Pending` once the
    /// script is out (nothing arrived).
    struct Fake {
        script: VecDeque<Step>,
        reads: Arc<AtomicUsize>,
        written: Vec<u8>,
    }

    fn fake(script: &[Step]) -> (Fake, Arc<AtomicUsize>) {
        let reads = Arc::new(AtomicUsize::new(0));
        let f = Fake {
            script: script.iter().cloned().collect(),
            reads: reads.clone(),
            written: Vec::new(),
        };
        (f, reads)
    }

    impl AsyncRead for Fake {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            match self.script.pop_front() {
                Some(Step::Data(d)) => {
                    buf.put_slice(d);
                    Poll::Ready(Ok(()))
                }
                Some(Step::Fill) => {
                    let n = buf.remaining();
                    buf.put_slice(&vec![b'x'; n]);
                    Poll::Ready(Ok(()))
                }
                Some(Step::Eof) => Poll::Ready(Ok(())),
                Some(Step::Fail(k)) => Poll::Ready(Err(k.into())),
                Some(Step::Pending) | None => Poll::Pending,
            }
        }
    }

    impl AsyncWrite for Fake {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.written.extend_from_slice(data);
            Poll::Ready(Ok(data.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// A waker counting its wakes.
    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn wakes() -> (Arc<Wakes>, std::task::Waker) {
        let w = Arc::new(Wakes::default());
        (w.clone(), w.into())
    }

    /// One poll of a read with room for `room` bytes.
    fn poll_once(
        p: &mut Paced<Fake>,
        waker: &std::task::Waker,
        room: usize,
    ) -> Poll<io::Result<Vec<u8>>> {
        let mut cx = Context::from_waker(waker);
        let mut space = vec![0u8; room];
        let mut rb = ReadBuf::new(&mut space);
        Pin::new(p)
            .poll_read(&mut cx, &mut rb)
            .map_ok(|()| rb.filled().to_vec())
    }

    const LONG: Duration = Duration::from_secs(3600);

    fn paced(script: &[Step], viewers: usize, started: bool, pace: Duration) -> Setup {
        let (f, reads) = fake(script);
        let watch = Arc::new(Watch::default());
        for _ in 0..viewers {
            watch.attach();
        }
        let (p, pacing) = Paced::new(f, watch.clone(), pace);
        if started {
            pacing.start();
        }
        Setup { p, reads, watch }
    }

    struct Setup {
        p: Paced<Fake>,
        reads: Arc<AtomicUsize>,
        watch: Arc<Watch>,
    }

    #[tokio::test]
    async fn bytes_pass_through_in_order() {
        let script = [
            Step::Data(b"hello "),
            Step::Data(b"console"),
            Step::Data(b"\r\nline two\r\n"),
            Step::Eof,
        ];
        // (viewers, pacing started, bytes asked per read)
        let cases = [
            (0, true, 1),
            (0, true, 5),
            (0, true, 4096),
            (1, true, 3),
            (0, false, 2),
            (2, false, 4096),
        ];
        for (viewers, started, room) in cases {
            let mut s = paced(&script, viewers, started, Duration::from_millis(1));
            let mut got = Vec::new();
            let mut chunk = vec![0u8; room];
            loop {
                let n = s.p.read(&mut chunk).await.expect("read");
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&chunk[..n]);
            }
            assert_eq!(
                got, b"hello console\r\nline two\r\n",
                "viewers {viewers}, started {started}, room {room}"
            );
        }
    }

    #[tokio::test]
    async fn rests_only_when_unwatched_started_and_drained() {
        // (viewers, pacing started, first answer, the second read goes to
        // the socket at once)
        let cases = [
            (0, true, Step::Data(b"abc"), false),
            (1, true, Step::Data(b"abc"), true),
            (0, false, Step::Data(b"abc"), true),
            (0, true, Step::Fill, true),
            (0, true, Step::Pending, true),
        ];
        for (i, (viewers, started, first, at_once)) in cases.into_iter().enumerate() {
            let mut s = paced(&[first, Step::Data(b"def")], viewers, started, LONG);
            let (_, waker) = wakes();
            // Drain the first read entirely (a Fill is larger than one poll).
            while let Poll::Ready(r) = poll_once(&mut s.p, &waker, 4096) {
                r.expect("read");
                if s.p.buf.is_empty() {
                    break;
                }
            }
            let before = s.reads.load(Ordering::SeqCst);
            let second = poll_once(&mut s.p, &waker, 4096);
            let went = s.reads.load(Ordering::SeqCst) > before;
            assert_eq!(went, at_once, "case {i}");
            if !at_once {
                // However often it is polled, the socket is left alone.
                for _ in 0..5 {
                    assert!(poll_once(&mut s.p, &waker, 4096).is_pending(), "case {i}");
                }
                assert_eq!(s.reads.load(Ordering::SeqCst), before, "case {i}");
                assert!(second.is_pending(), "case {i}");
            }
        }
    }

    #[tokio::test]
    async fn a_viewer_attaching_wakes_a_resting_reader() {
        let mut s = paced(&[Step::Data(b"abc"), Step::Data(b"def")], 0, true, LONG);
        let (count, waker) = wakes();
        assert_eq!(ok(poll_once(&mut s.p, &waker, 64)), b"abc");
        assert!(poll_once(&mut s.p, &waker, 64).is_pending());
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
        s.watch.attach();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(ok(poll_once(&mut s.p, &waker, 64)), b"def");
        assert_eq!(s.reads.load(Ordering::SeqCst), 2);
        // Watched, a drained socket is polled again at once.
        assert!(poll_once(&mut s.p, &waker, 64).is_pending());
        assert_eq!(s.reads.load(Ordering::SeqCst), 3);
        // The viewer gone, the next drained read rests again.
        s.watch.detach();
        assert_eq!(s.watch.viewers(), 0);
    }

    #[tokio::test]
    async fn a_write_ends_a_rest() {
        let mut s = paced(&[Step::Data(b"abc"), Step::Data(b"pong")], 0, true, LONG);
        let (count, waker) = wakes();
        assert_eq!(ok(poll_once(&mut s.p, &waker, 64)), b"abc");
        assert!(poll_once(&mut s.p, &waker, 64).is_pending());
        s.p.write_all(b"ping").await.expect("write");
        assert_eq!(s.p.inner.written, b"ping");
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(ok(poll_once(&mut s.p, &waker, 64)), b"pong");
    }

    #[tokio::test]
    async fn the_socket_is_read_again_when_the_pace_is_over() {
        let mut s = paced(
            &[Step::Data(b"abc"), Step::Data(b"def")],
            0,
            true,
            Duration::from_millis(20),
        );
        let mut got = [0u8; 3];
        s.p.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"abc");
        s.p.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"def");
        assert_eq!(s.reads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn end_and_errors_pass_through() {
        use io::ErrorKind::{BrokenPipe, ConnectionReset};
        // (viewers, script, what the reads return: Ok(bytes) or Err(kind))
        type Want = Result<&'static [u8], io::ErrorKind>;
        let cases: [(usize, Vec<Step>, Vec<Want>); 4] = [
            (0, vec![Step::Eof], vec![Ok(b"")]),
            (
                1,
                vec![Step::Data(b"ab"), Step::Eof],
                vec![Ok(b"ab"), Ok(b"")],
            ),
            (
                1,
                vec![Step::Fail(ConnectionReset)],
                vec![Err(ConnectionReset)],
            ),
            (
                1,
                vec![Step::Data(b"ab"), Step::Fail(BrokenPipe)],
                vec![Ok(b"ab"), Err(BrokenPipe)],
            ),
        ];
        for (i, (viewers, script, want)) in cases.into_iter().enumerate() {
            let mut s = paced(&script, viewers, true, LONG);
            let (_, waker) = wakes();
            for w in want {
                let got = match poll_once(&mut s.p, &waker, 64) {
                    Poll::Ready(r) => r.map_err(|e| e.kind()),
                    Poll::Pending => panic!("case {i}: pending"),
                };
                assert_eq!(got, w.map(<[u8]>::to_vec), "case {i}");
            }
        }
        // Resting, the end is seen once the rest is over.
        let mut s = paced(
            &[Step::Data(b"ab"), Step::Eof],
            0,
            true,
            Duration::from_millis(20),
        );
        let mut all = Vec::new();
        s.p.read_to_end(&mut all).await.expect("read");
        assert_eq!(all, b"ab");
    }

    #[test]
    fn rests_end_on_the_grid() {
        let o = Instant::now();
        let ms = Duration::from_millis;
        // (time after the origin, grid step, end after the origin)
        let cases = [
            (ms(0), ms(100), ms(0)),
            (ms(1), ms(100), ms(100)),
            (ms(100), ms(100), ms(100)),
            (ms(1001), ms(100), ms(1100)),
            (ms(1099), ms(100), ms(1100)),
            (ms(7), Duration::ZERO, ms(7)),
        ];
        for (t, step, want) in cases {
            assert_eq!(on_grid(o + t, o, step), o + want, "{t:?} on {step:?}");
        }
        // Before the origin: the origin.
        assert_eq!(on_grid(o, o + ms(5), ms(100)), o + ms(5));
    }

    fn ok(p: Poll<io::Result<Vec<u8>>>) -> Vec<u8> {
        match p {
            Poll::Ready(Ok(v)) => v,
            Poll::Ready(Err(e)) => panic!("read failed: {e}"),
            Poll::Pending => panic!("read pending"),
        }
    }
}
