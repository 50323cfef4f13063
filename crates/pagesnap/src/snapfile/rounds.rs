//! A snapshot file (format version 4) whose pages arrive in rounds: any page,
//! any number of times, in any order, while other threads may still be writing
//! the region — the file of a converging save (`region/converge_save.rs`).
//!
//! ```text
//!  create:  temporary file beside the target; header written
//!  copy:    each page copied out of the region and compared with its last copy
//!           (the hash, then the bytes read back from the file); if it changed,
//!           appended as a record, which the page now names
//!  finish:  every page in order — its last copy, or else the sync point's frame
//!           (stored once per frame) → table, digest, footer; fsync, rename
//! ```
//!
//! Memory: one chunk of copied pages, the writer's buffer and dedup cache, and
//! per page of the region its last copy's record and hash, per record its
//! offset (28 bytes a page at most, 0.7 % of a region of 4 KiB pages) — never
//! the pages themselves. The file may hold superseded copies of pages written
//! again during the rounds; the table names only the last, and loading reads
//! past the others.

use super::error::FileError;
use super::format::ZERO_DATA;
use super::stream::{StreamReport, StreamWriter};
use crate::digest::page_hash;
use crate::store::frames::is_zero;
use crate::store::{PageStore, Tree};
use crate::sys::mmap::Mapping;
use std::path::Path;

/// Pages copied out of the region between two calls of `go_on`.
const CHUNK: usize = 256;
/// A page with no copy yet (its contents are the sync point's).
const NOT_COPIED: u32 = ZERO_DATA - 1;

/// A snapshot file being written round by round.
pub(crate) struct RoundFile {
    writer: StreamWriter,
    page: usize,
    /// Per page: the data index of its last copy, [`ZERO_DATA`] for zeros, or
    /// [`NOT_COPIED`].
    data: Vec<u32>,
    /// Per page: its last copy's hash (where it has one).
    hashes: Vec<u128>,
    /// Per record: where it starts in the file.
    offsets: Vec<u64>,
    /// One chunk of pages copied out.
    chunk: Vec<u8>,
    /// One page read back from the file.
    back: Vec<u8>,
    zero_hash: u128,
}

fn too_large(
    what: &'static str,
    n: usize,
    each: usize,
) -> impl FnOnce(std::collections::TryReserveError) -> FileError {
    move |_| FileError::TooLarge {
        what,
        bytes: (n as u64).saturating_mul(each as u64),
    }
}

impl RoundFile {
    /// Creates the temporary file for `path`, for a snapshot of `len` bytes
    /// of a region at `origin`.
    pub(crate) fn create(path: &Path, len: usize, origin: usize) -> Result<RoundFile, FileError> {
        let page = crate::sys::page_size();
        let pages = len / page;
        let mut data = Vec::new();
        data.try_reserve_exact(pages).map_err(too_large(
            "the converging save's page list",
            pages,
            4,
        ))?;
        data.resize(pages, NOT_COPIED);
        let mut hashes = Vec::new();
        hashes.try_reserve_exact(pages).map_err(too_large(
            "the converging save's page hashes",
            pages,
            16,
        ))?;
        hashes.resize(pages, 0);
        Ok(RoundFile {
            writer: StreamWriter::create(path, len, origin)?,
            page,
            data,
            hashes,
            offsets: Vec::new(),
            chunk: vec![0u8; CHUNK * page],
            back: vec![0u8; page],
            zero_hash: page_hash(&vec![0u8; page]),
        })
    }

    /// Copies `pages` (sorted, unique) of `map`, which other threads may be
    /// writing, as their latest copies, [`CHUNK`] at a time; after each chunk
    /// `go_on` is told how many it copied and answers whether to go on. How many
    /// of `pages` (a prefix) were copied. `raw`: pages that changed are stored
    /// uncompressed and not deduplicated, for a round that must be quick.
    pub(crate) fn copy(
        &mut self,
        map: &Mapping,
        pages: &[usize],
        raw: bool,
        go_on: &mut dyn FnMut(usize) -> bool,
    ) -> Result<usize, FileError> {
        let page = self.page;
        let mut chunk = std::mem::take(&mut self.chunk);
        let mut done = 0;
        let mut result = Ok(());
        for part in pages.chunks(CHUNK) {
            // Writers may be writing these pages: copied out, never referenced.
            for (i, &p) in part.iter().enumerate() {
                map.copy_out(p * page, &mut chunk[i * page..(i + 1) * page]);
            }
            result = part
                .iter()
                .enumerate()
                .try_for_each(|(i, &p)| self.put_as(p, &chunk[i * page..(i + 1) * page], raw));
            if result.is_err() {
                break;
            }
            done += part.len();
            if !go_on(part.len()) {
                break;
            }
        }
        self.chunk = chunk;
        result.map(|()| done)
    }

    /// Appends the current bytes of `pages` of `map` (nobody writes them
    /// meanwhile) as their latest copies, as fast as it goes: no comparison
    /// with the last copy, no compression (a pause waits for this).
    pub(crate) fn copy_quick(&mut self, map: &Mapping, pages: &[usize]) -> Result<(), FileError> {
        let page = self.page;
        let mut chunk = std::mem::take(&mut self.chunk);
        let mut result = Ok(());
        for &p in pages {
            let bytes = &mut chunk[..page];
            map.copy_out(p * page, bytes);
            let hash = page_hash(bytes);
            result = self.place(p, bytes, hash, true);
            if result.is_err() {
                break;
            }
        }
        self.chunk = chunk;
        result
    }

    /// Makes `bytes` page `p`'s latest copy, appending it unless it equals the
    /// last copy.
    pub(crate) fn put(&mut self, p: usize, bytes: &[u8]) -> Result<(), FileError> {
        self.put_as(p, bytes, false)
    }

    /// [`put`](Self::put); `raw`: appended uncompressed, not deduplicated.
    fn put_as(&mut self, p: usize, bytes: &[u8], raw: bool) -> Result<(), FileError> {
        let hash = page_hash(bytes);
        if self.same_as_last(p, bytes, hash)? {
            return Ok(());
        }
        self.place(p, bytes, hash, raw)
    }

    /// Appends `bytes` (hashed `hash`) as page `p`'s latest copy; `quick`: raw.
    fn place(&mut self, p: usize, bytes: &[u8], hash: u128, quick: bool) -> Result<(), FileError> {
        let at = self.writer.next_offset();
        let before = self.writer.records();
        self.offsets.try_reserve(1).map_err(too_large(
            "the converging save's record list",
            1,
            8,
        ))?;
        let (hash, d) = if !quick {
            self.writer.put_hashed(bytes, hash)
        } else if hash == self.zero_hash && is_zero(bytes) {
            (hash, ZERO_DATA)
        } else {
            self.writer.put_raw(bytes, hash)
        };
        if self.writer.records() > before {
            self.offsets.push(at);
        }
        self.data[p] = d;
        self.hashes[p] = hash;
        self.writer.flush_if_full()
    }

    /// Whether page `p`'s last copy holds `bytes` (hashed `hash`): the hashes
    /// agree and so do the bytes, read back from the file.
    fn same_as_last(&mut self, p: usize, bytes: &[u8], hash: u128) -> Result<bool, FileError> {
        let d = self.data[p];
        if d == NOT_COPIED || self.hashes[p] != hash {
            return Ok(false);
        }
        if d == ZERO_DATA {
            return Ok(is_zero(bytes));
        }
        self.writer
            .read_record(self.offsets[d as usize], &mut self.back)?;
        Ok(self.back == bytes)
    }

    /// Keeps the pages of `dirty` whose bytes (read from `map`, which nobody
    /// writes meanwhile) differ from their last copy.
    pub(crate) fn keep_changed(
        &mut self,
        map: &Mapping,
        dirty: &mut Vec<usize>,
    ) -> Result<(), FileError> {
        let page = self.page;
        let mut buf = vec![0u8; page];
        let mut keep = Vec::with_capacity(dirty.len());
        for &p in dirty.iter() {
            map.copy_out(p * page, &mut buf);
            if !self.same_as_last(p, &buf, page_hash(&buf))? {
                keep.push(p);
            }
        }
        *dirty = keep;
        Ok(())
    }

    /// Lists every page — its last copy, or else its frame in `base` (the sync
    /// point, in `store`) — writes the table and the footer, and makes the file
    /// the target's contents.
    pub(crate) fn finish(
        mut self,
        base: &Tree,
        store: &PageStore,
    ) -> Result<StreamReport, FileError> {
        for p in 0..self.data.len() {
            let (hash, d) = match self.data[p] {
                NOT_COPIED => self.writer.put_frame(base.get(p), store),
                d => (self.hashes[p], d),
            };
            self.writer.push_next(hash, d);
            self.writer.flush_if_full()?;
        }
        self.writer.finish()
    }
}
