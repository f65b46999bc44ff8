//! Head nodes on one PostgreSQL database share their keys: a token one
//! issues the others accept, a BMC password one seals the others open, one
//! root CA signs every head's own listener certificate, and a head without
//! the key-encryption key that seals them refuses to start.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::postgres;
use common::{Harness, Http, TIMEOUT, eventually};
use openchami::app::App;
use serde_json::{Value, json};

const COMPONENTS: &str = "/hsm/v2/State/Components";
const ISSUER: &str = "https://heads.test";

async fn head(url: &str) -> Harness {
    let url = url.to_string();
    Harness::start_with(move |c| {
        c.store.url = url;
        c.auth.issuer = ISSUER.into();
    })
    .await
}

fn node(id: &str, nid: i64) -> Value {
    json!({"Components": [{"ID": id, "State": "Ready", "Type": "Node", "NID": nid}]})
}

/// Posts a component to `h` with `token` until it is accepted (the other
/// head may still be taking a change), failing after [`TIMEOUT`].
async fn accepted(h: &Harness, token: &str, id: &str, nid: i64) {
    let api = h.api_with(Some(token));
    eventually(&format!("{id} written with the token"), || {
        let api = api.clone();
        let body = node(id, nid);
        async move { (api.post(COMPONENTS, &body).await.status == 204).then_some(()) }
    })
    .await;
}

/// `openchami token issue` on a head's state directory.
fn cli_token(state_dir: &std::path::Path) -> String {
    let cfg = state_dir.join("issuer.toml");
    std::fs::write(&cfg, format!("[auth]\nissuer = \"{ISSUER}\"\n")).expect("write the config");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_openchami"))
        .env_remove("OPENCHAMI_CONFIG")
        .env_remove("OPENCHAMI_STATE_DIR")
        .arg("--config")
        .arg(&cfg)
        .arg("--state-dir")
        .arg(state_dir)
        .args(["token", "issue", "--sub", "ops"])
        .output()
        .expect("run openchami");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_issued_on_one_head_writes_on_the_other() {
    let url = postgres::shared().database();
    let a = head(&url).await;
    let b = head(&url).await;
    // (what, token issued on a)
    let cases = [
        ("signed in process", a.token.clone()),
        ("from `token issue`", cli_token(&a.state_dir())),
    ];
    for (i, (what, token)) in cases.iter().enumerate() {
        let r = b
            .api_with(Some(token))
            .post(COMPONENTS, &node(&format!("x1000c0s{i}b0n0"), 1 + i as i64))
            .await;
        assert_eq!(r.status, 204, "{what}: {r:?}");
    }
    assert_eq!(
        a.app().state.tokens.kids(),
        b.app().state.tokens.kids(),
        "one key set"
    );
}

/// Heads started together on an empty database agree on one KEK and one
/// set of keys, whichever uploads first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heads_started_together_share_one_set_of_keys() {
    for _ in 0..3 {
        let url = postgres::shared().database();
        let (a, b, c) = tokio::join!(head(&url), head(&url), head(&url));
        for h in [&b, &c] {
            assert_eq!(h.app().state.tokens.kids(), a.app().state.tokens.kids());
            assert_eq!(h.root_pem(), a.root_pem());
            let r = h.api_with(Some(&a.token)).get(COMPONENTS).await;
            assert_eq!(r.status, 200, "{r:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bmc_password_sealed_on_one_head_opens_on_the_other() {
    let url = postgres::shared().database();
    let a = head(&url).await;
    let b = head(&url).await;
    a.api
        .put(
            "/discovery/v1/credentials/x3000c0s1b0",
            &json!({"username": "root", "password": "hunter2"}),
        )
        .await
        .ok();
    let sealed = eventually("the credential on b", || {
        let s = b.app().state.store.snapshot();
        let c = s.bmc_credentials.get("x3000c0s1b0").cloned();
        async move { c }
    })
    .await;
    assert_ne!(sealed.password, "hunter2");
    assert_eq!(
        b.app().state.secrets.open(&sealed.password).unwrap(),
        "hunter2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_head_has_its_own_certificate_from_the_one_root() {
    let url = postgres::shared().database();
    let a = head(&url).await;
    let u = url.clone();
    let b = Harness::start_with(move |c| {
        c.store.url = u;
        c.auth.issuer = ISSUER.into();
        c.api.names = vec!["head-b.cluster".into()];
    })
    .await;
    let r = a.node.get("/ca/root.pem").await;
    assert_eq!(r.status, 200);
    let root = String::from_utf8(r.body.to_vec()).unwrap();
    assert_eq!(root, b.root_pem());
    // A client trusting only that root reaches both heads.
    for h in [&a, &b] {
        let client = Http::https(&h.api_base(), &root, Some(h.token.clone()));
        assert_eq!(client.get("/readyz").await.status, 200);
    }
    let leaf = |h: &Harness| {
        let pem = std::fs::read(h.state_dir().join("ca/server.crt")).unwrap();
        let der = rustls_pki_types::pem::PemObject::from_pem_slice(&pem)
            .map(|d: rustls_pki_types::CertificateDer<'static>| d.to_vec())
            .unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let names: Vec<String> = cert
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .iter()
            .map(|n| n.to_string())
            .collect();
        (cert.raw_serial().to_vec(), names.join(","))
    };
    let ((serial_a, names_a), (serial_b, names_b)) = (leaf(&a), leaf(&b));
    assert_ne!(serial_a, serial_b);
    assert!(names_b.contains("head-b.cluster"), "{names_b}");
    assert!(!names_a.contains("head-b.cluster"), "{names_a}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_without_the_right_kek_refuses_to_start() {
    let url = postgres::shared().database();
    let a = head(&url).await;
    let keys = tempfile::tempdir().unwrap();
    let wrong = keys.path().join("wrong.key");
    std::fs::write(&wrong, [7u8; 32]).unwrap();
    std::fs::set_permissions(&wrong, std::fs::Permissions::from_mode(0o600)).unwrap();
    let open = keys.path().join("open.key");
    std::fs::copy(postgres::kek_for(&url), &open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    let missing = keys.path().join("missing.key");
    // (what, kek file, what the refusal says)
    let cases = [
        ("missing", &missing, "does not exist: copy it"),
        ("another key", &wrong, "is not the key-encryption key"),
        ("readable by others", &open, "chmod 600"),
    ];
    for (what, kek, says) in cases {
        let dir = tempfile::tempdir().unwrap();
        let mut c = common::test_config(dir.path());
        c.store.url = url.clone();
        c.store.kek_file = kek.display().to_string();
        let err = match tokio::time::timeout(TIMEOUT, App::start(c)).await.unwrap() {
            Ok(app) => {
                app.shutdown();
                panic!("{what}: started");
            }
            Err(e) => format!("{e:#}"),
        };
        assert!(err.contains(says), "{what}: {err}");
        assert!(err.contains(&kek.display().to_string()), "{what}: {err}");
        assert!(!err.contains('\n'), "{what}: one line: {err}");
        // Nothing of the shared keys was written.
        assert!(!dir.path().join("ca/token.key").exists(), "{what}");
    }
    // The first head is unaffected.
    a.api.get(COMPONENTS).await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_token_key_reaches_the_other_head() {
    let url = postgres::shared().database();
    let a = head(&url).await;
    let b = head(&url).await;
    let before = a.token.clone();
    let old_kid = a.app().state.tokens.current_kid();
    let kid = openchami::shared_keys::rotate_token_key(&a.app().state)
        .await
        .unwrap();
    assert_ne!(kid, old_kid);
    let after = a.token_with("after", Duration::from_secs(600), &[]);
    accepted(&b, &after, "x1000c0s0b0n0", 1).await;
    // b signs with the new key too, and still takes the old one's tokens.
    assert_eq!(b.app().state.tokens.current_kid(), kid);
    assert_eq!(b.app().state.tokens.kids(), [kid, old_kid]);
    let from_b = b.token_with("b", Duration::from_secs(60), &[]);
    // (head, token, component, NID)
    let cases = [
        (&a, &before, "x1000c0s1b0n0", 2),
        (&b, &before, "x1000c0s2b0n0", 3),
        (&a, &from_b, "x1000c0s3b0n0", 4),
    ];
    for (h, token, id, nid) in cases {
        let r = h
            .api_with(Some(token))
            .post(COMPONENTS, &node(id, nid))
            .await;
        assert_eq!(r.status, 204, "{id}: {r:?}");
    }

    // `openchami token rotate` on b's state directory, while both run:
    // a takes the key through the database.
    let cfg = b.state_dir().join("rotate.toml");
    std::fs::write(
        &cfg,
        format!(
            "[store]\nurl = \"{url}\"\nkek_file = \"{}\"\n",
            postgres::kek_for(&url).display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_openchami"))
        .env_remove("OPENCHAMI_CONFIG")
        .env_remove("OPENCHAMI_STATE_DIR")
        .arg("--config")
        .arg(&cfg)
        .arg("--state-dir")
        .arg(b.state_dir())
        .args(["token", "rotate"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let third = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(third.len(), 16, "{third}");
    eventually("a takes the key rotated from the command line", || {
        let kids = a.app().state.tokens.kids();
        let third = third.clone();
        async move { (kids.first() == Some(&third)).then_some(()) }
    })
    .await;
    assert_eq!(a.app().state.tokens.kids().len(), 3);
    let from_a = a.token_with("a", Duration::from_secs(60), &[]);
    accepted(&b, &from_a, "x1000c0s4b0n0", 5).await;
}

/// `store migrate` carries the keys along: a token and a sealed BMC
/// password from before the move work on every head of the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_from_before_store_migrate_are_served_after() {
    let mut old = Harness::start_with(|c| c.auth.issuer = ISSUER.into()).await;
    old.api
        .put(
            "/discovery/v1/credentials/default",
            &json!({"username": "root", "password": "s3cret"}),
        )
        .await
        .ok();
    let token = old.token.clone();
    old.stop().await;
    let url = postgres::shared().database();
    let (u, d) = (url.clone(), old.state_dir());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_openchami"))
            .env_remove("OPENCHAMI_CONFIG")
            .arg("--state-dir")
            .arg(d)
            .args(["store", "migrate", "--to", &u])
            .output()
            .expect("run openchami")
    })
    .await
    .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kek = old.state_dir().join("kek.key");
    assert!(said.contains(&kek.display().to_string()), "{said}");
    let mode = std::fs::metadata(&kek).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // The old state directory and a new one, both with the KEK.
    let mut heads = Vec::new();
    for dir in [Some(old.state_dir()), None] {
        let (u, k) = (url.clone(), kek.display().to_string());
        let h = match dir {
            Some(dir) => {
                let mut c = common::test_config(&dir);
                c.store.url = u;
                c.store.kek_file = k;
                c.auth.issuer = ISSUER.into();
                Harness::start_with(move |x| *x = c).await
            }
            None => {
                Harness::start_with(move |c| {
                    c.store.url = u;
                    c.store.kek_file = k;
                    c.auth.issuer = ISSUER.into();
                })
                .await
            }
        };
        heads.push(h);
    }
    for (i, h) in heads.iter().enumerate() {
        let r = h
            .api_with(Some(&token))
            .post(
                COMPONENTS,
                &node(&format!("x4000c0s{i}b0n0"), 40 + i as i64),
            )
            .await;
        assert_eq!(r.status, 204, "head {i}: {r:?}");
        let s = h.app().state.store.snapshot();
        let c = s.bmc_credentials.get("default").unwrap();
        assert_eq!(h.app().state.secrets.open(&c.password).unwrap(), "s3cret");
    }
}

/// With SQLite, `token rotate` works on a stopped appliance's state
/// directory only; the restarted appliance signs with the new key and
/// still accepts the old one's tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_head_rotates_its_token_key_when_stopped() {
    let mut h = Harness::start().await;
    let before = h.token.clone();
    let rotate = |dir: std::path::PathBuf| {
        std::process::Command::new(env!("CARGO_BIN_EXE_openchami"))
            .env_remove("OPENCHAMI_CONFIG")
            .env_remove("OPENCHAMI_STATE_DIR")
            .arg("--config")
            .arg("/dev/null")
            .arg("--state-dir")
            .arg(dir)
            .args(["token", "rotate"])
            .output()
            .expect("run openchami")
    };
    let running = rotate(h.state_dir());
    assert!(!running.status.success());
    assert!(String::from_utf8_lossy(&running.stderr).contains("stop the appliance first"));
    h.stop().await;
    let stopped = rotate(h.state_dir());
    assert!(
        stopped.status.success(),
        "{}",
        String::from_utf8_lossy(&stopped.stderr)
    );
    let kid = String::from_utf8_lossy(&stopped.stdout).trim().to_string();
    h.restart().await;
    let tokens = &h.app().state.tokens;
    assert_eq!(tokens.current_kid(), kid);
    assert_eq!(tokens.kids().len(), 2);
    let r = h.api_with(Some(&before)).get(COMPONENTS).await;
    assert_eq!(r.status, 200, "{r:?}");
}
