//! The streamed writer's cache of recent page contents, for deduplication
//! among pages written close together: a ring of page-sized slots filled
//! once (no allocation or free per page, as a map of boxed pages needed) and
//! an index keyed by the pages' hashes, which are hashes already.
//!
//! An index entry whose slot was refilled since is harmless: its bytes no
//! longer compare equal (a different hash means different bytes), so it
//! misses; the index is cleared when it outgrows the ring a few times over.

use crate::store::IdentityHasher;
use std::collections::HashMap;
use std::hash::BuildHasherDefault;

/// Index entries allowed per ring slot before the index is cleared.
const ENTRIES_PER_SLOT: usize = 4;

pub(crate) struct RecentPages {
    page: usize,
    slots: usize,
    /// `slots` pages, mapped at the first insert; empty (no caching) when
    /// there was no memory for them.
    ring: Vec<u8>,
    next: usize,
    /// Hash → (record index, ring slot).
    index: HashMap<u128, (u32, usize), BuildHasherDefault<IdentityHasher>>,
}

impl RecentPages {
    /// A cache of up to `slots` pages of `page` bytes.
    pub(crate) fn new(page: usize, slots: usize) -> RecentPages {
        RecentPages {
            page,
            slots,
            ring: Vec::new(),
            next: 0,
            index: HashMap::default(),
        }
    }

    /// The record holding `bytes` (hashed `hash`), if one was cached.
    pub(crate) fn get(&self, hash: u128, bytes: &[u8]) -> Option<u32> {
        let &(record, slot) = self.index.get(&hash)?;
        let at = slot * self.page;
        (self.ring.get(at..at + self.page)? == bytes).then_some(record)
    }

    /// Caches `bytes` (hashed `hash`) as held by `record`, in place of the
    /// oldest page. Without memory for the ring or the index, nothing is
    /// cached.
    pub(crate) fn insert(&mut self, hash: u128, bytes: &[u8], record: u32) {
        debug_assert_eq!(bytes.len(), self.page);
        if self.ring.is_empty() {
            let len = self.page * self.slots;
            if len == 0 || self.ring.try_reserve_exact(len).is_err() {
                return;
            }
            self.ring.resize(len, 0);
        }
        if self.index.len() >= self.slots * ENTRIES_PER_SLOT {
            self.index.clear();
        }
        if self.index.try_reserve(1).is_err() {
            return;
        }
        let slot = self.next;
        self.next = (self.next + 1) % self.slots;
        self.ring[slot * self.page..(slot + 1) * self.page].copy_from_slice(bytes);
        self.index.insert(hash, (record, slot));
    }
}

#[cfg(test)]
mod tests {
    use super::RecentPages;

    #[test]
    fn finds_recent_pages_and_forgets_refilled_slots() {
        let mut r = RecentPages::new(8, 2);
        let (a, b, c) = ([1u8; 8], [2u8; 8], [3u8; 8]);
        assert_eq!(r.get(1, &a), None);
        r.insert(1, &a, 10);
        r.insert(2, &b, 11);
        assert_eq!(r.get(1, &a), Some(10));
        assert_eq!(r.get(2, &b), Some(11));
        // Same hash, other bytes (a collision): no hit.
        assert_eq!(r.get(1, &b), None);
        // A third page refills a's slot: a's entry no longer matches.
        r.insert(3, &c, 12);
        assert_eq!(r.get(1, &a), None);
        assert_eq!(r.get(3, &c), Some(12));
        assert_eq!(r.get(2, &b), Some(11));
        // The index stays bounded.
        for i in 0..100u32 {
            r.insert(u128::from(i) + 100, &[i as u8; 8], i);
        }
        assert!(r.index.len() <= 2 * super::ENTRIES_PER_SLOT);
    }
}
