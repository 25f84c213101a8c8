//! Copying stores (backup and restore): complete, incremental, create-only,
//! digests last, resumable after an interruption.

mod common;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use otel_audit_storage::copy::{
    CopyError, CopyOptions, CopyProgress, CopyReport, ObjectOutcome, copy_store,
};
use otel_audit_storage::{NoProgress, Store, VerifyOptions, verify};
use tokio::sync::Notify;

use common::{records, write_all};

/// Stand-ins for signed digests: the copy treats digests as opaque objects,
/// it only cares that they live under `_digests/`.
const DIGESTS: [&str; 4] = [
    "_digests/tenant=acme/chain=c1.acme/00000000000000000000-20260105T110000Z.json",
    "_digests/tenant=acme/chain=c1.acme/00000000000000000001-20260105T120000Z.json",
    "_digests/tenant=acme/chain=c1.acme/00000000000000000002-20260105T130000Z.json",
    "_digests/tenant=globex/chain=c1.globex/00000000000000000000-20260105T110000Z.json",
];

fn open(dir: &tempfile::TempDir) -> Store {
    Store::open(dir.path().to_str().unwrap(), &Default::default()).unwrap()
}

async fn put(store: &Store, rel: &str, bytes: impl Into<Vec<u8>>) {
    let bytes: Vec<u8> = bytes.into();
    store
        .object_store()
        .put(&store.location(rel), bytes.into())
        .await
        .unwrap();
}

/// Every object of a store, by relative path, with its bytes.
async fn contents(store: &Store) -> BTreeMap<String, Vec<u8>> {
    let metas: Vec<_> = store.object_store().list(None).try_collect().await.unwrap();
    let mut out = BTreeMap::new();
    for m in metas {
        let bytes = store
            .object_store()
            .get(&m.location)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        out.insert(store.relative(&m.location).unwrap(), bytes.to_vec());
    }
    out
}

/// A source store: data files of two chains, digests, and hidden junk.
async fn source(dir: &tempfile::TempDir, with_digests: bool) -> (Store, usize) {
    let store = open(dir);
    let files = write_all(&store, records(300), 64).await;
    if with_digests {
        for (i, d) in DIGESTS.iter().enumerate() {
            put(&store, d, format!("{{\"digest\":{i}}}")).await;
        }
    }
    put(&store, ".DS_Store", "junk").await;
    put(
        &store,
        "tenant=acme/date=2026-01-05/hour=10/.nfs0001",
        "junk",
    )
    .await;
    (store, files)
}

fn visible(all: BTreeMap<String, Vec<u8>>) -> BTreeMap<String, Vec<u8>> {
    all.into_iter()
        .filter(|(k, _)| !k.split('/').any(|s| s.starts_with('.')))
        .collect()
}

/// Records the order objects finish in.
#[derive(Default)]
struct Order(Mutex<Vec<(String, ObjectOutcome)>>);

impl CopyProgress for Order {
    fn object_done(&self, path: &str, _bytes: u64, outcome: ObjectOutcome) {
        self.0.lock().unwrap().push((path.to_owned(), outcome));
    }
}

#[tokio::test]
async fn copies_everything_then_skips_everything() {
    let (src_dir, dst_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (src, files) = source(&src_dir, false).await;
    let dst = open(&dst_dir);

    let report = copy_store(&src, &dst, &CopyOptions::default(), &NoProgress)
        .await
        .unwrap();
    let expected = visible(contents(&src).await);
    let total: u64 = expected.values().map(|b| b.len() as u64).sum();
    assert_eq!(
        report,
        CopyReport {
            from: src.url().to_owned(),
            to: dst.url().to_owned(),
            objects: files as u64,
            digests: 0,
            copied: files as u64,
            skipped: 0,
            bytes: total,
            bytes_copied: total,
            newest_object: report.newest_object,
        }
    );
    assert!(report.newest_object.is_some());
    assert_eq!(
        contents(&dst).await,
        expected,
        "hidden objects are not copied"
    );

    let verified = verify(&dst, &VerifyOptions::default(), &NoProgress)
        .await
        .unwrap();
    assert!(verified.is_intact(), "{:?}", verified.problems);
    assert_eq!(verified.events_verified, 600);

    for verify_bytes in [false, true] {
        let opts = CopyOptions {
            verify_bytes,
            concurrency: 3,
        };
        let again = copy_store(&src, &dst, &opts, &NoProgress).await.unwrap();
        assert_eq!((again.copied, again.skipped), (0, files as u64));
        assert_eq!(again.bytes_copied, 0);
    }
    assert_eq!(contents(&dst).await, expected);
}

#[tokio::test]
async fn copies_to_memory_and_back() {
    let (src_dir, back_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (src, _) = source(&src_dir, true).await;
    let mem = Store::open("memory://", &Default::default()).unwrap();
    let back = open(&back_dir);

    let order = Order::default();
    let there = copy_store(&src, &mem, &CopyOptions::default(), &order)
        .await
        .unwrap();
    assert_eq!(there.digests, DIGESTS.len() as u64);
    assert_eq!(there.copied, there.objects);

    // Digests come after every data file, and one chain's in digest order.
    let done: Vec<String> = order
        .0
        .into_inner()
        .unwrap()
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    let first_digest = done
        .iter()
        .position(|p| p.starts_with("_digests/"))
        .unwrap();
    assert!(
        done[..first_digest]
            .iter()
            .all(|p| p.starts_with("tenant="))
    );
    assert!(
        done[first_digest..]
            .iter()
            .all(|p| p.starts_with("_digests/"))
    );
    let acme: Vec<&String> = done
        .iter()
        .filter(|p| p.contains("chain=c1.acme/"))
        .collect();
    assert_eq!(acme, DIGESTS[..3].iter().collect::<Vec<_>>());

    let restored = copy_store(&mem, &back, &CopyOptions::default(), &NoProgress)
        .await
        .unwrap();
    assert_eq!(restored.copied, there.copied);
    assert_eq!(contents(&back).await, visible(contents(&src).await));
}

#[tokio::test]
async fn a_different_object_is_never_overwritten() {
    let (src_dir, dst_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (src, _) = source(&src_dir, false).await;
    let dst = open(&dst_dir);
    copy_store(&src, &dst, &CopyOptions::default(), &NoProgress)
        .await
        .unwrap();
    let originals = contents(&dst).await;
    let (victim, bytes) = originals
        .iter()
        .find(|(k, _)| k.ends_with(".parquet"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .unwrap();

    // Another size: refused even without --checksum, naming the path.
    let location = dst.location(&victim);
    dst.object_store().delete(&location).await.unwrap();
    put(&dst, &victim, &bytes[..bytes.len() - 1]).await;
    let err = copy_store(&src, &dst, &CopyOptions::default(), &NoProgress)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CopyError::Conflict { path, .. } if *path == victim),
        "{err}"
    );
    assert!(err.to_string().contains("refusing to overwrite"), "{err}");
    assert_eq!(contents(&dst).await[&victim], &bytes[..bytes.len() - 1]);

    // The same size, other bytes (the last row's stored hash: a byte the
    // rows' check covers, where a byte of the footer's size statistics, say,
    // would be caught only by a signed digest): the size check lets it
    // pass, the checksum refuses it, and verifying the copy finds it either
    // way.
    let mut tampered = bytes.clone();
    let at = last_byte_of_column(&bytes, "hash");
    tampered[at] ^= 0xff;
    dst.object_store().delete(&location).await.unwrap();
    put(&dst, &victim, tampered.clone()).await;
    let quick = copy_store(&src, &dst, &CopyOptions::default(), &NoProgress)
        .await
        .unwrap();
    assert_eq!(quick.copied, 0);
    let checked = CopyOptions {
        verify_bytes: true,
        ..CopyOptions::default()
    };
    let err = copy_store(&src, &dst, &checked, &NoProgress)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CopyError::Conflict { path, reason, .. } if *path == victim && reason.contains("sha256")),
        "{err}"
    );
    assert_eq!(contents(&dst).await[&victim], tampered);
    let report = verify(&dst, &VerifyOptions::default(), &NoProgress)
        .await
        .unwrap();
    assert!(!report.is_intact());
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.path.as_deref() == Some(victim.as_str())),
        "{:?}",
        report.problems
    );
}

/// Interrupts a copy once `after` objects are done, as a killed process would.
struct StopAfter {
    after: usize,
    done: AtomicUsize,
    stop: Notify,
}

impl CopyProgress for StopAfter {
    fn object_done(&self, _path: &str, _bytes: u64, _outcome: ObjectOutcome) {
        if self.done.fetch_add(1, Ordering::SeqCst) + 1 == self.after {
            self.stop.notify_one();
        }
    }
}

#[tokio::test]
async fn an_interrupted_copy_is_completed_by_a_rerun() {
    let (src_dir, dst_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (src, files) = source(&src_dir, true).await;
    let dst = open(&dst_dir);
    let expected = visible(contents(&src).await);

    let stop = StopAfter {
        after: 5,
        done: AtomicUsize::new(0),
        stop: Notify::new(),
    };
    // One object at a time: with several in flight, those already started
    // can all land after the interruption and leave nothing to resume.
    let opts = CopyOptions {
        concurrency: 1,
        ..CopyOptions::default()
    };
    tokio::select! {
        r = copy_store(&src, &dst, &opts, &stop) => panic!("not interrupted: {r:?}"),
        () = stop.stop.notified() => {}
    }
    // Local puts run on blocking threads that outlive the dropped future;
    // let them land, as they would before a killed process's disk settles.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let partial = contents(&dst).await;
    assert!(
        partial.len() >= 5 && partial.len() < files,
        "{}",
        partial.len()
    );
    assert!(
        partial.keys().all(|k| !k.starts_with("_digests/")),
        "an interrupted copy holds no digest before all data files"
    );

    let resumed = copy_store(&src, &dst, &CopyOptions::default(), &NoProgress)
        .await
        .unwrap();
    assert_eq!(resumed.skipped, partial.len() as u64);
    assert_eq!(resumed.copied + resumed.skipped, resumed.objects);
    assert_eq!(contents(&dst).await, expected);

    // Objects lost from the destination later (a partial restore of the
    // backup, a deleted digest) are copied again, and only those.
    let lost = [
        expected.keys().next().unwrap().clone(),
        DIGESTS[1].to_owned(),
    ];
    for rel in &lost {
        dst.object_store()
            .delete(&Path::from(rel.as_str()))
            .await
            .unwrap();
    }
    let order = Order::default();
    let again = copy_store(&src, &dst, &CopyOptions::default(), &order)
        .await
        .unwrap();
    assert_eq!(again.copied, 2);
    let copied: Vec<String> = order
        .0
        .into_inner()
        .unwrap()
        .into_iter()
        .filter(|(_, o)| *o == ObjectOutcome::Copied)
        .map(|(p, _)| p)
        .collect();
    assert_eq!(copied, lost);
    assert_eq!(contents(&dst).await, expected);
}

#[tokio::test]
async fn refuses_an_empty_source_and_nested_stores() {
    let (src_dir, dst_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let empty = open(&src_dir);
    put(&empty, ".hidden", "x").await;
    let err = copy_store(
        &empty,
        &open(&dst_dir),
        &CopyOptions::default(),
        &NoProgress,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, CopyError::EmptySource { .. }), "{err}");

    let inner = Store::open(
        src_dir.path().join("backup").to_str().unwrap(),
        &Default::default(),
    )
    .unwrap();
    let err = copy_store(&empty, &inner, &CopyOptions::default(), &NoProgress)
        .await
        .unwrap_err();
    assert!(matches!(err, CopyError::Overlap { .. }), "{err}");
}

/// The offset of the last byte of a top-level column's chunk in a Parquet
/// file (its last value, for a column of fixed-size values stored plain and
/// uncompressed).
fn last_byte_of_column(file: &[u8], name: &str) -> usize {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let reader = SerializedFileReader::new(bytes::Bytes::copy_from_slice(file)).unwrap();
    let columns = reader.metadata().row_group(0).columns();
    let c = columns
        .iter()
        .find(|c| c.column_path().string() == name)
        .unwrap();
    assert_eq!(c.compression(), parquet::basic::Compression::UNCOMPRESSED);
    let (start, len) = c.byte_range();
    usize::try_from(start + len).unwrap() - 1
}
