//! Runs the generator against a collector it starts itself, and checks that
//! every event was acknowledged and stored.
//!
//! The collector binary is `$OTEL_AUDIT_COLLECTOR_BIN` when set, else
//! `otel-audit-collector` next to this package's binary (the same target
//! directory and profile); when it is not there, it is built with
//! `cargo build -p otel-audit-collector`. `cargo test --workspace` builds it
//! fresh; when testing this package alone after changing the collector,
//! build the collector first (always rebuilding it here would rebuild its
//! dependencies with other features than the workspace's test build, twice
//! per run).

use std::path::PathBuf;
use std::process::Command;

fn collector_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("OTEL_AUDIT_COLLECTOR_BIN") {
        return PathBuf::from(p);
    }
    let loadgen = PathBuf::from(env!("CARGO_BIN_EXE_otel-audit-loadgen"));
    let dir = loadgen.parent().expect("the binary is in a directory");
    let collector = dir.join(format!(
        "otel-audit-collector{}",
        std::env::consts::EXE_SUFFIX
    ));
    if !collector.is_file() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "-p",
            "otel-audit-collector",
            "--bin",
            "otel-audit-collector",
        ]);
        if dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        if let Some(target) = dir.parent() {
            cmd.env("CARGO_TARGET_DIR", target);
        }
        let status = cmd.status().expect("cargo runs");
        assert!(status.success(), "building otel-audit-collector failed");
    }
    assert!(collector.is_file(), "{} is missing", collector.display());
    collector
}

#[test]
fn spawned_collector_stores_every_event() {
    let collector = collector_binary();
    let out = Command::new(env!("CARGO_BIN_EXE_otel-audit-loadgen"))
        .arg("--spawn")
        .arg(&collector)
        .args([
            "--events",
            "2000",
            "--batch",
            "100",
            "--concurrency",
            "4",
            "--tenants",
            "2",
            "--baseline",
            "--json",
            "--stop-timeout-secs",
            "120",
        ])
        .output()
        .expect("the generator runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}\n{stderr}", out.status);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));

    assert_eq!(report["sent"], 2000, "{report:#}");
    assert_eq!(report["accepted"], 2000, "{report:#}");
    assert_eq!(report["failed"], 0, "{report:#}");
    assert_eq!(report["attributes_per_record"], 15);
    let c = &report["collector"];
    assert_eq!(c["stored_rows"], 2000, "{report:#}");
    // collector.start, config.loaded, collector.stop
    assert_eq!(c["other_rows"], 3, "{report:#}");
    assert_eq!(c["exit_code"], 0, "{report:#}");
    assert_eq!(c["wal_segment_bytes_left"], 0, "{report:#}");
    assert!(c["cpu_seconds"].as_f64().unwrap() > 0.0, "{report:#}");
    assert!(c["peak_rss_mib"].as_f64().unwrap() > 1.0, "{report:#}");
    assert!(
        c["bytes_per_stored_event"].as_f64().unwrap() > 50.0,
        "{report:#}"
    );
    assert!(report["latency_ms"]["p99"].as_f64().unwrap() > 0.0);
    assert!(report["baseline"]["collector_ratio"].as_f64().unwrap() > 0.0);
    // The collector's own latency histograms, read from its /metrics: one
    // receive and one request observation per request, at least one group
    // commit, and every request (plus the collector's own events) waited
    // for one.
    let server = &c["server_latency"];
    let stale = "(an older collector binary? `cargo build -p otel-audit-collector`)";
    let requests = report["requests"].as_u64().unwrap();
    assert_eq!(
        server["receive"]["count"].as_u64(),
        Some(requests),
        "{stale} {report:#}"
    );
    assert_eq!(
        server["request"]["count"].as_u64(),
        Some(requests),
        "{report:#}"
    );
    assert!(
        server["wal_sync"]["count"].as_u64().unwrap() >= 1,
        "{report:#}"
    );
    assert!(
        server["wal_wait"]["count"].as_u64().unwrap() >= requests,
        "{report:#}"
    );
    for stage in ["receive", "request", "wal_sync", "wal_wait"] {
        let h = &server[stage];
        let (p50, p99) = (h["p50_ms"].as_f64().unwrap(), h["p99_ms"].as_f64().unwrap());
        assert!(p50 > 0.0 && p50 <= p99, "{stage}: {report:#}");
    }
}

#[test]
fn stage_profiler_reports_every_stage_and_refuses_bad_arguments() {
    let bin = env!("CARGO_BIN_EXE_otel-audit-stages");
    let out = Command::new(bin)
        .args([
            "--events",
            "600",
            "--batch",
            "200",
            "--tenants",
            "2",
            "--rounds",
            "1",
            "--min-cpu-secs",
            "0",
            "--json",
        ])
        .output()
        .expect("the profiler runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let names: Vec<&str> = report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["convert", "+ policy", "+ chain", "+ encode"]);
    assert!(report["prost_records_per_cpu_second"].as_f64().unwrap() > 0.0);

    let bad = Command::new(bin)
        .args(["--rounds", "0"])
        .output()
        .expect("the profiler runs");
    assert_eq!(bad.status.code(), Some(1));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("--rounds"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}
