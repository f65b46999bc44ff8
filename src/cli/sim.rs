//! `openchami sim-bmc`: simulated BMCs for scale tests and benchmarks (see
//! [`crate::redfish::sim`]). Not a client of the appliance: it serves until
//! interrupted.

use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use crate::redfish::sim::{SimBmcs, SimConfig};

#[derive(Args, Debug)]
pub struct SimArgs {
    /// How many BMCs
    #[arg(long, default_value_t = 1)]
    pub count: usize,
    /// Address of the first BMC; the others follow (all of 127.0.0.0/8 is
    /// loopback on Linux)
    #[arg(long, default_value = "127.1.0.1")]
    pub first_ip: Ipv4Addr,
    /// Port every BMC listens on (0: an ephemeral port each)
    #[arg(long, default_value_t = 8443)]
    pub port: u16,
    /// Added to every answer, in milliseconds
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Share of requests answered 503, 0.0 to 1.0
    #[arg(long, default_value_t = 0.0)]
    pub failure_rate: f64,
    /// Systems (nodes) per BMC
    #[arg(long, default_value_t = 1)]
    pub systems: usize,
    #[arg(long, default_value = "admin")]
    pub username: String,
    #[arg(long, default_value = "password")]
    pub password: String,
    /// Serve plain HTTP instead of HTTPS
    #[arg(long)]
    pub no_tls: bool,
    /// No SessionService (clients must use Basic auth)
    #[arg(long)]
    pub no_sessions: bool,
    /// Systems start powered on
    #[arg(long)]
    pub power_on: bool,
    /// Serve full hardware trees: 2 CPUs, 16 DIMMs, 4 GPUs, 4 drives, PCIe
    /// devices and 2 power supplies per System
    #[arg(long)]
    pub hardware: bool,
}

pub fn run(args: &SimArgs) -> ExitCode {
    if !(0.0..=1.0).contains(&args.failure_rate) {
        eprintln!("openchami: --failure-rate must be between 0 and 1");
        return ExitCode::from(2);
    }
    crate::app::raise_open_file_limit();
    let mut cfg = SimConfig::consecutive(args.first_ip, args.port, args.count);
    cfg.latency = Duration::from_millis(args.latency_ms);
    cfg.failure_rate = args.failure_rate;
    cfg.systems_per_bmc = args.systems.max(1);
    cfg.username = args.username.clone();
    cfg.password = args.password.clone();
    cfg.tls = !args.no_tls;
    cfg.sessions = !args.no_sessions;
    cfg.power_on = args.power_on;
    if args.hardware {
        cfg.hardware = Some(Default::default());
    }
    let rt = match super::serve::runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    rt.block_on(async {
        let sims = match SimBmcs::start(cfg, None).await {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                eprintln!(
                    "openchami: {e}; another process (the appliance's API listens on :8443) holds that port: pick another with --port"
                );
                return ExitCode::FAILURE;
            }
            Err(e) => {
                eprintln!("openchami: {e}");
                return ExitCode::FAILURE;
            }
        };
        let scheme = if args.no_tls { "http" } else { "https" };
        let a = sims.addrs();
        match (a.first(), a.last()) {
            (Some(f), Some(l)) if a.len() > 1 => {
                println!(
                    "simulating {} BMCs: {scheme}://{f} … {scheme}://{l}",
                    a.len()
                )
            }
            (Some(f), _) => println!("simulating 1 BMC: {scheme}://{f}"),
            _ => println!("simulating no BMC"),
        }
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("openchami: {e}");
                    return ExitCode::FAILURE;
                }
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        let requests: u64 = (0..sims.addrs().len()).map(|k| sims.requests(k)).sum();
        println!("requests answered: {requests}");
        sims.shutdown().await;
        ExitCode::SUCCESS
    })
}
