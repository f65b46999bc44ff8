//! A TFTP load client for `bench/tftp.sh`: starts N reads of one file at
//! once, asks for `blksize` and (optionally) `windowsize`, checks every byte
//! against a local copy and prints the total time, per-transfer percentiles
//! and the failures.
//!
//! ```text
//! cargo run --release --example tftp_load -- \
//!     --server 127.0.0.1:6969 --file ipxe.efi --expect /usr/lib/ipxe/ipxe.efi \
//!     --clients 500 --blksize 1468 --windowsize 16
//! ```
//!
//! A server that does not grant `windowsize` is read in lockstep. A request
//! or ACK that gets no answer within `--timeout-ms` is sent again, at most
//! `--retries` times in a row.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

struct Args {
    server: SocketAddr,
    file: String,
    expect: Vec<u8>,
    clients: usize,
    blksize: u16,
    windowsize: u16,
    timeout: Duration,
    retries: u32,
}

fn usage() -> ! {
    eprintln!(
        "usage: tftp_load --server ADDR:PORT --file NAME --expect LOCAL_COPY \
         [--clients 500] [--blksize 1468] [--windowsize 0] [--timeout-ms 1000] [--retries 10]"
    );
    std::process::exit(2)
}

fn args() -> Args {
    let mut server = None;
    let mut file = None;
    let mut expect = None;
    let mut a = Args {
        server: SocketAddr::from(([127, 0, 0, 1], 69)),
        file: String::new(),
        expect: Vec::new(),
        clients: 500,
        blksize: 1468,
        windowsize: 0,
        timeout: Duration::from_millis(1000),
        retries: 10,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_else(|| usage());
        let num = |v: &str| v.parse::<u64>().unwrap_or_else(|_| usage());
        match k.as_str() {
            "--server" => server = Some(v.parse().unwrap_or_else(|_| usage())),
            "--file" => file = Some(v),
            "--expect" => {
                expect = Some(std::fs::read(&v).unwrap_or_else(|e| {
                    eprintln!("tftp_load: {v}: {e}");
                    std::process::exit(2)
                }))
            }
            "--clients" => a.clients = num(&v) as usize,
            "--blksize" => a.blksize = num(&v) as u16,
            "--windowsize" => a.windowsize = num(&v) as u16,
            "--timeout-ms" => a.timeout = Duration::from_millis(num(&v)),
            "--retries" => a.retries = num(&v) as u32,
            _ => usage(),
        }
    }
    a.server = server.unwrap_or_else(|| usage());
    a.file = file.unwrap_or_else(|| usage());
    a.expect = expect.unwrap_or_else(|| usage());
    a
}

fn rrq(a: &Args) -> Vec<u8> {
    let mut p = vec![0, 1];
    let mut field = |s: &str| {
        p.extend_from_slice(s.as_bytes());
        p.push(0);
    };
    field(&a.file);
    field("octet");
    field("blksize");
    field(&a.blksize.to_string());
    if a.windowsize > 0 {
        field("windowsize");
        field(&a.windowsize.to_string());
    }
    p
}

fn ack(n: u16) -> [u8; 4] {
    let b = n.to_be_bytes();
    [0, 4, b[0], b[1]]
}

/// The options of an OACK body.
fn oack_opts(body: &[u8]) -> Vec<(String, String)> {
    let fields: Vec<String> = body
        .split(|c| *c == 0)
        .map(|s| String::from_utf8_lossy(s).to_ascii_lowercase())
        .collect();
    fields
        .chunks(2)
        .filter(|kv| kv.len() == 2)
        .map(|kv| (kv[0].clone(), kv[1].clone()))
        .collect()
}

/// One complete read; the time it took.
async fn one(a: Arc<Args>) -> Result<Duration, String> {
    let start = Instant::now();
    let sock = UdpSocket::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("bind: {e}"))?;
    let mut last: Vec<u8> = rrq(&a);
    let mut last_to = a.server;
    sock.send_to(&last, last_to)
        .await
        .map_err(|e| format!("send: {e}"))?;

    let mut tid: Option<SocketAddr> = None;
    let mut blksize = 512usize;
    let mut window = 1u32;
    let mut in_window = 0u32;
    let mut expected: u16 = 1;
    let mut data: Vec<u8> = Vec::with_capacity(a.expect.len());
    let mut tries = 0u32;
    let mut gap_acked = false;
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, from) = match tokio::time::timeout(a.timeout, sock.recv_from(&mut buf)).await {
            Err(_) => {
                tries += 1;
                if tries > a.retries {
                    return Err(format!("no answer after {tries} tries"));
                }
                sock.send_to(&last, last_to)
                    .await
                    .map_err(|e| format!("send: {e}"))?;
                continue;
            }
            Ok(r) => r.map_err(|e| format!("recv: {e}"))?,
        };
        if tid.is_some_and(|t| t != from) {
            // A second transfer (the server took a resent request as new):
            // end it, as RFC 1350 says, so it stops sending.
            let _ = sock
                .send_to(b"\0\x05\0\x05unknown transfer ID\0", from)
                .await;
            continue;
        }
        if n < 4 {
            continue;
        }
        let p = &buf[..n];
        match u16::from_be_bytes([p[0], p[1]]) {
            6 if tid.is_none() => {
                tid = Some(from);
                for (k, v) in oack_opts(&p[2..]) {
                    match k.as_str() {
                        "blksize" => blksize = v.parse().map_err(|_| "bad blksize")?,
                        "windowsize" => window = v.parse().map_err(|_| "bad windowsize")?,
                        _ => {}
                    }
                }
                last = ack(0).to_vec();
                last_to = from;
                sock.send_to(&last, from)
                    .await
                    .map_err(|e| format!("send: {e}"))?;
                tries = 0;
            }
            3 => {
                tid = Some(from);
                let block = u16::from_be_bytes([p[2], p[3]]);
                if block == expected {
                    let d = &p[4..];
                    data.extend_from_slice(d);
                    expected = expected.wrapping_add(1);
                    in_window += 1;
                    tries = 0;
                    gap_acked = false;
                    let end = d.len() < blksize;
                    if end || in_window == window {
                        in_window = 0;
                        last = ack(block).to_vec();
                        last_to = from;
                        sock.send_to(&last, from)
                            .await
                            .map_err(|e| format!("send: {e}"))?;
                    }
                    if end {
                        let took = start.elapsed();
                        return if data == a.expect {
                            Ok(took)
                        } else {
                            Err(format!(
                                "{} bytes differ from the {} expected",
                                data.len(),
                                a.expect.len()
                            ))
                        };
                    }
                } else if !gap_acked {
                    // Out of order: say what we have, once per gap.
                    gap_acked = true;
                    in_window = 0;
                    last = ack(expected.wrapping_sub(1)).to_vec();
                    last_to = from;
                    sock.send_to(&last, from)
                        .await
                        .map_err(|e| format!("send: {e}"))?;
                }
            }
            5 => {
                return Err(format!(
                    "error {}: {}",
                    u16::from_be_bytes([p[2], p[3]]),
                    String::from_utf8_lossy(&p[4..]).trim_end_matches('\0')
                ));
            }
            _ => {}
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn main() {
    let a = Arc::new(args());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let start = Instant::now();
        let tasks: Vec<_> = (0..a.clients)
            .map(|_| tokio::spawn(one(a.clone())))
            .collect();
        let mut times = Vec::new();
        let mut failures = 0usize;
        let mut first_error = None;
        for t in tasks {
            match t.await {
                Ok(Ok(d)) => times.push(d.as_secs_f64()),
                Ok(Err(e)) => {
                    failures += 1;
                    first_error.get_or_insert(e);
                }
                Err(e) => {
                    failures += 1;
                    first_error.get_or_insert(e.to_string());
                }
            }
        }
        let total = start.elapsed().as_secs_f64();
        times.sort_by(f64::total_cmp);
        println!(
            "transfers={} failures={} total_s={:.3} p50_s={:.3} p99_s={:.3} max_s={:.3}",
            a.clients,
            failures,
            total,
            percentile(&times, 0.50),
            percentile(&times, 0.99),
            times.last().copied().unwrap_or(f64::NAN)
        );
        if let Some(e) = first_error {
            eprintln!("tftp_load: first failure: {e}");
        }
    });
}
