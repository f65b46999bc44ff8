//! Key bundles: the keys of `ca/` as sealed values, for a shared store.
//!
//! Head nodes sharing one database must sign, verify and unseal alike, so
//! the root CA, the token keys and the BMC-credential sealing key travel
//! through the database. Each purpose's files go as one value sealed with a
//! key-encryption key (KEK) that never enters the database, so a copy of
//! the database alone opens nothing. The purpose is bound to the sealed
//! value, so the token bundle can never be taken for the CA's.
//!
//! On each head a bundle is written back into `ca/` as the very files it
//! came from, so everything that reads them (listener certificates,
//! `token issue`, `ca show`, the sealing of BMC passwords) is unchanged.
//! The listener certificate is not in any bundle: each head issues its own
//! from the shared root, for its own names.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use super::files::{self, PRIVATE, PUBLIC};
use super::{CaError, SecretBox, authority, secret, token};

/// What a bundle holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The root certificate and its key.
    Ca,
    /// The token signing key and the retired public keys.
    Token,
    /// The key BMC credentials are sealed with.
    Sealing,
}

/// A file of a bundle: name in `ca/`, mode, whether a bundle needs it.
struct File {
    name: &'static str,
    mode: u32,
    required: bool,
}

impl Purpose {
    pub const ALL: [Purpose; 3] = [Purpose::Ca, Purpose::Token, Purpose::Sealing];

    /// The bundle's key in the store.
    pub fn name(self) -> &'static str {
        match self {
            Purpose::Ca => "ca",
            Purpose::Token => "token",
            Purpose::Sealing => "sealing",
        }
    }

    pub fn from_name(name: &str) -> Option<Purpose> {
        Purpose::ALL.into_iter().find(|p| p.name() == name)
    }

    fn files(self) -> &'static [File] {
        const fn f(name: &'static str, mode: u32, required: bool) -> File {
            File {
                name,
                mode,
                required,
            }
        }
        const CA: &[File] = &[
            f(authority::ROOT_CERT, PUBLIC, true),
            f(authority::ROOT_KEY, PRIVATE, true),
        ];
        const TOKEN: &[File] = &[
            f(token::TOKEN_KEY, PRIVATE, true),
            f(token::RETIRED_KEYS, PUBLIC, false),
        ];
        const SEALING: &[File] = &[f(secret::SECRET_KEY, PRIVATE, true)];
        match self {
            Purpose::Ca => CA,
            Purpose::Token => TOKEN,
            Purpose::Sealing => SEALING,
        }
    }

    /// Associated data of the sealed value.
    fn aad(self) -> Vec<u8> {
        format!("openchami key bundle: {}", self.name()).into_bytes()
    }
}

/// The plaintext of a bundle: file name → base64 contents.
#[derive(Serialize, Deserialize)]
struct Plain {
    files: BTreeMap<String, String>,
}

/// The purpose's files in `<state_dir>/ca/`, sealed with `kek`; `None`
/// when a file the bundle needs does not exist there.
pub fn seal_local(
    state_dir: &Path,
    purpose: Purpose,
    kek: &SecretBox,
) -> Result<Option<String>, CaError> {
    let dir = files::ca_dir(state_dir)?;
    let mut plain = Plain {
        files: BTreeMap::new(),
    };
    for f in purpose.files() {
        let path = dir.join(f.name);
        let read = if f.mode == PRIVATE {
            files::read_secret(&path)?
        } else {
            files::read_optional(&path)?
        };
        match read {
            Some(bytes) => {
                plain
                    .files
                    .insert(f.name.to_owned(), STANDARD.encode(bytes));
            }
            None if f.required => return Ok(None),
            None => {}
        }
    }
    let json = serde_json::to_vec(&plain).map_err(|_| CaError::Seal)?;
    kek.seal_bytes(&purpose.aad(), &json).map(Some)
}

/// Opens a bundle sealed by [`seal_local`] (on this head or another) and
/// writes its files into `<state_dir>/ca/` where they differ; an optional
/// file the bundle lacks is removed. Returns whether anything changed.
/// Nothing is written unless the whole bundle opens and is complete.
pub fn install_sealed(
    state_dir: &Path,
    purpose: Purpose,
    kek: &SecretBox,
    sealed: &str,
) -> Result<bool, CaError> {
    let json = kek.open_bytes(&purpose.aad(), sealed)?;
    let plain: Plain =
        serde_json::from_slice(&json).map_err(|_| CaError::Unseal("not a key bundle"))?;
    let mut wanted = Vec::new();
    for f in purpose.files() {
        match plain.files.get(f.name) {
            Some(b64) => {
                let bytes = STANDARD
                    .decode(b64)
                    .map_err(|_| CaError::Unseal("a bundle file is not base64"))?;
                wanted.push((f, Some(bytes)));
            }
            None if f.required => return Err(CaError::Unseal("the bundle lacks a key file")),
            None => wanted.push((f, None)),
        }
    }
    let dir = files::ca_dir(state_dir)?;
    let mut changed = false;
    for (f, contents) in wanted {
        let path = dir.join(f.name);
        let have = files::read_optional(&path)?;
        match contents {
            Some(bytes) if have.as_deref() != Some(bytes.as_slice()) => {
                files::write_atomic(&path, &bytes, f.mode)?;
                changed = true;
            }
            Some(_) => {}
            None if have.is_some() => {
                std::fs::remove_file(&path).map_err(|e| CaError::io("remove", &path, e))?;
                changed = true;
            }
            None => {}
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::{Authority, TokenKeys};
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    /// A state directory with every key file, a retired token key included.
    fn full_state() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        Authority::ensure_root(dir.path()).unwrap();
        let keys = TokenKeys::load_or_create(dir.path()).unwrap();
        keys.rotate(dir.path()).unwrap();
        SecretBox::load_or_create(dir.path()).unwrap();
        dir
    }

    fn new_kek() -> (tempfile::TempDir, SecretBox) {
        let dir = tempfile::tempdir().unwrap();
        let k = SecretBox::load_file(&dir.path().join("kek.key"), true)
            .unwrap()
            .unwrap();
        (dir, k)
    }

    fn ca_file(dir: &Path, name: &str) -> Option<Vec<u8>> {
        fs::read(dir.join("ca").join(name)).ok()
    }

    #[test]
    fn bundles_round_trip_into_another_state_dir() {
        let from = full_state();
        let (_k, kek) = new_kek();
        for purpose in Purpose::ALL {
            let to = tempfile::tempdir().unwrap();
            let sealed = seal_local(from.path(), purpose, &kek).unwrap().unwrap();
            assert!(sealed.starts_with("v1:"));
            assert!(install_sealed(to.path(), purpose, &kek, &sealed).unwrap());
            // Installing the same again changes nothing.
            assert!(!install_sealed(to.path(), purpose, &kek, &sealed).unwrap());
            for f in purpose.files() {
                assert_eq!(
                    ca_file(to.path(), f.name),
                    ca_file(from.path(), f.name),
                    "{}: {}",
                    purpose.name(),
                    f.name
                );
                let mode = fs::metadata(to.path().join("ca").join(f.name))
                    .unwrap()
                    .permissions()
                    .mode();
                assert_eq!(mode & 0o777, f.mode, "{}", f.name);
            }
        }
        // The installed keys are usable as they are.
        let to = tempfile::tempdir().unwrap();
        for purpose in Purpose::ALL {
            let sealed = seal_local(from.path(), purpose, &kek).unwrap().unwrap();
            install_sealed(to.path(), purpose, &kek, &sealed).unwrap();
        }
        let (a, b) = (
            TokenKeys::load_or_create(from.path()).unwrap(),
            TokenKeys::load_or_create(to.path()).unwrap(),
        );
        assert_eq!(a.kids(), b.kids());
        assert_eq!(a.kids().len(), 2);
        let sealed = SecretBox::load_or_create(from.path())
            .unwrap()
            .seal("pw")
            .unwrap();
        assert_eq!(
            SecretBox::load_or_create(to.path())
                .unwrap()
                .open(&sealed)
                .unwrap(),
            "pw"
        );
    }

    #[test]
    fn a_bundle_opens_only_with_its_kek_and_purpose() {
        let from = full_state();
        let (_k1, kek) = new_kek();
        let (_k2, other) = new_kek();
        let sealed = seal_local(from.path(), Purpose::Token, &kek)
            .unwrap()
            .unwrap();
        let mut tampered = sealed.clone().into_bytes();
        let i = tampered.len() - 5;
        tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        // (what, kek, purpose, sealed value)
        let cases: [(&str, &SecretBox, Purpose, &str); 6] = [
            ("another KEK", &other, Purpose::Token, &sealed),
            ("as the CA bundle", &kek, Purpose::Ca, &sealed),
            ("as the sealing key", &kek, Purpose::Sealing, &sealed),
            ("tampered", &kek, Purpose::Token, &tampered),
            ("empty", &kek, Purpose::Token, ""),
            ("not sealed", &kek, Purpose::Token, "{\"files\":{}}"),
        ];
        for (what, k, purpose, value) in cases {
            let to = tempfile::tempdir().unwrap();
            let err = install_sealed(to.path(), purpose, k, value);
            assert!(matches!(err, Err(CaError::Unseal(_))), "{what}: {err:?}");
            // Nothing was written.
            for f in purpose.files() {
                assert!(ca_file(to.path(), f.name).is_none(), "{what}: {}", f.name);
            }
        }
        assert!(
            install_sealed(
                tempfile::tempdir().unwrap().path(),
                Purpose::Token,
                &kek,
                &sealed
            )
            .is_ok()
        );
    }

    #[test]
    fn incomplete_bundles_are_neither_sealed_nor_installed() {
        let (_k, kek) = new_kek();
        let empty = tempfile::tempdir().unwrap();
        for purpose in Purpose::ALL {
            assert!(seal_local(empty.path(), purpose, &kek).unwrap().is_none());
        }
        // (purpose, plaintext files)
        let cases = [
            (Purpose::Ca, r#"{"files":{"root.crt":"AAAA"}}"#),
            (Purpose::Token, r#"{"files":{"token.retired":"AAAA"}}"#),
            (Purpose::Sealing, r#"{"files":{"secret.key":"!!"}}"#),
            (Purpose::Sealing, r#"{"nothing":1}"#),
        ];
        for (purpose, plain) in cases {
            let sealed = kek.seal_bytes(&purpose.aad(), plain.as_bytes()).unwrap();
            let to = tempfile::tempdir().unwrap();
            assert!(
                install_sealed(to.path(), purpose, &kek, &sealed).is_err(),
                "{plain}"
            );
            for f in purpose.files() {
                assert!(ca_file(to.path(), f.name).is_none(), "{plain}: {}", f.name);
            }
        }
    }

    #[test]
    fn a_bundle_without_retired_keys_removes_the_local_list() {
        let from = tempfile::tempdir().unwrap();
        TokenKeys::load_or_create(from.path()).unwrap();
        let (_k, kek) = new_kek();
        let sealed = seal_local(from.path(), Purpose::Token, &kek)
            .unwrap()
            .unwrap();
        let to = full_state();
        assert!(ca_file(to.path(), token::RETIRED_KEYS).is_some());
        assert!(install_sealed(to.path(), Purpose::Token, &kek, &sealed).unwrap());
        assert!(ca_file(to.path(), token::RETIRED_KEYS).is_none());
        assert_eq!(
            TokenKeys::load_or_create(to.path()).unwrap().kids(),
            TokenKeys::load_or_create(from.path()).unwrap().kids()
        );
    }

    #[test]
    fn purposes_have_stable_names() {
        for p in Purpose::ALL {
            assert_eq!(Purpose::from_name(p.name()), Some(p));
        }
        assert_eq!(Purpose::from_name("root"), None);
    }
}
