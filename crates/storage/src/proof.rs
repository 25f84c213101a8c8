//! Inclusion proofs: one event, its Merkle path to its file's root, and the
//! signed digest that lists that root — checkable offline, without the store,
//! and without revealing any other event.

use chrono::{DateTime, Utc};
use otel_audit_event::Record;
use otel_audit_event::merkle::{inclusion_path, root_from_path};
use serde::{Deserialize, Serialize};

use crate::digest::{StoredDigest, list_digests};
use crate::error::ReadError;
use crate::keys::{PublicKeys, SignatureCheck};
use crate::reader::{FoundEvent, TimeRange, find_event};
use crate::store::Store;

/// The `format` of proofs this version writes.
pub const PROOF_FORMAT: &str = "otel-audit-proof/v1";

/// Where the event sits in its file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProofFile {
    /// The file's path relative to the store root.
    pub path: String,
    /// The event's row index in the file (its leaf index).
    pub row_index: u64,
    /// Rows in the file (the tree's size).
    pub row_count: u64,
    /// The Merkle root of the file's row hashes.
    #[serde(with = "otel_audit_event::hex32")]
    pub merkle_root: [u8; 32],
}

/// A self-contained proof that one event is in the store as signed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InclusionProof {
    /// Always [`PROOF_FORMAT`].
    pub format: String,
    /// The event's stored row.
    pub record: Record,
    /// Its file.
    pub file: ProofFile,
    /// Sibling hashes from the leaf up (RFC 9162 §2.1.3), hex.
    pub audit_path: Vec<Hash>,
    /// The digest's path in the store.
    pub digest_path: String,
    /// The digest object, as stored.
    pub digest: serde_json::Value,
}

/// A 32-byte hash as 64 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Hash(#[serde(with = "otel_audit_event::hex32")] pub [u8; 32]);

/// Why a proof could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ProveError {
    /// The store could not be read.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// No stored row has this event id.
    #[error("no event {event_id} in {url}{range}")]
    NotFound {
        /// The id looked for.
        event_id: uuid::Uuid,
        /// The store.
        url: String,
        /// The range searched, if limited.
        range: String,
    },
    /// The event's file is not listed in any digest (yet).
    #[error(
        "{path} holds the event but no digest lists it yet: digests are made every period and at shutdown; try again after the next one"
    )]
    NotDigested {
        /// The file.
        path: String,
    },
}

/// Finds `event_id` in the store (within `range`) and builds its proof.
pub async fn prove(
    store: &Store,
    event_id: uuid::Uuid,
    range: &TimeRange,
) -> Result<InclusionProof, ProveError> {
    let Some(FoundEvent {
        file,
        index,
        records,
    }) = find_event(store, event_id, range).await?
    else {
        return Err(ProveError::NotFound {
            event_id,
            url: store.url().to_owned(),
            range: range.describe(),
        });
    };
    let hashes: Vec<[u8; 32]> = records.iter().map(|r| r.hash).collect();
    let path = inclusion_path(&hashes, index).expect("the index is in range");
    let root = otel_audit_event::merkle::merkle_root(&hashes);
    let digest = find_digest(store, &file.file.chain_id, &file.path, root).await?;
    let Some((digest, value)) = digest else {
        return Err(ProveError::NotDigested { path: file.path });
    };
    Ok(InclusionProof {
        format: PROOF_FORMAT.to_owned(),
        record: records[index].clone(),
        file: ProofFile {
            path: file.path,
            row_index: index as u64,
            row_count: records.len() as u64,
            merkle_root: root,
        },
        audit_path: path.into_iter().map(Hash).collect(),
        digest_path: digest.path,
        digest: value,
    })
}

/// The chain's digest that lists `path` with `root`.
async fn find_digest(
    store: &Store,
    chain_id: &str,
    path: &str,
    root: [u8; 32],
) -> Result<Option<(StoredDigest, serde_json::Value)>, ReadError> {
    let listing = list_digests(store).await?;
    let Some(digests) = listing.chains.get(chain_id) else {
        return Ok(None);
    };
    // A file is listed by the digest of the period it was stored in: at or
    // after its hour. Read in order; stop at the first that lists it.
    let hour_start: Option<DateTime<Utc>> = crate::layout::DataFile::parse(path)
        .ok()
        .map(|f| f.partition.start());
    for d in digests {
        if hour_start.is_some_and(|h| d.period_end < h) {
            continue;
        }
        // The object as stored goes into the proof: its signature covers
        // its values, whatever the writer's formatting.
        let bytes = crate::reader::fetch(store, &d.path).await?;
        let Ok(stored) = StoredDigest::parse(&d.path, &bytes) else {
            continue;
        };
        if stored
            .digest
            .files
            .iter()
            .any(|f| f.path == path && f.merkle_root == root)
        {
            let value = serde_json::from_slice(&bytes).expect("parsed above");
            return Ok(Some((stored, value)));
        }
    }
    Ok(None)
}

/// Why a proof does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofInvalid {
    /// Not a proof of this format.
    #[error("not an otel-audit proof: {0}")]
    Format(String),
    /// The event's content does not give its stored hash.
    #[error("the event's content does not match its hash: the event was altered")]
    EventHash,
    /// The Merkle path does not lead from the event to the file's root.
    #[error("the Merkle path does not lead from the event's hash to the file's root")]
    MerklePath,
    /// The digest does not list the file with this root, row count and chain.
    #[error("the digest does not list {path} with this Merkle root, row count and chain")]
    NotInDigest {
        /// The file.
        path: String,
    },
    /// The digest is not a valid digest.
    #[error("the digest is invalid: {0}")]
    Digest(String),
    /// The digest's signature is not valid.
    #[error("the digest's signature is not key {key_id}'s over its content")]
    Signature {
        /// The key the digest names.
        key_id: String,
    },
    /// The digest was signed by a key that is not trusted.
    #[error("the digest is signed by key {key_id}, which is not among the trusted keys")]
    UnknownKey {
        /// The key the digest names.
        key_id: String,
    },
}

/// What a valid proof shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProofSummary {
    /// The event.
    pub event_id: uuid::Uuid,
    /// Its chain.
    pub chain_id: String,
    /// Its seq.
    pub seq: u64,
    /// Its file.
    pub path: String,
    /// The digest listing the file.
    pub digest_path: String,
    /// The key that signed the digest.
    pub key_id: String,
    /// The digest's period end.
    pub period_end: DateTime<Utc>,
}

/// Checks a proof offline against the trusted keys.
pub fn verify_proof(
    proof: &InclusionProof,
    keys: &PublicKeys,
) -> Result<ProofSummary, ProofInvalid> {
    if proof.format != PROOF_FORMAT {
        return Err(ProofInvalid::Format(format!(
            "format {:?}, expected {PROOF_FORMAT:?}",
            proof.format
        )));
    }
    let r = &proof.record;
    if r.compute_hash(&mut Vec::new()) != r.hash {
        return Err(ProofInvalid::EventHash);
    }
    let path: Vec<[u8; 32]> = proof.audit_path.iter().map(|h| h.0).collect();
    let f = &proof.file;
    if root_from_path(&r.hash, f.row_index, f.row_count, &path) != Some(f.merkle_root) {
        return Err(ProofInvalid::MerklePath);
    }
    let bytes = serde_json::to_vec(&proof.digest).expect("a JSON value always serialises");
    let digest = StoredDigest::parse(&proof.digest_path, &bytes)
        .map_err(|e| ProofInvalid::Digest(e.reason))?;
    let d = &digest.digest;
    let listed = d.chain_id == r.chain_id
        && d.files.iter().any(|e| {
            e.path == f.path
                && e.merkle_root == f.merkle_root
                && e.row_count == f.row_count
                && e.first_seq + f.row_index == r.seq
        });
    if !listed {
        return Err(ProofInvalid::NotInDigest {
            path: f.path.clone(),
        });
    }
    match digest.check_signature(keys) {
        SignatureCheck::Valid => {}
        SignatureCheck::Invalid => {
            return Err(ProofInvalid::Signature {
                key_id: d.key_id.clone(),
            });
        }
        SignatureCheck::UnknownKey => {
            return Err(ProofInvalid::UnknownKey {
                key_id: d.key_id.clone(),
            });
        }
    }
    Ok(ProofSummary {
        event_id: r.event.event_id,
        chain_id: r.chain_id.clone(),
        seq: r.seq,
        path: f.path.clone(),
        digest_path: proof.digest_path.clone(),
        key_id: d.key_id.clone(),
        period_end: d.period_end,
    })
}
