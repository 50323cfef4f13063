//! Which free slot a writer's staging takes, and giving slots back: a
//! lock-free bitmask of free slots, lent slots at the bottom.
//!
//! ```text
//!  free:  [AtomicU64]  bit set = slot free
//!  runs:           lowest warm lent, else lowest own (huge pages),
//!                  else lowest untouched lent
//!  single batches: lowest warm lent, else highest lent the copier warmed
//!                  from the top, else highest own (small pages), else
//!                  highest untouched lent
//!  a copier's:     lowest untouched lent, else lowest warm lent
//!  retire_lent:    the highest free lent slot, out for good
//! ```

use super::memory::low_bits;
use super::StagingPool;
use std::ops::Range;
use std::sync::atomic::Ordering;

impl StagingPool {
    /// A free slot for a run of batches, lowest first: a warm lent one, else
    /// one of the pool's own (the huge pages at its bottom, reused as the
    /// copier drains them and faulted in ahead of use: see
    /// [`warm_ahead`](Self::warm_ahead)), and only then an untouched lent
    /// one — a writer's run into new memory would zero fresh huge pages in
    /// its handler (a profile of a SQLite writer showed just that).
    /// Async-signal-safe.
    pub(super) fn take(&self) -> Option<usize> {
        let (lent, all) = (self.lent_words(), 0..self.free.len());
        let slot = self
            .take_where(lent.clone(), false, |w| self.warm_lent_mask(w))
            .or_else(|| self.take_where(all, false, |w| !self.lent_mask(w)))
            .or_else(|| self.take_where(lent, false, |w| self.untouched_lent_mask(w)))?;
        self.high.fetch_max(slot + 1, Ordering::Relaxed);
        Some(slot)
    }

    /// A free slot for one batch: the lowest lent one that is warm (its copy
    /// then stays where it lies), else the highest lent one the copier
    /// faulted in from the top (the snapshot's own memory), else the highest
    /// of the pool's own, from the part mapped with small pages — a writer
    /// copying one batch there faults in that batch, not a whole huge page
    /// (which, where fresh memory is dear, stalls a random writer for
    /// milliseconds in its handler), and the slots the copier drains are
    /// taken again while warm. Only then an untouched lent one, the highest:
    /// the copier stages into untouched ones from the bottom, a huge page per
    /// run, so a writer taking the one above the copier's would fault in a
    /// fresh huge page each time, where from the top it faults in one per
    /// huge page's worth of batches. Async-signal-safe.
    pub(super) fn take_single(&self) -> Option<usize> {
        let lent = self.lent_words();
        let from_top = |mask: &dyn Fn(usize) -> u64| {
            let slot = self.take_where(lent.clone(), true, mask)?;
            self.top_taken.fetch_min(slot, Ordering::Relaxed);
            Some(slot)
        };
        self.take_where(lent.clone(), false, |w| self.warm_lent_mask(w))
            .or_else(|| from_top(&|w| self.warm_top_mask(w)))
            .or_else(|| self.take_where(0..self.free.len(), true, |w| !self.lent_mask(w)))
            .or_else(|| from_top(&|w| self.untouched_lent_mask(w)))
    }

    /// A free lent slot for a copier's staging: the lowest untouched one
    /// (the copier faults in new memory in its own time, not a writer in its
    /// handler), else the lowest warm one. Async-signal-safe.
    pub(super) fn take_lent(&self) -> Option<usize> {
        let lent = self.lent_words();
        self.take_where(lent.clone(), false, |w| self.untouched_lent_mask(w))
            .or_else(|| self.take_where(lent, false, |w| self.warm_lent_mask(w)))
    }

    /// The words of `free` that hold lent slots.
    fn lent_words(&self) -> Range<usize> {
        0..self.mem.lent_slots.div_ceil(64)
    }

    /// Takes the lowest (or, with `highest`, the highest) free slot among
    /// `mask(w)`'s of the words `w` of `free` in `words`. Async-signal-safe.
    fn take_where(
        &self,
        words: Range<usize>,
        highest: bool,
        mask: impl Fn(usize) -> u64,
    ) -> Option<usize> {
        if highest {
            words.rev().find_map(|w| self.take_in(w, mask(w), true))
        } else {
            words
                .into_iter()
                .find_map(|w| self.take_in(w, mask(w), false))
        }
    }

    /// Takes a free slot among `mask`'s of word `w` of `free` (see
    /// [`pick`](Self::pick)) and counts it in use. Async-signal-safe.
    fn take_in(&self, w: usize, mask: u64, highest: bool) -> Option<usize> {
        let slot = self.pick(w, mask, highest)?;
        let n = self.in_use.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak.fetch_max(n, Ordering::Relaxed);
        Some(slot)
    }

    /// Clears the highest or the lowest free bit among `mask`'s of word `w`
    /// of `free`: that slot is the caller's. Async-signal-safe.
    pub(super) fn pick(&self, w: usize, mask: u64, highest: bool) -> Option<usize> {
        let word = &self.free[w];
        let mut bits = word.load(Ordering::Acquire);
        while bits & mask != 0 {
            let free = bits & mask;
            let bit = if highest {
                63 - free.leading_zeros() as usize
            } else {
                free.trailing_zeros() as usize
            };
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
        None
    }

    /// The mask of lent slots in word `w` of `free` that are warm.
    fn warm_lent_mask(&self, w: usize) -> u64 {
        low_bits(
            self.untouched_from
                .min(self.mem.lent_slots)
                .saturating_sub(w * 64),
        )
    }

    /// The mask of lent slots in word `w` of `free` that the copier faulted
    /// in from the top (`warm.rs`).
    fn warm_top_mask(&self, w: usize) -> u64 {
        let top = self.warm_top.load(Ordering::Relaxed);
        self.lent_mask(w) & !low_bits(top.saturating_sub(w * 64))
    }

    /// The mask of lent slots in word `w` of `free` that are new memory
    /// nobody has touched yet.
    fn untouched_lent_mask(&self, w: usize) -> u64 {
        self.lent_mask(w) & !self.warm_lent_mask(w)
    }

    /// The mask of lent slots in word `w` of `free`.
    fn lent_mask(&self, w: usize) -> u64 {
        low_bits(self.mem.lent_slots.saturating_sub(w * 64))
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
        (0..words)
            .rev()
            .find_map(|w| self.pick(w, self.lent_mask(w), true))
    }

    pub(super) fn give(&self, slot: usize) {
        self.in_use.fetch_sub(1, Ordering::Relaxed);
        self.free[slot / 64].fetch_or(1 << (slot % 64), Ordering::Release);
    }
}
