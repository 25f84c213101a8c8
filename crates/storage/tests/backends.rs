//! One storage suite, run against every backend: in-memory, local disk, and a
//! real S3-protocol server (moto).

mod common;
#[path = "../../../tests/support/moto.rs"]
mod moto;

use chrono::Duration;
use futures::TryStreamExt;
use otel_audit_event::{Chain, Record};
use otel_audit_storage::{
    NoProgress, SinkError, Store, StoreOptions, TimeRange, VerifyOptions, WriteOutcome,
    WriterOptions, list_files, read_records, split_runs, verify, write_file,
};

use common::{event, records, t0, write_all};

async fn suite(store: Store) {
    let all = records(300);
    let files = write_all(&store, all.clone(), 64).await;
    assert!(
        files >= 2 * 3 * 2,
        "expected several files per hour and chain, got {files}"
    );

    // A retry of the same file is recognised, not duplicated.
    let first_run = split_runs(all.clone(), 64).remove(0);
    let (_, outcome) = write_file(&store, first_run.clone(), &WriterOptions::default())
        .await
        .unwrap();
    assert_eq!(outcome, WriteOutcome::AlreadyPresent);

    // Other rows under a taken name are refused, and the file is untouched.
    let mut forked = Chain::new("c1.acme", "acme").unwrap();
    let fork: Vec<Record> = (0..5)
        .map(|i| forked.append(t0(), event("acme", 1000 + i)).unwrap())
        .collect();
    let err = write_file(&store, fork, &WriterOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, SinkError::Conflict { .. }), "{err}");
    assert!(err.to_string().contains("refusing to overwrite"), "{err}");

    // Everything reads back exactly as written.
    let mut back: Vec<Record> = read_records(&store, TimeRange::all())
        .try_collect()
        .await
        .unwrap();
    back.sort_by(|a, b| (&a.chain_id, a.seq).cmp(&(&b.chain_id, b.seq)));
    let mut expected = all.clone();
    expected.sort_by(|a, b| (&a.chain_id, a.seq).cmp(&(&b.chain_id, b.seq)));
    assert_eq!(back.len(), expected.len());
    assert!(back == expected, "records differ after a round trip");

    // A time range prunes partitions by path and filters rows by receive time.
    let range = TimeRange {
        from: Some(t0() + Duration::hours(1)),
        to: Some(t0() + Duration::hours(1) + Duration::minutes(30)),
    };
    let listing = list_files(&store, &range).await.unwrap();
    assert!(!listing.files.is_empty());
    assert!(
        listing
            .files
            .iter()
            .all(|f| f.path.contains("/date=2026-01-05/hour=11/")),
        "{:?}",
        listing.files.iter().map(|f| &f.path).collect::<Vec<_>>()
    );
    let in_range: Vec<Record> = read_records(&store, range).try_collect().await.unwrap();
    let want = all.iter().filter(|r| range.contains(r.received_at)).count();
    assert_eq!(in_range.len(), want);
    assert!(want > 0);

    // And the whole store verifies.
    let report = verify(&store, &VerifyOptions::default(), &NoProgress)
        .await
        .unwrap();
    assert!(report.is_intact(), "{:#?}", report.problems);
    assert_eq!(report.events_verified, all.len() as u64);
    assert_eq!(report.chains.len(), 2);
    assert_eq!(report.files_verified, files as u64);
    let acme = &report.chains[0];
    assert_eq!(
        (acme.chain_id.as_str(), acme.first_seq, acme.last_seq),
        ("c1.acme", Some(0), Some(299))
    );

    // A range verifies only its partitions.
    let partial = verify(
        &store,
        &VerifyOptions {
            range,
            ..VerifyOptions::default()
        },
        &NoProgress,
    )
    .await
    .unwrap();
    assert!(partial.is_intact(), "{:#?}", partial.problems);
    assert_eq!(partial.files_verified, listing.files.len() as u64);
}

#[tokio::test]
async fn memory() {
    suite(Store::open("memory://", &StoreOptions::default()).unwrap()).await;
}

#[tokio::test]
async fn local_disk() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().join("store").display());
    suite(Store::open(&url, &StoreOptions::default()).unwrap()).await;
    // A plain path opens the same store.
    let again = Store::open(
        dir.path().join("store").to_str().unwrap(),
        &StoreOptions::default(),
    )
    .unwrap();
    assert_eq!(again.url(), url);
}

#[tokio::test]
async fn s3_server() {
    let server = moto::Moto::start();
    server.create_bucket("audit-suite");
    let store = Store::open("s3://audit-suite/prod/audit", &server.options()).unwrap();
    assert_eq!(store.url(), "s3://audit-suite/prod/audit");
    suite(store).await;
}

#[tokio::test]
async fn s3_unreachable_is_an_error_not_a_hang() {
    let opts = StoreOptions {
        endpoint: Some("http://127.0.0.1:1".into()),
        region: Some("us-east-1".into()),
        access_key_id: Some("x".into()),
        secret_access_key: Some("y".into()),
        allow_http: Some(true),
        max_retries: Some(1),
        ..Default::default()
    };
    let store = Store::open("s3://nowhere/p", &opts).unwrap();
    let err = verify(&store, &VerifyOptions::default(), &NoProgress)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("s3://nowhere/p"), "{err}");
}
