//! The collector's configuration: YAML, `--set dotted.key=value` overrides,
//! and validation whose messages name the key.
//!
//! Every field is documented here and in docs/OPERATIONS.md. Unknown keys are
//! errors, so a typo never silently falls back to a default.
//!
//! ```
//! use otel_audit_collector::config::Config;
//! let config = Config::load(None, &["receivers.otlp.grpc.endpoint=127.0.0.1:14317".into()])?;
//! assert_eq!(config.receivers.otlp.grpc.endpoint, "127.0.0.1:14317");
//! assert_eq!(config.storage.url, "./audit-data");
//! # Ok::<(), otel_audit_collector::config::ConfigError>(())
//! ```

use std::path::{Path, PathBuf};

use otel_audit_event::redact::Policy;
use otel_audit_storage::{StoreOptions, WriterOptions};
use serde::{Deserialize, Serialize};
use serde_norway::Value;

use crate::wal::WalOptions;

const MIB: u64 = 1024 * 1024;

/// Errors loading or checking the configuration. Each names the file or the
/// key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The YAML is malformed or does not fit the schema (unknown key, wrong
    /// type); the message names the key and line.
    #[error("{origin}: {source}")]
    Parse {
        /// The file, or `--set` overrides.
        origin: String,
        /// The parser's error, naming the key.
        #[source]
        source: serde_norway::Error,
    },
    /// A `--set` argument is not `dotted.key=value`.
    #[error("--set {arg:?}: {reason}")]
    Override {
        /// The argument.
        arg: String,
        /// What is wrong.
        reason: String,
    },
    /// A value is out of range or inconsistent with another.
    #[error("{key}: {reason}")]
    Invalid {
        /// The dotted key.
        key: String,
        /// What is wrong and what is expected.
        reason: String,
    },
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// This collector instance.
    pub collector: CollectorSection,
    /// Where telemetry comes in.
    pub receivers: Receivers,
    /// The server-side redaction policy, applied before anything is written
    /// (the WAL included).
    pub policy: PolicySection,
    /// Where the Parquet files go.
    pub storage: StorageSection,
    /// Signed digests of what each chain stored.
    pub digests: DigestSection,
    /// Deleting expired files, recorded in the chain; legal holds.
    pub retention: RetentionSection,
    /// Copying the store to a second store on a schedule.
    pub backup: BackupSection,
    /// The write-ahead log.
    pub wal: WalOptions,
    /// The collector's own metrics, health and logs.
    pub telemetry: TelemetrySection,
}

/// `collector.*`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CollectorSection {
    /// The instance's name. Chains are named `<instance_id>.<tenant>`, so
    /// every replica writing to one bucket needs its own, stable across
    /// restarts (it is how the chain continues after a restart). Default:
    /// the host name (`HOSTNAME`), else `collector`. A path token: letters,
    /// digits, `-`, `_`, `.`.
    pub instance_id: String,
    /// The tenant whose chain holds the collector's own events (start, stop,
    /// configuration loaded, retention and backup runs). Default
    /// `otel-audit`.
    pub own_events_tenant: String,
    /// How long a graceful shutdown may take to flush the store, in seconds,
    /// before it gives up (what is not stored stays in the WAL and is
    /// written after the next start). Default 30.
    pub shutdown_timeout_secs: u64,
}

impl Default for CollectorSection {
    fn default() -> Self {
        let host = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .map(|h| {
                h.trim()
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                            c
                        } else {
                            '-'
                        }
                    })
                    .collect::<String>()
            })
            .filter(|h| !h.is_empty() && !h.starts_with('.'));
        CollectorSection {
            instance_id: host.unwrap_or_else(|| "collector".into()),
            own_events_tenant: "otel-audit".into(),
            shutdown_timeout_secs: 30,
        }
    }
}

/// `receivers.*`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Receivers {
    /// The OTLP receivers.
    pub otlp: OtlpReceivers,
    /// The tenant of events whose payload names none (third-party spans and
    /// logs) when authentication is off. Default `default`.
    pub default_tenant: String,
    /// What to do with records that are neither otel-audit events nor carry
    /// GenAI attributes: `drop` (count them in
    /// `otel_audit_records_unmapped_total`, answer success) or `reject`
    /// (count them as rejected in a partial success). Default `drop`.
    pub unmapped: Unmapped,
    /// Bearer-token authentication. Off when no token is configured.
    pub auth: AuthSection,
}

impl Default for Receivers {
    fn default() -> Self {
        Receivers {
            otlp: OtlpReceivers::default(),
            default_tenant: "default".into(),
            unmapped: Unmapped::Drop,
            auth: AuthSection::default(),
        }
    }
}

/// Handling of telemetry that is not audit data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unmapped {
    /// Drop and count.
    Drop,
    /// Reject (partial success naming the count).
    Reject,
}

/// `receivers.otlp.*`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpReceivers {
    /// OTLP/gRPC (`LogsService/Export`, `TraceService/Export`).
    pub grpc: Endpoint,
    /// OTLP/HTTP (`POST /v1/logs`, `POST /v1/traces`; protobuf or JSON,
    /// optionally gzip).
    pub http: Endpoint,
}

impl Default for OtlpReceivers {
    fn default() -> Self {
        OtlpReceivers {
            grpc: Endpoint {
                endpoint: "127.0.0.1:4317".into(),
                ..Endpoint::default()
            },
            http: Endpoint {
                endpoint: "127.0.0.1:4318".into(),
                ..Endpoint::default()
            },
        }
    }
}

/// One listening receiver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Endpoint {
    /// Whether the receiver runs. Default true.
    pub enabled: bool,
    /// `host:port` to listen on. Port 0 picks a free port (the chosen address
    /// is logged and written to `telemetry.address_file` when set).
    pub endpoint: String,
    /// The largest request accepted, in bytes, after decompression. Larger
    /// requests get `RESOURCE_EXHAUSTED` / HTTP 413. Default 16 MiB.
    pub max_message_bytes: u64,
    /// TLS (rustls). Plain TCP when absent.
    pub tls: Option<TlsSection>,
}

impl Default for Endpoint {
    fn default() -> Self {
        Endpoint {
            enabled: true,
            endpoint: String::new(),
            max_message_bytes: 16 * MIB,
            tls: None,
        }
    }
}

/// TLS settings of a receiver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// PEM file with the server certificate chain.
    pub cert_file: PathBuf,
    /// PEM file with the server's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM file with CA certificates; when set, clients must present a
    /// certificate signed by one of them (mutual TLS).
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
}

/// `receivers.auth.*`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    /// Tokens and the tenant each writes to. When the list is not empty,
    /// every request needs `Authorization: Bearer <token>` (gRPC metadata
    /// `authorization`); the tenant comes from the token, never from the
    /// payload.
    pub tokens: Vec<TokenEntry>,
}

/// One bearer token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// A name for logs and metrics (the token itself is never logged).
    pub name: String,
    /// The tenant this token writes to.
    pub tenant: String,
    /// The token, inline (prefer `token_file` or `token_env`).
    #[serde(default)]
    pub token: Option<String>,
    /// A file holding the token (surrounding whitespace ignored).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// An environment variable holding the token.
    #[serde(default)]
    pub token_env: Option<String>,
}

/// `policy.*`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicySection {
    /// A policy YAML file (the same format as the layer's `OTEL_AUDIT_POLICY`,
    /// docs/REDACTION.md). Exclusive with `inline`.
    pub file: Option<PathBuf>,
    /// The policy written inline: the content of a policy file's
    /// `redaction:` section (mode, rules, content_fields, detectors, keys).
    /// Without `file` or `inline`, the default policy applies: content
    /// attributes HMAC'd, detectors mask.
    pub inline: Option<Value>,
}

/// `storage.*`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSection {
    /// Where files go: a local path, `file:///abs`, or `s3://bucket/prefix`.
    /// Default `./audit-data`.
    pub url: String,
    /// S3 settings (endpoint, region, credentials, `allow_http`); the
    /// `AWS_*` environment variables apply too.
    pub s3: StoreOptions,
    /// Parquet encoding.
    pub parquet: WriterOptions,
    /// A file is closed when it holds this many rows. Default 100000.
    pub max_file_rows: usize,
    /// A file is closed when it takes about this many bytes in memory
    /// (the encoded data held so far). Default 64 MiB.
    pub max_file_bytes: u64,
    /// A file is closed this many seconds after its first row arrived, so
    /// data is queryable within about this time. Default 30.
    pub flush_interval_secs: u64,
    /// The sink's in-memory buffer of acknowledged events waiting for a
    /// file, in bytes. Beyond it the sink reads them back from the WAL
    /// instead, so memory stays bounded during a store outage. Default
    /// 64 MiB.
    pub max_buffer_bytes: u64,
    /// How long a request whose events do not fit in that buffer waits for
    /// room (after its WAL commit, before its answer) while the sink is
    /// busy but moving, in milliseconds. Reading events back from the WAL
    /// costs more CPU than encoding them, so under a load the sink cannot
    /// keep up with, answers slow down instead. `0` leaves them to the WAL
    /// at once. A sink stuck on a store outage is never waited for.
    /// Default 1000.
    pub max_buffer_wait_ms: u64,
    /// First wait before retrying a failed store write, in milliseconds;
    /// doubled on each failure. Default 200.
    pub retry_initial_backoff_ms: u64,
    /// Longest wait between retries, in seconds. Default 30.
    pub retry_max_backoff_secs: u64,
}

impl Default for StorageSection {
    fn default() -> Self {
        StorageSection {
            url: "./audit-data".into(),
            s3: StoreOptions::default(),
            parquet: WriterOptions::default(),
            max_file_rows: 100_000,
            max_file_bytes: 64 * MIB,
            flush_interval_secs: 30,
            max_buffer_bytes: 64 * MIB,
            max_buffer_wait_ms: 1000,
            retry_initial_backoff_ms: 200,
            retry_max_backoff_secs: 30,
        }
    }
}

/// `digests.*`: per chain and period, a digest listing the files stored with
/// their SHA-256, linked to the previous digest and signed with Ed25519.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DigestSection {
    /// Write digests. Default true. Without them, deleting the newest files
    /// cannot be detected.
    pub enabled: bool,
    /// Seconds per period; periods are aligned to the Unix epoch (3600 ends
    /// them on the hour). A digest is also written at start-up and shutdown.
    /// Default 3600; 10 to 86400.
    pub period_secs: u64,
    /// PKCS#8 PEM Ed25519 private key (`otel-audit keys generate`). When
    /// neither this nor `signing_key_env` is set, a key is generated once in
    /// `<wal.dir>/digest-signing-key.pem`, its public key beside it in
    /// `digest-signing-key.pub.pem`.
    pub signing_key_file: Option<PathBuf>,
    /// Name of an environment variable holding the PEM private key.
    pub signing_key_env: Option<String>,
}

impl Default for DigestSection {
    fn default() -> Self {
        DigestSection {
            enabled: true,
            period_secs: otel_audit_storage::digest::DEFAULT_PERIOD_SECS,
            signing_key_file: None,
            signing_key_env: None,
        }
    }
}

/// `retention.*`: delete whole files whose every row has expired, after
/// recording each deletion as a tombstone event in its tenant's chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionSection {
    /// Run retention on a schedule. Default false: nothing is deleted unless
    /// configured.
    pub enabled: bool,
    /// Seconds between runs (the first runs this long after start). Default
    /// 3600; at least 10.
    pub interval_secs: u64,
    /// Rules `{tenant?, category?, days}`; the most specific match wins; a
    /// row no rule covers is kept for ever, and so is its file.
    pub rules: Vec<otel_audit_storage::retention::RetentionRule>,
    /// Legal holds `{name, reason, tenant?, category?, path_prefix?}`:
    /// nothing they match is deleted; a blocked deletion is recorded.
    pub legal_holds: Vec<otel_audit_storage::retention::LegalHold>,
}

impl Default for RetentionSection {
    fn default() -> Self {
        RetentionSection {
            enabled: false,
            interval_secs: 3600,
            rules: Vec::new(),
            legal_holds: Vec::new(),
        }
    }
}

impl RetentionSection {
    /// The rules and holds as the storage crate takes them.
    pub fn policy(&self) -> otel_audit_storage::retention::RetentionPolicy {
        otel_audit_storage::retention::RetentionPolicy {
            rules: self.rules.clone(),
            legal_holds: self.legal_holds.clone(),
        }
    }
}

/// `backup.*`: an incremental, verified copy of the store (data and
/// digests) to a second store, each run recorded as a `system` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackupSection {
    /// Back up on a schedule. Default false.
    pub enabled: bool,
    /// Where to: a local path, `file:///abs` or `s3://bucket/prefix`.
    pub to: String,
    /// S3 settings of the destination (as `storage.s3`).
    pub s3: StoreOptions,
    /// Seconds between backups (the first runs this long after start).
    /// Default 86400; at least 60.
    pub interval_secs: u64,
    /// Verify the copy after each run (everything but signatures, which
    /// need the auditor's public keys). Default true.
    pub verify: bool,
}

impl Default for BackupSection {
    fn default() -> Self {
        BackupSection {
            enabled: false,
            to: String::new(),
            s3: StoreOptions::default(),
            interval_secs: 86_400,
            verify: true,
        }
    }
}

/// `telemetry.*`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetrySection {
    /// `host:port` serving `/metrics` (Prometheus text), `/healthz` and
    /// `/readyz`. Empty disables it. Default `127.0.0.1:8888`.
    pub endpoint: String,
    /// Log format: `text` or `json`. Default `text`.
    pub log_format: LogFormat,
    /// Log filter (`info`, `debug`, `otel_audit_collector=debug`, ...).
    /// Default `info`.
    pub log_level: String,
    /// When set, the collector writes the addresses it listens on (one
    /// `name=host:port` line each) to this file once it is ready; useful with
    /// port 0.
    pub address_file: Option<PathBuf>,
}

impl Default for TelemetrySection {
    fn default() -> Self {
        TelemetrySection {
            endpoint: "127.0.0.1:8888".into(),
            log_format: LogFormat::Text,
            log_level: "info".into(),
            address_file: None,
        }
    }
}

/// The collector's log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl Config {
    /// The embedded default configuration, as YAML (what runs with no
    /// `--config`).
    pub const DEFAULT_YAML: &'static str = "# otel-audit collector: embedded default\n\
        receivers:\n  otlp:\n    grpc:\n      endpoint: 127.0.0.1:4317\n    http:\n      endpoint: 127.0.0.1:4318\n\
        storage:\n  url: ./audit-data\n\
        wal:\n  dir: ./audit-wal\n";

    /// Loads `file` (or the embedded default), applies `overrides`
    /// (`dotted.key=value`, the value parsed as YAML), and validates.
    pub fn load(file: Option<&Path>, overrides: &[String]) -> Result<Config, ConfigError> {
        let (text, origin) = match file {
            Some(path) => (
                std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?,
                path.display().to_string(),
            ),
            None => (Self::DEFAULT_YAML.to_owned(), "embedded default".to_owned()),
        };
        let mut tree: Value =
            serde_norway::from_str(&text).map_err(|source| ConfigError::Parse {
                origin: origin.clone(),
                source,
            })?;
        if tree.is_null() {
            tree = Value::Mapping(Default::default());
        }
        for arg in overrides {
            apply_override(&mut tree, arg)?;
        }
        let origin = if overrides.is_empty() {
            origin
        } else {
            format!("{origin} with --set overrides")
        };
        // Through text rather than `from_value`: the parser's errors then name
        // the key path (`storage.max_file_rows: invalid type ...`).
        let merged = serde_norway::to_string(&tree).map_err(|source| ConfigError::Parse {
            origin: origin.clone(),
            source,
        })?;
        let config: Config = serde_norway::from_str(&merged)
            .map_err(|source| ConfigError::Parse { origin, source })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values and combinations; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let d = &self.digests;
        if !(10..=86_400).contains(&d.period_secs) {
            return Err(invalid(
                "digests.period_secs",
                format!("{} is outside 10 to 86400 seconds", d.period_secs),
            ));
        }
        let b = &self.backup;
        if b.enabled && b.to.trim().is_empty() {
            return Err(invalid(
                "backup.to",
                "backup is enabled but has no destination store URL",
            ));
        }
        if b.interval_secs < 60 {
            return Err(invalid(
                "backup.interval_secs",
                format!("{} is below 60 seconds", b.interval_secs),
            ));
        }
        let r = &self.retention;
        if r.interval_secs < 10 {
            return Err(invalid(
                "retention.interval_secs",
                format!("{} is below 10 seconds", r.interval_secs),
            ));
        }
        r.policy()
            .validate()
            .map_err(|e| invalid(format!("retention.{}", e.key), e.reason))?;
        if r.enabled && r.rules.is_empty() {
            return Err(invalid(
                "retention.rules",
                "retention is enabled but has no rules: nothing would ever expire",
            ));
        }
        if d.signing_key_file.is_some() && d.signing_key_env.is_some() {
            return Err(invalid(
                "digests.signing_key_env",
                "set either digests.signing_key_file or digests.signing_key_env, not both",
            ));
        }
        otel_audit_event::check_path_token(&self.collector.instance_id, 64)
            .map_err(|r| invalid("collector.instance_id", r))?;
        otel_audit_event::check_path_token(&self.collector.own_events_tenant, 64)
            .map_err(|r| invalid("collector.own_events_tenant", r))?;
        otel_audit_event::check_path_token(&self.receivers.default_tenant, 64)
            .map_err(|r| invalid("receivers.default_tenant", r))?;
        let grpc = &self.receivers.otlp.grpc;
        let http = &self.receivers.otlp.http;
        if !grpc.enabled && !http.enabled {
            return Err(invalid(
                "receivers.otlp",
                "both grpc and http are disabled: the collector would receive nothing",
            ));
        }
        for (key, ep) in [("receivers.otlp.grpc", grpc), ("receivers.otlp.http", http)] {
            if !ep.enabled {
                continue;
            }
            check_socket_addr(&format!("{key}.endpoint"), &ep.endpoint)?;
            if !(1024..=1024 * MIB).contains(&ep.max_message_bytes) {
                return Err(invalid(
                    format!("{key}.max_message_bytes"),
                    format!(
                        "{} is outside 1024 to {} bytes",
                        ep.max_message_bytes,
                        1024 * MIB
                    ),
                ));
            }
            if let Some(tls) = &ep.tls {
                for (field, path) in [("cert_file", &tls.cert_file), ("key_file", &tls.key_file)]
                    .into_iter()
                    .chain(tls.client_ca_file.as_ref().map(|p| ("client_ca_file", p)))
                {
                    if !path.is_file() {
                        return Err(invalid(
                            format!("{key}.tls.{field}"),
                            format!("{} is not a readable file", path.display()),
                        ));
                    }
                }
            }
        }
        if grpc.enabled && http.enabled && grpc.endpoint == http.endpoint {
            let port_zero = grpc.endpoint.ends_with(":0");
            if !port_zero {
                return Err(invalid(
                    "receivers.otlp.http.endpoint",
                    format!("{} is also the gRPC endpoint", http.endpoint),
                ));
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, t) in self.receivers.auth.tokens.iter().enumerate() {
            let key = format!("receivers.auth.tokens[{i}]");
            if t.name.trim().is_empty() {
                return Err(invalid(format!("{key}.name"), "must not be empty"));
            }
            if !names.insert(t.name.as_str()) {
                return Err(invalid(
                    format!("{key}.name"),
                    format!("{:?} is used by another token", t.name),
                ));
            }
            otel_audit_event::check_path_token(&t.tenant, 64)
                .map_err(|r| invalid(format!("{key}.tenant"), r))?;
            let sources = [
                t.token.is_some(),
                t.token_file.is_some(),
                t.token_env.is_some(),
            ]
            .into_iter()
            .filter(|s| *s)
            .count();
            if sources != 1 {
                return Err(invalid(
                    key,
                    "exactly one of token, token_file and token_env must be set",
                ));
            }
        }
        if self.policy.file.is_some() && self.policy.inline.is_some() {
            return Err(invalid(
                "policy",
                "set either policy.file or policy.inline, not both",
            ));
        }
        if self.storage.url.trim().is_empty() {
            return Err(invalid("storage.url", "must not be empty"));
        }
        let s = &self.storage;
        if s.max_file_rows == 0 || s.max_file_rows > 10_000_000 {
            return Err(invalid(
                "storage.max_file_rows",
                format!("{} is outside 1 to 10000000", s.max_file_rows),
            ));
        }
        if s.max_file_bytes < 4096 {
            return Err(invalid(
                "storage.max_file_bytes",
                format!("{} is below 4096", s.max_file_bytes),
            ));
        }
        if s.flush_interval_secs == 0 || s.flush_interval_secs > 3600 {
            return Err(invalid(
                "storage.flush_interval_secs",
                format!(
                    "{} is outside 1 to 3600 seconds (a file never spans more than an hour)",
                    s.flush_interval_secs
                ),
            ));
        }
        if s.max_buffer_bytes < MIB {
            return Err(invalid(
                "storage.max_buffer_bytes",
                format!("{} is below 1 MiB", s.max_buffer_bytes),
            ));
        }
        if s.max_buffer_wait_ms > 60_000 {
            return Err(invalid(
                "storage.max_buffer_wait_ms",
                format!(
                    "{} is above 60000 (a minute): clients would time out first",
                    s.max_buffer_wait_ms
                ),
            ));
        }
        if s.retry_initial_backoff_ms == 0 {
            return Err(invalid(
                "storage.retry_initial_backoff_ms",
                "must be at least 1",
            ));
        }
        if s.retry_max_backoff_secs == 0 {
            return Err(invalid(
                "storage.retry_max_backoff_secs",
                "must be at least 1",
            ));
        }
        if !(1..=22).contains(&s.parquet.zstd_level) {
            return Err(invalid(
                "storage.parquet.zstd_level",
                format!("{} is outside 1 to 22", s.parquet.zstd_level),
            ));
        }
        if s.parquet.max_row_group_rows == 0 {
            return Err(invalid(
                "storage.parquet.max_row_group_rows",
                "must be at least 1",
            ));
        }
        self.wal.validate().map_err(|e| match e {
            crate::wal::WalError::InvalidOption { field, reason } => {
                invalid(format!("wal.{field}"), reason)
            }
            other => invalid("wal", other.to_string()),
        })?;
        if !self.telemetry.endpoint.is_empty() {
            check_socket_addr("telemetry.endpoint", &self.telemetry.endpoint)?;
        }
        tracing_subscriber::EnvFilter::try_new(&self.telemetry.log_level)
            .map_err(|e| invalid("telemetry.log_level", e.to_string()))?;
        if self.collector.shutdown_timeout_secs == 0 {
            return Err(invalid(
                "collector.shutdown_timeout_secs",
                "must be at least 1",
            ));
        }
        Ok(())
    }

    /// The server-side policy: `policy.file`, `policy.inline`, or the
    /// default.
    pub fn load_policy(&self) -> Result<Policy, ConfigError> {
        if let Some(path) = &self.policy.file {
            return Policy::from_yaml_file(path).map_err(|e| invalid("policy.file", e.to_string()));
        }
        if let Some(inline) = &self.policy.inline {
            let mut doc = serde_norway::Mapping::new();
            doc.insert(Value::String("redaction".into()), inline.clone());
            let text = serde_norway::to_string(&doc)
                .map_err(|e| invalid("policy.inline", e.to_string()))?;
            return Policy::from_yaml(&text).map_err(|e| invalid("policy.inline", e.to_string()));
        }
        Ok(Policy::default())
    }

    /// The configuration as YAML (what `--print-config` shows). Secrets
    /// (inline tokens, S3 keys) are replaced by `<redacted>`.
    pub fn to_redacted_yaml(&self) -> String {
        let mut c = self.clone();
        for t in &mut c.receivers.auth.tokens {
            if t.token.is_some() {
                t.token = Some("<redacted>".into());
            }
        }
        for s3 in [&mut c.storage.s3, &mut c.backup.s3] {
            if s3.secret_access_key.is_some() {
                s3.secret_access_key = Some("<redacted>".into());
            }
            if s3.session_token.is_some() {
                s3.session_token = Some("<redacted>".into());
            }
        }
        serde_norway::to_string(&c).unwrap_or_default()
    }
}

fn check_socket_addr(key: &str, value: &str) -> Result<(), ConfigError> {
    value
        .parse::<std::net::SocketAddr>()
        .map(|_| ())
        .map_err(|_| {
            invalid(
                key,
                format!(
                    "{value:?} is not host:port with an IP address (127.0.0.1:4317, [::]:4317)"
                ),
            )
        })
}

/// Applies one `dotted.key=value` to the YAML tree, creating mappings on the
/// way; the value is parsed as YAML (so `true`, `5` and `[a, b]` keep their
/// types).
fn apply_override(tree: &mut Value, arg: &str) -> Result<(), ConfigError> {
    let bad = |reason: &str| ConfigError::Override {
        arg: arg.to_owned(),
        reason: reason.to_owned(),
    };
    let (key, value) = arg
        .split_once('=')
        .ok_or_else(|| bad("expected dotted.key=value"))?;
    let key = key.trim();
    if key.is_empty() || key.split('.').any(str::is_empty) {
        return Err(bad("the key must be dotted names, like storage.url"));
    }
    let value: Value = if value.is_empty() {
        Value::String(String::new())
    } else {
        serde_norway::from_str(value).map_err(|e| ConfigError::Override {
            arg: arg.to_owned(),
            reason: format!("the value is not valid YAML: {e}"),
        })?
    };
    let mut node = tree;
    let parts: Vec<&str> = key.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let Value::Mapping(map) = node else {
            return Err(bad(&format!("{} is not a mapping", parts[..i].join("."))));
        };
        let k = Value::String((*part).to_owned());
        if i + 1 == parts.len() {
            map.insert(k, value);
            return Ok(());
        }
        let child = map
            .entry(k)
            .or_insert_with(|| Value::Mapping(Default::default()));
        if child.is_null() {
            *child = Value::Mapping(Default::default());
        }
        node = child;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_has_the_documented_endpoints() {
        let c = Config::load(None, &[]).unwrap();
        assert_eq!(c.receivers.otlp.grpc.endpoint, "127.0.0.1:4317");
        assert_eq!(c.receivers.otlp.http.endpoint, "127.0.0.1:4318");
        assert_eq!(c.storage.url, "./audit-data");
        assert_eq!(c.wal.dir, PathBuf::from("./audit-wal"));
    }

    #[test]
    fn overrides_keep_types_and_create_sections() {
        let c = Config::load(
            None,
            &[
                "storage.max_file_rows=5".into(),
                "storage.s3.allow_http=true".into(),
                "receivers.otlp.grpc.enabled=false".into(),
            ],
        )
        .unwrap();
        assert_eq!(c.storage.max_file_rows, 5);
        assert_eq!(c.storage.s3.allow_http, Some(true));
        assert!(!c.receivers.otlp.grpc.enabled);
    }

    #[test]
    fn errors_name_the_key() {
        let e = Config::load(None, &["storage.urll=x".into()]).unwrap_err();
        assert!(e.to_string().contains("urll"), "{e}");
        let e = Config::load(None, &["receivers.otlp.grpc.endpoint=localhost".into()]).unwrap_err();
        assert!(
            e.to_string().starts_with("receivers.otlp.grpc.endpoint:"),
            "{e}"
        );
        let e = Config::load(None, &["wal.max_segment_bytes=10".into()]).unwrap_err();
        assert!(e.to_string().starts_with("wal.max_segment_bytes:"), "{e}");
        let e = Config::load(None, &["storage.max_file_rows".into()]).unwrap_err();
        assert!(e.to_string().contains("dotted.key=value"), "{e}");
        let e = Config::load(None, &["storage.max_file_rows=many".into()]).unwrap_err();
        assert!(e.to_string().contains("max_file_rows"), "{e}");
    }

    #[test]
    fn tokens_need_exactly_one_source() {
        let e = Config::load(
            None,
            &["receivers.auth.tokens=[{name: a, tenant: acme}]".into()],
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("receivers.auth.tokens[0]"), "{e}");
    }

    #[test]
    fn redacted_yaml_hides_secrets() {
        let c = Config::load(
            None,
            &[
                "receivers.auth.tokens=[{name: a, tenant: acme, token: s3cret-token}]".into(),
                "storage.s3.secret_access_key=hunter2".into(),
            ],
        )
        .unwrap();
        let y = c.to_redacted_yaml();
        assert!(!y.contains("s3cret-token") && !y.contains("hunter2"), "{y}");
        let back: Config = serde_norway::from_str(&y).unwrap();
        assert_eq!(back.storage.url, c.storage.url);
    }
}
