//! WAL throughput: durable appends per second with 1, 8 and 64 concurrent
//! appenders of ~600-byte records (each append waits for its fsync), against
//! raw `write_all` + `sync_data` on the same disk in the same run; and a
//! restart's recovery: `Wal::open` (the scan that checks every record) and
//! the replay of every record after it, over a WAL of 100,000 records.
//!
//! `cargo bench -p otel-audit-collector --bench wal`
//!
//! Each appender chains its own records (`Chain::append`: validation and one
//! SHA-256) right before appending, as the pipeline does; that work is inside
//! the measurement. The baselines write pre-encoded bytes.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_main};
use otel_audit_collector::wal::{ChainHead, Wal, WalOptions};
use otel_audit_event::{AuditEvent, Category, Chain, Record};

/// A realistic event: ~15 attributes' worth of typed fields and attributes,
/// about 600 bytes in canonical form.
fn record(chain: &mut Chain) -> Record {
    let i = chain.next_seq();
    let mut e = AuditEvent::new(chain.tenant(), "chat-api", Category::Inference, "llm.chat");
    e.service.version = Some("1.4.2".into());
    e.service.environment = Some("prod".into());
    e.actor.id = Some(format!("user-{}", i % 1000));
    e.actor.session = Some(format!("sess-{:08x}", i * 7919));
    e.gen_ai.provider = Some("openai".into());
    e.gen_ai.operation = Some("chat".into());
    e.gen_ai.request_model = Some("gpt-4o".into());
    e.gen_ai.response_model = Some("gpt-4o-2024-08-06".into());
    e.gen_ai.input_tokens = Some(512);
    e.gen_ai.output_tokens = Some(128);
    e.trace.trace_id = Some("0af7651916cd43dd8448eb211c80319c".into());
    e.trace.span_id = Some("b7ad6b7169203331".into());
    e.attributes
        .insert("http.route".into(), "/v1/chat/completions".into());
    e.attributes
        .insert("client.address".into(), "10.1.2.3".into());
    e.attributes.insert("note".into(), "n".repeat(160));
    chain.append(chrono::Utc::now(), e).unwrap()
}

fn encoded_len(r: &Record) -> usize {
    let mut v = Vec::new();
    r.canonical_bytes(&mut v);
    v.len()
}

struct Setup {
    wal: Wal,
    chains: Vec<Mutex<Chain>>,
}

impl Setup {
    fn new(dir: &Path, appenders: usize) -> Setup {
        let options = WalOptions {
            dir: dir.to_owned(),
            max_wal_bytes: 16 << 30,
            ..WalOptions::default()
        };
        let (wal, _) = Wal::open(options).unwrap();
        let chains = (0..appenders)
            .map(|t| Mutex::new(Chain::new(format!("bench.t{t}"), format!("t{t}")).unwrap()))
            .collect();
        Setup { wal, chains }
    }

    /// Every appender appends `iters` times `batch` records, each append
    /// waiting for its fsync. Returns the wall time.
    fn run(&self, iters: u64, batch: usize) -> Duration {
        let barrier = Barrier::new(self.chains.len() + 1);
        let elapsed = std::thread::scope(|s| {
            for chain in &self.chains {
                let barrier = &barrier;
                let wal = &self.wal;
                s.spawn(move || {
                    let mut chain = chain.lock().unwrap();
                    barrier.wait();
                    for _ in 0..iters {
                        let records: Vec<Record> = (0..batch).map(|_| record(&mut chain)).collect();
                        wal.submit(&records).unwrap().wait().unwrap();
                    }
                    barrier.wait();
                });
            }
            barrier.wait();
            let start = Instant::now();
            barrier.wait();
            start.elapsed()
        });
        // The store "holds" everything: let the WAL delete its segments.
        for chain in &self.chains {
            let chain = chain.lock().unwrap();
            if chain.next_seq() > 0 {
                let head = ChainHead {
                    seq: chain.next_seq() - 1,
                    hash: chain.head(),
                };
                self.wal.release(chain.id(), head).unwrap();
            }
        }
        elapsed
    }
}

fn bench(c: &mut Criterion) {
    let root = tempfile::tempdir().unwrap();
    let sample = record(&mut Chain::new("bench.sample", "sample").unwrap());
    eprintln!(
        "record: {} canonical bytes; WAL dir {}",
        encoded_len(&sample),
        root.path().display()
    );
    let frame_bytes = encoded_len(&sample) + 68 + 28;

    let mut g = c.benchmark_group("wal");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(6));

    // Baselines: what the disk does without group commit.
    for per_sync in [1usize, 64] {
        g.throughput(Throughput::Elements(per_sync as u64));
        g.bench_function(
            BenchmarkId::new(
                "raw_write_sync_data",
                format!("{per_sync}_records_per_fsync"),
            ),
            |b| {
                let path = root.path().join(format!("raw-{per_sync}"));
                let mut file = File::create(&path).unwrap();
                let buf = vec![0x5a_u8; frame_bytes * per_sync];
                let mut written = 0u64;
                b.iter(|| {
                    file.write_all(&buf).unwrap();
                    file.sync_data().unwrap();
                    written += buf.len() as u64;
                    if written > 256 << 20 {
                        file = File::create(&path).unwrap();
                        written = 0;
                    }
                });
            },
        );
    }

    // One record per append: appends/s = records/s.
    for appenders in [1usize, 8, 64] {
        let dir = root.path().join(format!("wal-{appenders}"));
        let setup = Setup::new(&dir, appenders);
        g.throughput(Throughput::Elements(appenders as u64));
        g.bench_function(
            BenchmarkId::new("wal_append_1_record", format!("{appenders}_appenders")),
            |b| b.iter_custom(|iters| setup.run(iters, 1)),
        );
        let stats = setup.wal.stats();
        eprintln!(
            "  {appenders} appenders: {} appends in {} group commits ({:.1} appends per fsync)",
            stats.appends_written,
            stats.groups_written,
            stats.appends_written as f64 / stats.groups_written.max(1) as f64
        );
    }

    // OTLP exports arrive in batches: 8 appenders of 100 records each.
    let dir = root.path().join("wal-batch");
    let setup = Setup::new(&dir, 8);
    g.throughput(Throughput::Elements(8 * 100));
    g.bench_function(
        BenchmarkId::new("wal_append_100_records", "8_appenders"),
        |b| b.iter_custom(|iters| setup.run(iters, 100)),
    );
    g.finish();

    recovery(c, &root.path().join("wal-recovery"));
}

/// Records in the WAL the recovery benches open.
const RECOVERY_RECORDS: u64 = 100_000;

/// A restart after a crash: everything the WAL holds is scanned, then replayed.
fn recovery(c: &mut Criterion, dir: &Path) {
    let options = WalOptions {
        dir: dir.to_owned(),
        max_wal_bytes: 16 << 30,
        reserve_bytes: Some(0),
        ..WalOptions::default()
    };
    {
        let (wal, _) = Wal::open(options.clone()).unwrap();
        // Four tenants' chains, appended in batches of 500 as requests are.
        let mut chains: Vec<Chain> = (0..4)
            .map(|t| Chain::new(format!("bench.t{t}"), format!("t{t}")).unwrap())
            .collect();
        for batch in 0..RECOVERY_RECORDS / 500 {
            let chain = &mut chains[batch as usize % 4];
            let records: Vec<Record> = (0..500).map(|_| record(chain)).collect();
            wal.submit(&records).unwrap().wait().unwrap();
        }
    }
    let mut g = c.benchmark_group("wal_recovery");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8))
        .throughput(Throughput::Elements(RECOVERY_RECORDS));
    g.bench_function("open", |b| {
        b.iter(|| {
            let (_, replay) = Wal::open(options.clone()).unwrap();
            assert_eq!(replay.record_count(), RECOVERY_RECORDS);
        })
    });
    g.bench_function("open_and_replay", |b| {
        b.iter(|| {
            let (_, replay) = Wal::open(options.clone()).unwrap();
            let mut replayed = 0u64;
            for r in replay {
                r.unwrap();
                replayed += 1;
            }
            assert_eq!(replayed, RECOVERY_RECORDS);
        })
    });
    g.finish();
}

// The macro defines an undocumented `pub fn benches`.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::bench);
}
criterion_main!(group::benches);
