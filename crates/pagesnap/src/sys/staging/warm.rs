//! Faulting staging memory in ahead of the writers, from the copier, so that
//! a writer's copy into a slot does not also zero the memory under it in its
//! fault handler (on a VM, memory touched for the first time costs many times
//! a rewrite).
//!
//! ```text
//!  own slots (after the lent ones):  lowest first, as writers' runs take
//!      them; a huge page per call, each free slot held while its pages
//!      are written once each (a slot in use is being written already)
//!  lent slots, from the top down:    where single batches take new store
//!      frames (`slots.rs`); a slot per call, held while its pages are
//!      written once each
//! ```
#![allow(unsafe_code)]

use super::StagingPool;
use std::sync::atomic::Ordering;

/// How far warming keeps faulted-in memory ahead of the slots writers use.
pub(super) const WARM_AHEAD: usize = 8 << 20;

impl StagingPool {
    /// From the copier, between batches: faults in a little more staging
    /// memory if the writers' use has come within [`WARM_AHEAD`] of what is
    /// warm. True if it did something.
    pub(crate) fn warm_ahead(&self) -> bool {
        self.warm_own() || self.warm_top()
    }

    /// The next huge page of the pool's own memory, if writers' use (free
    /// slots are taken lowest first) has come near what is warm. Not with
    /// `MADV_POPULATE_WRITE`: it holds the process's mmap lock, which
    /// writers' `mprotect` needs, while it zeroes (on a VM, up to 6 ms a huge
    /// page); a write fault takes only the mapping's lock.
    fn warm_own(&self) -> bool {
        const STEP: usize = crate::sys::mmap::HUGE_PAGE;
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
        let step = STEP.max(self.slot_bytes).min(len - warmed);
        let first = self.mem.lent_slots + warmed / self.slot_bytes;
        for slot in first..first + step.div_ceil(self.slot_bytes) {
            self.touch_free(slot);
        }
        self.warmed.store(warmed + step, Ordering::Relaxed);
        true
    }

    /// Faults in slot `slot` if it is free (one in use is being written).
    fn touch_free(&self, slot: usize) {
        if slot < self.slots && self.pick(slot / 64, 1 << (slot % 64), false).is_some() {
            // SAFETY: `pick` took the slot out of the free mask: this thread
            // holds it until the bit is set again below.
            unsafe { self.mem.touch(slot, self.slot_bytes) };
            self.free[slot / 64].fetch_or(1 << (slot % 64), Ordering::Release);
        }
    }

    /// The next untouched lent slot down from the top, if single batches,
    /// which take untouched lent slots from the top, have come near it. A
    /// slot in use (a copier's staging from the bottom has reached it) is
    /// passed over. The memory is the snapshot's own (a slot per batch to
    /// save), so warming it adds none.
    pub(super) fn warm_top(&self) -> bool {
        let floor = self.untouched_from.min(self.mem.lent_slots);
        let top = self.warm_top.load(Ordering::Relaxed);
        let ahead = WARM_AHEAD.div_ceil(self.slot_bytes);
        if top <= floor || top + ahead <= self.top_taken.load(Ordering::Relaxed) {
            return false;
        }
        let slot = top - 1;
        self.touch_free(slot);
        self.warm_top.store(slot, Ordering::Relaxed);
        true
    }
}
