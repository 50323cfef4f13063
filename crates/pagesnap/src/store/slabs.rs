//! Frame memory: slabs of 512 page-sized slots, found by frame id without a lock.
//!
//! ```text
//!  id ─► slab id / 512, slot id % 512
//!  dir[slab / 2048] ─► chunk of 2048 slabs, each set once and never moved:
//!        Slab { 2 MiB of an arena (pre-faulted), slots: [refs, hash] × 512 }
//!  arena ─► one mapping slabs are carved from: 16 slabs, then as many as the
//!           store has (doubling), at most 1 GiB
//! ```
//! Slabs are only ever added (under the store's allocation lock) and live as long
//! as the store, so a reader that holds a frame reads its bytes with no lock at
//! all. Frame memory is pre-faulted when mapped: one fault per slab instead of a
//! first-touch fault per stored page on the snapshot path.
//!
//! Why arenas: the first fault in a new mapping cannot take only the mapping's
//! own lock (the kernel must first give it an `anon_vma`) and falls back to the
//! process's mmap lock, held while it zeroes a whole huge page. Beside a
//! point-in-time background snapshot, whose writers lift protection with
//! `mprotect` (that lock for writing), a slab a mapping each stalled the SQLite
//! writer for 5–7 ms a new slab on a VM. In an arena only its first slab does.
//! Arenas also keep a store's mappings few: the kernel caps a process's mappings
//! (`vm.max_map_count`, 65,530 by default), which a mapping a slab reached near
//! 128 GiB of frames. An arena's unused tail is address space only, no memory,
//! though `RLIMIT_AS` counts it; where a whole arena does not fit, a slab alone
//! is mapped.

use super::error::StoreError;
use super::frames::FrameId;
use crate::sys::mmap::{Mapping, Protection, HUGE_PAGE};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Frames per slab (2 MiB of 4 KiB pages).
pub(super) const SLAB_FRAMES: usize = 512;
/// Slabs per directory chunk.
const CHUNK: usize = 2048;
/// Directory chunks: enough for every 32-bit frame id.
const TOP: usize = (1usize << 32) / SLAB_FRAMES / CHUNK;

/// A frame's bookkeeping, beside its bytes.
#[derive(Default)]
pub(super) struct Slot {
    /// Holders of the frame: page-table leaf slots, staged pages.
    pub(super) refs: AtomicU32,
    /// The xxh3-128 of the contents, in two halves (written before the frame is
    /// published, read only by holders).
    hash: [AtomicU64; 2],
}

impl Slot {
    pub(super) fn hash(&self) -> u128 {
        let lo = self.hash[0].load(Ordering::Relaxed);
        let hi = self.hash[1].load(Ordering::Relaxed);
        (u128::from(hi) << 64) | u128::from(lo)
    }

    pub(super) fn set_hash(&self, hash: u128) {
        self.hash[0].store(hash as u64, Ordering::Relaxed);
        self.hash[1].store((hash >> 64) as u64, Ordering::Relaxed);
    }
}

struct Slab {
    /// The slab's arena, shared with a staging pool while frames of the slab
    /// are lent to one.
    mem: Arc<Mapping>,
    /// Where the slab starts in `mem`.
    at: usize,
    slots: Box<[Slot]>,
}

/// The arena new slabs are carved from, and how many it has given.
struct Arena {
    mem: Arc<Mapping>,
    used: usize,
}

/// Slabs of the first arena; later ones hold as many as the store has mapped.
const FIRST_ARENA_SLABS: usize = 16;
/// Most slabs an arena holds (1 GiB).
const MAX_ARENA_SLABS: usize = 512;

type Chunk = Box<[OnceLock<Slab>]>;

pub(super) struct Slabs {
    page_size: usize,
    dir: Box<[OnceLock<Chunk>]>,
    mapped: AtomicUsize,
    /// Only [`Slabs::add`] takes it, under the store's allocation lock.
    arena: Mutex<Option<Arena>>,
    /// Point-in-time background copiers filling the store now (see
    /// [`Slabs::add`]).
    beside_writers: AtomicUsize,
}

impl Slabs {
    pub(super) fn new(page_size: usize) -> Slabs {
        Slabs {
            page_size,
            dir: (0..TOP).map(|_| OnceLock::new()).collect(),
            mapped: AtomicUsize::new(0),
            arena: Mutex::new(None),
            beside_writers: AtomicUsize::new(0),
        }
    }

    fn slab(&self, n: usize) -> &Slab {
        self.dir[n / CHUNK]
            .get()
            .and_then(|c| c[n % CHUNK].get())
            .expect("frame ids name mapped slabs only")
    }

    /// Whether slab `n` is mapped.
    pub(super) fn has(&self, n: usize) -> bool {
        self.dir[n / CHUNK]
            .get()
            .is_some_and(|c| c[n % CHUNK].get().is_some())
    }

    /// Maps slab `n`. The caller holds the store's allocation lock (one adder).
    pub(super) fn add(&self, n: usize) -> Result<(), StoreError> {
        let len = SLAB_FRAMES * self.page_size;
        if self.dir[n / CHUNK].get().is_none() {
            let mut chunk = Vec::new();
            chunk
                .try_reserve_exact(CHUNK)
                .map_err(|_| StoreError::Index { entries: n })?;
            chunk.extend((0..CHUNK).map(|_| OnceLock::new()));
            let _ = self.dir[n / CHUNK].set(chunk.into_boxed_slice());
        }
        let mut slots = Vec::new();
        slots
            .try_reserve_exact(SLAB_FRAMES)
            .map_err(|_| StoreError::Index { entries: n })?;
        slots.extend((0..SLAB_FRAMES).map(|_| Slot::default()));
        let (mem, at) = self.carve(len)?;
        // Pre-faulted in one call (best effort: before Linux 5.14 pages fault
        // on first use) — but not beside a point-in-time background snapshot:
        // MADV_POPULATE_WRITE holds the process's mmap lock for reading while it
        // zeroes the slab, and the region's writers, whose fault handler lifts
        // protection with mprotect (the lock for writing), queue behind it. A
        // SQLite writer lost 60 % of its rate to that; first-touch faults in an
        // arena already faulted into take only the arena's own VMA lock.
        if self.beside_writers.load(Ordering::Relaxed) == 0 {
            let _ = mem.advise(at, len, libc::MADV_POPULATE_WRITE);
        }
        let chunk = self.dir[n / CHUNK].get().expect("set above");
        let _ = chunk[n % CHUNK].set(Slab {
            mem,
            at,
            slots: slots.into_boxed_slice(),
        });
        self.mapped.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// The next `len` bytes (a slab) of the arena, a new arena first if the
    /// current one is used up. Should a whole arena not be mapped (an address
    /// space limit), a slab alone is.
    fn carve(&self, len: usize) -> Result<(Arc<Mapping>, usize), StoreError> {
        let mut arena = self.arena.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(a) = arena.as_mut().filter(|a| a.used < a.mem.len() / len) {
            a.used += 1;
            return Ok((a.mem.clone(), (a.used - 1) * len));
        }
        let huge = len % HUGE_PAGE == 0;
        let slabs = self
            .mapped
            .load(Ordering::Relaxed)
            .next_power_of_two()
            .clamp(FIRST_ARENA_SLABS, MAX_ARENA_SLABS);
        let mem = slabs
            .checked_mul(len)
            .and_then(|bytes| Mapping::anonymous(bytes, Protection::ReadWrite, huge).ok())
            .map_or_else(|| Mapping::anonymous(len, Protection::ReadWrite, huge), Ok)
            .map_err(|source| StoreError::Slab { bytes: len, source })?;
        let mem = Arc::new(mem);
        *arena = Some(Arena {
            mem: mem.clone(),
            used: 1,
        });
        Ok((mem, 0))
    }

    /// Counts a point-in-time background copier in (`true`) or out.
    pub(super) fn beside_writers(&self, on: bool) {
        if on {
            self.beside_writers.fetch_add(1, Ordering::Relaxed);
        } else {
            self.beside_writers.fetch_sub(1, Ordering::Relaxed);
        }
    }

    pub(super) fn slot(&self, id: FrameId) -> &Slot {
        let n = id.0 as usize;
        &self.slab(n / SLAB_FRAMES).slots[n % SLAB_FRAMES]
    }

    /// The bytes of frame `id`; nobody may write them while they are borrowed
    /// (a published frame is never written again until its last holder goes).
    pub(super) fn bytes(&self, id: FrameId) -> &[u8] {
        let n = id.0 as usize;
        let slab = self.slab(n / SLAB_FRAMES);
        slab.mem
            .range(slab.at + (n % SLAB_FRAMES) * self.page_size, self.page_size)
    }

    /// Where frame `id`'s bytes start.
    pub(super) fn addr(&self, id: FrameId) -> usize {
        self.bytes(id).as_ptr() as usize
    }

    /// The mapping frame `id` lies in and its offset there, for memory lent
    /// out to be written by others (`lent.rs`).
    pub(super) fn memory(&self, id: FrameId) -> (Arc<Mapping>, usize) {
        let n = id.0 as usize;
        let slab = self.slab(n / SLAB_FRAMES);
        (
            slab.mem.clone(),
            slab.at + (n % SLAB_FRAMES) * self.page_size,
        )
    }

    /// Writes `page` into the slot of `id`, which the caller has reserved.
    pub(super) fn write(&self, id: FrameId, page: &[u8]) {
        let n = id.0 as usize;
        let slab = self.slab(n / SLAB_FRAMES);
        slab.mem
            .copy_in(slab.at + (n % SLAB_FRAMES) * self.page_size, page);
    }

    /// Bytes of frame memory mapped.
    pub(super) fn mapped_bytes(&self) -> u64 {
        (self.mapped.load(Ordering::Relaxed) * SLAB_FRAMES * self.page_size) as u64
    }

    /// Bytes of bookkeeping: the slots and the directory chunks in use.
    pub(super) fn meta_bytes(&self) -> u64 {
        let slabs = self.mapped.load(Ordering::Relaxed);
        let chunks = self.dir.iter().filter(|c| c.get().is_some()).count();
        (slabs * SLAB_FRAMES * std::mem::size_of::<Slot>()
            + chunks * CHUNK * std::mem::size_of::<OnceLock<Slab>>()
            + TOP * std::mem::size_of::<OnceLock<Chunk>>()) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Slabs come out of a few arenas (16, 16, 32, 64, … slabs), not a
    /// mapping each, and each slab's frames are its own bytes.
    #[test]
    fn slabs_are_carved_from_arenas_that_grow() {
        let page = crate::sys::page_size();
        let slabs = Slabs::new(page);
        for n in 0..40 {
            slabs.add(n).expect("slab");
        }
        let mut maps: Vec<usize> = (0..40)
            .map(|n| slabs.memory(FrameId((n * SLAB_FRAMES) as u32)).0.as_ptr() as usize)
            .collect();
        maps.dedup();
        assert_eq!(maps.len(), 3, "arenas of 16, 16 and 32 slabs");
        for n in 0..40 {
            let id = FrameId((n * SLAB_FRAMES + 7) as u32);
            slabs.write(id, &vec![n as u8 + 1; page]);
        }
        for n in 0..40 {
            let id = FrameId((n * SLAB_FRAMES + 7) as u32);
            assert!(
                slabs.bytes(id).iter().all(|&b| b == n as u8 + 1),
                "slab {n}"
            );
        }
        assert_eq!(slabs.mapped_bytes(), (40 * SLAB_FRAMES * page) as u64);
    }
}
