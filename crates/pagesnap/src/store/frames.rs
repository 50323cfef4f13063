//! Frames: the distinct page contents of a store, refcounted and indexed by hash,
//! safe to insert into and release from many threads at once.
//!
//! ```text
//!  id 0  ─ the zero page: never stored, never counted
//!  id n  ─ a slot in slabs.rs (bytes, refs, xxh3-128)
//!  index ─ hash ─► id in 64 locked shards (index.rs); a hit is confirmed by the bytes
//!  alloc ─ one lock: the free slots and the next never-used id; callers reserve
//!          slots a few dozen at a time (Staged), not one lock per page
//! ```
//! A frame is written once, into a slot its writer reserved, and published (given
//! its hash and first holder, entered in the index) under its shard's lock. From
//! then on its bytes only change after the last holder released it and its slot
//! was reserved again, so a holder reads them without any lock.

use super::error::StoreError;
use super::index::{key, Full, Index, MAX_SAME_KEY};
use super::slabs::{Slabs, SLAB_FRAMES};
use crate::digest::page_hash;
use crate::sys::mmap::Mapping;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Index of a frame in its store. `FrameId::ZERO` is the all-zero page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct FrameId(pub(crate) u32);

impl FrameId {
    pub(crate) const ZERO: FrameId = FrameId(0);
}

/// A map keyed by frame id. Ids are small dense integers: one multiply spreads
/// them over the table (SipHash, the default, would cost more than the lookup).
pub(crate) type FrameIdMap<V> = HashMap<FrameId, V, BuildHasherDefault<FrameIdHasher>>;

/// The hasher of [`FrameIdMap`].
#[derive(Default)]
pub(crate) struct FrameIdHasher(u64);

impl Hasher for FrameIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// Free slots and the next id never used, behind one lock.
struct Alloc {
    next: u32,
    free: Vec<FrameId>,
}

/// The frame table.
pub(super) struct Frames {
    page_size: usize,
    zero_hash: u128,
    slabs: Slabs,
    index: Index,
    alloc: Mutex<Alloc>,
    unique: AtomicU64,
}

impl Frames {
    /// See [`Slabs::beside_writers`].
    pub(super) fn beside_writers(&self, on: bool) {
        self.slabs.beside_writers(on);
    }

    pub(super) fn new(page_size: usize) -> Frames {
        Frames {
            page_size,
            zero_hash: page_hash(&vec![0u8; page_size]),
            slabs: Slabs::new(page_size),
            index: Index::new(),
            // Id 0 names the zero page, which has no slot.
            alloc: Mutex::new(Alloc {
                next: 1,
                free: Vec::new(),
            }),
            unique: AtomicU64::new(0),
        }
    }

    pub(super) fn page_size(&self) -> usize {
        self.page_size
    }

    /// Distinct non-zero pages held.
    pub(super) fn unique(&self) -> u64 {
        self.unique.load(Ordering::Relaxed)
    }

    /// Bytes of frame memory mapped (live frames, free slots, the unused tail).
    pub(super) fn reserved_bytes(&self) -> u64 {
        self.slabs.mapped_bytes()
    }

    /// Bytes of memory the frame table itself takes (slots, free list, index).
    pub(super) fn index_bytes(&self) -> u64 {
        let free = self.lock_alloc().free.capacity() as u64 * 4;
        self.slabs.meta_bytes() + free + self.index.bytes()
    }

    fn lock_alloc(&self) -> std::sync::MutexGuard<'_, Alloc> {
        self.alloc.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The bytes of a frame the caller holds; the zero frame reads as zeros.
    pub(super) fn bytes(&self, id: FrameId) -> &[u8] {
        if id == FrameId::ZERO {
            return zero_page(self.page_size);
        }
        debug_assert!(
            self.slabs.slot(id).refs.load(Ordering::Relaxed) > 0,
            "a released frame was read"
        );
        self.slabs.bytes(id)
    }

    /// The content hash of a frame the caller holds.
    pub(super) fn hash(&self, id: FrameId) -> u128 {
        if id == FrameId::ZERO {
            return self.zero_hash;
        }
        self.slabs.slot(id).hash()
    }

    /// One more holder of `id`, which the caller holds already.
    pub(super) fn retain(&self, id: FrameId) {
        if id != FrameId::ZERO {
            self.slabs.slot(id).refs.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Moves up to `want` free slots into `out` (at least one, or an error).
    pub(super) fn reserve(&self, want: usize, out: &mut Vec<FrameId>) -> Result<(), StoreError> {
        let mut a = self.lock_alloc();
        let from_free = want.min(a.free.len());
        let at = a.free.len() - from_free;
        out.extend(a.free.drain(at..));
        while out.len() < want {
            match self.new_slot(&mut a) {
                Ok(id) => out.push(id),
                Err(e) if out.is_empty() => return Err(e),
                Err(_) => break,
            }
        }
        Ok(())
    }

    /// The next slot never used before, its slab mapped if it is the first
    /// of one (under the allocation lock `a`).
    fn new_slot(&self, a: &mut Alloc) -> Result<FrameId, StoreError> {
        let id = a.next;
        if id == u32::MAX {
            return Err(StoreError::Full {
                max: u64::from(u32::MAX) - 1,
            });
        }
        let slab = id as usize / SLAB_FRAMES;
        if !self.slabs.has(slab) {
            self.slabs.add(slab)?;
        }
        a.next = id + 1;
        Ok(FrameId(id))
    }

    /// Makes at least `n` slots free: the free ones, then slots never used
    /// before, in new slabs mapped and faulted in now, for the missing ones.
    /// The allocation lock is taken a slab at a time, so that snapshots into
    /// the store meanwhile wait for one slab's fault-in at most. On an error
    /// the slots made free so far stay free.
    pub(super) fn keep_free(&self, n: usize) -> Result<(), StoreError> {
        let (free, next) = {
            let a = self.lock_alloc();
            (self.free_in(&a), a.next)
        };
        let new = n.saturating_sub(free) as u64;
        if u64::from(next) + new > u64::from(u32::MAX) - 1 {
            return Err(StoreError::Full {
                max: u64::from(u32::MAX) - 1,
            });
        }
        // Faulting in more than is available ends in the OOM killer, not in
        // an error: refused before anything is mapped.
        let bytes = new.saturating_mul(self.page_size as u64);
        if let Some(available) = crate::sys::room::available_memory() {
            if bytes > available {
                return Err(StoreError::Unavailable { bytes, available });
            }
        }
        loop {
            let mut a = self.lock_alloc();
            let missing = n.saturating_sub(a.free.len()).min(SLAB_FRAMES);
            if missing == 0 {
                return Ok(());
            }
            a.free
                .try_reserve(missing)
                .map_err(|_| StoreError::Index { entries: n })?;
            for _ in 0..missing {
                let id = self.new_slot(&mut a)?;
                a.free.push(id);
            }
        }
    }

    /// Free slots now (reserved ones not counted): those freed, and those of
    /// the last slab mapped that were never used.
    pub(super) fn free_slots(&self) -> usize {
        self.free_in(&self.lock_alloc())
    }

    /// [`free_slots`](Self::free_slots), under the allocation lock.
    fn free_in(&self, a: &Alloc) -> usize {
        let next = a.next as usize;
        let never_used = if self.slabs.has(next / SLAB_FRAMES) {
            SLAB_FRAMES - next % SLAB_FRAMES
        } else {
            0
        };
        a.free.len() + never_used
    }

    /// Up to `n` free slots (used before, so faulted in — but for new slots
    /// lent and given back unused: see [`take_new`](Self::take_new)), reserved, in a
    /// whole number of `unit`s; `None` if not one unit is free, or there is
    /// no memory for the list.
    pub(super) fn take_free(&self, n: usize, unit: usize) -> Option<Vec<FrameId>> {
        let mut out = Vec::new();
        let mut a = self.lock_alloc();
        let take = n.min(a.free.len()) / unit * unit;
        if take == 0 {
            return None;
        }
        out.try_reserve_exact(take).ok()?;
        let at = a.free.len() - take;
        out.extend(a.free.drain(at..));
        Some(out)
    }

    /// Up to `n` slots never used before, reserved, in a whole number of
    /// `unit`s (new slabs are mapped for them, pre-faulted or not as
    /// [`Slabs::add`] decides); `None` if not one unit, or no memory for the
    /// list.
    pub(super) fn take_new(&self, n: usize, unit: usize) -> Option<Vec<FrameId>> {
        let mut out = Vec::new();
        out.try_reserve_exact(n).ok()?;
        let mut a = self.lock_alloc();
        while out.len() < n {
            match self.new_slot(&mut a) {
                Ok(id) => out.push(id),
                Err(_) => break,
            }
        }
        let whole = out.len() / unit * unit;
        if whole < out.len() && a.free.try_reserve(out.len() - whole).is_ok() {
            a.free.extend(out.drain(whole..));
        }
        // (Without room in the free list, the odd ids are left unused.)
        out.truncate(whole);
        (whole > 0).then_some(out)
    }

    /// Gives reserved, unpublished slots back.
    pub(super) fn unreserve(&self, ids: &mut Vec<FrameId>) {
        if !ids.is_empty() {
            self.lock_alloc().free.append(ids);
        }
    }

    /// Writes `page` into reserved slot `id` and takes it into the store: the
    /// frame holding those contents, with one more holder. `Ok(id)` means the slot
    /// became that frame (it is no longer reserved); any other id leaves the slot
    /// reserved (the zero page, or equal contents stored already).
    pub(super) fn insert(&self, id: FrameId, page: &[u8]) -> Result<FrameId, StoreError> {
        debug_assert_eq!(page.len(), self.page_size);
        // Copy first, then hash the copy while it is in cache: one read of `page`,
        // and no lock held while touching the caller's memory.
        self.slabs.write(id, page);
        self.publish(id)
    }

    /// Where reserved slot `id`'s bytes start, to be written in place (`lent.rs`).
    pub(super) fn addr(&self, id: FrameId) -> usize {
        self.slabs.addr(id)
    }

    /// The mapping reserved slot `id` lies in and its offset there, to be
    /// written in place (`lent.rs`).
    pub(super) fn memory(&self, id: FrameId) -> (Arc<Mapping>, usize) {
        self.slabs.memory(id)
    }

    /// [`insert`](Self::insert) of reserved slot `id` as written already:
    /// hashed and indexed where it lies, with no copy.
    pub(super) fn publish(&self, id: FrameId) -> Result<FrameId, StoreError> {
        self.publish_as(id, page_hash(self.slabs.bytes(id)))
    }

    /// [`publish`](Self::publish) with the bytes' hash given (tests give two
    /// contents one hash).
    fn publish_as(&self, id: FrameId, hash: u128) -> Result<FrameId, StoreError> {
        let bytes = self.slabs.bytes(id);
        if hash == self.zero_hash && is_zero(bytes) {
            return Ok(FrameId::ZERO);
        }
        let key_of = |f: FrameId| key(self.slabs.slot(f).hash());
        let mut shard = self.index.shard(hash);
        let mut same_key = 0;
        let same = |f: FrameId| {
            let k = key_of(f) == key(hash);
            same_key += usize::from(k);
            k && self.slabs.bytes(f) == bytes
        };
        if let Some(hit) = shard.find(key(hash), same) {
            self.slabs.slot(hit).refs.fetch_add(1, Ordering::Relaxed);
            return Ok(hit);
        }
        let indexed = same_key < MAX_SAME_KEY;
        if indexed {
            shard
                .reserve_one(key_of)
                .map_err(|Full(entries)| StoreError::Index { entries })?;
        }
        let slot = self.slabs.slot(id);
        slot.set_hash(hash);
        slot.refs.store(1, Ordering::Relaxed);
        if indexed {
            shard.insert(key(hash), id, key_of);
        }
        self.unique.fetch_add(1, Ordering::Relaxed);
        Ok(id)
    }

    /// One holder fewer for each of `ids`; the last holder frees a frame.
    pub(super) fn release_all(&self, ids: impl IntoIterator<Item = FrameId>) {
        let mut freed = Vec::new();
        for id in ids {
            if id == FrameId::ZERO {
                continue;
            }
            let refs = &self.slabs.slot(id).refs;
            let mut cur = refs.load(Ordering::Relaxed);
            // Not the last holder: no lock needed.
            while cur > 1 {
                match refs.compare_exchange_weak(cur, cur - 1, Ordering::Release, Ordering::Relaxed)
                {
                    Ok(_) => break,
                    Err(now) => cur = now,
                }
            }
            if cur > 1 {
                continue;
            }
            // Maybe the last: decide under the shard lock, which a hit takes too.
            let hash = self.slabs.slot(id).hash();
            let mut shard = self.index.shard(hash);
            let before = refs.fetch_sub(1, Ordering::AcqRel);
            debug_assert!(before > 0, "frame {} released more often than held", id.0);
            if before == 1 {
                shard.remove(key(hash), id);
                self.unique.fetch_sub(1, Ordering::Relaxed);
                freed.push(id);
            }
        }
        self.unreserve(&mut freed);
    }
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

#[cfg(test)]
#[path = "frames_tests.rs"]
mod tests;
