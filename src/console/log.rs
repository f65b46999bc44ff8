//! Per-node console logs: `console.<xname>` grows until it reaches the size
//! limit, then becomes `console.<xname>.1` (older files shift up, the oldest
//! beyond `keep` is deleted). Bytes are written as the BMC sent them; a
//! viewer asking for the last N lines is answered from the current file
//! (and the newest rotated one when the current file is short), read from
//! the end, so the cost follows N, not the log's size.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The file name upstream's conman gives a node's log.
pub fn file_name(node: &str) -> String {
    format!("console.{node}")
}

/// An open, rotating log.
#[derive(Debug)]
pub struct ConsoleLog {
    path: PathBuf,
    file: Option<File>,
    len: u64,
    max_bytes: u64,
    keep: u32,
}

impl ConsoleLog {
    pub fn new(dir: &Path, node: &str, max_bytes: u64, keep: u32) -> ConsoleLog {
        let path = dir.join(file_name(node));
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        ConsoleLog {
            path,
            file: None,
            len,
            max_bytes: max_bytes.max(1),
            keep,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `data`, rotating first when it would pass the limit (a chunk
    /// larger than the limit goes whole into a fresh file).
    pub fn append(&mut self, data: &[u8]) -> std::io::Result<()> {
        if self.len > 0 && self.len + data.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        if self.file.is_none() {
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            self.len = f.metadata()?.len();
            self.file = Some(f);
        }
        if let Some(f) = self.file.as_mut() {
            f.write_all(data)?;
            self.len += data.len() as u64;
        }
        Ok(())
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
        self.len = 0;
        Ok(())
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

/// The last `n` lines of the log at `path` (and of `path.1` when the
/// current file holds fewer), reading backwards in blocks; `None` when
/// neither file exists.
pub fn read_last_lines(path: &Path, n: usize) -> std::io::Result<Option<Vec<u8>>> {
    let rotated = PathBuf::from(format!("{}.1", path.display()));
    let mut out: Option<Vec<u8>> = None;
    let mut wanted = n;
    for p in [path, rotated.as_path()] {
        let Some(tail) = tail_of(p, wanted)? else {
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

/// The last `n` lines of one file.
fn tail_of(path: &Path, n: usize) -> std::io::Result<Option<Vec<u8>>> {
    const BLOCK: u64 = 64 * 1024;
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let size = f.metadata()?.len();
    let mut start = size;
    let mut buf: Vec<u8> = Vec::new();
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

    #[test]
    fn rotates_by_size_and_keeps_n_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = ConsoleLog::new(dir.path(), "x1c0s0b0n0", 10, 2);
        for i in 0..5 {
            log.append(format!("line{i}\n").as_bytes()).unwrap();
        }
        let read = |s: &str| std::fs::read_to_string(dir.path().join(s)).unwrap_or_default();
        assert_eq!(read("console.x1c0s0b0n0"), "line4\n");
        assert_eq!(read("console.x1c0s0b0n0.1"), "line3\n");
        assert_eq!(read("console.x1c0s0b0n0.2"), "line2\n");
        assert!(!dir.path().join("console.x1c0s0b0n0.3").exists());
        let last = read_last_lines(log.path(), 2).unwrap().unwrap();
        assert_eq!(last, b"line3\nline4\n");
    }

    #[test]
    fn tail_reads_across_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = ConsoleLog::new(dir.path(), "n", 1 << 30, 1);
        let line = "y".repeat(999) + "\n";
        for _ in 0..200 {
            log.append(line.as_bytes()).unwrap();
        }
        let last = read_last_lines(log.path(), 100).unwrap().unwrap();
        assert_eq!(last.len(), 100 * 1000);
        assert!(
            read_last_lines(&dir.path().join("none"), 3)
                .unwrap()
                .is_none()
        );
    }
}
