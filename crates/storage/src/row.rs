//! Rows as the writer takes them: [`Record`]s, or [`CanonicalRow`]s, rows
//! held as their canonical bytes.

use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use otel_audit_event::{CanonicalReader, DecodeCanonicalError, Record, chain_and_seq};

use crate::batch::BatchBuilder;

/// A chained row, as the writer ([`FileEncoder`](crate::FileEncoder),
/// [`Partition`](crate::Partition)) needs it: what names and links its file,
/// and its columns.
pub trait StoredRow {
    /// The chain the row belongs to.
    fn chain_id(&self) -> &str;
    /// Its position in the chain.
    fn seq(&self) -> u64;
    /// The hash of the row before it.
    fn prev_hash(&self) -> &[u8; 32];
    /// Its own hash.
    fn hash(&self) -> &[u8; 32];
    /// The event's tenant.
    fn tenant(&self) -> &str;
    /// Whether the row is of chain `id` (`chain_id() == id`, which a row
    /// held as bytes answers without reading its id as text: the writer and
    /// the collector's sink ask for every row).
    fn is_of_chain(&self, id: &str) -> bool {
        self.chain_id() == id
    }
    /// Whether the row's tenant is `tenant` (see
    /// [`is_of_chain`](Self::is_of_chain)).
    fn is_of_tenant(&self, tenant: &str) -> bool {
        self.tenant() == tenant
    }
    /// The tag of the chain the row was made with, if any (see
    /// [`ChainTag`]): rows with equal tags are of the same chain and tenant.
    fn chain_tag(&self) -> Option<ChainTag> {
        None
    }
    /// Whether the row carries `tag` (never when `tag` is `None`): then it
    /// is of the chain and tenant every row with that tag is of.
    fn has_tag(&self, tag: Option<ChainTag>) -> bool {
        tag.is_some() && self.chain_tag() == tag
    }
    /// When the collector received it (decides the partition).
    fn received_at(&self) -> DateTime<Utc>;
    /// Appends the row's columns to `b`.
    fn append_to(&self, b: &mut BatchBuilder) -> Result<(), arrow_schema::ArrowError>;
}

impl StoredRow for Record {
    fn chain_id(&self) -> &str {
        &self.chain_id
    }
    fn seq(&self) -> u64 {
        self.seq
    }
    fn prev_hash(&self) -> &[u8; 32] {
        &self.prev_hash
    }
    fn hash(&self) -> &[u8; 32] {
        &self.hash
    }
    fn tenant(&self) -> &str {
        &self.event.tenant
    }
    fn received_at(&self) -> DateTime<Utc> {
        self.received_at
    }
    fn append_to(&self, b: &mut BatchBuilder) -> Result<(), arrow_schema::ArrowError> {
        b.push_record(self)
    }
}

/// A chained row held as its canonical bytes (the bytes its hash covers, as
/// the collector's WAL holds them), with its stored `prev_hash` and `hash`.
///
/// 144 bytes beside the shared bytes, against about 1 KB and some 25
/// separate allocations for a [`Record`]: the collector's sink holds and
/// writes rows in this form, straight from the buffer they were chained
/// and made durable in ([`BatchBuilder::push_canonical`]), and never builds
/// an [`AuditEvent`](otel_audit_event::AuditEvent) for them.
///
/// ```
/// use otel_audit_event::{AuditEvent, Category, Chain};
/// use otel_audit_storage::{CanonicalRow, StoredRow};
/// let mut chain = Chain::new("c1.acme", "acme").unwrap();
/// let event = AuditEvent::new("acme", "svc", Category::Admin, "user.create");
/// let record = chain.append(chrono::Utc::now(), event).unwrap();
/// let row = CanonicalRow::from_record(&record);
/// assert_eq!((row.chain_id(), row.seq(), row.tenant()), ("c1.acme", 0, "acme"));
/// // Decoded as stored: the times at microsecond precision.
/// assert_eq!(row.to_record().unwrap().hash, record.hash);
/// ```
#[derive(Clone)]
pub struct CanonicalRow {
    canonical: Bytes,
    /// The tag of the chain id it was made with, if any (see [`ChainTag`]).
    tag: Option<ChainTag>,
    prev_hash: [u8; 32],
    hash: [u8; 32],
    seq: u64,
    received_at: DateTime<Utc>,
    /// Where the tenant's and the chain id's texts are in `canonical`.
    tenant: (u32, u32),
    chain_id: (u32, u32),
}

/// Rows are equal when their bytes and hashes are (the other fields are
/// read from the bytes): a row made with a tag equals the same row read
/// back from the WAL without one.
impl PartialEq for CanonicalRow {
    fn eq(&self, other: &Self) -> bool {
        self.canonical == other.canonical
            && self.prev_hash == other.prev_hash
            && self.hash == other.hash
    }
}

impl Eq for CanonicalRow {}

impl std::fmt::Debug for CanonicalRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CanonicalRow")
            .field("chain_id", &self.chain_id())
            .field("seq", &self.seq)
            .field("bytes", &self.canonical.len())
            .finish_non_exhaustive()
    }
}

/// A number that stands for one chain, its id and tenant, in this process,
/// carried by the rows made with a [`TaggedChain`]. Code that follows many
/// rows (the collector's sink, [`FileEncoder`](crate::FileEncoder)) tells
/// their chain and tenant by tag instead of reading them from each row's
/// bytes: the first read of a row is a cache miss when its bytes were
/// written on another core, and cheaper where the columns read the row in
/// order than where the tenant or the id alone is read.
///
/// Equal tags mean equal chain ids and tenants: a tag is made only with its
/// [`TaggedChain`], never again, and given to a row only once its bytes are
/// checked to hold that chain id and tenant. Different tags mean nothing
/// (one chain may have several); compare the texts then.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChainTag(NonZeroU64);

/// A chain id, its tenant, and the [`ChainTag`] made for them.
#[derive(Debug, Clone, Copy)]
pub struct TaggedChain<'a> {
    id: &'a str,
    tenant: &'a str,
    tag: ChainTag,
}

impl<'a> TaggedChain<'a> {
    /// Chain `id` of `tenant` with a new tag, unlike that of any other
    /// `TaggedChain` made in this process.
    pub fn new(id: &'a str, tenant: &'a str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        TaggedChain {
            id,
            tenant,
            tag: ChainTag(NonZeroU64::new(n).expect("2^64 tags are never made")),
        }
    }

    /// The chain id.
    pub fn id(&self) -> &'a str {
        self.id
    }

    /// The tenant.
    pub fn tenant(&self) -> &'a str {
        self.tenant
    }

    /// Its tag.
    pub fn tag(&self) -> ChainTag {
        self.tag
    }
}

/// The range of `part`, a slice of `whole`, within it.
fn range_in(whole: &[u8], part: &[u8]) -> (u32, u32) {
    let start = part.as_ptr() as usize - whole.as_ptr() as usize;
    // Canonical bytes are bounded far below 4 GiB by validation.
    (start as u32, (start + part.len()) as u32)
}

/// Where `chain_id` is in `canonical`, which must end with it and `seq` as
/// the encoding writes them (`1 | len u32 | chain_id | 1 | seq i64`).
fn chain_range(
    canonical: &[u8],
    chain_id: &str,
    seq: u64,
) -> Result<(u32, u32), DecodeCanonicalError> {
    let id = chain_id.as_bytes();
    let found = canonical.split_last_chunk::<9>().and_then(|(rest, tail)| {
        let start = rest.len().checked_sub(id.len())?;
        let head = rest[..start].last_chunk::<5>()?;
        let ok = tail[0] == 1
            && tail[1..] == (seq as i64).to_be_bytes()
            && head[0] == 1
            && head[1..] == u32::try_from(id.len()).ok()?.to_be_bytes()
            && rest[start..] == *id;
        ok.then_some((start as u32, rest.len() as u32))
    });
    found.ok_or(DecodeCanonicalError::Invalid {
        field: "chain_id",
        offset: canonical.len().saturating_sub(9 + id.len()),
        reason: "the bytes do not end with the row's chain id and seq",
    })
}

impl CanonicalRow {
    /// The row whose canonical bytes are `canonical`, reading the few fields
    /// the writer needs (tenant, receive time, chain and seq); the rest is
    /// read only when the row is written. The hash is not checked (compare
    /// with [`row_hash`](otel_audit_event::row_hash) first when the bytes
    /// come from outside).
    pub fn new(
        canonical: Bytes,
        prev_hash: [u8; 32],
        hash: [u8; 32],
    ) -> Result<Self, DecodeCanonicalError> {
        let (chain_id, seq) = match chain_and_seq(&canonical) {
            Some((id, seq)) => (range_in(&canonical, id.as_bytes()), seq),
            // Not a path-token chain id, which the tail does not tell
            // exactly: decoded in full.
            None => {
                let r = otel_audit_event::decode_canonical(&canonical, prev_hash, hash)?;
                (chain_range(&canonical, &r.chain_id, r.seq)?, r.seq)
            }
        };
        Self::with_chain(canonical, prev_hash, hash, chain_id, seq)
    }

    /// [`new`](Self::new) for a row whose chain and seq the caller knows,
    /// having just encoded it (the WAL, for every record submitted): the end
    /// of the bytes is checked to hold them instead of being searched for
    /// them.
    pub fn in_chain(
        canonical: Bytes,
        prev_hash: [u8; 32],
        hash: [u8; 32],
        chain_id: &str,
        seq: u64,
    ) -> Result<Self, DecodeCanonicalError> {
        let range = chain_range(&canonical, chain_id, seq)?;
        Self::with_chain(canonical, prev_hash, hash, range, seq)
    }

    /// [`in_chain`](Self::in_chain) for `chain`'s id, also checking that
    /// the row is of its tenant; the row carries its tag (see [`ChainTag`]).
    pub fn in_tagged_chain(
        canonical: Bytes,
        prev_hash: [u8; 32],
        hash: [u8; 32],
        chain: TaggedChain<'_>,
        seq: u64,
    ) -> Result<Self, DecodeCanonicalError> {
        let row = Self::in_chain(canonical, prev_hash, hash, chain.id, seq)?;
        if !row.is_of_tenant(chain.tenant) {
            return Err(DecodeCanonicalError::Invalid {
                field: "tenant",
                offset: row.tenant.0 as usize,
                reason: "the row is not of its chain's tenant",
            });
        }
        Ok(CanonicalRow {
            tag: Some(chain.tag),
            ..row
        })
    }

    /// The row, its chain id at `chain_id` in the bytes; reads the tenant and
    /// the receive time.
    fn with_chain(
        canonical: Bytes,
        prev_hash: [u8; 32],
        hash: [u8; 32],
        chain_id: (u32, u32),
        seq: u64,
    ) -> Result<Self, DecodeCanonicalError> {
        let mut d = CanonicalReader::new(&canonical);
        // Passed over: the texts before the tenant are checked as UTF-8
        // where the row is written, with the rest of its columns.
        d.text_bytes("event_id")?;
        d.integer("time")?;
        let received_at = DateTime::from_timestamp_micros(d.integer("received_at")?).ok_or(
            DecodeCanonicalError::Invalid {
                field: "received_at",
                offset: d.offset() - 8,
                reason: "timestamp out of range",
            },
        )?;
        d.opt_integer("duration_ns")?;
        d.text_bytes("severity")?;
        let tenant = range_in(&canonical, d.text("tenant")?.as_bytes());
        Ok(CanonicalRow {
            canonical,
            tag: None,
            prev_hash,
            hash,
            seq,
            received_at,
            tenant,
            chain_id,
        })
    }

    /// `record`'s row, encoded.
    pub fn from_record(record: &Record) -> Self {
        let mut bytes = Vec::with_capacity(768);
        record.canonical_bytes(&mut bytes);
        CanonicalRow::in_chain(
            Bytes::from(bytes),
            record.prev_hash,
            record.hash,
            &record.chain_id,
            record.seq,
        )
        .expect("the encoder's output decodes")
    }

    /// The canonical bytes.
    pub fn canonical(&self) -> &[u8] {
        &self.canonical
    }

    /// The row decoded into a [`Record`].
    pub fn to_record(&self) -> Result<Record, DecodeCanonicalError> {
        otel_audit_event::decode_canonical(&self.canonical, self.prev_hash, self.hash)
    }

    fn bytes(&self, (start, end): (u32, u32)) -> &[u8] {
        &self.canonical[start as usize..end as usize]
    }

    fn text(&self, range: (u32, u32)) -> &str {
        std::str::from_utf8(self.bytes(range)).expect("checked as UTF-8 when the row was made")
    }
}

impl StoredRow for CanonicalRow {
    fn chain_id(&self) -> &str {
        self.text(self.chain_id)
    }
    fn seq(&self) -> u64 {
        self.seq
    }
    fn prev_hash(&self) -> &[u8; 32] {
        &self.prev_hash
    }
    fn hash(&self) -> &[u8; 32] {
        &self.hash
    }
    fn tenant(&self) -> &str {
        self.text(self.tenant)
    }
    fn is_of_chain(&self, id: &str) -> bool {
        self.bytes(self.chain_id) == id.as_bytes()
    }
    fn is_of_tenant(&self, tenant: &str) -> bool {
        self.bytes(self.tenant) == tenant.as_bytes()
    }
    fn chain_tag(&self) -> Option<ChainTag> {
        self.tag
    }
    fn received_at(&self) -> DateTime<Utc> {
        self.received_at
    }
    fn append_to(&self, b: &mut BatchBuilder) -> Result<(), arrow_schema::ArrowError> {
        b.push_canonical(&self.canonical, &self.prev_hash, &self.hash)
    }
}
