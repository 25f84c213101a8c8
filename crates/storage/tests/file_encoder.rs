//! `FileEncoder`: a file pushed chunk by chunk holds the same rows and footer
//! as `encode_file` over the same records, refuses rows that do not continue
//! the run, and verifies in a store.

mod common;

use bytes::Bytes;
use chrono::Duration;
use otel_audit_event::{Chain, Record};
use otel_audit_storage::reader::decode;
use otel_audit_storage::{
    CanonicalRow, EncodedFile, FileEncoder, FooterMeta, NoProgress, SinkError, Store, TaggedChain,
    VerifyOptions, WriteOutcome, WriterOptions, batch_to_records, encode_file, put_file, verify,
};
use parquet::file::metadata::KeyValue;
use parquet::file::reader::{FileReader, SerializedFileReader};

use common::{event, t0};

/// `n` linked rows of chain `c1.acme`, all received within one hour
/// (10:00:00 to 10:59:59), every other one with every optional field set.
fn run(n: u64) -> Vec<Record> {
    let mut chain = Chain::new("c1.acme", "acme").unwrap();
    (0..n)
        .map(|i| {
            let received = t0() + Duration::milliseconds((i * 3_599_000 / n.max(1)) as i64);
            chain.append(received, event("acme", i)).unwrap()
        })
        .collect()
}

fn opts(max_row_group_rows: usize) -> WriterOptions {
    WriterOptions {
        max_row_group_rows,
        ..WriterOptions::default()
    }
}

/// Starts a file named after `records[0]` and pushes the rows in chunks of
/// `chunk`.
fn stream(records: &[Record], chunk: usize, opts: &WriterOptions) -> EncodedFile {
    let mut enc = FileEncoder::new(&records[0], opts).unwrap();
    for c in records.chunks(chunk) {
        enc.push(c).unwrap();
    }
    assert_eq!(enc.rows(), records.len() as u64);
    enc.finish().unwrap()
}

fn footer_of(records: &[Record]) -> FooterMeta {
    let rows: Vec<_> = records
        .iter()
        .map(|r| (r.seq, r.prev_hash, r.hash))
        .collect();
    FooterMeta::compute(&records[0].chain_id, &rows).unwrap()
}

fn decoded(bytes: &Bytes) -> (Vec<Record>, FooterMeta) {
    let d = decode(bytes.clone()).unwrap();
    let mut rows = Vec::new();
    for b in &d.batches {
        rows.extend(batch_to_records(b).unwrap());
    }
    (rows, d.footer.unwrap())
}

/// The footer's key-value list, and the row count of each row group.
fn layout(bytes: &Bytes) -> (Vec<KeyValue>, Vec<i64>) {
    let r = SerializedFileReader::new(bytes.clone()).unwrap();
    let m = r.metadata();
    let kv = m.file_metadata().key_value_metadata().unwrap().clone();
    (kv, m.row_groups().iter().map(|g| g.num_rows()).collect())
}

#[test]
fn chunks_of_any_size_give_the_rows_and_footer_of_the_run() {
    let records = run(2500);
    let want_footer = footer_of(&records);
    for max_rows in [1024, 128 * 1024] {
        let opts = opts(max_rows);
        for chunk in [1, 7, 1000] {
            let file = stream(&records, chunk, &opts);
            let ctx = format!("chunks of {chunk}, row groups of {max_rows}");
            assert_eq!(file.footer, want_footer, "{ctx}");
            assert_eq!(file.file.first_seq, 0, "{ctx}");
            let (rows, footer) = decoded(&file.bytes);
            assert!(rows == records, "{ctx}: rows differ after a round trip");
            assert_eq!(footer, want_footer, "{ctx}: footer as stored");
            let (_, groups) = layout(&file.bytes);
            let want_groups: Vec<i64> = (0..records.len())
                .step_by(max_rows)
                .map(|start| (records.len() - start).min(max_rows) as i64)
                .collect();
            assert_eq!(groups, want_groups, "{ctx}: row groups");
        }
    }
}

#[test]
fn a_file_started_mid_chain_names_its_first_row() {
    let records = run(50);
    let file = stream(&records[17..], 5, &WriterOptions::default());
    assert_eq!(
        file.file,
        encode_file(&records[17..], &WriterOptions::default())
            .unwrap()
            .file
    );
    assert_eq!(file.file.first_seq, 17);
    assert_eq!(file.footer, footer_of(&records[17..]));
    assert_eq!(file.footer.prev_hash, records[16].hash);
    assert_eq!(file.footer.row_count, 33);
}

/// What is asserted: name, footer, decoded rows, the footer's whole key-value
/// list (format keys in order, then `ARROW:schema`) and the row-group
/// boundaries are the same as `encode_file`'s. Bytes are the same when the
/// rows arrive in one chunk; in smaller chunks the Parquet writer may cut data
/// pages (checked every 1024-row mini-batch of each write) at other rows, so
/// the bytes are not compared then.
#[test]
fn streamed_and_whole_files_are_the_same_file() {
    let records = run(3000);
    for max_rows in [1000, 128 * 1024] {
        let opts = opts(max_rows);
        let whole = encode_file(&records, &opts).unwrap();
        for chunk in [1, 7, 1000, 4096] {
            let ctx = format!("chunks of {chunk}, row groups of {max_rows}");
            let streamed = stream(&records, chunk, &opts);
            assert_eq!(streamed.file, whole.file, "{ctx}");
            assert_eq!(streamed.footer, whole.footer, "{ctx}");
            assert!(
                decoded(&streamed.bytes).0 == decoded(&whole.bytes).0,
                "{ctx}: rows differ"
            );
            assert_eq!(layout(&streamed.bytes), layout(&whole.bytes), "{ctx}");
        }
        // The first row, then the rest: two writes, one file.
        let mut enc = FileEncoder::new(&records[0], &opts).unwrap();
        enc.push(&records[..1]).unwrap();
        enc.push(&records[1..]).unwrap();
        let two_writes = enc.finish().unwrap();
        assert_eq!(two_writes.footer, whole.footer);
        assert_eq!(layout(&two_writes.bytes), layout(&whole.bytes));
    }
}

/// Past 20,000 rows a column's data page is cut where the writer checks its
/// limits (every 1024-row mini-batch of a write), so chunked writes cut pages
/// at other rows than one whole write and the bytes differ; rows, footer and
/// row groups do not.
#[test]
fn past_the_page_row_limit_only_page_boundaries_differ() {
    let records = run(21_000);
    let whole = encode_file(&records, &WriterOptions::default()).unwrap();
    let streamed = stream(&records, 999, &WriterOptions::default());
    assert_eq!(streamed.footer, whole.footer);
    assert_eq!(layout(&streamed.bytes), layout(&whole.bytes));
    let (rows, footer) = decoded(&streamed.bytes);
    assert_eq!(footer, whole.footer);
    assert!(rows == records, "rows differ after a round trip");
}

#[tokio::test]
async fn a_streamed_file_verifies_in_a_store() {
    let records = run(1500);
    let store = Store::open("memory://", &Default::default()).unwrap();
    let (head, tail) = records.split_at(700);
    let a = stream(head, 7, &opts(256));
    let b = stream(tail, 1000, &opts(256));
    for f in [&a, &b] {
        assert_eq!(put_file(&store, f).await.unwrap(), WriteOutcome::Written);
    }
    // A retry of the same rows encoded in one chunk is recognised by its footer.
    let again = encode_file(tail, &opts(256)).unwrap();
    assert_eq!(
        put_file(&store, &again).await.unwrap(),
        WriteOutcome::AlreadyPresent
    );
    let report = verify(&store, &VerifyOptions::default(), &NoProgress)
        .await
        .unwrap();
    assert!(report.is_intact(), "{:#?}", report.problems);
    assert_eq!(report.files_verified, 2);
    assert_eq!(report.events_verified, 1500);
}

fn refused(enc: &mut FileEncoder, chunk: &[Record]) -> String {
    let rows = enc.rows();
    let last = enc.last();
    let err = enc.push(chunk).unwrap_err();
    let SinkError::NotContiguous { path, reason } = &err else {
        panic!("expected NotContiguous, got {err}");
    };
    assert_eq!(path, &enc.file().path());
    assert_eq!(enc.rows(), rows, "nothing of a refused chunk is counted");
    assert_eq!(enc.last(), last);
    reason.clone()
}

#[test]
fn rows_that_do_not_continue_the_run_are_refused_and_the_file_stays_usable() {
    let mut chain = Chain::new("c1.acme", "acme").unwrap();
    let records: Vec<Record> = (0..20)
        .map(|i| chain.append(t0(), event("acme", i)).unwrap())
        .collect();
    let next_hour = chain
        .append(t0() + Duration::hours(1), event("acme", 20))
        .unwrap();
    let mut other = Chain::new("c2.acme", "acme").unwrap();
    let other_chain: Vec<Record> = (0..11)
        .map(|i| other.append(t0(), event("acme", i)).unwrap())
        .collect();
    let mut forged = records[10].clone();
    forged.prev_hash = [0xee; 32];

    let mut enc = FileEncoder::new(&records[0], &WriterOptions::default()).unwrap();
    enc.push(&records[..10]).unwrap();

    // A seq gap, first in the chunk or after good rows.
    let reason = refused(&mut enc, &records[11..13]);
    assert!(reason.contains("seq 11 follows seq 9"), "{reason}");
    let reason = refused(&mut enc, &[records[10].clone(), records[12].clone()]);
    assert!(reason.contains("seq 12 follows seq 10"), "{reason}");
    // A repeated seq.
    let reason = refused(&mut enc, &records[9..11]);
    assert!(reason.contains("seq 9 follows seq 9"), "{reason}");
    // The right seq with the wrong prev_hash.
    let reason = refused(&mut enc, std::slice::from_ref(&forged));
    assert!(reason.contains("seq 10 does not link to seq 9"), "{reason}");
    assert!(reason.contains("prev_hash"), "{reason}");
    // Another chain, even at the right seq.
    let reason = refused(&mut enc, &other_chain[10..11]);
    assert!(
        reason.contains("seq 10 of chain c2.acme follows chain c1.acme"),
        "{reason}"
    );
    // The next row of the chain, received in the next hour.
    let mut tail = records[10..].to_vec();
    tail.push(next_hour.clone());
    let reason = refused(&mut enc, &tail);
    assert!(reason.contains("seq 20 belongs to partition"), "{reason}");
    assert!(reason.contains("hour=11"), "{reason}");
    assert!(
        reason.contains("not tenant=acme/date=2026-01-05/hour=10"),
        "{reason}"
    );
    let full = enc.push(&tail).unwrap_err().to_string();
    assert!(full.contains(&enc.file().path()), "{full}");
    assert!(full.contains("not one contiguous run"), "{full}");

    // The encoder still holds rows 0..=9 and takes the rest.
    assert_eq!(enc.rows(), 10);
    assert_eq!(enc.last(), Some((9, records[9].hash)));
    enc.push(&records[10..]).unwrap();
    let file = enc.finish().unwrap();
    assert_eq!(file.footer, footer_of(&records));
    assert!(decoded(&file.bytes).0 == records);

    // The next hour's row starts the next file.
    let mut enc = FileEncoder::new(&next_hour, &WriterOptions::default()).unwrap();
    enc.push(std::slice::from_ref(&next_hour)).unwrap();
    assert_eq!(enc.first_seq(), 20);
    assert!(
        enc.file().path().contains("/hour=11/"),
        "{}",
        enc.file().path()
    );
    assert_eq!(enc.finish().unwrap().footer.prev_hash, records[19].hash);
}

/// `records` as the collector's WAL hands them over: tagged with `tag`.
fn tagged(records: &[Record], tag: TaggedChain<'_>) -> Vec<CanonicalRow> {
    records
        .iter()
        .map(|r| {
            let bytes = Bytes::copy_from_slice(CanonicalRow::from_record(r).canonical());
            CanonicalRow::in_tagged_chain(bytes, r.prev_hash, r.hash, tag, r.seq).unwrap()
        })
        .collect()
}

/// Rows told to the file's chain by their tag: a row of another chain
/// never has that tag, so it is still refused; rows of the chain with
/// another tag or none are read and taken.
#[test]
fn tagged_rows_of_another_chain_are_refused() {
    let records = run(12);
    let mut other = Chain::new("c2.acme", "acme").unwrap();
    let other_chain: Vec<Record> = (0..12)
        .map(|i| other.append(t0(), event("acme", i)).unwrap())
        .collect();
    // A tag is only given to rows of its chain.
    let first = TaggedChain::new("c1.acme", "acme");
    let bytes = Bytes::copy_from_slice(CanonicalRow::from_record(&other_chain[0]).canonical());
    let r = &other_chain[0];
    assert!(CanonicalRow::in_tagged_chain(bytes, r.prev_hash, r.hash, first, 0).is_err());
    let mut enc = FileEncoder::new(&records[0], &WriterOptions::default()).unwrap();
    enc.push(&tagged(&records[..4], first)).unwrap();
    for (what, chunk) in [
        (
            "a tag of its own",
            tagged(&other_chain[4..5], TaggedChain::new("c2.acme", "acme")),
        ),
        ("no tag", vec![CanonicalRow::from_record(&other_chain[4])]),
    ] {
        let err = enc.push(&chunk).unwrap_err().to_string();
        assert!(
            err.contains("seq 4 of chain c2.acme follows chain c1.acme"),
            "{what}: {err}"
        );
    }
    // The chain's next rows under a second tag, then untagged, then the first.
    enc.push(&tagged(&records[4..8], TaggedChain::new("c1.acme", "acme")))
        .unwrap();
    let untagged: Vec<CanonicalRow> = records[8..10]
        .iter()
        .map(CanonicalRow::from_record)
        .collect();
    enc.push(&untagged).unwrap();
    enc.push(&tagged(&records[10..], first)).unwrap();
    let file = enc.finish().unwrap();
    assert_eq!(file.footer, footer_of(&records));
}

/// Not monotonic: the in-progress row group's buffers are released when it is
/// flushed.
#[test]
fn memory_bytes_counts_the_encoded_data() {
    let records = run(4000);
    let mut enc = FileEncoder::new(&records[0], &opts(1000)).unwrap();
    let mut last = enc.memory_bytes();
    assert!(last > 8 * 1024, "{last}");
    for c in records.chunks(1000) {
        enc.push(c).unwrap();
        last = enc.memory_bytes();
    }
    let len = enc.finish().unwrap().bytes.len() as u64;
    // Before finishing, all four row groups are in the output buffer.
    assert!(last >= len / 2, "{last} bytes held for a file of {len}");
    assert!(
        last <= 2 * len + (1 << 20),
        "{last} bytes held for a file of {len}"
    );
}
