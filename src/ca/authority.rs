//! Root CA and API server certificate.
//!
//! The root is long-lived because every client that pinned it would have to
//! be touched again if it changed; it is therefore never replaced
//! automatically. The server certificate is short-lived and cheap: it is
//! simply reissued from the stored root whenever the head node's names change
//! or it gets old, so renaming or re-addressing the head node never needs
//! client-side action.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{
    CertificateDer, DnsName, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime,
};
use sha2::{Digest, Sha256};

use super::CaError;
use super::files::{self, PRIVATE, PUBLIC, pem_encode};

pub(crate) const ROOT_CERT: &str = "root.crt";
pub(crate) const ROOT_KEY: &str = "root.key";
const LEAF_CERT: &str = "server.crt";
const LEAF_KEY: &str = "server.key";

const ROOT_COMMON_NAME: &str = "openchami root CA";
const LEAF_COMMON_NAME: &str = "openchami";

const DAY: u64 = 24 * 60 * 60;
const ROOT_LIFETIME: u64 = 3650 * DAY;
const LEAF_LIFETIME: u64 = 90 * DAY;
/// Certificates start an hour in the past so a client whose clock is a bit
/// behind the head node's does not reject a certificate issued moments ago.
const BACKDATE: u64 = 60 * 60;
/// 9999-12-31T23:59:59Z, the last instant an X.509 validity can express;
/// keeps date arithmetic in range whatever the system clock says.
const MAX_CERT_TIME: u64 = 253_402_300_799;

/// The names and addresses clients use to reach the API listener.
///
/// Host names may be given in any case and with a trailing dot; an IP
/// address given as a "DNS name" is treated as an address. Unspecified
/// addresses (`0.0.0.0`, `::`) are ignored, so listen addresses can be passed
/// straight through. `localhost`, `127.0.0.1` and `::1` are always included.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertNames {
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
}

/// The root certificate clients trust and the server certificate the API
/// listener presents.
///
/// Only public material and the server key are kept in memory; the root key
/// is needed only while issuing and is dropped after [`Authority::bootstrap`].
pub struct Authority {
    root_der: CertificateDer<'static>,
    root_pem: String,
    root_fingerprint: String,
    leaf_der: CertificateDer<'static>,
    leaf_key: PrivatePkcs8KeyDer<'static>,
    leaf_not_after: i64,
}

impl fmt::Debug for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authority")
            .field("root_fingerprint", &self.root_fingerprint)
            .field("leaf_not_after", &self.leaf_not_after)
            .finish_non_exhaustive()
    }
}

impl Authority {
    /// Creates `<dir>/ca/` on first start: root CA (ECDSA P-256, 10 years,
    /// CN "openchami root CA", path length 0) and a server certificate (ECDSA
    /// P-256, 90 days, serverAuth) for `names` plus the loopback names.
    ///
    /// Files: `root.crt`, `root.key`, `server.crt` (server then root),
    /// `server.key`; keys are mode 0600. Later starts reuse them, reissuing
    /// the server certificate from the same root when it does not cover
    /// `names`, is past two thirds of its lifetime, or is missing or
    /// unusable.
    ///
    /// A `root.crt` whose key is missing, unreadable or mismatched is an
    /// error rather than a reason to make a new root: clients that pinned the
    /// old one would otherwise stop trusting the appliance without warning.
    pub fn bootstrap(state_dir: &Path, names: &CertNames) -> Result<Authority, CaError> {
        Self::bootstrap_at(state_dir, names, SystemTime::now())
    }

    fn bootstrap_at(
        state_dir: &Path,
        names: &CertNames,
        now: SystemTime,
    ) -> Result<Authority, CaError> {
        let wanted = Wanted::from_names(names)?;
        let dir = files::ca_dir(state_dir)?;
        let root = load_or_create_root(&dir, now)?;

        let now_secs = unix_secs(now);
        if root.not_after < now_secs.saturating_add(LEAF_LIFETIME as i64) {
            tracing::warn!(
                path = %dir.join(ROOT_CERT).display(),
                not_after = root.not_after,
                "root CA expires soon; server certificates are cut short to match. \
                 Remove root.crt and root.key to create a new root (clients must then trust it)"
            );
        }

        let leaf = match check_leaf(&dir, &root, &wanted, now)? {
            LeafCheck::Usable(leaf) => {
                tracing::debug!(not_after = leaf.not_after, "reusing server certificate");
                leaf
            }
            LeafCheck::Reissue(reason) => {
                tracing::info!(%reason, "issuing server certificate");
                issue_leaf(&dir, &root, &wanted, now)?
            }
        };

        Ok(Authority {
            root_fingerprint: fingerprint_der(&root.der),
            root_der: root.der,
            root_pem: root.pem,
            leaf_der: leaf.der,
            leaf_key: leaf.key,
            leaf_not_after: leaf.not_after,
        })
    }

    /// Makes sure `<dir>/ca/` holds a usable root, creating one if none
    /// exists, without issuing a server certificate: for sharing the root
    /// before any listener needs one.
    pub fn ensure_root(state_dir: &Path) -> Result<(), CaError> {
        let dir = files::ca_dir(state_dir)?;
        load_or_create_root(&dir, SystemTime::now()).map(drop)
    }

    /// The root certificate in PEM form, for clients to add to their trust
    /// store.
    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }

    /// SHA-256 of the root certificate DER, upper-case hex with `:`
    /// separators, so an operator can compare it with
    /// `openssl x509 -fingerprint -sha256` output.
    pub fn root_fingerprint(&self) -> String {
        self.root_fingerprint.clone()
    }

    /// rustls configuration for the API listener, offering HTTP/2 and
    /// HTTP/1.1. The ring provider is named explicitly so the result does not
    /// depend on which crypto provider some other part of the process
    /// installed as the default.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, CaError> {
        server_config_with(Arc::new(HotCert::new(self.certified_key()?)))
    }

    /// The server certificate chain with its signing key, as rustls uses it.
    pub fn certified_key(&self) -> Result<Arc<CertifiedKey>, CaError> {
        let chain = vec![self.leaf_der.clone(), self.root_der.clone()];
        let key = PrivateKeyDer::Pkcs8(self.leaf_key.clone_key());
        let signing = provider().key_provider.load_private_key(key)?;
        Ok(Arc::new(CertifiedKey::new(chain, signing)))
    }

    /// Seconds since the Unix epoch at which the server certificate expires.
    pub fn leaf_not_after(&self) -> i64 {
        self.leaf_not_after
    }
}

/// Fingerprint of the first certificate in `pem`, in the same form as
/// [`Authority::root_fingerprint`], so a fingerprint shown by the server can
/// be checked against a certificate file a client holds.
pub fn fingerprint_pem(pem: &str) -> Result<String, CaError> {
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => {
            CaError::Pem("no CERTIFICATE block found".to_owned())
        }
        other => CaError::Pem(other.to_string()),
    })?;
    x509_parser::parse_x509_certificate(&der)
        .map_err(|e| CaError::Pem(format!("CERTIFICATE block is not X.509: {e}")))?;
    Ok(fingerprint_der(&der))
}

fn fingerprint_der(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The normalized set of names the server certificate must cover.
#[derive(Debug)]
struct Wanted {
    dns: BTreeSet<String>,
    ips: BTreeSet<IpAddr>,
}

impl Wanted {
    fn from_names(names: &CertNames) -> Result<Wanted, CaError> {
        let mut dns = BTreeSet::from(["localhost".to_owned()]);
        let mut ips = BTreeSet::from([
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ]);
        for raw in &names.dns {
            let name = raw.trim();
            let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
            if name.is_empty() {
                return Err(CaError::InvalidName {
                    name: raw.clone(),
                    reason: "empty name",
                });
            }
            if let Ok(ip) = name.parse::<IpAddr>() {
                ips.insert(ip);
                continue;
            }
            if DnsName::try_from(name.as_str()).is_err() {
                return Err(CaError::InvalidName {
                    name: raw.clone(),
                    reason: "not a valid DNS host name (wildcards are not supported)",
                });
            }
            dns.insert(name);
        }
        ips.extend(names.ips.iter().filter(|ip| !ip.is_unspecified()));
        Ok(Wanted { dns, ips })
    }

    fn server_names(&self) -> Vec<ServerName<'static>> {
        let dns = self
            .dns
            .iter()
            .filter_map(|n| DnsName::try_from(n.clone()).ok())
            .map(ServerName::DnsName);
        let ips = self.ips.iter().map(|ip| ServerName::from(*ip));
        dns.chain(ips).collect()
    }
}

struct Root {
    der: CertificateDer<'static>,
    pem: String,
    key: KeyPair,
    not_after: i64,
}

struct Leaf {
    der: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
    not_after: i64,
}

enum LeafCheck {
    Usable(Leaf),
    Reissue(String),
}

fn load_or_create_root(dir: &Path, now: SystemTime) -> Result<Root, CaError> {
    let cert_path = dir.join(ROOT_CERT);
    let key_path = dir.join(ROOT_KEY);
    let start_over = "remove root.crt and root.key to create a new root \
                      (clients will then have to trust the new one)";

    // root.crt is written last, so its presence is what says a root exists;
    // a root.key on its own is a leftover from an interrupted first start.
    let Some(cert_pem) = files::read_optional(&cert_path)? else {
        return create_root(dir, now);
    };

    let der = CertificateDer::from_pem_slice(&cert_pem).map_err(|e| {
        CaError::bad_file(
            &cert_path,
            format!("no usable certificate ({e}); {start_over}"),
        )
    })?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| {
        CaError::bad_file(
            &cert_path,
            format!("not an X.509 certificate ({e}); {start_over}"),
        )
    })?;
    if !cert.is_ca() {
        return Err(CaError::bad_file(
            &cert_path,
            format!("not a CA certificate; {start_over}"),
        ));
    }

    let Some(key_pem) = files::read_secret(&key_path)? else {
        return Err(CaError::bad_file(
            &key_path,
            format!("missing although root.crt exists; restore it, or {start_over}"),
        ));
    };
    let key = std::str::from_utf8(&key_pem)
        .ok()
        .and_then(|pem| KeyPair::from_pem(pem).ok())
        .ok_or_else(|| {
            CaError::bad_file(
                &key_path,
                format!("not a PKCS#8 PEM private key; restore it, or {start_over}"),
            )
        })?;
    if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err(CaError::bad_file(
            &key_path,
            format!("does not belong to root.crt; restore the matching key, or {start_over}"),
        ));
    }

    let not_after = cert.validity().not_after.timestamp();
    drop(cert);
    let der = der.into_owned();
    Ok(Root {
        pem: pem_encode("CERTIFICATE", &der),
        der,
        key,
        not_after,
    })
}

fn create_root(dir: &Path, now: SystemTime) -> Result<Root, CaError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = common_name(ROOT_COMMON_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.serial_number = Some(random_serial()?);
    let not_after = set_validity(&mut params, now, ROOT_LIFETIME, i64::MAX);
    let cert = params.self_signed(&key)?;

    files::write_atomic(&dir.join(ROOT_KEY), key.serialize_pem().as_bytes(), PRIVATE)?;
    files::write_atomic(&dir.join(ROOT_CERT), cert.pem().as_bytes(), PUBLIC)?;
    let der = cert.der().clone();
    tracing::info!(
        fingerprint = %fingerprint_der(&der),
        path = %dir.join(ROOT_CERT).display(),
        "created root CA"
    );
    Ok(Root {
        pem: pem_encode("CERTIFICATE", &der),
        der,
        key,
        not_after,
    })
}

/// Decides whether the stored server certificate can be served as is.
/// Anything wrong with it is a reason to reissue, never an error: it is
/// derived data that the root can always recreate.
fn check_leaf(
    dir: &Path,
    root: &Root,
    wanted: &Wanted,
    now: SystemTime,
) -> Result<LeafCheck, CaError> {
    let reissue = |reason: String| Ok(LeafCheck::Reissue(reason));

    let Some(cert_pem) = files::read_optional(&dir.join(LEAF_CERT))? else {
        return reissue("server.crt does not exist".into());
    };
    let Some(key_pem) = files::read_secret(&dir.join(LEAF_KEY))? else {
        return reissue("server.key does not exist".into());
    };
    let der = match CertificateDer::from_pem_slice(&cert_pem) {
        Ok(der) => der,
        Err(e) => return reissue(format!("server.crt is unreadable: {e}")),
    };
    let Some(key) = std::str::from_utf8(&key_pem)
        .ok()
        .and_then(|pem| KeyPair::from_pem(pem).ok())
    else {
        return reissue("server.key is unreadable".into());
    };
    let cert = match x509_parser::parse_x509_certificate(&der) {
        Ok((_, cert)) => cert,
        Err(e) => return reissue(format!("server.crt is not X.509: {e}")),
    };
    if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return reissue("server.key does not match server.crt".into());
    }

    let not_before = cert.validity().not_before.timestamp();
    let not_after = cert.validity().not_after.timestamp();
    let lifetime = not_after.saturating_sub(not_before);
    let renew_at = not_before.saturating_add(lifetime / 3 * 2);
    if unix_secs(now) >= renew_at {
        return reissue("server certificate is past two thirds of its lifetime".into());
    }
    drop(cert);

    // Let webpki judge the rest exactly as a client would: signed by this
    // root, currently valid, serverAuth, and matching every wanted name.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.der.clone()).map_err(|e| {
        CaError::bad_file(
            dir.join(ROOT_CERT),
            format!("unusable as a trust anchor: {e}"),
        )
    })?;
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| CaError::bad_file(dir.join(ROOT_CERT), e.to_string()))?;
    let unix_now = UnixTime::since_unix_epoch(now.duration_since(UNIX_EPOCH).unwrap_or_default());
    for name in wanted.server_names() {
        if let Err(e) = verifier.verify_server_cert(&der, &[], &name, &[], unix_now) {
            return reissue(format!(
                "server certificate is not valid for {}: {e}",
                name.to_str()
            ));
        }
    }

    Ok(LeafCheck::Usable(Leaf {
        der: der.into_owned(),
        key: PrivatePkcs8KeyDer::from(key.serialize_der()),
        not_after,
    }))
}

fn issue_leaf(dir: &Path, root: &Root, wanted: &Wanted, now: SystemTime) -> Result<Leaf, CaError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = common_name(LEAF_COMMON_NAME);
    params.subject_alt_names = wanted
        .dns
        .iter()
        .map(|n| Ok(SanType::DnsName(n.as_str().try_into()?)))
        .chain(wanted.ips.iter().map(|ip| Ok(SanType::IpAddress(*ip))))
        .collect::<Result<Vec<_>, rcgen::Error>>()?;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial()?);
    let not_after = set_validity(&mut params, now, LEAF_LIFETIME, root.not_after);

    let issuer = Issuer::from_ca_cert_der(&root.der, &root.key)?;
    let cert = params.signed_by(&key, &issuer)?;

    let chain = format!("{}{}", cert.pem(), root.pem);
    files::write_atomic(&dir.join(LEAF_KEY), key.serialize_pem().as_bytes(), PRIVATE)?;
    files::write_atomic(&dir.join(LEAF_CERT), chain.as_bytes(), PUBLIC)?;
    Ok(Leaf {
        der: cert.der().clone(),
        key: PrivatePkcs8KeyDer::from(key.serialize_der()),
        not_after,
    })
}

fn common_name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

/// Sets a validity window starting (backdated) at `now`, ending no later
/// than `cap`; returns the end as seconds since the epoch.
fn set_validity(params: &mut CertificateParams, now: SystemTime, lifetime: u64, cap: i64) -> i64 {
    let now = u64::try_from(unix_secs(now))
        .unwrap_or(0)
        .min(MAX_CERT_TIME);
    let cap = u64::try_from(cap).unwrap_or(0);
    let not_before = now.saturating_sub(BACKDATE);
    let not_after = now
        .saturating_add(lifetime)
        .min(cap)
        .min(MAX_CERT_TIME)
        .max(not_before);
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + Duration::from_secs(not_before);
    params.not_after = epoch + Duration::from_secs(not_after);
    i64::try_from(not_after).unwrap_or(i64::MAX)
}

/// A positive 127-bit random serial, as CAs are expected to use so serials
/// never repeat even if the root is recreated.
fn random_serial() -> Result<SerialNumber, CaError> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| CaError::Random)?;
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use x509_parser::extensions::GeneralName;

    fn names(dns: &[&str], ips: &[&str]) -> CertNames {
        CertNames {
            dns: dns.iter().map(|s| s.to_string()).collect(),
            ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
        }
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn leaf_sans(pem: &[u8]) -> (Vec<String>, Vec<IpAddr>) {
        let der = CertificateDer::from_pem_slice(pem).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let san = cert.subject_alternative_name().unwrap().unwrap();
        let mut dns = Vec::new();
        let mut ips = Vec::new();
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(n) => dns.push(n.to_string()),
                GeneralName::IPAddress(b) => ips.push(match b.len() {
                    4 => IpAddr::from(<[u8; 4]>::try_from(*b).unwrap()),
                    16 => IpAddr::from(<[u8; 16]>::try_from(*b).unwrap()),
                    _ => panic!("bad IP SAN"),
                }),
                other => panic!("unexpected SAN {other:?}"),
            }
        }
        (dns, ips)
    }

    fn serial_of(pem: &[u8]) -> Vec<u8> {
        let der = CertificateDer::from_pem_slice(pem).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        cert.raw_serial().to_vec()
    }

    #[test]
    fn bootstrap_creates_files_and_restart_reuses_them() {
        let dir = tempfile::tempdir().unwrap();
        let n = names(&["head.cluster"], &["10.0.0.1"]);
        let a = Authority::bootstrap(dir.path(), &n).unwrap();
        let ca = dir.path().join("ca");
        for f in [ROOT_CERT, ROOT_KEY, LEAF_CERT, LEAF_KEY] {
            assert!(ca.join(f).exists(), "{f} missing");
        }
        assert_eq!(mode(&ca.join(ROOT_KEY)), 0o600);
        assert_eq!(mode(&ca.join(LEAF_KEY)), 0o600);
        assert_eq!(mode(&ca), 0o700);

        let leaf_before = fs::read(ca.join(LEAF_CERT)).unwrap();
        let b = Authority::bootstrap(dir.path(), &n).unwrap();
        assert_eq!(a.root_fingerprint(), b.root_fingerprint());
        assert_eq!(a.root_pem(), b.root_pem());
        assert_eq!(a.leaf_not_after(), b.leaf_not_after());
        assert_eq!(fs::read(ca.join(LEAF_CERT)).unwrap(), leaf_before);
        assert_eq!(mode(&ca.join(ROOT_KEY)), 0o600);
        assert_eq!(mode(&ca.join(LEAF_KEY)), 0o600);
    }

    #[test]
    fn root_has_expected_shape() {
        let dir = tempfile::tempdir().unwrap();
        let a = Authority::bootstrap(dir.path(), &CertNames::default()).unwrap();
        let der = CertificateDer::from_pem_slice(a.root_pem().as_bytes()).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert!(cert.is_ca());
        assert_eq!(
            cert.subject()
                .iter_common_name()
                .next()
                .unwrap()
                .as_str()
                .unwrap(),
            ROOT_COMMON_NAME
        );
        let ku = cert.key_usage().unwrap().unwrap().value;
        assert!(ku.key_cert_sign() && ku.crl_sign());
        let v = cert.validity();
        let life = v.not_after.timestamp() - v.not_before.timestamp();
        assert!(life >= (ROOT_LIFETIME) as i64);
        assert_eq!(a.root_fingerprint(), fingerprint_pem(a.root_pem()).unwrap());
    }

    #[test]
    fn leaf_covers_names_and_loopback() {
        let dir = tempfile::tempdir().unwrap();
        let n = names(
            &["Head.Cluster.", "mgmt", "192.168.5.5"],
            &["10.1.2.3", "fd00::1", "0.0.0.0"],
        );
        let a = Authority::bootstrap(dir.path(), &n).unwrap();
        let chain = fs::read(dir.path().join("ca").join(LEAF_CERT)).unwrap();
        let (dns, ips) = leaf_sans(&chain);
        for d in ["head.cluster", "mgmt", "localhost"] {
            assert!(dns.contains(&d.to_string()), "{d} not in {dns:?}");
        }
        for ip in ["10.1.2.3", "fd00::1", "192.168.5.5", "127.0.0.1", "::1"] {
            assert!(ips.contains(&ip.parse().unwrap()), "{ip} not in {ips:?}");
        }
        assert!(!ips.contains(&"0.0.0.0".parse().unwrap()));

        // server.crt is the leaf followed by the root.
        let certs: Vec<_> = CertificateDer::pem_slice_iter(&chain)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(certs.len(), 2);
        assert_eq!(fingerprint_der(&certs[1]), a.root_fingerprint());

        let life = a.leaf_not_after() - unix_secs(SystemTime::now());
        assert!(life > (LEAF_LIFETIME - DAY) as i64 && life <= LEAF_LIFETIME as i64);
    }

    #[test]
    fn invalid_names_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["", "has space", "*.wild", "bad_-.", "ünïcode"] {
            let err = Authority::bootstrap(dir.path(), &names(&[bad], &[])).unwrap_err();
            assert!(matches!(err, CaError::InvalidName { .. }), "{bad}: {err}");
        }
    }

    #[test]
    fn name_change_reissues_leaf_with_same_root() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        let a = Authority::bootstrap(dir.path(), &names(&["a.cluster"], &[])).unwrap();
        let first = fs::read(ca.join(LEAF_CERT)).unwrap();

        // A subset of the covered names needs no new certificate.
        Authority::bootstrap(dir.path(), &names(&[], &[])).unwrap();
        assert_eq!(fs::read(ca.join(LEAF_CERT)).unwrap(), first);

        let b = Authority::bootstrap(dir.path(), &names(&["b.cluster"], &["10.9.9.9"])).unwrap();
        let second = fs::read(ca.join(LEAF_CERT)).unwrap();
        assert_ne!(serial_of(&first), serial_of(&second));
        assert_eq!(a.root_fingerprint(), b.root_fingerprint());
        let (dns, ips) = leaf_sans(&second);
        assert!(dns.contains(&"b.cluster".to_string()));
        assert!(ips.contains(&"10.9.9.9".parse().unwrap()));

        // A new IP alone also triggers reissue.
        Authority::bootstrap(dir.path(), &names(&["b.cluster"], &["10.9.9.10"])).unwrap();
        let third = fs::read(ca.join(LEAF_CERT)).unwrap();
        assert_ne!(serial_of(&second), serial_of(&third));
    }

    #[test]
    fn old_leaf_is_reissued_after_two_thirds() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        let n = names(&["head"], &[]);
        let now = SystemTime::now();
        let a = Authority::bootstrap_at(dir.path(), &n, now).unwrap();
        let first = fs::read(ca.join(LEAF_CERT)).unwrap();

        let b =
            Authority::bootstrap_at(dir.path(), &n, now + Duration::from_secs(50 * DAY)).unwrap();
        assert_eq!(fs::read(ca.join(LEAF_CERT)).unwrap(), first);
        assert_eq!(a.leaf_not_after(), b.leaf_not_after());

        let later = now + Duration::from_secs(61 * DAY);
        let c = Authority::bootstrap_at(dir.path(), &n, later).unwrap();
        assert_ne!(fs::read(ca.join(LEAF_CERT)).unwrap(), first);
        assert!(c.leaf_not_after() > a.leaf_not_after());
        assert_eq!(a.root_fingerprint(), c.root_fingerprint());
    }

    #[test]
    fn damaged_leaf_files_are_reissued() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        let n = names(&["head"], &[]);
        let root = Authority::bootstrap(dir.path(), &n)
            .unwrap()
            .root_fingerprint();

        fs::write(ca.join(LEAF_CERT), b"garbage").unwrap();
        Authority::bootstrap(dir.path(), &n).unwrap();
        assert!(fingerprint_pem(&fs::read_to_string(ca.join(LEAF_CERT)).unwrap()).is_ok());

        fs::remove_file(ca.join(LEAF_KEY)).unwrap();
        let a = Authority::bootstrap(dir.path(), &n).unwrap();
        assert!(ca.join(LEAF_KEY).exists());
        assert_eq!(mode(&ca.join(LEAF_KEY)), 0o600);

        // A key that does not belong to the certificate.
        let other = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        fs::write(ca.join(LEAF_KEY), other.serialize_pem()).unwrap();
        let b = Authority::bootstrap(dir.path(), &n).unwrap();
        assert_ne!(a.leaf_not_after(), 0);
        assert_ne!(
            fs::read_to_string(ca.join(LEAF_KEY)).unwrap(),
            other.serialize_pem()
        );
        assert_eq!(root, b.root_fingerprint());
        b.server_config().unwrap();
    }

    #[test]
    fn leaf_from_another_root_is_reissued() {
        let one = tempfile::tempdir().unwrap();
        let two = tempfile::tempdir().unwrap();
        let n = names(&["head"], &[]);
        Authority::bootstrap(one.path(), &n).unwrap();
        let b = Authority::bootstrap(two.path(), &n).unwrap();
        // Put one's (valid, but foreign) server certificate into two.
        for f in [LEAF_CERT, LEAF_KEY] {
            fs::copy(one.path().join("ca").join(f), two.path().join("ca").join(f)).unwrap();
        }
        let foreign = fs::read(two.path().join("ca").join(LEAF_CERT)).unwrap();
        let c = Authority::bootstrap(two.path(), &n).unwrap();
        assert_ne!(
            fs::read(two.path().join("ca").join(LEAF_CERT)).unwrap(),
            foreign
        );
        assert_eq!(b.root_fingerprint(), c.root_fingerprint());
    }

    #[test]
    fn broken_root_is_an_error_not_a_new_root() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        Authority::bootstrap(dir.path(), &CertNames::default()).unwrap();
        let key = fs::read(ca.join(ROOT_KEY)).unwrap();

        fs::remove_file(ca.join(ROOT_KEY)).unwrap();
        let err = Authority::bootstrap(dir.path(), &CertNames::default()).unwrap_err();
        assert!(
            matches!(&err, CaError::BadFile { path, .. } if path.ends_with(ROOT_KEY)),
            "{err}"
        );

        let other = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        fs::write(ca.join(ROOT_KEY), other.serialize_pem()).unwrap();
        fs::set_permissions(ca.join(ROOT_KEY), fs::Permissions::from_mode(0o600)).unwrap();
        let err = Authority::bootstrap(dir.path(), &CertNames::default()).unwrap_err();
        assert!(err.to_string().contains("does not belong"), "{err}");

        fs::write(ca.join(ROOT_KEY), b"junk").unwrap();
        assert!(Authority::bootstrap(dir.path(), &CertNames::default()).is_err());

        fs::write(ca.join(ROOT_KEY), &key).unwrap();
        fs::write(ca.join(ROOT_CERT), b"junk").unwrap();
        let err = Authority::bootstrap(dir.path(), &CertNames::default()).unwrap_err();
        assert!(
            matches!(&err, CaError::BadFile { path, .. } if path.ends_with(ROOT_CERT)),
            "{err}"
        );
    }

    #[test]
    fn missing_root_cert_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        let a = Authority::bootstrap(dir.path(), &CertNames::default()).unwrap();
        fs::remove_file(ca.join(ROOT_CERT)).unwrap();
        let b = Authority::bootstrap(dir.path(), &CertNames::default()).unwrap();
        assert_ne!(a.root_fingerprint(), b.root_fingerprint());
        // The old server certificate was replaced by one from the new root.
        let chain = fs::read_to_string(ca.join(LEAF_CERT)).unwrap();
        assert!(chain.ends_with(b.root_pem()));
    }

    #[test]
    fn fingerprint_format_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let a = Authority::bootstrap(dir.path(), &CertNames::default()).unwrap();
        let fp = a.root_fingerprint();
        assert_eq!(fp.len(), 32 * 3 - 1);
        assert!(fp.split(':').all(|b| {
            b.len() == 2
                && b.chars()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase())
        }));
        let der = CertificateDer::from_pem_slice(a.root_pem().as_bytes()).unwrap();
        let expected: Vec<String> = Sha256::digest(&der)
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect();
        assert_eq!(fp, expected.join(":"));

        // The first certificate counts, other blocks are skipped.
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mixed = format!("{}{}", key.serialize_pem(), a.root_pem());
        assert_eq!(fingerprint_pem(&mixed).unwrap(), fp);

        assert!(fingerprint_pem("").is_err());
        assert!(fingerprint_pem("not pem").is_err());
        assert!(
            fingerprint_pem("-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n")
                .is_err()
        );
        let not_x509 = pem_encode("CERTIFICATE", b"hello");
        assert!(fingerprint_pem(&not_x509).is_err());
    }

    async fn handshake(
        server: Arc<rustls::ServerConfig>,
        trust_pem: &str,
        name: &str,
    ) -> Result<Option<Vec<u8>>, std::io::Error> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(trust_pem.as_bytes()).unwrap())
            .unwrap();
        let mut client = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.alpn_protocols = vec![b"h2".to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let acceptor = tokio_rustls::TlsAcceptor::from(server);

        let (c, s) = tokio::io::duplex(64 * 1024);
        let server_side = tokio::spawn(async move {
            let mut tls = acceptor.accept(s).await?;
            let mut buf = [0u8; 4];
            tls.read_exact(&mut buf).await?;
            tls.write_all(&buf).await?;
            tls.shutdown().await?;
            Ok::<_, std::io::Error>(())
        });
        let server_name = ServerName::try_from(name.to_owned()).unwrap();
        let mut tls = connector.connect(server_name, c).await?;
        tls.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await?;
        assert_eq!(&buf, b"ping");
        let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        server_side.await.unwrap()?;
        Ok(alpn)
    }

    #[tokio::test]
    async fn a_replaced_certificate_is_served_without_a_new_config() {
        let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a = Authority::bootstrap(d1.path(), &names(&[], &[])).unwrap();
        let b = Authority::bootstrap(d2.path(), &names(&[], &[])).unwrap();
        let hot = Arc::new(HotCert::new(a.certified_key().unwrap()));
        let config = server_config_with(hot.clone()).unwrap();
        handshake(config.clone(), a.root_pem(), "localhost")
            .await
            .unwrap();
        hot.replace(b.certified_key().unwrap());
        handshake(config.clone(), b.root_pem(), "localhost")
            .await
            .unwrap();
        assert!(handshake(config, a.root_pem(), "localhost").await.is_err());
    }

    #[tokio::test]
    async fn client_trusting_only_root_completes_handshake() {
        let dir = tempfile::tempdir().unwrap();
        let a = Authority::bootstrap(dir.path(), &names(&["head.cluster"], &["10.0.0.1"])).unwrap();
        for name in ["localhost", "head.cluster", "10.0.0.1", "127.0.0.1", "::1"] {
            let alpn = handshake(a.server_config().unwrap(), a.root_pem(), name)
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
        }
        // A name the certificate does not carry must fail.
        assert!(
            handshake(a.server_config().unwrap(), a.root_pem(), "other.cluster")
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn client_trusting_another_root_fails() {
        let one = tempfile::tempdir().unwrap();
        let two = tempfile::tempdir().unwrap();
        let a = Authority::bootstrap(one.path(), &CertNames::default()).unwrap();
        let b = Authority::bootstrap(two.path(), &CertNames::default()).unwrap();
        assert!(
            handshake(a.server_config().unwrap(), b.root_pem(), "localhost")
                .await
                .is_err()
        );
    }

    #[test]
    fn server_config_offers_h2_and_http11() {
        let dir = tempfile::tempdir().unwrap();
        let a = Authority::bootstrap(dir.path(), &CertNames::default()).unwrap();
        let cfg = a.server_config().unwrap();
        assert_eq!(
            cfg.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        assert!(format!("{a:?}").contains("root_fingerprint"));
    }
}

/// A server certificate that can be replaced while the listener runs, so a
/// renewed certificate is served without a restart.
#[derive(Debug)]
pub struct HotCert(arc_swap::ArcSwap<CertifiedKey>);

impl HotCert {
    pub fn new(key: Arc<CertifiedKey>) -> HotCert {
        HotCert(arc_swap::ArcSwap::new(key))
    }

    /// Serves `key` to every handshake from now on.
    pub fn replace(&self, key: Arc<CertifiedKey>) {
        self.0.store(key);
    }
}

impl rustls::server::ResolvesServerCert for HotCert {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

/// rustls configuration for the API listener, offering HTTP/2 and HTTP/1.1,
/// with the certificate taken from `cert` at each handshake. The ring
/// provider is named explicitly so the result does not depend on which
/// crypto provider another part of the process installed as the default.
pub fn server_config_with(cert: Arc<HotCert>) -> Result<Arc<rustls::ServerConfig>, CaError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
