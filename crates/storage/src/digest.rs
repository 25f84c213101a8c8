//! Signed digests: per chain and period, the files stored, their SHA-256,
//! and a link to the previous digest, signed with Ed25519 — as AWS
//! CloudTrail's digest files, so that deleting the newest files, rows or
//! digests shows, which a bare hash chain cannot.
//!
//! A digest is a JSON object stored at
//! `_digests/tenant=<t>/chain=<chain>/<digest_seq:020>-<period_end>.json`.
//! Its signature covers `SIGNATURE_DOMAIN || canonical JSON of the object
//! without "signature"` (keys sorted, no whitespace); `docs/FORMAT.md` §7
//! gives the rules precisely.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::error::{ReadError, SinkError};
use crate::keys::{DigestSigner, PublicKeys, SignatureCheck};
use crate::store::Store;
use crate::writer::{EncodedFile, FooterMeta, WriteOutcome};

/// The top-level directory of digests (names starting with `_` are not data).
pub const DIGESTS_DIR: &str = "_digests";

/// The `format` of every digest this version writes.
pub const DIGEST_FORMAT: &str = "otel-audit-digest/v1";

/// Prefixed to the canonical JSON before signing, so a digest signature can
/// never be taken for a signature over anything else.
pub const SIGNATURE_DOMAIN: &[u8] = b"otel-audit/digest/v1\n";

/// The default period: one hour.
pub const DEFAULT_PERIOD_SECS: u64 = 3600;

/// One data file as a digest records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DigestFile {
    /// Path relative to the store root.
    pub path: String,
    /// SHA-256 of the file's bytes.
    #[serde(with = "otel_audit_event::hex32")]
    pub sha256: [u8; 32],
    /// Size in bytes.
    pub bytes: u64,
    /// Rows in the file.
    pub row_count: u64,
    /// Seq of its first row.
    pub first_seq: u64,
    /// Seq of its last row.
    pub last_seq: u64,
    /// `prev_hash` of its first row.
    #[serde(with = "otel_audit_event::hex32")]
    pub prev_hash: [u8; 32],
    /// `hash` of its last row.
    #[serde(with = "otel_audit_event::hex32")]
    pub last_hash: [u8; 32],
    /// Merkle root of its row hashes.
    #[serde(with = "otel_audit_event::hex32")]
    pub merkle_root: [u8; 32],
}

impl DigestFile {
    /// The entry of a file with these bytes and footer, stored at `path`.
    pub fn new(path: String, bytes: &[u8], footer: &FooterMeta) -> DigestFile {
        DigestFile {
            path,
            sha256: Sha256::digest(bytes).into(),
            bytes: bytes.len() as u64,
            row_count: footer.row_count,
            first_seq: footer.first_seq,
            last_seq: footer.last_seq,
            prev_hash: footer.prev_hash,
            last_hash: footer.last_hash,
            merkle_root: footer.merkle_root,
        }
    }

    /// The entry of an encoded file.
    pub fn of(file: &EncodedFile) -> DigestFile {
        DigestFile::new(file.file.path(), &file.bytes, &file.footer)
    }
}

/// The newest row a digest covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DigestHead {
    /// Its seq.
    pub seq: u64,
    /// Its hash.
    #[serde(with = "otel_audit_event::hex32")]
    pub hash: [u8; 32],
}

/// The link to the digest before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreviousDigest {
    /// Its path.
    pub path: String,
    /// SHA-256 of its bytes as stored.
    #[serde(with = "otel_audit_event::hex32")]
    pub sha256: [u8; 32],
    /// Its signature (hex).
    pub signature: String,
}

/// A digest: what one chain stored in one period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Digest {
    /// Always [`DIGEST_FORMAT`].
    pub format: String,
    /// The chain.
    pub chain_id: String,
    /// The chain's tenant.
    pub tenant: String,
    /// Position in the chain's digests, from 0, without gaps.
    pub digest_seq: u64,
    /// Start of the period (the previous digest's end).
    #[serde(with = "rfc3339_micros")]
    pub period_start: DateTime<Utc>,
    /// End of the period: when the digest was made.
    #[serde(with = "rfc3339_micros")]
    pub period_end: DateTime<Utc>,
    /// The writer's configured period, so a verifier knows when the next
    /// digest was due.
    pub period_secs: u64,
    /// Written at shutdown: no digest is due after it until the chain's
    /// writer starts again.
    #[serde(rename = "final")]
    pub is_final: bool,
    /// The files stored in the period, by first seq.
    pub files: Vec<DigestFile>,
    /// The chain's newest stored row at the end of the period (also when no
    /// file was stored in it); `null` before the chain's first file.
    pub head: Option<DigestHead>,
    /// The digest before, `null` for the chain's first.
    pub previous: Option<PreviousDigest>,
    /// Id of the key that signed it.
    pub key_id: String,
    /// Ed25519 signature (hex, 64 bytes) over [`SIGNATURE_DOMAIN`] and the
    /// canonical JSON of every other field.
    pub signature: String,
}

mod rfc3339_micros {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(v: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_time(*v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|t| t.with_timezone(&Utc))
            .map_err(D::Error::custom)
    }
}

/// Appends the canonical JSON of `v`: object keys sorted (by their UTF-8
/// bytes), no whitespace, strings escaped as JSON requires and nothing
/// more. Python's `json.dumps(v, sort_keys=True, separators=(",", ":"),
/// ensure_ascii=False)` gives the same bytes for the values digests hold.
pub fn canonical_json(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, k).expect("writing to a Vec cannot fail");
                out.push(b':');
                canonical_json(v, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical_json(v, out);
            }
            out.push(b']');
        }
        other => serde_json::to_writer(&mut *out, other).expect("writing to a Vec cannot fail"),
    }
}

/// The bytes a digest's signature covers: [`SIGNATURE_DOMAIN`], then the
/// canonical JSON of the digest object without its `signature` member.
pub fn signing_message(digest: &Value) -> Vec<u8> {
    let mut out = SIGNATURE_DOMAIN.to_vec();
    match digest {
        Value::Object(map) => {
            let mut m = map.clone();
            m.remove("signature");
            canonical_json(&Value::Object(m), &mut out);
        }
        other => canonical_json(other, &mut out),
    }
    out
}

/// Why a digest object is not a valid digest.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct DigestParseError {
    /// The object.
    pub path: String,
    /// What is wrong.
    pub reason: String,
}

/// A digest read from the store, with what is needed to check it.
#[derive(Debug, Clone)]
pub struct StoredDigest {
    /// Its path relative to the store root.
    pub path: String,
    /// The digest.
    pub digest: Digest,
    /// SHA-256 of its bytes.
    pub sha256: [u8; 32],
    /// The message its signature covers.
    pub message: Vec<u8>,
    /// The signature's bytes (empty when not 64 bytes of hex).
    pub signature: Vec<u8>,
}

impl StoredDigest {
    /// Parses a digest object's bytes.
    pub fn parse(path: &str, bytes: &[u8]) -> Result<StoredDigest, DigestParseError> {
        let bad = |reason: String| DigestParseError {
            path: path.to_owned(),
            reason,
        };
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
        if value.get("format").and_then(Value::as_str) != Some(DIGEST_FORMAT) {
            return Err(bad(format!(
                "format is {}, this verifier reads {DIGEST_FORMAT:?}",
                value
                    .get("format")
                    .map_or("missing".into(), Value::to_string)
            )));
        }
        let digest: Digest =
            serde_json::from_value(value.clone()).map_err(|e| bad(format!("not a digest: {e}")))?;
        let signature = hex::decode(&digest.signature)
            .ok()
            .filter(|s| s.len() == 64)
            .unwrap_or_default();
        Ok(StoredDigest {
            path: path.to_owned(),
            message: signing_message(&value),
            sha256: Sha256::digest(bytes).into(),
            digest,
            signature,
        })
    }

    /// Checks the signature against the trusted keys.
    pub fn check_signature(&self, keys: &PublicKeys) -> SignatureCheck {
        if self.signature.is_empty() {
            return SignatureCheck::Invalid;
        }
        keys.check(&self.digest.key_id, &self.message, &self.signature)
    }

    /// The link a following digest carries to this one.
    pub fn as_previous(&self) -> PreviousDigest {
        PreviousDigest {
            path: self.path.clone(),
            sha256: self.sha256,
            signature: self.digest.signature.clone(),
        }
    }
}

/// The directory of a chain's digests, relative to the store root.
pub fn digest_dir(tenant: &str, chain_id: &str) -> String {
    format!("{DIGESTS_DIR}/tenant={tenant}/chain={chain_id}")
}

/// The path of a digest, relative to the store root: names sort by seq.
pub fn digest_path(tenant: &str, chain_id: &str, digest_seq: u64, end: DateTime<Utc>) -> String {
    format!(
        "{}/{digest_seq:020}-{}.json",
        digest_dir(tenant, chain_id),
        end.format("%Y%m%dT%H%M%SZ")
    )
}

/// A digest's seq and period end, from its file name.
pub fn parse_digest_name(name: &str) -> Option<(u64, DateTime<Utc>)> {
    let stem = name.strip_suffix(".json")?;
    let (seq, end) = stem.split_once('-')?;
    if seq.len() != 20 {
        return None;
    }
    let seq = seq.parse().ok()?;
    let end = chrono::NaiveDateTime::parse_from_str(end, "%Y%m%dT%H%M%SZ").ok()?;
    Some((seq, end.and_utc()))
}

/// A digest signed and serialised, ready to put.
#[derive(Debug, Clone)]
pub struct SealedDigest {
    /// Where it goes.
    pub path: String,
    /// The object's bytes (pretty JSON).
    pub bytes: bytes::Bytes,
    /// The digest.
    pub digest: Digest,
}

impl SealedDigest {
    /// The link a following digest carries to this one.
    pub fn as_previous(&self) -> PreviousDigest {
        PreviousDigest {
            path: self.path.clone(),
            sha256: Sha256::digest(&self.bytes).into(),
            signature: self.digest.signature.clone(),
        }
    }
}

/// Signs `digest` (its `key_id` and `signature` are set here).
pub fn seal(mut digest: Digest, signer: &DigestSigner) -> SealedDigest {
    digest.key_id = signer.key_id().to_owned();
    digest.signature = String::new();
    let value = serde_json::to_value(&digest).expect("a digest always serialises");
    digest.signature = hex::encode(signer.sign(&signing_message(&value)));
    let mut bytes = serde_json::to_vec_pretty(&digest).expect("a digest always serialises");
    bytes.push(b'\n');
    SealedDigest {
        path: digest_path(
            &digest.tenant,
            &digest.chain_id,
            digest.digest_seq,
            digest.period_end,
        ),
        bytes: bytes.into(),
        digest,
    }
}

/// One chain's digest state as its writer keeps it: the files stored since
/// the last digest, and the link to it.
#[derive(Debug, Clone)]
pub struct DigestChain {
    chain_id: String,
    tenant: String,
    period_secs: u64,
    next_seq: u64,
    period_start: DateTime<Utc>,
    previous: Option<PreviousDigest>,
    /// The newest row of the newest file recorded (pending or digested).
    head: Option<DigestHead>,
    files: Vec<DigestFile>,
}

impl DigestChain {
    /// A chain with no digest yet, whose first period starts at `start`.
    pub fn new(chain_id: &str, tenant: &str, period_secs: u64, start: DateTime<Utc>) -> Self {
        DigestChain {
            chain_id: chain_id.to_owned(),
            tenant: tenant.to_owned(),
            period_secs,
            next_seq: 0,
            period_start: start,
            previous: None,
            head: None,
            files: Vec::new(),
        }
    }

    /// A chain continuing after its newest stored digest.
    pub fn after(last: &StoredDigest, period_secs: u64) -> Self {
        let d = &last.digest;
        DigestChain {
            chain_id: d.chain_id.clone(),
            tenant: d.tenant.clone(),
            period_secs,
            next_seq: d.digest_seq + 1,
            period_start: d.period_end,
            previous: Some(last.as_previous()),
            head: d.head,
            files: Vec::new(),
        }
    }

    /// A chain continuing after a digest known only by its listing (its
    /// object could not be parsed): the next digest links to its bytes.
    pub fn after_unreadable(listed: &ListedDigest, sha256: [u8; 32], period_secs: u64) -> Self {
        DigestChain {
            chain_id: listed.chain_id.clone(),
            tenant: listed.tenant.clone(),
            period_secs,
            next_seq: listed.digest_seq + 1,
            period_start: listed.period_end,
            previous: Some(PreviousDigest {
                path: listed.path.clone(),
                sha256,
                signature: String::new(),
            }),
            head: None,
            files: Vec::new(),
        }
    }

    /// The chain.
    pub fn chain_id(&self) -> &str {
        &self.chain_id
    }

    /// The tenant.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// When the current period started.
    pub fn period_start(&self) -> DateTime<Utc> {
        self.period_start
    }

    /// Files recorded since the last digest.
    pub fn pending_files(&self) -> usize {
        self.files.len()
    }

    /// The newest row recorded.
    pub fn head(&self) -> Option<DigestHead> {
        self.head
    }

    /// Records a stored file for the next digest. A file whose rows an
    /// earlier entry already covers (a retried put, a file found again after
    /// a restart) is skipped: returns whether it was recorded.
    pub fn add_file(&mut self, file: DigestFile) -> bool {
        if self.head.is_some_and(|h| file.last_seq <= h.seq) {
            return false;
        }
        self.head = Some(DigestHead {
            seq: file.last_seq,
            hash: file.last_hash,
        });
        self.files.push(file);
        true
    }

    /// Closes the period at `end` and signs its digest; the next period
    /// starts at `end`.
    pub fn seal(
        &mut self,
        end: DateTime<Utc>,
        is_final: bool,
        signer: &DigestSigner,
    ) -> SealedDigest {
        let end = end.max(self.period_start);
        let sealed = seal(
            Digest {
                format: DIGEST_FORMAT.to_owned(),
                chain_id: self.chain_id.clone(),
                tenant: self.tenant.clone(),
                digest_seq: self.next_seq,
                period_start: self.period_start,
                period_end: end,
                period_secs: self.period_secs,
                is_final,
                files: std::mem::take(&mut self.files),
                head: self.head,
                previous: self.previous.take(),
                key_id: String::new(),
                signature: String::new(),
            },
            signer,
        );
        self.next_seq += 1;
        self.period_start = end;
        self.previous = Some(sealed.as_previous());
        sealed
    }
}

/// The end of the period that contains `t`, for periods aligned to the Unix
/// epoch (so hourly periods end on the hour).
pub fn period_boundary_after(t: DateTime<Utc>, period_secs: u64) -> DateTime<Utc> {
    let p = period_secs.max(1) as i64;
    let secs = t.timestamp().div_euclid(p) * p + p;
    DateTime::from_timestamp(secs, 0).unwrap_or(t)
}

/// Puts a digest create-only: an identical object already there (a retry)
/// is `AlreadyPresent`; a different one is [`SinkError::Conflict`].
pub async fn put_digest(store: &Store, sealed: &SealedDigest) -> Result<WriteOutcome, SinkError> {
    match store.put_new(&sealed.path, sealed.bytes.clone()).await {
        Ok(None) => Ok(WriteOutcome::Written),
        Ok(Some(existing)) if existing == sealed.bytes => Ok(WriteOutcome::AlreadyPresent),
        Ok(Some(_)) => Err(SinkError::Conflict {
            path: sealed.path.clone(),
            reason: "another digest has this name".into(),
        }),
        Err(source) => Err(SinkError::Store {
            path: sealed.path.clone(),
            source,
        }),
    }
}

/// A digest object found by [`list_digests`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedDigest {
    /// Path relative to the store root.
    pub path: String,
    /// The tenant from the path.
    pub tenant: String,
    /// The chain from the path.
    pub chain_id: String,
    /// The digest seq from the name.
    pub digest_seq: u64,
    /// The period end from the name (whole seconds).
    pub period_end: DateTime<Utc>,
}

/// What [`list_digests`] found.
#[derive(Debug, Clone, Default)]
pub struct DigestListing {
    /// Digests by chain, in digest seq order.
    pub chains: BTreeMap<String, Vec<ListedDigest>>,
    /// Objects under `_digests/` that are not digests of this layout.
    pub unexpected: Vec<String>,
}

/// Lists every digest in the store (one recursive listing of `_digests/`).
pub async fn list_digests(store: &Store) -> Result<DigestListing, ReadError> {
    let dir = store.location(DIGESTS_DIR);
    let objects: Vec<object_store::ObjectMeta> = store
        .object_store()
        .list(Some(&dir))
        .try_collect()
        .await
        .map_err(|source| ReadError::Store {
            url: store.url().to_owned(),
            path: DIGESTS_DIR.to_owned(),
            source,
        })?;
    let mut out = DigestListing::default();
    for o in objects {
        let Some(rel) = store.relative(&o.location) else {
            continue;
        };
        match parse_listed(&rel) {
            Some(d) => out.chains.entry(d.chain_id.clone()).or_default().push(d),
            None => out.unexpected.push(rel),
        }
    }
    for v in out.chains.values_mut() {
        v.sort_by(|a, b| (a.digest_seq, &a.path).cmp(&(b.digest_seq, &b.path)));
    }
    out.unexpected.sort();
    Ok(out)
}

fn parse_listed(rel: &str) -> Option<ListedDigest> {
    let mut parts = rel.split('/');
    if parts.next()? != DIGESTS_DIR {
        return None;
    }
    let tenant = parts.next()?.strip_prefix("tenant=")?;
    let chain = parts.next()?.strip_prefix("chain=")?;
    let name = parts.next()?;
    if parts.next().is_some() {
        return None;
    }
    let (digest_seq, period_end) = parse_digest_name(name)?;
    Some(ListedDigest {
        path: rel.to_owned(),
        tenant: tenant.to_owned(),
        chain_id: chain.to_owned(),
        digest_seq,
        period_end,
    })
}

/// Reads and parses one digest.
pub async fn read_digest(
    store: &Store,
    path: &str,
) -> Result<Result<StoredDigest, DigestParseError>, ReadError> {
    let bytes = crate::reader::fetch(store, path).await?;
    Ok(StoredDigest::parse(path, &bytes))
}

/// The newest digest of a chain, if it has one.
pub async fn latest_digest(
    store: &Store,
    tenant: &str,
    chain_id: &str,
) -> Result<Option<Result<StoredDigest, DigestParseError>>, ReadError> {
    let dir = store.location(&digest_dir(tenant, chain_id));
    let r = store
        .object_store()
        .list_with_delimiter(Some(&dir))
        .await
        .map_err(|source| ReadError::Store {
            url: store.url().to_owned(),
            path: digest_dir(tenant, chain_id),
            source,
        })?;
    let newest = r
        .objects
        .iter()
        .filter_map(|o| store.relative(&o.location))
        .filter_map(|rel| parse_listed(&rel))
        .max_by(|a, b| (a.digest_seq, &a.path).cmp(&(b.digest_seq, &b.path)));
    match newest {
        Some(d) => Ok(Some(read_digest(store, &d.path).await?)),
        None => Ok(None),
    }
}

/// Formats a time as digests do.
pub fn format_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(first: u64, last: u64) -> DigestFile {
        DigestFile {
            path: format!("tenant=a/date=2026-01-01/hour=00/c-{first:020}.parquet"),
            sha256: [first as u8; 32],
            bytes: 100,
            row_count: last - first + 1,
            first_seq: first,
            last_seq: last,
            prev_hash: [1; 32],
            last_hash: [last as u8; 32],
            merkle_root: [3; 32],
        }
    }

    #[test]
    fn sealed_digests_verify_and_link() {
        let signer = DigestSigner::generate().unwrap();
        let mut keys = PublicKeys::new();
        keys.insert(signer.public_key());
        let t0 = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut chain = DigestChain::new("c1.a", "a", 3600, t0);
        assert!(chain.add_file(file(0, 9)));
        assert!(
            !chain.add_file(file(0, 9)),
            "a retried put is not listed twice"
        );
        let d0 = chain.seal(t0 + chrono::Duration::hours(1), false, &signer);
        let d1 = chain.seal(t0 + chrono::Duration::hours(2), true, &signer);
        let p0 = StoredDigest::parse(&d0.path, &d0.bytes).unwrap();
        let p1 = StoredDigest::parse(&d1.path, &d1.bytes).unwrap();
        assert_eq!(p0.check_signature(&keys), SignatureCheck::Valid);
        assert_eq!(p1.check_signature(&keys), SignatureCheck::Valid);
        assert_eq!(p1.digest.previous, Some(p0.as_previous()));
        assert_eq!(p1.digest.files.len(), 0);
        assert_eq!(p1.digest.head, p0.digest.head);
        assert_eq!(
            parse_digest_name(d1.path.rsplit('/').next().unwrap()),
            Some((1, t0 + chrono::Duration::hours(2)))
        );
        // Any change to the signed content breaks the signature.
        let text = String::from_utf8(d0.bytes.to_vec()).unwrap();
        let forged = text.replace("\"row_count\": 10", "\"row_count\": 9");
        assert_ne!(forged, text);
        let p = StoredDigest::parse(&d0.path, forged.as_bytes()).unwrap();
        assert_eq!(p.check_signature(&keys), SignatureCheck::Invalid);
        // Re-formatting the JSON does not.
        let compact =
            serde_json::to_vec(&serde_json::from_slice::<Value>(&d0.bytes).unwrap()).unwrap();
        let p = StoredDigest::parse(&d0.path, &compact).unwrap();
        assert_eq!(p.check_signature(&keys), SignatureCheck::Valid);
    }

    #[test]
    fn canonical_json_sorts_and_escapes() {
        let v: Value = serde_json::from_str(r#"{"b":[1,{"z":null,"a":"x\ny"}],"a":true}"#).unwrap();
        let mut out = Vec::new();
        canonical_json(&v, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"a":true,"b":[1,{"a":"x\ny","z":null}]}"#
        );
    }

    #[test]
    fn boundaries_are_epoch_aligned() {
        let t = DateTime::parse_from_rfc3339("2026-01-01T10:17:03Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            format_time(period_boundary_after(t, 3600)),
            "2026-01-01T11:00:00.000000Z"
        );
    }
}
