//! Opening a store from a URL: local paths, `file://`, `s3://`, `memory://`.

use std::sync::Arc;
use std::time::Duration;

use object_store::RetryConfig;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ClientConfigKey, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::error::StoreError;

/// Options for opening a store, beyond what the URL says.
///
/// S3 settings also come from the usual `AWS_*` environment variables
/// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
/// `AWS_REGION`, `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`); what is set here wins.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreOptions {
    /// S3 endpoint URL, for S3-compatible servers (`http://127.0.0.1:9000`).
    pub endpoint: Option<String>,
    /// S3 region.
    pub region: Option<String>,
    /// Access key id (prefer the environment).
    pub access_key_id: Option<String>,
    /// Secret access key (prefer the environment).
    pub secret_access_key: Option<String>,
    /// Session token for temporary credentials.
    pub session_token: Option<String>,
    /// Allow plain-HTTP endpoints (local test servers only).
    pub allow_http: Option<bool>,
    /// How many times a failed request is retried (default 3).
    pub max_retries: Option<usize>,
    /// Give up retrying a request after this many seconds (default 30).
    pub retry_timeout_secs: Option<u64>,
    /// Connection timeout in seconds (default 5).
    pub connect_timeout_secs: Option<u64>,
}

/// A store: an object store and the prefix under which the audit data lives.
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    prefix: Path,
    url: String,
}

impl Store {
    /// Opens the store at `url`:
    ///
    /// - `/abs/path`, `./rel/path` or `file:///abs/path`: a local directory
    ///   (created when missing, so a collector can start on an empty disk);
    /// - `s3://bucket/prefix`, with `?endpoint=…&region=…&allow_http=true`
    ///   accepted in the URL for S3-compatible servers;
    /// - `memory://`: a fresh in-memory store, for tests.
    ///
    /// ```
    /// let store = otel_audit_storage::Store::open("memory://", &Default::default()).unwrap();
    /// assert_eq!(store.url(), "memory://");
    /// ```
    pub fn open(url: &str, options: &StoreOptions) -> Result<Store, StoreError> {
        let url = url.trim();
        if url.is_empty() {
            return Err(StoreError::InvalidUrl {
                url: url.to_owned(),
                reason: "empty store URL".into(),
            });
        }
        if url == "memory://" || url == "memory:" {
            return Ok(Store::new(
                Arc::new(InMemory::new()),
                Path::default(),
                "memory://",
            ));
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            return open_s3(url, rest, options);
        }
        let local = match url.strip_prefix("file://") {
            Some(p) if p.starts_with('/') => p.to_owned(),
            Some(_) => {
                return Err(StoreError::InvalidUrl {
                    url: url.to_owned(),
                    reason: "file:// URLs need an absolute path (file:///var/audit)".into(),
                });
            }
            None if url.contains("://") => {
                let scheme = url.split("://").next().unwrap_or_default();
                return Err(StoreError::InvalidUrl {
                    url: url.to_owned(),
                    reason: format!(
                        "unsupported scheme {scheme:?}: use a local path, file://, s3:// or memory://"
                    ),
                });
            }
            None => url.to_owned(),
        };
        std::fs::create_dir_all(&local).map_err(|source| StoreError::LocalDir {
            path: local.clone(),
            source,
        })?;
        let abs = std::fs::canonicalize(&local).map_err(|source| StoreError::LocalDir {
            path: local.clone(),
            source,
        })?;
        let fs = LocalFileSystem::new_with_prefix(&abs).map_err(|source| StoreError::Backend {
            url: url.to_owned(),
            source,
        })?;
        Ok(Store::new(
            Arc::new(fs),
            Path::default(),
            format!("file://{}", abs.display()),
        ))
    }

    /// Wraps an existing object store; data lives under `prefix`.
    pub fn new(inner: Arc<dyn ObjectStore>, prefix: Path, url: impl Into<String>) -> Store {
        Store {
            inner,
            prefix,
            url: url.into(),
        }
    }

    /// The URL the store was opened with, normalised and without credentials.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The underlying object store.
    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.inner
    }

    /// The prefix under which the data lives.
    pub fn prefix(&self) -> &Path {
        &self.prefix
    }

    /// The object path of `relative` (a `/`-separated path below the prefix).
    pub fn location(&self, relative: &str) -> Path {
        relative
            .split('/')
            .filter(|s| !s.is_empty())
            .fold(self.prefix.clone(), |p, part| p.join(part))
    }

    /// Puts `bytes` at `relative` only if no object is there (audit data is
    /// never overwritten). When one is, returns its bytes, so the caller can
    /// tell a retry of the same object from a conflict.
    pub async fn put_new(
        &self,
        relative: &str,
        bytes: bytes::Bytes,
    ) -> Result<Option<bytes::Bytes>, object_store::Error> {
        let location = self.location(relative);
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self
            .inner
            .put_opts(&location, PutPayload::from_bytes(bytes), opts)
            .await
        {
            Ok(_) => Ok(None),
            Err(object_store::Error::AlreadyExists { .. }) => {
                Ok(Some(self.inner.get(&location).await?.bytes().await?))
            }
            Err(e) => Err(e),
        }
    }

    /// The path of `location` relative to the prefix, if it is below it.
    pub fn relative(&self, location: &Path) -> Option<String> {
        let parts: Vec<_> = location.prefix_match(&self.prefix)?.collect();
        Some(
            parts
                .iter()
                .map(|p| p.as_ref())
                .collect::<Vec<_>>()
                .join("/"),
        )
    }
}

fn open_s3(url: &str, rest: &str, options: &StoreOptions) -> Result<Store, StoreError> {
    let invalid = |reason: String| StoreError::InvalidUrl {
        url: url.to_owned(),
        reason,
    };
    let (path_part, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    let (bucket, prefix) = match path_part.split_once('/') {
        Some((b, p)) => (b, p.trim_matches('/')),
        None => (path_part, ""),
    };
    if bucket.is_empty() {
        return Err(invalid("missing bucket name (s3://bucket/prefix)".into()));
    }
    let mut opts = options.clone();
    if let Some(q) = query {
        for pair in q.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = url::form_urlencoded::parse(format!("v={v}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            match k {
                "endpoint" => opts.endpoint = Some(v),
                "region" => opts.region = Some(v),
                "allow_http" => {
                    opts.allow_http = Some(v.parse().map_err(|_| {
                        invalid(format!("allow_http must be true or false, got {v:?}"))
                    })?)
                }
                other => {
                    return Err(invalid(format!(
                        "unknown URL option {other:?}: expected endpoint, region or allow_http (credentials come from AWS_* variables)"
                    )));
                }
            }
        }
    }
    let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
    if let Some(v) = &opts.endpoint {
        b = b.with_endpoint(v);
    }
    if let Some(v) = &opts.region {
        b = b.with_region(v);
    }
    if let Some(v) = &opts.access_key_id {
        b = b.with_access_key_id(v);
    }
    if let Some(v) = &opts.secret_access_key {
        b = b.with_secret_access_key(v);
    }
    if let Some(v) = &opts.session_token {
        b = b.with_token(v);
    }
    if let Some(v) = opts.allow_http {
        b = b.with_allow_http(v);
    }
    // Set through the config keys rather than with_client_options, which would
    // discard the client settings from_env() read (AWS_ALLOW_HTTP among them).
    b = b.with_config(
        AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
        format!("{}s", opts.connect_timeout_secs.unwrap_or(5)),
    );
    // S3 Object Lock refuses a PUT without an integrity header: send the
    // SHA-256 checksum (x-amz-checksum-sha256) on every write, which also
    // lets the server reject a body damaged in transit.
    b = b.with_checksum_algorithm(object_store::aws::Checksum::SHA256);
    let retry = RetryConfig {
        max_retries: opts.max_retries.unwrap_or(3),
        retry_timeout: Duration::from_secs(opts.retry_timeout_secs.unwrap_or(30)),
        ..RetryConfig::default()
    };
    let s3 = b
        .with_retry(retry)
        .build()
        .map_err(|source| StoreError::Backend {
            url: url.to_owned(),
            source,
        })?;
    let shown = if prefix.is_empty() {
        format!("s3://{bucket}")
    } else {
        format!("s3://{bucket}/{prefix}")
    };
    Ok(Store::new(Arc::new(s3), Path::from(prefix), shown))
}

/// What to do about a store error, when its cause is one an operator can
/// fix and the backend's message does not say how: missing or refused S3
/// credentials, a missing bucket. `None` for anything else.
///
/// Without credentials in the configuration or the `AWS_*` environment,
/// the S3 client asks the EC2 instance metadata service (169.254.169.254)
/// or the ECS credentials endpoint (169.254.170.2) for them; off AWS that
/// fails with a message about a token request to an address the operator
/// never configured.
///
/// ```
/// let e = std::io::Error::other(
///     "Error performing PUT http://169.254.169.254/latest/api/token: 403 Forbidden",
/// );
/// let hint = otel_audit_storage::store_error_hint(&e).unwrap();
/// assert!(hint.contains("AWS_ACCESS_KEY_ID"));
/// ```
pub fn store_error_hint(error: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    let mut cause = Some(error);
    while let Some(e) = cause {
        let text = e.to_string();
        if text.contains("169.254.169.254") || text.contains("169.254.170.2") {
            return Some(
                "no S3 credentials were configured, so they were asked of the AWS instance \
                 metadata service, which did not give any: set AWS_ACCESS_KEY_ID and \
                 AWS_SECRET_ACCESS_KEY (or the collector's storage.s3.access_key_id and secret_access_key), \
                 or run where an instance or task role is available",
            );
        }
        if text.contains("InvalidAccessKeyId") || text.contains("SignatureDoesNotMatch") {
            return Some(
                "the S3 server refused the credentials: check AWS_ACCESS_KEY_ID and \
                 AWS_SECRET_ACCESS_KEY (or the collector's storage.s3.access_key_id and \
                 secret_access_key)",
            );
        }
        if text.contains("NoSuchBucket") {
            return Some("the bucket does not exist: create it, or correct the store URL");
        }
        cause = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_error_hints_follow_the_source_chain() {
        #[derive(Debug, thiserror::Error)]
        #[error("reading p from s3://b/p")]
        struct Outer(#[source] std::io::Error);
        let hint = |inner: &str| store_error_hint(&Outer(std::io::Error::other(inner.to_owned())));
        assert!(
            hint("Error performing PUT http://169.254.169.254/latest/api/token")
                .unwrap()
                .contains("instance metadata")
        );
        assert!(
            hint("Client error with status 403: <Code>InvalidAccessKeyId</Code>")
                .unwrap()
                .contains("refused the credentials")
        );
        assert!(
            hint("<Code>NoSuchBucket</Code>")
                .unwrap()
                .contains("bucket does not exist")
        );
        assert_eq!(hint("connection refused"), None);
    }

    #[test]
    fn rejects_bad_urls() {
        let o = StoreOptions::default();
        for (url, needle) in [
            ("", "empty"),
            ("gs://bucket", "unsupported scheme"),
            ("file://relative", "absolute"),
            ("s3:///prefix", "bucket"),
            ("s3://b/p?password=x", "unknown URL option"),
        ] {
            let err = Store::open(url, &o).unwrap_err().to_string();
            assert!(err.contains(needle), "{url}: {err}");
        }
    }

    #[test]
    fn locations_round_trip() {
        let s = Store::new(Arc::new(InMemory::new()), Path::from("a/b"), "memory://");
        let loc = s.location("tenant=x/date=2026-01-01/hour=00/f.parquet");
        assert_eq!(
            loc.as_ref(),
            "a/b/tenant=x/date=2026-01-01/hour=00/f.parquet"
        );
        assert_eq!(
            s.relative(&loc).unwrap(),
            "tenant=x/date=2026-01-01/hour=00/f.parquet"
        );
    }
}
