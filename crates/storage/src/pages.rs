//! Column chunks read with one zstd decompressor per thread.
//!
//! parquet-rs gives every column chunk it reads a codec of its own, and for
//! zstd that codec is a new compressor *and* decompressor context
//! (`ZSTDCodec::new`), each of which probes the CPU with `cpuid`. In a
//! virtual machine `cpuid` traps to the hypervisor: on the machine of
//! docs/BENCHMARKS.md a context costs about 15 µs, two per chunk, 50
//! compressed chunks per file. On a store of small files (many tenants,
//! hourly partitions, a few hundred events each) that was a third of
//! verify's CPU time, more than hashing and decoding together.
//!
//! [`FileChunks`] hands parquet-rs's Arrow reader the same pages with the
//! zstd chunks marked uncompressed, so that it makes no codec for them, and
//! decompresses their pages itself with a decompressor kept per thread.
//! Chunks in any other codec (a file rewritten by another writer) are read
//! by parquet-rs as they are.

use std::cell::RefCell;
use std::io::Cursor;
use std::sync::Arc;

use bytes::Bytes;
use parquet::basic::Compression;
use parquet::column::page::{Page, PageIterator, PageMetadata, PageReader};
use parquet::errors::{ParquetError, Result};
use parquet::file::metadata::{ParquetMetaData, RowGroupMetaData};
use parquet::file::serialized_reader::SerializedPageReader;

/// Pages decompress to at most this (a page's sizes are `i32` in the
/// format): a frame header claiming more is refused before anything is
/// allocated for it.
const MAX_PAGE_BYTES: u64 = i32::MAX as u64;

/// The row groups of one Parquet file held in memory, for
/// `ParquetRecordBatchReader::try_new_with_row_groups`.
pub(crate) struct FileChunks {
    bytes: Arc<Bytes>,
    metadata: Arc<ParquetMetaData>,
}

impl FileChunks {
    pub(crate) fn new(bytes: Bytes, metadata: Arc<ParquetMetaData>) -> Self {
        FileChunks {
            bytes: Arc::new(bytes),
            metadata,
        }
    }
}

impl parquet::arrow::arrow_reader::RowGroups for FileChunks {
    fn num_rows(&self) -> usize {
        self.metadata
            .row_groups()
            .iter()
            .map(|rg| usize::try_from(rg.num_rows()).unwrap_or(0))
            .sum()
    }

    fn column_chunks(&self, i: usize) -> Result<Box<dyn PageIterator>> {
        Ok(Box::new(ColumnChunks {
            bytes: self.bytes.clone(),
            metadata: self.metadata.clone(),
            column: i,
            next_row_group: 0,
        }))
    }

    fn row_groups(&self) -> Box<dyn Iterator<Item = &RowGroupMetaData> + '_> {
        Box::new(self.metadata.row_groups().iter())
    }

    fn metadata(&self) -> &ParquetMetaData {
        &self.metadata
    }
}

/// One leaf column's chunk in each row group, in order.
struct ColumnChunks {
    bytes: Arc<Bytes>,
    metadata: Arc<ParquetMetaData>,
    column: usize,
    next_row_group: usize,
}

impl ColumnChunks {
    fn page_reader(&self, row_group: &RowGroupMetaData) -> Result<Box<dyn PageReader>> {
        let chunk = row_group.column(self.column);
        let rows = usize::try_from(row_group.num_rows())
            .map_err(|_| ParquetError::General("a row group has a negative row count".into()))?;
        if !matches!(chunk.compression(), Compression::ZSTD(_)) {
            return Ok(Box::new(SerializedPageReader::new(
                self.bytes.clone(),
                chunk,
                rows,
                None,
            )?));
        }
        // The same chunk, declared uncompressed: the page reader then
        // creates no codec and passes the compressed bytes on.
        let raw = chunk
            .clone()
            .into_builder()
            .set_compression(Compression::UNCOMPRESSED)
            .build()?;
        Ok(Box::new(ZstdPages {
            inner: SerializedPageReader::new(self.bytes.clone(), &raw, rows, None)?,
        }))
    }
}

impl Iterator for ColumnChunks {
    type Item = Result<Box<dyn PageReader>>;

    fn next(&mut self) -> Option<Self::Item> {
        let row_group = self.metadata.row_groups().get(self.next_row_group)?;
        self.next_row_group += 1;
        Some(self.page_reader(row_group))
    }
}

impl PageIterator for ColumnChunks {}

/// The pages of a zstd chunk, decompressed as they are read.
struct ZstdPages<R> {
    inner: R,
}

impl<R: PageReader> PageReader for ZstdPages<R> {
    fn get_next_page(&mut self) -> Result<Option<Page>> {
        self.inner.get_next_page()?.map(decompress_page).transpose()
    }

    fn peek_next_page(&mut self) -> Result<Option<PageMetadata>> {
        self.inner.peek_next_page()
    }

    fn skip_next_page(&mut self) -> Result<()> {
        self.inner.skip_next_page()
    }

    fn supports_deferred_dictionary(&self) -> bool {
        self.inner.supports_deferred_dictionary()
    }

    fn take_deferred_dictionary(&mut self) -> Result<Option<Page>> {
        self.inner
            .take_deferred_dictionary()?
            .map(decompress_page)
            .transpose()
    }

    fn at_record_boundary(&mut self) -> Result<bool> {
        self.inner.at_record_boundary()
    }
}

impl<R: PageReader> Iterator for ZstdPages<R> {
    type Item = Result<Page>;

    fn next(&mut self) -> Option<Self::Item> {
        self.get_next_page().transpose()
    }
}

/// A page of a zstd chunk as parquet-rs would have decompressed it.
fn decompress_page(mut page: Page) -> Result<Page> {
    match &mut page {
        Page::DataPage { buf, .. } | Page::DictionaryPage { buf, .. } => *buf = unzstd(buf, 0)?,
        Page::DataPageV2 {
            buf,
            def_levels_byte_len,
            rep_levels_byte_len,
            is_compressed,
            ..
        } => {
            // Version 2 pages keep their levels uncompressed in front of the
            // values, and may leave the values uncompressed too.
            let levels = *def_levels_byte_len as usize + *rep_levels_byte_len as usize;
            if levels > buf.len() {
                return Err(ParquetError::General(format!(
                    "a data page's levels ({levels} bytes) are longer than the page ({} bytes)",
                    buf.len()
                )));
            }
            // A page of nulls only has no values to decompress.
            if *is_compressed && buf.len() > levels {
                *buf = unzstd(buf, levels)?;
            }
            *is_compressed = false;
        }
    }
    Ok(page)
}

thread_local! {
    /// Made once per thread: see the module documentation.
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { RefCell::new(None) };
}

/// `buf[..keep]` followed by the zstd data of `buf[keep..]` decompressed.
fn unzstd(buf: &[u8], keep: usize) -> Result<Bytes> {
    let frames = &buf[keep..];
    let size = match zstd::zstd_safe::get_frame_content_size(frames) {
        Ok(Some(size)) if size <= MAX_PAGE_BYTES => size as usize,
        Ok(Some(size)) => {
            return Err(ParquetError::General(format!(
                "a zstd page claims to decompress to {size} bytes, more than a page can hold"
            )));
        }
        // A frame that does not record its size (a streaming writer's):
        // decoded by the streaming decoder, which grows its output.
        Ok(None) => return stream_unzstd(buf, keep),
        Err(_) => {
            return Err(ParquetError::General(
                "a zstd page does not start with a zstd frame".into(),
            ));
        }
    };
    let mut out = Vec::with_capacity(keep + size);
    out.extend_from_slice(&buf[..keep]);
    let mut cursor = Cursor::new(&mut out);
    cursor.set_position(keep as u64);
    let decompressed = DECOMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        let d = match cell.as_mut() {
            Some(d) => d,
            None => cell.insert(zstd::bulk::Decompressor::new()?),
        };
        d.decompress_to_buffer(frames, &mut cursor)
    });
    match decompressed {
        Ok(n) if n == size => Ok(Bytes::from(out)),
        // More than one frame (the first one's size is not the page's), or
        // a size that does not match the data: the streaming decoder reads
        // every frame, and reports data that is not zstd.
        _ => stream_unzstd(buf, keep),
    }
}

/// [`unzstd`] for pages whose frames do not say how large they are.
fn stream_unzstd(buf: &[u8], keep: usize) -> Result<Bytes> {
    let mut out = buf[..keep].to_vec();
    let decoder = zstd::stream::read::Decoder::new(&buf[keep..])
        .map_err(|e| ParquetError::External(Box::new(e)))?;
    std::io::copy(
        &mut std::io::Read::take(decoder, MAX_PAGE_BYTES + 1),
        &mut out,
    )
    .map_err(|e| ParquetError::External(Box::new(e)))?;
    if (out.len() - keep) as u64 > MAX_PAGE_BYTES {
        return Err(ParquetError::General(
            "a zstd page decompresses to more than a page can hold".into(),
        ));
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(n: usize) -> Vec<u8> {
        (0..n).map(|i| b"otel-audit pages "[i % 17]).collect()
    }

    #[test]
    fn decompresses_after_the_kept_prefix() {
        let values = text(5000);
        let mut page = b"levels".to_vec();
        page.extend(zstd::bulk::compress(&values, 1).unwrap());
        let out = unzstd(&page, 6).unwrap();
        assert_eq!(&out[..6], b"levels");
        assert_eq!(&out[6..], &values[..]);
        // The thread's decompressor is reused for the next page.
        assert_eq!(unzstd(&page[6..], 0).unwrap(), values);
    }

    #[test]
    fn reads_several_frames_and_frames_without_a_size() {
        let (a, b) = (text(3000), text(700));
        let mut two = zstd::bulk::compress(&a, 1).unwrap();
        two.extend(zstd::bulk::compress(&b, 1).unwrap());
        assert_eq!(unzstd(&two, 0).unwrap(), [a.clone(), b].concat());

        // A streaming encoder does not record the content size.
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
        std::io::Write::write_all(&mut enc, &a).unwrap();
        let unsized_frame = enc.finish().unwrap();
        assert_eq!(
            zstd::zstd_safe::get_frame_content_size(&unsized_frame).unwrap(),
            None
        );
        assert_eq!(unzstd(&unsized_frame, 0).unwrap(), a);
    }

    #[test]
    fn refuses_what_is_not_zstd() {
        let mut frame = zstd::bulk::compress(&text(4000), 1).unwrap();
        assert!(unzstd(b"not a zstd frame at all", 0).is_err());
        let n = frame.len();
        frame[n / 2] ^= 0xff;
        frame.truncate(n - 3);
        assert!(unzstd(&frame, 0).is_err());
    }
}
