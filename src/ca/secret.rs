//! Sealing of BMC credentials at rest.
//!
//! BMC passwords give full control over a node's hardware, and the inventory
//! database is the file most likely to be copied around (backups, bug
//! reports). Sealing them with a key kept in a separate owner-only file means
//! a copy of the database alone does not reveal them. The key file must be
//! backed up together with the database: without it the sealed values cannot
//! be recovered.
//!
//! The `v1:` prefix leaves room for a different scheme later without having
//! to guess what an old value is.

use std::fmt;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

use super::CaError;
use super::files::{self, PRIVATE};

pub(crate) const SECRET_KEY: &str = "secret.key";
const KEY_LEN: usize = 32;
const PREFIX: &str = "v1:";

/// AES-256-GCM sealing key for secrets stored in the database.
pub struct SecretBox {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretBox").finish_non_exhaustive()
    }
}

impl SecretBox {
    /// Loads `<dir>/ca/secret.key` (32 raw bytes), creating it with mode
    /// 0600 on first use. A key file of the wrong size is an error rather
    /// than being replaced, since replacing it would make every stored secret
    /// unreadable.
    pub fn load_or_create(state_dir: &Path) -> Result<SecretBox, CaError> {
        let dir = files::ca_dir(state_dir)?;
        Self::load_file(&dir.join(SECRET_KEY), true)?
            .ok_or_else(|| CaError::bad_file(dir.join(SECRET_KEY), "missing"))
    }

    /// Loads a 32-byte key file at `path` (refused when others may read
    /// it), creating it with mode 0600 when `create` is set; `None` when
    /// it does not exist and may not be created. The key-encryption key of
    /// a shared store is such a file, outside `ca/`.
    pub fn load_file(path: &Path, create: bool) -> Result<Option<SecretBox>, CaError> {
        let rng = SystemRandom::new();
        let bytes = match files::read_secret(path)? {
            Some(bytes) => bytes,
            None if !create => return Ok(None),
            None => {
                let mut bytes = vec![0u8; KEY_LEN];
                rng.fill(&mut bytes).map_err(|_| CaError::Random)?;
                // Never replaces a key another process created meanwhile:
                // then that one is used.
                if files::write_new(path, &bytes, PRIVATE)? {
                    tracing::info!(path = %path.display(), "created a sealing key");
                    bytes
                } else {
                    files::read_secret(path)?
                        .ok_or_else(|| CaError::bad_file(path, "vanished while being created"))?
                }
            }
        };
        if bytes.len() != KEY_LEN {
            return Err(CaError::bad_file(
                path,
                format!(
                    "expected {KEY_LEN} bytes, found {}; restore the original key file, \
                     secrets sealed with it cannot be read otherwise",
                    bytes.len()
                ),
            ));
        }
        let key = UnboundKey::new(&AES_256_GCM, &bytes)
            .map_err(|_| CaError::bad_file(path, "unusable as an AES-256 key"))?;
        Ok(Some(SecretBox {
            key: LessSafeKey::new(key),
            rng,
        }))
    }

    /// `"v1:" + base64(nonce || ciphertext || tag)` with a fresh random
    /// nonce, so sealing the same value twice gives different strings. The
    /// empty string stays empty, meaning "no secret set".
    pub fn seal(&self, plaintext: &str) -> Result<String, CaError> {
        if plaintext.is_empty() {
            return Ok(String::new());
        }
        self.seal_bytes(b"", plaintext.as_bytes())
    }

    /// Reverses [`SecretBox::seal`]. Anything not produced by `seal` with
    /// this key, including a modified value, is an error.
    pub fn open(&self, sealed: &str) -> Result<String, CaError> {
        if sealed.is_empty() {
            return Ok(String::new());
        }
        let plain = self.open_bytes(b"", sealed)?;
        String::from_utf8(plain).map_err(|_| CaError::Unseal("not UTF-8"))
    }

    /// Seals `plaintext` bound to `purpose` (authenticated, not encrypted):
    /// a value opens only under the purpose it was sealed for, so one
    /// sealed value cannot be passed off as another.
    pub fn seal_bytes(&self, purpose: &[u8], plaintext: &[u8]) -> Result<String, CaError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| CaError::Random)?;
        let mut buf = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(purpose),
                &mut buf,
            )
            .map_err(|_| CaError::Seal)?;
        let mut out = Vec::with_capacity(NONCE_LEN + buf.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&buf);
        Ok(format!("{PREFIX}{}", STANDARD.encode(out)))
    }

    /// Reverses [`SecretBox::seal_bytes`] for the same `purpose`.
    pub fn open_bytes(&self, purpose: &[u8], sealed: &str) -> Result<Vec<u8>, CaError> {
        let body = sealed
            .strip_prefix(PREFIX)
            .ok_or(CaError::Unseal("unknown format (expected \"v1:\" prefix)"))?;
        let raw = STANDARD
            .decode(body)
            .map_err(|_| CaError::Unseal("invalid base64"))?;
        if raw.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(CaError::Unseal("too short"));
        }
        let (nonce, ciphertext) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| CaError::Unseal("invalid nonce"))?;
        let mut buf = ciphertext.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(purpose), &mut buf)
            .map_err(|_| {
                CaError::Unseal("authentication failed (tampered, or sealed with another key)")
            })?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn sb() -> (tempfile::TempDir, SecretBox) {
        let dir = tempfile::tempdir().unwrap();
        let sb = SecretBox::load_or_create(dir.path()).unwrap();
        (dir, sb)
    }

    #[test]
    fn round_trip() {
        let (_d, s) = sb();
        for p in ["hunter2", "p@ss wörd ✓", &"x".repeat(10_000)] {
            let sealed = s.seal(p).unwrap();
            assert!(sealed.starts_with("v1:"));
            assert!(!sealed.contains(p));
            assert_eq!(s.open(&sealed).unwrap(), p);
        }
    }

    #[test]
    fn empty_stays_empty() {
        let (_d, s) = sb();
        assert_eq!(s.seal("").unwrap(), "");
        assert_eq!(s.open("").unwrap(), "");
    }

    #[test]
    fn nonces_differ() {
        let (_d, s) = sb();
        assert_ne!(s.seal("same").unwrap(), s.seal("same").unwrap());
    }

    #[test]
    fn key_persists_with_private_mode() {
        let dir = tempfile::tempdir().unwrap();
        let a = SecretBox::load_or_create(dir.path()).unwrap();
        let path = dir.path().join("ca").join(SECRET_KEY);
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.len(), KEY_LEN as u64);
        let sealed = a.seal("pw").unwrap();
        let b = SecretBox::load_or_create(dir.path()).unwrap();
        assert_eq!(b.open(&sealed).unwrap(), "pw");
    }

    #[test]
    fn other_key_cannot_open() {
        let (_d1, a) = sb();
        let (_d2, b) = sb();
        assert!(matches!(
            b.open(&a.seal("pw").unwrap()),
            Err(CaError::Unseal(_))
        ));
    }

    #[test]
    fn tampering_and_garbage_are_rejected() {
        let (_d, s) = sb();
        let sealed = s.seal("secret").unwrap();
        let raw = STANDARD.decode(&sealed[3..]).unwrap();
        for i in 0..raw.len() {
            let mut t = raw.clone();
            t[i] ^= 0x01;
            let bad = format!("v1:{}", STANDARD.encode(&t));
            assert!(s.open(&bad).is_err(), "flip at byte {i} accepted");
        }
        let truncated = format!("v1:{}", STANDARD.encode(&raw[..raw.len() - 1]));
        for bad in [
            "secret",
            "v1:",
            "v1:!!!",
            "v2:AAAA",
            "v1:AAAA",
            &sealed[3..],
            &truncated,
            &format!("{sealed}AAAA"),
        ] {
            assert!(s.open(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_value_opens_only_for_its_purpose() {
        let (_d, s) = sb();
        let sealed = s.seal_bytes(b"token", b"key bytes").unwrap();
        // (purpose given to open, opens)
        for (purpose, opens) in [
            (&b"token"[..], true),
            (b"ca", false),
            (b"", false),
            (b"token ", false),
        ] {
            let r = s.open_bytes(purpose, &sealed);
            assert_eq!(r.is_ok(), opens, "{:?}", String::from_utf8_lossy(purpose));
            if opens {
                assert_eq!(r.unwrap(), b"key bytes");
            }
        }
        // The plain form is the empty purpose.
        let plain = s.seal("pw").unwrap();
        assert_eq!(s.open_bytes(b"", &plain).unwrap(), b"pw");
        assert!(s.open_bytes(b"token", &plain).is_err());
    }

    #[test]
    fn a_key_file_elsewhere_is_created_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("kek.key");
        assert!(SecretBox::load_file(&p, false).unwrap().is_none());
        assert!(!p.exists());
        let a = SecretBox::load_file(&p, true).unwrap().unwrap();
        let b = SecretBox::load_file(&p, false).unwrap().unwrap();
        assert_eq!(b.open(&a.seal("pw").unwrap()).unwrap(), "pw");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(SecretBox::load_file(&p, false).is_err());
    }

    #[test]
    fn wrong_size_key_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("ca")).unwrap();
        std::fs::write(dir.path().join("ca").join(SECRET_KEY), b"short").unwrap();
        let err = SecretBox::load_or_create(dir.path()).unwrap_err();
        assert!(
            matches!(&err, CaError::BadFile { path, .. } if path.ends_with(SECRET_KEY)),
            "{err}"
        );
    }
}
