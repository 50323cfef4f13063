//! Lifting a page when the kernel refuses another mapping.
//!
//! Under mprotect tracking each written page is made writable on its own, so
//! a region whose written pages lie between read-only ones is cut into a
//! mapping per run. A process may hold `vm.max_map_count` mappings (65530 by
//! default): a 1 GiB region with every eighth page written reaches it, and
//! `mprotect` then fails with `ENOMEM`. Measured before: the process died of
//! SIGSEGV in a synchronous snapshot's writer, and a background snapshot's
//! writer faulted in a loop forever.
//!
//! Lifting from the nearest writable page instead merges the page into that
//! page's mapping rather than splitting a read-only one, which needs no new
//! mapping. The pages between are marked written (the next snapshot copies
//! them; none is missed); with no written page in the region, the whole
//! region is lifted and marked.

use super::background::BatchStates;
use super::{make_writable, COPIED, STAGED};
use std::sync::atomic::{AtomicU64, Ordering};

/// The bitmap of a tracked region: `pages` bits at `bits`.
pub(super) struct Bits {
    pub(super) bits: *const AtomicU64,
    pub(super) pages: usize,
}

impl Bits {
    fn word(&self, w: usize) -> u64 {
        // SAFETY: the caller's bitmap (kept alive by its FaultSlot) has
        // pages.div_ceil(64) words, and every w here is below that.
        unsafe { (*self.bits.add(w)).load(Ordering::Relaxed) }
    }

    /// The highest set bit below `index`.
    fn before(&self, index: usize) -> Option<usize> {
        let (mut w, below) = (index / 64, index % 64);
        let mut word = self.word(w) & ((1u64 << below) - 1);
        loop {
            if word != 0 {
                return Some(w * 64 + 63 - word.leading_zeros() as usize);
            }
            w = w.checked_sub(1)?;
            word = self.word(w);
        }
    }

    /// The lowest set bit above `index`.
    fn after(&self, index: usize) -> Option<usize> {
        let words = self.pages.div_ceil(64);
        let (mut w, from) = (index / 64, index % 64 + 1);
        let mut word = if from == 64 {
            0
        } else {
            self.word(w) & (u64::MAX << from)
        };
        loop {
            if word != 0 {
                let bit = w * 64 + word.trailing_zeros() as usize;
                return (bit < self.pages).then_some(bit);
            }
            w += 1;
            if w >= words {
                return None;
            }
            word = self.word(w);
        }
    }

    /// Sets the bits `from..to`.
    fn mark(&self, from: usize, to: usize) {
        for i in from..to {
            // SAFETY: as in `word`: i < pages.
            unsafe { (*self.bits.add(i / 64)).fetch_or(1 << (i % 64), Ordering::Release) };
        }
    }
}

/// A running background snapshot of the region: its batch states, first
/// byte and batch size. Pages of batches it has not saved must stay
/// protected.
pub(super) struct Saving<'a> {
    pub(super) batches: &'a BatchStates,
    pub(super) start: usize,
    pub(super) batch: usize,
}

impl Saving<'_> {
    fn saved(&self, from: usize, to: usize) -> bool {
        let (first, last) = (
            (from - self.start) / self.batch,
            (to - 1 - self.start) / self.batch,
        );
        self.batches.states[first..=last]
            .iter()
            .all(|s| matches!(s.load(Ordering::SeqCst), COPIED | STAGED))
    }
}

/// Makes page `index` of the region at `start` writable where lifting it
/// alone failed, marking every page lifted with it. False if nothing could be
/// lifted (within `saving`'s saved batches, if a snapshot runs).
pub(super) fn lift_wide(
    start: usize,
    page: usize,
    bits: &Bits,
    index: usize,
    saving: Option<&Saving>,
) -> bool {
    let allowed = |from: usize, to: usize| {
        saving.is_none_or(|s| s.saved(start + from * page, start + to * page))
    };
    let lift = |from: usize, to: usize| {
        // Unprotect first, then mark (as for a single page).
        let done = allowed(from, to) && make_writable(start + from * page, (to - from) * page);
        if done {
            bits.mark(from, to);
        }
        done
    };
    if let Some(p) = bits.before(index) {
        if lift(p + 1, index + 1) {
            return true;
        }
    }
    if let Some(n) = bits.after(index) {
        if lift(index, n) {
            return true;
        }
    }
    lift(0, bits.pages)
}
