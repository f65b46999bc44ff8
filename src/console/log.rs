//! Per-node console logs: `console.<xname>` grows until it reaches the size
//! limit, then becomes `console.<xname>.1` (older files shift up, the oldest
//! beyond `keep` is deleted). Bytes are kept as the BMC sent them.
//!
//! A BMC sends its console a line or so per SSH packet; writing each one out
//! would cost a system call per packet per node. So appended bytes wait in
//! memory until the owner flushes them (the console service does, a few
//! times a second and when a session ends), until they pass [`FLUSH_BYTES`],
//! or until the log is dropped. Readers ask the log, which answers from the
//! file and the bytes not yet written together, so every byte is seen once.
//! A viewer asking for the last N lines is answered from the current file
//! (and the newest rotated one when the current file is short), read from
//! the end, so the cost follows N, not the log's size.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Unwritten bytes past which an append writes them out at once.
pub const FLUSH_BYTES: usize = 64 * 1024;

/// The file name upstream's conman gives a node's log.
pub fn file_name(node: &str) -> String {
    format!("console.{node}")
}

/// An open, rotating, buffered log.
#[derive(Debug)]
pub struct ConsoleLog {
    path: PathBuf,
    file: Option<File>,
    /// Bytes in the current file.
    written: u64,
    /// Bytes that belong after them, not written yet.
    pending: Vec<u8>,
    max_bytes: u64,
    keep: u32,
}

impl ConsoleLog {
    pub fn new(dir: &Path, node: &str, max_bytes: u64, keep: u32) -> ConsoleLog {
        let path = dir.join(file_name(node));
        let written = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        ConsoleLog {
            path,
            file: None,
            written,
            pending: Vec::new(),
            max_bytes: max_bytes.max(1),
            keep,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes appended but not written to the file yet.
    pub fn unflushed(&self) -> &[u8] {
        &self.pending
    }

    /// Appends `data`, rotating first when it would take the current file
    /// past the limit (a chunk larger than the limit goes whole into a fresh
    /// file). The bytes are written by a later flush, or now when enough
    /// are waiting.
    pub fn append(&mut self, data: &[u8]) -> std::io::Result<()> {
        let mut result = Ok(());
        let len = self.written + self.pending.len() as u64;
        if len > 0 && len + data.len() as u64 > self.max_bytes {
            result = self.flush();
            self.rotate()?;
        }
        self.pending.extend_from_slice(data);
        if self.pending.len() >= FLUSH_BYTES {
            result = result.and(self.flush());
        }
        result
    }

    /// Writes the waiting bytes out. When that fails they are dropped (a
    /// full or broken disk must not grow the appliance's memory) and the
    /// file is reopened on the next flush.
    pub fn flush(&mut self) -> std::io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let r = self.write_pending();
        self.pending.clear();
        if self.pending.capacity() > FLUSH_BYTES {
            // A burst passed: do not keep its buffer for every node.
            self.pending = Vec::new();
        }
        if r.is_err() {
            self.file = None;
        }
        r
    }

    fn write_pending(&mut self) -> std::io::Result<()> {
        let f = match self.file.take() {
            Some(f) => f,
            None => self.open()?,
        };
        let f = self.file.insert(f);
        f.write_all(&self.pending)?;
        self.written += self.pending.len() as u64;
        Ok(())
    }

    fn open(&mut self) -> std::io::Result<File> {
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.written = f.metadata()?.len();
        Ok(f)
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.file = None;
        let nth = |n: u32| PathBuf::from(format!("{}.{n}", self.path.display()));
        if self.keep == 0 {
            remove_if_present(&self.path)?;
        } else {
            remove_if_present(&nth(self.keep))?;
            for n in (1..self.keep).rev() {
                rename_if_present(&nth(n), &nth(n + 1))?;
            }
            rename_if_present(&self.path, &nth(1))?;
        }
        self.written = 0;
        // The current file is there from the start, empty until a flush.
        self.file = Some(self.open()?);
        Ok(())
    }

    /// The whole current log, written and waiting; `None` when there is
    /// none.
    pub fn read_all(&self) -> std::io::Result<Option<Vec<u8>>> {
        Ok(match read_all(&self.path)? {
            Some(mut b) => {
                b.extend_from_slice(&self.pending);
                Some(b)
            }
            None if self.pending.is_empty() => None,
            None => Some(self.pending.clone()),
        })
    }

    /// The last `n` lines, written and waiting (see [`read_last_lines`]).
    pub fn read_last_lines(&self, n: usize) -> std::io::Result<Option<Vec<u8>>> {
        read_last_lines(&self.path, n, &self.pending)
    }
}

impl Drop for ConsoleLog {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

fn remove_if_present(p: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn rename_if_present(from: &Path, to: &Path) -> std::io::Result<()> {
    match std::fs::rename(from, to) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Splits `data` into lines, each keeping its `\n` (the last one may lack
/// it).
pub fn lines(data: &[u8]) -> Vec<&[u8]> {
    data.split_inclusive(|b| *b == b'\n').collect()
}

/// The start of the last `n` lines of `data` (a final line without `\n`
/// counts as a line).
pub fn last_lines_start(data: &[u8], n: usize) -> usize {
    if n == 0 {
        return data.len();
    }
    let mut seen = 0;
    let end = if data.last() == Some(&b'\n') {
        data.len() - 1
    } else {
        data.len()
    };
    for (i, b) in data[..end].iter().enumerate().rev() {
        if *b == b'\n' {
            seen += 1;
            if seen == n {
                return i + 1;
            }
        }
    }
    0
}

/// Reads the whole current log; `None` when there is none.
pub fn read_all(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The last `n` lines of the log at `path` followed by `unflushed` (and of
/// `path.1` when those hold fewer), reading backwards in blocks; `None`
/// when there is neither a file nor an unflushed byte.
pub fn read_last_lines(
    path: &Path,
    n: usize,
    unflushed: &[u8],
) -> std::io::Result<Option<Vec<u8>>> {
    let rotated = PathBuf::from(format!("{}.1", path.display()));
    let mut out: Option<Vec<u8>> = None;
    let mut wanted = n;
    for (p, after) in [(path, unflushed), (rotated.as_path(), &[][..])] {
        let Some(tail) = tail_of(p, wanted, after)? else {
            continue;
        };
        let got = lines(&tail).len();
        out = Some(match out {
            Some(newer) => [tail, newer].concat(),
            None => tail,
        });
        if got >= wanted {
            break;
        }
        wanted -= got;
    }
    Ok(out)
}

/// The last `n` lines of one file followed by `after`.
fn tail_of(path: &Path, n: usize, after: &[u8]) -> std::io::Result<Option<Vec<u8>>> {
    const BLOCK: u64 = 64 * 1024;
    let cut = last_lines_start(after, n);
    if cut > 0 {
        return Ok(Some(after[cut..].to_vec()));
    }
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok((!after.is_empty()).then(|| after.to_vec()));
        }
        Err(e) => return Err(e),
    };
    let size = f.metadata()?.len();
    let mut start = size;
    let mut buf: Vec<u8> = after.to_vec();
    loop {
        let from = start.saturating_sub(BLOCK);
        let mut block = vec![0u8; (start - from) as usize];
        f.seek(SeekFrom::Start(from))?;
        f.read_exact(&mut block)?;
        block.extend_from_slice(&buf);
        buf = block;
        start = from;
        let cut = last_lines_start(&buf, n);
        if cut > 0 || start == 0 {
            buf.drain(..cut);
            return Ok(Some(buf));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_lines_table() {
        let cases: &[(&str, usize, &str)] = &[
            ("a\nb\nc\n", 2, "b\nc\n"),
            ("a\nb\nc", 2, "b\nc"),
            ("a\nb\nc\n", 5, "a\nb\nc\n"),
            ("a\nb\nc\n", 0, ""),
            ("", 3, ""),
            ("\n\n", 1, "\n"),
        ];
        for (data, n, want) in cases {
            let s = last_lines_start(data.as_bytes(), *n);
            assert_eq!(&data[s..], *want, "{data:?} last {n}");
        }
    }

    fn read(dir: &Path, name: &str) -> String {
        std::fs::read_to_string(dir.join(name)).unwrap_or_default()
    }

    #[test]
    fn rotates_by_size_and_keeps_n_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = ConsoleLog::new(dir.path(), "x1c0s0b0n0", 10, 2);
        for i in 0..5 {
            log.append(format!("line{i}\n").as_bytes()).unwrap();
        }
        // The rotated files were written when the next chunk started a
        // file; the newest chunk waits, and readers see it.
        assert_eq!(read(dir.path(), "console.x1c0s0b0n0.1"), "line3\n");
        assert_eq!(read(dir.path(), "console.x1c0s0b0n0.2"), "line2\n");
        assert!(dir.path().join("console.x1c0s0b0n0").exists());
        assert_eq!(read(dir.path(), "console.x1c0s0b0n0"), "");
        assert_eq!(log.read_last_lines(2).unwrap().unwrap(), b"line3\nline4\n");
        assert_eq!(log.read_all().unwrap().unwrap(), b"line4\n");
        log.flush().unwrap();
        assert_eq!(read(dir.path(), "console.x1c0s0b0n0"), "line4\n");
        assert!(!dir.path().join("console.x1c0s0b0n0.3").exists());
        assert_eq!(log.read_last_lines(2).unwrap().unwrap(), b"line3\nline4\n");
    }

    #[test]
    fn rotation_keeping_none_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = ConsoleLog::new(dir.path(), "n", 8, 0);
        log.append(b"aaaa\n").unwrap();
        log.flush().unwrap();
        log.append(b"bbbb\n").unwrap();
        drop(log);
        assert_eq!(read(dir.path(), "console.n"), "bbbb\n");
        assert!(!dir.path().join("console.n.1").exists());
    }

    /// Whatever was flushed and whatever waits, readers see the bytes
    /// appended, each once and in order.
    #[test]
    fn readers_see_written_and_waiting_bytes_once() {
        // Chunks appended, with `|` meaning "flush here"; then the last
        // lines asked for and the answer.
        let cases: &[(&[&str], usize, &str)] = &[
            (&[], 3, ""),
            (&["a\nb\n"], 1, "b\n"),
            (&["a\nb\n", "|"], 1, "b\n"),
            (&["a\nb\n", "|", "c\n"], 2, "b\nc\n"),
            (&["a\nb\n", "|", "c\nd\ne\n"], 2, "d\ne\n"),
            (&["a\nb\n", "|", "c\nd\ne\n"], 9, "a\nb\nc\nd\ne\n"),
            // A line split across the file and the waiting bytes.
            (&["a\nb", "|", "c\n"], 1, "bc\n"),
            (&["a\nb", "|", "c\n"], 2, "a\nbc\n"),
            (&["a\nb\n", "|", "c"], 2, "b\nc"),
            (&["a\n", "|", "b\n", "|", "c\n", "|"], 2, "b\nc\n"),
            (&["a\n", "b\n", "c"], 2, "b\nc"),
        ];
        for (chunks, n, want) in cases {
            let dir = tempfile::tempdir().unwrap();
            let mut log = ConsoleLog::new(dir.path(), "n", 1 << 20, 1);
            let mut all = String::new();
            for c in chunks.iter() {
                if *c == "|" {
                    log.flush().unwrap();
                } else {
                    log.append(c.as_bytes()).unwrap();
                    all.push_str(c);
                }
            }
            let got = log.read_last_lines(*n).unwrap();
            let whole = log.read_all().unwrap();
            if all.is_empty() {
                assert_eq!(got, None, "{chunks:?}");
                assert_eq!(whole, None, "{chunks:?}");
                continue;
            }
            assert_eq!(
                String::from_utf8(got.unwrap()).unwrap(),
                *want,
                "{chunks:?} last {n}"
            );
            assert_eq!(
                String::from_utf8(whole.unwrap()).unwrap(),
                all,
                "{chunks:?}"
            );
            drop(log);
            assert_eq!(read(dir.path(), "console.n"), all, "{chunks:?} after drop");
        }
    }

    #[test]
    fn large_backlog_is_written_without_a_flush() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = ConsoleLog::new(dir.path(), "n", 1 << 30, 1);
        let line = "z".repeat(1023) + "\n";
        for _ in 0..FLUSH_BYTES / line.len() {
            log.append(line.as_bytes()).unwrap();
        }
        assert!(log.unflushed().is_empty());
        assert_eq!(read(dir.path(), "console.n").len(), FLUSH_BYTES);
        log.append(b"tail\n").unwrap();
        assert_eq!(log.unflushed(), b"tail\n");
    }

    #[test]
    fn a_reopened_log_appends_and_rotates_by_the_file_size() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = ConsoleLog::new(dir.path(), "n", 12, 1);
        log.append(b"first\n").unwrap();
        drop(log);
        let mut log = ConsoleLog::new(dir.path(), "n", 12, 1);
        log.append(b"more\n").unwrap();
        log.append(b"again\n").unwrap();
        drop(log);
        assert_eq!(read(dir.path(), "console.n.1"), "first\nmore\n");
        assert_eq!(read(dir.path(), "console.n"), "again\n");
    }

    #[test]
    fn tail_reads_across_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = ConsoleLog::new(dir.path(), "n", 1 << 30, 1);
        let line = "y".repeat(999) + "\n";
        for _ in 0..200 {
            log.append(line.as_bytes()).unwrap();
        }
        let last = log.read_last_lines(100).unwrap().unwrap();
        assert_eq!(last.len(), 100 * 1000);
        assert!(
            read_last_lines(&dir.path().join("none"), 3, b"")
                .unwrap()
                .is_none()
        );
    }
}
