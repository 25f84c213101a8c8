//! The canonical encoding, pinned: a worked example (tests/interop/vectors)
//! that a second implementation can check itself against, and agreement of the
//! two Rust encoders (from the event model, and generically from Arrow columns).

mod common;

use std::path::PathBuf;

use otel_audit_event::{Chain, row_hash};
use otel_audit_storage::{
    WriterOptions, canonical_from_batch, encode_file, records_to_batch, scan_batch,
};

use common::{event, t0};

fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop/vectors")
}

#[test]
fn arrow_encoder_agrees_with_model_encoder() {
    let recs = common::records(40);
    let batch = records_to_batch(&recs).unwrap();
    let mut links = Vec::new();
    scan_batch(&batch, &mut links).unwrap();
    for (i, r) in recs.iter().enumerate() {
        let mut model = Vec::new();
        r.canonical_bytes(&mut model);
        assert_eq!(canonical_from_batch(&batch, i).unwrap(), model, "row {i}");
        assert!(links[i].hash_ok, "row {i}");
        assert_eq!(row_hash(&r.prev_hash, &model), r.hash);
    }
}

#[test]
fn worked_example_is_stable() {
    let mut chain = Chain::new("collector-1.acme", "acme").unwrap();
    let first = chain.append(t0(), event("acme", 1)).unwrap();
    let full = chain.append(t0(), event("acme", 2)).unwrap();
    let mut canonical = Vec::new();
    full.canonical_bytes(&mut canonical);
    let json = serde_json::json!({
        "description": "Row seq 1 of chain collector-1.acme (every optional field set), stored in row-v1.parquet after seq 0. canonical_hex = canonical(row) per docs/FORMAT.md 3.1; hash = SHA-256(\"otel-audit/row/v1\" || prev_hash || canonical).",
        "seq": full.seq,
        "prev_hash_hex": hex::encode(full.prev_hash),
        "canonical_hex": hex::encode(&canonical),
        "hash_hex": hex::encode(full.hash),
        "record": full,
    });
    let text = serde_json::to_string_pretty(&json).unwrap() + "\n";
    let parquet = encode_file(&[first, full], &WriterOptions::default())
        .unwrap()
        .bytes;
    let dir = vectors_dir();
    if std::env::var_os("UPDATE_VECTORS").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("row-v1.json"), &text).unwrap();
        std::fs::write(dir.join("row-v1.parquet"), &parquet).unwrap();
    }
    let pinned = std::fs::read_to_string(dir.join("row-v1.json"))
        .expect("tests/interop/vectors/row-v1.json (UPDATE_VECTORS=1 writes it)");
    assert_eq!(
        pinned, text,
        "the canonical encoding changed: that is a new format version, not a fix"
    );
}
