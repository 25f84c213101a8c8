//! The canonical encoding, pinned: a worked example (tests/interop/vectors)
//! that a second implementation can check itself against, and agreement of the
//! two Rust encoders (from the event model, and generically from Arrow columns).

mod common;

use std::path::PathBuf;

use arrow_array::RecordBatch;
use arrow_schema::DataType;
use otel_audit_event::{Chain, row_hash};
use otel_audit_storage::reader::{TextColumns, open_decoder};
use otel_audit_storage::{
    BatchBuilder, CanonicalRow, FileEncoder, StoredRow, TaggedChain, WriterOptions,
    batch_to_records, canonical_from_batch, encode_file, rows_to_batch, scan_batch,
};

use common::{event, t0};

fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop/vectors")
}

#[test]
fn arrow_encoder_agrees_with_model_encoder() {
    let recs = common::records(40);
    let batch = rows_to_batch(&recs).unwrap();
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

/// Many rows with fields, nulls and list lengths drawn at random, more rows
/// than the encoder handles in one run, also through sliced batches (offsets
/// not starting at 0): the column-at-a-time encoder must give each row exactly
/// `Record::canonical_bytes`.
#[test]
fn arrow_encoder_agrees_on_varied_rows() {
    let recs = varied_records();
    let batch = rows_to_batch(&recs).unwrap();
    for (offset, len) in [(0, recs.len()), (37, 500), (999, 1), (5, 0)] {
        let slice = batch.slice(offset, len);
        let mut links = Vec::new();
        scan_batch(&slice, &mut links).unwrap();
        assert_eq!(links.len(), len);
        for (i, link) in links.iter().enumerate() {
            let r = &recs[offset + i];
            assert!(link.hash_ok, "row {}", offset + i);
            assert_eq!((link.seq, link.hash), (r.seq as i64, r.hash));
        }
    }
    for (i, r) in recs.iter().enumerate().step_by(7) {
        let mut model = Vec::new();
        r.canonical_bytes(&mut model);
        assert_eq!(canonical_from_batch(&batch, i).unwrap(), model, "row {i}");
    }
}

/// Verify decodes dictionary-encoded text columns as dictionaries: the
/// rows, their hashes and their records must be the same as decoded plain,
/// batch boundaries anywhere.
#[test]
fn dictionary_decoding_agrees_with_plain() {
    let recs = varied_records();
    let bytes = encode_file(&recs, &WriterOptions::default()).unwrap().bytes;
    let plain = open_decoder(bytes.clone(), 4096, TextColumns::Plain).unwrap();
    let plain: Vec<RecordBatch> = plain.batches.map(Result::unwrap).collect();
    let dict = open_decoder(bytes, 300, TextColumns::KeepDictionaries).unwrap();
    let dict: Vec<RecordBatch> = dict.batches.map(Result::unwrap).collect();
    let dictionaries = dict[0]
        .schema()
        .fields()
        .iter()
        .filter(|f| matches!(f.data_type(), DataType::Dictionary(_, _)))
        .count();
    assert!(dictionaries >= 10, "{dictionaries} dictionary columns");
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let (mut ra, mut rb) = (Vec::new(), Vec::new());
    for batch in &plain {
        scan_batch(batch, &mut a).unwrap();
        ra.extend(batch_to_records(batch).unwrap());
    }
    for batch in &dict {
        scan_batch(batch, &mut b).unwrap();
        rb.extend(batch_to_records(batch).unwrap());
    }
    assert_eq!(a.len(), recs.len());
    assert_eq!(a, b);
    assert!(b.iter().all(|l| l.hash_ok));
    assert_eq!(ra, rb);
    assert_eq!(rb, recs);
}

/// `open_decoder` reads zstd chunks through its own page decompression
/// (`pages.rs`) instead of parquet-rs's: the batches must be the ones
/// parquet-rs's own reader gives, for our writer's files and for files of
/// version 2 data pages (levels outside the compressed values, pages of
/// nulls only), several row groups and pages per chunk, zstd and
/// uncompressed chunks mixed.
#[test]
fn page_decompression_agrees_with_parquet_reader() {
    use parquet::arrow::ArrowWriter;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::basic::{Compression, ZstdLevel};
    use parquet::file::properties::{WriterProperties, WriterVersion};
    use parquet::schema::types::ColumnPath;

    let recs = varied_records();
    let ours = encode_file(&recs, &WriterOptions::default()).unwrap().bytes;
    let batch = rows_to_batch(&recs).unwrap();
    let rewrite = |version: WriterVersion| {
        let props = WriterProperties::builder()
            .set_writer_version(version)
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap()))
            .set_column_compression(ColumnPath::from("hash"), Compression::UNCOMPRESSED)
            .set_max_row_group_row_count(Some(300))
            .set_data_page_row_count_limit(64)
            .set_write_batch_size(64)
            .build();
        let mut out = Vec::new();
        let mut w = ArrowWriter::try_new(&mut out, batch.schema(), Some(props)).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        bytes::Bytes::from(out)
    };
    for (name, bytes) in [
        ("otel-audit writer", ours),
        // 1,000 rows in row groups of 300.
        ("version 1 pages", rewrite(WriterVersion::PARQUET_1_0)),
        ("version 2 pages", rewrite(WriterVersion::PARQUET_2_0)),
    ] {
        let builder = ParquetRecordBatchReaderBuilder::try_new(bytes.clone()).unwrap();
        let chunks = builder
            .metadata()
            .row_groups()
            .iter()
            .flat_map(|rg| rg.columns());
        let codecs: Vec<_> = chunks.map(|c| c.compression()).collect();
        assert!(
            codecs.iter().any(|c| matches!(c, Compression::ZSTD(_))),
            "{name}"
        );
        assert!(codecs.contains(&Compression::UNCOMPRESSED), "{name}");
        let expected: Vec<RecordBatch> = builder
            .with_batch_size(250)
            .build()
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let got: Vec<RecordBatch> = open_decoder(bytes, 250, TextColumns::Plain)
            .unwrap()
            .batches
            .map(Result::unwrap)
            .collect();
        assert_eq!(got.len(), expected.len(), "{name}");
        for (g, e) in got.iter().zip(&expected) {
            assert_eq!(g.columns(), e.columns(), "{name}");
        }
        let mut rows = Vec::new();
        for b in &got {
            rows.extend(batch_to_records(b).unwrap());
        }
        assert_eq!(rows, recs, "{name}");
    }
}

/// Rows held as their canonical bytes make the very batch (and file) the
/// records do: the sink writes from the bytes, verify and the CLI from
/// records.
#[test]
fn canonical_rows_make_the_same_batch_and_file() {
    let recs = &varied_records();
    let rows: Vec<CanonicalRow> = recs.iter().map(CanonicalRow::from_record).collect();
    for (r, row) in recs.iter().zip(&rows) {
        assert_eq!((row.chain_id(), row.seq()), (r.chain_id.as_str(), r.seq));
        assert_eq!(
            (row.tenant(), row.received_at()),
            (r.event.tenant.as_str(), r.received_at)
        );
        assert_eq!(row.to_record().unwrap(), *r);
    }
    assert_eq!(rows_to_batch(&rows).unwrap(), rows_to_batch(recs).unwrap());
    let opts = WriterOptions::default();
    let from_records = encode_file(recs, &opts).unwrap();
    let mut encoder = FileEncoder::new(&rows[0], &opts).unwrap();
    for chunk in [&rows[..1], &rows[1..700], &rows[700..]] {
        encoder.push(chunk).unwrap();
    }
    let mut by_records = FileEncoder::new(&recs[0], &opts).unwrap();
    for chunk in [&recs[..1], &recs[1..700], &recs[700..]] {
        by_records.push(chunk).unwrap();
    }
    let (a, b) = (encoder.finish().unwrap(), by_records.finish().unwrap());
    assert_eq!(a.bytes, b.bytes);
    assert_eq!(a.footer, from_records.footer);
}

/// A chain id the end of the bytes does not tell (not a path token) is
/// found by decoding; bytes that are no canonical encoding are refused with
/// the field.
#[test]
fn canonical_rows_of_odd_chain_ids_and_bad_bytes() {
    let mut r = common::records(1).remove(0);
    r.chain_id = "not a token/\u{e9}".into();
    let row = CanonicalRow::from_record(&r);
    assert_eq!(row.chain_id(), r.chain_id);
    assert_eq!(row.to_record().unwrap(), r);
    let mut bytes = Vec::new();
    r.canonical_bytes(&mut bytes);
    // Told its chain and seq, a row is checked to end with them.
    let whole = bytes::Bytes::from(bytes.clone());
    let known = CanonicalRow::in_chain(whole.clone(), r.prev_hash, r.hash, &r.chain_id, r.seq);
    assert_eq!(known.unwrap(), row);
    assert_eq!(row.chain_tag(), None);
    // A tag is made for one id, never twice; the row made with it carries it,
    // equals the untagged row and is checked as `in_chain` checks.
    let tagged = TaggedChain::new(&r.chain_id, &r.event.tenant);
    let again = TaggedChain::new(&r.chain_id, &r.event.tenant);
    assert_ne!(tagged.tag(), again.tag());
    let with_tag =
        CanonicalRow::in_tagged_chain(whole.clone(), r.prev_hash, r.hash, tagged, r.seq).unwrap();
    assert_eq!(with_tag.chain_tag(), Some(tagged.tag()));
    assert_eq!(with_tag, row);
    let other_tenant = TaggedChain::new(&r.chain_id, "other");
    let err =
        CanonicalRow::in_tagged_chain(whole.clone(), r.prev_hash, r.hash, other_tenant, r.seq)
            .unwrap_err();
    assert!(err.to_string().contains("tenant"), "{err}");
    for (id, seq) in [
        (r.chain_id.as_str(), r.seq + 1),
        (&r.chain_id[1..], r.seq),
        ("x", r.seq),
    ] {
        let err = CanonicalRow::in_chain(whole.clone(), r.prev_hash, r.hash, id, seq).unwrap_err();
        assert!(err.to_string().contains("chain_id"), "{id:?} {seq}: {err}");
        let tag = TaggedChain::new(id, &r.event.tenant);
        let err = CanonicalRow::in_tagged_chain(whole.clone(), r.prev_hash, r.hash, tag, seq)
            .unwrap_err();
        assert!(err.to_string().contains("chain_id"), "{id:?} {seq}: {err}");
    }
    bytes.truncate(20);
    let err = CanonicalRow::new(bytes.into(), r.prev_hash, r.hash).unwrap_err();
    assert!(err.to_string().contains("event_id"), "{err}");
    let mut b = BatchBuilder::with_capacity(1);
    let err = b
        .push_canonical(b"\x02", &r.prev_hash, &r.hash)
        .unwrap_err();
    assert!(err.to_string().contains("presence byte 0x02"), "{err}");
}

/// 1,000 rows with fields, nulls and list lengths drawn at random.
fn varied_records() -> Vec<otel_audit_event::Record> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut chain = Chain::new("c1.acme", "acme").unwrap();
    let mut recs = Vec::new();
    for i in 0..1000u64 {
        let mut e = event("acme", i % 2 + 2 * (next() % 50));
        e.event_id = uuid::Uuid::from_u128(u128::from(next()) << 64 | u128::from(i) | 1);
        let r = next();
        // Each bit decides one optional field or list length.
        if r & 1 != 0 {
            e.service.version = None;
        }
        if r & 2 != 0 {
            e.actor.kind = None;
        }
        if r & 4 != 0 {
            e.gen_ai.temperature = Some(f64::from((r >> 8) as u8) / 7.0);
        }
        if r & 8 != 0 {
            e.gen_ai.input_tokens = None;
        }
        if r & 16 != 0 {
            e.safety.passed = Some(r & 32 != 0);
        }
        e.safety.detectors.truncate((r >> 6) as usize % 3);
        e.content_digests.truncate((r >> 10) as usize % 3);
        e.sealed_content.truncate((r >> 12) as usize % 2);
        e.redactions.truncate((r >> 14) as usize % 3);
        for a in 0..(r >> 16) % 4 {
            e.attributes
                .insert(format!("k{a}.{}", next() % 10), "v".repeat(a as usize));
        }
        if r & (1 << 20) != 0 {
            e.error.message = Some("x".repeat((r >> 21) as usize % 300));
        }
        recs.push(chain.append(t0(), e).unwrap());
    }
    recs
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
