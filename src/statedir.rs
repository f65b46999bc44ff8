//! Owning the state directory.
//!
//! Two appliances on one directory each keep their own in-memory model and
//! overwrite each other's rows; a read-only directory lets the appliance
//! start and then fail every write. Both are refused at start, where the
//! operator is looking, with what to do about it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{Context, bail};

/// The lock file inside the state directory; it holds the owner's PID.
pub const LOCK_FILE: &str = "openchami.lock";

/// The held lock: released when dropped (or when the process ends, however
/// it ends, since it is an `flock`).
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

/// Takes the state directory for this process, or names the PID that has it.
pub fn lock(dir: &Path) -> anyhow::Result<StateLock> {
    use rustix::fs::{FlockOperation, flock};
    let path = dir.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot open the state lock {}", path.display()))?;
    if let Err(e) = flock(&file, FlockOperation::NonBlockingLockExclusive) {
        if e == rustix::io::Errno::WOULDBLOCK {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let who = if holder.is_empty() {
                "another process".to_string()
            } else {
                format!("another openchami (PID {holder})")
            };
            bail!(
                "state directory {} is in use by {who}; stop it first, or give this server its own state_dir",
                dir.display()
            );
        }
        bail!("cannot lock {}: {e}", path.display());
    }
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{}", std::process::id()))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(StateLock { _file: file })
}

/// Creates, syncs and removes a file in `dir`: a read-only mount, a full
/// disk or a wrong owner shows up here instead of on the first write.
pub fn check_writable(dir: &Path) -> anyhow::Result<()> {
    let probe = dir.join(".openchami-write-check");
    let result = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&probe)
        .and_then(|mut f| {
            f.write_all(b"ok")?;
            f.sync_all()
        });
    let _ = std::fs::remove_file(&probe);
    result.with_context(|| {
        format!(
            "state directory {} is not writable; check that its file system is mounted read-write, has space, and belongs to the service user",
            dir.display()
        )
    })
}

/// The file holding this head's ID (see [`head_id`]).
pub const HEAD_ID_FILE: &str = "head-id";

/// This head's ID among heads sharing a store: the host name and a random
/// suffix, made on first start and kept in the state directory, so a
/// restarted head is the same head (and takes its own leases back at once)
/// while two heads on one host, or two hosts of one name, are not.
pub fn head_id(dir: &Path) -> anyhow::Result<String> {
    let path = dir.join(HEAD_ID_FILE);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let id = text.trim();
        if !id.is_empty() {
            return Ok(id.to_string());
        }
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "head".into());
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let id = format!("{host}-{}", &suffix[..8]);
    let tmp = dir.join(format!("{HEAD_ID_FILE}.tmp"));
    std::fs::write(&tmp, format!("{id}\n"))
        .and_then(|()| std::fs::rename(&tmp, &path))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_names_the_holder_and_a_released_one_is_free() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock(dir.path()).unwrap();
        let err = lock(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains(&format!("PID {}", std::process::id())),
            "{err}"
        );
        drop(held);
        lock(dir.path()).unwrap();
    }
}
