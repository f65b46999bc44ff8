//! Keys the head nodes of a shared store have in common.
//!
//! A token one head issues must be accepted by every other, a BMC password
//! one head sealed must open on every other, and clients pin one root CA
//! whichever head they reach. So on a PostgreSQL store the root CA, the
//! token keys and the sealing key live in the database, each sealed with a
//! key-encryption key (KEK) file the operator copies to every head
//! (`ca::bundle`). Before anything reads `ca/`, [`sync`] writes the
//! database's bundles there (or, on an empty database, uploads this head's
//! own); from then on every reader of those files is unchanged. Each head
//! still issues its own listener certificate, from the shared root, for its
//! own names. With SQLite (one head) none of this runs.
//!
//! The glue lives here because `ca` and `inventory` are leaves that know
//! nothing of each other.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use tokio_util::sync::CancellationToken;

use crate::ca::bundle::{self, Purpose};
use crate::ca::{Authority, CaError, SecretBox, TokenKeys};
use crate::config::Config;
use crate::http::AppState;
use crate::inventory::model::SharedSecret;
use crate::inventory::{DomainError, Store};

/// Makes `<state>/ca/` hold the shared store's key bundles, uploading this
/// head's keys for any purpose the database has none of yet (the first
/// head on an empty database, or `store migrate`'s). Creates the KEK only
/// when the database holds no bundle at all; otherwise a missing or wrong
/// KEK refuses the start, saying which file to copy. Returns the KEK, or
/// `None` on SQLite.
pub async fn sync(store: &Store, config: &Config) -> anyhow::Result<Option<Arc<SecretBox>>> {
    if config.store.url.is_empty() {
        return Ok(None);
    }
    let dir = config.state_dir.clone();
    let kek_path = config.store.kek_path(&dir);
    let held = store.snapshot().shared_secrets.clone();

    let (d, p, empty) = (dir.clone(), kek_path.clone(), held.is_empty());
    let (kek, ours) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let kek = load_kek(&p, empty)?;
        let missing: Vec<Purpose> = Purpose::ALL
            .into_iter()
            .filter(|p| !held.contains_key(p.name()))
            .collect();
        let ours = if missing.is_empty() {
            Vec::new()
        } else {
            seal_own(&d, &kek, &missing)?
        };
        Ok((kek, ours))
    })
    .await
    .context("key start-up task failed")??;

    if !ours.is_empty() {
        let now = chrono::Utc::now();
        store
            .write(move |t| {
                // Another head may have uploaded first: its keys win.
                for (purpose, sealed) in ours {
                    if !t.model().shared_secrets.contains_key(purpose.name()) {
                        t.put_shared_secret(SharedSecret {
                            purpose: purpose.name().to_string(),
                            sealed,
                            updated_at: now,
                        });
                    }
                }
                Ok(())
            })
            .await
            .context("cannot store the shared keys")?;
    }

    let held = store.snapshot().shared_secrets.clone();
    let kek = Arc::new(kek);
    let k = kek.clone();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        for purpose in Purpose::ALL {
            let Some(s) = held.get(purpose.name()) else {
                bail!("the shared store lost the {} keys", purpose.name());
            };
            // A head that served alone before had clients pin its own root.
            let own_root = purpose == Purpose::Ca && dir.join("ca").join("root.crt").exists();
            if install(&dir, purpose, &k, &s.sealed, &kek_path)? {
                if own_root {
                    tracing::warn!(
                        "this head's own root CA was replaced by the shared store's: clients that \
                         trusted the old root must trust the new one (`openchami ca show`)"
                    );
                }
                tracing::info!(
                    purpose = purpose.name(),
                    "installed the shared store's keys in {}",
                    dir.join("ca").display()
                );
            }
        }
        Ok(())
    })
    .await
    .context("key start-up task failed")??;
    Ok(Some(kek))
}

/// Follows the shared store: when another head rotates the token key, its
/// bundle is installed here and served at once (tokens signed by the new
/// key are accepted, new tokens are signed with it).
pub async fn follow(st: AppState, kek: Arc<SecretBox>, stop: CancellationToken) {
    let mut rx = st.store.subscribe();
    let token = Purpose::Token.name();
    let mut seen = st.store.snapshot().shared_secrets.get(token).cloned();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            r = rx.changed() => if r.is_err() { return },
        }
        // Every commit wakes this; only a changed token row costs more
        // than a look-up.
        let snap = st.store.snapshot();
        let now = snap.shared_secrets.get(token);
        if now == seen.as_ref() {
            continue;
        }
        seen = now.cloned();
        let Some(s) = seen.clone() else { continue };
        let (dir, k) = (st.config.state_dir.clone(), kek.clone());
        let kek_path = st.config.store.kek_path(&dir);
        let loaded = tokio::task::spawn_blocking(move || {
            install(&dir, Purpose::Token, &k, &s.sealed, &kek_path)?;
            Ok::<_, anyhow::Error>(TokenKeys::load_or_create(&dir)?)
        })
        .await;
        match loaded {
            Ok(Ok(keys)) => {
                tracing::info!(kids = ?keys.kids(), "took the shared store's token keys");
                st.tokens.replace(keys);
            }
            Ok(Err(e)) => tracing::error!(error = %e, "cannot take the shared store's token keys"),
            Err(e) => tracing::error!(error = %e, "token key task failed"),
        }
    }
}

/// Replaces the token signing key of a running appliance with a new one,
/// keeping the old public key for the tokens it signed; on a shared store
/// for every head ([`rotate_shared`]). Returns the new key's id.
pub async fn rotate_token_key(st: &AppState) -> anyhow::Result<String> {
    let dir = st.config.state_dir.clone();
    let shared = !st.config.store.url.is_empty();
    if shared {
        rotate_shared(&st.store, &st.config).await?;
    }
    let keys = tokio::task::spawn_blocking(move || {
        let keys = TokenKeys::load_or_create(&dir)?;
        if !shared {
            keys.rotate(&dir)?;
        }
        Ok::<_, CaError>(keys)
    })
    .await??;
    st.tokens.replace(keys);
    Ok(st.tokens.current_kid())
}

/// Rotates the shared store's token key: the new bundle goes to the
/// database (a compare-and-set on its row, done again on top of another
/// head's rotation that won the race), so every head takes it through the
/// change feed, and into `<state>/ca/`. Returns the new key's id.
pub async fn rotate_shared(store: &Store, config: &Config) -> anyhow::Result<String> {
    let dir = config.state_dir.clone();
    let kek_path = config.store.kek_path(&dir);
    for _ in 0..3 {
        let expected = store
            .snapshot()
            .shared_secrets
            .get(Purpose::Token.name())
            .map(|s| s.sealed.clone());
        let (d, p, e) = (dir.clone(), kek_path.clone(), expected.clone());
        let (sealed, kid) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let kek = load_kek(&p, false)?;
            // Start from what the store holds, not from a stale copy.
            if let Some(e) = &e {
                install(&d, Purpose::Token, &kek, e, &p)?;
            }
            let keys = TokenKeys::load_or_create(&d)?;
            keys.rotate(&d)?;
            let sealed = bundle::seal_local(&d, Purpose::Token, &kek)?
                .context("the token key vanished while rotating")?;
            Ok((sealed, keys.current_kid()))
        })
        .await??;
        let now = chrono::Utc::now();
        let written = store
            .write(move |t| {
                let current = t
                    .model()
                    .shared_secrets
                    .get(Purpose::Token.name())
                    .map(|s| &s.sealed);
                if current != expected.as_ref() {
                    return Err(DomainError::Conflict(
                        "another head rotated the token key meanwhile".into(),
                    ));
                }
                t.put_shared_secret(SharedSecret {
                    purpose: Purpose::Token.name().to_string(),
                    sealed,
                    updated_at: now,
                });
                Ok(())
            })
            .await;
        match written {
            Ok(()) => return Ok(kid),
            Err(crate::inventory::WriteError::Domain(DomainError::Conflict(_))) => continue,
            Err(e) => return Err(e).context("cannot store the rotated token key"),
        }
    }
    bail!("the token key kept changing under the rotation; try again")
}

/// Seals this head's own keys (created first where missing) for `purposes`.
pub fn seal_own(
    dir: &Path,
    kek: &SecretBox,
    purposes: &[Purpose],
) -> anyhow::Result<Vec<(Purpose, String)>> {
    Authority::ensure_root(dir)?;
    TokenKeys::load_or_create(dir)?;
    SecretBox::load_or_create(dir)?;
    let mut out = Vec::new();
    for &purpose in purposes {
        let sealed = bundle::seal_local(dir, purpose, kek)?
            .with_context(|| format!("no {} keys in {}", purpose.name(), dir.display()))?;
        out.push((purpose, sealed));
    }
    Ok(out)
}

/// The KEK at `path`, created when `create` (nothing is sealed with any
/// KEK yet); missing otherwise is the one-line refusal operators see.
pub fn load_kek(path: &Path, create: bool) -> anyhow::Result<SecretBox> {
    match SecretBox::load_file(path, create)? {
        Some(k) => Ok(k),
        None => bail!(
            "the shared store's keys are sealed with a key-encryption key and {} does not exist: \
             copy it (mode 0600) from a head already serving this database, or from where \
             `openchami store migrate` ran",
            path.display()
        ),
    }
}

/// Installs one bundle, turning a KEK that does not open it into the
/// one-line refusal.
fn install(
    dir: &Path,
    purpose: Purpose,
    kek: &SecretBox,
    sealed: &str,
    kek_path: &Path,
) -> anyhow::Result<bool> {
    match bundle::install_sealed(dir, purpose, kek, sealed) {
        Err(CaError::Unseal(_)) => bail!(
            "{} is not the key-encryption key the shared store's keys were sealed with: \
             copy kek.key (mode 0600) from a head already serving this database",
            kek_path.display()
        ),
        r => Ok(r?),
    }
}
