//! Bearer tokens for the API.
//!
//! Tokens are ES256 JWTs so that any holder of the published JWKS (other
//! services, the CLI, tests) can check them without a shared secret, and so
//! that a leaked verification key is harmless. Keys are identified by `kid`
//! so the signing key can be rotated while tokens signed by the previous one
//! stay valid until they expire.
//!
//! Verification runs on every API request, so the public keys are decoded
//! once at load time and [`TokenKeys::verify`] does no parsing beyond the
//! token itself.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use arc_swap::ArcSwap;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls_pki_types::SubjectPublicKeyInfoDer;
use rustls_pki_types::pem::PemObject;
use serde::{Deserialize, Deserializer, Serialize};
use sha2::{Digest, Sha256};

use super::CaError;
use super::files::{self, PRIVATE, PUBLIC, pem_encode};

pub(crate) const TOKEN_KEY: &str = "token.key";
/// Public halves of signing keys that were rotated out, kept so tokens they
/// signed stay valid until they expire. Delete the file once that has
/// happened to stop accepting them.
pub(crate) const RETIRED_KEYS: &str = "token.retired";

/// Allowed clock difference between the issuer and the verifier.
const LEEWAY: i64 = 60;
/// Anything longer is not a token we issued; refusing early bounds the work
/// an unauthenticated request can cause.
const MAX_TOKEN_LEN: usize = 8 * 1024;

/// DER prefix of a SubjectPublicKeyInfo for an uncompressed P-256 point:
/// SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING (66 bytes) }.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];
const P256_POINT_LEN: usize = 65;

/// The claims carried by an API token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Claims {
    /// Missing is treated like empty, so both are reported as
    /// [`TokenError::MissingSubject`].
    #[serde(default)]
    pub sub: String,
    pub iss: String,
    /// Always written as an array; a single string is accepted on input as
    /// RFC 7519 allows.
    #[serde(deserialize_with = "one_or_many")]
    pub aud: Vec<String>,
    pub exp: i64,
    #[serde(default)]
    pub iat: i64,
    #[serde(default)]
    pub nbf: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// OAuth scopes. Written as an array (TokenSmith's form); a
    /// space-separated string (RFC 8693's) is accepted on input.
    #[serde(
        default,
        deserialize_with = "scopes",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub scope: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// `bootstrap` marks a one-time token that may only be exchanged at
    /// `/oauth/token`, never used on the API itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_use: Option<String>,
}

fn scopes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scopes {
        Text(String),
        List(Vec<String>),
    }
    Ok(match Option::<Scopes>::deserialize(d)? {
        None => Vec::new(),
        Some(Scopes::Text(s)) => s.split_whitespace().map(str::to_string).collect(),
        Some(Scopes::List(v)) => v,
    })
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// Why a token was refused. Callers should answer 401 for all of them; the
/// distinction is for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is malformed")]
    Malformed,
    #[error("token signature is invalid or not ES256")]
    BadSignature,
    #[error("token was signed by an unknown key")]
    UnknownKey,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token was issued by another issuer")]
    WrongIssuer,
    #[error("token is not meant for this audience")]
    WrongAudience,
    #[error("token has no subject")]
    MissingSubject,
}

/// A public key tokens may be signed with.
#[derive(Clone)]
struct VerifyingKey {
    kid: String,
    /// Uncompressed point, 0x04 || x || y.
    point: Vec<u8>,
    decoding: DecodingKey,
}

impl VerifyingKey {
    fn from_point(point: &[u8]) -> Option<VerifyingKey> {
        if point.len() != P256_POINT_LEN || point.first() != Some(&0x04) {
            return None;
        }
        Some(VerifyingKey {
            kid: kid_for(point),
            point: point.to_vec(),
            // jsonwebtoken's EC "DER" decoding key is the raw point that
            // ring's verifier takes.
            decoding: DecodingKey::from_ec_der(point),
        })
    }

    fn jwk(&self) -> serde_json::Value {
        let (x, y) = self.point[1..].split_at(32);
        serde_json::json!({
            "kty": "EC",
            "crv": "P-256",
            "kid": self.kid,
            "use": "sig",
            "alg": "ES256",
            "x": URL_SAFE_NO_PAD.encode(x),
            "y": URL_SAFE_NO_PAD.encode(y),
        })
    }

    fn spki_pem(&self) -> String {
        let mut der = P256_SPKI_PREFIX.to_vec();
        der.extend_from_slice(&self.point);
        pem_encode("PUBLIC KEY", &der)
    }
}

fn kid_for(point: &[u8]) -> String {
    let mut kid = hex::encode(Sha256::digest(point));
    kid.truncate(16);
    kid
}

/// The token signing key and every public key whose tokens are accepted.
///
/// The set can be replaced while requests use it ([`TokenKeys::replace`]):
/// on a shared store another head may rotate the key, and this one must
/// take the new set without a restart.
pub struct TokenKeys {
    set: ArcSwap<KeySet>,
}

struct KeySet {
    signing: EncodingKey,
    /// The current key first, then retired ones.
    verifying: Vec<VerifyingKey>,
}

impl fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenKeys")
            .field("kids", &self.kids())
            .finish_non_exhaustive()
    }
}

impl TokenKeys {
    /// Loads `<dir>/ca/token.key` (PKCS#8 PEM, P-256), creating it (mode
    /// 0600) on first use, plus any retired keys from `<dir>/ca/token.retired`.
    /// The `kid` is the first 16 hex digits of SHA-256 over the uncompressed
    /// public point, so it is stable across restarts without being stored.
    ///
    /// An unreadable key file is an error rather than being replaced, because
    /// replacing it would silently log every client out.
    pub fn load_or_create(state_dir: &Path) -> Result<TokenKeys, CaError> {
        let dir = files::ca_dir(state_dir)?;
        let key_path = dir.join(TOKEN_KEY);
        let key = match files::read_secret(&key_path)? {
            Some(pem) => parse_signing_key(&key_path, &pem)?,
            None => {
                let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
                files::write_atomic(&key_path, key.serialize_pem().as_bytes(), PRIVATE)?;
                tracing::info!(path = %key_path.display(), "created token signing key");
                key
            }
        };
        let current = VerifyingKey::from_point(key.public_key_raw())
            .ok_or_else(|| CaError::bad_file(&key_path, "not a P-256 key"))?;

        let mut verifying = vec![current];
        for retired in load_retired(&dir.join(RETIRED_KEYS))? {
            if verifying.iter().all(|k| k.kid != retired.kid) {
                verifying.push(retired);
            }
        }
        Ok(TokenKeys {
            set: ArcSwap::from_pointee(KeySet {
                signing: EncodingKey::from_ec_der(&key.serialize_der()),
                verifying,
            }),
        })
    }

    /// Serves `other`'s keys from now on (signing and verifying alike).
    pub fn replace(&self, other: TokenKeys) {
        self.set.store(other.set.load_full());
    }

    /// Every accepted key id, the current one first.
    pub fn kids(&self) -> Vec<String> {
        self.set
            .load()
            .verifying
            .iter()
            .map(|k| k.kid.clone())
            .collect()
    }

    /// Replaces the signing key with a new one. The old public key is kept
    /// (in memory and in `token.retired`) so tokens it signed remain valid
    /// until they expire.
    pub fn rotate(&self, state_dir: &Path) -> Result<(), CaError> {
        let dir = files::ca_dir(state_dir)?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let new = VerifyingKey::from_point(key.public_key_raw())
            .ok_or_else(|| CaError::Token("generated key is not P-256".into()))?;

        // Record the outgoing key as retired before replacing it, so a crash
        // in between never loses a key whose tokens are still in use.
        let old = self.set.load_full();
        let retired: String = old.verifying.iter().map(VerifyingKey::spki_pem).collect();
        files::write_atomic(&dir.join(RETIRED_KEYS), retired.as_bytes(), PUBLIC)?;
        files::write_atomic(
            &dir.join(TOKEN_KEY),
            key.serialize_pem().as_bytes(),
            PRIVATE,
        )?;

        tracing::info!(kid = %new.kid, "rotated token signing key");
        let mut verifying = vec![new];
        verifying.extend(old.verifying.iter().cloned());
        self.set.store(std::sync::Arc::new(KeySet {
            signing: EncodingKey::from_ec_der(&key.serialize_der()),
            verifying,
        }));
        Ok(())
    }

    /// The key id new tokens are signed with.
    pub fn current_kid(&self) -> String {
        current_kid(&self.set.load())
    }

    /// Signs a token for `sub`, valid from `now` for `ttl`.
    pub fn issue(
        &self,
        sub: &str,
        iss: &str,
        aud: &str,
        ttl: Duration,
        roles: &[String],
        now: i64,
    ) -> Result<String, CaError> {
        if sub.is_empty() {
            return Err(CaError::Token("subject must not be empty".into()));
        }
        let ttl = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
        let claims = Claims {
            sub: sub.to_owned(),
            iss: iss.to_owned(),
            aud: vec![aud.to_owned()],
            exp: now.saturating_add(ttl),
            iat: now,
            nbf: Some(now),
            roles: roles.to_vec(),
            scope: Vec::new(),
            jti: None,
            token_use: None,
        };
        self.sign(&claims)
    }

    /// Signs `claims` as they are (token exchange sets scopes, `jti` and
    /// `token_use` itself).
    pub fn sign(&self, claims: &Claims) -> Result<String, CaError> {
        if claims.sub.is_empty() {
            return Err(CaError::Token("subject must not be empty".into()));
        }
        let mut header = Header::new(Algorithm::ES256);
        let set = self.set.load();
        header.kid = Some(current_kid(&set));
        jsonwebtoken::encode(&header, claims, &set.signing)
            .map_err(|e| CaError::Token(e.to_string()))
    }

    /// Checks an ES256 token against the known keys (chosen by `kid`) and
    /// its claims against `issuer`, `audience` and `now`, allowing 60 s of
    /// clock difference. The signature is checked before any claim, so
    /// claim-specific errors are only reported for tokens we signed.
    pub fn verify(
        &self,
        token: &str,
        issuer: &str,
        audience: &str,
        now: i64,
    ) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };

        // An alg jsonwebtoken does not know (such as "none") fails here.
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.alg != Algorithm::ES256 {
            return Err(TokenError::BadSignature);
        }
        let set = self.set.load();
        let key = header
            .kid
            .as_deref()
            .and_then(|kid| set.verifying.iter().find(|k| k.kid == kid))
            .ok_or(TokenError::UnknownKey)?;

        let signed_len = header_b64.len() + 1 + payload_b64.len();
        let message = token.get(..signed_len).ok_or(TokenError::Malformed)?;
        let valid = jsonwebtoken::crypto::verify(
            signature,
            message.as_bytes(),
            &key.decoding,
            Algorithm::ES256,
        )
        .map_err(|_| TokenError::Malformed)?;
        if !valid {
            return Err(TokenError::BadSignature);
        }

        let payload = URL_SAFE_NO_PAD
            .decode(payload_b64)
            .map_err(|_| TokenError::Malformed)?;
        let claims: Claims = serde_json::from_slice(&payload).map_err(|_| TokenError::Malformed)?;

        if now >= claims.exp.saturating_add(LEEWAY) {
            return Err(TokenError::Expired);
        }
        if let Some(nbf) = claims.nbf
            && now.saturating_add(LEEWAY) < nbf
        {
            return Err(TokenError::NotYetValid);
        }
        if claims.iss != issuer {
            return Err(TokenError::WrongIssuer);
        }
        if !claims.aud.iter().any(|a| a == audience) {
            return Err(TokenError::WrongAudience);
        }
        if claims.sub.is_empty() {
            return Err(TokenError::MissingSubject);
        }
        Ok(claims)
    }

    /// The JSON Web Key Set of every accepted key, current first, for
    /// publishing at a well-known URL.
    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({
            "keys": self.set.load().verifying.iter().map(VerifyingKey::jwk).collect::<Vec<_>>(),
        })
    }
}

/// The `iss` a token claims, read without checking anything: it only picks
/// which issuer's keys the token is then verified with.
pub fn claimed_issuer(token: &str) -> Option<String> {
    if token.len() > MAX_TOKEN_LEN {
        return None;
    }
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.get("iss")?.as_str().map(str::to_string)
}

/// The keys of another issuer (a site's identity provider), from its JWKS.
/// Fetching the set is the caller's business; this only decodes and checks.
pub struct ExternalKeys {
    keys: Vec<(
        Option<String>,
        DecodingKey,
        jsonwebtoken::jwk::AlgorithmParameters,
    )>,
}

impl fmt::Debug for ExternalKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExternalKeys")
            .field(
                "kids",
                &self.keys.iter().map(|k| k.0.clone()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Algorithms accepted from another issuer (TokenSmith's verifiers accept
/// these families; `none` and HMAC never).
const EXTERNAL_ALGS: &[Algorithm] = &[
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

impl ExternalKeys {
    /// Decodes a JWKS document; keys that are not EC or RSA signature keys
    /// are skipped. No usable key is an error.
    pub fn from_jwks(json: &[u8]) -> Result<ExternalKeys, String> {
        let set: jsonwebtoken::jwk::JwkSet =
            serde_json::from_slice(json).map_err(|e| format!("not a JWKS document: {e}"))?;
        let keys: Vec<_> = set
            .keys
            .iter()
            .filter(|k| {
                matches!(
                    k.algorithm,
                    jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_)
                        | jsonwebtoken::jwk::AlgorithmParameters::RSA(_)
                )
            })
            .filter_map(|k| {
                DecodingKey::from_jwk(k)
                    .ok()
                    .map(|d| (k.common.key_id.clone(), d, k.algorithm.clone()))
            })
            .collect();
        if keys.is_empty() {
            return Err("the JWKS has no EC or RSA key".into());
        }
        Ok(ExternalKeys { keys })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Checks a token of this issuer: signature by the key its `kid` names
    /// (by any key of a fitting type when it names none), `iss`, `aud`,
    /// `exp` (required) and `nbf`, with 60 s of leeway. `UnknownKey` means
    /// a fresher JWKS might know the key.
    pub fn verify(
        &self,
        token: &str,
        issuer: &str,
        audience: &str,
        now: i64,
    ) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if !EXTERNAL_ALGS.contains(&header.alg) {
            return Err(TokenError::BadSignature);
        }
        let rsa = !matches!(header.alg, Algorithm::ES256 | Algorithm::ES384);
        let candidates: Vec<&DecodingKey> = self
            .keys
            .iter()
            .filter(|(kid, _, params)| {
                let kind_fits = matches!(
                    (rsa, params),
                    (true, jsonwebtoken::jwk::AlgorithmParameters::RSA(_))
                        | (
                            false,
                            jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_)
                        )
                );
                kind_fits && (header.kid.is_none() || kid.as_deref() == header.kid.as_deref())
            })
            .map(|(_, d, _)| d)
            .collect();
        if candidates.is_empty() {
            return Err(TokenError::UnknownKey);
        }
        let mut v = jsonwebtoken::Validation::new(header.alg);
        v.validate_exp = false;
        v.validate_nbf = false;
        v.validate_aud = false;
        v.required_spec_claims.clear();
        let mut claims = None;
        for key in candidates {
            if let Ok(d) = jsonwebtoken::decode::<Claims>(token, key, &v) {
                claims = Some(d.claims);
                break;
            }
        }
        let claims = claims.ok_or(TokenError::BadSignature)?;
        if now >= claims.exp.saturating_add(LEEWAY) {
            return Err(TokenError::Expired);
        }
        if let Some(nbf) = claims.nbf
            && now.saturating_add(LEEWAY) < nbf
        {
            return Err(TokenError::NotYetValid);
        }
        if claims.iss != issuer {
            return Err(TokenError::WrongIssuer);
        }
        if !claims.aud.iter().any(|a| a == audience) {
            return Err(TokenError::WrongAudience);
        }
        if claims.sub.is_empty() {
            return Err(TokenError::MissingSubject);
        }
        Ok(claims)
    }
}

fn current_kid(set: &KeySet) -> String {
    set.verifying
        .first()
        .map_or(String::new(), |k| k.kid.clone())
}

fn parse_signing_key(path: &Path, pem: &[u8]) -> Result<KeyPair, CaError> {
    let key = std::str::from_utf8(pem)
        .ok()
        .and_then(|pem| KeyPair::from_pem(pem).ok())
        .ok_or_else(|| {
            CaError::bad_file(
                path,
                "not a PKCS#8 PEM private key; remove it to create a new one \
                 (all issued tokens become invalid)",
            )
        })?;
    if key.algorithm() != &PKCS_ECDSA_P256_SHA256 {
        return Err(CaError::bad_file(
            path,
            "not an ECDSA P-256 key; remove it to create a new one (all issued tokens become invalid)",
        ));
    }
    Ok(key)
}

fn load_retired(path: &Path) -> Result<Vec<VerifyingKey>, CaError> {
    let Some(pem) = files::read_optional(path)? else {
        return Ok(Vec::new());
    };
    let mut keys = Vec::new();
    for item in SubjectPublicKeyInfoDer::pem_slice_iter(&pem) {
        let spki = item.map_err(|e| CaError::bad_file(path, format!("unreadable PEM: {e}")))?;
        let key = spki
            .as_ref()
            .strip_prefix(&P256_SPKI_PREFIX[..])
            .and_then(VerifyingKey::from_point)
            .ok_or_else(|| CaError::bad_file(path, "contains a key that is not ECDSA P-256"))?;
        keys.push(key);
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const ISS: &str = "https://head.cluster";
    const AUD: &str = "openchami";
    const NOW: i64 = 1_750_000_000;
    const HOUR: Duration = Duration::from_secs(3600);

    fn keys() -> (tempfile::TempDir, TokenKeys) {
        let dir = tempfile::tempdir().unwrap();
        let keys = TokenKeys::load_or_create(dir.path()).unwrap();
        (dir, keys)
    }

    fn b64(v: &serde_json::Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    }

    /// A token with arbitrary header and claims, signed by `keys`.
    fn sign_raw(
        keys: &TokenKeys,
        header: &serde_json::Value,
        claims: &serde_json::Value,
    ) -> String {
        let message = format!("{}.{}", b64(header), b64(claims));
        let sig = jsonwebtoken::crypto::sign(
            message.as_bytes(),
            &keys.set.load().signing,
            Algorithm::ES256,
        )
        .unwrap();
        format!("{message}.{sig}")
    }

    fn claims_json(keys_kid: &str) -> (serde_json::Value, serde_json::Value) {
        (
            serde_json::json!({"alg": "ES256", "typ": "JWT", "kid": keys_kid}),
            serde_json::json!({"sub": "alice", "iss": ISS, "aud": AUD, "exp": NOW + 3600, "iat": NOW}),
        )
    }

    #[test]
    fn issue_then_verify_round_trips_roles() {
        let (_d, k) = keys();
        let roles = vec!["admin".to_string(), "viewer".to_string()];
        let t = k.issue("alice", ISS, AUD, HOUR, &roles, NOW).unwrap();
        let c = k.verify(&t, ISS, AUD, NOW + 10).unwrap();
        assert_eq!(c.sub, "alice");
        assert_eq!(c.iss, ISS);
        assert_eq!(c.aud, vec![AUD.to_string()]);
        assert_eq!(c.exp, NOW + 3600);
        assert_eq!(c.iat, NOW);
        assert_eq!(c.nbf, Some(NOW));
        assert_eq!(c.roles, roles);

        let t = k.issue("bob", ISS, AUD, HOUR, &[], NOW).unwrap();
        let c = k.verify(&t, ISS, AUD, NOW).unwrap();
        assert!(c.roles.is_empty());
        let payload = t.split('.').nth(1).unwrap();
        let json = String::from_utf8(URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        assert!(!json.contains("roles"), "{json}");
    }

    #[test]
    fn key_is_persisted_with_private_mode() {
        let dir = tempfile::tempdir().unwrap();
        let a = TokenKeys::load_or_create(dir.path()).unwrap();
        let path = dir.path().join("ca").join(TOKEN_KEY);
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let b = TokenKeys::load_or_create(dir.path()).unwrap();
        assert_eq!(a.current_kid(), b.current_kid());
        let t = a.issue("alice", ISS, AUD, HOUR, &[], NOW).unwrap();
        assert!(b.verify(&t, ISS, AUD, NOW).is_ok());
    }

    #[test]
    fn kid_is_hash_of_public_point() {
        let dir = tempfile::tempdir().unwrap();
        let k = TokenKeys::load_or_create(dir.path()).unwrap();
        let pem = std::fs::read_to_string(dir.path().join("ca").join(TOKEN_KEY)).unwrap();
        let kp = KeyPair::from_pem(&pem).unwrap();
        let digest = hex::encode(Sha256::digest(kp.public_key_raw()));
        assert_eq!(k.current_kid(), &digest[..16]);
    }

    #[test]
    fn token_from_another_key_is_rejected() {
        let (_d, k) = keys();
        let (_d2, other) = keys();
        let t = other.issue("alice", ISS, AUD, HOUR, &[], NOW).unwrap();
        assert_eq!(k.verify(&t, ISS, AUD, NOW), Err(TokenError::UnknownKey));

        // Same kid as ours but signed by the other key.
        let (h, c) = claims_json(&k.current_kid());
        let forged = sign_raw(&other, &h, &c);
        assert_eq!(
            k.verify(&forged, ISS, AUD, NOW),
            Err(TokenError::BadSignature)
        );

        // No kid at all.
        let t = sign_raw(&k, &serde_json::json!({"alg": "ES256"}), &c);
        assert_eq!(k.verify(&t, ISS, AUD, NOW), Err(TokenError::UnknownKey));
    }

    #[test]
    fn tampered_payload_is_rejected() {
        let (_d, k) = keys();
        let t = k.issue("alice", ISS, AUD, HOUR, &[], NOW).unwrap();
        let mut parts: Vec<&str> = t.split('.').collect();
        let evil = b64(
            &serde_json::json!({"sub": "root", "iss": ISS, "aud": AUD, "exp": NOW + 3600, "iat": NOW, "roles": ["admin"]}),
        );
        parts[1] = &evil;
        assert_eq!(
            k.verify(&parts.join("."), ISS, AUD, NOW),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn expiry_and_not_before_honour_leeway() {
        let (_d, k) = keys();
        let t = k.issue("alice", ISS, AUD, HOUR, &[], NOW).unwrap();
        let exp = NOW + 3600;
        assert!(k.verify(&t, ISS, AUD, exp + 59).is_ok());
        assert_eq!(k.verify(&t, ISS, AUD, exp + 60), Err(TokenError::Expired));
        assert_eq!(
            k.verify(&t, ISS, AUD, exp + 100_000),
            Err(TokenError::Expired)
        );
        assert!(k.verify(&t, ISS, AUD, NOW - 60).is_ok());
        assert_eq!(
            k.verify(&t, ISS, AUD, NOW - 61),
            Err(TokenError::NotYetValid)
        );

        let t = k
            .issue("alice", ISS, AUD, Duration::ZERO, &[], NOW)
            .unwrap();
        assert_eq!(k.verify(&t, ISS, AUD, NOW + 61), Err(TokenError::Expired));
    }

    #[test]
    fn wrong_issuer_audience_subject_are_rejected() {
        let (_d, k) = keys();
        let t = k.issue("alice", ISS, AUD, HOUR, &[], NOW).unwrap();
        assert_eq!(
            k.verify(&t, "https://elsewhere", AUD, NOW),
            Err(TokenError::WrongIssuer)
        );
        assert_eq!(
            k.verify(&t, ISS, "other", NOW),
            Err(TokenError::WrongAudience)
        );

        let (h, mut c) = claims_json(&k.current_kid());
        c["sub"] = "".into();
        assert_eq!(
            k.verify(&sign_raw(&k, &h, &c), ISS, AUD, NOW),
            Err(TokenError::MissingSubject)
        );
        c.as_object_mut().unwrap().remove("sub");
        assert_eq!(
            k.verify(&sign_raw(&k, &h, &c), ISS, AUD, NOW),
            Err(TokenError::MissingSubject)
        );
        assert!(k.issue("", ISS, AUD, HOUR, &[], NOW).is_err());
    }

    #[test]
    fn audience_may_be_string_or_array() {
        let (_d, k) = keys();
        let (h, mut c) = claims_json(&k.current_kid());
        assert!(k.verify(&sign_raw(&k, &h, &c), ISS, AUD, NOW).is_ok());
        c["aud"] = serde_json::json!(["x", AUD]);
        assert_eq!(
            k.verify(&sign_raw(&k, &h, &c), ISS, AUD, NOW).unwrap().aud,
            vec!["x", AUD]
        );
        c["aud"] = serde_json::json!(["x"]);
        assert_eq!(
            k.verify(&sign_raw(&k, &h, &c), ISS, AUD, NOW),
            Err(TokenError::WrongAudience)
        );
        c["aud"] = serde_json::json!(5);
        assert_eq!(
            k.verify(&sign_raw(&k, &h, &c), ISS, AUD, NOW),
            Err(TokenError::Malformed)
        );
    }

    /// `aud` and `scope` in both forms verifiers meet: TokenSmith's arrays
    /// and RFC 7519/8693's strings; written back as arrays.
    #[test]
    fn scope_and_audience_forms() {
        use serde_json::json;
        let (_d, k) = keys();
        let (h, base) = claims_json(&k.current_kid());
        // (aud, scope, accepted scopes or None when malformed)
        let cases: Vec<(serde_json::Value, serde_json::Value, Option<Vec<&str>>)> = vec![
            (json!(AUD), json!("read write"), Some(vec!["read", "write"])),
            (
                json!([AUD]),
                json!(["read", "write"]),
                Some(vec!["read", "write"]),
            ),
            (json!([AUD, "smd"]), json!("  read  "), Some(vec!["read"])),
            (json!(AUD), json!(""), Some(vec![])),
            (json!(AUD), json!([]), Some(vec![])),
            (json!(AUD), serde_json::Value::Null, Some(vec![])),
            (json!(AUD), json!(5), None),
            (json!(AUD), json!([1, 2]), None),
            (json!(AUD), json!({"read": true}), None),
        ];
        for (i, (aud, scope, want)) in cases.into_iter().enumerate() {
            let mut c = base.clone();
            c["aud"] = aud;
            c["scope"] = scope;
            let got = k.verify(&sign_raw(&k, &h, &c), ISS, AUD, NOW);
            match want {
                Some(w) => {
                    let claims = got.unwrap_or_else(|e| panic!("case {i}: {e}"));
                    assert_eq!(claims.scope, w, "case {i}");
                    let v = serde_json::to_value(&claims).unwrap();
                    assert!(v["aud"].is_array(), "case {i}");
                    assert!(v.get("scope").is_none_or(|s| s.is_array()), "case {i}");
                }
                None => assert_eq!(got, Err(TokenError::Malformed), "case {i}"),
            }
        }
    }

    #[test]
    fn other_algorithms_are_rejected() {
        let (_d, k) = keys();
        let (_, c) = claims_json(&k.current_kid());
        let kid = k.current_kid();

        let none = format!(
            "{}.{}.",
            b64(&serde_json::json!({"alg": "none", "kid": kid})),
            b64(&c)
        );
        assert!(k.verify(&none, ISS, AUD, NOW).is_err());
        let none_sig = format!("{none}AAAA");
        assert!(k.verify(&none_sig, ISS, AUD, NOW).is_err());

        // HS256 keyed with the public point, the classic key-confusion attack.
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(kid.to_owned());
        let secret = EncodingKey::from_secret(&k.set.load().verifying[0].point);
        let claims: Claims = serde_json::from_value(c.clone()).unwrap();
        let hs = jsonwebtoken::encode(&header, &claims, &secret).unwrap();
        assert_eq!(k.verify(&hs, ISS, AUD, NOW), Err(TokenError::BadSignature));

        let es384 = format!(
            "{}.{}.AAAA",
            b64(&serde_json::json!({"alg": "ES384", "kid": kid})),
            b64(&c)
        );
        assert_eq!(
            k.verify(&es384, ISS, AUD, NOW),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn garbage_is_rejected() {
        let (_d, k) = keys();
        let t = k.issue("alice", ISS, AUD, HOUR, &[], NOW).unwrap();
        let long = "a".repeat(MAX_TOKEN_LEN + 1);
        for bad in [
            "",
            ".",
            "..",
            "a.b.c",
            "not a token",
            "\u{0}\u{1}",
            "é.é.é",
            long.as_str(),
            &format!("{t}.extra"),
            &t[..t.len() - 5],
            &t.replace('.', ""),
        ] {
            assert!(k.verify(bad, ISS, AUD, NOW).is_err(), "{bad:?} accepted");
        }
        // Valid header and signature over a payload that is not JSON claims.
        let (h, _) = claims_json(&k.current_kid());
        let msg = format!("{}.{}", b64(&h), URL_SAFE_NO_PAD.encode(b"not json"));
        let sig =
            jsonwebtoken::crypto::sign(msg.as_bytes(), &k.set.load().signing, Algorithm::ES256)
                .unwrap();
        assert_eq!(
            k.verify(&format!("{msg}.{sig}"), ISS, AUD, NOW),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn jwks_lists_keys_and_verifies_externally() {
        let (_d, k) = keys();
        let jwks = k.jwks();
        let list = jwks["keys"].as_array().unwrap();
        assert_eq!(list.len(), 1);
        let jwk = &list[0];
        assert_eq!(jwk["kty"], "EC");
        assert_eq!(jwk["crv"], "P-256");
        assert_eq!(jwk["alg"], "ES256");
        assert_eq!(jwk["use"], "sig");
        assert_eq!(jwk["kid"], k.current_kid());
        let x = jwk["x"].as_str().unwrap();
        assert!(!x.contains('=') && URL_SAFE_NO_PAD.decode(x).unwrap().len() == 32);

        // A consumer of the JWKS can verify our tokens with stock jsonwebtoken.
        let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(jwks.clone()).unwrap();
        let dk = DecodingKey::from_jwk(&set.keys[0]).unwrap();
        let t = k.issue("alice", ISS, AUD, HOUR, &[], NOW).unwrap();
        let (sig_input, sig) = t.rsplit_once('.').unwrap();
        assert!(
            jsonwebtoken::crypto::verify(sig, sig_input.as_bytes(), &dk, Algorithm::ES256).unwrap()
        );
    }

    #[test]
    fn rotation_keeps_old_tokens_valid() {
        let dir = tempfile::tempdir().unwrap();
        let k = TokenKeys::load_or_create(dir.path()).unwrap();
        let old_kid = k.current_kid().to_owned();
        let old = k.issue("alice", ISS, AUD, HOUR, &[], NOW).unwrap();
        k.rotate(dir.path()).unwrap();
        assert_ne!(k.current_kid(), old_kid);
        let new = k.issue("alice", ISS, AUD, HOUR, &[], NOW).unwrap();
        assert!(k.verify(&old, ISS, AUD, NOW).is_ok());
        assert!(k.verify(&new, ISS, AUD, NOW).is_ok());
        assert_eq!(k.jwks()["keys"].as_array().unwrap().len(), 2);

        // A restart sees the same set of keys, current first.
        let r = TokenKeys::load_or_create(dir.path()).unwrap();
        assert_eq!(r.current_kid(), k.current_kid());
        assert_eq!(r.jwks(), k.jwks());
        assert!(r.verify(&old, ISS, AUD, NOW).is_ok());
        assert!(r.verify(&new, ISS, AUD, NOW).is_ok());

        // Twice more: every earlier key is still known.
        k.rotate(dir.path()).unwrap();
        let r = TokenKeys::load_or_create(dir.path()).unwrap();
        assert_eq!(r.jwks()["keys"].as_array().unwrap().len(), 3);
        assert!(r.verify(&old, ISS, AUD, NOW).is_ok());
    }

    #[test]
    fn unreadable_key_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("ca")).unwrap();
        std::fs::write(dir.path().join("ca").join(TOKEN_KEY), b"junk").unwrap();
        let err = TokenKeys::load_or_create(dir.path()).unwrap_err();
        assert!(
            matches!(&err, CaError::BadFile { path, .. } if path.ends_with(TOKEN_KEY)),
            "{err}"
        );

        // A key of the wrong type is refused too.
        let rsa_like = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        std::fs::write(
            dir.path().join("ca").join(TOKEN_KEY),
            rsa_like.serialize_pem(),
        )
        .unwrap();
        assert!(TokenKeys::load_or_create(dir.path()).is_err());
    }

    #[test]
    fn claims_serialization_shape() {
        let c = Claims {
            sub: "a".into(),
            iss: "i".into(),
            aud: vec!["x".into()],
            exp: 2,
            iat: 1,
            nbf: None,
            roles: vec![],
            scope: vec![],
            jti: None,
            token_use: None,
        };
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["aud"], serde_json::json!(["x"]));
        assert!(v.get("roles").is_none());
        let back: Claims = serde_json::from_value(v).unwrap();
        assert_eq!(back, c);
    }
}
