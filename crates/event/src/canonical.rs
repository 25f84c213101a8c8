//! The canonical byte encoding of a stored row, and the row hash.
//!
//! docs/FORMAT.md is the normative description; this module is its reference
//! implementation. The field order here is the column order of the stored
//! schema, and must never change within a format version.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::chain::Link;
use crate::model::AuditEvent;

/// The version of the stored format this crate writes and verifies.
pub const FORMAT_VERSION: u32 = 1;

/// Domain-separation tag prefixed to every row hash input, so a row hash can
/// never be confused with a hash of anything else (a Merkle node, a digest).
pub const ROW_HASH_DOMAIN: &[u8] = b"otel-audit/row/v1";

/// The `prev_hash` of the first row (seq 0) of every chain.
pub const GENESIS_HASH: [u8; 32] = [0u8; 32];

/// A row as stored: the event, when the collector received it, and its chain link.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// When the collector received the event (UTC); decides the partition.
    pub received_at: DateTime<Utc>,
    /// The event.
    pub event: AuditEvent,
    /// The chain the row belongs to.
    pub chain_id: String,
    /// Its position in the chain, from 0, without gaps.
    pub seq: u64,
    /// The `hash` of the row before it (`GENESIS_HASH` for seq 0).
    #[serde(with = "crate::hex32")]
    pub prev_hash: [u8; 32],
    /// `SHA-256(ROW_HASH_DOMAIN || prev_hash || canonical bytes)`.
    #[serde(with = "crate::hex32")]
    pub hash: [u8; 32],
}

impl Record {
    /// Where the row is in its chain.
    pub fn link(&self) -> Link {
        Link {
            seq: self.seq,
            prev_hash: self.prev_hash,
            hash: self.hash,
        }
    }

    /// Appends this row's canonical bytes to `out`.
    pub fn canonical_bytes(&self, out: &mut Vec<u8>) {
        encode_row(
            &self.event,
            &self.received_at,
            &self.chain_id,
            self.seq,
            out,
        );
    }

    /// Recomputes the row hash from the row's content and its stored `prev_hash`.
    /// `scratch` is reused between calls to avoid an allocation per row.
    pub fn compute_hash(&self, scratch: &mut Vec<u8>) -> [u8; 32] {
        scratch.clear();
        self.canonical_bytes(scratch);
        row_hash(&self.prev_hash, scratch)
    }
}

/// `SHA-256(ROW_HASH_DOMAIN || prev_hash || canonical)`.
pub fn row_hash(prev_hash: &[u8; 32], canonical: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(ROW_HASH_DOMAIN);
    h.update(prev_hash);
    h.update(canonical);
    h.finalize().into()
}

/// Starts the input of a row hash in `buf` (cleared first):
/// `ROW_HASH_DOMAIN || prev_hash`. The caller appends the row's canonical
/// bytes, then hashes many such inputs at once with [`finish_row_hashes`].
#[inline]
pub fn begin_row_hash(prev_hash: &[u8; 32], buf: &mut Vec<u8>) {
    buf.clear();
    buf.extend_from_slice(ROW_HASH_DOMAIN);
    buf.extend_from_slice(prev_hash);
}

/// The row hashes of `inputs`, each begun with [`begin_row_hash`] and
/// completed with its row's canonical bytes: `each(i, hash)` once for
/// every input, in no particular order. Rows are hashed two at a time (each is an independent
/// message: see [`otel_audit_sha::compress2`]), which is why a caller that
/// holds many rows (verify) hashes them here rather than one by one with
/// [`row_hash`]. Pads every input in place, so they no longer hold the
/// message afterwards.
///
/// ```
/// use otel_audit_event::{begin_row_hash, finish_row_hashes, row_hash};
/// let rows: [&[u8]; 3] = [b"one", b"two", b"three"];
/// let mut inputs = vec![Vec::new(); 3];
/// for (buf, row) in inputs.iter_mut().zip(rows) {
///     begin_row_hash(&[9; 32], buf);
///     buf.extend_from_slice(row);
/// }
/// let mut hashes = Vec::new();
/// finish_row_hashes(&mut inputs, |_, h| hashes.push(h));
/// let one_by_one: Vec<_> = rows.iter().map(|r| row_hash(&[9; 32], r)).collect();
/// assert_eq!(hashes, one_by_one);
/// ```
pub fn finish_row_hashes(inputs: &mut [Vec<u8>], mut each: impl FnMut(usize, [u8; 32])) {
    inputs.iter_mut().for_each(otel_audit_sha::pad_in_place);
    // Paired by length: the blocks one input of a pair has beyond the other
    // are compressed alone, at half the pace.
    let mut order: Vec<usize> = (0..inputs.len()).collect();
    order.sort_unstable_by_key(|&i| inputs[i].len());
    let (pairs, odd) = order.as_chunks::<2>();
    for &[a, b] in pairs {
        let (ha, hb) = otel_audit_sha::digest2(inputs[a].as_chunks().0, inputs[b].as_chunks().0);
        each(a, ha);
        each(b, hb);
    }
    if let &[last] = odd {
        each(last, otel_audit_sha::digest(inputs[last].as_chunks().0));
    }
}

/// Writes values in the canonical encoding. Every field starts with a presence
/// byte (0 = null, 1 = present); integers are big-endian; texts and byte
/// strings carry a u32 big-endian length.
struct Enc<'a>(&'a mut Vec<u8>);

impl Enc<'_> {
    #[inline]
    fn null(&mut self) {
        self.0.push(0);
    }
    /// A present value with a u32 length or count: the presence byte and the
    /// number in one append (each append checks the capacity).
    #[inline]
    fn head(&mut self, n: usize) {
        // Validation keeps every field far below 4 GiB.
        let mut head = [1u8; 5];
        head[1..].copy_from_slice(&(n as u32).to_be_bytes());
        self.0.extend_from_slice(&head);
    }
    #[inline]
    fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }
    #[inline]
    fn opt_str(&mut self, s: Option<&str>) {
        match s {
            Some(s) => self.str(s),
            None => self.null(),
        }
    }
    #[inline]
    fn bytes(&mut self, b: &[u8]) {
        self.head(b.len());
        self.0.extend_from_slice(b);
    }
    #[inline]
    fn word(&mut self, v: [u8; 8]) {
        let mut w = [1u8; 9];
        w[1..].copy_from_slice(&v);
        self.0.extend_from_slice(&w);
    }
    #[inline]
    fn i64(&mut self, v: i64) {
        self.word(v.to_be_bytes());
    }
    #[inline]
    fn opt_i64(&mut self, v: Option<i64>) {
        match v {
            Some(v) => self.i64(v),
            None => self.null(),
        }
    }
    #[inline]
    fn opt_f64(&mut self, v: Option<f64>) {
        match v {
            Some(v) => self.word(v.to_bits().to_be_bytes()),
            None => self.null(),
        }
    }
    #[inline]
    fn opt_bool(&mut self, v: Option<bool>) {
        match v {
            Some(v) => self.0.extend_from_slice(&[1, u8::from(v)]),
            None => self.null(),
        }
    }
    #[inline]
    fn time(&mut self, t: &DateTime<Utc>) {
        self.i64(t.timestamp_micros());
    }
    #[inline]
    fn list(&mut self, n: usize) {
        self.head(n);
    }
}

/// The canonical bytes of the row of `e` received at `received_at`, at
/// `seq` of chain `chain_id`.
pub(crate) fn encode_row(
    e: &AuditEvent,
    received_at: &DateTime<Utc>,
    chain_id: &str,
    seq: u64,
    out: &mut Vec<u8>,
) {
    let mut w = Enc(out);
    // Column order of the stored schema (docs/FORMAT.md, "Columns").
    let mut uuid_text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    w.str(e.event_id.hyphenated().encode_lower(&mut uuid_text));
    w.time(&e.time);
    w.time(received_at);
    w.opt_i64(e.duration_ns);
    w.str(e.severity.as_str());
    w.str(&e.tenant);
    w.str(&e.service.name);
    w.opt_str(e.service.version.as_deref());
    w.opt_str(e.service.environment.as_deref());
    w.opt_str(e.service.host.as_deref());
    w.opt_str(e.actor.id.as_deref());
    w.opt_str(e.actor.kind.map(|k| k.as_str()));
    w.opt_str(e.actor.role.as_deref());
    w.opt_str(e.actor.ip.as_deref());
    w.opt_str(e.actor.session.as_deref());
    w.str(e.category.as_str());
    w.str(&e.action);
    w.str(e.outcome.as_str());
    w.opt_str(e.target.kind.as_deref());
    w.opt_str(e.target.id.as_deref());
    w.opt_str(e.error.kind.as_deref());
    w.opt_str(e.error.message.as_deref());
    let g = &e.gen_ai;
    w.opt_str(g.provider.as_deref());
    w.opt_str(g.operation.as_deref());
    w.opt_str(g.request_model.as_deref());
    w.opt_str(g.response_model.as_deref());
    w.opt_i64(g.input_tokens);
    w.opt_i64(g.output_tokens);
    w.opt_str(g.conversation_id.as_deref());
    w.opt_str(g.agent_name.as_deref());
    w.opt_str(g.tool_name.as_deref());
    w.opt_f64(g.temperature);
    w.opt_bool(e.safety.passed);
    w.list(e.safety.detectors.len());
    for d in &e.safety.detectors {
        w.str(d);
    }
    w.opt_str(e.safety.block_reason.as_deref());
    w.list(e.content_digests.len());
    for d in &e.content_digests {
        w.str(&d.field);
        w.str(d.algorithm.as_str());
        w.opt_str(d.key_id.as_deref());
        w.bytes(&d.digest);
    }
    w.list(e.sealed_content.len());
    for s in &e.sealed_content {
        w.str(&s.field);
        w.str(&s.algorithm);
        w.str(&s.key_id);
        w.bytes(&s.nonce);
        w.bytes(&s.ciphertext);
    }
    w.opt_str(e.trace.trace_id.as_deref());
    w.opt_str(e.trace.span_id.as_deref());
    w.opt_str(e.trace.parent_span_id.as_deref());
    // BTreeMap iterates in ascending key order, which for String is byte order.
    w.list(e.attributes.len());
    for (k, v) in &e.attributes {
        w.str(k);
        w.str(v);
    }
    w.list(e.redactions.len());
    for x in &e.redactions {
        w.str(&x.field);
        w.str(x.method.as_str());
        w.opt_str(x.detector.as_deref());
        w.opt_str(x.key_id.as_deref());
    }
    w.str(chain_id);
    // Validated to fit: seq is stored as a signed 64-bit column.
    w.i64(seq as i64);
}

/// Why bytes are not the canonical encoding of a row. Every variant names the
/// field (by its stored column name) and the byte offset where decoding failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeCanonicalError {
    /// The input ends inside a field.
    #[error("canonical bytes end inside {field} at offset {offset}: {needed} more bytes needed")]
    Truncated {
        /// The field being read.
        field: &'static str,
        /// Where the field's unread part starts.
        offset: usize,
        /// How many bytes were missing.
        needed: usize,
    },
    /// A presence byte that is neither `0x00` nor `0x01`, or `0x00` (null) for
    /// a field that is never null.
    #[error("{field} at offset {offset}: presence byte {byte:#04x} is not allowed here")]
    Presence {
        /// The field.
        field: &'static str,
        /// The offset of the presence byte.
        offset: usize,
        /// The byte found.
        byte: u8,
    },
    /// A text that is not valid UTF-8.
    #[error("{field} at offset {offset} is not valid UTF-8")]
    Utf8 {
        /// The field.
        field: &'static str,
        /// The offset of the text's first byte.
        offset: usize,
    },
    /// An enumeration's text that is not one of its values.
    #[error("{field} at offset {offset}: {source}")]
    Enum {
        /// The field.
        field: &'static str,
        /// The offset of the text's first byte.
        offset: usize,
        /// The parse failure.
        #[source]
        source: crate::error::ParseEnumError,
    },
    /// A value the encoder never produces (a bad UUID or timestamp, a
    /// negative `seq`, a digest that is not 32 bytes, unsorted attribute keys...).
    #[error("{field} at offset {offset}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// The offset of the value.
        offset: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// Bytes follow the last field (`seq`).
    #[error("{count} trailing bytes after seq, at offset {offset}")]
    Trailing {
        /// Where the trailing bytes start.
        offset: usize,
        /// How many there are.
        count: usize,
    },
}

type DecodeResult<T> = Result<T, DecodeCanonicalError>;

/// Reads a row's canonical bytes field by field, in column order (the
/// inverse of the encoder), borrowing texts and byte strings from the input:
/// for a program that wants the stored values of a row without building a
/// [`Record`] (the collector's sink writes Parquet columns straight from the
/// bytes the WAL holds). Every method names the field it reads, for its
/// error; nothing beyond the encoding's own rules is checked (enumeration
/// texts and timestamps are returned as they are: [`decode_canonical`]
/// checks them).
///
/// ```
/// use otel_audit_event::{AuditEvent, CanonicalReader, Category, Chain};
/// let mut chain = Chain::new("c1.acme", "acme").unwrap();
/// let event = AuditEvent::new("acme", "svc", Category::Admin, "user.create");
/// let record = chain.append(chrono::Utc::now(), event).unwrap();
/// let mut bytes = Vec::new();
/// record.canonical_bytes(&mut bytes);
/// let mut r = CanonicalReader::new(&bytes);
/// assert_eq!(r.text("event_id").unwrap(), record.event.event_id.to_string());
/// assert_eq!(r.integer("time").unwrap(), record.event.time.timestamp_micros());
/// ```
#[derive(Debug, Clone)]
pub struct CanonicalReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> CanonicalReader<'a> {
    /// A reader at the start of `canonical`.
    pub fn new(canonical: &'a [u8]) -> Self {
        CanonicalReader {
            buf: canonical,
            pos: 0,
        }
    }

    /// How many bytes were read.
    pub fn offset(&self) -> usize {
        self.pos
    }

    /// Fails unless every byte was read (`seq` is the last field).
    pub fn finish(&self) -> Result<(), DecodeCanonicalError> {
        if self.pos != self.buf.len() {
            return Err(DecodeCanonicalError::Trailing {
                offset: self.pos,
                count: self.buf.len() - self.pos,
            });
        }
        Ok(())
    }

    /// A text that is never null.
    #[inline]
    pub fn text(&mut self, field: &'static str) -> Result<&'a str, DecodeCanonicalError> {
        self.required(field)?;
        self.raw_str(field)
    }

    /// A text that may be null.
    #[inline]
    pub fn opt_text(
        &mut self,
        field: &'static str,
    ) -> Result<Option<&'a str>, DecodeCanonicalError> {
        if self.presence(field)? {
            self.raw_str(field).map(Some)
        } else {
            Ok(None)
        }
    }

    /// The bytes of a text that is never null, not checked as UTF-8: for a
    /// caller that checks many texts at once (a whole column).
    #[inline]
    pub fn text_bytes(&mut self, field: &'static str) -> Result<&'a [u8], DecodeCanonicalError> {
        self.required(field)?;
        self.raw_bytes(field)
    }

    /// The bytes of a text that may be null, not checked as UTF-8.
    #[inline]
    pub fn opt_text_bytes(
        &mut self,
        field: &'static str,
    ) -> Result<Option<&'a [u8]>, DecodeCanonicalError> {
        if self.presence(field)? {
            self.raw_bytes(field).map(Some)
        } else {
            Ok(None)
        }
    }

    fn take(&mut self, field: &'static str, n: usize) -> DecodeResult<&'a [u8]> {
        let rest = self.buf.len() - self.pos;
        if rest < n {
            return Err(DecodeCanonicalError::Truncated {
                field,
                offset: self.pos,
                needed: n - rest,
            });
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> DecodeResult<[u8; N]> {
        let b = self.take(field, N)?;
        Ok(b.try_into().expect("take returns exactly N bytes"))
    }

    /// Reads a presence byte: `true` if present, `false` if null.
    fn presence(&mut self, field: &'static str) -> DecodeResult<bool> {
        let offset = self.pos;
        match self.array::<1>(field)?[0] {
            0 => Ok(false),
            1 => Ok(true),
            byte => Err(DecodeCanonicalError::Presence {
                field,
                offset,
                byte,
            }),
        }
    }

    /// Reads the presence byte of a field that is never null.
    fn required(&mut self, field: &'static str) -> DecodeResult<()> {
        let offset = self.pos;
        if self.presence(field)? {
            Ok(())
        } else {
            Err(DecodeCanonicalError::Presence {
                field,
                offset,
                byte: 0,
            })
        }
    }

    fn raw_bytes(&mut self, field: &'static str) -> DecodeResult<&'a [u8]> {
        let len = u32::from_be_bytes(self.array(field)?) as usize;
        self.take(field, len)
    }

    fn raw_str(&mut self, field: &'static str) -> DecodeResult<&'a str> {
        let b = self.raw_bytes(field)?;
        std::str::from_utf8(b).map_err(|_| DecodeCanonicalError::Utf8 {
            field,
            offset: self.pos - b.len(),
        })
    }

    fn str(&mut self, field: &'static str) -> DecodeResult<String> {
        Ok(self.text(field)?.to_owned())
    }

    fn opt_str(&mut self, field: &'static str) -> DecodeResult<Option<String>> {
        Ok(self.opt_text(field)?.map(str::to_owned))
    }

    fn parse<T: std::str::FromStr<Err = crate::error::ParseEnumError>>(
        &mut self,
        field: &'static str,
        text: &str,
    ) -> DecodeResult<T> {
        text.parse().map_err(|source| DecodeCanonicalError::Enum {
            field,
            offset: self.pos - text.len(),
            source,
        })
    }

    fn enum_<T: std::str::FromStr<Err = crate::error::ParseEnumError>>(
        &mut self,
        field: &'static str,
    ) -> DecodeResult<T> {
        self.required(field)?;
        let text = self.raw_str(field)?;
        self.parse(field, text)
    }

    fn opt_enum<T: std::str::FromStr<Err = crate::error::ParseEnumError>>(
        &mut self,
        field: &'static str,
    ) -> DecodeResult<Option<T>> {
        if self.presence(field)? {
            let text = self.raw_str(field)?;
            self.parse(field, text).map(Some)
        } else {
            Ok(None)
        }
    }

    /// A byte string that is never null.
    pub fn byte_string(&mut self, field: &'static str) -> Result<&'a [u8], DecodeCanonicalError> {
        self.required(field)?;
        self.raw_bytes(field)
    }

    fn raw_i64(&mut self, field: &'static str) -> DecodeResult<i64> {
        Ok(i64::from_be_bytes(self.array(field)?))
    }

    /// A byte string of exactly 32 bytes (a digest) that is never null.
    pub fn digest(&mut self, field: &'static str) -> Result<[u8; 32], DecodeCanonicalError> {
        let offset = self.pos;
        self.byte_string(field)?
            .try_into()
            .map_err(|_| DecodeCanonicalError::Invalid {
                field,
                offset,
                reason: "a digest must be 32 bytes",
            })
    }

    /// An integer (or timestamp, in microseconds) that is never null.
    #[inline]
    pub fn integer(&mut self, field: &'static str) -> Result<i64, DecodeCanonicalError> {
        self.required(field)?;
        self.raw_i64(field)
    }

    /// An integer that may be null.
    #[inline]
    pub fn opt_integer(
        &mut self,
        field: &'static str,
    ) -> Result<Option<i64>, DecodeCanonicalError> {
        if self.presence(field)? {
            self.raw_i64(field).map(Some)
        } else {
            Ok(None)
        }
    }

    /// A float that may be null.
    pub fn opt_float(&mut self, field: &'static str) -> Result<Option<f64>, DecodeCanonicalError> {
        if self.presence(field)? {
            Ok(Some(f64::from_bits(u64::from_be_bytes(self.array(field)?))))
        } else {
            Ok(None)
        }
    }

    /// A boolean that may be null.
    pub fn opt_boolean(
        &mut self,
        field: &'static str,
    ) -> Result<Option<bool>, DecodeCanonicalError> {
        if !self.presence(field)? {
            return Ok(None);
        }
        let offset = self.pos;
        match self.array::<1>(field)?[0] {
            0 => Ok(Some(false)),
            1 => Ok(Some(true)),
            _ => Err(DecodeCanonicalError::Invalid {
                field,
                offset,
                reason: "a bool must be 0x00 or 0x01",
            }),
        }
    }

    fn time(&mut self, field: &'static str) -> DecodeResult<DateTime<Utc>> {
        let micros = self.integer(field)?;
        DateTime::from_timestamp_micros(micros).ok_or(DecodeCanonicalError::Invalid {
            field,
            offset: self.pos - 8,
            reason: "timestamp out of range",
        })
    }

    /// A list's element count. The count is not trusted (for allocation, or
    /// a loop): every element of each list takes at least a known number of
    /// bytes, which bounds it by what is left.
    pub fn list_len(&mut self, field: &'static str) -> Result<usize, DecodeCanonicalError> {
        self.required(field)?;
        let n = u32::from_be_bytes(self.array(field)?) as usize;
        let rest = self.buf.len() - self.pos;
        let least = n.saturating_mul(min_element_bytes(field));
        if least > rest {
            return Err(DecodeCanonicalError::Truncated {
                field,
                offset: self.pos,
                needed: least - rest,
            });
        }
        Ok(n)
    }
}

/// The fewest bytes an element of the list `field` takes: a present text is
/// at least its presence byte and length (5), a null one or a bool's
/// presence byte 1.
fn min_element_bytes(field: &str) -> usize {
    match field {
        "safety_detectors" => 5,
        "content_digests" => 5 + 5 + 1 + 5,
        "sealed_content" => 5 * 5,
        "attributes" => 5 + 5,
        "redactions" => 5 + 5 + 1 + 1,
        _ => 1,
    }
}

/// The `chain_id` and `seq` of a row, read from the end of its canonical
/// bytes (`1 | len u32 | chain_id | 1 | seq i64`, big-endian) without
/// decoding the rest; `None` unless they end that way with a chain id that
/// is a path token (`[A-Za-z0-9._-]`, at most
/// [`MAX_CHAIN_ID_BYTES`](crate::validate::MAX_CHAIN_ID_BYTES) bytes), as
/// every [`Chain`](crate::Chain)'s is. Nothing else is checked.
///
/// Exact for such ids: the id's length field and presence byte hold bytes
/// (`0`, `1`) that no path token does, so no shorter or longer reading of
/// the tail is a path token behind a matching length.
///
/// ```
/// use otel_audit_event::{AuditEvent, Category, Chain, chain_and_seq};
/// let mut chain = Chain::new("c1.acme", "acme").unwrap();
/// let event = AuditEvent::new("acme", "svc", Category::Admin, "user.create");
/// let record = chain.append(chrono::Utc::now(), event).unwrap();
/// let mut bytes = Vec::new();
/// record.canonical_bytes(&mut bytes);
/// assert_eq!(chain_and_seq(&bytes), Some(("c1.acme", 0)));
/// assert_eq!(chain_and_seq(&bytes[..bytes.len() - 1]), None);
/// ```
pub fn chain_and_seq(canonical: &[u8]) -> Option<(&str, u64)> {
    let (rest, seq) = canonical.split_last_chunk::<9>()?;
    if seq[0] != 1 {
        return None;
    }
    let seq = u64::try_from(i64::from_be_bytes(seq[1..].try_into().expect("8 bytes"))).ok()?;
    // The id is the run of token bytes before `seq`, or that run but its
    // first byte: the low byte of the id's length field can be a token
    // byte itself ('0' is 48); the three before it are zero and end the run.
    let max = crate::validate::MAX_CHAIN_ID_BYTES.min(rest.len().saturating_sub(5));
    let run = rest
        .iter()
        .rev()
        .take(max + 1)
        .take_while(|&&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        .count();
    [run, run.saturating_sub(1)]
        .into_iter()
        .filter(|len| (1..=max).contains(len))
        .find_map(|len| {
            let (before, id) = rest.split_at(rest.len() - len);
            let head = before.last_chunk::<5>()?;
            if head[0] != 1
                || head[1..] != (len as u32).to_be_bytes()
                || matches!(id[0], b'.' | b'-')
            {
                return None;
            }
            Some((std::str::from_utf8(id).ok()?, seq))
        })
}

/// Decodes the canonical bytes of a row (the output of
/// [`Record::canonical_bytes`]) back into the [`Record`], given the row's
/// stored `prev_hash` and `hash` (which are not part of the canonical bytes).
///
/// Strict: only bytes the encoder produces are accepted, so
/// `decode → encode` gives back exactly the input. The error names the field
/// and offset. This only inverts the encoding: it checks neither `hash`
/// (compare with [`row_hash`]) nor the event's validation rules.
///
/// ```
/// use otel_audit_event::{AuditEvent, Category, Chain, decode_canonical};
/// let mut chain = Chain::new("c1.acme", "acme").unwrap();
/// let record = chain
///     .append(chrono::Utc::now(), AuditEvent::new("acme", "svc", Category::Admin, "user.create"))
///     .unwrap();
/// let mut bytes = Vec::new();
/// record.canonical_bytes(&mut bytes);
/// let back = decode_canonical(&bytes, record.prev_hash, record.hash).unwrap();
/// assert_eq!(back.event.event_id, record.event.event_id);
/// assert_eq!(back.seq, 0);
/// ```
pub fn decode_canonical(
    bytes: &[u8],
    prev_hash: [u8; 32],
    hash: [u8; 32],
) -> Result<Record, DecodeCanonicalError> {
    use crate::model::{
        Actor, ContentDigest, ErrorInfo, GenAi, Redaction, Safety, SealedContent, Service, Target,
        TraceContext,
    };
    use std::collections::BTreeMap;

    let mut d = CanonicalReader::new(bytes);
    d.required("event_id")?;
    let id_offset = d.pos;
    let id_text = d.raw_str("event_id")?;
    let event_id = uuid::Uuid::try_parse(id_text)
        .ok()
        .filter(|u| {
            let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
            u.hyphenated().encode_lower(&mut buf) == id_text
        })
        .ok_or(DecodeCanonicalError::Invalid {
            field: "event_id",
            offset: id_offset,
            reason: "not a lower-case hyphenated UUID",
        })?;
    let time = d.time("time")?;
    let received_at = d.time("received_at")?;
    let duration_ns = d.opt_integer("duration_ns")?;
    let severity = d.enum_("severity")?;
    let tenant = d.str("tenant")?;
    let service = Service {
        name: d.str("service_name")?,
        version: d.opt_str("service_version")?,
        environment: d.opt_str("service_environment")?,
        host: d.opt_str("service_host")?,
    };
    let actor = Actor {
        id: d.opt_str("actor_id")?,
        kind: d.opt_enum("actor_type")?,
        role: d.opt_str("actor_role")?,
        ip: d.opt_str("actor_ip")?,
        session: d.opt_str("actor_session")?,
    };
    let category = d.enum_("category")?;
    let action = d.str("action")?;
    let outcome = d.enum_("outcome")?;
    let target = Target {
        kind: d.opt_str("target_type")?,
        id: d.opt_str("target_id")?,
    };
    let error = ErrorInfo {
        kind: d.opt_str("error_type")?,
        message: d.opt_str("error_message")?,
    };
    let gen_ai = GenAi {
        provider: d.opt_str("gen_ai_provider")?,
        operation: d.opt_str("gen_ai_operation")?,
        request_model: d.opt_str("gen_ai_request_model")?,
        response_model: d.opt_str("gen_ai_response_model")?,
        input_tokens: d.opt_integer("gen_ai_input_tokens")?,
        output_tokens: d.opt_integer("gen_ai_output_tokens")?,
        conversation_id: d.opt_str("gen_ai_conversation_id")?,
        agent_name: d.opt_str("gen_ai_agent_name")?,
        tool_name: d.opt_str("gen_ai_tool_name")?,
        temperature: d.opt_float("gen_ai_temperature")?,
    };
    let passed = d.opt_boolean("safety_passed")?;
    let n = d.list_len("safety_detectors")?;
    let mut detectors = Vec::with_capacity(n);
    for _ in 0..n {
        detectors.push(d.str("safety_detectors")?);
    }
    let safety = Safety {
        passed,
        detectors,
        block_reason: d.opt_str("safety_block_reason")?,
    };
    let n = d.list_len("content_digests")?;
    let mut content_digests = Vec::with_capacity(n);
    for _ in 0..n {
        let field = d.str("content_digests.field")?;
        let algorithm = d.enum_("content_digests.algorithm")?;
        let key_id = d.opt_str("content_digests.key_id")?;
        let digest = d.digest("content_digests.digest")?;
        content_digests.push(ContentDigest {
            field,
            algorithm,
            key_id,
            digest,
        });
    }
    let n = d.list_len("sealed_content")?;
    let mut sealed_content = Vec::with_capacity(n);
    for _ in 0..n {
        sealed_content.push(SealedContent {
            field: d.str("sealed_content.field")?,
            algorithm: d.str("sealed_content.algorithm")?,
            key_id: d.str("sealed_content.key_id")?,
            nonce: d.byte_string("sealed_content.nonce")?.to_vec(),
            ciphertext: d.byte_string("sealed_content.ciphertext")?.to_vec(),
        });
    }
    let trace = TraceContext {
        trace_id: d.opt_str("trace_id")?,
        span_id: d.opt_str("span_id")?,
        parent_span_id: d.opt_str("parent_span_id")?,
    };
    let n = d.list_len("attributes")?;
    let mut attributes = BTreeMap::new();
    let mut last_key: Option<&str> = None;
    for _ in 0..n {
        d.required("attributes.key")?;
        let key_offset = d.pos;
        let key = d.raw_str("attributes.key")?;
        // The encoder writes a BTreeMap: keys strictly ascending in byte order.
        if last_key.is_some_and(|last| last >= key) {
            return Err(DecodeCanonicalError::Invalid {
                field: "attributes.key",
                offset: key_offset,
                reason: "keys must be unique and in ascending byte order",
            });
        }
        last_key = Some(key);
        let value = d.str("attributes.value")?;
        attributes.insert(key.to_owned(), value);
    }
    let n = d.list_len("redactions")?;
    let mut redactions = Vec::with_capacity(n);
    for _ in 0..n {
        redactions.push(Redaction {
            field: d.str("redactions.field")?,
            method: d.enum_("redactions.method")?,
            detector: d.opt_str("redactions.detector")?,
            key_id: d.opt_str("redactions.key_id")?,
        });
    }
    let chain_id = d.str("chain_id")?;
    let seq = d.integer("seq")?;
    let seq = u64::try_from(seq).map_err(|_| DecodeCanonicalError::Invalid {
        field: "seq",
        offset: d.pos - 8,
        reason: "seq is negative",
    })?;
    d.finish()?;
    Ok(Record {
        received_at,
        event: AuditEvent {
            event_id,
            time,
            duration_ns,
            severity,
            tenant,
            service,
            actor,
            category,
            action,
            outcome,
            target,
            error,
            gen_ai,
            safety,
            content_digests,
            sealed_content,
            trace,
            attributes,
            redactions,
        },
        chain_id,
        seq,
        prev_hash,
        hash,
    })
}

impl Record {
    /// Decodes a row from its canonical bytes and stored hashes; see [`decode_canonical`].
    pub fn from_canonical(
        bytes: &[u8],
        prev_hash: [u8; 32],
        hash: [u8; 32],
    ) -> Result<Record, DecodeCanonicalError> {
        decode_canonical(bytes, prev_hash, hash)
    }
}
