//! The hash chain: one per `chain_id`, gapless `seq` from 0.

use chrono::{DateTime, Utc};

use crate::canonical::{GENESIS_HASH, Record, encode_row, row_hash};
use crate::error::ChainError;
use crate::model::AuditEvent;
use crate::validate::{MAX_CHAIN_ID_BYTES, MAX_TENANT_BYTES, check_path_token};

/// The head of one chain: what the next appended row links to.
///
/// One writer owns a chain (the collector names chains after its instance and
/// the tenant), so several writers never race on the same `seq`.
///
/// ```
/// use otel_audit_event::{AuditEvent, Category, Chain};
/// let mut chain = Chain::new("collector-1.acme", "acme").unwrap();
/// let a = chain.append(chrono::Utc::now(), AuditEvent::new("acme", "svc", Category::Admin, "user.create")).unwrap();
/// let b = chain.append(chrono::Utc::now(), AuditEvent::new("acme", "svc", Category::Admin, "user.delete")).unwrap();
/// assert_eq!((a.seq, b.seq), (0, 1));
/// assert_eq!(b.prev_hash, a.hash);
/// ```
#[derive(Debug, Clone)]
pub struct Chain {
    chain_id: String,
    tenant: String,
    next_seq: u64,
    head: [u8; 32],
    scratch: Vec<u8>,
}

/// Checks a chain id: a path token of at most 128 bytes.
pub fn validate_chain_id(chain_id: &str) -> Result<(), ChainError> {
    check_path_token(chain_id, MAX_CHAIN_ID_BYTES).map_err(|reason| ChainError::InvalidChainId {
        chain_id: chain_id.chars().take(160).collect(),
        reason,
    })
}

impl Chain {
    /// A new, empty chain for `tenant`.
    pub fn new(chain_id: impl Into<String>, tenant: impl Into<String>) -> Result<Self, ChainError> {
        Self::resume(chain_id, tenant, 0, GENESIS_HASH)
    }

    /// A chain continuing after a row already written (`next_seq` = its seq + 1,
    /// `head` = its hash), e.g. after a restart.
    pub fn resume(
        chain_id: impl Into<String>,
        tenant: impl Into<String>,
        next_seq: u64,
        head: [u8; 32],
    ) -> Result<Self, ChainError> {
        let chain_id = chain_id.into();
        let tenant = tenant.into();
        validate_chain_id(&chain_id)?;
        check_path_token(&tenant, MAX_TENANT_BYTES).map_err(|reason| {
            ChainError::InvalidTenant {
                tenant: tenant.chars().take(80).collect(),
                reason,
            }
        })?;
        Ok(Chain {
            chain_id,
            tenant,
            next_seq,
            head,
            scratch: Vec::with_capacity(1024),
        })
    }

    /// The chain id.
    pub fn id(&self) -> &str {
        &self.chain_id
    }

    /// The tenant every row of this chain belongs to.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// The seq the next row gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The hash the next row links to.
    pub fn head(&self) -> [u8; 32] {
        self.head
    }

    /// Validates `event`, links it to the head and advances the head.
    pub fn append(
        &mut self,
        received_at: DateTime<Utc>,
        event: AuditEvent,
    ) -> Result<Record, ChainError> {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        let result = self.append_into(received_at, event, &mut scratch);
        self.scratch = scratch;
        result
    }

    /// [`append`](Self::append), also leaving the row's canonical bytes (what
    /// its hash covers) at the end of `out`, for a writer that stores them —
    /// the collector's WAL — so they are encoded once. On error `out` is as
    /// it was.
    pub fn append_into(
        &mut self,
        received_at: DateTime<Utc>,
        event: AuditEvent,
        out: &mut Vec<u8>,
    ) -> Result<Record, ChainError> {
        let link = self.link_into(received_at, &event, out)?;
        Ok(Record {
            received_at,
            event,
            chain_id: self.chain_id.clone(),
            seq: link.seq,
            prev_hash: link.prev_hash,
            hash: link.hash,
        })
    }

    /// [`append_into`](Self::append_into) for a caller that keeps the event
    /// and needs only where the row went: no [`Record`] is built, so the
    /// event (some 800 bytes) is not moved into one, and the chain id is not
    /// copied for it.
    pub fn link_into(
        &mut self,
        received_at: DateTime<Utc>,
        event: &AuditEvent,
        out: &mut Vec<u8>,
    ) -> Result<Link, ChainError> {
        event.validate().map_err(|source| ChainError::Invalid {
            event_id: event.event_id,
            source,
        })?;
        if event.tenant != self.tenant {
            return Err(ChainError::TenantMismatch {
                chain_id: self.chain_id.clone(),
                chain_tenant: self.tenant.clone(),
                event_tenant: event.tenant.clone(),
                event_id: event.event_id,
            });
        }
        if self.next_seq > i64::MAX as u64 {
            return Err(ChainError::SeqOverflow {
                chain_id: self.chain_id.clone(),
            });
        }
        let start = out.len();
        encode_row(event, &received_at, &self.chain_id, self.next_seq, out);
        let link = Link {
            seq: self.next_seq,
            prev_hash: self.head,
            hash: row_hash(&self.head, &out[start..]),
        };
        self.head = link.hash;
        self.next_seq += 1;
        Ok(link)
    }
}

/// Where a row went in its chain ([`Chain::link_into`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    /// Its position in the chain.
    pub seq: u64,
    /// The hash of the row before it.
    pub prev_hash: [u8; 32],
    /// Its own hash, over the canonical bytes it was given.
    pub hash: [u8; 32],
}
