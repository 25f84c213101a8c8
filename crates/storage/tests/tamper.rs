//! The tamper matrix: each kind of change to a stored chain is reported as
//! exactly that kind, at that place.

mod common;

use std::path::{Path, PathBuf};

use otel_audit_event::{Record, row_hash};
use otel_audit_storage::{
    NoProgress, ProblemKind, Store, StoreOptions, VerifyError, VerifyOptions, VerifyReport,
    read_file, rows_to_batch, verify,
};
use parquet::arrow::ArrowWriter;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{FileReader, SerializedFileReader};

use common::{records, write_all};

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    store: Store,
    /// Relative paths of chain c1.acme's files, in seq order.
    acme: Vec<String>,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let store = Store::open(root.to_str().unwrap(), &StoreOptions::default()).unwrap();
    write_all(&store, records(240), 40).await;
    let mut acme: Vec<String> = walk(&root)
        .into_iter()
        .filter(|p| p.contains("c1.acme-"))
        .collect();
    acme.sort_by_key(|p| p.rsplit('/').next().unwrap().to_owned());
    assert!(acme.len() >= 6, "{acme:?}");
    Fixture {
        _dir: dir,
        root,
        store,
        acme,
    }
}

fn walk(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(root).unwrap().to_str().unwrap().to_owned());
            }
        }
    }
    out
}

async fn report(f: &Fixture) -> VerifyReport {
    verify(&f.store, &VerifyOptions::default(), &NoProgress)
        .await
        .unwrap()
}

/// Writes `rows` as a Parquet file at `path` with footer `kv`, as someone with
/// write access and the Parquet tools would.
fn write_parquet(f: &Fixture, path: &str, rows: &[Record], kv: Vec<KeyValue>) {
    let batch = rows_to_batch(rows).unwrap();
    let props = WriterProperties::builder()
        .set_key_value_metadata(Some(kv))
        .build();
    let mut buf = Vec::new();
    let mut w = ArrowWriter::try_new(&mut buf, batch.schema(), Some(props)).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    std::fs::write(f.root.join(path), buf).unwrap();
}

/// Rewrites a file with `change` applied to its rows, keeping its footer.
async fn rewrite(f: &Fixture, path: &str, change: impl FnOnce(&mut Vec<Record>)) {
    let kv = SerializedFileReader::new(std::fs::File::open(f.root.join(path)).unwrap())
        .unwrap()
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|k| k.key != "ARROW:schema")
        .collect();
    let mut rows = read_file(&f.store, path).await.unwrap();
    change(&mut rows);
    write_parquet(f, path, &rows, kv);
}

/// The one problem found, asserting there is exactly one.
fn only(r: &VerifyReport) -> &otel_audit_storage::Problem {
    assert_eq!(r.problems.len(), 1, "{:#?}", r.problems);
    &r.problems[0]
}

fn place(p: &otel_audit_storage::Problem) -> (ProblemKind, Option<&str>, Option<u64>, Option<u64>) {
    (p.kind, p.path.as_deref(), p.row, p.seq)
}

#[tokio::test]
async fn intact_store_verifies() {
    let f = fixture().await;
    let r = report(&f).await;
    assert!(r.is_intact(), "{:#?}", r.problems);
    assert_eq!(r.events_verified, 480);
}

#[tokio::test]
async fn one_cell_changed() {
    let f = fixture().await;
    let p = f.acme[2].clone();
    let mut seq = 0;
    rewrite(&f, &p, |rows| {
        rows[5].event.actor.id = Some("mallory".into());
        seq = rows[5].seq;
    })
    .await;
    let r = report(&f).await;
    assert_eq!(
        place(only(&r)),
        (
            ProblemKind::ModifiedRow,
            Some(p.as_str()),
            Some(5),
            Some(seq)
        )
    );
}

#[tokio::test]
async fn row_removed() {
    let f = fixture().await;
    let p = f.acme[2].clone();
    let mut seq = 0;
    rewrite(&f, &p, |rows| {
        seq = rows.remove(7).seq;
    })
    .await;
    let r = report(&f).await;
    let pr = only(&r);
    assert_eq!(
        place(pr),
        (
            ProblemKind::MissingRows,
            Some(p.as_str()),
            Some(7),
            Some(seq)
        )
    );
    assert_eq!(pr.seq_end, Some(seq));
}

#[tokio::test]
async fn row_inserted() {
    let f = fixture().await;
    let p = f.acme[2].clone();
    let mut seq = 0;
    rewrite(&f, &p, |rows| {
        // A forged row that links to row 3 and carries a correct hash.
        let mut forged = rows[4].clone();
        forged.event.action = "project.create".into();
        forged.prev_hash = rows[3].hash;
        forged.hash = row_hash(&forged.prev_hash, &{
            let mut b = Vec::new();
            forged.canonical_bytes(&mut b);
            b
        });
        seq = forged.seq;
        rows.insert(4, forged);
    })
    .await;
    let r = report(&f).await;
    assert_eq!(
        place(only(&r)),
        (
            ProblemKind::InsertedRow,
            Some(p.as_str()),
            Some(4),
            Some(seq)
        )
    );
}

#[tokio::test]
async fn rows_swapped() {
    let f = fixture().await;
    let p = f.acme[3].clone();
    let mut seq = 0;
    rewrite(&f, &p, |rows| {
        rows.swap(10, 11);
        seq = rows[10].seq;
    })
    .await;
    let r = report(&f).await;
    assert_eq!(
        place(only(&r)),
        (
            ProblemKind::ReorderedRows,
            Some(p.as_str()),
            Some(10),
            Some(seq)
        )
    );
}

#[tokio::test]
async fn middle_file_deleted() {
    let f = fixture().await;
    let gone = f.acme[3].clone();
    let rows = read_file(&f.store, &gone).await.unwrap();
    std::fs::remove_file(f.root.join(&gone)).unwrap();
    let r = report(&f).await;
    let pr = only(&r);
    assert_eq!(pr.kind, ProblemKind::MissingFile);
    assert_eq!(
        (pr.seq, pr.seq_end),
        (Some(rows[0].seq), Some(rows.last().unwrap().seq))
    );
    assert!(
        pr.detail.contains(gone.rsplit('/').next().unwrap()),
        "{}",
        pr.detail
    );
}

#[tokio::test]
async fn oldest_file_deleted() {
    let f = fixture().await;
    let rows = read_file(&f.store, &f.acme[0]).await.unwrap();
    std::fs::remove_file(f.root.join(&f.acme[0])).unwrap();
    let r = report(&f).await;
    let pr = only(&r);
    assert_eq!(
        (pr.kind, pr.seq, pr.seq_end),
        (
            ProblemKind::MissingFile,
            Some(0),
            Some(rows.last().unwrap().seq)
        )
    );
}

#[tokio::test]
async fn file_duplicated_into_another_hour() {
    let f = fixture().await;
    let src = f.acme[1].clone();
    let dst = src.replace("hour=10", "hour=13");
    assert_ne!(src, dst);
    std::fs::create_dir_all(f.root.join(&dst).parent().unwrap()).unwrap();
    std::fs::copy(f.root.join(&src), f.root.join(&dst)).unwrap();
    let r = report(&f).await;
    let pr = only(&r);
    assert_eq!(
        (pr.kind, pr.path.as_deref()),
        (ProblemKind::DuplicateFile, Some(dst.as_str()))
    );
    assert!(pr.detail.contains("byte-identical"), "{}", pr.detail);
}

#[tokio::test]
async fn file_moved_to_another_hour() {
    let f = fixture().await;
    let src = f.acme[1].clone();
    let dst = src.replace("hour=10", "hour=12");
    std::fs::create_dir_all(f.root.join(&dst).parent().unwrap()).unwrap();
    std::fs::rename(f.root.join(&src), f.root.join(&dst)).unwrap();
    let r = report(&f).await;
    assert_eq!(
        place(only(&r)),
        (ProblemKind::MisplacedFile, Some(dst.as_str()), None, None)
    );
}

/// Cuts the last `n` rows of the chain's file `index` (keeping its footer) and
/// expects exactly those seqs reported missing from that file.
async fn assert_cut_from_end_is_missing_rows(index: impl FnOnce(&[String]) -> usize, n: usize) {
    let f = fixture().await;
    let p = f.acme[index(&f.acme)].clone();
    let mut cut = (0, 0);
    rewrite(&f, &p, |rows| {
        let len = rows.len();
        cut = (rows[len - n].seq, rows[len - 1].seq);
        rows.truncate(len - n);
    })
    .await;
    let r = report(&f).await;
    let pr = only(&r);
    assert_eq!(
        (pr.kind, pr.path.as_deref()),
        (ProblemKind::MissingRows, Some(p.as_str()))
    );
    assert_eq!((pr.seq, pr.seq_end), (Some(cut.0), Some(cut.1)));
}

#[tokio::test]
async fn rows_cut_from_the_newest_file() {
    assert_cut_from_end_is_missing_rows(|files| files.len() - 1, 3).await;
}

#[tokio::test]
async fn rows_cut_from_the_end_of_a_middle_file() {
    assert_cut_from_end_is_missing_rows(|_| 2, 2).await;
}

#[tokio::test]
async fn row_altered_and_rehashed_breaks_the_next_link() {
    let f = fixture().await;
    let p = f.acme[2].clone();
    let mut seq = 0;
    rewrite(&f, &p, |rows| {
        let r = &mut rows[6];
        r.event.outcome = otel_audit_event::Outcome::Success;
        r.event.action = "model.approve".into();
        let mut b = Vec::new();
        r.canonical_bytes(&mut b);
        r.hash = row_hash(&r.prev_hash, &b);
        seq = rows[7].seq;
    })
    .await;
    let r = report(&f).await;
    assert_eq!(
        place(only(&r)),
        (
            ProblemKind::BrokenLink,
            Some(p.as_str()),
            Some(7),
            Some(seq)
        )
    );
}

#[tokio::test]
async fn footer_edited() {
    let f = fixture().await;
    let p = f.acme[2].clone();
    let rows = read_file(&f.store, &p).await.unwrap();
    let kv = vec![KeyValue::new(
        "otel_audit.format_version".into(),
        "1".to_string(),
    )];
    write_parquet(&f, &p, &rows, kv);
    let r = report(&f).await;
    let pr = only(&r);
    assert_eq!(
        (pr.kind, pr.path.as_deref()),
        (ProblemKind::BadFooter, Some(p.as_str()))
    );
    assert!(
        pr.detail.contains("otel_audit.chain_id is missing"),
        "{}",
        pr.detail
    );
}

/// A statistic narrowed in the footer (the rows, their hashes and the
/// format's keys untouched) would make a reader such as DuckDB skip the row
/// group for a query matching its first row: verify compares statistics
/// with the rows.
#[tokio::test]
async fn statistics_narrowed() {
    let f = fixture().await;
    let p = f.acme[2].clone();
    let path = f.root.join(&p);
    let mut bytes = std::fs::read(&path).unwrap();
    let seq_min = |bytes: &[u8]| {
        let r = SerializedFileReader::new(bytes::Bytes::copy_from_slice(bytes)).unwrap();
        let rg = r.metadata().row_group(0);
        let c = rg
            .columns()
            .iter()
            .find(|c| c.column_path().string() == "seq")
            .unwrap();
        match c.statistics().unwrap() {
            parquet::file::statistics::Statistics::Int64(s) => *s.min_opt().unwrap(),
            other => panic!("{other:?}"),
        }
    };
    let min = seq_min(&bytes);
    // The footer (Thrift) holds the statistic's value as its 8 plain bytes.
    let n = bytes.len();
    let footer_len = u32::from_le_bytes(bytes[n - 8..n - 4].try_into().unwrap()) as usize;
    let footer = n - 8 - footer_len..n - 8;
    let (old, new) = (min.to_le_bytes(), (min + 1).to_le_bytes());
    let at: Vec<usize> = footer
        .clone()
        .filter(|&i| i + 8 <= footer.end && bytes[i..i + 8] == old)
        .collect();
    assert!((1..=2).contains(&at.len()), "{at:?}");
    for i in at {
        bytes[i..i + 8].copy_from_slice(&new);
    }
    assert_eq!(seq_min(&bytes), min + 1);
    std::fs::write(&path, &bytes).unwrap();

    let r = report(&f).await;
    let pr = only(&r);
    assert_eq!(
        (pr.kind, pr.path.as_deref()),
        (ProblemKind::BadFooter, Some(p.as_str()))
    );
    let expected = format!(
        "seq in row group 0 says min {}, the rows hold {min}",
        min + 1
    );
    assert!(pr.detail.contains(&expected), "{}", pr.detail);
}

#[tokio::test]
async fn garbage_file_and_foreign_object() {
    let f = fixture().await;
    let p = f.acme[2].clone();
    std::fs::write(f.root.join(&p), b"not parquet at all").unwrap();
    let notes = p.rsplit_once('/').unwrap().0.to_owned() + "/notes.txt";
    std::fs::write(f.root.join(&notes), b"hello").unwrap();
    let r = report(&f).await;
    let kinds: Vec<_> = r.problems.iter().map(place).collect();
    assert_eq!(
        kinds,
        vec![
            (
                ProblemKind::UnexpectedObject,
                Some(notes.as_str()),
                None,
                None
            ),
            (ProblemKind::UnreadableFile, Some(p.as_str()), None, None),
        ],
        "{:#?}",
        r.problems
    );
}

#[tokio::test]
async fn empty_store_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().to_str().unwrap(), &StoreOptions::default()).unwrap();
    let err = verify(&store, &VerifyOptions::default(), &NoProgress)
        .await
        .unwrap_err();
    assert!(matches!(err, VerifyError::NothingToVerify { .. }), "{err}");
}
