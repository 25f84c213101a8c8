//! The canonical byte encoding of a stored row, and the row hash.
//!
//! docs/FORMAT.md is the normative description; this module is its reference
//! implementation. The field order here is the column order of the stored
//! schema, and must never change within a format version.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

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
    /// Appends this row's canonical bytes to `out`.
    pub fn canonical_bytes(&self, out: &mut Vec<u8>) {
        encode(self, out);
    }

    /// Recomputes the row hash from the row's content and its stored `prev_hash`.
    /// `scratch` is reused between calls to avoid an allocation per row.
    pub fn compute_hash(&self, scratch: &mut Vec<u8>) -> [u8; 32] {
        scratch.clear();
        encode(self, scratch);
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

/// Writes values in the canonical encoding. Every field starts with a presence
/// byte (0 = null, 1 = present); integers are big-endian; texts and byte
/// strings carry a u32 big-endian length.
struct Enc<'a>(&'a mut Vec<u8>);

impl Enc<'_> {
    fn present(&mut self) {
        self.0.push(1);
    }
    fn null(&mut self) {
        self.0.push(0);
    }
    fn raw_bytes(&mut self, b: &[u8]) {
        // Validation keeps every field far below 4 GiB.
        self.0.extend_from_slice(&(b.len() as u32).to_be_bytes());
        self.0.extend_from_slice(b);
    }
    fn str(&mut self, s: &str) {
        self.present();
        self.raw_bytes(s.as_bytes());
    }
    fn opt_str(&mut self, s: Option<&str>) {
        match s {
            Some(s) => self.str(s),
            None => self.null(),
        }
    }
    fn bytes(&mut self, b: &[u8]) {
        self.present();
        self.raw_bytes(b);
    }
    fn i64(&mut self, v: i64) {
        self.present();
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn opt_i64(&mut self, v: Option<i64>) {
        match v {
            Some(v) => self.i64(v),
            None => self.null(),
        }
    }
    fn opt_f64(&mut self, v: Option<f64>) {
        match v {
            Some(v) => {
                self.present();
                self.0.extend_from_slice(&v.to_bits().to_be_bytes());
            }
            None => self.null(),
        }
    }
    fn opt_bool(&mut self, v: Option<bool>) {
        match v {
            Some(v) => {
                self.present();
                self.0.push(u8::from(v));
            }
            None => self.null(),
        }
    }
    fn time(&mut self, t: &DateTime<Utc>) {
        self.i64(t.timestamp_micros());
    }
    fn list(&mut self, n: usize) {
        self.present();
        self.0.extend_from_slice(&(n as u32).to_be_bytes());
    }
}

fn encode(r: &Record, out: &mut Vec<u8>) {
    let e = &r.event;
    let mut w = Enc(out);
    // Column order of the stored schema (docs/FORMAT.md, "Columns").
    let mut uuid_text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    w.str(e.event_id.hyphenated().encode_lower(&mut uuid_text));
    w.time(&e.time);
    w.time(&r.received_at);
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
    w.str(&r.chain_id);
    // Validated to fit: seq is stored as a signed 64-bit column.
    w.i64(r.seq as i64);
}
