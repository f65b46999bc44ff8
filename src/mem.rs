//! Giving freed heap memory back to the system.
//!
//! glibc's malloc keeps what a process frees: each thread that allocates
//! may get its own arena, and freed pages stay in the arenas' free lists
//! until the top of a heap happens to be free. An import parses megabytes
//! of YAML, builds a new model and serialises every row on the writer
//! thread and the runtime's workers; afterwards the live heap is a fraction
//! of what is resident, and it stays resident for the life of the process.
//! Two knobs fix that without changing allocators (mimalloc measured worse
//! here): a fixed mmap threshold, so multi-megabyte blocks (list bodies,
//! an import's YAML) are unmapped when freed instead of joining an arena,
//! and `malloc_trim(0)`, which returns every free page of every arena (not
//! only the top): once after the initial load, before an import answers,
//! and shortly after big commits and big responses. Capping the number of
//! arenas was measured too and left out: with the trims it saved nothing
//! and cost a fifth of the full list's throughput in lock contention.
//!
//! The trim walks and locks each arena, so it never runs on a request's
//! path: large writes and large responses only leave a note, and one
//! thread trims a moment after the last one, when readers have dropped the
//! old snapshots and the bodies have been sent. The one exception is a
//! bulk import, which trims before it answers: it is an operator's batch
//! job, and the memory it freed is what the operator looks at next.
//!
//! No maintained crate wraps these two glibc calls safely, so this module
//! is the one place the crate allows `unsafe`: each call is a plain FFI
//! call with integer arguments and no pointer or lifetime invariants.
#![allow(unsafe_code)]

use std::sync::OnceLock;
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender};
use std::time::Duration;

/// A committed write batch of at least this many rows asks for a trim.
pub const LARGE_WRITE_ROWS: usize = 1000;
/// A response body of at least this many bytes asks for a trim: sending
/// it through TLS frees as much again in record-sized blocks.
pub const LARGE_BODY_BYTES: u64 = 1 << 20;
/// How long after the last large write the trim runs: long enough for the
/// requests that hold the previous snapshot to finish.
const TRIM_DELAY: Duration = Duration::from_secs(1);
/// Blocks at least this big are mapped on their own and unmapped when
/// freed: a 2.4 MB `State/Components` body or an import's YAML then never
/// lands in an arena. glibc's default threshold starts at 128 KiB but
/// rises to the largest block freed so far, after which such bodies stay
/// resident; a fixed value keeps it from rising.
const MMAP_THRESHOLD: i32 = 1 << 20;

static TRIMMER: OnceLock<SyncSender<()>> = OnceLock::new();

/// Fixes the mmap threshold. Called first thing in `serve`, before the
/// runtime's threads start allocating. Costs the full list about a sixth
/// of its throughput in page faults on fresh mappings; without it the
/// inventory benchmark's RSS after an import was ~70 MiB, not ~60.
pub fn tune() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt takes two integers and only changes malloc's
    // settings under its own lock; an unknown value is rejected, not UB.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

/// Returns free heap pages to the system now. Takes a few milliseconds on
/// a large heap and briefly locks each arena: not for a request's path.
pub fn trim() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim takes a byte count and only releases pages that
    // malloc itself holds free; it has no caller-side invariants.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Starts the thread that trims after large writes. Idempotent; without
/// it, [`large_write_committed`] does nothing (tests, CLI commands).
pub fn start_trimmer() {
    TRIMMER.get_or_init(|| {
        // One pending note is enough: more would only say the same thing.
        let (tx, rx) = mpsc::sync_channel::<()>(1);
        let spawned = std::thread::Builder::new()
            .name("mem-trim".into())
            .spawn(move || trimmer_loop(&rx, TRIM_DELAY, trim));
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the memory trim thread; freed memory stays resident");
        }
        tx
    });
}

/// Notes that a write batch of `rows` rows was committed; a large one gets
/// a trim shortly after. Never blocks.
pub fn large_write_committed(rows: usize) {
    if rows >= LARGE_WRITE_ROWS {
        trim_soon();
    }
}

/// Notes that a response of `bytes` bytes is about to be sent.
pub fn large_body_sent(bytes: u64) {
    if bytes >= LARGE_BODY_BYTES {
        trim_soon();
    }
}

/// Asks the trim thread for a trim once things have been quiet for a
/// moment. Never blocks.
pub fn trim_soon() {
    if let Some(tx) = TRIMMER.get() {
        let _ = tx.try_send(());
    }
}

/// Waits for a note, then for `delay` without a further note, then trims;
/// a burst of large writes therefore costs one trim, after the burst.
fn trimmer_loop(rx: &mpsc::Receiver<()>, delay: Duration, trim: impl Fn()) {
    while rx.recv().is_ok() {
        loop {
            match rx.recv_timeout(delay) {
                Ok(()) => continue,
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => {
                    trim();
                    return;
                }
            }
        }
        trim();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn a_burst_of_notes_costs_one_trim() {
        let (tx, rx) = mpsc::sync_channel::<()>(1);
        let count = std::sync::Arc::new(AtomicUsize::new(0));
        let c = count.clone();
        let t = std::thread::spawn(move || {
            trimmer_loop(&rx, Duration::from_millis(200), || {
                c.fetch_add(1, Ordering::SeqCst);
            })
        });
        for _ in 0..5 {
            let _ = tx.try_send(());
        }
        drop(tx);
        t.join().unwrap();
        assert_eq!(count.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn trimming_and_capping_are_harmless() {
        tune();
        let v = vec![0u8; 8 << 20];
        drop(v);
        trim();
        large_write_committed(LARGE_WRITE_ROWS);
    }
}
