//! Top-level text columns encoded as Parquet column chunks straight from the
//! records, without Arrow arrays in between.
//!
//! Half of a file's columns are top-level texts, and through parquet-rs's
//! Arrow writer each of their values was copied into a string builder, then
//! interned in a hash table, then compared twice for the statistics. Here a
//! value is looked up in the chunk's dictionary once (after a check against
//! the previous row's value, which is what most rows of a file repeat), and
//! the statistics come from the dictionary's distinct values.
//!
//! The pages are standard Parquet: data pages v1 with RLE definition levels,
//! `RLE_DICTIONARY` values and a `PLAIN` dictionary page, or `PLAIN` values
//! when the column has no dictionary or its dictionary outgrew its limit
//! (as parquet-rs falls back). Settings (dictionary, statistics, codec, page
//! and dictionary limits, statistics truncation) are read from the same
//! [`WriterProperties`] as the Arrow columns', by column path.

use std::cell::RefCell;

use ahash::RandomState;
use bytes::Bytes;
use hashbrown::HashTable;
use parquet::basic::{Compression, Encoding, PageType};
use parquet::column::page::{CompressedPage, Page, PageWriter};
use parquet::column::writer::ColumnCloseResult;
use parquet::data_type::ByteArray;
use parquet::errors::ParquetError;
use parquet::file::metadata::{ColumnChunkMetaData, PageEncodingStats};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::statistics::{Statistics, ValueStatistics};
use parquet::file::writer::{SerializedPageWriter, TrackedWrite};
use parquet::schema::types::ColumnDescPtr;

/// How one text column is written.
#[derive(Debug, Clone)]
struct Settings {
    dictionary: bool,
    statistics: bool,
    compression: Compression,
    page_bytes: usize,
    page_rows: usize,
    dictionary_bytes: usize,
    truncate: Option<usize>,
}

impl Settings {
    fn of(props: &WriterProperties, descr: &ColumnDescPtr) -> Settings {
        let path = descr.path();
        Settings {
            dictionary: props.dictionary_enabled(path),
            statistics: props.statistics_enabled(path) != EnabledStatistics::None,
            compression: props.compression(path),
            page_bytes: props.column_data_page_size_limit(path),
            page_rows: props.data_page_row_count_limit(),
            dictionary_bytes: props.column_dictionary_page_size_limit(path),
            truncate: props.statistics_truncate_length(),
        }
    }
}

/// The distinct values of a chunk, `PLAIN`-encoded as its dictionary page.
#[derive(Debug)]
struct Dictionary {
    /// Index of each value, by the value's hash.
    table: HashTable<u32>,
    hasher: RandomState,
    /// `(start, len)` of each value's bytes in `page`.
    spans: Vec<(u32, u32)>,
    /// The dictionary page: each value as a little-endian u32 length and its bytes.
    page: Vec<u8>,
    /// The previous row's index: rows of a file mostly repeat it.
    last: Option<u32>,
}

impl Dictionary {
    fn new() -> Dictionary {
        Dictionary {
            table: HashTable::new(),
            hasher: RandomState::new(),
            spans: Vec::new(),
            page: Vec::new(),
            last: None,
        }
    }

    fn value(&self, i: u32) -> &[u8] {
        let (start, len) = self.spans[i as usize];
        &self.page[start as usize..(start + len) as usize]
    }

    fn index(&mut self, v: &[u8]) -> u32 {
        if let Some(last) = self.last
            && same(self.value(last), v)
        {
            return last;
        }
        let hash = self.hasher.hash_one(v);
        let (spans, page) = (&self.spans, &self.page);
        let found = self.table.find(hash, |&i| {
            let (start, len) = spans[i as usize];
            same(&page[start as usize..(start + len) as usize], v)
        });
        let i = match found {
            Some(&i) => i,
            None => {
                let i = self.spans.len() as u32;
                plain(v, &mut self.page);
                self.spans
                    .push(((self.page.len() - v.len()) as u32, v.len() as u32));
                let hasher = &self.hasher;
                let (spans, page) = (&self.spans, &self.page);
                self.table.insert_unique(hash, i, |&j| {
                    let (start, len) = spans[j as usize];
                    hasher.hash_one(&page[start as usize..(start + len) as usize])
                });
                i
            }
        };
        self.last = Some(i);
        i
    }

    fn len(&self) -> usize {
        self.spans.len()
    }
}

/// `a == b`, without a call to `memcmp` for texts of up to 16 bytes (most
/// of the values compared: enum texts, names, ids), where the call costs
/// more than the comparison.
#[inline(always)]
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let n = a.len();
    let word = |s: &[u8], at: usize| u64::from_le_bytes(s[at..at + 8].try_into().expect("8 bytes"));
    match n {
        // Two overlapping words cover 8 to 16 bytes.
        8..=16 => word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8),
        0..8 => {
            let mut x = [0u8; 8];
            let mut y = [0u8; 8];
            x[..n].copy_from_slice(a);
            y[..n].copy_from_slice(b);
            x == y
        }
        _ => a == b,
    }
}

/// One top-level text column of the row group being written.
pub(crate) struct TextChunk {
    descr: ColumnDescPtr,
    settings: Settings,
    optional: bool,
    /// `None` when the column has no dictionary, or after falling back to `PLAIN`.
    dictionary: Option<Dictionary>,
    /// The dictionary of the pages written before a fallback.
    retired: Option<Dictionary>,
    /// Definition levels of the page being filled (optional columns).
    page_levels: Vec<u32>,
    /// Dictionary indices of the page being filled.
    page_indices: Vec<u32>,
    /// `PLAIN` values of the page being filled.
    page_plain: Vec<u8>,
    page_rows: usize,
    pages: Vec<CompressedPage>,
    rows: u64,
    nulls: u64,
    /// Bytes of the values, unencoded (Parquet's size statistics).
    value_bytes: i64,
    /// Bounds of the values written `PLAIN` (the dictionary's are computed at the end).
    plain_min: Option<Vec<u8>>,
    plain_max: Option<Vec<u8>>,
    /// Bytes held by finished pages.
    page_bytes: usize,
}

impl TextChunk {
    /// A chunk for column `descr`, a top-level `BYTE_ARRAY` column.
    pub(crate) fn new(descr: ColumnDescPtr, props: &WriterProperties) -> TextChunk {
        let settings = Settings::of(props, &descr);
        TextChunk {
            optional: descr.max_def_level() > 0,
            dictionary: settings.dictionary.then(Dictionary::new),
            settings,
            descr,
            retired: None,
            page_levels: Vec::new(),
            page_indices: Vec::new(),
            page_plain: Vec::new(),
            page_rows: 0,
            pages: Vec::new(),
            rows: 0,
            nulls: 0,
            value_bytes: 0,
            plain_min: None,
            plain_max: None,
            page_bytes: 0,
        }
    }

    /// Appends one row's value.
    pub(crate) fn push(&mut self, value: Option<&str>) -> Result<(), ParquetError> {
        self.rows += 1;
        self.page_rows += 1;
        match value {
            None => {
                self.nulls += 1;
                if !self.optional {
                    return Err(ParquetError::General(format!(
                        "column {} is required and got no value",
                        self.descr.path()
                    )));
                }
                self.page_levels.push(0);
            }
            Some(v) => {
                if self.optional {
                    self.page_levels.push(1);
                }
                let v = v.as_bytes();
                self.value_bytes += v.len() as i64;
                match &mut self.dictionary {
                    Some(d) => self.page_indices.push(d.index(v)),
                    None => {
                        plain(v, &mut self.page_plain);
                        if self.settings.statistics {
                            if self.plain_min.as_deref().is_none_or(|m| v < m) {
                                self.plain_min = Some(v.to_vec());
                            }
                            if self.plain_max.as_deref().is_none_or(|m| v > m) {
                                self.plain_max = Some(v.to_vec());
                            }
                        }
                    }
                }
            }
        }
        if self.page_rows >= self.settings.page_rows
            || self.page_plain.len() >= self.settings.page_bytes
        {
            self.flush_page()?;
        }
        if self
            .dictionary
            .as_ref()
            .is_some_and(|d| d.page.len() > self.settings.dictionary_bytes)
        {
            // The pages so far keep their dictionary; the rest are PLAIN.
            self.flush_page()?;
            self.retired = self.dictionary.take();
        }
        Ok(())
    }

    /// Bytes held: finished pages, the page being filled and the dictionary.
    pub(crate) fn memory_size(&self) -> usize {
        let dict = |d: &Option<Dictionary>| {
            d.as_ref().map_or(0, |d| {
                d.page.capacity() + d.spans.capacity() * 8 + d.table.capacity() * 4
            })
        };
        self.page_bytes
            + self.page_levels.capacity() * 4
            + self.page_indices.capacity() * 4
            + self.page_plain.capacity()
            + dict(&self.dictionary)
            + dict(&self.retired)
    }

    fn flush_page(&mut self) -> Result<(), ParquetError> {
        if self.page_rows == 0 {
            return Ok(());
        }
        let mut buf = Vec::with_capacity(self.page_plain.len() + self.page_indices.len() + 64);
        if self.optional {
            let at = buf.len();
            buf.extend_from_slice(&[0; 4]);
            rle_hybrid(&self.page_levels, 1, &mut buf);
            let len = (buf.len() - at - 4) as u32;
            buf[at..at + 4].copy_from_slice(&len.to_le_bytes());
        }
        let encoding = match &self.dictionary {
            Some(d) => {
                let width = bit_width(d.len().saturating_sub(1) as u64).max(1);
                buf.push(width);
                rle_hybrid(&self.page_indices, width, &mut buf);
                Encoding::RLE_DICTIONARY
            }
            None => {
                buf.extend_from_slice(&self.page_plain);
                Encoding::PLAIN
            }
        };
        let uncompressed = buf.len();
        let page = Page::DataPage {
            buf: compress(self.settings.compression, buf)?,
            num_values: self.page_rows as u32,
            encoding,
            def_level_encoding: Encoding::RLE,
            rep_level_encoding: Encoding::RLE,
            statistics: None,
        };
        self.page_bytes += page.buffer().len();
        self.pages.push(CompressedPage::new(page, uncompressed));
        self.page_levels.clear();
        self.page_indices.clear();
        self.page_plain.clear();
        self.page_rows = 0;
        Ok(())
    }

    /// Encodes the chunk: its bytes (dictionary page first, then the data
    /// pages, offsets counted from the first byte) and what a row group
    /// writer needs to splice them in.
    pub(crate) fn finish(mut self) -> Result<(Bytes, ColumnCloseResult), ParquetError> {
        self.flush_page()?;
        let dictionary = self.dictionary.take().or(self.retired.take());
        let dictionary_used = self
            .pages
            .iter()
            .any(|p| p.encoding() == Encoding::RLE_DICTIONARY);
        let mut out = TrackedWrite::new(Vec::with_capacity(
            self.page_bytes + dictionary.as_ref().map_or(0, |d| d.page.len()) + 64,
        ));
        let mut total_uncompressed = 0u64;
        let mut total_compressed = 0u64;
        let mut encodings = vec![Encoding::PLAIN, Encoding::RLE];
        let mut dictionary_offset = None;
        let mut data_offset = None;
        // Runs of pages by type and encoding, in file order, as parquet-rs
        // records them: readers tell an all-dictionary chunk by them.
        let mut page_stats: Vec<PageEncodingStats> = Vec::new();
        let mut count_page = |page_type: PageType, encoding: Encoding| match page_stats.last_mut() {
            Some(s) if s.page_type == page_type && s.encoding == encoding => s.count += 1,
            _ => page_stats.push(PageEncodingStats {
                page_type,
                encoding,
                count: 1,
            }),
        };
        let mut bounds = (self.plain_min.take(), self.plain_max.take());
        {
            let mut pages = SerializedPageWriter::new(&mut out);
            if let Some(d) = dictionary.as_ref().filter(|_| dictionary_used) {
                let page = Page::DictionaryPage {
                    buf: compress(self.settings.compression, d.page.clone())?,
                    num_values: d.len() as u32,
                    encoding: Encoding::PLAIN,
                    is_sorted: false,
                };
                let spec = pages.write_page(CompressedPage::new(page, d.page.len()))?;
                dictionary_offset = Some(spec.offset as i64);
                count_page(PageType::DICTIONARY_PAGE, Encoding::PLAIN);
                total_uncompressed += spec.uncompressed_size as u64;
                total_compressed += spec.compressed_size as u64;
                encodings.push(Encoding::RLE_DICTIONARY);
                if self.settings.statistics {
                    for i in 0..d.len() as u32 {
                        widen(&mut bounds, d.value(i));
                    }
                }
            }
            for page in std::mem::take(&mut self.pages) {
                count_page(PageType::DATA_PAGE, page.encoding());
                let spec = pages.write_page(page)?;
                data_offset.get_or_insert(spec.offset as i64);
                total_uncompressed += spec.uncompressed_size as u64;
                total_compressed += spec.compressed_size as u64;
            }
            pages.close()?;
        }
        let mut meta = ColumnChunkMetaData::builder(self.descr.clone())
            .set_encodings(encodings)
            .set_compression(self.settings.compression)
            .set_num_values(self.rows as i64)
            .set_total_compressed_size(total_compressed as i64)
            .set_total_uncompressed_size(total_uncompressed as i64)
            .set_data_page_offset(data_offset.unwrap_or(0))
            .set_dictionary_page_offset(dictionary_offset)
            .set_page_encoding_stats(page_stats)
            .set_unencoded_byte_array_data_bytes(Some(self.value_bytes));
        if self.settings.statistics {
            meta = meta.set_statistics(self.statistics(bounds));
        }
        let bytes = Bytes::from(out.into_inner()?);
        let close = ColumnCloseResult {
            bytes_written: bytes.len() as u64,
            rows_written: self.rows,
            metadata: meta.build()?,
            bloom_filter: None,
            column_index: None,
            offset_index: None,
        };
        Ok((bytes, close))
    }

    /// Chunk statistics as parquet-rs writes them: bounds truncated to the
    /// configured length (`min` cut at a character boundary, `max` cut and
    /// its last character incremented), marked inexact when cut.
    fn statistics(&self, (min, max): (Option<Vec<u8>>, Option<Vec<u8>>)) -> Statistics {
        let limit = self.settings.truncate;
        let cut = |v: Vec<u8>, f: fn(&str, usize) -> Option<Vec<u8>>| match limit {
            Some(l) if v.len() > l => match std::str::from_utf8(&v).ok().and_then(|s| f(s, l)) {
                Some(t) => (t, false),
                None => (v, true),
            },
            _ => (v, true),
        };
        let min = min.map(|v| cut(v, truncate_utf8));
        let max = max.map(|v| cut(v, truncate_and_increment_utf8));
        let min_exact = min.as_ref().is_some_and(|m| m.1);
        let max_exact = max.as_ref().is_some_and(|m| m.1);
        Statistics::ByteArray(
            ValueStatistics::new(
                min.map(|m| ByteArray::from(m.0)),
                max.map(|m| ByteArray::from(m.0)),
                None,
                Some(self.nulls),
                false,
            )
            .with_min_is_exact(min_exact)
            .with_max_is_exact(max_exact),
        )
    }
}

fn widen(bounds: &mut (Option<Vec<u8>>, Option<Vec<u8>>), v: &[u8]) {
    if bounds.0.as_deref().is_none_or(|m| v < m) {
        bounds.0 = Some(v.to_vec());
    }
    if bounds.1.as_deref().is_none_or(|m| v > m) {
        bounds.1 = Some(v.to_vec());
    }
}

/// The longest prefix of at most `length` bytes ending at a character boundary.
fn truncate_utf8(data: &str, length: usize) -> Option<Vec<u8>> {
    let split = (1..=length).rfind(|x| data.is_char_boundary(*x))?;
    Some(data.as_bytes()[..split].to_vec())
}

/// A prefix of at most `length` bytes with its last character incremented
/// (dropping characters that cannot be), so that it is above every text it
/// prefixes.
fn truncate_and_increment_utf8(data: &str, length: usize) -> Option<Vec<u8>> {
    let split = (length.saturating_sub(3)..=length).rfind(|x| data.is_char_boundary(*x))?;
    let data = data.get(..split)?;
    for (idx, c) in data.char_indices().rev() {
        if let Some(next) = char::from_u32(c as u32 + 1)
            && next.len_utf8() == c.len_utf8()
        {
            let mut out = data.as_bytes()[..idx + c.len_utf8()].to_vec();
            next.encode_utf8(&mut out[idx..]);
            return Some(out);
        }
    }
    None
}

/// A `PLAIN` byte array: little-endian u32 length, bytes.
#[inline]
fn plain(v: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    out.extend_from_slice(v);
}

/// Bits needed for `max`.
fn bit_width(max: u64) -> u8 {
    (64 - max.leading_zeros()) as u8
}

fn uleb128(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Parquet's RLE / bit-packing hybrid encoding of `values` (each below
/// `2^width`): runs of 8 or more equal values as RLE runs, the rest
/// bit-packed in groups of 8 (the last group padded with zeros).
pub(crate) fn rle_hybrid(values: &[u32], width: u8, out: &mut Vec<u8>) {
    let n = values.len();
    let mut packed_from = 0;
    let mut i = 0;
    while i < n {
        let v = values[i];
        let mut run = 1;
        while i + run < n && values[i + run] == v {
            run += 1;
        }
        if run >= 8 {
            // A bit-packed run holds a multiple of 8 values: fill it from
            // this run first.
            let fill = (8 - (i - packed_from) % 8) % 8;
            if run - fill >= 8 {
                if i + fill > packed_from {
                    bit_pack(&values[packed_from..i + fill], width, out);
                }
                uleb128(((run - fill) as u64) << 1, out);
                let bytes = (width as usize).div_ceil(8);
                out.extend_from_slice(&v.to_le_bytes()[..bytes]);
                i += run;
                packed_from = i;
                continue;
            }
        }
        i += run;
    }
    if packed_from < n {
        bit_pack(&values[packed_from..], width, out);
    }
}

/// One bit-packed run of `values`, padded to a multiple of 8 values.
fn bit_pack(values: &[u32], width: u8, out: &mut Vec<u8>) {
    let groups = values.len().div_ceil(8);
    uleb128(((groups as u64) << 1) | 1, out);
    let width = width as u32;
    let mut acc = 0u64;
    let mut bits = 0u32;
    for k in 0..groups * 8 {
        acc |= u64::from(values.get(k).copied().unwrap_or(0)) << bits;
        bits += width;
        while bits >= 8 {
            out.push(acc as u8);
            acc >>= 8;
            bits -= 8;
        }
    }
}

thread_local! {
    /// One zstd compressor per thread and level: creating one probes the CPU,
    /// which traps to the hypervisor on a virtual machine (about 15 µs).
    static ZSTD: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
}

fn compress(codec: Compression, buf: Vec<u8>) -> Result<Bytes, ParquetError> {
    match codec {
        Compression::UNCOMPRESSED => Ok(Bytes::from(buf)),
        Compression::ZSTD(level) => ZSTD.with(|z| {
            let mut z = z.borrow_mut();
            let level = level.compression_level();
            if z.as_ref().is_none_or(|(l, _)| *l != level) {
                let c = zstd::bulk::Compressor::new(level)
                    .map_err(|e| ParquetError::External(Box::new(e)))?;
                *z = Some((level, c));
            }
            let (_, c) = z.as_mut().expect("set above");
            c.compress(&buf)
                .map(Bytes::from)
                .map_err(|e| ParquetError::External(Box::new(e)))
        }),
        other => Err(ParquetError::NYI(format!(
            "text columns compressed with {other}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes the hybrid encoding (a reference for the tests).
    fn decode(mut data: &[u8], width: u8, n: usize) -> Vec<u32> {
        let mut out = Vec::new();
        while out.len() < n {
            let mut header = 0u64;
            let mut shift = 0;
            loop {
                let b = data[0];
                data = &data[1..];
                header |= u64::from(b & 0x7f) << shift;
                shift += 7;
                if b < 0x80 {
                    break;
                }
            }
            if header & 1 == 1 {
                let count = (header >> 1) as usize * 8;
                let bytes = count * width as usize / 8;
                let (packed, rest) = data.split_at(bytes);
                for k in 0..count {
                    let mut v = 0u32;
                    for b in 0..width as usize {
                        let bit = k * width as usize + b;
                        v |= u32::from((packed[bit / 8] >> (bit % 8)) & 1) << b;
                    }
                    out.push(v);
                }
                data = rest;
            } else {
                let count = (header >> 1) as usize;
                let bytes = (width as usize).div_ceil(8);
                let mut v = [0u8; 4];
                v[..bytes].copy_from_slice(&data[..bytes]);
                data = &data[bytes..];
                out.extend(std::iter::repeat_n(u32::from_le_bytes(v), count));
            }
        }
        out.truncate(n);
        out
    }

    #[test]
    fn hybrid_round_trips() {
        let mut cases: Vec<(Vec<u32>, u8)> = vec![
            (vec![], 1),
            (vec![1], 1),
            (vec![1; 7], 1),
            (vec![1; 8], 1),
            (vec![0, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0], 1),
            ((0..100).map(|i| i % 5).collect(), 3),
            ((0..1000).map(|i| (i / 37) % 300).collect(), 9),
            (
                (0..50).map(|i| if i < 3 { i } else { 70_000 }).collect(),
                17,
            ),
            ((0..64).map(|i| (i * 7919) % (1 << 20)).collect(), 20),
        ];
        let mut x = 12345u32;
        cases.push((
            (0..5000)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    if x.is_multiple_of(3) { 4 } else { (x >> 16) % 16 }
                })
                .collect(),
            4,
        ));
        for (values, width) in cases {
            let mut out = Vec::new();
            rle_hybrid(&values, width, &mut out);
            assert_eq!(decode(&out, width, values.len()), values, "width {width}");
        }
    }

    #[test]
    fn long_runs_are_rle() {
        let mut out = Vec::new();
        rle_hybrid(&[3; 10_000], 2, &mut out);
        assert_eq!(
            out.len(),
            4,
            "one RLE run: a 3-byte header (20000), one value byte"
        );
    }

    #[test]
    fn truncated_bounds_still_bound() {
        let long = "é".repeat(40);
        let min = truncate_utf8(&long, 64).unwrap();
        assert!(min.len() <= 64 && long.as_bytes() >= &min[..]);
        let max = truncate_and_increment_utf8(&long, 64).unwrap();
        assert!(max.len() <= 64 && long.as_bytes() < &max[..]);
        assert!(std::str::from_utf8(&max).is_ok());
    }
}
