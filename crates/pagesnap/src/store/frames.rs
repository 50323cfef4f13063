//! Frames: the distinct page contents of a store, refcounted and indexed by hash.
//!
//! ```text
//!  id 0  ─ the zero page: never stored, never counted
//!  id n  ─ slab n / 512, slot n % 512   hashes[n]: xxh3-128   refs[n]: holders
//!  index: hash ─► id  (a hit is confirmed by comparing the bytes)
//! ```
//! Frame memory comes in slabs of 512 pages (2 MiB, a huge page where the kernel
//! gives one), pre-faulted when mapped: one fault per slab instead of a first-touch
//! fault per stored page on the snapshot path. A frame is held once per page-table
//! leaf slot that names it; when the last holder releases it, its id (and slot) is
//! reused by the next new page.

use super::NoMemory;
use crate::digest::page_hash;
use crate::sys::mmap::{Mapping, Protection};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Index of a frame in its store. `FrameId::ZERO` is the all-zero page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct FrameId(pub(crate) u32);

impl FrameId {
    pub(crate) const ZERO: FrameId = FrameId(0);
}

/// The keys are already uniformly distributed hashes: use their low bits as is.
#[derive(Default)]
pub(crate) struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes.iter().take(8) {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
}

type Index = HashMap<u128, FrameId, BuildHasherDefault<IdentityHasher>>;

/// The frame table. Lives behind the store's mutex.
pub(crate) struct Frames {
    page_size: usize,
    zero_hash: u128,
    slabs: Vec<Mapping>,
    hashes: Vec<u128>,
    refs: Vec<u32>,
    free: Vec<FrameId>,
    index: Index,
    unique: u64,
}

impl Frames {
    pub(crate) fn new(page_size: usize) -> Frames {
        let zero_hash = page_hash(&vec![0u8; page_size]);
        Frames {
            page_size,
            zero_hash,
            slabs: Vec::new(),
            hashes: vec![zero_hash],
            refs: vec![0],
            free: Vec::new(),
            index: Index::default(),
            unique: 0,
        }
    }

    pub(crate) fn page_size(&self) -> usize {
        self.page_size
    }

    /// Distinct non-zero pages held.
    pub(crate) fn unique(&self) -> u64 {
        self.unique
    }

    /// Bytes of memory the frame table itself takes (ids, hashes, refcounts, index).
    pub(crate) fn index_bytes(&self) -> u64 {
        let per_slot = 16 + 4;
        (self.hashes.capacity() * per_slot
            + self.free.capacity() * 4
            + self.index.capacity() * (16 + 4 + 1)) as u64
    }

    /// The frame holding `page`'s contents, with one more holder. Zero pages give
    /// `FrameId::ZERO`; a hash hit is confirmed byte for byte. Fails, changing
    /// nothing, when memory for a new frame cannot be had.
    pub(crate) fn insert(&mut self, page: &[u8]) -> Result<FrameId, NoMemory> {
        self.insert_hashed(page, page_hash(page))
    }

    /// As [`insert`](Self::insert), with the page's hash already known.
    pub(crate) fn insert_hashed(&mut self, page: &[u8], hash: u128) -> Result<FrameId, NoMemory> {
        debug_assert_eq!(page.len(), self.page_size);
        if hash == self.zero_hash && is_zero(page) {
            return Ok(FrameId::ZERO);
        }
        let mut collision = false;
        if let Some(&id) = self.index.get(&hash) {
            if self.bytes(id) == page {
                self.refs[id.0 as usize] += 1;
                return Ok(id);
            }
            // Two contents with one hash: keep both, index only the first.
            collision = true;
        }
        // Everything a new frame needs is had before anything changes.
        if !collision {
            self.index.try_reserve(1).map_err(|_| NoMemory {
                what: "the page store's index",
                bytes: (self.index.len() + 1) * (16 + 4 + 1),
            })?;
        }
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                let n = self.hashes.len();
                let id = u32::try_from(n).map_err(|_| NoMemory {
                    what: "a frame id (2^32 frames)",
                    bytes: self.page_size,
                })?;
                let grow = |v: usize, each: usize| NoMemory {
                    what: "the page store's frame table",
                    bytes: (v + 1) * each,
                };
                self.hashes.try_reserve(1).map_err(|_| grow(n, 16))?;
                self.refs.try_reserve(1).map_err(|_| grow(n, 4))?;
                if n / SLAB_FRAMES == self.slabs.len() {
                    self.slabs
                        .try_reserve(1)
                        .map_err(|_| grow(self.slabs.len(), 16))?;
                    self.slabs.push(new_slab(self.page_size)?);
                }
                self.hashes.push(0);
                self.refs.push(0);
                FrameId(id)
            }
        };
        let slot = id.0 as usize;
        let (slab, at) = self.place(id);
        self.slabs[slab].as_mut_slice()[at..at + self.page_size].copy_from_slice(page);
        self.hashes[slot] = hash;
        self.refs[slot] = 1;
        if !collision {
            self.index.insert(hash, id);
        }
        self.unique += 1;
        Ok(id)
    }

    /// Slab index and byte offset of a frame.
    fn place(&self, id: FrameId) -> (usize, usize) {
        let n = id.0 as usize;
        (n / SLAB_FRAMES, (n % SLAB_FRAMES) * self.page_size)
    }

    /// Bytes of frame memory mapped (live frames, free slots, the unused tail).
    pub(crate) fn reserved_bytes(&self) -> u64 {
        self.slabs.iter().map(|s| s.len() as u64).sum()
    }

    /// The bytes of a frame; the zero frame reads as zeros.
    pub(crate) fn bytes(&self, id: FrameId) -> &[u8] {
        if id == FrameId::ZERO {
            return zero_page(self.page_size);
        }
        debug_assert!(self.refs[id.0 as usize] > 0, "a released frame was read");
        let (slab, at) = self.place(id);
        &self.slabs[slab].as_slice()[at..at + self.page_size]
    }

    /// The content hash of a frame.
    pub(crate) fn hash(&self, id: FrameId) -> u128 {
        self.hashes[id.0 as usize]
    }

    /// One more holder of `id`.
    pub(crate) fn retain(&mut self, id: FrameId) {
        if id != FrameId::ZERO {
            self.refs[id.0 as usize] += 1;
        }
    }

    /// One holder fewer; the last one frees the frame.
    pub(crate) fn release(&mut self, id: FrameId) {
        if id == FrameId::ZERO {
            return;
        }
        let slot = id.0 as usize;
        debug_assert!(
            self.refs[slot] > 0,
            "frame {slot} released more often than held"
        );
        self.refs[slot] -= 1;
        if self.refs[slot] == 0 {
            let hash = self.hashes[slot];
            if self.index.get(&hash) == Some(&id) {
                self.index.remove(&hash);
            }
            self.free.push(id);
            self.unique -= 1;
        }
    }
}

/// Frames per slab (2 MiB of 4 KiB pages).
const SLAB_FRAMES: usize = 512;

/// A new slab, pre-faulted so storing a page into it takes no page fault.
fn new_slab(page_size: usize) -> Result<Mapping, NoMemory> {
    let len = SLAB_FRAMES * page_size;
    let huge = len % crate::sys::mmap::HUGE_PAGE == 0;
    let slab = Mapping::anonymous(len, Protection::ReadWrite, huge).map_err(|_| NoMemory {
        what: "a page-store slab",
        bytes: len,
    })?;
    // Best effort: without MADV_POPULATE_WRITE (Linux < 5.14) pages fault on first
    // use. It fails with ENOMEM when memory is short; the slab is still usable
    // (MAP_NORESERVE: a page short then is the kernel's OOM, as for any write).
    let _ = slab.advise(0, len, libc::MADV_POPULATE_WRITE);
    Ok(slab)
}

/// Whether every byte of `page` is zero.
pub(crate) fn is_zero(page: &[u8]) -> bool {
    let (chunks, tail) = page.split_at(page.len() / 8 * 8);
    chunks
        .chunks_exact(8)
        .all(|c| u64::from_ne_bytes(c.try_into().expect("8 bytes")) == 0)
        && tail.iter().all(|&b| b == 0)
}

fn zero_page(page_size: usize) -> &'static [u8] {
    static ZEROS: [u8; 65536] = [0; 65536];
    &ZEROS[..page_size]
}
