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
use super::error::FileError;
use super::format::{
    FileKind, Footer, Header, Run, HEADER_LEN, MAX_RUN, VERSION_TABLE_LAST_ORIGIN, ZERO_DATA,
};
use super::write::{push_run, RecordEncoder};
use crate::digest::{combine, page_hash};
use crate::store::frames::{is_zero, FrameId};
use crate::store::tree::{FANOUT, LEAF};
use crate::store::PageStore;
use crate::Digest;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;

/// Bytes gathered before each write(2).
const FLUSH: usize = 1 << 20;
/// Recent region pages kept for deduplication (bytes: this × the page size).
const RECENT: usize = 256;
/// Tallest page table (as in `store::tree`).
const MAX_HEIGHT: u32 = 10;

/// What a streamed file holds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StreamReport {
    pub(crate) pages: u64,
    pub(crate) bytes: u64,
    pub(crate) stored_pages: u64,
    pub(crate) digest: Digest,
}

/// One batch's part of the table and of the digest, kept until its turn.
struct BatchOut {
    hashes: Vec<u128>,
    runs: Vec<Run>,
}

/// A snapshot file being streamed.
pub(crate) struct StreamWriter {
    pending: Pending,
    buf: Vec<u8>,
    written: u64,
    enc: RecordEncoder,
    page: usize,
    pages: usize,
    zero_hash: u128,
    records: u64,
    listed: u64,
    by_frame: HashMap<FrameId, u32>,
    recent: HashMap<u128, (u32, Box<[u8]>)>,
    /// Batches that came ahead of `next_page`, by first page.
    ahead: BTreeMap<usize, (usize, BatchOut)>,
    next_page: usize,
    runs: Vec<Run>,
    merkle: Merkle,
}

fn io(op: impl Into<String>) -> impl FnOnce(std::io::Error) -> FileError {
    let op = op.into();
    move |source| FileError::Io { op, source }
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
        let mut buf = Vec::with_capacity(FLUSH + 2 * page);
        buf.extend_from_slice(&header.encode());
        let pages = len / page;
        Ok(StreamWriter {
            pending,
            buf,
            written: 0,
            enc: RecordEncoder::new(page),
            page,
            pages,
            zero_hash: page_hash(&vec![0u8; page]),
            records: 0,
            listed: 0,
            by_frame: HashMap::new(),
            recent: HashMap::new(),
            ahead: BTreeMap::new(),
            next_page: 0,
            runs: Vec::new(),
            merkle: Merkle::new(pages, page_hash(&vec![0u8; page])),
        })
    }

    fn flush(&mut self) -> Result<(), FileError> {
        let at = self.written;
        self.pending
            .file
            .write_all(&self.buf)
            .map_err(io(format!("write {} bytes at byte {at}", self.buf.len())))?;
        self.written += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    fn record(&mut self, bytes: &[u8]) -> u32 {
        self.enc.encode(bytes, &mut self.buf);
        self.records += 1;
        u32::try_from(self.records - 1).expect("fewer than 2^32 records")
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
                let hash = page_hash(bytes);
                if hash == self.zero_hash && is_zero(bytes) {
                    (hash, ZERO_DATA)
                } else {
                    let hit = self
                        .recent
                        .get(&hash)
                        .filter(|(_, b)| **b == *bytes)
                        .map(|(d, _)| *d);
                    let d = match hit {
                        Some(d) => d,
                        None => {
                            let d = self.record(bytes);
                            if self.recent.len() >= RECENT {
                                self.recent.clear();
                            }
                            self.recent.insert(hash, (d, bytes.into()));
                            d
                        }
                    };
                    (hash, d)
                }
            } else if id == FrameId::ZERO {
                (self.zero_hash, ZERO_DATA)
            } else {
                let d = match self.by_frame.get(&id) {
                    Some(&d) => d,
                    None => {
                        let d = self.record(store.frame(id));
                        self.by_frame.insert(id, d);
                        d
                    }
                };
                (store.frame_hash(id), d)
            };
            out.hashes.push(hash);
            if data != ZERO_DATA {
                self.listed += 1;
                push_run(&mut out.runs, p as u64, data);
            }
        }
        debug_assert_eq!(k, dirty.len());
        self.ahead.insert(first, (base.len(), out));
        while let Some((n, out)) = self.ahead.remove(&self.next_page) {
            for h in out.hashes {
                self.merkle.push(h);
            }
            for r in out.runs {
                join(&mut self.runs, r);
            }
            self.next_page += n;
        }
        if self.buf.len() >= FLUSH {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes the table and the footer, and makes the file the target's contents.
    pub(crate) fn finish(mut self) -> Result<StreamReport, FileError> {
        assert_eq!(
            self.next_page, self.pages,
            "every batch is written before finish"
        );
        let digest = Digest(self.merkle.finish());
        self.flush()?;
        let table_off = self.written;
        let start = self.buf.len();
        self.buf
            .extend_from_slice(&(self.runs.len() as u64).to_le_bytes());
        for run in &self.runs {
            run.encode(&mut self.buf);
        }
        let crc = crc32c::crc32c(&self.buf[start..]);
        self.buf.extend_from_slice(&crc.to_le_bytes());
        let file_len = table_off + self.buf.len() as u64 + super::format::FOOTER_LEN;
        let footer = Footer {
            table_off,
            data_off: HEADER_LEN,
            data_count: self.records,
            file_len,
            digest: digest.to_bytes(),
            table_last: true,
        };
        self.buf.extend_from_slice(&footer.encode());
        self.flush()?;
        debug_assert_eq!(self.written, file_len);
        let report = StreamReport {
            pages: self.pages as u64,
            bytes: file_len,
            stored_pages: self.records,
            digest,
        };
        self.pending.commit()?;
        Ok(report)
    }
}

/// Appends `r` to `runs` (sorted, disjoint), extending the last run when `r`
/// continues it.
fn join(runs: &mut Vec<Run>, r: Run) {
    if let Some(last) = runs.last_mut() {
        let fits = u64::from(last.count) + u64::from(r.count) <= u64::from(MAX_RUN);
        let continues = last.end() == r.first
            && fits
            && if last.repeat || r.repeat || last.data == ZERO_DATA {
                last.repeat == r.repeat && last.data == r.data
            } else {
                u64::from(last.data) + u64::from(last.count) == u64::from(r.data)
            };
        if continues {
            last.count += r.count;
            return;
        }
    }
    runs.push(r);
}

/// The page table's Merkle digest (as `store::tree` computes it: leaves of
/// [`LEAF`] page hashes, inner nodes of [`FANOUT`] children, pages past the end
/// zero, the page count mixed in at the root), from page hashes pushed in page
/// order. The test below holds it to the tree's.
struct Merkle {
    pages: usize,
    height: u32,
    /// `levels[k]`: digests of complete nodes of height `k - 1` (page hashes at
    /// 0) whose parent is not complete yet.
    levels: Vec<Vec<u128>>,
    /// `zero[k]`: what an all-zero entry of `levels[k]` holds.
    zero: Vec<u128>,
}

/// Entries per node at level `k`.
fn group(k: usize) -> usize {
    if k == 0 {
        LEAF
    } else {
        FANOUT
    }
}

impl Merkle {
    fn new(pages: usize, zero_hash: u128) -> Merkle {
        let bits = FANOUT.trailing_zeros();
        let mut height = 0;
        while height < MAX_HEIGHT && (LEAF << (bits * height)) < pages {
            height += 1;
        }
        let mut zero = vec![zero_hash];
        for k in 1..=height as usize + 1 {
            let below = vec![zero[k - 1]; group(k - 1)];
            zero.push(combine(&below));
        }
        Merkle {
            pages,
            height,
            levels: (0..height as usize + 2)
                .map(|k| Vec::with_capacity(group(k)))
                .collect(),
            zero,
        }
    }

    fn push_at(&mut self, mut k: usize, mut h: u128) {
        loop {
            self.levels[k].push(h);
            if k > self.height as usize || self.levels[k].len() < group(k) {
                return;
            }
            h = combine(&self.levels[k]);
            self.levels[k].clear();
            k += 1;
        }
    }

    fn push(&mut self, h: u128) {
        self.push_at(0, h);
    }

    fn finish(&mut self) -> u128 {
        for k in 0..=self.height as usize {
            if !self.levels[k].is_empty() {
                while self.levels[k].len() < group(k) {
                    let z = self.zero[k];
                    self.levels[k].push(z);
                }
                let h = combine(&self.levels[k]);
                self.levels[k].clear();
                self.push_at(k + 1, h);
            }
        }
        let top = self.height as usize + 1;
        let root = self.levels[top].first().copied().unwrap_or(self.zero[top]);
        combine(&[self.pages as u128, root])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Staged, Tree};

    /// The streamed digest equals the tree's, for sizes around every boundary.
    #[test]
    fn merkle_matches_the_tree() {
        let page = crate::sys::page_size();
        let store = PageStore::new();
        let zero_hash = page_hash(&vec![0u8; page]);
        for pages in [
            1,
            2,
            LEAF - 1,
            LEAF,
            LEAF + 1,
            LEAF * FANOUT,
            LEAF * FANOUT + 3,
            5000,
        ] {
            let mut changes = Staged::new(&store);
            let mut m = Merkle::new(pages, zero_hash);
            for p in 0..pages {
                if p % 7 == 3 {
                    m.push(zero_hash);
                } else {
                    let mut b = vec![0u8; page];
                    b[..8].copy_from_slice(&(p as u64 % 300 + 1).to_le_bytes());
                    let id = changes.add(p, &b).expect("memory for the store");
                    m.push(store.frame_hash(id));
                }
            }
            let tree = store.commit(&Tree::zero(&store, pages), changes);
            assert_eq!(m.finish(), tree.digest(), "{pages} pages");
        }
    }
}
