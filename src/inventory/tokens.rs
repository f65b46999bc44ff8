//! What `/oauth/token` must remember: bootstrap tokens already exchanged and
//! refresh-token families.
//!
//! Both live in the store so a restart neither makes a bootstrap token good
//! again nor logs every service out. A family is one exchange's chain of
//! refresh tokens: only the SHA-256 of the one token that is good now is
//! kept, so a token presented after it was rotated out (someone replaying
//! a stolen copy, or the owner after the thief used it) is recognised by
//! its family id and ends the whole family, as RFC 9700 §4.14.2 asks.
//! Records go once they have expired; no clock is read here, callers pass
//! `now` (Unix seconds).

use serde::{Deserialize, Serialize};

use super::DomainError;
use super::store::Txn;

/// How long past its `exp` a used bootstrap token is remembered: token
/// checks allow this much clock difference, so until then it would still
/// verify.
pub const BOOTSTRAP_GRACE: i64 = 60;

/// A bootstrap token already exchanged, by its `jti`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsedBootstrap {
    pub jti: String,
    /// The token's own expiry; the record goes [`BOOTSTRAP_GRACE`] later.
    pub exp: i64,
    pub used_at: i64,
}

/// The refresh tokens handed out for one exchange and what they grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshFamily {
    /// Random, public: the first part of each of the family's tokens.
    pub id: String,
    /// SHA-256 (hex) of the refresh token that is good now.
    pub current: String,
    pub sub: String,
    pub aud: Vec<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub scope: Vec<String>,
    pub issued_at: i64,
    /// Fixed at the exchange: rotation never extends it.
    pub expires_at: i64,
    pub last_used: i64,
    /// Rotations so far.
    #[serde(default)]
    pub uses: u64,
    /// Set when a rotated-out token came back; nothing of the family is
    /// good after that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<i64>,
}

/// What presenting a refresh token came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refresh {
    /// Good: the family now expects `new_hash`; here it is as it stands.
    Rotated(RefreshFamily),
    /// No such family (never was, or expired and forgotten).
    Unknown,
    Expired,
    /// Revoked earlier.
    Revoked,
    /// A token of the family that was already rotated out: the family is
    /// revoked by this very call.
    Replayed,
}

/// Forgets used bootstrap tokens and families that have expired.
pub fn prune(txn: &mut Txn<'_>, now: i64) {
    let stale: Vec<String> = txn
        .model()
        .used_bootstrap
        .values()
        .filter(|u| u.exp.saturating_add(BOOTSTRAP_GRACE) <= now)
        .map(|u| u.jti.clone())
        .collect();
    for jti in stale {
        txn.delete_used_bootstrap(&jti);
    }
    let stale: Vec<String> = txn
        .model()
        .refresh_families
        .values()
        .filter(|f| f.expires_at <= now)
        .map(|f| f.id.clone())
        .collect();
    for id in stale {
        txn.delete_refresh_family(&id);
    }
}

/// Marks the bootstrap token `jti` (expiring at `exp`) used; refused if it
/// already was.
pub fn consume_bootstrap(
    txn: &mut Txn<'_>,
    jti: &str,
    exp: i64,
    now: i64,
) -> Result<(), DomainError> {
    prune(txn, now);
    if txn.model().used_bootstrap.contains_key(jti) {
        return Err(DomainError::Invalid(
            "the bootstrap token was already used".into(),
        ));
    }
    txn.put_used_bootstrap(UsedBootstrap {
        jti: jti.to_string(),
        exp,
        used_at: now,
    });
    Ok(())
}

/// Starts a family (its first token's hash is `current`).
pub fn start_family(txn: &mut Txn<'_>, family: RefreshFamily) -> Result<(), DomainError> {
    if txn.model().refresh_families.contains_key(&family.id) {
        // 128 random bits never collide; refusing beats overwriting.
        return Err(DomainError::Conflict("refresh family id in use".into()));
    }
    txn.put_refresh_family(family);
    Ok(())
}

/// Presents a refresh token of family `id` whose hash is `presented`; if
/// it is the current one, the family moves on to `new_hash`.
pub fn rotate(txn: &mut Txn<'_>, id: &str, presented: &str, new_hash: &str, now: i64) -> Refresh {
    let outcome = match txn.model().refresh_families.get(id).cloned() {
        None => Refresh::Unknown,
        Some(f) if f.revoked_at.is_some() => Refresh::Revoked,
        Some(f) if f.expires_at <= now => Refresh::Expired,
        Some(f) if f.current != presented => {
            txn.put_refresh_family(RefreshFamily {
                revoked_at: Some(now),
                ..f
            });
            Refresh::Replayed
        }
        Some(f) => {
            let next = RefreshFamily {
                current: new_hash.to_string(),
                last_used: now,
                uses: f.uses.saturating_add(1),
                ..f
            };
            txn.put_refresh_family(next.clone());
            Refresh::Rotated(next)
        }
    };
    prune(txn, now);
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::Store;

    const NOW: i64 = 1_750_000_000;

    fn family(id: &str, current: &str, expires_at: i64) -> RefreshFamily {
        RefreshFamily {
            id: id.into(),
            current: current.into(),
            sub: "boot-service".into(),
            aud: vec!["openchami".into()],
            roles: vec![],
            scope: vec!["read".into()],
            issued_at: NOW,
            expires_at,
            last_used: NOW,
            uses: 0,
            revoked_at: None,
        }
    }

    async fn rot(s: &Store, id: &str, presented: &str, new: &str, now: i64) -> Refresh {
        let (id, presented, new) = (id.to_string(), presented.to_string(), new.to_string());
        s.write(move |t| Ok(rotate(t, &id, &presented, &new, now)))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn rotation_replay_and_expiry() {
        let s = Store::open_in_memory().unwrap();
        s.write(|t| start_family(t, family("f1", "h0", NOW + 100)))
            .await
            .unwrap();
        s.write(|t| start_family(t, family("f2", "x0", NOW + 10)))
            .await
            .unwrap();
        // (family, presented, next, now, outcome kind)
        let cases: &[(&str, &str, &str, i64, &str)] = &[
            ("f1", "h0", "h1", NOW + 1, "rotated"),
            ("f1", "h1", "h2", NOW + 2, "rotated"),
            ("nope", "h2", "h3", NOW + 3, "unknown"),
            ("f2", "x0", "x1", NOW + 10, "expired"),
            // h1 was rotated out: the family dies, h2 with it.
            ("f1", "h1", "h9", NOW + 4, "replayed"),
            ("f1", "h2", "h3", NOW + 5, "revoked"),
            ("f1", "h9", "h3", NOW + 5, "revoked"),
            // Past its expiry, the family is forgotten after one last answer.
            ("f1", "h2", "h3", NOW + 100, "revoked"),
            ("f1", "h2", "h3", NOW + 100, "unknown"),
        ];
        for (i, (id, presented, new, now, want)) in cases.iter().enumerate() {
            let got = rot(&s, id, presented, new, *now).await;
            let kind = match &got {
                Refresh::Rotated(f) => {
                    assert_eq!(f.current, *new, "case {i}");
                    "rotated"
                }
                Refresh::Unknown => "unknown",
                Refresh::Expired => "expired",
                Refresh::Revoked => "revoked",
                Refresh::Replayed => "replayed",
            };
            assert_eq!(kind, *want, "case {i}: {got:?}");
        }
        assert!(s.snapshot().refresh_families.is_empty());
    }

    #[tokio::test]
    async fn bootstrap_is_one_time_until_it_expires() {
        let s = Store::open_in_memory().unwrap();
        let use_ = |jti: &'static str, exp: i64, now: i64| {
            s.write(move |t| consume_bootstrap(t, jti, exp, now))
        };
        use_("a", NOW + 60, NOW).await.unwrap();
        assert!(use_("a", NOW + 60, NOW + 1).await.is_err());
        use_("b", NOW + 60, NOW + 1).await.unwrap();
        // Still remembered within the grace after its expiry, gone after.
        assert!(
            use_("a", NOW + 60, NOW + 60 + BOOTSTRAP_GRACE - 1)
                .await
                .is_err()
        );
        use_("c", NOW + 1000, NOW + 60 + BOOTSTRAP_GRACE)
            .await
            .unwrap();
        let snap = s.snapshot();
        let left: Vec<&String> = snap.used_bootstrap.keys().collect();
        assert_eq!(left, ["c"]);
    }
}
