//! The lab's boot image: a distribution kernel and a busybox initramfs.
//!
//! A real distribution kernel (Debian's `linux-image-amd64`, extracted, never
//! installed) boots the way nodes on a cluster do, so the lab tests the same
//! chain; the initramfs is the smallest userland that plays a node's part:
//! DHCP, cloud-init meta-data from the appliance, a marker line on the serial
//! console, phone-home, power off. It is built once and cached by content:
//! TCG boots are slow enough without rebuilding anything.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};

/// The line a node prints once it has its meta-data.
pub const MARKER: &str = "OPENCHAMI-LAB-MARKER";
/// The line a node prints once the appliance took its phone-home.
pub const PHONED_HOME: &str = "OPENCHAMI-LAB-PHONED-HOME";
/// The line a node prints when a step fails, before it powers off.
pub const FAILED: &str = "OPENCHAMI-LAB-FAILED";

/// Kernel modules a virtio NIC needs in Debian's kernel, in load order.
const MODULES: &[&str] = &[
    "virtio_ring",
    "virtio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "failover",
    "net_failover",
    "virtio_net",
];

/// A built image: what the appliance serves under `/artifacts/`.
#[derive(Debug, Clone)]
pub struct Image {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// e.g. `6.1.0-56-amd64`.
    pub kernel_version: String,
}

/// A kernel and the directory its modules are in.
struct Kernel {
    vmlinuz: PathBuf,
    modules: PathBuf,
    version: String,
}

/// Builds the image under `cache` or returns the cached one.
pub fn ensure(cache: &Path) -> anyhow::Result<Image> {
    let busybox = busybox()?;
    let kernel = kernel(cache)?;
    let init = init_script();
    let mut h = Sha256::new();
    h.update(kernel.version.as_bytes());
    h.update(init.as_bytes());
    h.update(std::fs::metadata(&busybox)?.len().to_le_bytes());
    let key = hex::encode(&h.finalize()[..8]);
    let dir = cache.join(format!("image-{key}"));
    let img = Image {
        kernel: dir.join("vmlinuz"),
        initrd: dir.join("initrd.img"),
        kernel_version: kernel.version.clone(),
    };
    if img.kernel.is_file() && img.initrd.is_file() {
        return Ok(img);
    }
    let tmp = cache.join(format!(".image-{key}.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let mut cpio = Cpio::default();
    for d in ["bin", "dev", "proc", "sys", "etc", "tmp", "mods", "run"] {
        cpio.dir(d);
    }
    cpio.char_dev("dev/console", 5, 1);
    cpio.file(
        "bin/busybox",
        0o755,
        &std::fs::read(&busybox).with_context(|| format!("cannot read {}", busybox.display()))?,
    );
    cpio.file("init", 0o755, init.as_bytes());
    cpio.file("etc/udhcpc.script", 0o755, UDHCPC_SCRIPT.as_bytes());
    for m in MODULES {
        if let Some(p) = find_module(&kernel.modules, m) {
            let data = std::fs::read(&p).with_context(|| format!("cannot read {}", p.display()))?;
            cpio.file(&format!("mods/{m}.ko"), 0o644, &data);
        }
    }
    std::fs::write(tmp.join("initrd.img"), cpio.finish())?;
    std::fs::copy(&kernel.vmlinuz, tmp.join("vmlinuz"))
        .with_context(|| format!("cannot copy {}", kernel.vmlinuz.display()))?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&tmp, &dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(img)
}

/// A statically linked busybox (Debian `busybox-static`): the initramfs has
/// no C library.
fn busybox() -> anyhow::Result<PathBuf> {
    for p in ["/bin/busybox", "/usr/bin/busybox"] {
        let p = PathBuf::from(p);
        if let Ok(data) = std::fs::read(&p)
            && is_static_elf(&data)
        {
            return Ok(p);
        }
    }
    bail!("no statically linked busybox (install the busybox-static package)")
}

/// An ELF file without a program interpreter (PT_INTERP) is static.
fn is_static_elf(data: &[u8]) -> bool {
    if data.len() < 64 || &data[..4] != b"\x7fELF" || data[4] != 2 || data[5] != 1 {
        return false;
    }
    let u16_at = |o: usize| u16::from_le_bytes([data[o], data[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(data[32..40].try_into().unwrap_or([0; 8])) as usize;
    let (phentsize, phnum) = (u16_at(54), u16_at(56));
    (0..phnum).all(|i| {
        let o = phoff + i * phentsize;
        o + 4 > data.len()
            || u32::from_le_bytes([data[o], data[o + 1], data[o + 2], data[o + 3]]) != 3
    })
}

/// A kernel with a virtio NIC driver: one already on this machine
/// (`/boot/vmlinuz-*` with its modules), else Debian's package, downloaded
/// with `apt-get download` into the cache and extracted there.
fn kernel(cache: &Path) -> anyhow::Result<Kernel> {
    if let Some(k) = local_kernel(Path::new("/boot"), Path::new("/lib/modules")) {
        return Ok(k);
    }
    let root = cache.join("kernel").join("root");
    if let Some(k) = local_kernel(&root.join("boot"), &root.join("lib/modules")) {
        return Ok(k);
    }
    let dir = cache.join("kernel");
    std::fs::create_dir_all(&dir)?;
    let deb = match find_deb(&dir) {
        Some(d) => d,
        None => {
            let pkg = kernel_package()?;
            let out = Command::new("apt-get")
                .args(["download", &pkg])
                .current_dir(&dir)
                .output()
                .context("cannot run apt-get (the lab downloads Debian's kernel package)")?;
            if !out.status.success() {
                bail!(
                    "apt-get download {pkg} failed: {} (run apt-get update?)",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            find_deb(&dir).context("apt-get download left no .deb")?
        }
    };
    std::fs::create_dir_all(&root)?;
    let script = format!(
        "dpkg-deb --fsys-tarfile '{}' | tar -x -C '{}' --wildcards './boot/vmlinuz-*' \
         '*/drivers/virtio/virtio*.ko*' '*/drivers/net/virtio_net.ko*' '*/failover.ko*' \
         '*/net_failover.ko*'",
        deb.display(),
        root.display()
    );
    let st = Command::new("sh")
        .args(["-c", &script])
        .status()
        .context("cannot run dpkg-deb")?;
    if !st.success() {
        bail!("cannot extract {}", deb.display());
    }
    local_kernel(&root.join("boot"), &root.join("lib/modules"))
        .with_context(|| format!("{} holds no usable kernel", deb.display()))
}

fn find_deb(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("linux-image-") && n.ends_with(".deb"))
        })
}

/// `linux-image-amd64` is a meta-package; the kernel is its dependency.
fn kernel_package() -> anyhow::Result<String> {
    let out = Command::new("apt-cache")
        .args(["depends", "linux-image-amd64"])
        .output()
        .context("cannot run apt-cache")?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| {
            p.starts_with("linux-image-") && p.as_bytes().get(12).is_some_and(u8::is_ascii_digit)
        })
        .map(str::to_string)
        .context("apt-cache knows no linux-image-amd64 (run apt-get update)")
}

/// The newest `vmlinuz-*` in `boot` whose modules directory holds an
/// uncompressed virtio_net (busybox insmod reads plain `.ko` files).
fn local_kernel(boot: &Path, modules: &Path) -> Option<Kernel> {
    let mut found: Vec<Kernel> = std::fs::read_dir(boot)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let version = name.strip_prefix("vmlinuz-")?.to_string();
            let mods = modules.join(&version);
            find_module(&mods, "virtio_net")?;
            std::fs::File::open(e.path()).ok()?;
            Some(Kernel {
                vmlinuz: e.path(),
                modules: mods,
                version,
            })
        })
        .collect();
    found.sort_by(|a, b| a.version.cmp(&b.version));
    found.pop()
}

/// `<name>.ko` anywhere under `dir`.
fn find_module(dir: &Path, name: &str) -> Option<PathBuf> {
    let want = format!("{name}.ko");
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).ok()?.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if e.file_name().to_str() == Some(want.as_str()) {
                return Some(p);
            }
        }
    }
    None
}

const UDHCPC_SCRIPT: &str = r#"#!/bin/sh
case "$1" in
  bound|renew)
    ifconfig "$interface" "$ip" netmask "${subnet:-255.255.255.0}" up
    echo "$ip" > /run/ip ;;
  deconfig) ifconfig "$interface" 0.0.0.0 up ;;
esac
"#;

/// The node's whole userland. The seed URL comes from the `ds=nocloud-net`
/// token the boot script puts on the command line, as cloud-init reads it.
fn init_script() -> String {
    format!(
        r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
fail() {{ echo "{FAILED} step=$1"; poweroff -f; }}
SEED=; XNAME=
for x in $(cat /proc/cmdline); do
  case "$x" in
    ds=nocloud*) SEED="${{x#*;s=}}" ;;
    xname=*) XNAME="${{x#xname=}}" ;;
  esac
done
for m in {modules}; do
  [ -f /mods/$m.ko ] && insmod /mods/$m.ko 2>/dev/null
done
ip link set lo up
ip link set eth0 up || fail nic
udhcpc -i eth0 -s /etc/udhcpc.script -n -q -t 10 -T 2 -V openchami-lab >/dev/null 2>&1 || fail dhcp
[ -n "$SEED" ] || fail no-seed-url
ok=
for i in 1 2 3 4 5; do
  wget -q -O /run/meta-data "${{SEED}}meta-data" && ok=1 && break
  sleep 1
done
[ -n "$ok" ] || fail meta-data
HOST=$(sed -n 's/^local-hostname: *//p' /run/meta-data | head -1)
IID=$(sed -n 's/^instance-id: *//p' /run/meta-data | head -1)
echo "{MARKER} xname=$XNAME hostname=$HOST ip=$(cat /run/ip) uptime=$(cut -d' ' -f1 /proc/uptime)"
ok=
for i in 1 2 3 4 5; do
  wget -q -O /dev/null --post-data "instance_id=$IID&hostname=$HOST" "${{SEED}}phone-home/$IID" && ok=1 && break
  sleep 1
done
[ -n "$ok" ] || fail phone-home
echo "{PHONED_HOME} xname=$XNAME"
poweroff -f
"#,
        modules = MODULES.join(" "),
    )
}

/// An initramfs in the kernel's `newc` cpio format (uncompressed, which
/// every kernel reads; the image is small).
#[derive(Default)]
pub struct Cpio {
    out: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        self.ino += 1;
        let fields = [
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            data.len() as u32,
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0,
        ];
        let _ = write!(self.out, "070701");
        for f in fields {
            let _ = write!(self.out, "{f:08X}");
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    pub fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, (0, 0), &[]);
    }

    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, 0o100000 | perm, (0, 0), data);
    }

    pub fn char_dev(&mut self, name: &str, major: u32, minor: u32) {
        self.entry(name, 0o020600, (major, minor), &[]);
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpio_is_newc() {
        let mut c = Cpio::default();
        c.dir("bin");
        c.file("init", 0o755, b"#!/bin/sh\n");
        let out = c.finish();
        assert!(out.starts_with(b"070701"));
        assert_eq!(out.len() % 4, 0);
        // mode of the directory, file size of init.
        assert_eq!(&out[14..22], b"000041ED");
        let second = 110 + 4 + 2; // header + "bin\0" + pad to 4
        assert_eq!(&out[second..second + 6], b"070701");
        assert_eq!(&out[second + 54..second + 62], b"0000000A");
        let s = String::from_utf8_lossy(&out);
        assert!(s.contains("TRAILER!!!"));
    }

    #[test]
    fn static_elf_is_told_from_dynamic() {
        assert!(!is_static_elf(b"not an elf"));
        if let Ok(sh) = std::fs::read("/bin/sh") {
            assert!(!is_static_elf(&sh), "/bin/sh is dynamically linked");
        }
    }

    #[test]
    fn init_prints_marker_and_phones_home() {
        let s = init_script();
        assert!(s.contains(MARKER) && s.contains(PHONED_HOME));
        assert!(s.contains("phone-home/$IID"));
        assert!(s.starts_with("#!/bin/busybox sh\n"));
    }
}
