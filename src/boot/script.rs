//! iPXE boot scripts and kexec parameters, rendered without I/O.
//!
//! Everything a node gets at boot is decided here from plain inputs (the
//! node, its configuration, the node base URL, the retry count, a jitter
//! fraction and the time), so every case is a golden file and the HTTP
//! handler is only lookup and encoding.

use std::fmt::Write as _;

/// A boot configuration as rendering needs it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BootSpec {
    pub kernel: String,
    pub initrd: String,
    pub params: String,
}

/// Who is booting, as far as the inventory knows.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Identity {
    pub xname: Option<String>,
    pub nid: Option<i64>,
    /// The MAC the request named, lower-case with colons.
    pub mac: Option<String>,
}

/// Longest wait between retries, in seconds.
pub const MAX_RETRY_DELAY: u64 = 300;
/// Retry counts beyond this are clamped.
pub const MAX_RETRY: u32 = 1000;

/// Seconds to wait before retry `retry`: 10 × 2^retry capped at 300, plus up
/// to 20 % jitter so a rack that failed together does not retry in lockstep.
/// `jitter` is a fraction in [0, 1).
pub fn retry_delay(retry: u32, jitter: f64) -> u64 {
    let base = if retry >= 5 {
        MAX_RETRY_DELAY
    } else {
        (10u64 << retry).min(MAX_RETRY_DELAY)
    };
    let jitter = if jitter.is_finite() {
        jitter.clamp(0.0, 0.999_999)
    } else {
        0.0
    };
    base + (base as f64 * 0.2 * jitter) as u64
}

fn has_key(tokens: &[String], key: &str) -> bool {
    tokens.iter().any(|t| t.starts_with(key))
}

/// The kernel command line: stored params, then `xname=`, `nid=`, `BOOTIF=`
/// and the cloud-init datasource, each only if no token already starts with
/// its key (matched at token start, as upstream does).
pub fn kernel_params(spec: &BootSpec, who: &Identity, node_base: &str) -> Vec<String> {
    let mut tokens: Vec<String> = spec.params.split_whitespace().map(String::from).collect();
    if let Some(x) = &who.xname
        && !has_key(&tokens, "xname=")
    {
        tokens.push(format!("xname={x}"));
    }
    if let Some(n) = who.nid
        && !has_key(&tokens, "nid=")
    {
        tokens.push(format!("nid={n}"));
    }
    if let Some(m) = &who.mac
        && !has_key(&tokens, "BOOTIF=")
    {
        tokens.push(format!("BOOTIF=01-{}", m.replace(':', "-")));
    }
    if !has_key(&tokens, "ds=") {
        tokens.push(format!("ds=nocloud-net;s={node_base}/cloud-init/"));
    }
    tokens
}

/// The command line iPXE passes: with an initrd, `initrd=initrd` first and
/// any other `initrd=` token dropped (only whole tokens, so URLs containing
/// "initrd" survive).
pub fn ipxe_params(spec: &BootSpec, who: &Identity, node_base: &str) -> String {
    let mut tokens = kernel_params(spec, who, node_base);
    if !spec.initrd.is_empty() {
        tokens.retain(|t| !t.starts_with("initrd="));
        tokens.insert(0, "initrd=initrd".into());
    }
    tokens.join(" ")
}

/// Where a failed boot chains back to: BSS's route (`name=`) or
/// boot-service's (`host=`), each of which counts `retry`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryRoute {
    Bss,
    BootService,
}

/// The query that names this node when it chains back for a retry.
fn selector(who: &Identity, route: RetryRoute) -> String {
    let name_key = match route {
        RetryRoute::Bss => "name",
        RetryRoute::BootService => "host",
    };
    match (&who.mac, &who.xname) {
        (Some(m), _) => format!("mac={m}"),
        (None, Some(x)) => format!("{name_key}={x}"),
        (None, None) => String::new(),
    }
}

/// The boot script of a configured node.
pub fn boot_script(
    spec: &BootSpec,
    who: &Identity,
    node_base: &str,
    retry: u32,
    jitter: f64,
) -> String {
    boot_script_via(spec, who, node_base, RetryRoute::Bss, retry, jitter)
}

/// [`boot_script`], retrying through `route`.
pub fn boot_script_via(
    spec: &BootSpec,
    who: &Identity,
    node_base: &str,
    route: RetryRoute,
    retry: u32,
    jitter: f64,
) -> String {
    let retry = retry.min(MAX_RETRY);
    let mut s = String::from("#!ipxe\n");
    let params = ipxe_params(spec, who, node_base);
    let _ = writeln!(
        s,
        "kernel --name kernel {} {} || goto boot_retry",
        spec.kernel, params
    );
    if !spec.initrd.is_empty() {
        let _ = writeln!(s, "initrd --name initrd {} || goto boot_retry", spec.initrd);
    }
    s.push_str("boot || goto boot_retry\n:boot_retry\n");
    let _ = writeln!(s, "sleep {}", retry_delay(retry, jitter));
    let path = match route {
        RetryRoute::Bss => "/boot/v1/bootscript",
        RetryRoute::BootService => "/boot-service/bootscript",
    };
    let _ = writeln!(
        s,
        "chain {node_base}{path}?{}&retry={}",
        selector(who, route),
        retry + 1
    );
    s
}

/// First answer to an unknown MAC: ask again with the architecture, so a
/// configuration for `Unknown-<arch>` can be chosen.
pub fn arch_probe(mac: &str, node_base: &str, now_unix: i64) -> String {
    format!(
        "#!ipxe\nchain {node_base}/boot/v1/bootscript?mac={mac}&arch=${{buildarch}}&ts={now_unix}\n"
    )
}

/// An unknown MAC with nothing to boot: say why, wait, reboot. Once the MAC
/// is enrolled, its next DHCP exchange gives it its inventory identity.
pub fn wait_and_reboot(reason: &str, retry: u32, jitter: f64) -> String {
    let reason: String = reason.chars().filter(|c| !c.is_control()).collect();
    format!(
        "#!ipxe\necho {reason}\nsleep {}\nreboot\n",
        retry_delay(retry.min(MAX_RETRY), jitter)
    )
}

/// `json=1`: upstream's shape, with its literal `kernel ` prefix in params.
pub fn script_json(spec: &BootSpec, who: &Identity, node_base: &str) -> serde_json::Value {
    let mut v = serde_json::json!({
        "params": format!("kernel {}", ipxe_params(spec, who, node_base)),
        "kernel": {"path": spec.kernel},
    });
    if !spec.initrd.is_empty() {
        v["initrd"] = serde_json::json!({"path": spec.initrd});
    }
    v
}

/// `GET /boot/v1/bootparams`: what a kexec helper loads next.
pub fn kexec_params(spec: &BootSpec, who: &Identity, node_base: &str) -> serde_json::Value {
    let initrd: Vec<&str> = if spec.initrd.is_empty() {
        Vec::new()
    } else {
        vec![spec.initrd.as_str()]
    };
    serde_json::json!([{
        "kernel": {"path": spec.kernel},
        "initrd": initrd,
        "params": kernel_params(spec, who, node_base).join(" "),
    }])
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "http://172.16.0.254:27778";

    fn spec() -> BootSpec {
        BootSpec {
            kernel: "http://172.16.0.254:27778/artifacts/vmlinuz".into(),
            initrd: "http://172.16.0.254:27778/artifacts/initrd.img".into(),
            params: "console=ttyS0,115200 ip=dhcp".into(),
        }
    }

    fn node() -> Identity {
        Identity {
            xname: Some("x1000c0s0b0n0".into()),
            nid: Some(1),
            mac: Some("52:54:00:be:ef:01".into()),
        }
    }

    #[test]
    fn json_matches_the_contract_example() {
        let v = script_json(&spec(), &node(), BASE);
        assert_eq!(
            v["params"],
            "kernel initrd=initrd console=ttyS0,115200 ip=dhcp xname=x1000c0s0b0n0 nid=1 BOOTIF=01-52-54-00-be-ef-01 ds=nocloud-net;s=http://172.16.0.254:27778/cloud-init/"
        );
        assert_eq!(
            v["initrd"]["path"],
            "http://172.16.0.254:27778/artifacts/initrd.img"
        );
    }

    #[test]
    fn stored_keys_win_and_only_initrd_tokens_are_dropped() {
        let s = BootSpec {
            params: "nid=99 ds=custom initrd=old root=http://x/initrd-images/a".into(),
            ..spec()
        };
        let p = ipxe_params(&s, &node(), BASE);
        assert_eq!(
            p,
            "initrd=initrd nid=99 ds=custom root=http://x/initrd-images/a xname=x1000c0s0b0n0 BOOTIF=01-52-54-00-be-ef-01"
        );
    }

    #[test]
    fn delays_grow_are_capped_and_jittered() {
        assert_eq!(retry_delay(0, 0.0), 10);
        assert_eq!(retry_delay(1, 0.0), 20);
        assert_eq!(retry_delay(4, 0.0), 160);
        assert_eq!(retry_delay(5, 0.0), 300);
        assert_eq!(retry_delay(1000, 0.0), 300);
        assert_eq!(retry_delay(u32::MAX, 0.999), 359);
        assert_eq!(retry_delay(0, f64::NAN), 10);
        for r in 0..40 {
            for j in [0.0, 0.5, 0.99] {
                let d = retry_delay(r, j);
                assert!((10..=360).contains(&d));
            }
        }
    }

    #[test]
    fn kexec_has_no_initrd_token() {
        let v = kexec_params(&spec(), &node(), BASE);
        assert_eq!(
            v[0]["initrd"][0],
            "http://172.16.0.254:27778/artifacts/initrd.img"
        );
        assert!(!v[0]["params"].as_str().unwrap().contains("initrd="));
    }

    /// Compares with `tests/golden/boot/<name>`; `UPDATE_GOLDEN=1` rewrites.
    fn golden(name: &str, actual: &str) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden/boot")
            .join(name);
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, actual).unwrap();
            return;
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (run with UPDATE_GOLDEN=1 to create it)",
                path.display()
            )
        });
        assert_eq!(
            actual,
            expected,
            "{} differs (UPDATE_GOLDEN=1 rewrites it)",
            path.display()
        );
    }

    #[test]
    fn golden_scripts() {
        let no_initrd = BootSpec {
            initrd: String::new(),
            ..spec()
        };
        let by_name = Identity {
            mac: None,
            ..node()
        };
        let unknown_arch = Identity {
            xname: None,
            nid: None,
            mac: Some("52:54:00:be:ef:99".into()),
        };
        golden(
            "known-node.ipxe",
            &boot_script(&spec(), &node(), BASE, 0, 0.0),
        );
        golden(
            "known-node-no-initrd.ipxe",
            &boot_script(&no_initrd, &node(), BASE, 0, 0.0),
        );
        golden(
            "known-node-by-name.ipxe",
            &boot_script(&spec(), &by_name, BASE, 0, 0.0),
        );
        golden(
            "known-node-retry-3-jitter.ipxe",
            &boot_script(&spec(), &node(), BASE, 3, 0.5),
        );
        golden(
            "known-node-retry-capped.ipxe",
            &boot_script(&spec(), &node(), BASE, 5000, 0.0),
        );
        golden(
            "unknown-arch-config.ipxe",
            &boot_script(&spec(), &unknown_arch, BASE, 0, 0.0),
        );
        golden(
            "unknown-probe.ipxe",
            &arch_probe("52:54:00:be:ef:99", BASE, 1767225600),
        );
        golden(
            "unknown-wait.ipxe",
            &wait_and_reboot("52:54:00:be:ef:99 is not in the inventory yet", 0, 0.0),
        );
        let pretty = |v: serde_json::Value| serde_json::to_string_pretty(&v).unwrap() + "\n";
        golden(
            "known-node.json",
            &pretty(script_json(&spec(), &node(), BASE)),
        );
        golden(
            "known-node-no-initrd.json",
            &pretty(script_json(&no_initrd, &node(), BASE)),
        );
        golden("kexec.json", &pretty(kexec_params(&spec(), &node(), BASE)));
    }
}
