//! The otel-audit event model, its canonical encoding and the hash chain.
//!
//! An [`AuditEvent`] records who did what with which model, when, and with what
//! result. A [`Chain`] validates events and links them into [`Record`]s:
//! `hash = SHA-256("otel-audit/row/v1" || prev_hash || canonical bytes)`, with a
//! gapless `seq` per chain. `docs/FORMAT.md` describes the encoding precisely
//! enough for an independent verifier.
//!
//! ```
//! use otel_audit_event::{AuditEvent, Category, Chain, Outcome};
//!
//! let mut chain = Chain::new("collector-1.acme", "acme")?;
//! let mut event = AuditEvent::new("acme", "chat-api", Category::Inference, "llm.chat");
//! event.actor.id = Some("user-17".into());
//! event.gen_ai.request_model = Some("gpt-4o".into());
//! event.gen_ai.input_tokens = Some(152);
//! event.outcome = Outcome::Success;
//! let record = chain.append(chrono::Utc::now(), event)?;
//! assert_eq!(record.seq, 0);
//! assert_eq!(record.compute_hash(&mut Vec::new()), record.hash);
//! # Ok::<(), otel_audit_event::ChainError>(())
//! ```

mod canonical;
mod chain;
mod error;
pub mod merkle;
mod model;
pub mod otlp;
pub mod redact;
mod validate;

pub use canonical::{
    CanonicalReader, DecodeCanonicalError, FORMAT_VERSION, GENESIS_HASH, ROW_HASH_DOMAIN, Record,
    begin_row_hash, chain_and_seq, decode_canonical, finish_row_hashes, row_hash,
};
pub use chain::{Chain, Link, validate_chain_id};
pub use error::{ChainError, ParseEnumError, ValidationError};
pub use model::{
    Actor, ActorType, AuditEvent, Category, ContentDigest, DigestAlgorithm, ErrorInfo, GenAi,
    Outcome, Redaction, RedactionMethod, Safety, SealedContent, Service, Severity, Target,
    TraceContext,
};
pub use redact::Sensitive;
pub use validate::{
    MAX_ACTION_BYTES, MAX_ATTRIBUTE_KEY_BYTES, MAX_ATTRIBUTE_VALUE_BYTES, MAX_ATTRIBUTES,
    MAX_CHAIN_ID_BYTES, MAX_LIST_ENTRIES, MAX_MESSAGE_BYTES, MAX_SEALED_BYTES, MAX_SHORT_BYTES,
    MAX_TENANT_BYTES, check_path_token,
};

/// Serde helpers: 32-byte hashes as lower-case hex.
pub mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    /// Serialises as 64 hex digits.
    pub fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    /// Parses 64 hex digits.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(d)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(&text, &mut out).map_err(D::Error::custom)?;
        Ok(out)
    }
}

/// Serde helpers: byte strings as lower-case hex.
pub mod hexvec {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    /// Serialises as hex digits.
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    /// Parses hex digits.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        hex::decode(String::deserialize(d)?).map_err(D::Error::custom)
    }
}
