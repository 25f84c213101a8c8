//! A collector the generator starts itself (`--spawn`), and what it costs:
//! CPU time from `/proc/<pid>/stat`, peak RSS, the bytes and rows it stored.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use nix::sys::resource::{UsageWho, getrusage};
use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, SysconfVar, sysconf};
use otel_audit_storage::{Store, StoreOptions, TimeRange, list_files, reader};

/// A running collector in a temporary directory of its own.
#[derive(Debug)]
pub struct Spawned {
    child: Option<Child>,
    dir: Option<tempfile::TempDir>,
    /// The OTLP/gRPC address it listens on (`host:port`).
    pub grpc: String,
    /// Its telemetry listener (`/metrics`), `host:port`.
    pub telemetry: String,
}

/// What a graceful stop left behind.
#[derive(Debug)]
pub struct Stopped {
    /// The collector's exit status.
    pub status: ExitStatus,
    /// CPU seconds (user + system) over the collector's whole life, from
    /// `getrusage(RUSAGE_CHILDREN)` once it has been waited for.
    pub cpu_seconds: f64,
    /// The part of `cpu_seconds` spent in the kernel.
    pub system_cpu_seconds: f64,
    /// Minor page faults over its whole life (`ru_minflt`): each new page
    /// the kernel had to map and zero.
    pub minor_faults: u64,
    /// Peak resident set size, in bytes: the largest `VmHWM` read from
    /// `/proc/<pid>/status` up to the collector's exit (read every few
    /// milliseconds while it shuts down). Not `ru_maxrss`: a child started
    /// with `posix_spawn` (vfork) inherits the parent's high-water mark at
    /// `exec`, so that figure was the generator's own memory (its prepared
    /// requests) whenever that was larger.
    pub peak_rss_bytes: u64,
    /// The directory (deleted on drop unless kept).
    pub dir: tempfile::TempDir,
}

impl Spawned {
    /// Starts `binary` with its store, WAL and address file in a new
    /// temporary directory under `parent` (the system's by default), every
    /// listener on port 0, plus `extra` `--set` overrides; waits until it
    /// has written its addresses.
    pub fn start(binary: &Path, parent: Option<&Path>, extra: &[String]) -> anyhow::Result<Self> {
        let dir = match parent {
            Some(p) => tempfile::Builder::new()
                .prefix("otel-audit-loadgen-")
                .tempdir_in(p),
            None => tempfile::Builder::new()
                .prefix("otel-audit-loadgen-")
                .tempdir(),
        }
        .context("cannot create the collector's directory")?;
        let d = dir.path();
        let addr = d.join("addr");
        let log = File::create(d.join("collector.log"))?;
        let mut cmd = Command::new(binary);
        for set in [
            format!("storage.url={}", d.join("store").display()),
            format!("wal.dir={}", d.join("wal").display()),
            "receivers.otlp.grpc.endpoint=127.0.0.1:0".into(),
            "receivers.otlp.http.endpoint=127.0.0.1:0".into(),
            "telemetry.endpoint=127.0.0.1:0".into(),
            format!("telemetry.address_file={}", addr.display()),
            "collector.instance_id=loadgen".into(),
        ]
        .iter()
        .chain(extra)
        {
            cmd.arg("--set").arg(set);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let mut spawned = Spawned {
            child: Some(child),
            dir: Some(dir),
            grpc: String::new(),
            telemetry: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(text) = std::fs::read_to_string(&addr)
                && let Some(grpc) = text.lines().find_map(|l| l.strip_prefix("grpc="))
                && let Some(telemetry) = text.lines().find_map(|l| l.strip_prefix("telemetry="))
            {
                spawned.grpc = grpc.trim().to_owned();
                spawned.telemetry = telemetry.trim().to_owned();
                return Ok(spawned);
            }
            if let Some(status) = spawned.child_mut().try_wait()? {
                bail!(
                    "the collector exited ({status}) before it was ready:\n{}",
                    spawned.log_tail()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "the collector did not write {} within 60 s:\n{}",
                    addr.display(),
                    spawned.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn child_mut(&mut self) -> &mut Child {
        self.child
            .as_mut()
            .expect("the child is there until stopped")
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The temporary directory (store, WAL, `collector.log`).
    pub fn dir(&self) -> &Path {
        self.dir
            .as_ref()
            .expect("the directory is there until stopped")
            .path()
    }

    /// CPU seconds (user + system, all threads) the collector has used so far.
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        process_cpu_seconds(&format!("/proc/{}/stat", self.pid()))
    }

    /// The collector's peak resident set size so far (`VmHWM`), in bytes.
    pub fn vm_hwm_bytes(&self) -> anyhow::Result<u64> {
        let path = format!("/proc/{}/status", self.pid());
        let text = std::fs::read_to_string(&path).with_context(|| path.clone())?;
        text.lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kib| kib * 1024)
            .with_context(|| format!("no VmHWM in {path}"))
    }

    /// The collector's `/metrics` text (a plain HTTP/1.0 GET: the generator
    /// needs nothing more).
    pub fn metrics_text(&self) -> anyhow::Result<String> {
        use std::io::{Read, Write};
        let mut conn = std::net::TcpStream::connect(&self.telemetry)
            .with_context(|| format!("cannot connect to {}", self.telemetry))?;
        conn.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            conn,
            "GET /metrics HTTP/1.0\r\nHost: {}\r\n\r\n",
            self.telemetry
        )?;
        let mut response = String::new();
        conn.read_to_string(&mut response)
            .context("reading /metrics")?;
        let (head, body) = response
            .split_once("\r\n\r\n")
            .context("/metrics answered without a header end")?;
        let status = head.split(' ').nth(1);
        if !head.starts_with("HTTP/1.") || status != Some("200") {
            bail!("/metrics answered {}", head.lines().next().unwrap_or(""));
        }
        Ok(body.to_owned())
    }

    /// The last lines of the collector's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir().join("collector.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Sends SIGTERM and waits (up to `timeout`) for the graceful exit, in
    /// which the collector writes everything it acknowledged to the store.
    pub fn stop(mut self, timeout: Duration) -> anyhow::Result<Stopped> {
        let pid = Pid::from_raw(self.pid() as i32);
        let mut peak = self.vm_hwm_bytes()?;
        kill(pid, Signal::SIGTERM).context("cannot send SIGTERM to the collector")?;
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child_mut().try_wait()? {
                break status;
            }
            // Gone (or a zombie, which has no VmHWM) between two reads:
            // the last read stands.
            if let Ok(hwm) = self.vm_hwm_bytes() {
                peak = peak.max(hwm);
            }
            if Instant::now() > deadline {
                bail!(
                    "the collector did not exit within {timeout:?} of SIGTERM:\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        self.child = None;
        // The collector is the only child this process waits for.
        let usage = getrusage(UsageWho::RUSAGE_CHILDREN)?;
        let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
        let dir = self
            .dir
            .take()
            .expect("the directory is there until stopped");
        Ok(Stopped {
            status,
            cpu_seconds: secs(usage.user_time()) + secs(usage.system_time()),
            system_cpu_seconds: secs(usage.system_time()),
            minor_faults: usage.minor_page_faults().max(0) as u64,
            peak_rss_bytes: peak,
            dir,
        })
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        // An error on the way: never leave the collector running.
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// utime + stime of `/proc/<pid>/stat` (or `/proc/self/stat`), in seconds.
pub fn process_cpu_seconds(stat_path: &str) -> anyhow::Result<f64> {
    let text = std::fs::read_to_string(stat_path).with_context(|| stat_path.to_owned())?;
    // Fields after the command name (which may hold spaces) in parentheses:
    // state is field 3, utime 14, stime 15.
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .with_context(|| format!("{stat_path}: unexpected format"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .with_context(|| format!("{stat_path}: no field {}", i + 3))
    };
    let per_second = sysconf(SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100) as f64;
    Ok((ticks(11)? + ticks(12)?) as f64 / per_second)
}

/// What the store holds after the collector stopped.
#[derive(Debug, Clone, Default)]
pub struct StoreScan {
    /// Parquet data files.
    pub files: usize,
    /// Rows per tenant (from the files' footers).
    pub rows_by_tenant: BTreeMap<String, u64>,
    /// Bytes of the data files.
    pub parquet_bytes: u64,
    /// Bytes of every file under the store directory (data files, digests, ...).
    pub total_bytes: u64,
}

/// Lists the store under `dir` and reads each data file's footer.
pub async fn scan_store(dir: &Path) -> anyhow::Result<StoreScan> {
    let mut scan = StoreScan {
        total_bytes: dir_bytes(dir)?,
        ..StoreScan::default()
    };
    if !dir.exists() {
        return Ok(scan);
    }
    let store = Store::open(&dir.display().to_string(), &StoreOptions::default())?;
    let listing = list_files(&store, &TimeRange::all()).await?;
    for f in &listing.files {
        let bytes = reader::fetch(&store, &f.path).await?;
        let footer = reader::footer_of(bytes).map_err(|e| anyhow::anyhow!("{}: {e}", f.path))?;
        *scan
            .rows_by_tenant
            .entry(f.file.partition.tenant.clone())
            .or_default() += footer.row_count;
        scan.files += 1;
        scan.parquet_bytes += f.size;
    }
    Ok(scan)
}

/// Bytes of the WAL segment files (`*.wal`) in `dir`.
pub fn wal_segment_bytes(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).with_context(|| dir.display().to_string())? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().ends_with(".wal") {
            total += entry.metadata()?.len();
        }
    }
    Ok(total)
}

/// Bytes of all files under `dir` (0 when it does not exist).
pub fn dir_bytes(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    let mut stack: Vec<PathBuf> = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| d.display().to_string()),
        };
        for entry in entries {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                total += meta.len();
            }
        }
    }
    Ok(total)
}

/// Quantiles of one Prometheus histogram in `/metrics` text, in
/// milliseconds, interpolated within buckets as `histogram_quantile` does.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HistogramSummary {
    /// Observations.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Mean.
    pub mean_ms: f64,
}

/// Reads histogram `name` (its `_bucket`, `_sum` and `_count` series) from
/// `/metrics` text; `None` when it is not there or empty.
pub fn histogram_summary(text: &str, name: &str) -> Option<HistogramSummary> {
    let bucket_prefix = format!("{name}_bucket{{le=\"");
    let mut buckets: Vec<(f64, u64)> = Vec::new();
    let mut sum = None;
    let mut count = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix(&bucket_prefix) {
            let (le, value) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            buckets.push((le, value.trim().parse().ok()?));
        } else if let Some(v) = line.strip_prefix(&format!("{name}_sum ")) {
            sum = v.trim().parse::<f64>().ok();
        } else if let Some(v) = line.strip_prefix(&format!("{name}_count ")) {
            count = v.trim().parse::<u64>().ok();
        }
    }
    let count = count?;
    if count == 0 || buckets.is_empty() {
        return None;
    }
    let quantile = |q: f64| -> f64 {
        let rank = q * count as f64;
        let mut lower = (0.0, 0u64);
        for &(le, cumulative) in &buckets {
            if cumulative as f64 >= rank {
                if le.is_infinite() {
                    // Beyond the last bound: the bound is all that is known.
                    return lower.0 * 1000.0;
                }
                let in_bucket = (cumulative - lower.1) as f64;
                let frac = if in_bucket > 0.0 {
                    (rank - lower.1 as f64) / in_bucket
                } else {
                    1.0
                };
                return (lower.0 + (le - lower.0) * frac) * 1000.0;
            }
            lower = (le, cumulative);
        }
        lower.0 * 1000.0
    };
    Some(HistogramSummary {
        count,
        p50_ms: quantile(0.5),
        p90_ms: quantile(0.9),
        p99_ms: quantile(0.99),
        mean_ms: sum.unwrap_or(0.0) / count as f64 * 1000.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_interpolate_within_buckets() {
        let text = "x_bucket{le=\"0.001\"} 0\nx_bucket{le=\"0.01\"} 50\nx_bucket{le=\"0.1\"} 100\n\
                    x_bucket{le=\"+Inf\"} 100\nx_sum 2.5\nx_count 100\n";
        let h = histogram_summary(text, "x").unwrap();
        assert_eq!(h.count, 100);
        assert!((h.p50_ms - 10.0).abs() < 1e-9, "{h:?}");
        assert!((h.p90_ms - 82.0).abs() < 1e-9, "{h:?}");
        assert!((h.mean_ms - 25.0).abs() < 1e-9, "{h:?}");
        assert!(histogram_summary(text, "y").is_none());
    }

    #[test]
    fn own_cpu_time_is_readable() {
        let before = process_cpu_seconds("/proc/self/stat").unwrap();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = std::hint::black_box(x.wrapping_add(i * i));
        }
        let after = process_cpu_seconds("/proc/self/stat").unwrap();
        assert!(after >= before, "{before} {after} {x}");
    }

    #[test]
    fn directory_sizes_add_up() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("a/b")).unwrap();
        std::fs::write(d.path().join("a/b/f"), [0u8; 100]).unwrap();
        std::fs::write(d.path().join("g"), [0u8; 23]).unwrap();
        assert_eq!(dir_bytes(d.path()).unwrap(), 123);
        assert_eq!(dir_bytes(&d.path().join("missing")).unwrap(), 0);
    }
}
