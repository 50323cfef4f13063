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
//! Which free slot a staging takes: `slots.rs`.
//!
//! The claim makes a batch's copy exclusive: whoever moves it out of `PENDING`
//! (or `REQUESTED`) copies it — a writer into a slot, or a copier — and nobody
//! else lifts its protection, so the bytes copied are the batch at the instant.
#![allow(unsafe_code)]

mod memory;
mod slots;
mod warm;

use super::mmap::{Mapping, Protection};
use super::signal::{BatchStates, COPIED, COPYING, PENDING, REQUESTED, STAGED};
use memory::{low_bits, Memory, Place};
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
    /// Lent slots from this one on are memory never touched
    /// ([`StagingPool::lent_untouched_from`]).
    untouched_from: usize,
    /// One past the highest slot ever taken.
    high: AtomicUsize,
    /// Lent slots from this one on were faulted in by the copier
    /// ([`StagingPool::warm_ahead`]), for single batches taken from the top.
    warm_top: AtomicUsize,
    /// The lowest lent slot a single batch took from the top.
    top_taken: AtomicUsize,
    /// Lent and own slots whose `holds` is set (counts kept beside them, so
    /// that a copier finding none does not scan every slot: at 1 GiB that is
    /// 16,384 loads per look, and the copier looks between every two batches).
    filled: [AtomicUsize; 2],
    /// Where the copier looks for a filled lent and own slot first: one past
    /// the slot it took last (lent slots are used once, lowest first, so the
    /// filled ones move up).
    cursor: [AtomicUsize; 2],
}

/// Index of [`StagingPool::filled`] and [`StagingPool::cursor`].
const LENT: usize = 0;
const OWN: usize = 1;

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
        let mem = Memory::own(slots, slot_bytes)?;
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
        let (mem, lent) = Memory::lent(keep, pages, page, slot_bytes, own)?;
        Ok(StagingPool::over(mem, lent + own, slot_bytes, unprotect_to))
    }

    fn over(mem: Memory, slots: usize, slot_bytes: usize, unprotect_to: Protection) -> StagingPool {
        let lent = mem.lent_slots;
        let words = slots.div_ceil(64);
        let free = (0..words)
            .map(|w| AtomicU64::new(low_bits(slots - w * 64)))
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
            untouched_from: slots,
            high: AtomicUsize::new(0),
            warm_top: AtomicUsize::new(lent),
            top_taken: AtomicUsize::new(lent),
            filled: [AtomicUsize::new(0), AtomicUsize::new(0)],
            cursor: [AtomicUsize::new(0), AtomicUsize::new(0)],
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
        at: (usize, usize, usize),
        ahead: usize,
    ) -> Staged {
        if at.2 > self.slot_bytes {
            return Staged::NoRoom;
        }
        let first = if ahead == 0 {
            self.take_single()
        } else {
            self.take()
        };
        self.stage_from(batches, b, at, ahead, (first, &mut || self.take()), STAGED)
            .0
    }

    /// From a copier: stages batch `b` and up to `ahead` waiting batches
    /// after it as [`stage`](Self::stage) does, into lent slots only (pages
    /// of the store the snapshot goes to, so the copy made here is the
    /// snapshot's own and the copier's hashing of it can wait until every
    /// batch is out of the writers' way). How many batches it staged: 0 if
    /// no lent slot is free, someone else has batch `b`, or the lift failed.
    /// They are left `COPIED`, not `STAGED`, to the handler: a writer that
    /// finds the batch before its own staged takes itself for one going
    /// through memory in order and stages a run ahead, which after the
    /// copier's stagings it is not (the copier keeps track of its own).
    /// `map` is the region, cut into `batch`-byte batches with states in
    /// `batches`.
    pub(crate) fn stage_lent(
        &self,
        batches: &BatchStates,
        b: usize,
        (map, batch): (&Mapping, usize),
        ahead: usize,
    ) -> usize {
        let at = (map.as_ptr() as usize, map.len(), batch);
        if batch > self.slot_bytes || batches.states.len() != map.len().div_ceil(batch) {
            return 0;
        }
        // The run's slots are taken and faulted in before any batch is
        // claimed: a writer that finds a batch of the run claimed waits for
        // the whole run, and a first touch of new store memory (3 ms for 2 MiB
        // on a VM) must not be part of that wait, only the copy.
        let want = ahead.min(MAX_RUN - 1) + 1;
        let mut slots = [0usize; MAX_RUN];
        let mut n = 0;
        while n < want {
            let Some(slot) = self.take_lent() else { break };
            // SAFETY: taken from the free mask by this thread, which holds it
            // until it is staged into or given back below.
            unsafe { self.mem.touch(slot, self.slot_bytes) };
            slots[n] = slot;
            n += 1;
        }
        if n == 0 {
            return 0;
        }
        let mut handed = 1;
        let staged = {
            let mut next = || {
                let slot = slots[..n].get(handed).copied();
                handed += usize::from(slot.is_some());
                slot
            };
            let first = (
                Some(slots[0]),
                &mut next as &mut dyn FnMut() -> Option<usize>,
            );
            self.stage_from(batches, b, at, n - 1, first, COPIED).1
        };
        for &slot in &slots[handed..n] {
            self.give(slot);
        }
        staged
    }

    /// Whether any slot is lent memory.
    pub(crate) fn has_lent(&self) -> bool {
        self.mem.lent_slots > 0
    }

    /// [`stage`](Self::stage) from its first slot on, further slots from
    /// `next`, leaving each batch staged in state `staged`; with the number
    /// of batches staged. Async-signal-safe.
    fn stage_from(
        &self,
        batches: &BatchStates,
        b: usize,
        (start, len, batch): (usize, usize, usize),
        ahead: usize,
        (first, next): (Option<usize>, &mut dyn FnMut() -> Option<usize>),
        staged: u32,
    ) -> (Staged, usize) {
        let states = &batches.states;
        let Some(first) = first else {
            return (Staged::NoRoom, 0);
        };
        if !claim(&states[b]) {
            self.give(first);
            return (Staged::Taken, 0);
        }
        let mut slots = [0usize; MAX_RUN];
        slots[0] = first;
        let mut n = 1;
        while n <= ahead.min(MAX_RUN - 1) && b + n < states.len() {
            let Some(slot) = next() else { break };
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
            // caller, a writer's handler or the snapshot's copier, found it in
            // the background table or holds its registration), readable (protected
            // read-only, not PROT_NONE), and nobody writes it: the batch is
            // COPYING, claimed by this thread, so its protection stays on until
            // we lift it below. The slot (batch ≤ slot_bytes) was taken from
            // `free` by this thread alone. The region is not staging memory.
            unsafe {
                self.mem.copy_into(
                    slot,
                    self.slot_bytes,
                    (start + at) as *const u8,
                    batch.min(len - at),
                )
            };
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
                // After the hold: a copier that sees the count finds it.
                self.filled[self.kind(slot)].fetch_add(1, Ordering::Release);
                state.store(staged, Ordering::Release);
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
            (Staged::Done, n)
        } else {
            (Staged::NoRoom, 0)
        }
    }

    /// Lent slots from `first` on are memory never touched (new store
    /// frames): single batches take them last
    /// ([`take_single`](Self::take_single)). Before the pool is published.
    pub(crate) fn lent_untouched_from(mut self, first: usize) -> StagingPool {
        self.untouched_from = first;
        self
    }

    /// A slot whose copy is complete, if any, taken by the caller until the
    /// returned guard drops (which frees the slot).
    pub(crate) fn take_filled(&self) -> Option<FilledSlot<'_>> {
        self.take_filled_of(OWN)
            .or_else(|| self.take_filled_of(LENT))
    }

    /// [`take_filled`](Self::take_filled) among the pool's own slots only:
    /// those writers reuse.
    pub(crate) fn take_filled_own(&self) -> Option<FilledSlot<'_>> {
        self.take_filled_of(OWN)
    }

    /// Whether slot `slot` is lent ([`LENT`]) or the pool's own ([`OWN`]).
    fn kind(&self, slot: usize) -> usize {
        if slot < self.mem.lent_slots {
            LENT
        } else {
            OWN
        }
    }

    fn take_filled_of(&self, kind: usize) -> Option<FilledSlot<'_>> {
        if self.filled[kind].load(Ordering::Acquire) == 0 {
            return None;
        }
        let (lo, hi) = match kind {
            LENT => (0, self.mem.lent_slots),
            _ => (self.mem.lent_slots, self.slots),
        };
        let from = self.cursor[kind].load(Ordering::Relaxed).clamp(lo, hi);
        for slot in (from..hi).chain(lo..from) {
            let h = &self.holds[slot];
            let held = h.load(Ordering::Acquire);
            if held != 0
                && h.compare_exchange(held, 0, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                self.filled[kind].fetch_sub(1, Ordering::Relaxed);
                self.cursor[kind].store(slot + 1, Ordering::Relaxed);
                return Some(FilledSlot {
                    pool: self,
                    slot,
                    batch: held - 1,
                });
            }
        }
        None
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
        match self.pool.mem.place(self.slot, self.pool.slot_bytes) {
            Place::Own(m, at) => Some(m.range(at, self.pool.slot_bytes)),
            Place::Lent(..) => None,
        }
    }
}

impl Drop for FilledSlot<'_> {
    fn drop(&mut self) {
        match self.pool.mem.place(self.slot, self.pool.slot_bytes) {
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
