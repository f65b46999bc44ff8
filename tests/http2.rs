//! HTTP/2 on the API listener against hostile and common clients: refusals
//! that curl reads as answers (not framing errors), and floods of reset
//! streams and CONTINUATION frames that leave the server answering. The
//! floods are written as raw frames over TLS to 127.0.0.1, bounded in count
//! and time.

mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::Harness;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const GOAWAY: u8 = 7;
const CONTINUATION: u8 = 9;
const END_STREAM: u8 = 1;
const END_HEADERS: u8 = 4;

fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = Vec::with_capacity(9 + payload.len());
    f.extend_from_slice(&len.to_be_bytes()[1..]);
    f.push(ty);
    f.push(flags);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// HPACK for `GET https://127.0.0.1/healthz`, no dynamic table.
fn get_healthz() -> Vec<u8> {
    let mut b = vec![0x82, 0x87]; // :method GET, :scheme https
    b.push(0x04); // :path, literal without indexing
    b.push(8);
    b.extend_from_slice(b"/healthz");
    b.push(0x01); // :authority, literal without indexing
    b.push(9);
    b.extend_from_slice(b"127.0.0.1");
    b
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

/// A TLS connection to the API listener that negotiated h2, with the
/// client preface and an empty SETTINGS frame sent.
async fn h2_connection(h: &Harness) -> Tls {
    let mut cfg = common::tls_config(&h.root_pem());
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = TcpStream::connect(h.api_addr()).await.expect("connect");
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let mut tls = connector.connect(name, tcp).await.expect("TLS");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    tls.write_all(PREFACE).await.expect("preface");
    tls.write_all(&frame(SETTINGS, 0, 0, &[]))
        .await
        .expect("settings");
    tls
}

/// Reads frames until the server closes or `limit` passes; returns whether
/// a GOAWAY came.
async fn read_until_closed(mut r: tokio::io::ReadHalf<Tls>, limit: Duration) -> bool {
    let mut goaway = false;
    let _ = tokio::time::timeout(limit, async {
        let mut head = [0u8; 9];
        loop {
            if r.read_exact(&mut head).await.is_err() {
                return;
            }
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            goaway |= head[3] == GOAWAY;
            let mut body = vec![0u8; len];
            if r.read_exact(&mut body).await.is_err() {
                return;
            }
        }
    })
    .await;
    goaway
}

/// The server still answers a plain request on a fresh connection.
async fn still_answers(h: &Harness, after: &str) {
    let r = tokio::time::timeout(Duration::from_secs(10), h.anon.get("/healthz")).await;
    assert!(r.is_ok_and(|r| r.status == 200), "no answer after {after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_ends_the_connection_and_the_server_answers() {
    const PAIRS: u32 = 10_000;
    let h = Harness::start().await;
    let (r, mut w) = tokio::io::split(h2_connection(&h).await);
    let reader = tokio::spawn(read_until_closed(r, Duration::from_secs(30)));
    let block = get_healthz();
    let mut sent = 0u32;
    let flood = tokio::time::timeout(Duration::from_secs(30), async {
        while sent < PAIRS {
            let mut batch = Vec::new();
            for _ in 0..200 {
                let id = 2 * sent + 1;
                batch.extend(frame(HEADERS, END_HEADERS | END_STREAM, id, &block));
                batch.extend(frame(RST_STREAM, 0, id, &8u32.to_be_bytes())); // CANCEL
                sent += 1;
            }
            if w.write_all(&batch).await.is_err() {
                return;
            }
        }
    })
    .await;
    let _ = w.shutdown().await;
    let goaway = reader.await.expect("reader");
    assert!(
        goaway || flood.is_ok() && sent < PAIRS,
        "{sent} request/reset pairs and the connection still open"
    );
    assert!(goaway, "the server sends GOAWAY to a rapid reset");
    still_answers(&h, "a rapid-reset flood").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continuation_flood_is_cut_off_and_the_server_answers() {
    const FRAMES: usize = 1000;
    let h = Harness::start().await;
    let (r, mut w) = tokio::io::split(h2_connection(&h).await);
    let reader = tokio::spawn(read_until_closed(r, Duration::from_secs(30)));
    // HEADERS without END_HEADERS, then CONTINUATION frames of 16 KiB
    // literal headers that never end the block.
    let mut header = Vec::new();
    for i in 0..150u32 {
        header.push(0x00); // literal without indexing, new name
        let name = format!("x-{i:04}");
        header.push(name.len() as u8);
        header.extend_from_slice(name.as_bytes());
        header.push(100);
        header.extend_from_slice(&[b'a'; 100]);
    }
    let mut written = 0usize;
    let _ = tokio::time::timeout(Duration::from_secs(30), async {
        if w.write_all(&frame(HEADERS, END_STREAM, 1, &get_healthz()))
            .await
            .is_err()
        {
            return;
        }
        while written < FRAMES {
            if w.write_all(&frame(CONTINUATION, 0, 1, &header))
                .await
                .is_err()
            {
                return;
            }
            written += 1;
        }
    })
    .await;
    let _ = w.shutdown().await;
    let goaway = reader.await.expect("reader");
    assert!(
        goaway,
        "{written} CONTINUATION frames ({} KiB of headers) and no GOAWAY",
        written * header.len() / 1024
    );
    still_answers(&h, "a CONTINUATION flood").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_over_h2_reads_a_refusal_as_an_answer() {
    let h = Harness::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = dir.path().join("root.pem");
    std::fs::write(&ca, h.root_pem()).expect("write the root");
    let url = format!("{}/hsm/v2/State/Components", h.api_base());
    // (what, body): the answer comes before a refused body is read, which
    // races curl's sending; a few rounds each.
    let small = r#"{"Components":[{"ID":"x3000c0s1b0n0","State":"Ready"}]}"#.to_string();
    let medium = format!(r#"{{"pad":"{}"}}"#, "a".repeat(200 * 1024));
    for (what, body) in [("small body", small), ("200 KiB body", medium)] {
        let file = dir.path().join("body.json");
        std::fs::write(&file, &body).expect("write the body");
        for round in 0..5 {
            let out = Command::new("curl")
                .args(["-sS", "--http2", "--max-time", "20", "--cacert"])
                .arg(&ca)
                .args(["-H", "content-type: application/json", "-X", "POST"])
                .arg("--data-binary")
                .arg(format!("@{}", file.display()))
                .args(["-o", "/dev/null", "-w", "%{http_code} %{http_version}"])
                .arg(&url)
                .stdin(Stdio::null())
                .output()
                .expect("curl is installed");
            assert_eq!(
                out.status.code(),
                Some(0),
                "{what}, round {round}: curl: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(String::from_utf8_lossy(&out.stdout), "401 2", "{what}");
        }
    }
}
