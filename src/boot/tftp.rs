//! TFTP for firmware: iPXE binaries and a per-client `autoexec.ipxe`.
//!
//! The protocol engine is `async-tftp` (RFC 1350/2347/2348/2349/7440, block
//! numbers that wrap past 65535); this module decides what a request gets —
//! a file from the root, an iPXE binary from the distribution's package, a
//! generated script, or an error — and bounds how many transfers run at once.
//! Only reads are served; a write or a path leaving the root is an access
//! violation (TFTP error 2), a missing file error 1.

use std::net::{IpAddr, SocketAddr};
use std::path::{Component, Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use async_tftp::packet;
use async_tftp::server::{Handler, TftpServerBuilder};
use futures_lite::AsyncRead;

use crate::inventory::Store;

/// Boot file names and where distributions install them (RHEL family first,
/// then Debian family).
pub const PACKAGE_PATHS: &[(&str, &[&str])] = &[
    (
        "undionly.kpxe",
        &[
            "/usr/share/ipxe/undionly.kpxe",
            "/usr/lib/ipxe/undionly.kpxe",
        ],
    ),
    (
        "ipxe-x86_64.efi",
        &["/usr/share/ipxe/ipxe-x86_64.efi", "/usr/lib/ipxe/ipxe.efi"],
    ),
    (
        "snponly-x86_64.efi",
        &[
            "/usr/share/ipxe/ipxe-snponly-x86_64.efi",
            "/usr/lib/ipxe/snponly.efi",
        ],
    ),
    ("ipxe-arm64.efi", &["/usr/share/ipxe/arm64-efi/ipxe.efi"]),
    ("ipxe-i386.efi", &[]),
    ("ipxe-arm32.efi", &[]),
];

/// The name answered with a generated script.
pub const AUTOEXEC: &str = "autoexec.ipxe";

/// What a read request gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    File(PathBuf),
    Generated(Vec<u8>),
    /// Error 1.
    NotFound,
    /// Error 2: the path leaves the root.
    Denied,
}

/// The script iPXE runs on its own when it finds `autoexec.ipxe`: chain to
/// this node's boot script. With no MAC known for the client, iPXE fills in
/// the MAC of the interface it booted from.
pub fn autoexec(node_base: &str, mac: Option<&str>) -> String {
    let mac = mac.unwrap_or("${netX/mac}");
    format!("#!ipxe\nchain {node_base}/boot/v1/bootscript?mac={mac} || reboot\n")
}

/// A request path made relative to the root, or `None` if it would leave it.
pub fn clean_path(requested: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in requested.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    if out.as_os_str().is_empty() {
        None
    } else {
        Some(out)
    }
}

/// Decides what `requested` is, given the root and the package fallbacks.
pub fn resolve(
    requested: &Path,
    root: &Path,
    fallbacks: &[(String, PathBuf)],
    autoexec_for: impl FnOnce() -> String,
) -> Resolved {
    let Some(rel) = clean_path(requested) else {
        return Resolved::Denied;
    };
    let in_root = root.join(&rel);
    if in_root.is_file() {
        // A symlink inside the root may still point outside it.
        return match (in_root.canonicalize(), root.canonicalize()) {
            (Ok(f), Ok(r)) if f.starts_with(&r) => Resolved::File(f),
            _ => Resolved::Denied,
        };
    }
    let name = rel.to_string_lossy();
    if name == AUTOEXEC {
        return Resolved::Generated(autoexec_for().into_bytes());
    }
    match fallbacks.iter().find(|(n, _)| *n == name) {
        Some((_, p)) => Resolved::File(p.clone()),
        None => Resolved::NotFound,
    }
}

/// The package files that stand in for boot files missing from the root.
/// Logs each name that neither provides.
pub fn find_fallbacks(root: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for (name, candidates) in PACKAGE_PATHS {
        if root.join(name).is_file() {
            continue;
        }
        match candidates.iter().map(PathBuf::from).find(|p| p.is_file()) {
            Some(p) => {
                tracing::info!(name, path = %p.display(), "tftp: serving boot file from the iPXE package");
                out.push((name.to_string(), p));
            }
            None => tracing::warn!(
                name,
                root = %root.display(),
                "tftp: boot file missing; firmware that needs it gets none (install the iPXE package or put it in the root)"
            ),
        }
    }
    out
}

/// Settings the server runs with.
#[derive(Debug, Clone)]
pub struct TftpSettings {
    pub root: PathBuf,
    pub node_base: String,
    pub max_transfers: usize,
    pub max_block_size: u16,
    pub max_window_size: u16,
    pub timeout: Duration,
    pub retries: u32,
}

/// Decrements the transfer count when a transfer ends, however it ends.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A file or a generated document, holding its transfer slot.
pub struct Reader {
    inner: ReaderKind,
    _slot: Slot,
}

enum ReaderKind {
    File(blocking::Unblock<std::fs::File>),
    Memory(futures_lite::io::Cursor<Vec<u8>>),
}

impl AsyncRead for Reader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        match &mut self.inner {
            ReaderKind::File(f) => Pin::new(f).poll_read(cx, buf),
            ReaderKind::Memory(m) => Pin::new(m).poll_read(cx, buf),
        }
    }
}

/// A writer that is never created: writes are refused before one exists.
pub struct NoWriter;

impl futures_lite::AsyncWrite for NoWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(Err(std::io::Error::from(
            std::io::ErrorKind::PermissionDenied,
        )))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

pub struct BootHandler {
    settings: TftpSettings,
    fallbacks: Vec<(String, PathBuf)>,
    store: Store,
    active: Arc<AtomicUsize>,
}

impl BootHandler {
    pub fn new(settings: TftpSettings, store: Store) -> BootHandler {
        let fallbacks = find_fallbacks(&settings.root);
        BootHandler {
            settings,
            fallbacks,
            store,
            active: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The inventory MAC of the interface holding the client's address.
    fn mac_of(&self, ip: IpAddr) -> Option<String> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        let snap = self.store.snapshot();
        snap.interfaces_with_ip(ip)
            .first()
            .map(|i| i.mac_address.clone())
    }
}

impl Handler for BootHandler {
    type Reader = Reader;
    type Writer = NoWriter;

    async fn read_req_open(
        &mut self,
        client: &SocketAddr,
        path: &Path,
    ) -> Result<(Self::Reader, Option<u64>), packet::Error> {
        let resolved = resolve(path, &self.settings.root, &self.fallbacks, || {
            autoexec(
                &self.settings.node_base,
                self.mac_of(client.ip()).as_deref(),
            )
        });
        let slot = match resolved {
            Resolved::NotFound => {
                tracing::debug!(%client, path = %path.display(), "tftp: no such file");
                return Err(packet::Error::FileNotFound);
            }
            Resolved::Denied => {
                tracing::info!(%client, path = %path.display(), "tftp: refused a path outside the root");
                return Err(packet::Error::PermissionDenied);
            }
            _ => {
                if self.active.fetch_add(1, Ordering::Relaxed) >= self.settings.max_transfers {
                    self.active.fetch_sub(1, Ordering::Relaxed);
                    tracing::warn!(%client, "tftp: too many transfers in progress; refusing");
                    return Err(packet::Error::Msg("server busy, try again".into()));
                }
                Slot(self.active.clone())
            }
        };
        match resolved {
            Resolved::Generated(bytes) => {
                let len = bytes.len() as u64;
                Ok((
                    Reader {
                        inner: ReaderKind::Memory(futures_lite::io::Cursor::new(bytes)),
                        _slot: slot,
                    },
                    Some(len),
                ))
            }
            Resolved::File(p) => {
                let opened = blocking::unblock(move || {
                    let f = std::fs::File::open(&p)?;
                    let len = f.metadata()?.len();
                    Ok::<_, std::io::Error>((f, len))
                })
                .await;
                match opened {
                    Ok((f, len)) => Ok((
                        Reader {
                            inner: ReaderKind::File(blocking::Unblock::new(f)),
                            _slot: slot,
                        },
                        Some(len),
                    )),
                    Err(e) => {
                        tracing::warn!(%client, error = %e, "tftp: cannot open file");
                        Err(packet::Error::FileNotFound)
                    }
                }
            }
            Resolved::NotFound | Resolved::Denied => Err(packet::Error::UnknownError),
        }
    }

    async fn write_req_open(
        &mut self,
        client: &SocketAddr,
        path: &Path,
        _size: Option<u64>,
    ) -> Result<Self::Writer, packet::Error> {
        tracing::info!(%client, path = %path.display(), "tftp: refused a write request");
        Err(packet::Error::PermissionDenied)
    }
}

/// Binds the TFTP socket with a receive buffer large enough for a rack of
/// firmware asking at once (the kernel default drops such a burst).
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if let Err(e) = s.set_recv_buffer_size(8 << 20) {
        tracing::debug!(error = %e, "tftp: cannot enlarge the receive buffer");
    }
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

/// Runs the server on `socket` until it fails; the caller cancels it by
/// dropping the future.
pub async fn serve(
    socket: std::net::UdpSocket,
    settings: TftpSettings,
    store: Store,
) -> std::io::Result<()> {
    let handler = BootHandler::new(settings.clone(), store);
    let server = TftpServerBuilder::with_handler(handler)
        .std_socket(socket)
        .map_err(std::io::Error::other)?
        .block_size_limit(settings.max_block_size)
        .window_size_limit(settings.max_window_size)
        .timeout(settings.timeout)
        .max_send_retries(settings.retries)
        .build()
        .await
        .map_err(std::io::Error::other)?;
    server.serve().await.map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_cannot_leave_the_root() {
        assert_eq!(
            clean_path(Path::new("/undionly.kpxe")),
            Some(PathBuf::from("undionly.kpxe"))
        );
        assert_eq!(clean_path(Path::new("a/./b")), Some(PathBuf::from("a/b")));
        assert_eq!(clean_path(Path::new("../etc/passwd")), None);
        assert_eq!(clean_path(Path::new("a/../../b")), None);
        assert_eq!(clean_path(Path::new("")), None);
    }

    #[test]
    fn resolution_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("undionly.kpxe"), b"x").unwrap();
        let fb = vec![(
            "ipxe-x86_64.efi".to_string(),
            PathBuf::from("/pkg/ipxe.efi"),
        )];
        let gen_ = || autoexec("http://h:27778", Some("52:54:00:00:00:01"));
        assert!(matches!(
            resolve(Path::new("undionly.kpxe"), dir.path(), &fb, gen_),
            Resolved::File(_)
        ));
        assert_eq!(
            resolve(Path::new("ipxe-x86_64.efi"), dir.path(), &fb, gen_),
            Resolved::File(PathBuf::from("/pkg/ipxe.efi"))
        );
        assert_eq!(
            resolve(Path::new("autoexec.ipxe"), dir.path(), &fb, gen_),
            Resolved::Generated(
                b"#!ipxe\nchain http://h:27778/boot/v1/bootscript?mac=52:54:00:00:00:01 || reboot\n".to_vec()
            )
        );
        assert_eq!(
            resolve(Path::new("nope"), dir.path(), &fb, gen_),
            Resolved::NotFound
        );
        assert_eq!(
            resolve(Path::new("../x"), dir.path(), &fb, gen_),
            Resolved::Denied
        );
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_out_of_the_root_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::NamedTempFile::new().unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("leak")).unwrap();
        assert_eq!(
            resolve(Path::new("leak"), dir.path(), &[], String::new),
            Resolved::Denied
        );
    }

    #[test]
    fn autoexec_without_a_known_mac_lets_ipxe_fill_it_in() {
        assert_eq!(
            autoexec("http://h:27778", None),
            "#!ipxe\nchain http://h:27778/boot/v1/bootscript?mac=${netX/mac} || reboot\n"
        );
    }
}
