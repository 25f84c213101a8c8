//! The reserve: disk space the WAL holds back in `<dir>/reserve` for its own
//! bookkeeping on a full file system.
//!
//! When the WAL's file system fills up, clients are refused (retryable), and
//! the way out is to delete something: expired files (retention), or the WAL
//! segments the store already holds (a release). Both must write first —
//! retention records each deletion in the chain before deleting, a release
//! records durably what the store holds before deleting a segment — so on a
//! file system with no room at all neither could ever run. The reserve is a
//! file of `reserve_bytes` allocated while there is room and deleted when one
//! of those writes finds none, which then gets the space it needs. Clients'
//! data never uses it: a group is written into it only if it carries records
//! the collector makes about itself (see `Entries::may_use_reserve`).

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::WalError;
use super::format::{io_err, remove_if_present, sync_dir};

/// The reserve file in the WAL directory.
pub(crate) const RESERVE_FILE: &str = "reserve";
/// Where a reserve is allocated before it is renamed into place, so that a
/// crash never leaves a short file that looks like a whole reserve.
pub(crate) const RESERVE_TMP_FILE: &str = "reserve.tmp";

/// What [`Wal::restore_reserve`](super::Wal::restore_reserve) found or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReserveState {
    /// The reserve is in place (it was, or it was allocated now).
    Held {
        /// Its size.
        bytes: u64,
    },
    /// The file system has too little room to allocate it without taking
    /// the space clients need: tried again later.
    NoRoom {
        /// What the reserve needs.
        bytes: u64,
        /// What the file system had available.
        available_bytes: u64,
    },
    /// `reserve_bytes` is 0.
    Disabled,
}

pub(crate) struct Reserve {
    path: PathBuf,
    tmp: PathBuf,
    dir: PathBuf,
    bytes: u64,
    /// Bytes held now (0 or `bytes`), for metrics and to skip a release when
    /// there is nothing to delete.
    held: AtomicU64,
    /// Serialises restores (a release needs no lock: deleting twice is fine).
    restoring: Mutex<()>,
}

impl Reserve {
    pub(crate) fn new(dir: &Path, bytes: u64) -> Reserve {
        Reserve {
            path: dir.join(RESERVE_FILE),
            tmp: dir.join(RESERVE_TMP_FILE),
            dir: dir.to_owned(),
            bytes,
            held: AtomicU64::new(0),
            restoring: Mutex::new(()),
        }
    }

    /// Bytes held now.
    pub(crate) fn held_bytes(&self) -> u64 {
        self.held.load(Ordering::Acquire)
    }

    /// Deletes the reserve, so that the write that found no space (`to`
    /// says what it records, for the log) can be tried again in its room.
    /// Whether there was one to delete.
    pub(crate) fn release(&self, to: &str) -> Result<bool, WalError> {
        if self.held.swap(0, Ordering::AcqRel) == 0 {
            return Ok(false);
        }
        let deleted = remove_if_present(&self.path, "delete reserve")?;
        if deleted {
            tracing::warn!(
                dir = %self.dir.display(),
                "the WAL's file system is full: its reserve was deleted to record {to}"
            );
        }
        Ok(deleted)
    }

    /// Allocates the reserve unless it is in place. Only when the file system
    /// has room for it twice over: a reserve that filled the disk would
    /// refuse the clients it is meant to keep the way open for.
    pub(crate) fn restore(&self) -> Result<ReserveState, WalError> {
        let _serial = self.restoring.lock().unwrap_or_else(|e| e.into_inner());
        if self.bytes == 0 {
            // Turned off: a reserve left from before would hold its disk
            // for ever.
            remove_if_present(&self.path, "delete reserve")?;
            return Ok(ReserveState::Disabled);
        }
        let held = ReserveState::Held { bytes: self.bytes };
        if let Ok(meta) = fs::metadata(&self.path)
            && allocated_bytes(&meta) >= self.bytes
        {
            if meta.len() > self.bytes {
                // A smaller `reserve_bytes` than when it was allocated.
                fs::OpenOptions::new()
                    .write(true)
                    .open(&self.path)
                    .and_then(|f| f.set_len(self.bytes))
                    .map_err(io_err("shrink reserve", &self.path))?;
            }
            self.held.store(self.bytes, Ordering::Release);
            return Ok(held);
        }
        let available_bytes = available_bytes(&self.dir)?;
        if available_bytes < self.bytes.saturating_mul(2) {
            return Ok(ReserveState::NoRoom {
                bytes: self.bytes,
                available_bytes,
            });
        }
        if let Err(e) = self.allocate_tmp() {
            let _ = fs::remove_file(&self.tmp);
            if super::writer::no_space(&e) {
                // Another writer took the room meanwhile.
                return Ok(ReserveState::NoRoom {
                    bytes: self.bytes,
                    available_bytes,
                });
            }
            return Err(io_err("allocate reserve", &self.tmp)(e));
        }
        fs::rename(&self.tmp, &self.path).map_err(io_err("rename reserve", &self.path))?;
        sync_dir(&self.dir)?;
        self.held.store(self.bytes, Ordering::Release);
        Ok(held)
    }

    /// Allocates `bytes` in the temporary file and syncs it.
    fn allocate_tmp(&self) -> std::io::Result<()> {
        let mut file = File::create(&self.tmp)?;
        match rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, self.bytes) {
            Ok(()) => {}
            // File systems without fallocate get the blocks written. Not
            // zeros: a compressing file system would store those in nothing.
            Err(e) if e == rustix::io::Errno::OPNOTSUPP || e == rustix::io::Errno::NOSYS => {
                let mut block = vec![0u8; 1 << 20];
                let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
                for chunk in block.chunks_exact_mut(8) {
                    // xorshift64: incompressible enough, and cheap.
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    chunk.copy_from_slice(&x.to_le_bytes());
                }
                let mut left = self.bytes;
                while left > 0 {
                    let n = left.min(block.len() as u64) as usize;
                    file.write_all(&block[..n])?;
                    left -= n as u64;
                }
            }
            Err(e) => return Err(e.into()),
        }
        file.sync_all()
    }

    /// Removes a reserve left half-allocated by a crash.
    pub(crate) fn clean_up(&self) -> Result<(), WalError> {
        remove_if_present(&self.tmp, "delete").map(drop)
    }
}

/// Disk blocks a file holds (not its length: a sparse file holds none).
pub(crate) fn allocated_bytes(meta: &fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    meta.blocks().saturating_mul(512)
}

/// What an unprivileged writer may still allocate on `dir`'s file system.
fn available_bytes(dir: &Path) -> Result<u64, WalError> {
    let st = rustix::fs::statvfs(dir)
        .map_err(|e| io_err("check free space", dir)(std::io::Error::from(e)))?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}
