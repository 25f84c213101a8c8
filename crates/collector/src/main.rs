//! `otel-audit-collector`: receives OTLP, chains and stores audit events.
//!
//! ```text
//! otel-audit-collector                          # embedded default: 127.0.0.1:4317/4318, ./audit-data, ./audit-wal
//! otel-audit-collector --config collector-config/local.yaml
//! otel-audit-collector --config s3.yaml --set storage.url=s3://audit/prod --set wal.dir=/var/lib/otel-audit/wal
//! otel-audit-collector --config s3.yaml --validate-config
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of the system allocator: see BENCHMARKS.md ("Collector end
/// to end") for the share malloc/free had of the collector's CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use otel_audit_collector::config::{Config, LogFormat};

/// The otel-audit collector: OTLP in, hash-chained Parquet out.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Args {
    /// YAML configuration file (docs/OPERATIONS.md). Without it, the embedded
    /// default runs: gRPC 127.0.0.1:4317, HTTP 127.0.0.1:4318, store
    /// ./audit-data, WAL ./audit-wal.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Overrides one key: `--set storage.url=s3://bucket/prefix`. The value
    /// is read as YAML. Repeatable; applied in order after the file.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Checks the configuration (and that key and token files load) and
    /// exits: 0 when valid, 1 with a message naming the key otherwise.
    #[arg(long)]
    validate_config: bool,
    /// Prints the effective configuration (secrets redacted) and exits.
    #[arg(long)]
    print_config: bool,
}

fn main() -> ExitCode {
    let thp = disable_transparent_huge_pages();
    let args = Args::parse();
    let config = match Config::load(args.config.as_deref(), &args.set) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("otel-audit-collector: invalid configuration: {e}");
            return ExitCode::from(1);
        }
    };
    if args.print_config {
        print!("{}", config.to_redacted_yaml());
        return ExitCode::SUCCESS;
    }
    if args.validate_config {
        let checks = config
            .load_policy()
            .and_then(|p| {
                p.keys.load().map(|_| ()).map_err(|e| {
                    otel_audit_collector::config::ConfigError::Invalid {
                        key: "policy.keys".into(),
                        reason: e.to_string(),
                    }
                })
            })
            .and_then(|()| {
                otel_audit_collector::auth::Authenticator::from_config(&config.receivers.auth)
                    .map(|_| ())
            });
        return match checks {
            Ok(()) => {
                println!("configuration is valid");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("otel-audit-collector: invalid configuration: {e}");
                ExitCode::from(1)
            }
        };
    }

    let filter = tracing_subscriber::EnvFilter::new(&config.telemetry.log_level);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.telemetry.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }

    if let Err(e) = thp {
        tracing::warn!(error = %e, "cannot turn transparent huge pages off for the collector");
    }

    let config_text = config.to_redacted_yaml();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("otel-audit")
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("otel-audit-collector: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(otel_audit_collector::service::run(
        config,
        &config_text,
        stop_signal(),
    ));
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "collector stopped with an error");
            eprintln!("otel-audit-collector: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Turns transparent huge pages off for this process, as the first thing it
/// does: mimalloc asks for huge pages for its arenas, and the memory a
/// request allocates and another thread frees is handed back and faulted in
/// again, each time a 2 MiB page the kernel zeroes whole. Under load that was
/// 13-16% of the collector's CPU, the largest single cost, and its
/// acknowledgement p99 tail (BENCHMARKS.md, "Collector end to end").
fn disable_transparent_huge_pages() -> Result<(), String> {
    #[cfg(target_os = "linux")]
    return nix::sys::prctl::set_thp_disable(true).map_err(|e| e.to_string());
    #[cfg(not(target_os = "linux"))]
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
async fn stop_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
