//! File handling shared by the key stores.
//!
//! Key files are replaced by writing a fresh file and renaming it over the
//! old one, so a crash mid-write never leaves a truncated key behind, and a
//! private key is never readable by others even for an instant (the file is
//! created with its final mode rather than tightened afterwards).

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::CaError;

/// Mode for private keys and other secrets.
pub(crate) const PRIVATE: u32 = 0o600;
/// Mode for certificates, which are meant to be handed out.
pub(crate) const PUBLIC: u32 = 0o644;

/// `<state_dir>/ca`, created (owner-only) if it does not exist yet.
pub(crate) fn ca_dir(state_dir: &Path) -> Result<PathBuf, CaError> {
    let dir = state_dir.join("ca");
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| CaError::io("create directory", &dir, e))?;
    Ok(dir)
}

/// The file's contents, or `None` if it does not exist.
pub(crate) fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, CaError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CaError::io("read", path, e)),
    }
}

/// Like [`read_optional`] for a secret, refusing one readable by group or
/// others: that usually means it was copied in by hand, and a key others
/// could read must not be used as if it were still private.
pub(crate) fn read_secret(path: &Path) -> Result<Option<Vec<u8>>, CaError> {
    let bytes = read_optional(path)?;
    if bytes.is_some()
        && let Ok(meta) = fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        return Err(CaError::bad_file(
            path,
            format!(
                "private key file is readable by other users (mode {:o}); run `chmod 600 {}` and start again",
                meta.permissions().mode() & 0o777,
                path.display()
            ),
        ));
    }
    Ok(bytes)
}

/// Replaces `path` with `contents`, atomically, creating it with `mode`.
pub(crate) fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), CaError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));

    // A leftover from an interrupted write would make `create_new` fail.
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(CaError::io("remove", &tmp, e)),
    }

    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(|e| CaError::io("create", &tmp, e))?;
        file.write_all(contents)
            .and_then(|()| file.sync_all())
            .map_err(|e| CaError::io("write", &tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| CaError::io("rename into place", path, e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
        return result;
    }

    // Make the rename itself durable; failure here is not worth failing
    // start-up over, the data is already in place.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Creates `path` with `contents` and `mode` unless it exists, whole or
/// not at all; returns false (writing nothing) when it exists already.
/// Processes creating the same file at once agree on one content: the
/// file appears by `link(2)`, which never replaces.
pub(crate) fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<bool, CaError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Unique to this call, even among threads of one process.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.{}.{n}.new", std::process::id()));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(|e| CaError::io("create", &tmp, e))?;
        file.write_all(contents)
            .and_then(|()| file.sync_all())
            .map_err(|e| CaError::io("write", &tmp, e))?;
        match fs::hard_link(&tmp, path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(CaError::io("link into place", path, e)),
        }
    })();
    let _ = fs::remove_file(&tmp);
    if let Ok(true) = result
        && let Ok(d) = File::open(dir)
    {
        let _ = d.sync_all();
    }
    result
}

/// PEM armour with the customary 64-column lines.
pub(crate) fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for (i, c) in b64.chars().enumerate() {
        if i > 0 && i % 64 == 0 {
            out.push('\n');
        }
        out.push(c);
    }
    out.push_str(&format!("\n-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_sets_mode_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        write_atomic(&p, b"one", PRIVATE).unwrap();
        write_atomic(&p, b"two", PRIVATE).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(!dir.path().join(".k.tmp").exists());
    }

    #[test]
    fn write_atomic_survives_stale_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(".k.tmp"), b"junk").unwrap();
        let p = dir.path().join("k");
        write_atomic(&p, b"ok", PRIVATE).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"ok");
    }

    #[test]
    fn secrets_readable_by_others_are_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        // (mode, accepted)
        for (mode, ok) in [
            (0o600, true),
            (0o400, true),
            (0o640, false),
            (0o644, false),
            (0o604, false),
        ] {
            fs::write(&p, b"secret").unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
            match read_secret(&p) {
                Ok(b) => assert!(ok && b.is_some(), "mode {mode:o} accepted"),
                Err(e) => {
                    assert!(!ok, "mode {mode:o} refused: {e}");
                    let msg = e.to_string();
                    assert!(msg.contains(&format!("chmod 600 {}", p.display())), "{msg}");
                }
            }
        }
    }

    #[test]
    fn write_new_never_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        assert!(write_new(&p, b"one", PRIVATE).unwrap());
        assert!(!write_new(&p, b"two", PRIVATE).unwrap());
        assert_eq!(fs::read(&p).unwrap(), b"one");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn read_optional_missing_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_optional(&dir.path().join("nope")).unwrap().is_none());
    }
}
