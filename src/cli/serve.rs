//! `openchami serve`: configuration, logging, signals, systemd.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use super::{Global, ServeArgs};
use crate::app::App;
use crate::config::Config;

/// Loads the configuration with command-line overrides applied.
pub fn load_config(global: &Global) -> anyhow::Result<Config> {
    let mut config = Config::load(global.config.as_deref())?;
    if let Some(dir) = &global.state_dir {
        config.state_dir = dir.clone();
    }
    Ok(config)
}

pub fn run(global: &Global, args: &ServeArgs) -> ExitCode {
    let config = match load_config(global) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("openchami: {e}");
            return ExitCode::from(2);
        }
    };
    if args.check_config {
        let facts = crate::boot::check::Facts::of_host(&config);
        let problems = crate::boot::check::problems(&config, &facts);
        if problems.is_empty() {
            println!("configuration is valid");
            return ExitCode::SUCCESS;
        }
        for p in &problems {
            eprintln!("openchami: {p}");
        }
        eprintln!(
            "openchami: the configuration is valid TOML, but {} problem(s) above keep nodes from booting",
            problems.len()
        );
        return ExitCode::from(2);
    }
    crate::mem::tune();
    crate::logging::init();
    crate::mem::start_trimmer();
    crate::app::raise_open_file_limit();
    let runtime = match runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    match runtime.block_on(serve(config, global.config.clone())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            // Not eprintln!: stderr may be the thing that is broken.
            let _ = writeln!(std::io::stderr(), "openchami: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The multi-threaded runtime of the long-running commands (`serve`,
/// `sim-bmc`); a failure to start it is reported and becomes the exit code.
pub fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("openchami: cannot start the runtime: {e}");
            ExitCode::FAILURE
        })
}

async fn serve(config: Config, config_path: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    let first_start = !config.state_dir.join("ca").join("root.crt").exists();
    let app = App::start(config).await?;
    // Loading the inventory parsed every stored document; give that back.
    tokio::task::spawn_blocking(crate::mem::trim);
    if first_start {
        tracing::info!(
            root = %app.state_dir().join("ca/root.crt").display(),
            fingerprint = %app.state.root_fingerprint,
            "created the appliance CA; clients trust it with --cacert, and `openchami token issue` mints an access token"
        );
    }
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    let watchdog = watchdog_interval();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut tick = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
    let store = app.state.store.clone();
    let mut writer_failed = false;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            // A process that answers but can no longer write is worse than
            // none: stop, and let systemd start a fresh one.
            _ = store.writer_stopped() => {
                tracing::error!("the inventory writer stopped; exiting so the service manager restarts the appliance");
                writer_failed = true;
                break;
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = hup.recv() => {
                // Validate the file now so a bad edit is reported before the
                // next restart would trip over it.
                match Config::load(config_path.as_deref()) {
                    Ok(new) if new == app.state.config => tracing::info!("reload: configuration unchanged"),
                    Ok(_) => tracing::warn!("reload: configuration changed and is valid; it takes effect on restart"),
                    Err(e) => tracing::error!("reload: {e}"),
                }
            }
            _ = tick.tick() => {
                if watchdog.is_some() {
                    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
                }
            }
        }
    }
    tracing::info!("shutting down: finishing in-flight requests");
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    app.shutdown();
    app.wait().await;
    if writer_failed {
        anyhow::bail!("stopped because the inventory writer stopped");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Half of systemd's `WatchdogSec`, if the unit sets one.
fn watchdog_interval() -> Option<Duration> {
    let mut usec = 0u64;
    if sd_notify::watchdog_enabled(false, &mut usec) && usec > 0 {
        Some(Duration::from_micros(usec / 2))
    } else {
        None
    }
}
