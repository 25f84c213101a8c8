//! Opening the WAL: recovery scan, torn-tail truncation, and replay.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::{self, File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use bytes::Bytes;
use otel_audit_event::{begin_row_hash, chain_and_seq, finish_row_hashes};
use otel_audit_storage::{CanonicalRow, StoredRow};

use super::format::{
    self, Entry, FrameReader, LOCK_FILE, MARKER_FILE, MARKER_TMP_FILE, Marker, Next,
    SEGMENT_HEADER_BYTES, create_segment, decode_entry, entry_row, find_valid_frame_after, io_err,
    parse_segment_file_name, remove_if_present, split_entries,
};
use super::reserve::Reserve;
use super::writer::{self, ActiveSegment};
use super::{ChainHead, Inner, SegmentInfo, Shared, State, Wal, WalError, WalOptions, WalStats};

/// The bytes cut from the end of the last segment at open: a group commit
/// that a crash interrupted, so never acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TruncatedTail {
    /// The segment file (deleted if its header itself was incomplete).
    pub path: PathBuf,
    /// Where the valid data ended.
    pub offset: u64,
    /// How many bytes were cut.
    pub discarded_bytes: u64,
    /// What was wrong with the first cut frame.
    pub reason: &'static str,
}

/// The records to replay after [`Wal::open`]: every record not yet released,
/// in append order (so each chain's in seq order), read lazily from the
/// segments one frame at a time, as rows in their canonical bytes (each
/// frame's rows share one buffer; [`CanonicalRow::to_record`] decodes one).
/// Also the heads of all chains, for `Chain::resume`.
///
/// Records come back as stored: `time` and `received_at` at microsecond
/// precision (what the canonical encoding and so the hash cover).
#[derive(Debug)]
pub struct Replay {
    heads: BTreeMap<String, ChainHead>,
    record_count: u64,
    truncated: Option<TruncatedTail>,
    /// The segments still to read.
    pub(super) segments: VecDeque<(u64, PathBuf, u64)>,
    released: BTreeMap<String, ChainHead>,
    reader: Option<FrameReader>,
    payload: Vec<u8>,
    ready: VecDeque<CanonicalRow>,
    done: bool,
}

impl std::fmt::Debug for FrameReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameReader")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Replay {
    /// Each chain's last record (in the WAL, or released to the store): the
    /// chain continues at `seq + 1` linking to `hash`.
    pub fn heads(&self) -> &BTreeMap<String, ChainHead> {
        &self.heads
    }

    /// Per chain, the last row the store holds (as released before the
    /// restart): replay yields only records after it.
    pub fn released(&self) -> &BTreeMap<String, ChainHead> {
        &self.released
    }

    /// How many records the iterator yields.
    pub fn record_count(&self) -> u64 {
        self.record_count
    }

    /// What was cut from the end of the WAL at open, if anything.
    pub fn truncated_tail(&self) -> Option<&TruncatedTail> {
        self.truncated.as_ref()
    }

    /// A reader over `segments` (number, path, bytes to read) that skips
    /// each chain's records at or below its `skip` head.
    pub(super) fn reader(
        heads: BTreeMap<String, ChainHead>,
        segments: VecDeque<(u64, PathBuf, u64)>,
        skip: BTreeMap<String, ChainHead>,
    ) -> Replay {
        Replay {
            heads,
            record_count: 0,
            truncated: None,
            segments,
            released: skip,
            reader: None,
            payload: Vec::new(),
            ready: VecDeque::new(),
            done: false,
        }
    }

    /// Reads the next frame with records into `ready`; `false` at the end.
    fn fill(&mut self) -> Result<bool, WalError> {
        let reader = match &mut self.reader {
            Some(r) => r,
            None => {
                let Some((number, path, len)) = self.segments.pop_front() else {
                    return Ok(false);
                };
                // Only a segment whose records are all released is ever
                // deleted: one gone since open has nothing left to replay.
                match FrameReader::open(&path, number, Some(len)) {
                    Err(WalError::Io { source, .. })
                        if source.kind() == std::io::ErrorKind::NotFound =>
                    {
                        return Ok(true);
                    }
                    Err(e) => return Err(e),
                    Ok(Ok(r)) => self.reader.insert(r),
                    Ok(Err(reason)) => {
                        return Err(WalError::Corrupt {
                            path,
                            offset: 0,
                            reason,
                            valid_frame_after: None,
                        });
                    }
                }
            }
        };
        match reader.next(&mut self.payload)? {
            Next::End => {
                self.reader = None;
                Ok(true)
            }
            Next::Bad { offset, reason } => Err(WalError::Corrupt {
                path: reader.path.clone(),
                offset,
                reason,
                valid_frame_after: None,
            }),
            Next::Frame { offset } => {
                // The frame's rows share its bytes: the next frame is read
                // into a buffer of its own.
                let shared = Bytes::from(std::mem::take(&mut self.payload));
                let mut entries = Vec::new();
                split_entries(&shared, &mut entries).map_err(|reason| WalError::Corrupt {
                    path: reader.path.clone(),
                    offset,
                    reason,
                    valid_frame_after: None,
                })?;
                for (index, entry) in entries.iter().enumerate() {
                    // A record the store holds is skipped on its tail: a
                    // catch-up reads every unreleased record of the WAL to
                    // find the few the sink missed, and skipping the others
                    // there costs half of making their rows (130 against
                    // 260 ns a record). A chain id that is no path token,
                    // which the tail does not tell, is known from the row.
                    let tail = chain_and_seq(entry.canonical);
                    if tail.is_some_and(|(id, seq)| is_released(&self.released, id, seq)) {
                        continue;
                    }
                    let r = entry_row(&shared, entry, tail, &reader.path, offset, index)?;
                    if tail.is_none() && is_released(&self.released, r.chain_id(), r.seq()) {
                        continue;
                    }
                    self.ready.push_back(r);
                }
                Ok(true)
            }
        }
    }
}

impl Iterator for Replay {
    type Item = Result<CanonicalRow, WalError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(r) = self.ready.pop_front() {
                return Some(Ok(r));
            }
            if self.done {
                return None;
            }
            match self.fill() {
                Ok(true) => {}
                Ok(false) => self.done = true,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

/// Whether row `seq` of chain `chain_id` is at or below its chain's head in
/// `released`.
fn is_released(released: &BTreeMap<String, ChainHead>, chain_id: &str, seq: u64) -> bool {
    released.get(chain_id).is_some_and(|head| seq <= head.seq)
}

/// Per-chain checks across all segments during the open scan.
struct Scan {
    marker_path: PathBuf,
    released: HashMap<String, ChainHead>,
    /// Each chain's last record seen (or its released head).
    last: HashMap<String, ChainHead>,
    unreleased: u64,
}

/// Checks that every entry's hash is the hash of its content, two entries
/// at a time ([`finish_row_hashes`]).
fn check_hashes(
    entries: &[Entry<'_>],
    inputs: &mut Vec<Vec<u8>>,
    path: &Path,
    offset: u64,
) -> Result<(), WalError> {
    if inputs.len() < entries.len() {
        inputs.resize_with(entries.len(), Vec::new);
    }
    let inputs = &mut inputs[..entries.len()];
    for (buf, entry) in inputs.iter_mut().zip(entries) {
        begin_row_hash(&entry.prev_hash, buf);
        buf.extend_from_slice(entry.canonical);
    }
    let mut bad = None;
    finish_row_hashes(inputs, |i, hash| {
        if hash != entries[i].hash {
            // The first bad entry in the frame, as a scan one by one reports.
            bad = Some(bad.map_or(i, |b: usize| b.min(i)));
        }
    });
    let Some(index) = bad else {
        return Ok(());
    };
    // Bytes that are no canonical encoding at all are named as such (with
    // the field), the others as a hash that does not match.
    let r = decode_entry(&entries[index], path, offset, index)?;
    Err(WalError::HashMismatch {
        path: path.to_owned(),
        offset,
        chain_id: r.chain_id,
        seq: r.seq,
    })
}

impl Scan {
    fn visit(
        &mut self,
        chain_id: &str,
        seq: u64,
        entry: &Entry<'_>,
        path: &Path,
        offset: u64,
        info: &mut SegmentInfo,
    ) -> Result<(), WalError> {
        match info.chains.get_mut(chain_id) {
            Some(max) => *max = (*max).max(seq),
            None => {
                info.chains.insert(chain_id.to_owned(), seq);
            }
        }
        if let Some(rel) = self.released.get(chain_id)
            && seq <= rel.seq
        {
            if seq == rel.seq && entry.hash != rel.hash {
                return Err(WalError::Marker {
                    path: self.marker_path.clone(),
                    reason: "a released hash differs from the hash of that record in the WAL",
                });
            }
            return Ok(());
        }
        let head = ChainHead {
            seq,
            hash: entry.hash,
        };
        match self.last.get_mut(chain_id) {
            Some(h) => {
                if seq != h.seq.wrapping_add(1) || entry.prev_hash != h.hash {
                    return Err(WalError::ChainBroken {
                        path: path.to_owned(),
                        offset,
                        chain_id: chain_id.to_owned(),
                        seq,
                        expected_seq: h.seq.wrapping_add(1),
                    });
                }
                *h = head;
            }
            None => {
                self.last.insert(chain_id.to_owned(), head);
            }
        }
        self.unreleased += 1;
        Ok(())
    }
}

enum Scanned {
    /// The segment stays; its valid bytes end at `len`.
    Kept { info: SegmentInfo, len: u64 },
    /// The segment's header was torn at creation: it was deleted.
    Removed,
}

/// Scans one segment: every frame, every record. Only the last segment may
/// end in a torn frame, which is truncated away.
fn scan_segment(
    path: &Path,
    number: u64,
    is_last: bool,
    scan: &mut Scan,
    truncated: &mut Option<TruncatedTail>,
) -> Result<Scanned, WalError> {
    let mut reader = match FrameReader::open(path, number, None)? {
        Ok(r) => r,
        Err(reason) => {
            // Headers are synced before any frame: a valid frame after a bad
            // header means the header was damaged later.
            let after = find_valid_frame_after(path, number, SEGMENT_HEADER_BYTES - 1)?;
            if !is_last || after.is_some() {
                return Err(WalError::Corrupt {
                    path: path.to_owned(),
                    offset: 0,
                    reason,
                    valid_frame_after: after,
                });
            }
            let len = fs::metadata(path)
                .map_err(io_err("read segment metadata", path))?
                .len();
            fs::remove_file(path).map_err(io_err("delete torn segment", path))?;
            *truncated = Some(TruncatedTail {
                path: path.to_owned(),
                offset: 0,
                discarded_bytes: len,
                reason,
            });
            return Ok(Scanned::Removed);
        }
    };
    let mut info = SegmentInfo {
        path: path.to_owned(),
        ..SegmentInfo::default()
    };
    let mut payload = Vec::new();
    let mut hash_inputs: Vec<Vec<u8>> = Vec::new();
    loop {
        match reader.next(&mut payload)? {
            Next::End => {
                info.bytes = reader.len();
                return Ok(Scanned::Kept {
                    len: reader.len(),
                    info,
                });
            }
            Next::Frame { offset } => {
                let mut entries: Vec<Entry<'_>> = Vec::new();
                split_entries(&payload, &mut entries).map_err(|reason| WalError::Corrupt {
                    path: path.to_owned(),
                    offset,
                    reason,
                    valid_frame_after: None,
                })?;
                check_hashes(&entries, &mut hash_inputs, path, offset)?;
                for (index, entry) in entries.iter().enumerate() {
                    // Read from the end of the bytes: decoding every record
                    // was half of a restart's scan. The records replayed
                    // are decoded once, by the replay.
                    let decoded;
                    let (chain_id, seq) = match chain_and_seq(entry.canonical) {
                        Some(found) => found,
                        None => {
                            decoded = decode_entry(entry, path, offset, index)?;
                            (decoded.chain_id.as_str(), decoded.seq)
                        }
                    };
                    scan.visit(chain_id, seq, entry, path, offset, &mut info)?;
                }
            }
            Next::Bad { offset, reason } => {
                let after = if is_last {
                    find_valid_frame_after(path, number, offset)?
                } else {
                    None
                };
                if !is_last || after.is_some() {
                    return Err(WalError::Corrupt {
                        path: path.to_owned(),
                        offset,
                        reason,
                        valid_frame_after: after,
                    });
                }
                let file_len = reader.len();
                drop(reader);
                let file = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(io_err("open segment", path))?;
                file.set_len(offset)
                    .and_then(|()| file.sync_all())
                    .map_err(io_err("truncate torn segment tail", path))?;
                *truncated = Some(TruncatedTail {
                    path: path.to_owned(),
                    offset,
                    discarded_bytes: file_len - offset,
                    reason,
                });
                info.bytes = offset;
                return Ok(Scanned::Kept { len: offset, info });
            }
        }
    }
}

fn lock_dir(dir: &Path) -> Result<File, WalError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err("open lock file", &path))?;
    // The lock belongs to the open file, which a child process being spawned
    // by this or another process inherits for a moment (between fork and
    // exec): a lock just given up can look held. Wait a little before
    // concluding that another collector has the directory.
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(TryLockError::WouldBlock) => return Err(WalError::Locked { path }),
            Err(TryLockError::Error(source)) => {
                return Err(WalError::Io {
                    op: "lock",
                    path,
                    source,
                });
            }
        }
    }
}

/// How long [`lock_dir`] waits for a lock that is held.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

pub(crate) fn open(options: WalOptions) -> Result<(Wal, Replay), WalError> {
    options.validate()?;
    let dir = options.dir.clone();
    fs::create_dir_all(&dir).map_err(io_err("create WAL directory", &dir))?;
    let lock_file = lock_dir(&dir)?;

    // A marker write that a crash interrupted before its rename.
    remove_if_present(&dir.join(MARKER_TMP_FILE), "delete")?;
    let marker = Marker::load(&dir)?;

    let mut numbers = Vec::new();
    for entry in fs::read_dir(&dir).map_err(io_err("list WAL directory", &dir))? {
        let entry = entry.map_err(io_err("list WAL directory", &dir))?;
        if let Some(n) = entry.file_name().to_str().and_then(parse_segment_file_name) {
            numbers.push(n);
        }
    }
    numbers.sort_unstable();

    let released: HashMap<String, ChainHead> = marker.released.clone().into_iter().collect();
    let mut scan = Scan {
        marker_path: dir.join(MARKER_FILE),
        released: released.clone(),
        last: released.clone(),
        unreleased: 0,
    };
    let mut truncated = None;
    let mut kept: Vec<(u64, SegmentInfo, u64)> = Vec::new();
    for (i, &n) in numbers.iter().enumerate() {
        let path = dir.join(format::segment_file_name(n));
        let is_last = i + 1 == numbers.len();
        match scan_segment(&path, n, is_last, &mut scan, &mut truncated)? {
            Scanned::Kept { info, len } => kept.push((n, info, len)),
            Scanned::Removed => {}
        }
    }

    // Segments whose records are all in the store go now; the rest are
    // replayed and stay until released.
    let mut segments = BTreeMap::new();
    let mut replay_segments = VecDeque::new();
    let mut deleted = false;
    for (n, info, len) in kept {
        if info.fully_released(&released) {
            fs::remove_file(&info.path).map_err(io_err("delete released segment", &info.path))?;
            deleted = true;
        } else {
            replay_segments.push_back((n, info.path.clone(), len));
            segments.insert(n, info);
        }
    }
    if deleted || truncated.is_some() {
        format::sync_dir(&dir)?;
    }

    let next = numbers
        .last()
        .map_or(1, |n| n.saturating_add(1))
        .max(marker.next_segment)
        .max(1);
    let (file, path) = create_segment(&dir, next)?;
    segments.insert(
        next,
        SegmentInfo {
            path: path.clone(),
            bytes: SEGMENT_HEADER_BYTES,
            chains: HashMap::new(),
        },
    );
    let disk_bytes = segments.values().map(|s| s.bytes).sum();

    let heads: BTreeMap<String, ChainHead> =
        scan.last.iter().map(|(c, h)| (c.clone(), *h)).collect();
    let state = State {
        queue: Vec::new(),
        queued_bytes: 0,
        disk_bytes,
        durable_heads: scan.last.clone(),
        heads: scan.last,
        released,
        segments,
        active: next,
        durable: super::WalPosition {
            segment: next,
            offset: SEGMENT_HEADER_BYTES,
        },
        writer_waiting: false,
        closed: false,
        failed: None,
        stats: WalStats {
            max_wal_bytes: options.max_wal_bytes,
            ..WalStats::default()
        },
        #[cfg(test)]
        paused: false,
        #[cfg(test)]
        no_space_writes: 0,
        #[cfg(test)]
        no_space_markers: 0,
    };
    let reserve = Reserve::new(&dir, options.effective_reserve_bytes());
    reserve.clean_up()?;
    reserve.restore()?;
    let shared = Arc::new(Shared {
        state: Mutex::new(state),
        wake: Condvar::new(),
        dir,
        options,
        sync_seconds: Default::default(),
        rewinds: Default::default(),
        reserve,
    });
    let active = ActiveSegment {
        number: next,
        file,
        path: path.clone(),
        len: SEGMENT_HEADER_BYTES,
    };
    let thread_shared = shared.clone();
    let handle = std::thread::Builder::new()
        .name("otel-audit-wal".into())
        .spawn(move || writer::run(thread_shared, active))
        .map_err(io_err("start the WAL writer thread for", &path))?;
    let wal = Wal {
        inner: Arc::new(Inner {
            shared,
            writer: Mutex::new(Some(handle)),
            release_lock: Mutex::new(()),
            _lock_file: lock_file,
        }),
    };
    let replay = Replay {
        heads,
        record_count: scan.unreleased,
        truncated,
        segments: replay_segments,
        released: marker.released,
        reader: None,
        payload: Vec::new(),
        ready: VecDeque::new(),
        done: false,
    };
    Ok((wal, replay))
}

#[cfg(test)]
mod tests {
    use super::*;
    use otel_audit_event::{AuditEvent, Category, Chain, decode_canonical};

    /// The tail test answers as decoding the record and comparing its chain
    /// and seq would, for chains whose ids end like each other's and for
    /// heads below, at and above each record (and a non-token id, which
    /// is never skipped by its tail).
    #[test]
    fn the_tail_test_agrees_with_decoding() {
        let ids = ["i.t", "x.i.t", "i.tt", "a.b-c_d", "i.t.i.t"];
        let mut records = Vec::new();
        for id in ids {
            let tenant = id.rsplit('.').next().unwrap();
            let mut chain = Chain::new(id, tenant).unwrap();
            for i in 0..4 {
                let mut e = AuditEvent::new(tenant, "svc", Category::Inference, "llm.chat");
                e.attributes.insert("i".into(), "x".repeat(i * 7));
                records.push(chain.append(chrono::Utc::now(), e).unwrap());
            }
        }
        let released_by_tail = |released: &BTreeMap<String, ChainHead>, bytes: &[u8]| {
            chain_and_seq(bytes).is_some_and(|(id, seq)| is_released(released, id, seq))
        };
        let mut bytes = Vec::new();
        let mut skipped = 0;
        for mask in 0..(1u32 << ids.len()) {
            for head in 0..5u64 {
                let released: BTreeMap<String, ChainHead> = ids
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| mask & (1 << i) != 0)
                    .map(|(i, id)| {
                        let seq = (head + i as u64) % 5;
                        (id.to_string(), ChainHead { seq, hash: [0; 32] })
                    })
                    .collect();
                for r in &records {
                    bytes.clear();
                    r.canonical_bytes(&mut bytes);
                    let d = decode_canonical(&bytes, r.prev_hash, r.hash).unwrap();
                    let expected = released.get(&d.chain_id).is_some_and(|h| d.seq <= h.seq);
                    assert_eq!(
                        released_by_tail(&released, &bytes),
                        expected,
                        "{} {}",
                        d.chain_id,
                        d.seq
                    );
                    skipped += usize::from(expected);
                }
            }
        }
        assert!(skipped > 100, "{skipped}");
        // Not a path token: decoded, never skipped by its tail.
        let mut odd = records[0].clone();
        odd.chain_id = "i t".into();
        bytes.clear();
        odd.canonical_bytes(&mut bytes);
        assert_eq!(chain_and_seq(&bytes), None);
        let released = BTreeMap::from([(
            "i t".to_string(),
            ChainHead {
                seq: 9,
                hash: [0; 32],
            },
        )]);
        assert!(!released_by_tail(&released, &bytes));
        // Damaged tails are left to the decoder.
        let released = BTreeMap::from([(
            "i.t".to_string(),
            ChainHead {
                seq: 9,
                hash: [0; 32],
            },
        )]);
        bytes.clear();
        records[0].canonical_bytes(&mut bytes);
        assert!(released_by_tail(&released, &bytes));
        let n = bytes.len();
        bytes[n - 9] = 0;
        assert!(!released_by_tail(&released, &bytes));
        assert!(!released_by_tail(&released, &bytes[..5]));
    }
}
