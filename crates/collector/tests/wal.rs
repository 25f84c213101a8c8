//! The write-ahead log: round trips, group commit, torn tails, corruption,
//! release, the size cap, and kill -9 crash recovery.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use otel_audit_collector::wal::{ChainHead, Wal, WalError, WalOptions};
use otel_audit_event::{AuditEvent, Category, Chain, Record};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;

fn options(dir: &Path) -> WalOptions {
    WalOptions {
        dir: dir.to_owned(),
        max_segment_bytes: 16 * KIB,
        max_wal_bytes: 64 * MIB,
        max_queue_bytes: 256 * KIB,
        verify_hashes_on_append: true,
        reserve_bytes: None,
    }
}

/// Now, at the microsecond precision the format stores, so that a replayed
/// record compares equal to the appended one.
fn now_us() -> DateTime<Utc> {
    DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).unwrap()
}

/// A realistic ~600-byte event.
fn record(chain: &mut Chain, i: u64) -> Record {
    let mut e = AuditEvent::new(chain.tenant(), "chat-api", Category::Inference, "llm.chat");
    e.time = now_us();
    e.actor.id = Some(format!("user-{}", i % 97));
    e.gen_ai.provider = Some("openai".into());
    e.gen_ai.request_model = Some("gpt-4o".into());
    e.gen_ai.input_tokens = Some(i as i64);
    e.attributes.insert("i".into(), i.to_string());
    e.attributes
        .insert("http.route".into(), "/v1/chat/completions".into());
    e.attributes.insert("note".into(), "n".repeat(250));
    chain.append(now_us(), e).unwrap()
}

fn records(chain: &mut Chain, n: u64) -> Vec<Record> {
    (0..n)
        .map(|_| {
            let seq = chain.next_seq();
            record(chain, seq)
        })
        .collect()
}

fn replay_all(replay: otel_audit_collector::wal::Replay) -> Vec<Record> {
    records_of(replay).unwrap()
}

/// The replay's rows, decoded.
fn records_of(
    replay: otel_audit_collector::wal::Replay,
) -> Result<Vec<Record>, otel_audit_collector::wal::WalError> {
    replay
        .map(|row| Ok(row?.to_record().expect("a replayed row decodes")))
        .collect()
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    v.sort();
    v
}

fn head_of(r: &Record) -> ChainHead {
    ChainHead {
        seq: r.seq,
        hash: r.hash,
    }
}

/// Checks that each chain's records are consecutive and linked.
fn assert_linked(records: &[Record]) {
    let mut last: HashMap<&str, &Record> = HashMap::new();
    for r in records {
        if let Some(p) = last.get(r.chain_id.as_str()) {
            assert_eq!(r.seq, p.seq + 1, "chain {}", r.chain_id);
            assert_eq!(r.prev_hash, p.hash, "chain {} seq {}", r.chain_id, r.seq);
        }
        assert_eq!(r.compute_hash(&mut Vec::new()), r.hash);
        last.insert(&r.chain_id, r);
    }
}

#[test]
fn appended_records_replay_in_order_and_chains_resume() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, replay) = Wal::open(options(dir.path())).unwrap();
    assert_eq!(replay.record_count(), 0);
    assert!(replay.heads().is_empty());
    let mut a = Chain::new("c1.acme", "acme").unwrap();
    let mut b = Chain::new("c1.globex", "globex").unwrap();
    let mut all = Vec::new();
    for round in 0..30 {
        let batch = if round % 3 == 0 {
            let mut v = records(&mut a, 2);
            v.extend(records(&mut b, 3));
            v
        } else {
            records(&mut a, 1 + round % 4)
        };
        let ack = wal.submit(&batch).unwrap().wait().unwrap();
        let last_a = batch
            .iter()
            .rev()
            .find(|r| r.chain_id == "c1.acme")
            .unwrap();
        assert_eq!(ack.chains[0], ("c1.acme".to_owned(), head_of(last_a)));
        all.extend(batch);
    }
    assert!(wal.stats().segments > 1, "segments rolled");
    drop(wal);

    let (wal, replay) = Wal::open(options(dir.path())).unwrap();
    assert_eq!(replay.record_count(), all.len() as u64);
    assert_eq!(
        replay.heads()["c1.acme"],
        ChainHead {
            seq: a.next_seq() - 1,
            hash: a.head()
        }
    );
    assert_eq!(
        replay.heads()["c1.globex"],
        ChainHead {
            seq: b.next_seq() - 1,
            hash: b.head()
        }
    );
    assert!(replay.truncated_tail().is_none());
    let heads = replay.heads().clone();
    assert_eq!(replay_all(replay), all);

    // The chain continues after a restart.
    let h = heads["c1.acme"];
    let mut a2 = Chain::resume("c1.acme", "acme", h.seq + 1, h.hash).unwrap();
    let more = records(&mut a2, 3);
    wal.submit(&more).unwrap().wait().unwrap();
    drop(wal);
    let (_, replay) = Wal::open(options(dir.path())).unwrap();
    let got = replay_all(replay);
    all.extend(more);
    assert_eq!(got, all);
    assert_linked(&got);
}

#[test]
fn sixteen_concurrent_appenders_all_replay_in_chain_order() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(options(dir.path())).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .build()
        .unwrap();
    // 12 appenders own a chain each; 4 more share one chain under a lock held
    // across chaining and submitting (how the pipeline keeps order).
    let shared = Arc::new(tokio::sync::Mutex::new(
        Chain::new("c1.shared", "shared").unwrap(),
    ));
    let acked: Vec<Vec<Record>> = rt.block_on(async {
        let mut tasks = Vec::new();
        for t in 0..16 {
            let wal = wal.clone();
            let shared = shared.clone();
            tasks.push(tokio::spawn(async move {
                let mut own = Chain::new(format!("c1.t{t}"), format!("t{t}")).unwrap();
                let mut acked = Vec::new();
                for i in 0..60u64 {
                    let (batch, ack) = if t < 12 {
                        let batch = records(&mut own, 1 + i % 3);
                        let ack = wal.append(&batch);
                        (batch, ack)
                    } else {
                        let mut chain = shared.lock().await;
                        let batch = records(&mut chain, 1 + i % 2);
                        let ack = wal.append(&batch);
                        drop(chain);
                        (batch, ack)
                    };
                    ack.await.unwrap();
                    acked.extend(batch);
                }
                acked
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    });
    let stats = wal.stats();
    assert_eq!(stats.appends_written, 16 * 60);
    assert!(stats.groups_written <= stats.appends_written);
    println!(
        "16 appenders: {} appends in {} group commits",
        stats.appends_written, stats.groups_written
    );
    drop(wal);

    let (_, replay) = Wal::open(options(dir.path())).unwrap();
    let got = replay_all(replay);
    assert_linked(&got);
    let total: usize = acked.iter().map(Vec::len).sum();
    assert_eq!(got.len(), total);
    let by_id: HashMap<_, _> = got
        .iter()
        .map(|r| ((r.chain_id.clone(), r.seq), r))
        .collect();
    assert_eq!(by_id.len(), total, "no duplicates");
    for r in acked.iter().flatten() {
        assert_eq!(by_id[&(r.chain_id.clone(), r.seq)], r);
    }
}

/// A WAL with some records; returns the records and the last segment file.
fn wal_with_records(dir: &Path, n: u64) -> (Vec<Record>, PathBuf) {
    let (wal, _) = Wal::open(options(dir)).unwrap();
    let mut chain = Chain::new("c1.acme", "acme").unwrap();
    let mut all = Vec::new();
    for _ in 0..n {
        let batch = records(&mut chain, 2);
        wal.submit(&batch).unwrap().wait().unwrap();
        all.extend(batch);
    }
    drop(wal);
    let last = segment_files(dir).pop().unwrap();
    (all, last)
}

fn append_bytes(path: &Path, bytes: &[u8]) {
    fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
}

#[test]
fn a_torn_tail_is_truncated_and_acknowledged_data_kept() {
    let valid_frame_prefix = {
        // The first frame of a fresh WAL, to build torn copies of a real frame.
        let dir = tempfile::tempdir().unwrap();
        let (_, seg) = wal_with_records(dir.path(), 1);
        fs::read(seg).unwrap()[24..].to_vec()
    };
    let garbage: Vec<(&str, Vec<u8>)> = vec![
        ("partial frame header", vec![0x10, 0x02, 0x00]),
        ("length past the end", {
            let mut v = 5000u32.to_le_bytes().to_vec();
            v.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
            v
        }),
        ("zeroes", vec![0; 4096]),
        (
            "random bytes",
            (0..3000u32).map(|i| (i * 7919 % 251) as u8).collect(),
        ),
        (
            "half a frame",
            valid_frame_prefix[..valid_frame_prefix.len() / 2].to_vec(),
        ),
        ("frame with a bad checksum", {
            let mut v = valid_frame_prefix.clone();
            let n = v.len();
            v[n - 1] ^= 0xff;
            v
        }),
        // A complete, checksummed frame, but written for another position.
        ("a frame copied from elsewhere", valid_frame_prefix.clone()),
    ];
    for (what, bytes) in garbage {
        let dir = tempfile::tempdir().unwrap();
        let (all, seg) = wal_with_records(dir.path(), 5);
        let len = fs::metadata(&seg).unwrap().len();
        append_bytes(&seg, &bytes);
        let (wal, replay) =
            Wal::open(options(dir.path())).unwrap_or_else(|e| panic!("{what}: open failed: {e}"));
        let tail = replay.truncated_tail().expect(what).clone();
        assert_eq!(
            (tail.path.as_path(), tail.offset),
            (seg.as_path(), len),
            "{what}"
        );
        assert_eq!(tail.discarded_bytes, bytes.len() as u64, "{what}");
        assert_eq!(replay_all(replay), all, "{what}");
        assert_eq!(
            fs::metadata(&seg).unwrap().len(),
            len,
            "{what}: truncated on disk"
        );
        drop(wal);
        let (_, replay) = Wal::open(options(dir.path())).unwrap();
        assert!(
            replay.truncated_tail().is_none(),
            "{what}: clean after truncation"
        );
        assert_eq!(replay_all(replay), all, "{what}");
    }
}

#[test]
fn a_crash_anywhere_inside_the_last_frame_loses_only_that_frame() {
    let dir = tempfile::tempdir().unwrap();
    let (all, seg) = wal_with_records(dir.path(), 4);
    let bytes = fs::read(&seg).unwrap();
    // Walk the frames to the last one, which holds the last two records.
    let mut last_start = 24;
    loop {
        let at = last_start as usize;
        let len = u64::from(u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()));
        if last_start + 8 + len == bytes.len() as u64 {
            break;
        }
        last_start += 8 + len;
    }
    let mut cut = last_start;
    while cut < bytes.len() as u64 {
        let copy = tempfile::tempdir().unwrap();
        let name = seg.file_name().unwrap();
        fs::write(copy.path().join(name), &bytes[..cut as usize]).unwrap();
        let (_, replay) = Wal::open(options(copy.path())).unwrap();
        assert_eq!(
            replay.truncated_tail().map(|t| t.offset),
            (cut > last_start).then_some(last_start),
            "cut at {cut}"
        );
        assert_eq!(replay_all(replay), all[..all.len() - 2], "cut at {cut}");
        cut += 37;
    }
}

#[test]
fn a_segment_torn_while_being_created_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let (all, seg) = wal_with_records(dir.path(), 3);
    let name = seg.file_name().unwrap().to_str().unwrap();
    let next: u64 = name[..20].parse::<u64>().unwrap() + 1;
    let torn = dir.path().join(format!("{next:020}.wal"));
    fs::write(&torn, b"OTAUDW").unwrap();
    let (_, replay) = Wal::open(options(dir.path())).unwrap();
    let tail = replay.truncated_tail().unwrap();
    assert_eq!((tail.path.as_path(), tail.offset), (torn.as_path(), 0));
    assert!(!torn.exists());
    assert_eq!(replay_all(replay), all);
}

#[test]
fn corruption_before_the_tail_is_an_error_naming_file_and_offset() {
    // Damage in a segment that is not the last one.
    let dir = tempfile::tempdir().unwrap();
    let (_, _) = wal_with_records(dir.path(), 30);
    let segs = segment_files(dir.path());
    assert!(segs.len() > 2);
    let first = &segs[0];
    let mut bytes = fs::read(first).unwrap();
    let frame_len = u32::from_le_bytes(bytes[24..28].try_into().unwrap()) as usize + 8;
    let second_frame = 24 + frame_len;
    bytes[second_frame + 100] ^= 0x01;
    fs::write(first, &bytes).unwrap();
    let err = Wal::open(options(dir.path())).unwrap_err();
    match &err {
        WalError::Corrupt { path, offset, .. } => {
            assert_eq!((path, *offset), (first, second_frame as u64));
        }
        other => panic!("expected Corrupt, got {other}"),
    }
    let text = err.to_string();
    assert!(text.contains(first.to_str().unwrap()), "{text}");
    assert!(text.contains(&format!("offset {second_frame}")), "{text}");

    // Damage in the last segment, with acknowledged frames after it.
    let dir = tempfile::tempdir().unwrap();
    let (_, seg) = wal_with_records(dir.path(), 3);
    let mut bytes = fs::read(&seg).unwrap();
    bytes[24 + 8 + 30] ^= 0x40;
    fs::write(&seg, &bytes).unwrap();
    match Wal::open(options(dir.path())).unwrap_err() {
        WalError::Corrupt {
            path,
            offset,
            valid_frame_after,
            ..
        } => {
            assert_eq!((path, offset), (seg.clone(), 24));
            assert!(valid_frame_after.is_some_and(|o| o > 24));
        }
        other => panic!("expected Corrupt, got {other}"),
    }
    // Nothing was truncated: the acknowledged data is still there to rescue.
    assert_eq!(fs::read(&seg).unwrap(), bytes);

    // A damaged header of a segment that holds frames.
    let dir = tempfile::tempdir().unwrap();
    let (_, seg) = wal_with_records(dir.path(), 3);
    let mut bytes = fs::read(&seg).unwrap();
    bytes[3] = b'X';
    fs::write(&seg, &bytes).unwrap();
    assert!(matches!(
        Wal::open(options(dir.path())).unwrap_err(),
        WalError::Corrupt { offset: 0, .. }
    ));
}

/// Rewrites the checksum of the frame at `offset` after its payload was edited.
fn fix_frame_crc(bytes: &mut [u8], offset: usize) {
    let len = u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap()) as usize;
    let crc = crc32c(&bytes[offset + 8..offset + 8 + len]);
    bytes[offset + 4..offset + 8].copy_from_slice(&crc.to_le_bytes());
}

/// CRC-32C (Castagnoli), bitwise: the test does not trust the crate's code.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn a_record_altered_behind_a_valid_checksum_is_detected() {
    // Content changed: the hash check fails.
    let dir = tempfile::tempdir().unwrap();
    let (_, seg) = wal_with_records(dir.path(), 2);
    let mut bytes = fs::read(&seg).unwrap();
    let at = bytes.windows(6).position(|w| w == b"gpt-4o").unwrap();
    bytes[at + 4] = b'5';
    fix_frame_crc(&mut bytes, 24);
    fs::write(&seg, &bytes).unwrap();
    match Wal::open(options(dir.path())).unwrap_err() {
        WalError::HashMismatch {
            path,
            offset,
            chain_id,
            seq,
        } => assert_eq!(
            (path, offset, chain_id.as_str(), seq),
            (seg, 24, "c1.acme", 0)
        ),
        other => panic!("expected HashMismatch, got {other}"),
    }

    // Bytes that are not a canonical encoding: a decode error naming the field.
    let dir = tempfile::tempdir().unwrap();
    let (_, seg) = wal_with_records(dir.path(), 2);
    let mut bytes = fs::read(&seg).unwrap();
    let at = bytes.windows(7).position(|w| w == b"success").unwrap();
    bytes[at] = b'S';
    fix_frame_crc(&mut bytes, 24);
    fs::write(&seg, &bytes).unwrap();
    let err = Wal::open(options(dir.path())).unwrap_err();
    assert!(
        matches!(
            err,
            WalError::Decode {
                offset: 24,
                index: 0,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("outcome"), "{err}");
}

#[test]
fn release_deletes_only_segments_whose_records_are_all_released() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(options(dir.path())).unwrap();
    let mut a = Chain::new("c1.acme", "acme").unwrap();
    let mut b = Chain::new("c1.globex", "globex").unwrap();
    let mut all = Vec::new();
    // Both chains interleave in every segment.
    for _ in 0..40 {
        let mut batch = records(&mut a, 1);
        batch.extend(records(&mut b, 1));
        wal.submit(&batch).unwrap().wait().unwrap();
        all.extend(batch);
    }
    let before = segment_files(dir.path());
    assert!(before.len() >= 4, "{}", before.len());
    let a_recs: Vec<&Record> = all.iter().filter(|r| r.chain_id == "c1.acme").collect();
    let b_recs: Vec<&Record> = all.iter().filter(|r| r.chain_id == "c1.globex").collect();

    // All of chain a: no segment is free of chain b, nothing is deleted.
    let out = wal
        .release("c1.acme", head_of(a_recs.last().unwrap()))
        .unwrap();
    assert_eq!(out.deleted_segments, 0);
    assert_eq!(segment_files(dir.path()), before);

    // Chain b up to the middle: exactly the segments holding only b's
    // released records go, never one with a later record of b.
    let mid = b_recs[b_recs.len() / 2];
    let used_before = wal.stats().disk_bytes;
    let out = wal.release("c1.globex", head_of(mid)).unwrap();
    assert!(out.deleted_segments >= 1);
    assert_eq!(wal.stats().disk_bytes, used_before - out.freed_bytes);
    let after = segment_files(dir.path());
    assert_eq!(after.len(), before.len() - out.deleted_segments);
    assert_eq!(
        after[..],
        before[before.len() - after.len()..],
        "the oldest went"
    );
    drop(wal);

    // Every record of b after `mid` is still there, nothing released replays.
    let (wal, replay) = Wal::open(options(dir.path())).unwrap();
    assert_eq!(replay.heads()["c1.acme"], head_of(a_recs.last().unwrap()));
    assert_eq!(replay.heads()["c1.globex"], head_of(b_recs.last().unwrap()));
    let got = replay_all(replay);
    let expect: Vec<Record> = b_recs
        .iter()
        .filter(|r| r.seq > mid.seq)
        .map(|r| (*r).clone())
        .collect();
    assert_eq!(got, expect);

    // Releasing the rest, then shutting down, leaves no segment; the heads
    // survive in the marker and the chains continue.
    wal.release("c1.globex", head_of(b_recs.last().unwrap()))
        .unwrap();
    wal.shutdown().unwrap();
    drop(wal);
    assert_eq!(segment_files(dir.path()), Vec::<PathBuf>::new());
    let (wal, replay) = Wal::open(options(dir.path())).unwrap();
    assert_eq!(replay.record_count(), 0);
    let h = replay.heads()["c1.globex"];
    assert_eq!(h, head_of(b_recs.last().unwrap()));
    let mut b2 = Chain::resume("c1.globex", "globex", h.seq + 1, h.hash).unwrap();
    wal.submit(&records(&mut b2, 1)).unwrap().wait().unwrap();
    // A chain restarting from scratch would not link.
    let mut stale = Chain::new("c1.globex", "globex").unwrap();
    assert!(matches!(
        wal.submit(&records(&mut stale, 1)),
        Err(WalError::Unlinked { expected_seq, .. }) if expected_seq == h.seq + 2
    ));
}

#[test]
fn replay_skips_segments_released_while_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (all, _) = wal_with_records(dir.path(), 30);
    let (wal, replay) = Wal::open(options(dir.path())).unwrap();
    assert!(segment_files(dir.path()).len() > 3);
    // The sink got everything some other way and released it before the
    // replay was read: the segments are gone, the replay ends cleanly.
    let out = wal
        .release("c1.acme", head_of(all.last().unwrap()))
        .unwrap();
    assert!(out.deleted_segments >= 3);
    let rest: Vec<Record> = records_of(replay).unwrap();
    assert!(rest.len() < all.len());
    assert_eq!(rest[..], all[all.len() - rest.len()..]);
}

#[test]
fn releases_that_cannot_be_right_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(options(dir.path())).unwrap();
    let mut a = Chain::new("c1.acme", "acme").unwrap();
    let batch = records(&mut a, 3);
    wal.submit(&batch).unwrap().wait().unwrap();
    let refused = |chain: &str, head: ChainHead| {
        matches!(wal.release(chain, head), Err(WalError::Release { .. }))
    };
    assert!(refused("c1.nobody", head_of(&batch[0])));
    assert!(refused(
        "c1.acme",
        ChainHead {
            seq: 3,
            hash: [0; 32]
        }
    ));
    assert!(refused(
        "c1.acme",
        ChainHead {
            seq: 2,
            hash: [0; 32]
        }
    ));
    wal.release("c1.acme", head_of(&batch[1])).unwrap();
    // Again, or less: nothing to do.
    wal.release("c1.acme", head_of(&batch[1])).unwrap();
    wal.release("c1.acme", head_of(&batch[0])).unwrap();
    assert!(refused(
        "c1.acme",
        ChainHead {
            seq: 1,
            hash: [9; 32]
        }
    ));
}

#[test]
fn the_size_cap_refuses_with_a_retryable_error_and_recovers_after_release() {
    let dir = tempfile::tempdir().unwrap();
    let opts = WalOptions {
        max_segment_bytes: 4 * KIB,
        max_queue_bytes: 4 * KIB,
        max_wal_bytes: 16 * KIB,
        ..options(dir.path())
    };
    let (wal, _) = Wal::open(opts.clone()).unwrap();
    let mut chain = Chain::new("c1.acme", "acme").unwrap();
    let mut acked = Vec::new();
    let err = loop {
        let (seq, head) = (chain.next_seq(), chain.head());
        let batch = records(&mut chain, 1);
        match wal.submit(&batch) {
            Ok(p) => {
                p.wait().unwrap();
                acked.extend(batch);
            }
            Err(e) => {
                chain = Chain::resume("c1.acme", "acme", seq, head).unwrap();
                break e;
            }
        }
        assert!(acked.len() < 1000, "the cap never applied");
    };
    assert!(err.is_retryable());
    match err {
        WalError::Full {
            used_bytes,
            max_bytes,
        } => {
            assert_eq!(max_bytes, 16 * KIB);
            assert!(
                used_bytes <= max_bytes && used_bytes > 8 * KIB,
                "{used_bytes}"
            );
            assert_eq!(used_bytes, wal.stats().disk_bytes);
        }
        other => panic!("expected Full, got {other}"),
    }
    assert!(wal.stats().disk_bytes <= 16 * KIB);
    // Still full on retry.
    let batch = records(&mut chain.clone(), 1);
    assert!(matches!(wal.submit(&batch), Err(WalError::Full { .. })));

    // The sink stores everything: segments go, appends succeed again.
    let out = wal
        .release("c1.acme", head_of(acked.last().unwrap()))
        .unwrap();
    assert!(out.deleted_segments > 0);
    for _ in 0..5 {
        let batch = records(&mut chain, 1);
        wal.submit(&batch).unwrap().wait().unwrap();
        acked.extend(batch);
    }
    drop(wal);
    let (_, replay) = Wal::open(opts).unwrap();
    let got = replay_all(replay);
    assert_eq!(got[..], acked[acked.len() - 5..]);
}

#[test]
fn an_append_larger_than_the_queue_is_refused_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let opts = WalOptions {
        max_queue_bytes: 4 * KIB,
        ..options(dir.path())
    };
    let (wal, _) = Wal::open(opts).unwrap();
    let mut chain = Chain::new("c1.acme", "acme").unwrap();
    let err = wal.submit(&records(&mut chain, 10)).unwrap_err();
    assert!(
        matches!(
            err,
            WalError::TooLarge {
                max_bytes: 4096,
                ..
            }
        ),
        "{err}"
    );
    assert!(!err.is_retryable());
}

#[test]
fn records_that_do_not_continue_their_chain_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(options(dir.path())).unwrap();
    let mut chain = Chain::new("c1.acme", "acme").unwrap();
    let batch = records(&mut chain, 4);
    wal.submit(&batch[..1]).unwrap().wait().unwrap();
    // A gap.
    assert!(matches!(
        wal.submit(&batch[2..3]),
        Err(WalError::Unlinked {
            seq: 2,
            expected_seq: 1,
            ..
        })
    ));
    // A repeat.
    assert!(matches!(
        wal.submit(&batch[..1]),
        Err(WalError::Unlinked {
            seq: 0,
            expected_seq: 1,
            ..
        })
    ));
    // Out of order within one append.
    let swapped = [batch[2].clone(), batch[1].clone()];
    assert!(matches!(
        wal.submit(&swapped),
        Err(WalError::Unlinked { .. })
    ));
    // Right seq, wrong link.
    let mut forged = batch[1].clone();
    forged.prev_hash = [7; 32];
    forged.hash = forged.compute_hash(&mut Vec::new());
    assert!(matches!(
        wal.submit(&[forged]),
        Err(WalError::Unlinked { .. })
    ));
    // A hash that is not the content's.
    let mut bad = batch[1].clone();
    bad.hash[0] ^= 1;
    assert!(matches!(
        wal.submit(&[bad]),
        Err(WalError::BadHash { seq: 1, .. })
    ));
    // Nothing refused was written; the right continuation is accepted.
    wal.submit(&batch[1..]).unwrap().wait().unwrap();
    drop(wal);
    let (_, replay) = Wal::open(options(dir.path())).unwrap();
    assert_eq!(replay_all(replay), batch);
}

#[test]
fn a_second_process_cannot_open_the_same_wal() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(options(dir.path())).unwrap();
    assert!(matches!(
        Wal::open(options(dir.path())),
        Err(WalError::Locked { .. })
    ));
    drop(wal);
    Wal::open(options(dir.path())).unwrap();
}

#[test]
fn options_are_validated_by_field_and_unknown_keys_refused() {
    let dir = tempfile::tempdir().unwrap();
    let field = |o: WalOptions| match o.validate() {
        Err(WalError::InvalidOption { field, .. }) => field,
        other => panic!("expected InvalidOption, got {other:?}"),
    };
    let base = options(dir.path());
    assert!(base.validate().is_ok());
    assert!(WalOptions::default().validate().is_ok());
    assert_eq!(
        field(WalOptions {
            dir: PathBuf::new(),
            ..base.clone()
        }),
        "dir"
    );
    assert_eq!(
        field(WalOptions {
            max_segment_bytes: 100,
            ..base.clone()
        }),
        "max_segment_bytes"
    );
    assert_eq!(
        field(WalOptions {
            max_queue_bytes: 10,
            ..base.clone()
        }),
        "max_queue_bytes"
    );
    assert_eq!(
        field(WalOptions {
            max_wal_bytes: 40 * KIB,
            ..base.clone()
        }),
        "max_wal_bytes"
    );
    assert_eq!(
        field(WalOptions {
            reserve_bytes: Some(4095),
            ..base.clone()
        }),
        "reserve_bytes"
    );
    let err = Wal::open(WalOptions {
        max_wal_bytes: 1,
        ..base
    })
    .unwrap_err();
    assert!(err.to_string().contains("max_wal_bytes"), "{err}");

    let parsed: WalOptions =
        serde_json::from_str(r#"{"dir": "/var/lib/otel-audit/wal", "max_wal_bytes": 1073741824}"#)
            .unwrap();
    assert_eq!(parsed.max_wal_bytes, 1 << 30);
    assert_eq!(
        parsed.max_segment_bytes,
        WalOptions::default().max_segment_bytes
    );
    let err = serde_json::from_str::<WalOptions>(r#"{"max_wal_size": 1}"#).unwrap_err();
    assert!(err.to_string().contains("max_wal_size"), "{err}");
}

// ---------------------------------------------------------------------------
// Crash test: a child process (this test binary, running `crash_child`)
// appends in a loop and prints every acknowledged record; it is killed with
// SIGKILL at random moments; after each kill the WAL must replay every
// acknowledged record exactly once.

const CHILD_DIR_ENV: &str = "OTEL_AUDIT_WAL_CRASH_CHILD_DIR";

fn crash_options(dir: &Path) -> WalOptions {
    WalOptions {
        dir: dir.to_owned(),
        max_segment_bytes: 32 * KIB,
        max_wal_bytes: 256 * MIB,
        max_queue_bytes: 256 * KIB,
        verify_hashes_on_append: true,
        // Allocated at every open, so kills land in its allocation too.
        reserve_bytes: None,
    }
}

fn hex(h: &[u8; 32]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

/// The child: run only by `crash_test_kill_9_loses_nothing_acknowledged`.
/// Six appender threads (four with a chain each, two sharing one), and a
/// sink thread that releases acknowledged records now and then, so kills also
/// land in marker writes and segment deletions.
#[test]
#[ignore = "run as a child process by the crash test"]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return;
    };
    let (wal, replay) = Wal::open(crash_options(Path::new(&dir))).unwrap();
    let heads = replay.heads().clone();
    drop(replay);
    let resume = |id: &str, tenant: &str| match heads.get(id) {
        Some(h) => Chain::resume(id, tenant, h.seq + 1, h.hash).unwrap(),
        None => Chain::new(id, tenant).unwrap(),
    };
    println!("ready");
    let shared = Arc::new(Mutex::new(resume("c1.shared", "shared")));
    // Each chain's acknowledged records, for the sink to release.
    let acked: Arc<Mutex<BTreeMap<String, Vec<ChainHead>>>> = Arc::default();
    std::thread::scope(|s| {
        for t in 0..6u64 {
            let wal = wal.clone();
            let shared = shared.clone();
            let acked = acked.clone();
            let mut own = resume(&format!("c1.t{t}"), &format!("t{t}"));
            s.spawn(move || {
                for i in 0u64.. {
                    let (batch, pending) = if t < 4 {
                        let batch = records(&mut own, 1 + (i + t) % 4);
                        let p = wal.submit(&batch).unwrap();
                        (batch, p)
                    } else {
                        let mut chain = shared.lock().unwrap();
                        let batch = records(&mut chain, 1 + i % 2);
                        let p = wal.submit(&batch).unwrap();
                        drop(chain);
                        (batch, p)
                    };
                    pending.wait().unwrap();
                    let mut out = String::new();
                    for r in &batch {
                        out.push_str(&format!("ack {} {} {}\n", r.chain_id, r.seq, hex(&r.hash)));
                    }
                    std::io::stdout().lock().write_all(out.as_bytes()).unwrap();
                    let mut acked = acked.lock().unwrap();
                    let list = acked.entry(batch[0].chain_id.clone()).or_default();
                    list.extend(batch.iter().map(head_of));
                }
            });
        }
        let wal = wal.clone();
        s.spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(15));
                let picks: Vec<(String, ChainHead)> = acked
                    .lock()
                    .unwrap()
                    .iter_mut()
                    .filter(|(_, list)| list.len() > 4)
                    .map(|(chain, list)| {
                        // Keep some acknowledged records unreleased.
                        let upto = list[list.len() - 4];
                        list.drain(..list.len() - 4);
                        (chain.clone(), upto)
                    })
                    .collect();
                for (chain, upto) in picks {
                    wal.release(&chain, upto).unwrap();
                    println!("rel {chain} {}", upto.seq);
                }
            }
        });
    });
}

#[cfg(unix)]
#[test]
fn crash_test_kill_9_loses_nothing_acknowledged() {
    use std::os::unix::process::ExitStatusExt;

    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    // Every record known to be durable: acknowledged to the child, or seen in
    // a replay. Each replay must hold each of them above the released seq.
    let mut known: BTreeMap<String, BTreeMap<u64, String>> = BTreeMap::new();
    let mut released: BTreeMap<String, u64> = BTreeMap::new();
    let mut rng = 0x00c0_ffee_u64;
    let mut acked_total = 0usize;
    let mut truncations = 0;
    let mut releases = 0;
    for round in 0..20 {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let delay = Duration::from_millis(40 + (rng >> 33) % 360);
        let mut child = Command::new(&exe)
            .args([
                "crash_child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let out_reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            stdout.read_to_end(&mut buf).unwrap();
            buf
        });
        let err_reader = std::thread::spawn(move || {
            let mut buf = String::new();
            let _ = stderr.read_to_string(&mut buf);
            buf
        });
        std::thread::sleep(delay);
        child.kill().unwrap();
        let status = child.wait().unwrap();
        let out = out_reader.join().unwrap();
        let err = err_reader.join().unwrap();
        assert_eq!(
            status.signal(),
            Some(9),
            "round {round}: the child ended by itself ({status}); stderr:\n{err}"
        );

        // Only complete lines: the kill may cut the last one.
        let mut acked = 0;
        let mut confirmed_release: BTreeMap<String, u64> = BTreeMap::new();
        for line in out.split_inclusive(|&b| b == b'\n') {
            let Some(line) = line.strip_suffix(b"\n") else {
                continue;
            };
            let line = std::str::from_utf8(line).unwrap();
            if let Some(rest) = line.strip_prefix("rel ") {
                let (chain, seq) = rest.split_once(' ').unwrap();
                confirmed_release.insert(chain.to_owned(), seq.parse().unwrap());
                continue;
            }
            let Some(rest) = line.strip_prefix("ack ") else {
                continue;
            };
            let parts: Vec<&str> = rest.split(' ').collect();
            let (chain, seq, hash) = (parts[0], parts[1].parse::<u64>().unwrap(), parts[2]);
            let prev = known
                .entry(chain.to_owned())
                .or_default()
                .insert(seq, hash.to_owned());
            assert!(
                prev.is_none_or(|p| p == hash),
                "round {round}: {chain} seq {seq} acknowledged with two hashes"
            );
            acked += 1;
        }
        acked_total += acked;

        // Recover, as the collector would after the crash.
        let (wal, replay) = Wal::open(crash_options(dir.path()))
            .unwrap_or_else(|e| panic!("round {round}: open after kill -9 failed: {e}"));
        truncations += usize::from(replay.truncated_tail().is_some());
        let heads = replay.heads().clone();
        // A release that returned is durable; one cut by the kill may or may
        // not be. Releases never go back.
        for (chain, seq) in &confirmed_release {
            let floor = replay.released().get(chain).map(|h| h.seq);
            assert!(
                floor.is_some_and(|f| f >= *seq),
                "round {round}: confirmed release of {chain} up to {seq} was lost ({floor:?})"
            );
        }
        for (chain, h) in replay.released() {
            let before = released.get(chain).copied().unwrap_or(0);
            assert!(
                h.seq >= before,
                "round {round}: release of {chain} went back"
            );
            assert_eq!(
                known.get(chain).and_then(|m| m.get(&h.seq)),
                Some(&hex(&h.hash)),
                "round {round}: {chain} released up to a record never acknowledged"
            );
            released.insert(chain.clone(), h.seq);
            releases += 1;
        }
        let got: Vec<Record> =
            records_of(replay).unwrap_or_else(|e| panic!("round {round}: replay failed: {e}"));
        assert_linked(&got);
        let mut seen: BTreeMap<&str, BTreeMap<u64, &Record>> = BTreeMap::new();
        for r in &got {
            let floor = released.get(&r.chain_id).copied();
            assert!(
                floor.is_none_or(|f| r.seq > f),
                "round {round}: released record {} seq {} replayed again",
                r.chain_id,
                r.seq
            );
            let dup = seen.entry(&r.chain_id).or_default().insert(r.seq, r);
            assert!(
                dup.is_none(),
                "round {round}: {} seq {} twice",
                r.chain_id,
                r.seq
            );
        }
        for (chain, recs) in &known {
            let floor = released.get(chain).copied();
            for (seq, hash) in recs {
                if floor.is_some_and(|f| *seq <= f) {
                    continue;
                }
                let r = seen
                    .get(chain.as_str())
                    .and_then(|m| m.get(seq))
                    .unwrap_or_else(|| {
                        panic!("round {round}: acknowledged {chain} seq {seq} is missing")
                    });
                assert_eq!(&hex(&r.hash), hash, "round {round}: {chain} seq {seq}");
            }
            let max = recs.keys().max().unwrap();
            assert!(
                heads[chain].seq >= *max,
                "round {round}: head of {chain} went back"
            );
        }
        // Written but not yet acknowledged when killed: durable now.
        for r in &got {
            known
                .entry(r.chain_id.clone())
                .or_default()
                .insert(r.seq, hex(&r.hash));
        }

        // Every third round the parent's "sink" releases about half of each chain too.
        if round % 3 == 2 {
            for (chain, recs) in &seen {
                let upto = recs.values().nth(recs.len() / 2).unwrap();
                wal.release(chain, head_of(upto)).unwrap();
                released.insert((*chain).to_owned(), upto.seq);
            }
        }
        drop(wal);
    }
    println!(
        "crash test: {acked_total} records acknowledged over 20 kills, {truncations} torn tails, \
         {releases} chain releases seen at reopen"
    );
    assert!(
        acked_total > 100,
        "the child acknowledged too little to test anything"
    );
    assert!(releases > 0, "the child's sink never released anything");
}

/// Entries built where records are chained are written as encoded and come
/// back as the same records; a failed append adds nothing, and a record that
/// does not link refuses the whole append.
#[test]
fn entries_built_while_chaining_replay_as_appended() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(options(dir.path())).unwrap();
    let mut chain = Chain::new("c1.acme", "acme").unwrap();
    let mut entries = otel_audit_collector::wal::Entries::default();
    let mut appended = Vec::new();
    for i in 0..5 {
        let mut e = AuditEvent::new("acme", "svc", Category::Admin, "user.create");
        e.time = now_us();
        e.attributes.insert("i".into(), i.to_string());
        appended.push(
            entries
                .push(|out| chain.append_into(now_us(), e, out))
                .unwrap(),
        );
        // An invalid event in between: refused by the chain, nothing added.
        let bad = AuditEvent::new("acme", "svc", Category::Admin, "");
        assert!(
            entries
                .push(|out| chain.append_into(now_us(), bad, out))
                .is_err()
        );
    }
    wal.submit_entries(entries).unwrap().wait().unwrap();

    // A record of the same chain that skips a seq: the append is refused.
    let mut entries = otel_audit_collector::wal::Entries::default();
    let r = record(&mut chain, 5);
    let _skipped = record(&mut chain, 6);
    let late = record(&mut chain, 7);
    for rec in [&r, &late] {
        entries
            .push(|out| {
                rec.canonical_bytes(out);
                Ok::<_, ()>(rec.clone())
            })
            .unwrap();
    }
    let err = wal.submit_entries(entries).unwrap_err();
    assert!(matches!(err, WalError::Unlinked { seq: 7, .. }), "{err}");

    wal.shutdown().unwrap();
    drop(wal);
    let (_, replay) = Wal::open(options(dir.path())).unwrap();
    let back = replay_all(replay);
    assert_eq!(back, appended);
}
