//! The leaf modules (`inventory`, `ca`, `redfish`) import nothing else
//! from the crate, so every other module can depend on them and each can
//! be tested on its own. Read from the sources: a `crate::` path in a leaf
//! must name the leaf itself. `config` and `dhcp::settings` must not import
//! each other.

use std::path::{Path, PathBuf};

const LEAVES: &[&str] = &["inventory", "ca", "redfish"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir)
        .expect("read the source directory")
        .flatten()
    {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `crate::<module>` paths outside comments that leave `leaf`, as
/// `file:line: text`.
fn escapes(leaf: &str, file: &Path, text: &str) -> Vec<String> {
    let own = format!("crate::{leaf}");
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let path = &rest[at..];
            let named = path.starts_with(&own)
                && !path[own.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '_');
            if !named {
                found.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
            }
            rest = &path["crate::".len()..];
        }
    }
    found
}

#[test]
fn leaf_modules_import_nothing_else_from_the_crate() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found = Vec::new();
    for leaf in LEAVES {
        let mut files = Vec::new();
        rust_files(&src.join(leaf), &mut files);
        assert!(!files.is_empty(), "src/{leaf} has sources");
        for f in files {
            let text = std::fs::read_to_string(&f).expect("read a source file");
            found.extend(escapes(leaf, &f, &text));
        }
    }
    assert!(
        found.is_empty(),
        "leaf modules reach out:\n{}",
        found.join("\n")
    );
}

/// Protocol servers take what they use (store, metrics, boot steps), never
/// the HTTP side's state: the DHCP packet loop must not depend on it.
#[test]
fn dhcp_does_not_reach_into_http() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src.join("dhcp"), &mut files);
    assert!(!files.is_empty(), "src/dhcp has sources");
    let found: Vec<String> = files
        .iter()
        .flat_map(|f| {
            let text = std::fs::read_to_string(f).expect("read a source file");
            escapes("dhcp", f, &text)
                .into_iter()
                .filter(|l| l.contains("crate::http"))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        found.is_empty(),
        "dhcp reaches into http:\n{}",
        found.join("\n")
    );
}

/// Does `text` name `crate::<module>` (the module itself or anything in
/// it) outside comments? `module` is a path such as `dhcp::settings`.
fn names(text: &str, module: &str) -> bool {
    let path = format!("crate::{module}");
    text.lines().any(|line| {
        let code = line.split("//").next().unwrap_or("");
        code.match_indices(&path).any(|(at, _)| {
            !code[at + path.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '_')
        })
    })
}

/// `config` and `dhcp::settings` must not import each other: the `[dhcp]`
/// section's shape and checks live on one side, and the other only uses
/// them. A cycle here is how a config change ends up rebuilding, and
/// breaking, the DHCP server and the other way round.
#[test]
fn config_and_dhcp_settings_do_not_import_each_other() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let read = |p: &str| std::fs::read_to_string(src.join(p)).expect("read a source file");
    let (config, settings) = (read("config.rs"), read("dhcp/settings.rs"));
    let config_uses_settings = names(&config, "dhcp::settings") || names(&config, "dhcp");
    let settings_uses_config = names(&settings, "config");
    assert!(
        !(config_uses_settings && settings_uses_config),
        "src/config.rs and src/dhcp/settings.rs import each other"
    );
}

#[test]
fn the_scan_finds_what_it_should() {
    // (leaf, source line, escapes)
    let cases: &[(&str, &str, bool)] = &[
        ("inventory", "use crate::inventory::Store;", false),
        ("inventory", "use crate::http::AppState;", true),
        ("inventory", "use crate::inventory_extra::X;", true),
        ("ca", "let x = crate::config::Config::default();", true),
        ("ca", "// see crate::config", false),
        ("redfish", "use crate::redfish::client;", false),
    ];
    for (leaf, line, want) in cases {
        let got = !escapes(leaf, Path::new("f.rs"), line).is_empty();
        assert_eq!(got, *want, "{leaf}: {line}");
    }
    // (module, source line, named)
    let cases: &[(&str, &str, bool)] = &[
        ("config", "use crate::config::DhcpConfig;", true),
        ("config", "let c = crate::config::Config::default();", true),
        ("config", "use crate::configure::X;", false),
        ("config", "// see crate::config", false),
        (
            "dhcp::settings",
            "pub use crate::dhcp::settings::{DhcpConfig};",
            true,
        ),
        ("dhcp::settings", "use crate::dhcp::settingsx::Y;", false),
        ("dhcp", "crate::dhcp::server::serve()", true),
    ];
    for (module, line, want) in cases {
        assert_eq!(names(line, module), *want, "{module}: {line}");
    }
}
