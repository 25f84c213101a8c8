//! The WAL's bytes on disk: segment headers, frames, record entries and the
//! `released` marker. The module documentation of [`crate::wal`] describes
//! the layout; this file is its implementation.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use otel_audit_event::{Link, Record};
use otel_audit_storage::CanonicalRow;

use super::{ChainHead, WalError};

/// First bytes of every segment file.
pub(crate) const SEGMENT_MAGIC: [u8; 8] = *b"OTAUDWAL";
/// First bytes of the `released` marker file.
pub(crate) const MARKER_MAGIC: [u8; 8] = *b"OTAUDREL";
/// The on-disk format version of segments and the marker.
pub(crate) const FORMAT_VERSION: u32 = 1;
/// `magic(8) | version u32 | segment number u64 | crc32c u32`.
pub(crate) const SEGMENT_HEADER_BYTES: u64 = 24;
/// `payload length u32 | crc32c u32`.
pub(crate) const FRAME_HEADER_BYTES: u64 = 8;
/// `segment number u64 | frame offset u64 | record count u32`, at the start of
/// every frame payload.
pub(crate) const GROUP_HEADER_BYTES: usize = 20;
/// `canonical length u32 | prev_hash [32] | hash [32]` before each record's
/// canonical bytes.
pub(crate) const ENTRY_HEADER_BYTES: usize = 4 + 32 + 32;
/// Bytes a group adds on disk besides its record entries.
pub(crate) const GROUP_OVERHEAD_BYTES: u64 = FRAME_HEADER_BYTES + GROUP_HEADER_BYTES as u64;

/// The marker file recording what the store already holds.
pub(crate) const MARKER_FILE: &str = "released";
/// Where a new marker is written before it is renamed over the old one.
pub(crate) const MARKER_TMP_FILE: &str = "released.tmp";
/// The file locked for as long as a process has the WAL open.
pub(crate) const LOCK_FILE: &str = "LOCK";

/// `00000000000000000042.wal`.
pub(crate) fn segment_file_name(number: u64) -> String {
    format!("{number:020}.wal")
}

/// The segment number of a file name, if it is a segment's.
pub(crate) fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".wal")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

pub(crate) fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> WalError + use<'a> {
    move |source| WalError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// Deletes `path` if it is there; whether it was.
pub(crate) fn remove_if_present(path: &Path, op: &'static str) -> Result<bool, WalError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err(op, path)(e)),
    }
}

/// Makes a directory's entries (created, renamed, removed files) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("sync directory", dir))
}

pub(crate) fn segment_header(number: u64) -> [u8; SEGMENT_HEADER_BYTES as usize] {
    let mut h = [0u8; SEGMENT_HEADER_BYTES as usize];
    h[..8].copy_from_slice(&SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[12..20].copy_from_slice(&number.to_le_bytes());
    let crc = crc32c::crc32c(&h[..20]);
    h[20..].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Creates segment `number` in `dir`: header written and fsynced, directory
/// entry fsynced, so that the segment exists before any frame in it is
/// acknowledged. Returns the file, positioned after the header.
pub(crate) fn create_segment(dir: &Path, number: u64) -> Result<(File, PathBuf), WalError> {
    let path = dir.join(segment_file_name(number));
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(io_err("create segment", &path))?;
    let written = file
        .write_all(&segment_header(number))
        .and_then(|()| file.sync_all())
        .map_err(io_err("write segment header", &path))
        .and_then(|()| sync_dir(dir));
    if let Err(e) = written {
        // A segment without its header would stop the next attempt
        // (`create_new`) and every replay; nothing is in it yet.
        drop(file);
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    Ok((file, path))
}

/// Completes an entry (`len | prev_hash | hash | canonical`) whose header
/// space was reserved just before `canonical_start`, the canonical bytes
/// running from there to the end of `out`.
pub(crate) fn finish_entry(
    out: &mut [u8],
    canonical_start: usize,
    record: &Link,
) -> Result<(), WalError> {
    let len = out.len() - canonical_start;
    let len32 = u32::try_from(len).map_err(|_| WalError::TooLarge {
        bytes: len as u64,
        max_bytes: u64::from(u32::MAX),
    })?;
    let start = canonical_start - ENTRY_HEADER_BYTES;
    out[start..start + 4].copy_from_slice(&len32.to_le_bytes());
    out[start + 4..start + 36].copy_from_slice(&record.prev_hash);
    out[start + 36..canonical_start].copy_from_slice(&record.hash);
    Ok(())
}

/// Writes the frame header and group header of a group of `count` records
/// whose entries are `parts`, to be written at `offset` of segment `segment`.
pub(crate) fn frame_prefix(
    segment: u64,
    offset: u64,
    count: u32,
    parts: &[&[u8]],
) -> [u8; GROUP_OVERHEAD_BYTES as usize] {
    let mut p = [0u8; GROUP_OVERHEAD_BYTES as usize];
    let payload_len = GROUP_HEADER_BYTES + parts.iter().map(|b| b.len()).sum::<usize>();
    p[8..16].copy_from_slice(&segment.to_le_bytes());
    p[16..24].copy_from_slice(&offset.to_le_bytes());
    p[24..28].copy_from_slice(&count.to_le_bytes());
    let mut crc = crc32c::crc32c(&p[8..28]);
    for b in parts {
        crc = crc32c::crc32c_append(crc, b);
    }
    // Validation keeps every group far below 4 GiB (max_queue_bytes).
    p[..4].copy_from_slice(&(payload_len as u32).to_le_bytes());
    p[4..8].copy_from_slice(&crc.to_le_bytes());
    p
}

/// Why a segment header is not valid.
pub(crate) fn check_segment_header(bytes: &[u8], number: u64) -> Result<(), &'static str> {
    if bytes.len() < SEGMENT_HEADER_BYTES as usize {
        return Err("segment header is incomplete");
    }
    if bytes[..8] != SEGMENT_MAGIC {
        return Err("not a WAL segment (bad magic)");
    }
    let crc = u32::from_le_bytes(bytes[20..24].try_into().expect("4 bytes"));
    if crc32c::crc32c(&bytes[..20]) != crc {
        return Err("segment header checksum mismatch");
    }
    if u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")) != FORMAT_VERSION {
        return Err("unsupported WAL format version");
    }
    if u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes")) != number {
        return Err("segment header names another segment number than the file name");
    }
    Ok(())
}

/// What the next bytes of a segment are.
pub(crate) enum Next {
    /// A complete frame whose checksum and position match; its payload is in
    /// the caller's buffer.
    Frame {
        /// Where the frame starts.
        offset: u64,
    },
    /// The end of the file, exactly at a frame boundary.
    End,
    /// Bytes at `offset` that are not a valid frame.
    Bad {
        /// Where they start.
        offset: u64,
        /// What is wrong.
        reason: &'static str,
    },
}

/// Checks a frame whose header is `header` at `offset` of segment `number`,
/// with `available` bytes after the header; returns the payload length.
fn check_frame_header(header: [u8; 8], available: u64) -> Result<usize, &'static str> {
    let len = u64::from(u32::from_le_bytes(header[..4].try_into().expect("4 bytes")));
    if len < GROUP_HEADER_BYTES as u64 {
        return Err("frame length is too small");
    }
    if len > available {
        return Err("frame extends past the end of the file");
    }
    Ok(len as usize)
}

fn check_frame_payload(
    header: [u8; 8],
    payload: &[u8],
    number: u64,
    offset: u64,
) -> Result<(), &'static str> {
    let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
    if crc32c::crc32c(payload) != crc {
        return Err("frame checksum mismatch");
    }
    let seg = u64::from_le_bytes(payload[..8].try_into().expect("8 bytes"));
    let off = u64::from_le_bytes(payload[8..16].try_into().expect("8 bytes"));
    if seg != number || off != offset {
        return Err("frame was written for another segment or offset");
    }
    Ok(())
}

/// Reads the frames of one segment in order.
pub(crate) struct FrameReader {
    file: BufReader<File>,
    pub(crate) path: PathBuf,
    pub(crate) number: u64,
    pos: u64,
    len: u64,
}

impl FrameReader {
    /// Opens a segment and checks its header. `Ok(Err(reason))` is an invalid
    /// header; `len` limits how much of the file is read.
    pub(crate) fn open(
        path: &Path,
        number: u64,
        len: Option<u64>,
    ) -> Result<Result<Self, &'static str>, WalError> {
        let file = File::open(path).map_err(io_err("open segment", path))?;
        let file_len = file
            .metadata()
            .map_err(io_err("read segment metadata", path))?
            .len();
        let len = len.unwrap_or(file_len).min(file_len);
        let mut file = BufReader::with_capacity(256 * 1024, file);
        let mut header = [0u8; SEGMENT_HEADER_BYTES as usize];
        let n = read_up_to(&mut file, &mut header).map_err(io_err("read segment", path))?;
        if let Err(reason) = check_segment_header(&header[..n.min(len as usize)], number) {
            return Ok(Err(reason));
        }
        Ok(Ok(FrameReader {
            file,
            path: path.to_owned(),
            number,
            pos: SEGMENT_HEADER_BYTES,
            len,
        }))
    }

    /// The length of the file (or of the part being read).
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Reads the next frame's payload into `payload`. After `Bad` the reader
    /// must not be used further.
    pub(crate) fn next(&mut self, payload: &mut Vec<u8>) -> Result<Next, WalError> {
        let offset = self.pos;
        if offset == self.len {
            return Ok(Next::End);
        }
        let available = self.len - offset;
        if available < FRAME_HEADER_BYTES {
            return Ok(Next::Bad {
                offset,
                reason: "incomplete frame header",
            });
        }
        let mut header = [0u8; 8];
        self.file
            .read_exact(&mut header)
            .map_err(io_err("read segment", &self.path))?;
        let len = match check_frame_header(header, available - FRAME_HEADER_BYTES) {
            Ok(len) => len,
            Err(reason) => return Ok(Next::Bad { offset, reason }),
        };
        payload.clear();
        payload.resize(len, 0);
        self.file
            .read_exact(payload)
            .map_err(io_err("read segment", &self.path))?;
        if let Err(reason) = check_frame_payload(header, payload, self.number, offset) {
            return Ok(Next::Bad { offset, reason });
        }
        self.pos = offset + FRAME_HEADER_BYTES + len as u64;
        Ok(Next::Frame { offset })
    }
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Looks for a valid frame anywhere in `path` after `from`. Used when a bad
/// frame is found at `from` in the last segment: a valid frame after it means
/// acknowledged data was damaged (only the last, unsynced group can be torn,
/// and every group is one frame). Returns the first valid frame's offset.
pub(crate) fn find_valid_frame_after(
    path: &Path,
    number: u64,
    from: u64,
) -> Result<Option<u64>, WalError> {
    let mut file = File::open(path).map_err(io_err("open segment", path))?;
    file.seek(SeekFrom::Start(from))
        .map_err(io_err("read segment", path))?;
    let mut rest = Vec::new();
    file.read_to_end(&mut rest)
        .map_err(io_err("read segment", path))?;
    let min = FRAME_HEADER_BYTES as usize + GROUP_HEADER_BYTES;
    for i in 1..rest.len().saturating_sub(min - 1) {
        let offset = from + i as u64;
        let header: [u8; 8] = rest[i..i + 8].try_into().expect("8 bytes");
        let available = (rest.len() - i - 8) as u64;
        let Ok(len) = check_frame_header(header, available) else {
            continue;
        };
        let payload = &rest[i + 8..i + 8 + len];
        // Cheap position check first; the checksum only for real candidates.
        if payload[..8] != number.to_le_bytes() || payload[8..16] != offset.to_le_bytes() {
            continue;
        }
        if check_frame_payload(header, payload, number, offset).is_ok() {
            return Ok(Some(offset));
        }
    }
    Ok(None)
}

/// One record entry of a frame: its hashes and canonical bytes.
pub(crate) struct Entry<'a> {
    pub(crate) prev_hash: [u8; 32],
    pub(crate) hash: [u8; 32],
    pub(crate) canonical: &'a [u8],
    /// Where `canonical` starts in the bytes the entry was read from.
    pub(crate) start: usize,
}

/// Splits a frame payload (already checksummed) into its record entries;
/// each entry's `start` is within the payload.
pub(crate) fn split_entries<'a>(
    payload: &'a [u8],
    out: &mut Vec<Entry<'a>>,
) -> Result<(), &'static str> {
    out.clear();
    let count = u32::from_le_bytes(payload[16..20].try_into().expect("4 bytes")) as usize;
    let mut pos = GROUP_HEADER_BYTES;
    while pos < payload.len() {
        let rest = &payload[pos..];
        if rest.len() < ENTRY_HEADER_BYTES {
            return Err("record entry header is incomplete");
        }
        let len = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
        if rest.len() - ENTRY_HEADER_BYTES < len {
            return Err("record entry extends past the end of its frame");
        }
        let start = pos + ENTRY_HEADER_BYTES;
        out.push(Entry {
            prev_hash: rest[4..36].try_into().expect("32 bytes"),
            hash: rest[36..68].try_into().expect("32 bytes"),
            canonical: &payload[start..start + len],
            start,
        });
        pos = start + len;
    }
    if out.len() != count {
        return Err("frame's record count does not match its entries");
    }
    if count == 0 {
        return Err("frame holds no records");
    }
    Ok(())
}

/// Decodes an entry in full (the open scan, for a record whose hash does
/// not match or whose chain the end of its bytes does not tell).
pub(crate) fn decode_entry(
    entry: &Entry<'_>,
    path: &Path,
    offset: u64,
    index: usize,
) -> Result<Record, WalError> {
    otel_audit_event::decode_canonical(entry.canonical, entry.prev_hash, entry.hash).map_err(
        |source| WalError::Decode {
            path: path.to_owned(),
            offset,
            index,
            source,
        },
    )
}

/// The row of `entry`, read from `shared` (the bytes the entry was split
/// from), sharing them; `tail` is its chain and seq when the end of its bytes
/// told them ([`chain_and_seq`](otel_audit_event::chain_and_seq)). Its hash
/// is checked once, by the open scan; replay re-reads the same CRC-checked
/// frames.
pub(crate) fn entry_row(
    shared: &Bytes,
    entry: &Entry<'_>,
    tail: Option<(&str, u64)>,
    path: &Path,
    offset: u64,
    index: usize,
) -> Result<CanonicalRow, WalError> {
    let bytes = shared.slice(entry.start..entry.start + entry.canonical.len());
    match tail {
        Some((chain_id, seq)) => {
            CanonicalRow::in_chain(bytes, entry.prev_hash, entry.hash, chain_id, seq)
        }
        None => CanonicalRow::new(bytes, entry.prev_hash, entry.hash),
    }
    .map_err(|source| WalError::Decode {
        path: path.to_owned(),
        offset,
        index,
        source,
    })
}

/// What the marker file records: per chain, the last row the store holds,
/// and the next segment number to use (so numbers never repeat).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Marker {
    pub(crate) next_segment: u64,
    pub(crate) released: BTreeMap<String, ChainHead>,
}

impl Marker {
    /// `magic | version u32 | next_segment u64 | count u32 | count × (len u16 |
    /// chain_id | seq u64 | hash [32]) | crc32c u32`, integers little-endian.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(28 + self.released.len() * 100);
        out.extend_from_slice(&MARKER_MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&self.next_segment.to_le_bytes());
        out.extend_from_slice(&(self.released.len() as u32).to_le_bytes());
        for (chain, head) in &self.released {
            // Chain ids are validated path tokens of at most 128 bytes.
            out.extend_from_slice(&(chain.len() as u16).to_le_bytes());
            out.extend_from_slice(chain.as_bytes());
            out.extend_from_slice(&head.seq.to_le_bytes());
            out.extend_from_slice(&head.hash);
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Marker, &'static str> {
        if bytes.len() < 28 {
            return Err("marker file is too short");
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
            return Err("marker checksum mismatch");
        }
        if body[..8] != MARKER_MAGIC {
            return Err("not a WAL marker file (bad magic)");
        }
        if u32::from_le_bytes(body[8..12].try_into().expect("4 bytes")) != FORMAT_VERSION {
            return Err("unsupported marker format version");
        }
        let next_segment = u64::from_le_bytes(body[12..20].try_into().expect("8 bytes"));
        let count = u32::from_le_bytes(body[20..24].try_into().expect("4 bytes"));
        let mut rest = &body[24..];
        let mut released = BTreeMap::new();
        for _ in 0..count {
            if rest.len() < 2 {
                return Err("marker entry is incomplete");
            }
            let len = usize::from(u16::from_le_bytes(rest[..2].try_into().expect("2 bytes")));
            if rest.len() < 2 + len + 40 {
                return Err("marker entry is incomplete");
            }
            let chain = std::str::from_utf8(&rest[2..2 + len])
                .map_err(|_| "marker chain id is not UTF-8")?
                .to_owned();
            let seq = u64::from_le_bytes(rest[2 + len..10 + len].try_into().expect("8 bytes"));
            let hash = rest[10 + len..42 + len].try_into().expect("32 bytes");
            if released.insert(chain, ChainHead { seq, hash }).is_some() {
                return Err("marker names a chain twice");
            }
            rest = &rest[42 + len..];
        }
        if !rest.is_empty() {
            return Err("marker has trailing bytes");
        }
        Ok(Marker {
            next_segment,
            released,
        })
    }

    /// Reads the marker in `dir`; an absent marker is an empty one.
    pub(crate) fn load(dir: &Path) -> Result<Marker, WalError> {
        let path = dir.join(MARKER_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => Marker::decode(&bytes).map_err(|reason| WalError::Marker { path, reason }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Marker::default()),
            Err(source) => Err(WalError::Io {
                op: "read marker",
                path,
                source,
            }),
        }
    }

    /// Replaces the marker in `dir` atomically: write a temporary file, fsync
    /// it, rename it over the marker, fsync the directory.
    pub(crate) fn store(&self, dir: &Path) -> Result<(), WalError> {
        let tmp = dir.join(MARKER_TMP_FILE);
        let path = dir.join(MARKER_FILE);
        let mut file = File::create(&tmp).map_err(io_err("create marker", &tmp))?;
        file.write_all(&self.encode())
            .and_then(|()| file.sync_all())
            .map_err(io_err("write marker", &tmp))?;
        drop(file);
        std::fs::rename(&tmp, &path).map_err(io_err("rename marker", &path))?;
        sync_dir(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip_and_reject_lookalikes() {
        assert_eq!(segment_file_name(42), "00000000000000000042.wal");
        assert_eq!(
            parse_segment_file_name("00000000000000000042.wal"),
            Some(42)
        );
        assert_eq!(
            parse_segment_file_name(&segment_file_name(u64::MAX)),
            Some(u64::MAX)
        );
        for bad in [
            "0000000000000000042.wal",
            "00000000000000000042.wal.tmp",
            "0000000000000000004x.wal",
            "99999999999999999999.wal",
            "released",
        ] {
            assert_eq!(parse_segment_file_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn segment_header_checks_every_field() {
        let h = segment_header(7);
        assert_eq!(check_segment_header(&h, 7), Ok(()));
        assert!(check_segment_header(&h, 8).is_err());
        assert!(check_segment_header(&h[..23], 7).is_err());
        for i in 0..h.len() {
            let mut bad = h;
            bad[i] ^= 0x10;
            assert!(check_segment_header(&bad, 7).is_err(), "byte {i}");
        }
    }

    #[test]
    fn marker_round_trips_and_rejects_damage() {
        let mut m = Marker {
            next_segment: 9,
            released: BTreeMap::new(),
        };
        m.released.insert(
            "c1.acme".into(),
            ChainHead {
                seq: 5,
                hash: [3; 32],
            },
        );
        m.released.insert(
            "c1.globex".into(),
            ChainHead {
                seq: 0,
                hash: [4; 32],
            },
        );
        let bytes = m.encode();
        assert_eq!(Marker::decode(&bytes), Ok(m.clone()));
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 1;
            assert!(Marker::decode(&bad).is_err(), "byte {i}");
        }
        for len in 0..bytes.len() {
            assert!(Marker::decode(&bytes[..len]).is_err(), "length {len}");
        }
        assert_eq!(
            Marker::decode(&Marker::default().encode()),
            Ok(Marker::default())
        );
    }

    #[test]
    fn entries_must_fill_the_frame_exactly() {
        let split = |payload: &[u8]| {
            let mut entries = Vec::new();
            split_entries(payload, &mut entries).map(|()| {
                entries
                    .iter()
                    .map(|e| e.canonical.to_vec())
                    .collect::<Vec<_>>()
            })
        };
        let mut payload = vec![0u8; GROUP_HEADER_BYTES];
        payload[16..20].copy_from_slice(&1u32.to_le_bytes());
        assert!(split(&payload).is_err(), "count 1, no entry");
        payload.extend_from_slice(&3u32.to_le_bytes());
        payload.extend_from_slice(&[0; 64]);
        payload.extend_from_slice(b"abc");
        assert_eq!(split(&payload), Ok(vec![b"abc".to_vec()]));
        payload.push(0);
        assert!(split(&payload).is_err(), "trailing byte");
        payload.truncate(payload.len() - 2);
        assert!(split(&payload).is_err(), "short entry");
        let mut empty = vec![0u8; GROUP_HEADER_BYTES];
        empty[16..20].copy_from_slice(&0u32.to_le_bytes());
        assert!(split(&empty).is_err(), "no records");
    }
}
