//! The writer thread: one group commit at a time.

use std::fs::File;
use std::io::{ErrorKind, IoSlice, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::format::{GROUP_OVERHEAD_BYTES, create_segment, frame_prefix, io_err};
use super::{Appended, Pending, SegmentInfo, Shared, WalError, WalPosition};

/// The segment being appended to.
pub(crate) struct ActiveSegment {
    pub(crate) number: u64,
    pub(crate) file: File,
    pub(crate) path: PathBuf,
    pub(crate) len: u64,
}

/// Why a group was not written.
enum GroupError {
    /// No room on the file system: nothing of the group is left in the
    /// segment, and the WAL goes on (the caller rewinds the chains).
    NoSpace {
        op: &'static str,
        path: PathBuf,
        reason: String,
    },
    /// Anything else: the WAL fails for good.
    Fatal(WalError),
}

impl From<WalError> for GroupError {
    /// An I/O error for lack of room is [`GroupError::NoSpace`]; any other
    /// error is fatal.
    fn from(e: WalError) -> Self {
        match e {
            WalError::Io { op, path, source } if no_space(&source) => GroupError::NoSpace {
                op,
                path,
                reason: source.to_string(),
            },
            e => GroupError::Fatal(e),
        }
    }
}

/// Whether an I/O error means the file system has no room for the write.
pub(crate) fn no_space(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded | ErrorKind::FileTooLarge
    )
}

/// Runs until the WAL is closed and its queue drained, or a write fails
/// other than for lack of space.
pub(crate) fn run(shared: Arc<Shared>, mut segment: ActiveSegment) {
    let mut group: Vec<Pending> = Vec::new();
    loop {
        {
            let mut st = shared.lock();
            while st.idle() && !st.closed {
                st.writer_waiting = true;
                st = shared.wake.wait(st).unwrap_or_else(|e| e.into_inner());
                st.writer_waiting = false;
            }
            if st.queue.is_empty() {
                return;
            }
            std::mem::swap(&mut group, &mut st.queue);
        }
        let mut written = write_group(&shared, &mut segment, &group);
        if matches!(written, Err(GroupError::NoSpace { .. })) && group.iter().any(|p| p.system) {
            // The collector's own records (retention's tombstones, which
            // must be durable before expired files are deleted to make
            // room) get the reserve's space; without it a full disk could
            // never be freed from inside.
            match shared.reserve.release("the collector's own events") {
                Ok(true) => written = write_group(&shared, &mut segment, &group),
                Ok(false) => {}
                // Refused for lack of space as it would have been anyway.
                Err(e) => tracing::error!(error = %e, "could not delete the WAL's reserve"),
            }
        }
        match written {
            Ok(position) => complete(&shared, &segment, &mut group, position),
            Err(GroupError::NoSpace { op, path, reason }) => {
                rewind(&shared, &mut group, op, &path, &reason)
            }
            Err(GroupError::Fatal(e)) => {
                fail(&shared, &mut group, e);
                return;
            }
        }
    }
}

/// Writes one frame holding every record of `group`, rolling to a new
/// segment first if it would not fit, and fsyncs it.
fn write_group(
    shared: &Shared,
    segment: &mut ActiveSegment,
    group: &[Pending],
) -> Result<WalPosition, GroupError> {
    let entry_bytes: u64 = group.iter().map(|p| p.entries.len() as u64).sum();
    let frame_bytes = GROUP_OVERHEAD_BYTES + entry_bytes;
    let empty = segment.len == super::format::SEGMENT_HEADER_BYTES;
    if !empty && segment.len + frame_bytes > shared.options.max_segment_bytes {
        // Without room, the new segment was removed again and the current
        // one is as it was.
        roll(shared, segment)?;
    }
    let count: u32 = group.iter().map(|p| p.count).sum();
    let parts: Vec<&[u8]> = group.iter().map(|p| p.entries.as_ref()).collect();
    let prefix = frame_prefix(segment.number, segment.len, count, &parts);
    // The requests' entries go to the kernel from where they are, in one
    // system call: copying them into one buffer first was 2% of the
    // collector's time under load.
    let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(parts.len() + 1);
    slices.push(IoSlice::new(&prefix));
    slices.extend(parts.iter().map(|p| IoSlice::new(p)));
    let path = &segment.path;
    let started = std::time::Instant::now();
    #[cfg(test)]
    let injected = super::take_one(&mut shared.lock().no_space_writes);
    #[cfg(not(test))]
    let injected = false;
    let written = if injected {
        segment
            .file
            .write_all(&prefix)
            .and_then(|()| Err(ErrorKind::StorageFull.into()))
    } else {
        write_all_vectored(&mut segment.file, &mut slices)
    };
    if let Err(e) = written {
        let e = GroupError::from(io_err("write segment", path)(e));
        if matches!(e, GroupError::NoSpace { .. }) {
            // Cut off what part of the frame got in, so the next group is
            // written where this one should have been. Nothing of it was
            // acknowledged; if this fails too, replay after a restart drops
            // the partial frame (its checksum cannot match).
            segment
                .file
                .set_len(segment.len)
                .and_then(|()| segment.file.seek(SeekFrom::Start(segment.len)))
                .map_err(|e| GroupError::Fatal(io_err("truncate segment", path)(e)))?;
        }
        return Err(e);
    }
    // A failed fsync is fatal whatever its cause: the kernel may have
    // dropped the pages it could not write (see the module's "Failure").
    segment
        .file
        .sync_data()
        .map_err(|e| GroupError::Fatal(io_err("fsync segment", path)(e)))?;
    shared.sync_seconds.observe(started.elapsed());
    segment.len += frame_bytes;
    Ok(WalPosition {
        segment: segment.number,
        offset: segment.len,
    })
}

/// Writes every byte of `slices` (`Write::write_all_vectored` is not stable).
fn write_all_vectored(file: &mut File, mut slices: &mut [IoSlice<'_>]) -> std::io::Result<()> {
    IoSlice::advance_slices(&mut slices, 0);
    while !slices.is_empty() {
        match file.write_vectored(slices) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Starts the next segment; the full one stays for replay until released.
fn roll(shared: &Shared, segment: &mut ActiveSegment) -> Result<(), WalError> {
    let number = segment.number + 1;
    let (file, path) = create_segment(&shared.dir, number)?;
    let len = super::format::SEGMENT_HEADER_BYTES;
    {
        let mut st = shared.lock();
        st.segments.insert(
            number,
            SegmentInfo {
                path: path.clone(),
                bytes: len,
                chains: Default::default(),
            },
        );
        st.disk_bytes += len;
        st.active = number;
    }
    *segment = ActiveSegment {
        number,
        file,
        path,
        len,
    };
    Ok(())
}

/// Books a written group and answers its waiters.
fn complete(
    shared: &Shared,
    segment: &ActiveSegment,
    group: &mut Vec<Pending>,
    position: WalPosition,
) {
    let entry_bytes: u64 = group.iter().map(|p| p.entries.len() as u64).sum();
    {
        let mut st = shared.lock();
        st.queued_bytes -= entry_bytes;
        st.disk_bytes += entry_bytes + GROUP_OVERHEAD_BYTES;
        st.durable = position;
        st.stats.groups_written += 1;
        st.stats.appends_written += group.len() as u64;
        st.stats.records_written += group.iter().map(|p| u64::from(p.count)).sum::<u64>();
        let info = st
            .segments
            .get_mut(&segment.number)
            .expect("the active segment is registered");
        info.bytes = segment.len;
        for p in group.iter() {
            for (chain, head) in &p.chains {
                match info.chains.get_mut(chain.as_str()) {
                    Some(max) => *max = (*max).max(head.seq),
                    None => {
                        info.chains.insert(chain.clone(), head.seq);
                    }
                }
            }
        }
        for p in group.iter() {
            for (chain, head) in &p.chains {
                match st.durable_heads.get_mut(chain.as_str()) {
                    Some(h) => *h = *head,
                    None => {
                        st.durable_heads.insert(chain.clone(), *head);
                    }
                }
            }
        }
    }
    for p in group.drain(..) {
        // A waiter that went away does not care.
        let _ = p.tx.send(Ok(Appended {
            position,
            chains: p.chains,
        }));
    }
}

/// Refuses the group and everything queued behind it (each was chained on
/// the ones before), and rewinds every chain to its last durable record, so
/// that the next append of a chain continues from there. Later appends are
/// taken as usual.
fn rewind(
    shared: &Shared,
    group: &mut Vec<Pending>,
    op: &'static str,
    path: &std::path::Path,
    reason: &str,
) {
    refuse_all(
        shared,
        group,
        |st| {
            shared.rewinds.fetch_add(1, Ordering::AcqRel);
            st.heads = st.durable_heads.clone();
        },
        || WalError::NoSpace {
            op,
            path: path.to_owned(),
            reason: reason.to_owned(),
        },
    );
}

/// Fails the group, everything queued, and every later append.
fn fail(shared: &Shared, group: &mut Vec<Pending>, error: WalError) {
    let source = Arc::new(error);
    refuse_all(
        shared,
        group,
        |st| st.failed = Some(source.clone()),
        || WalError::Failed {
            source: source.clone(),
        },
    );
}

/// Answers the group and everything queued with `error()`, after `update`
/// changed the state under the same lock (so no append slips in between).
fn refuse_all(
    shared: &Shared,
    group: &mut Vec<Pending>,
    update: impl FnOnce(&mut super::State),
    error: impl Fn() -> WalError,
) {
    let queued = {
        let mut st = shared.lock();
        update(&mut st);
        st.queued_bytes = 0;
        std::mem::take(&mut st.queue)
    };
    for p in group.drain(..).chain(queued) {
        let _ = p.tx.send(Err(error()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectored_write_writes_every_slice_in_order() {
        // More slices than one writev takes (IOV_MAX is 1024 on Linux), of
        // uneven sizes, some empty.
        let parts: Vec<Vec<u8>> = (0..3000u32)
            .map(|i| vec![(i % 251) as u8; (i % 7) as usize * 13])
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg");
        let mut file = File::create(&path).unwrap();
        let mut slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
        write_all_vectored(&mut file, &mut slices).unwrap();
        drop(file);
        assert_eq!(std::fs::read(&path).unwrap(), parts.concat());
    }
}
