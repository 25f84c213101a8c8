//! Assembling and running the collector: WAL, store, pipeline, sink,
//! receivers and the telemetry endpoint.
//!
//! [`Collector::start`] opens the durable parts (WAL replay, chain heads from
//! the store, the sink) and returns a handle whose [`Collector::pipeline`]
//! accepts events — what a program embedding only the pipeline uses.
//! [`run`] adds the receivers and the `/metrics` endpoint and runs until a
//! signal, as the `otel-audit-collector` binary does.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use otel_audit_event::redact::{Keyring, Keys, Redactor};
use otel_audit_event::{AuditEvent, Category, Outcome, Severity};
use otel_audit_storage::{DigestSigner, Store, TimeRange, list_files, reader};
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{Config, ConfigError};
use crate::metrics::Metrics;
use crate::pipeline::{Feed, Pipeline};
use crate::sink::{DigestOptions, Sink, SinkOptions, SinkStopError};
use crate::wal::{ChainHead, Wal, WalError};

/// The service name of the collector's own events.
pub const SERVICE_NAME: &str = "otel-audit-collector";

/// Why the collector could not start. Each variant names what failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The WAL could not be opened or recovered.
    #[error("wal.dir: {0}")]
    Wal(#[from] WalError),
    /// The store could not be opened or listed.
    #[error("storage.url: {0}")]
    Store(String),
    /// The server-side policy or its keys are invalid.
    #[error("policy: {0}")]
    Policy(String),
    /// The digest signing key could not be loaded or created.
    #[error("{key}: {source}")]
    DigestKey {
        /// The config key.
        key: &'static str,
        /// What failed.
        #[source]
        source: otel_audit_storage::KeyError,
    },
    /// `digests.signing_key_env` names a variable that is not set.
    #[error("digests.signing_key_env: the environment variable {0} is not set")]
    DigestKeyEnv(String),
    /// A listener could not be bound.
    #[error("{key}: cannot listen on {endpoint}: {source}")]
    Bind {
        /// The config key.
        key: &'static str,
        /// The address.
        endpoint: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A receiver could not be set up (TLS files, ...).
    #[error("{0}")]
    Receiver(String),
}

/// The durable half of a running collector: pipeline, WAL and sink.
pub struct Collector {
    pipeline: Arc<Pipeline>,
    metrics: Arc<Metrics>,
    wal: Wal,
    sink: JoinHandle<Result<(), SinkStopError>>,
    stop_sink: watch::Sender<bool>,
    own_tenant: String,
    instance_id: String,
    retention: Arc<RetentionJob>,
    backup: Option<Arc<BackupJob>>,
    /// The scheduled retention and backup runs.
    schedules: Vec<Periodic>,
}

/// A job run every interval in its own task, until stopped.
struct Periodic {
    task: JoinHandle<()>,
    stop: watch::Sender<bool>,
}

impl Periodic {
    /// Runs `run` every `interval`, the first time one interval from now.
    fn spawn<F, Fut>(interval: Duration, mut run: F) -> Periodic
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let (stop, mut stop_rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = stop_rx.changed() => return,
                }
                run().await;
            }
        });
        Periodic { task, stop }
    }

    /// Stops it, letting a run under way finish.
    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Retention with the configured rules and holds.
struct RetentionJob {
    store: Store,
    policy: otel_audit_storage::retention::RetentionPolicy,
    pipeline: Arc<Pipeline>,
    metrics: Arc<Metrics>,
    instance_id: String,
}

/// The scheduled backup: destination and what to record.
struct BackupJob {
    from: Store,
    to: Store,
    verify: bool,
    pipeline: Arc<Pipeline>,
    own_tenant: String,
    instance_id: String,
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector")
            .field("instance_id", &self.instance_id)
            .finish_non_exhaustive()
    }
}

/// What a shutdown did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Whether everything acknowledged is in the store (the WAL is empty).
    pub drained: bool,
    /// Segment files left in the WAL.
    pub wal_segments_left: usize,
}

impl Collector {
    /// Opens the WAL (replaying it after a crash), the store and the policy,
    /// finds where each chain continues, and starts the sink. The returned
    /// collector accepts events through [`Collector::pipeline`].
    pub async fn start(config: &Config, metrics: Arc<Metrics>) -> Result<Collector, StartError> {
        config.validate()?;
        let redactor = Arc::new(server_redactor(config)?);
        let store = Store::open(&config.storage.url, &config.storage.s3)
            .map_err(|e| StartError::Store(e.to_string()))?;
        let wal_options = config.wal.clone();
        let (wal, replay) = tokio::task::spawn_blocking(move || Wal::open(wal_options))
            .await
            .expect("WAL open task panicked")?;
        if let Some(t) = replay.truncated_tail() {
            tracing::warn!(
                path = %t.path.display(), offset = t.offset, bytes = t.discarded_bytes,
                reason = t.reason, "cut an incomplete, never acknowledged group commit from the WAL"
            );
        }
        tracing::info!(
            records = replay.record_count(),
            chains = replay.heads().len(),
            reserve_bytes = wal.reserve_bytes(),
            "WAL opened"
        );
        if wal.reserve_bytes() == 0 {
            // Open found no room for it: warns (nothing when it is off).
            crate::pipeline::restore_reserve(wal.clone()).await;
        }
        let mut heads: HashMap<String, ChainHead> = replay
            .heads()
            .iter()
            .map(|(c, h)| (c.clone(), *h))
            .collect();
        let instance = &config.collector.instance_id;
        for (chain, head) in store_heads(&store, instance).await? {
            // The WAL knows better for chains it has; the store tells where
            // chains continue whose WAL is gone (a new disk, a restore).
            heads.entry(chain).or_insert(head);
        }

        let digests = digest_signer(config)?.map(|signer| DigestOptions {
            signer,
            period_secs: config.digests.period_secs,
        });
        let (feed, rx) = Feed::new(
            config.storage.max_buffer_bytes,
            Duration::from_millis(config.storage.max_buffer_wait_ms),
        );
        let (stop_sink, stop_rx) = watch::channel(false);
        let s = &config.storage;
        let sink = Sink::new(
            store.clone(),
            wal.clone(),
            SinkOptions {
                parquet: s.parquet.clone(),
                max_file_rows: s.max_file_rows,
                max_file_bytes: s.max_file_bytes,
                flush_interval: Duration::from_secs(s.flush_interval_secs),
                retry_initial_backoff: Duration::from_millis(s.retry_initial_backoff_ms),
                retry_max_backoff: Duration::from_secs(s.retry_max_backoff_secs),
                instance_id: instance.clone(),
                digests,
            },
            metrics.clone(),
            rx,
            feed.clone(),
            stop_rx,
            Duration::from_secs(config.collector.shutdown_timeout_secs),
        );
        let sink = tokio::spawn(sink.run(replay));
        let pipeline = Arc::new(Pipeline::new(
            redactor,
            instance.clone(),
            wal.clone(),
            feed,
            metrics.clone(),
            heads,
        ));
        let backup = if config.backup.enabled {
            let to = Store::open(&config.backup.to, &config.backup.s3)
                .map_err(|e| StartError::Store(format!("backup.to: {e}")))?;
            Some(Arc::new(BackupJob {
                from: store.clone(),
                to,
                verify: config.backup.verify,
                pipeline: pipeline.clone(),
                own_tenant: config.collector.own_events_tenant.clone(),
                instance_id: instance.clone(),
            }))
        } else {
            None
        };
        let retention = Arc::new(RetentionJob {
            store: store.clone(),
            policy: config.retention.policy(),
            pipeline: pipeline.clone(),
            metrics: metrics.clone(),
            instance_id: instance.clone(),
        });
        let mut schedules = Vec::new();
        if let Some(job) = &backup {
            let job = job.clone();
            schedules.push(Periodic::spawn(
                Duration::from_secs(config.backup.interval_secs),
                // Failures are recorded as events; the next run retries.
                move || {
                    let job = job.clone();
                    async move {
                        let _ = job.run().await;
                    }
                },
            ));
        }
        if config.retention.enabled {
            let job = retention.clone();
            schedules.push(Periodic::spawn(
                Duration::from_secs(config.retention.interval_secs),
                move || {
                    let job = job.clone();
                    async move {
                        if let Err(e) = job.run().await {
                            job.metrics.store_errors.add(&[("op", "retention")], 1);
                            tracing::warn!(error = %e, "retention run failed; trying again at the next interval");
                        }
                    }
                },
            ));
        }
        Ok(Collector {
            pipeline,
            metrics,
            wal,
            sink,
            stop_sink,
            own_tenant: config.collector.own_events_tenant.clone(),
            instance_id: instance.clone(),
            retention,
            backup,
            schedules,
        })
    }

    /// The pipeline: give it events ([`crate::ingest::Ingest`]).
    pub fn pipeline(&self) -> &Arc<Pipeline> {
        &self.pipeline
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Records one of the collector's own lifecycle events (category
    /// `system`) in its own tenant's chain.
    pub async fn record_system_event(
        &self,
        action: &str,
        attributes: &[(&str, String)],
    ) -> Result<(), crate::ingest::IngestError> {
        let mut event = system_event(
            &self.own_tenant,
            &self.instance_id,
            action,
            Outcome::Success,
        );
        for (k, v) in attributes {
            event.attributes.insert((*k).to_owned(), v.clone());
        }
        self.pipeline.record_own_event(event).await
    }

    /// Runs retention once now (the schedule does it every
    /// `retention.interval_secs`): plans with the configured rules and holds,
    /// records every deletion (and every blocked one) durably in the chains,
    /// then deletes.
    pub async fn run_retention(&self) -> Result<RetentionRun, RetentionRunError> {
        self.retention.run().await
    }

    /// Runs the configured backup once now (the schedule does it every
    /// `backup.interval_secs`) and records it as a `system` event
    /// (`backup.completed`, or `backup.failed` with outcome `failure`).
    /// `None` when no backup is configured.
    pub async fn run_backup(&self) -> Option<Result<BackupRun, String>> {
        match &self.backup {
            Some(job) => Some(job.run().await),
            None => None,
        }
    }

    /// Stops accepting, records `collector.stop`, lets the sink store
    /// everything durable, and closes the WAL (deleting every segment whose
    /// rows are all stored).
    pub async fn shutdown(mut self) -> Result<ShutdownReport, SinkStopError> {
        for schedule in std::mem::take(&mut self.schedules) {
            schedule.stop().await;
        }
        if let Err(e) = self.record_system_event("collector.stop", &[]).await {
            tracing::warn!(error = %e, "could not record collector.stop");
        }
        self.pipeline.stop_accepting();
        let _ = self.stop_sink.send(true);
        let sink_result = self.sink.await.expect("sink task panicked");
        let wal = self.wal.clone();
        let closed = tokio::task::spawn_blocking(move || wal.shutdown())
            .await
            .expect("WAL shutdown task panicked");
        if let Err(e) = closed {
            tracing::error!(error = %e, "closing the WAL failed");
        }
        let stats = self.wal.stats();
        sink_result?;
        Ok(ShutdownReport {
            drained: stats.segments == 0,
            wal_segments_left: stats.segments,
        })
    }

    /// Gauges for `/metrics`: WAL usage and chain heads.
    pub fn gauges(&self) -> String {
        use std::fmt::Write as _;
        let st = self.wal.stats();
        let mut out = String::new();
        let _ = write!(
            out,
            "# HELP otel_audit_wal_bytes Bytes of WAL segment files.\n# TYPE otel_audit_wal_bytes gauge\notel_audit_wal_bytes {}\n\
             # HELP otel_audit_wal_max_bytes The configured wal.max_wal_bytes.\n# TYPE otel_audit_wal_max_bytes gauge\notel_audit_wal_max_bytes {}\n\
             # HELP otel_audit_wal_queued_bytes Record bytes waiting for a WAL write.\n# TYPE otel_audit_wal_queued_bytes gauge\notel_audit_wal_queued_bytes {}\n\
             # HELP otel_audit_wal_reserve_bytes Disk space the WAL holds back for its own records on a full disk (0 once used, until restored).\n# TYPE otel_audit_wal_reserve_bytes gauge\notel_audit_wal_reserve_bytes {}\n\
             # HELP otel_audit_wal_segments WAL segment files.\n# TYPE otel_audit_wal_segments gauge\notel_audit_wal_segments {}\n\
             # HELP otel_audit_wal_group_commits_total Group commits (one fsync each).\n# TYPE otel_audit_wal_group_commits_total counter\notel_audit_wal_group_commits_total {}\n",
            st.disk_bytes,
            st.max_wal_bytes,
            st.queued_bytes,
            self.wal.reserve_bytes(),
            st.segments,
            st.groups_written
        );
        self.wal.sync_seconds().render(
            &mut out,
            "otel_audit_wal_sync_seconds",
            "Time each WAL group commit took to write and fsync its frame.",
        );
        let _ = writeln!(
            out,
            "# HELP otel_audit_chain_next_seq The seq the next event of each chain gets.\n# TYPE otel_audit_chain_next_seq gauge"
        );
        for (chain, next) in self.pipeline.chain_heads() {
            let _ = writeln!(out, "otel_audit_chain_next_seq{{chain=\"{chain}\"}} {next}");
        }
        out
    }
}

/// The server-side redactor: the configured policy, with its keys; when the
/// policy names no HMAC key, a key generated once and kept in
/// `<wal.dir>/server-hmac.key` (so digests stay comparable across restarts).
fn server_redactor(config: &Config) -> Result<Redactor, StartError> {
    let policy = config.load_policy()?;
    let mut keys = policy
        .keys
        .load()
        .map_err(|e| StartError::Policy(e.to_string()))?;
    if keys.hmac.is_none() {
        let path = config.wal.dir.join("server-hmac.key");
        let key = load_or_create_key(&path).map_err(|e| {
            StartError::Policy(format!(
                "no HMAC key configured (policy keys.hmac) and {}: {e}",
                path.display()
            ))
        })?;
        let id = format!("server-{}", &hex::encode(Sha256::digest(&key))[..8]);
        tracing::info!(key_id = %id, path = %path.display(), "no HMAC key configured; using the collector's generated key");
        keys = Keys {
            hmac: Some(Keyring::hmac(id, key).map_err(|e| StartError::Policy(e.to_string()))?),
            ..keys
        };
    }
    Redactor::new(policy, keys).map_err(|e| StartError::Policy(e.to_string()))
}

fn load_or_create_key(path: &Path) -> std::io::Result<Vec<u8>> {
    match std::fs::read_to_string(path) {
        Ok(text) => hex::decode(text.trim()).map_err(|e| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, format!("not hex: {e}"))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let mut key = [0u8; 32];
            getrandom::fill(&mut key).map_err(std::io::Error::other)?;
            let tmp = path.with_extension("tmp");
            {
                use std::io::Write as _;
                let mut opts = std::fs::OpenOptions::new();
                opts.write(true).create(true).truncate(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
                let mut f = opts.open(&tmp)?;
                f.write_all(hex::encode(key).as_bytes())?;
                f.sync_all()?;
            }
            std::fs::rename(&tmp, path)?;
            Ok(key.to_vec())
        }
        Err(e) => Err(e),
    }
}

/// What one backup run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupRun {
    /// Objects copied.
    pub copied: u64,
    /// Objects already in the backup.
    pub skipped: u64,
    /// Bytes copied.
    pub bytes_copied: u64,
    /// Whether the copy verified intact (`None` when not verified).
    pub intact: Option<bool>,
}

impl BackupJob {
    async fn run(&self) -> Result<BackupRun, String> {
        let started = std::time::Instant::now();
        let result = self.copy().await;
        let (action, outcome, mut attrs) = match &result {
            Ok(r) => (
                "backup.completed",
                if r.intact == Some(false) {
                    Outcome::Failure
                } else {
                    Outcome::Success
                },
                vec![
                    ("backup.objects_copied", r.copied.to_string()),
                    ("backup.objects_skipped", r.skipped.to_string()),
                    ("backup.bytes_copied", r.bytes_copied.to_string()),
                    (
                        "backup.verified",
                        r.intact.map_or("not verified".into(), |i| {
                            if i { "intact" } else { "PROBLEMS" }.to_owned()
                        }),
                    ),
                ],
            ),
            Err(e) => (
                "backup.failed",
                Outcome::Failure,
                vec![("backup.error", e.clone())],
            ),
        };
        attrs.push(("backup.to", self.to.url().to_owned()));
        attrs.push((
            "backup.duration_ms",
            started.elapsed().as_millis().to_string(),
        ));
        let mut event = system_event(&self.own_tenant, &self.instance_id, action, outcome);
        for (k, v) in attrs {
            event.attributes.insert(k.to_owned(), v);
        }
        if let Err(e) = self.pipeline.record_own_event(event).await {
            tracing::warn!(error = %e, "could not record the backup run");
        }
        match &result {
            Ok(r) => {
                tracing::info!(copied = r.copied, skipped = r.skipped, bytes = r.bytes_copied, intact = ?r.intact, to = self.to.url(), "backup run")
            }
            Err(e) => {
                tracing::warn!(error = %e, to = self.to.url(), "backup failed; retrying at the next interval")
            }
        }
        result
    }

    async fn copy(&self) -> Result<BackupRun, String> {
        use otel_audit_storage::copy::{CopyOptions, copy_store};
        let as_of = chrono::Utc::now();
        let report = copy_store(
            &self.from,
            &self.to,
            &CopyOptions::default(),
            &otel_audit_storage::NoProgress,
        )
        .await
        .map_err(|e| e.to_string())?;
        let intact = if self.verify {
            let opts = otel_audit_storage::VerifyOptions {
                as_of: Some(as_of),
                ..Default::default()
            };
            let v = otel_audit_storage::verify(&self.to, &opts, &otel_audit_storage::NoProgress)
                .await
                .map_err(|e| format!("verifying the copy: {e}"))?;
            Some(v.is_intact())
        } else {
            None
        };
        Ok(BackupRun {
            copied: report.copied,
            skipped: report.skipped,
            bytes_copied: report.bytes_copied,
            intact,
        })
    }
}

/// What one retention run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionRun {
    /// Data files deleted.
    pub files_deleted: usize,
    /// Digests deleted.
    pub digests_deleted: usize,
    /// Expired files a legal hold kept.
    pub files_held: usize,
}

/// Why a retention run stopped.
#[derive(Debug, thiserror::Error)]
pub enum RetentionRunError {
    /// The store could not be read or an object not deleted.
    #[error("retention: {0}")]
    Store(#[from] otel_audit_storage::ReadError),
    /// The tombstones could not be recorded: nothing was deleted.
    #[error("retention: recording the deletions failed, so nothing was deleted: {0}")]
    Record(#[from] crate::ingest::IngestError),
}

impl RetentionJob {
    /// Plans, records every deletion (and every blocked one) durably in the
    /// chains, then deletes.
    async fn run(&self) -> Result<RetentionRun, RetentionRunError> {
        use otel_audit_storage::retention;
        let plan = retention::plan(&self.store, &self.policy, chrono::Utc::now()).await?;
        let events = plan.events(SERVICE_NAME, &self.instance_id);
        if events.is_empty() {
            return Ok(RetentionRun::default());
        }
        // Recorded (durably, in the WAL) before anything is deleted: a crash
        // in between leaves a tombstone for a file still present, never a
        // deletion without a record.
        self.pipeline.record_store_events(events).await?;
        retention::execute(&self.store, &plan).await?;
        // Deleting made room: the reserve, if a full disk used it, first.
        crate::pipeline::restore_reserve(self.pipeline.wal().clone()).await;
        let run = RetentionRun {
            files_deleted: plan.files.len(),
            digests_deleted: plan.digests.len(),
            files_held: plan.held.len(),
        };
        self.metrics
            .retention_deletions
            .add((run.files_deleted + run.digests_deleted) as u64);
        tracing::info!(
            files = run.files_deleted,
            digests = run.digests_deleted,
            held = run.files_held,
            bytes = plan.files.iter().map(|f| f.bytes).sum::<u64>(),
            "retention run: expired files deleted, each recorded in its chain"
        );
        Ok(run)
    }
}

/// One of the collector's own events (category `system`), as this instance.
fn system_event(tenant: &str, instance_id: &str, action: &str, outcome: Outcome) -> AuditEvent {
    let mut event = AuditEvent::new(tenant, SERVICE_NAME, Category::System, action);
    event.service.version = Some(env!("CARGO_PKG_VERSION").into());
    event.service.host = Some(instance_id.to_owned());
    event.actor.id = Some(instance_id.to_owned());
    event.actor.kind = Some(otel_audit_event::ActorType::Service);
    event.severity = if outcome == Outcome::Success {
        Severity::Info
    } else {
        Severity::Error
    };
    event.outcome = outcome;
    event
}

/// The key that signs digests: from `digests.signing_key_file`, from the
/// variable `digests.signing_key_env` names, or generated once in the WAL
/// directory. `None` when digests are off.
fn digest_signer(config: &Config) -> Result<Option<DigestSigner>, StartError> {
    let d = &config.digests;
    if !d.enabled {
        tracing::warn!("digests.enabled is false: deleting the newest files would go unnoticed");
        return Ok(None);
    }
    if let Some(path) = &d.signing_key_file {
        return DigestSigner::load(path)
            .map(Some)
            .map_err(|source| StartError::DigestKey {
                key: "digests.signing_key_file",
                source,
            });
    }
    if let Some(var) = &d.signing_key_env {
        let pem = zeroize::Zeroizing::new(
            std::env::var(var).map_err(|_| StartError::DigestKeyEnv(var.clone()))?,
        );
        return DigestSigner::from_pem(&pem, &format!("${var}"))
            .map(Some)
            .map_err(|source| StartError::DigestKey {
                key: "digests.signing_key_env",
                source,
            });
    }
    let key = |source| StartError::DigestKey {
        key: "digests.signing_key_file",
        source,
    };
    let private = config.wal.dir.join("digest-signing-key.pem");
    let public = config.wal.dir.join("digest-signing-key.pub.pem");
    let signer = if private.exists() {
        DigestSigner::load(&private).map_err(key)?
    } else {
        std::fs::create_dir_all(&config.wal.dir).map_err(|source| {
            key(otel_audit_storage::KeyError::Io {
                path: config.wal.dir.clone(),
                source,
            })
        })?;
        let s = DigestSigner::generate().map_err(key)?;
        s.write_pair(&private, &public).map_err(key)?;
        s
    };
    tracing::info!(
        key_id = signer.key_id(),
        public_key = %public.display(),
        "no digests.signing_key_file configured: signing digests with the collector's generated key; \
         give auditors the public key"
    );
    Ok(Some(signer))
}

/// The last row of each of this instance's chains found in the store.
async fn store_heads(
    store: &Store,
    instance_id: &str,
) -> Result<Vec<(String, ChainHead)>, StartError> {
    let listing = list_files(store, &TimeRange::all())
        .await
        .map_err(|e| StartError::Store(e.to_string()))?;
    let prefix = format!("{instance_id}.");
    let mut newest: HashMap<&str, (u64, &str)> = HashMap::new();
    for f in &listing.files {
        if !f.file.chain_id.starts_with(&prefix) {
            continue;
        }
        let e = newest
            .entry(f.file.chain_id.as_str())
            .or_insert((f.file.first_seq, f.path.as_str()));
        if f.file.first_seq >= e.0 {
            *e = (f.file.first_seq, f.path.as_str());
        }
    }
    let mut out = Vec::new();
    for (chain, (_, path)) in newest {
        let bytes = reader::fetch(store, path)
            .await
            .map_err(|e| StartError::Store(e.to_string()))?;
        let footer =
            reader::footer_of(bytes).map_err(|e| StartError::Store(format!("{path}: {e}")))?;
        out.push((
            chain.to_owned(),
            ChainHead {
                seq: footer.last_seq,
                hash: footer.last_hash,
            },
        ));
    }
    Ok(out)
}
/// Binds `endpoint` for the config key `key`.
async fn bind(key: &'static str, endpoint: &str) -> Result<tokio::net::TcpListener, StartError> {
    tokio::net::TcpListener::bind(endpoint)
        .await
        .map_err(|source| StartError::Bind {
            key,
            endpoint: endpoint.to_owned(),
            source,
        })
}

/// Runs the whole collector until `stop` resolves (the binary passes
/// SIGTERM/SIGINT): starts the pipeline, records `collector.start` and
/// `config.loaded` (with the configuration's SHA-256), serves the receivers
/// and the telemetry endpoint, then shuts down gracefully — receivers stop
/// accepting and finish in-flight requests, the sink stores everything, the
/// WAL is left empty.
pub async fn run(
    config: Config,
    config_text: &str,
    stop: impl std::future::Future<Output = ()> + Send,
) -> Result<ShutdownReport, anyhow::Error> {
    use crate::receiver::{ReceiverContext, serve_grpc, serve_http};

    let metrics = Arc::new(Metrics::default());
    let collector = Arc::new(Collector::start(&config, metrics.clone()).await?);
    let auth = crate::auth::Authenticator::from_config(&config.receivers.auth)?;
    let ctx = Arc::new(ReceiverContext {
        ingest: collector.pipeline().clone(),
        auth,
        metrics: metrics.clone(),
        convert: crate::convert::ConvertOptions {
            default_tenant: config.receivers.default_tenant.clone(),
            unmapped: config.receivers.unmapped,
        },
    });

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let mut addresses = Vec::new();
    let mut tasks: Vec<JoinHandle<Result<(), String>>> = Vec::new();
    let otlp = &config.receivers.otlp;
    if otlp.grpc.enabled {
        let listener = bind("receivers.otlp.grpc.endpoint", &otlp.grpc.endpoint).await?;
        let addr = listener.local_addr()?;
        addresses.push(format!("grpc={addr}"));
        let (ep, ctx, s) = (otlp.grpc.clone(), ctx.clone(), stopped());
        tasks.push(tokio::spawn(async move {
            serve_grpc(listener, &ep, ctx, s)
                .await
                .map_err(|e| e.to_string())
        }));
    }
    if otlp.http.enabled {
        let listener = bind("receivers.otlp.http.endpoint", &otlp.http.endpoint).await?;
        let addr = listener.local_addr()?;
        addresses.push(format!("http={addr}"));
        let (ep, ctx, s) = (otlp.http.clone(), ctx.clone(), stopped());
        tasks.push(tokio::spawn(async move {
            serve_http(listener, &ep, ctx, s)
                .await
                .map_err(|e| e.to_string())
        }));
    }
    if !config.telemetry.endpoint.is_empty() {
        let listener = bind("telemetry.endpoint", &config.telemetry.endpoint).await?;
        let addr = listener.local_addr()?;
        addresses.push(format!("telemetry={addr}"));
        tracing::info!(%addr, "metrics and health on /metrics, /healthz, /readyz");
        let (c, s) = (collector.clone(), stopped());
        tasks.push(tokio::spawn(async move {
            crate::telemetry::serve(listener, c, s)
                .await
                .map_err(|e| e.to_string())
        }));
    }

    let config_sha256 = hex::encode(Sha256::digest(config_text.as_bytes()));
    collector
        .record_system_event(
            "collector.start",
            &[(
                "otel_audit.collector.version",
                env!("CARGO_PKG_VERSION").into(),
            )],
        )
        .await?;
    collector
        .record_system_event(
            "config.loaded",
            &[("otel_audit.config.sha256", config_sha256.clone())],
        )
        .await?;
    tracing::info!(config_sha256 = %config_sha256, instance_id = %config.collector.instance_id, "collector started");
    if let Some(path) = &config.telemetry.address_file {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, addresses.join("\n") + "\n")?;
        std::fs::rename(&tmp, path)?;
    }

    // A receiver that fails (TLS setup, ...) stops the collector too.
    let mut failed = None;
    tokio::select! {
        _ = stop => tracing::info!("shutting down"),
        r = futures::future::select_all(tasks.iter_mut()) => {
            let (r, _, _) = r;
            let msg = match r {
                Ok(Ok(())) => "a receiver stopped".to_owned(),
                Ok(Err(e)) => e,
                Err(e) => format!("a receiver panicked: {e}"),
            };
            tracing::error!(error = %msg, "receiver failed; shutting down");
            failed = Some(msg);
        }
    }
    let _ = stop_tx.send(true);
    // In-flight requests finish; a client that keeps an idle connection
    // open must not hold the shutdown forever.
    let grace = Duration::from_secs(config.collector.shutdown_timeout_secs);
    let deadline = tokio::time::Instant::now() + grace;
    for mut t in tasks {
        if tokio::time::timeout_at(deadline, &mut t).await.is_err() {
            tracing::warn!(
                grace_secs = grace.as_secs(),
                "a receiver still had open connections after the shutdown grace period; closing them"
            );
            t.abort();
            let _ = t.await;
        }
    }
    let collector = Arc::try_unwrap(collector)
        .map_err(|_| anyhow::anyhow!("the pipeline is still in use after the receivers stopped"))?;
    let report = collector.shutdown().await?;
    if report.drained {
        tracing::info!("stopped; everything acknowledged is in the store and the WAL is empty");
    } else {
        tracing::warn!(
            segments = report.wal_segments_left,
            "stopped with data left in the WAL; it is written after the next start"
        );
    }
    match failed {
        Some(msg) => Err(anyhow::anyhow!(msg)),
        None => Ok(report),
    }
}
