//! Streaming a full snapshot file (format version 4) whose pages arrive batch by
//! batch, in any batch order, while the page table is not yet known.
//!
//! ```text
//!  create:       temporary file beside the target; header written
//!  write_batch:  each page of the batch is zero (not listed), a base frame
//!                (stored once per frame id), or bytes from the region (stored
//!                once per content among the recent ones) → records appended;
//!                the batch's runs and page hashes wait until every batch
//!                before it has come, then join the table and the Merkle digest
//!  finish:       table, footer (digest), fsync, rename, fsync dir
//! ```
//!
//! Memory: the output buffer, a small cache of recent page contents for
//! deduplication, the frame-id index of the base pages written, the page table
//! (its runs) and the page hashes of batches that came ahead of order — never the
//! pages themselves.

use super::atomic::Pending;
use super::encode::{join, push_page, Encoder};
use super::error::FileError;
use super::format::{
    FileKind, Header, Run, COMPRESSED, HEADER_LEN, RECORD_HEADER_LEN, VERSION_TABLE_LAST_ORIGIN,
    ZERO_DATA,
};
use super::recent::RecentPages;
use crate::digest::page_hash;
use crate::store::frames::{is_zero, FrameId, FrameIdMap};
use crate::store::tree::StreamDigest;
use crate::store::PageStore;
use crate::Digest;
use std::collections::BTreeMap;
use std::path::Path;

/// Recent region pages kept for deduplication (bytes: this × the page size).
const RECENT: usize = 256;

/// What a streamed file holds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StreamReport {
    pub(crate) pages: u64,
    pub(crate) bytes: u64,
    pub(crate) stored_pages: u64,
    pub(crate) digest: Digest,
    /// Pages the table lists (the non-zero ones).
    pub(crate) listed: u64,
    /// Records stored lz4-compressed, and the bytes all records store.
    pub(crate) compressed: u64,
    pub(crate) stored_bytes: u64,
}

/// One batch's part of the table and of the digest, kept until its turn.
struct BatchOut {
    hashes: Vec<u128>,
    runs: Vec<Run>,
}

/// A snapshot file being streamed.
pub(crate) struct StreamWriter {
    pending: Pending,
    out: Encoder,
    page: usize,
    pages: usize,
    zero_hash: u128,
    listed: u64,
    by_frame: FrameIdMap<u32>,
    recent: RecentPages,
    /// Batches that came ahead of `next_page`, by first page.
    ahead: BTreeMap<usize, (usize, BatchOut)>,
    next_page: usize,
    runs: Vec<Run>,
    digest: StreamDigest,
}

impl StreamWriter {
    /// Creates the temporary file for `path` and writes the header of a full
    /// snapshot of `len` bytes taken from a region at `origin`.
    pub(crate) fn create(
        path: &Path,
        len: usize,
        origin: usize,
    ) -> Result<StreamWriter, FileError> {
        let page = crate::sys::page_size();
        let pending = Pending::create(path)?;
        let header = Header {
            version: VERSION_TABLE_LAST_ORIGIN,
            kind: FileKind::Full,
            page_size: page as u32,
            len: len as u64,
            parent: [0; 16],
            origin: origin as u64,
        };
        let pages = len / page;
        let zero_hash = page_hash(&vec![0u8; page]);
        Ok(StreamWriter {
            pending,
            out: Encoder::new(&header),
            page,
            pages,
            zero_hash,
            listed: 0,
            by_frame: FrameIdMap::default(),
            recent: RecentPages::new(page, RECENT),
            ahead: BTreeMap::new(),
            next_page: 0,
            runs: Vec::new(),
            digest: StreamDigest::new(pages, zero_hash),
        })
    }

    /// Writes pages `first .. first + base.len()`: page `first + i` holds base
    /// frame `base[i]` (in `store`), except the pages in `dirty` (sorted, in the
    /// range), whose bytes are the consecutive pages of `dirty_bytes`.
    pub(crate) fn write_batch(
        &mut self,
        first: usize,
        base: &[FrameId],
        dirty: &[usize],
        dirty_bytes: &[u8],
        store: &PageStore,
    ) -> Result<(), FileError> {
        let page = self.page;
        let mut out = BatchOut {
            hashes: Vec::with_capacity(base.len()),
            runs: Vec::new(),
        };
        let mut k = 0;
        for (i, &id) in base.iter().enumerate() {
            let p = first + i;
            let (hash, data) = if dirty.get(k) == Some(&p) {
                let bytes = &dirty_bytes[k * page..(k + 1) * page];
                k += 1;
                self.put_bytes(bytes)
            } else {
                self.put_frame(id, store)
            };
            out.hashes.push(hash);
            if data != ZERO_DATA {
                self.listed += 1;
                push_page(&mut out.runs, p as u64, data);
            }
        }
        debug_assert_eq!(k, dirty.len());
        self.ahead.insert(first, (base.len(), out));
        while let Some((n, out)) = self.ahead.remove(&self.next_page) {
            for h in out.hashes {
                self.digest.push(h);
            }
            for r in out.runs {
                join(&mut self.runs, r);
            }
            self.next_page += n;
        }
        self.flush_if_full()
    }

    /// Stores `bytes` (one page read from the region) unless it is zero or
    /// equals a recent page: its hash and data index.
    pub(crate) fn put_bytes(&mut self, bytes: &[u8]) -> (u128, u32) {
        self.put_hashed(bytes, page_hash(bytes))
    }

    /// [`put_bytes`](Self::put_bytes) of a page whose hash is known.
    pub(crate) fn put_hashed(&mut self, bytes: &[u8], hash: u128) -> (u128, u32) {
        if hash == self.zero_hash && is_zero(bytes) {
            return (hash, ZERO_DATA);
        }
        match self.recent.get(hash, bytes) {
            Some(d) => (hash, d),
            None => {
                let d = self.out.record(bytes);
                self.recent.insert(hash, bytes, d);
                (hash, d)
            }
        }
    }

    /// Stores `bytes` (one non-zero page, hashed `hash`) as a record of its own,
    /// uncompressed: the quickest way in, for a writer that must not dawdle.
    pub(crate) fn put_raw(&mut self, bytes: &[u8], hash: u128) -> (u128, u32) {
        (hash, self.out.record_raw(bytes))
    }

    /// Stores frame `id` of `store` once per frame: its hash and data index.
    pub(crate) fn put_frame(&mut self, id: FrameId, store: &PageStore) -> (u128, u32) {
        if id == FrameId::ZERO {
            return (self.zero_hash, ZERO_DATA);
        }
        let d = match self.by_frame.get(&id) {
            Some(&d) => d,
            None => {
                let d = self.out.record(store.frame(id));
                self.by_frame.insert(id, d);
                d
            }
        };
        (store.frame_hash(id), d)
    }

    /// Writes out the gathered records once they fill the buffer.
    pub(crate) fn flush_if_full(&mut self) -> Result<(), FileError> {
        self.out.flush_if_full(&mut self.pending.file)
    }

    /// Lists the next page in page order as holding `data` (hashed `hash`), for a
    /// writer that places every page itself instead of by batches.
    pub(crate) fn push_next(&mut self, hash: u128, data: u32) {
        debug_assert!(self.ahead.is_empty());
        self.digest.push(hash);
        if data != ZERO_DATA {
            self.listed += 1;
            push_page(&mut self.runs, self.next_page as u64, data);
        }
        self.next_page += 1;
    }

    /// Records stored so far; the next one gets this data index.
    pub(crate) fn records(&self) -> u64 {
        self.out.records()
    }

    /// Where the next record will start in the file.
    pub(crate) fn next_offset(&self) -> u64 {
        self.out.position()
    }

    /// Decodes the record that starts at file offset `at` into `out` (one page).
    pub(crate) fn read_record(&self, at: u64, out: &mut [u8]) -> Result<(), FileError> {
        let page = self.page;
        let head = RECORD_HEADER_LEN as usize;
        let mut stored = vec![0u8; head + page];
        let read_back = |what: &str| {
            let op = format!("{what} the record at byte {at}");
            move |source| FileError::Io { op, source }
        };
        let word = if let Some(b) = self.out.buffered_from(at) {
            let word = u32::from_le_bytes(b[..4].try_into().expect("4 bytes"));
            let len = (word & !COMPRESSED) as usize;
            stored[..head + len].copy_from_slice(&b[..head + len]);
            word
        } else {
            use std::os::unix::fs::FileExt;
            let f = &self.pending.file;
            f.read_exact_at(&mut stored[..head], at)
                .map_err(read_back("read back"))?;
            let word = u32::from_le_bytes(stored[..4].try_into().expect("4 bytes"));
            let len = (word & !COMPRESSED) as usize;
            f.read_exact_at(&mut stored[head..head + len], at + head as u64)
                .map_err(read_back("read back"))?;
            word
        };
        let len = (word & !COMPRESSED) as usize;
        let body = &stored[head..head + len];
        if word & COMPRESSED == 0 {
            out.copy_from_slice(body);
            return Ok(());
        }
        let invalid = |e: String| {
            read_back("decode")(std::io::Error::new(std::io::ErrorKind::InvalidData, e))
        };
        match lz4_flex::block::decompress_into(body, out) {
            Ok(n) if n == page => Ok(()),
            Ok(_) => Err(invalid("short page".into())),
            Err(e) => Err(invalid(e.to_string())),
        }
    }

    /// Writes the table and the footer, and makes the file the target's contents.
    pub(crate) fn finish(mut self) -> Result<StreamReport, FileError> {
        assert_eq!(
            self.next_page, self.pages,
            "every batch is written before finish"
        );
        let digest = Digest(self.digest.finish());
        let table_off = self.out.position();
        self.out.table(&self.runs);
        let stored_pages = self.out.records();
        let (compressed, stored_bytes) = (self.out.compressed(), self.out.stored_bytes());
        let bytes = self.out.finish(
            &mut self.pending.file,
            table_off,
            HEADER_LEN,
            digest.to_bytes(),
        )?;
        let report = StreamReport {
            pages: self.pages as u64,
            bytes,
            stored_pages,
            digest,
            listed: self.listed,
            compressed,
            stored_bytes,
        };
        self.pending.commit()?;
        Ok(report)
    }
}
