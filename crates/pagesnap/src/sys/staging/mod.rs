//! # Safety
//!
//! The staging pool of a background snapshot: memory, allocated when the
//! snapshot starts, into which a writer copies the batch it faulted on from
//! inside the SIGSEGV handler, so that it can lift the batch's protection and
//! go on at once instead of waiting for a copier.
//!
//! ```text
//!  mem:   [ slot 0 | slot 1 | … ]   one batch (64 KiB – 2 MiB) each
//!  free:  [AtomicU64]               bit set = slot free (writers take, copiers give)
//!  holds: [AtomicUsize]             batch + 1 once its copy is complete, else 0
//!
//!  writer, in the handler (async-signal-safe: atomics, memcpy, mprotect, futex):
//!    take a free slot ─► claim the batch (PENDING/REQUESTED → COPYING)
//!    (and, for a writer going through memory in order, the waiting batches
//!    after it, a slot each) ─► memcpy each into its slot
//!    ─► one mprotect(run, writable)
//!    ─► holds[slot] = batch + 1 ─► state = STAGED, wake waiters ─► retry the write
//!  copier: [`StagingPool::take_filled`] ─► hash / write the slot ─► slot freed
//! ```
//!
//! The claim makes a batch's copy exclusive: whoever moves it out of `PENDING`
//! (or `REQUESTED`) copies it — a writer into a slot, or a copier — and nobody
//! else lifts its protection, so the bytes copied are the batch at the instant.
#![allow(unsafe_code)]

use super::mmap::{Mapping, Protection};
use super::signal::{BatchStates, COPYING, PENDING, REQUESTED, STAGED};
use std::io;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// Most batches one writer stages in one call (see [`StagingPool::stage`]).
pub(crate) const MAX_RUN: usize = 32;

/// Claims a waiting batch for copying (`PENDING` or `REQUESTED` → `COPYING`):
/// whoever moves it out copies it; false if someone else has it or it is saved.
pub(crate) fn claim(state: &AtomicU32) -> bool {
    [PENDING, REQUESTED].into_iter().any(|from| {
        state
            .compare_exchange(from, COPYING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    })
}

/// A pool of batch-sized slots; see the module docs.
pub(crate) struct StagingPool {
    mem: Memory,
    slot_bytes: usize,
    slots: usize,
    free: Box<[AtomicU64]>,
    holds: Box<[AtomicUsize]>,
    /// What a staged batch goes back to (writable, or read-only under the
    /// mprotect tracker).
    unprotect_to: Protection,
    /// Most slots in use at once.
    peak: AtomicUsize,
    in_use: AtomicUsize,
    /// Bytes of the pool's own memory faulted in by [`StagingPool::warm_ahead`].
    warmed: AtomicUsize,
    /// One past the highest slot ever taken.
    high: AtomicUsize,
}

/// Where a pool's slots are: first the slots over lent pages, if any, then
/// the pool's own.
struct Memory {
    /// Pages lent by the pool's owner (frames of a page store), anywhere in
    /// the mappings it keeps alive here: page `i` of slot `s` at
    /// `pages[s × pages_per_slot + i]`. Each such slot is used once: its copy
    /// stays where it lies and becomes the owner's.
    lent: Option<Lent>,
    /// How many slots are lent pages.
    lent_slots: usize,
    /// The pool's own mapping, slot after slot; such a slot is used again once
    /// the copier has taken its copy.
    own: Option<Mapping>,
}

struct Lent {
    _keep: Box<[Arc<Mapping>]>,
    pages: Box<[usize]>,
    page: usize,
}

/// Where one slot is (see [`StagingPool::place`]).
enum Place<'a> {
    Own(&'a Mapping, usize),
    Lent(&'a Lent, usize),
}

/// How far [`StagingPool::warm_ahead`] keeps faulted-in memory ahead of the
/// slots writers have used.
const WARM_AHEAD: usize = 8 << 20;

/// What [`StagingPool::stage`] did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Staged {
    /// The batch is copied into a slot and writable again: retry the write.
    Done,
    /// Someone else has the batch (a copier or another writer): wait for it.
    Taken,
    /// No slot free, or the protection could not be lifted: wait for a copier.
    NoRoom,
}

impl StagingPool {
    /// A pool of `slots` slots of `slot_bytes` each (memory is mapped now and
    /// filled as slots are first used).
    pub(crate) fn new(
        slots: usize,
        slot_bytes: usize,
        unprotect_to: Protection,
    ) -> io::Result<StagingPool> {
        let len = slots
            .checked_mul(slot_bytes)
            .filter(|&l| l > 0)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
        // Huge pages where the kernel has them: a writer's first copy into a
        // slot then takes one fault per 2 MiB, not one per page.
        let mem = Mapping::anonymous(len, Protection::ReadWrite, true)?;
        let mem = Memory {
            lent: None,
            lent_slots: 0,
            own: Some(mem),
        };
        Ok(StagingPool::over(mem, slots, slot_bytes, unprotect_to))
    }

    /// A pool of `pages.len() / (slot_bytes / page)` slots over pages lent by
    /// its owner, then `own` slots of its own (mapped now). Each lent address
    /// starts `page` bytes inside one of the mappings of `keep` (else
    /// `EINVAL`). The owner keeps its hands off a slot's pages until the
    /// copier has taken its copy ([`take_filled`](Self::take_filled)); from
    /// then on the bytes are the owner's, and the slot is never handed out
    /// again. Free slots are taken lowest first: lent ones before the pool's
    /// own.
    pub(crate) fn lent(
        keep: Vec<Arc<Mapping>>,
        pages: Vec<usize>,
        page: usize,
        slot_bytes: usize,
        own: usize,
        unprotect_to: Protection,
    ) -> io::Result<StagingPool> {
        let invalid = || io::Error::from_raw_os_error(libc::EINVAL);
        if page == 0 || slot_bytes == 0 || slot_bytes % page != 0 {
            return Err(invalid());
        }
        let per_slot = slot_bytes / page;
        let slots = pages.len() / per_slot;
        if slots == 0 || pages.len() % per_slot != 0 {
            return Err(invalid());
        }
        let mut spans: Vec<(usize, usize)> = Vec::new();
        spans
            .try_reserve_exact(keep.len())
            .map_err(|_| io::Error::from_raw_os_error(libc::ENOMEM))?;
        spans.extend(
            keep.iter()
                .map(|m| (m.as_ptr() as usize, m.as_ptr() as usize + m.len())),
        );
        spans.sort_unstable();
        // Pages come in runs through one mapping: search only on leaving it.
        let mut span = (0, 0);
        let inside = |&a: &usize| {
            let Some(end) = a.checked_add(page) else {
                return false;
            };
            if !(span.0 <= a && end <= span.1) {
                let i = spans.partition_point(|s| s.0 <= a);
                if i == 0 {
                    return false;
                }
                span = spans[i - 1];
            }
            end <= span.1
        };
        if !pages.iter().all(inside) {
            return Err(invalid());
        }
        let own_map = match own {
            0 => None,
            n => {
                let len = n.checked_mul(slot_bytes).ok_or_else(invalid)?;
                Some(Mapping::anonymous(len, Protection::ReadWrite, true)?)
            }
        };
        let mem = Memory {
            lent: Some(Lent {
                _keep: keep.into_boxed_slice(),
                pages: pages.into_boxed_slice(),
                page,
            }),
            lent_slots: slots,
            own: own_map,
        };
        Ok(StagingPool::over(
            mem,
            slots + own,
            slot_bytes,
            unprotect_to,
        ))
    }

    fn over(mem: Memory, slots: usize, slot_bytes: usize, unprotect_to: Protection) -> StagingPool {
        let words = slots.div_ceil(64);
        let free = (0..words)
            .map(|w| {
                let n = (slots - w * 64).min(64);
                AtomicU64::new(if n == 64 { u64::MAX } else { (1 << n) - 1 })
            })
            .collect();
        let holds = (0..slots).map(|_| AtomicUsize::new(0)).collect();
        StagingPool {
            mem,
            slot_bytes,
            slots,
            free,
            holds,
            unprotect_to,
            peak: AtomicUsize::new(0),
            in_use: AtomicUsize::new(0),
            warmed: AtomicUsize::new(0),
            high: AtomicUsize::new(0),
        }
    }

    /// Copies `len` (≤ `slot_bytes`) bytes from `src` into slot `slot`.
    ///
    /// # Safety
    ///
    /// `src` is readable for `len` bytes and nobody writes it meanwhile; the
    /// caller holds `slot` (taken from `free`, not given back); `src` is not
    /// staging memory.
    unsafe fn copy_into(&self, slot: usize, src: *const u8, len: usize) {
        debug_assert!(slot < self.slots && len <= self.slot_bytes);
        match self.place(slot) {
            Place::Own(m, at) => {
                // SAFETY: the slot lies inside the pool's own mapping
                // (`place`), the caller holds it and vouches for `src`.
                unsafe { std::ptr::copy_nonoverlapping(src, m.as_ptr().add(at), len) };
            }
            Place::Lent(lent, first) => {
                let page = lent.page;
                for (i, &dst) in lent.pages[first..][..len.div_ceil(page)].iter().enumerate() {
                    let n = page.min(len - i * page);
                    // SAFETY: `dst` starts a page inside a mapping the pool
                    // keeps alive (checked by `lent`), lent to this slot, which
                    // the caller holds; the caller vouches for `src`.
                    unsafe { std::ptr::copy_nonoverlapping(src.add(i * page), dst as *mut u8, n) };
                }
            }
        }
    }

    /// Where slot `slot` is: an offset in the pool's own mapping, or the
    /// index of its first page among the lent ones.
    fn place(&self, slot: usize) -> Place<'_> {
        let m = &self.mem;
        match (&m.lent, &m.own) {
            (Some(lent), _) if slot < m.lent_slots => {
                Place::Lent(lent, slot * (self.slot_bytes / lent.page))
            }
            (_, Some(own)) => Place::Own(own, (slot - m.lent_slots) * self.slot_bytes),
            _ => unreachable!("slot {slot} of a pool of {} slots", self.slots),
        }
    }

    /// Bytes of staging memory (the most it can hold).
    pub(crate) fn bytes(&self) -> usize {
        self.slots * self.slot_bytes
    }

    /// Most bytes staged at once so far.
    pub(crate) fn peak_bytes(&self) -> usize {
        self.peak.load(Ordering::Relaxed) * self.slot_bytes
    }

    /// A free slot, lowest first (so the slots already touched are reused).
    /// Async-signal-safe.
    fn take(&self) -> Option<usize> {
        for (w, word) in self.free.iter().enumerate() {
            let mut bits = word.load(Ordering::Acquire);
            while bits != 0 {
                let bit = bits.trailing_zeros() as usize;
                match word.compare_exchange_weak(
                    bits,
                    bits & !(1 << bit),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => {
                        let n = self.in_use.fetch_add(1, Ordering::Relaxed) + 1;
                        self.peak.fetch_max(n, Ordering::Relaxed);
                        self.high.fetch_max(w * 64 + bit + 1, Ordering::Relaxed);
                        return Some(w * 64 + bit);
                    }
                    Err(now) => bits = now,
                }
            }
        }
        None
    }

    /// The mask of lent slots in word `w` of `free`.
    fn lent_mask(&self, w: usize) -> u64 {
        let n = self.mem.lent_slots.saturating_sub(w * 64).min(64);
        if n == 64 {
            u64::MAX
        } else {
            (1 << n) - 1
        }
    }

    /// From the copier, for a batch it saves itself (which then needs no
    /// slot), when more than `keep` lent slots are free (the batches still to
    /// serve): takes one of them out of the pool for good — the highest, as
    /// writers take the lowest — so that its lender may use its pages at once.
    /// `None` if no lent slot is spare. Writers never copy into the slot: it
    /// is never free again.
    pub(crate) fn retire_lent(&self, keep: usize) -> Option<usize> {
        let lent = self.mem.lent_slots;
        let words = lent.div_ceil(64);
        let free: usize = (0..words)
            .map(|w| {
                (self.free[w].load(Ordering::Acquire) & self.lent_mask(w)).count_ones() as usize
            })
            .sum();
        if free <= keep {
            return None;
        }
        for w in (0..words).rev() {
            let word = &self.free[w];
            let mask = self.lent_mask(w);
            let mut bits = word.load(Ordering::Acquire);
            while bits & mask != 0 {
                let bit = 63 - (bits & mask).leading_zeros() as usize;
                match word.compare_exchange_weak(
                    bits,
                    bits & !(1 << bit),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => return Some(w * 64 + bit),
                    Err(now) => bits = now,
                }
            }
        }
        None
    }

    fn give(&self, slot: usize) {
        self.in_use.fetch_sub(1, Ordering::Relaxed);
        self.free[slot / 64].fetch_or(1 << (slot % 64), Ordering::Release);
    }

    /// From the SIGSEGV handler: copies batch `b` of the region at `start`
    /// (`len` bytes in batches of `batch`), and up to `ahead` batches after it
    /// that are still waiting, each into a free slot, and lifts their
    /// protection in one mprotect; wakes the writers asleep on them.
    /// Async-signal-safe: atomics, memcpy, mprotect and
    /// futex wakes; no allocation, no lock.
    pub(crate) fn stage(
        &self,
        batches: &BatchStates,
        b: usize,
        (start, len, batch): (usize, usize, usize),
        ahead: usize,
    ) -> Staged {
        if batch > self.slot_bytes {
            return Staged::NoRoom;
        }
        let states = &batches.states;
        let Some(first) = self.take() else {
            return Staged::NoRoom;
        };
        if !claim(&states[b]) {
            self.give(first);
            return Staged::Taken;
        }
        let mut slots = [0usize; MAX_RUN];
        slots[0] = first;
        let mut n = 1;
        while n <= ahead.min(MAX_RUN - 1) && b + n < states.len() {
            let Some(slot) = self.take() else { break };
            if !claim(&states[b + n]) {
                self.give(slot);
                break;
            }
            slots[n] = slot;
            n += 1;
        }
        let from = b * batch;
        let to = ((b + n) * batch).min(len);
        for (i, &slot) in slots[..n].iter().enumerate() {
            let at = from + i * batch;
            // SAFETY: the source is one batch (`batch` bytes, fewer for the
            // region's last) of a live region registered with the handler (the
            // caller found it in the background table), readable (protected
            // read-only, not PROT_NONE), and nobody writes it: the batch is
            // COPYING, claimed by this thread, so its protection stays on until
            // we lift it below. The slot (batch ≤ slot_bytes) was taken from
            // `free` by this thread alone. The region is not staging memory.
            unsafe { self.copy_into(slot, (start + at) as *const u8, batch.min(len - at)) };
        }
        // SAFETY: [start + from, start + to) is page-aligned (whole batches of a
        // registered region) and lies inside it; mprotect is async-signal-safe,
        // and the protection given back is the one the region had before the
        // snapshot.
        let lifted = unsafe {
            libc::mprotect(
                (start + from) as *mut libc::c_void,
                to - from,
                self.unprotect_to.bits(),
            )
        };
        for (i, &slot) in slots[..n].iter().enumerate() {
            let state = &states[b + i];
            if lifted == 0 {
                self.holds[slot].store(b + i + 1, Ordering::Release);
                state.store(STAGED, Ordering::Release);
            } else {
                // Leave the batch to a copier (which reports the failure if it
                // cannot lift it either).
                self.give(slot);
                state.store(REQUESTED, Ordering::Release);
            }
        }
        if lifted != 0 {
            // Tell the copier, which serves requested batches first.
            batches.requests.fetch_add(1, Ordering::Release);
        }
        batches.wake(b..b + n);
        if lifted == 0 {
            Staged::Done
        } else {
            Staged::NoRoom
        }
    }

    /// From the copier, between batches: faults in the next huge page of the
    /// pool's own memory if writers' use (free slots are taken lowest first)
    /// has come within [`WARM_AHEAD`] of what is warm, so that a writer's copy into a
    /// fresh slot does not also zero the memory under it in its fault handler.
    /// `MADV_POPULATE_WRITE` never changes contents, so slots in use are safe;
    /// one huge page per call keeps its hold on the mmap lock (which writers'
    /// `mprotect` needs) short. True if it did something. Lent pages are
    /// memory their lender used before: nothing to do.
    pub(crate) fn warm_ahead(&self) -> bool {
        const STEP: usize = super::mmap::HUGE_PAGE;
        let Some(mem) = &self.mem.own else {
            return false;
        };
        let len = mem.len();
        // The own slots follow the lent ones, and are taken after them.
        let ahead = WARM_AHEAD.div_ceil(self.slot_bytes);
        let high = self.high.load(Ordering::Relaxed);
        let want = ((high + ahead).saturating_sub(self.mem.lent_slots) * self.slot_bytes).min(len);
        let warmed = self.warmed.load(Ordering::Relaxed);
        if warmed >= want {
            return false;
        }
        let step = STEP.min(len - warmed);
        // Best effort: without MADV_POPULATE_WRITE (before Linux 5.14) the
        // writers fault the memory in as before.
        let _ = mem.advise(warmed, step, libc::MADV_POPULATE_WRITE);
        self.warmed.store(warmed + step, Ordering::Relaxed);
        true
    }

    /// A slot whose copy is complete, if any, taken by the caller until the
    /// returned guard drops (which frees the slot).
    pub(crate) fn take_filled(&self) -> Option<FilledSlot<'_>> {
        for (slot, h) in self.holds.iter().enumerate() {
            let held = h.load(Ordering::Acquire);
            if held != 0
                && h.compare_exchange(held, 0, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                return Some(FilledSlot {
                    pool: self,
                    slot,
                    batch: held - 1,
                });
            }
        }
        None
    }

    /// Whether any slot holds a complete copy not yet taken.
    pub(crate) fn has_filled(&self) -> bool {
        self.holds.iter().any(|h| h.load(Ordering::Acquire) != 0)
    }
}

/// A staged batch's copy, held by one copier; the slot is freed on drop.
pub(crate) struct FilledSlot<'a> {
    pool: &'a StagingPool,
    slot: usize,
    batch: usize,
}

impl FilledSlot<'_> {
    /// The batch it holds a copy of.
    pub(crate) fn batch(&self) -> usize {
        self.batch
    }

    /// The slot it is in (of a pool over lent memory: where the copy stays).
    pub(crate) fn slot(&self) -> usize {
        self.slot
    }

    /// The copy: the batch's bytes at the instant, from its first byte; `None`
    /// for a pool over lent pages, whose lender keeps the copy where it lies.
    pub(crate) fn bytes(&self) -> Option<&[u8]> {
        match self.pool.place(self.slot) {
            Place::Own(m, at) => Some(m.range(at, self.pool.slot_bytes)),
            Place::Lent(..) => None,
        }
    }
}

impl Drop for FilledSlot<'_> {
    fn drop(&mut self) {
        match self.pool.place(self.slot) {
            Place::Own(..) => self.pool.give(self.slot),
            // Used once: the copy now belongs to the lender.
            Place::Lent(..) => {
                self.pool.in_use.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests;
