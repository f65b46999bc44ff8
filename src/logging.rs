//! Logging that can never take the appliance down, and access lines that
//! cannot flood the log.
//!
//! `serve` logs to stderr, which is a pipe to the journal or a file on a
//! disk that can fill. The formatter's default reaction to a failed write
//! is to print a complaint to stderr, which panics when stderr is the thing
//! that failed, and a panic on the store's writer thread used to end every
//! later write. Here a failed write is counted
//! (`openchami_log_write_failures_total`) and otherwise ignored: losing a
//! log line is always better than losing the task that wanted to log it.
//!
//! Access lines (one per HTTP request, DHCP exchange and TFTP transfer) are
//! info-level so an operator sees traffic without turning on debug, and are
//! limited per kind to [`ACCESS_LINES_PER_SEC`] a second: a flood of
//! requests must not become a flood of log writes. What a window drops is
//! summed up in one line when the next window opens, and counted
//! (`openchami_log_lines_suppressed_total{kind}`).

use std::io::{self, Write};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

/// Log writes that failed (stderr full, closed or gone), since start.
pub static WRITE_FAILURES: LazyLock<Counter> = LazyLock::new(Counter::default);

/// Access lines dropped by the rate limit, by kind.
pub static SUPPRESSED: LazyLock<Family<Vec<(String, String)>, Counter>> =
    LazyLock::new(Family::default);

/// Access lines each kind may write per second.
pub const ACCESS_LINES_PER_SEC: u32 = 100;

/// Sets up the process-wide subscriber: `RUST_LOG` (default `info`) to
/// stderr through [`FailSafeStderr`].
pub fn init() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(FailSafeStderr)
        .log_internal_errors(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

/// Stderr whose failures are counted, never returned: the formatter then
/// has nothing to complain about.
#[derive(Clone, Copy, Debug, Default)]
pub struct FailSafeStderr;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for FailSafeStderr {
    type Writer = FailSafeWriter<io::Stderr>;
    fn make_writer(&'a self) -> Self::Writer {
        FailSafeWriter(io::stderr())
    }
}

/// A writer that reports success whatever its inner writer says; each
/// failed write (one formatted event) is counted once.
pub struct FailSafeWriter<W>(pub W);

impl<W: Write> Write for FailSafeWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.0.write_all(buf).is_err() {
            WRITE_FAILURES.inc();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let _ = self.0.flush();
        Ok(())
    }
}

/// The kinds of access line, each limited on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Http,
    Dhcp,
    Tftp,
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Http => "http",
            Access::Dhcp => "dhcp",
            Access::Tftp => "tftp",
        }
    }
}

struct Window {
    start: Instant,
    written: u32,
    suppressed: u64,
}

static WINDOWS: LazyLock<[Mutex<Window>; 3]> = LazyLock::new(|| {
    let w = || {
        Mutex::new(Window {
            start: Instant::now(),
            written: 0,
            suppressed: 0,
        })
    };
    [w(), w(), w()]
});

/// Whether an access line of `kind` may be written now. When a new second
/// starts after one that dropped lines, the summary line is written first.
pub fn access_allowed(kind: Access) -> bool {
    let Ok(mut w) = WINDOWS[kind as usize].lock() else {
        return false;
    };
    let (allowed, dropped) = admit(&mut w, Instant::now(), ACCESS_LINES_PER_SEC);
    drop(w);
    if let Some(n) = dropped {
        tracing::info!(
            kind = kind.as_str(),
            suppressed = n,
            "access log: lines over the limit of {ACCESS_LINES_PER_SEC}/s were not written"
        );
    }
    if !allowed {
        SUPPRESSED
            .get_or_create(&vec![("kind".into(), kind.as_str().into())])
            .inc();
    }
    allowed
}

/// The rate limit itself: (may write, lines the window just closed dropped).
fn admit(w: &mut Window, now: Instant, limit: u32) -> (bool, Option<u64>) {
    let mut dropped = None;
    if now.duration_since(w.start) >= Duration::from_secs(1) {
        if w.suppressed > 0 {
            dropped = Some(w.suppressed);
        }
        *w = Window {
            start: now,
            written: 0,
            suppressed: 0,
        };
    }
    if w.written < limit {
        w.written += 1;
        (true, dropped)
    } else {
        w.suppressed += 1;
        (false, dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Broken;
    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from(io::ErrorKind::BrokenPipe))
        }
        fn flush(&mut self) -> io::Result<()> {
            Err(io::Error::from(io::ErrorKind::StorageFull))
        }
    }

    #[test]
    fn a_failed_write_is_counted_not_returned() {
        let before = WRITE_FAILURES.get();
        let mut w = FailSafeWriter(Broken);
        assert_eq!(w.write(b"line\n").unwrap(), 5);
        w.write_all(b"another\n").unwrap();
        w.flush().unwrap();
        assert!(WRITE_FAILURES.get() >= before + 2);
    }

    #[test]
    fn the_limit_holds_per_window_and_reports_what_it_dropped() {
        let t0 = Instant::now();
        let mut w = Window {
            start: t0,
            written: 0,
            suppressed: 0,
        };
        let outcomes: Vec<bool> = (0..5).map(|_| admit(&mut w, t0, 3).0).collect();
        assert_eq!(outcomes, [true, true, true, false, false]);
        // Next second: allowed again, and the two dropped lines reported once.
        let t1 = t0 + Duration::from_millis(1000);
        assert_eq!(admit(&mut w, t1, 3), (true, Some(2)));
        assert_eq!(admit(&mut w, t1, 3), (true, None));
        // A quiet window reports nothing.
        let t2 = t1 + Duration::from_secs(5);
        assert_eq!(admit(&mut w, t2, 3), (true, None));
    }
}
