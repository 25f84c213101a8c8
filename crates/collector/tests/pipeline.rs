//! The policy → chain → WAL → sink stage, embedded as a library, against a
//! real local store: durability before the answer, chains continuing across
//! restarts, spill to the WAL, and recovery from a crash between a file put
//! and its WAL release.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use otel_audit_collector::config::Config;
use otel_audit_collector::ingest::{Ingest, Principal};
use otel_audit_collector::metrics::Metrics;
use otel_audit_collector::service::Collector;
use otel_audit_event::{AuditEvent, Category, Record};
use otel_audit_storage::verify::{NoProgress, VerifyOptions, verify};
use otel_audit_storage::{PublicKeys, Store, TimeRange, list_files, read_file};

fn config(dir: &Path, extra: &[&str]) -> Config {
    let mut sets = vec![
        format!("storage.url={}", dir.join("store").display()),
        format!("wal.dir={}", dir.join("wal").display()),
        "collector.instance_id=test-1".to_owned(),
        "storage.retry_initial_backoff_ms=10".to_owned(),
        "collector.shutdown_timeout_secs=5".to_owned(),
    ];
    sets.extend(extra.iter().map(|s| (*s).to_owned()));
    Config::load(None, &sets).expect("valid test config")
}

fn event(tenant: &str, i: usize) -> AuditEvent {
    let mut e = AuditEvent::new(tenant, "chat-api", Category::Inference, "gen_ai.chat");
    e.actor.id = Some(format!("user-{}", i % 7));
    e.gen_ai.request_model = Some("gpt-4o".into());
    e.gen_ai.input_tokens = Some(i as i64);
    e.attributes
        .insert("gen_ai.input.messages".into(), format!("CANARY-PROMPT-{i}"));
    e
}

async fn ingest_n(c: &Collector, tenant: &str, range: std::ops::Range<usize>) -> Vec<uuid::Uuid> {
    let events: Vec<(usize, AuditEvent)> = range.map(|i| (i, event(tenant, i))).collect();
    let ids = events.iter().map(|(_, e)| e.event_id).collect();
    let ack = c
        .pipeline()
        .ingest(&Principal::default(), events.clone(), Vec::new())
        .await
        .expect("ingest");
    assert!(ack.rejected.is_empty(), "{:?}", ack.rejected);
    assert_eq!(ack.accepted, events.len());
    ids
}

async fn stored(dir: &Path) -> Vec<Record> {
    let store = Store::open(
        &dir.join("store").display().to_string(),
        &Default::default(),
    )
    .unwrap();
    let listing = list_files(&store, &TimeRange::all()).await.unwrap();
    let mut out = Vec::new();
    for f in listing.files {
        out.extend(read_file(&store, &f.path).await.unwrap());
    }
    out
}

async fn verify_intact(dir: &Path) {
    let store = Store::open(
        &dir.join("store").display().to_string(),
        &Default::default(),
    )
    .unwrap();
    verify_signed(&store, dir).await;
}

/// Verifies with the collector's generated public key, so digests'
/// signatures are checked too.
async fn verify_signed(store: &Store, dir: &Path) -> otel_audit_storage::VerifyReport {
    let mut keys = PublicKeys::new();
    keys.load(&dir.join("wal/digest-signing-key.pub.pem"))
        .expect("the collector wrote its public key");
    let opts = VerifyOptions {
        keys,
        ..VerifyOptions::default()
    };
    let report = verify(store, &opts, &NoProgress).await.unwrap();
    assert!(report.is_intact(), "{:#?}", report.problems);
    assert!(report.digests.signatures_checked);
    report
}

fn wal_segments(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("wal"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".wal")
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_chained_stored_and_redacted_and_chains_continue_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &[]);
    let c = Collector::start(&cfg, Arc::new(Metrics::default()))
        .await
        .unwrap();
    let mut ids: BTreeSet<uuid::Uuid> = BTreeSet::new();
    ids.extend(ingest_n(&c, "acme", 0..50).await);
    ids.extend(ingest_n(&c, "globex", 0..20).await);
    ids.extend(ingest_n(&c, "acme", 50..80).await);
    c.record_system_event("collector.start", &[]).await.unwrap();
    let report = c.shutdown().await.unwrap();
    assert!(report.drained, "{report:?}");
    assert_eq!(wal_segments(dir.path()), 0);

    // Restart: the chains continue where they stood.
    let c = Collector::start(&cfg, Arc::new(Metrics::default()))
        .await
        .unwrap();
    ids.extend(ingest_n(&c, "acme", 80..90).await);
    c.shutdown().await.unwrap();

    let records = stored(dir.path()).await;
    let acme: Vec<&Record> = records
        .iter()
        .filter(|r| r.chain_id == "test-1.acme")
        .collect();
    assert_eq!(acme.len(), 90);
    let mut seqs: Vec<u64> = acme.iter().map(|r| r.seq).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (0..90).collect::<Vec<u64>>());
    let got: BTreeSet<uuid::Uuid> = records
        .iter()
        .filter(|r| r.event.tenant != "otel-audit")
        .map(|r| r.event.event_id)
        .collect();
    assert_eq!(got, ids, "every acknowledged event exactly once");
    // Server-side policy: content HMAC'd before anything was written.
    for r in &records {
        for (k, v) in &r.event.attributes {
            assert!(!v.contains("CANARY"), "{k} stored in clear");
        }
    }
    let own: Vec<&Record> = records
        .iter()
        .filter(|r| r.event.tenant == "otel-audit")
        .collect();
    let actions: Vec<&str> = own.iter().map(|r| r.event.action.as_str()).collect();
    assert!(actions.contains(&"collector.stop"), "{actions:?}");
    verify_intact(dir.path()).await;
    for entry in walk(dir.path()) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(
            !bytes.windows(7).any(|w| w == b"CANARY-"),
            "canary in {}",
            entry.display()
        );
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_feed_spills_to_the_wal_and_nothing_is_lost() {
    full_feed(0).await;
}

/// With the default wait, requests wait for the busy sink instead of
/// spilling, and nothing is lost either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_feed_makes_requests_wait_for_a_busy_sink() {
    full_feed(1000).await;
}

async fn full_feed(wait_ms: u64) {
    let dir = tempfile::tempdir().unwrap();
    // A 1 MiB feed and small files: most batches do not fit; without a wait
    // they are read back from the WAL.
    let wait = format!("storage.max_buffer_wait_ms={wait_ms}");
    let cfg = config(
        dir.path(),
        &[
            "storage.max_buffer_bytes=1048576",
            "storage.max_file_rows=500",
            &wait,
        ],
    );
    let metrics = Arc::new(Metrics::default());
    let c = Arc::new(Collector::start(&cfg, metrics.clone()).await.unwrap());
    let mut tasks = Vec::new();
    for t in 0..4 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for b in 0..10 {
                let base = t * 100_000 + b * 500;
                ids.extend(ingest_n(&c, "acme", base..base + 500).await);
            }
            ids
        }));
    }
    let mut ids = BTreeSet::new();
    for t in tasks {
        ids.extend(t.await.unwrap());
    }
    let c = Arc::try_unwrap(c).unwrap();
    assert!(c.shutdown().await.unwrap().drained);
    let records = stored(dir.path()).await;
    let got: BTreeSet<uuid::Uuid> = records
        .iter()
        .filter(|r| r.event.tenant == "acme")
        .map(|r| r.event.event_id)
        .collect();
    assert_eq!(got.len(), 20_000);
    assert_eq!(got, ids);
    verify_intact(dir.path()).await;
    let waited = metrics.render("");
    let waits = waited
        .lines()
        .find_map(|l| l.strip_prefix("otel_audit_feed_wait_seconds_count "))
        .expect("the feed wait histogram");
    // One per request, and one per event of the collector's own.
    assert!(waits.parse::<u64>().unwrap() >= 40, "{waits}");
    if wait_ms == 0 {
        assert!(
            metrics.sink_catch_ups.get() > 0,
            "the test should have made the sink read back from the WAL"
        );
    }
    // Whether requests waited depends on timing; the waits themselves are
    // tested in `pipeline`'s unit tests, on a paused clock.
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_stored_before_a_crash_are_not_written_twice() {
    let dir = tempfile::tempdir().unwrap();
    // Files close only at shutdown, so the WAL copy below holds every row
    // unreleased: what a crash right after the puts would leave behind.
    let cfg = config(dir.path(), &["storage.flush_interval_secs=3600"]);
    let c = Collector::start(&cfg, Arc::new(Metrics::default()))
        .await
        .unwrap();
    let mut ids: BTreeSet<uuid::Uuid> = BTreeSet::new();
    ids.extend(ingest_n(&c, "acme", 0..30).await);
    let crashed_wal = dir.path().join("wal-at-crash");
    copy_dir(&dir.path().join("wal"), &crashed_wal);
    c.shutdown().await.unwrap();
    std::fs::remove_dir_all(dir.path().join("wal")).unwrap();
    std::fs::rename(&crashed_wal, dir.path().join("wal")).unwrap();
    std::fs::remove_file(dir.path().join("wal").join("LOCK")).ok();

    // Restart on the old WAL: replay meets files already in the store.
    let c = Collector::start(&cfg, Arc::new(Metrics::default()))
        .await
        .unwrap();
    ids.extend(ingest_n(&c, "acme", 30..40).await);
    assert!(c.shutdown().await.unwrap().drained);

    let records = stored(dir.path()).await;
    let acme: Vec<&Record> = records
        .iter()
        .filter(|r| r.event.tenant == "acme")
        .collect();
    let got: BTreeSet<uuid::Uuid> = acme.iter().map(|r| r.event.event_id).collect();
    assert_eq!(acme.len(), 40, "no row twice");
    assert_eq!(got, ids);
    verify_intact(dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authenticated_tenant_cannot_write_into_another_tenants_chain() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &[]);
    let c = Collector::start(&cfg, Arc::new(Metrics::default()))
        .await
        .unwrap();
    let principal = Principal {
        tenant: Some("acme".into()),
        token_name: Some("acme-app".into()),
    };
    let ack = c
        .pipeline()
        .ingest(
            &principal,
            vec![(0, event("acme", 0)), (1, event("globex", 1))],
            Vec::new(),
        )
        .await
        .unwrap();
    assert_eq!(ack.accepted, 1);
    assert_eq!(ack.rejected.len(), 1);
    assert_eq!(ack.rejected[0].index, 1);
    assert_eq!(ack.rejected[0].reason, "tenant_mismatch");
    c.shutdown().await.unwrap();
    let records = stored(dir.path()).await;
    assert!(records.iter().all(|r| r.event.tenant != "globex"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digests_are_signed_at_shutdown_and_start_and_continue_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &[]);
    let store = Store::open(
        &dir.path().join("store").display().to_string(),
        &Default::default(),
    )
    .unwrap();
    let c = Collector::start(&cfg, Arc::new(Metrics::default()))
        .await
        .unwrap();
    ingest_n(&c, "acme", 0..40).await;
    assert!(c.shutdown().await.unwrap().drained);
    // One final digest per chain: acme's and the collector's own.
    let first = verify_signed(&store, dir.path()).await;
    assert_eq!(first.digests.digests, 2, "{:?}", first.digests);
    assert_eq!(first.digests.files_pending, 0);

    let c = Collector::start(&cfg, Arc::new(Metrics::default()))
        .await
        .unwrap();
    ingest_n(&c, "acme", 40..60).await;
    assert!(c.shutdown().await.unwrap().drained);
    let second = verify_signed(&store, dir.path()).await;
    // Per chain: final, start-up, final.
    assert_eq!(second.digests.digests, 6, "{:?}", second.digests);
    assert_eq!(second.digests.digests_valid, 6);
    assert_eq!(second.digests.files_in_digests, second.files_verified);

    // Deleting the newest file is now visible.
    let listing = list_files(&store, &TimeRange::all()).await.unwrap();
    let newest = listing
        .files
        .iter()
        .filter(|f| f.file.chain_id == "test-1.acme")
        .max_by_key(|f| f.file.first_seq)
        .unwrap();
    std::fs::remove_file(dir.path().join("store").join(&newest.path)).unwrap();
    let mut keys = PublicKeys::new();
    keys.load(&dir.path().join("wal/digest-signing-key.pub.pem"))
        .unwrap();
    let opts = VerifyOptions {
        keys,
        ..VerifyOptions::default()
    };
    let report = verify(&store, &opts, &NoProgress).await.unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.kind == otel_audit_storage::ProblemKind::MissingFile
                && p.path.as_deref() == Some(newest.path.as_str())),
        "{:#?}",
        report.problems
    );
}

/// Old data of another instance's chains, with its digests: `days_ago` old.
async fn old_chain(
    store: &Store,
    tenant: &str,
    days_ago: i64,
    signer: &otel_audit_storage::DigestSigner,
) -> usize {
    use otel_audit_storage::digest::{DigestChain, DigestFile, put_digest};
    let t0 = chrono::Utc::now() - chrono::Duration::days(days_ago);
    let chain_id = format!("old-1.{tenant}");
    let mut chain = otel_audit_event::Chain::new(&chain_id, tenant).unwrap();
    let records: Vec<Record> = (0..30)
        .map(|i| {
            chain
                .append(t0 + chrono::Duration::seconds(i), event(tenant, i as usize))
                .unwrap()
        })
        .collect();
    let mut digests = DigestChain::new(&chain_id, tenant, 3600, t0);
    let runs = otel_audit_storage::split_runs(records, 10);
    let n = runs.len();
    for run in runs {
        let (enc, _) = otel_audit_storage::write_file(store, run, &Default::default())
            .await
            .unwrap();
        digests.add_file(DigestFile::of(&enc));
    }
    let d = digests.seal(t0 + chrono::Duration::hours(1), true, signer);
    put_digest(store, &d).await.unwrap();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_expired_files_records_tombstones_and_honours_holds() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        &dir.path().join("store").display().to_string(),
        &Default::default(),
    )
    .unwrap();
    let old_signer = otel_audit_storage::DigestSigner::generate().unwrap();
    let acme_files = old_chain(&store, "acme", 30, &old_signer).await;
    let globex_files = old_chain(&store, "globex", 30, &old_signer).await;
    let recent_files = old_chain(&store, "initech", 2, &old_signer).await;
    let cfg = config(
        dir.path(),
        &[
            "retention.enabled=true",
            "retention.rules=[{category: inference, days: 7}, {category: system, days: 90}]",
            "retention.legal_holds=[{name: case-17, reason: litigation, tenant: globex}]",
        ],
    );
    let c = Collector::start(&cfg, Arc::new(Metrics::default()))
        .await
        .unwrap();
    ingest_n(&c, "acme", 0..10).await;
    let run = c.run_retention().await.unwrap();
    assert_eq!(run.files_deleted, acme_files, "{run:?}");
    assert_eq!(run.files_held, globex_files);
    assert_eq!(run.digests_deleted, 0, "a chain's newest digest is kept");
    // A second run finds nothing new to delete (the held files stay held).
    let again = c.run_retention().await.unwrap();
    assert_eq!(again.files_deleted, 0);
    assert!(c.shutdown().await.unwrap().drained);

    let listing = list_files(&store, &TimeRange::all()).await.unwrap();
    let count = |chain: &str| {
        listing
            .files
            .iter()
            .filter(|f| f.file.chain_id == chain)
            .count()
    };
    assert_eq!(count("old-1.acme"), 0);
    assert_eq!(count("old-1.globex"), globex_files);
    assert_eq!(count("old-1.initech"), recent_files);

    // Tombstones are in acme's chain; the blocked deletion in globex's.
    let rows = stored(dir.path()).await;
    let tombstones: Vec<_> = rows
        .iter()
        .filter(|r| r.event.action == "retention.delete")
        .collect();
    assert_eq!(tombstones.len(), acme_files);
    assert!(tombstones.iter().all(|r| r.chain_id == "test-1.acme"
        && r.event.category == Category::Compliance
        && r.event.target.kind.as_deref() == Some("file")));
    assert!(rows.iter().any(|r| r.event.action == "retention.hold"
        && r.chain_id == "test-1.globex"
        && r.event.outcome == otel_audit_event::Outcome::Blocked));

    // verify accepts the recorded deletions and nothing else.
    let mut keys = PublicKeys::new();
    keys.insert(old_signer.public_key());
    keys.load(&dir.path().join("wal/digest-signing-key.pub.pem"))
        .unwrap();
    let opts = VerifyOptions {
        keys: keys.clone(),
        ..VerifyOptions::default()
    };
    let report = verify(&store, &opts, &NoProgress).await.unwrap();
    assert!(report.is_intact(), "{:#?}", report.problems);
    assert_eq!(report.deletions_recorded, acme_files as u64);
    assert!(report.gaps_explained_by_deletions > 0);

    // A deletion nothing records is still reported.
    let victim = listing
        .files
        .iter()
        .find(|f| f.file.chain_id == "old-1.globex")
        .unwrap();
    std::fs::remove_file(dir.path().join("store").join(&victim.path)).unwrap();
    let report = verify(&store, &opts, &NoProgress).await.unwrap();
    assert!(!report.is_intact());
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.kind == otel_audit_storage::ProblemKind::MissingFile)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_backup_copies_verifies_and_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        &dir.path().join("store").display().to_string(),
        &Default::default(),
    )
    .unwrap();
    let signer = otel_audit_storage::DigestSigner::generate().unwrap();
    let files = old_chain(&store, "acme", 2, &signer).await;
    let backup_dir = dir.path().join("backup");
    let cfg = config(
        dir.path(),
        &[
            "backup.enabled=true",
            &format!("backup.to={}", backup_dir.display()),
        ],
    );
    let c = Collector::start(&cfg, Arc::new(Metrics::default()))
        .await
        .unwrap();
    let first = c.run_backup().await.expect("configured").unwrap();
    assert_eq!(first.copied, files as u64 + 1, "{first:?}");
    assert_eq!(first.intact, Some(true));
    let second = c.run_backup().await.unwrap().unwrap();
    assert_eq!((second.copied, second.skipped), (0, files as u64 + 1));
    assert!(c.shutdown().await.unwrap().drained);

    let rows = stored(dir.path()).await;
    let runs: Vec<_> = rows
        .iter()
        .filter(|r| r.event.action == "backup.completed")
        .collect();
    assert_eq!(runs.len(), 2);
    assert!(runs.iter().all(|r| {
        r.event.category == Category::System
            && r.event
                .attributes
                .get("backup.verified")
                .map(String::as_str)
                == Some("intact")
    }));
    assert_eq!(
        runs[0]
            .event
            .attributes
            .get("backup.objects_copied")
            .map(String::as_str),
        Some((files + 1).to_string().as_str())
    );

    // The backup verifies on its own, signatures included.
    let backup = Store::open(&backup_dir.display().to_string(), &Default::default()).unwrap();
    let mut keys = PublicKeys::new();
    keys.insert(signer.public_key());
    let opts = VerifyOptions {
        keys,
        ..VerifyOptions::default()
    };
    let report = verify(&backup, &opts, &NoProgress).await.unwrap();
    assert!(report.is_intact(), "{:#?}", report.problems);
    assert_eq!(report.files_verified, files as u64);

    let err = Config::load(None, &["backup.enabled=true".to_owned()]).and_then(|c| c.validate());
    assert!(err.unwrap_err().to_string().contains("backup.to"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digests_are_made_each_period_quiet_or_not() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        &["digests.period_secs=10", "storage.flush_interval_secs=1"],
    );
    let c = Collector::start(&cfg, Arc::new(Metrics::default()))
        .await
        .unwrap();
    ingest_n(&c, "acme", 0..5).await;
    // Two period boundaries pass: the second digest of acme's chain lists no
    // file (a quiet period still gets one).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(40);
    while c.metrics().digests_written.get() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "no periodic digests within 40 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(c.shutdown().await.unwrap().drained);
    let store = Store::open(
        &dir.path().join("store").display().to_string(),
        &Default::default(),
    )
    .unwrap();
    let report = verify_signed(&store, dir.path()).await;
    // Two periodic and the final one, at least, for acme's chain.
    assert!(report.digests.digests >= 3, "{:?}", report.digests);
    let listing = otel_audit_storage::digest::list_digests(&store)
        .await
        .unwrap();
    let acme = &listing.chains["test-1.acme"];
    assert!(acme.len() >= 3);
    let mut quiet = 0;
    for d in acme {
        let bytes = std::fs::read(dir.path().join("store").join(&d.path)).unwrap();
        let parsed = otel_audit_storage::StoredDigest::parse(&d.path, &bytes).unwrap();
        if parsed.digest.files.is_empty() {
            quiet += 1;
        }
    }
    assert!(quiet >= 1, "a quiet period still gets its digest");
}
