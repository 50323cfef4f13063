//! Store frames lent out as a background snapshot's staging memory.
//!
//! A writer that reaches a batch the copier has not saved copies it into
//! staging memory and goes on. When that memory is frames of the store, the
//! copy *is* the snapshot's copy: the copier publishes the frames it keeps
//! (hash and index, where they lie) instead of copying them a second time, and
//! the snapshot holds no second copy of what writers staged.
//!
//! ```text
//!  lend:     free frames (faulted in by earlier use), k per slot, reserved;
//!            then, once the copier knows the pages to save, new frames for
//!            the batches the free ones do not cover (a first snapshot)
//!  writers:  batch b -> slot s: frames ids[s*k .. (s+1)*k]
//!  copier:   dirty page p of b -> publish(frame of p) -> Staged (or its equal)
//!            the slot's other frames -> back to the store's free slots
//!            a batch it saves itself -> a spare lent slot goes back first
//!  drop:     frames never published go back
//! ```

use super::frames::FrameId;
use super::slabs::SLAB_FRAMES;
use super::{PageStore, Staged, StoreError};
use crate::sys::mmap::Mapping;
use std::sync::Arc;

/// Frames lent as `slots` staging slots of `slot_pages` pages each.
pub(crate) struct LentFrames {
    store: PageStore,
    /// Slot `s`'s page `i` is frame `ids[s × slot_pages + i]`.
    ids: Vec<FrameId>,
    slot_pages: usize,
    /// Per slot: its frames were settled (published or given back).
    settled: Vec<bool>,
}

impl PageStore {
    /// Lends up to `slots` slots of `slot_pages` pages (at most a slab's 512)
    /// as staging memory, as many as the store's free frames fill — memory
    /// faulted in by earlier use, so writers copying into it take no fault.
    /// `None` when they fill not even one (a store's first snapshot).
    pub(crate) fn lend_free(&self, slots: usize, slot_pages: usize) -> Option<LentFrames> {
        debug_assert!(slot_pages > 0 && slot_pages <= SLAB_FRAMES);
        let frames = &self.shared.frames;
        let ids = frames.take_free(slots.checked_mul(slot_pages)?, slot_pages)?;
        self.lending(ids, slot_pages)
    }

    /// A lending of `ids` (reserved, a whole number of slots of `slot_pages`);
    /// `None`, the frames given back, without memory for its list.
    fn lending(&self, mut ids: Vec<FrameId>, slot_pages: usize) -> Option<LentFrames> {
        let slots = ids.len() / slot_pages;
        let mut settled = Vec::new();
        if settled.try_reserve_exact(slots).is_err() {
            self.shared.frames.unreserve(&mut ids);
            return None;
        }
        settled.resize(slots, false);
        Some(LentFrames {
            store: self.clone(),
            ids,
            slot_pages,
            settled,
        })
    }
}

impl PageStore {
    /// Lends up to `slots` slots of `slot_pages` pages of frames never used
    /// before: new slabs, mapped now but not faulted in (writers copying into
    /// a slot fault in what they copy; what they never reach costs nothing).
    /// For a snapshot whose store has too few free frames: a batch a writer
    /// stages there is then saved where it lies too, with no second copy and
    /// no staging memory besides the snapshot's own. `None` when not one slot
    /// can be mapped.
    pub(crate) fn lend_new(&self, slots: usize, slot_pages: usize) -> Option<LentFrames> {
        debug_assert!(slot_pages > 0 && slot_pages <= SLAB_FRAMES);
        // Not pre-faulted: that would zero every lent frame now, in the
        // copier, while writers wait on the mmap lock it holds.
        let _beside = self.beside_writers();
        let frames = &self.shared.frames;
        let ids = frames.take_new(slots.checked_mul(slot_pages)?, slot_pages)?;
        self.lending(ids, slot_pages)
    }
}

impl LentFrames {
    /// Appends `more`'s slots after these (lent by the same store, slots of
    /// the same size), as one lending; false (nothing changed, `more` given
    /// back) without memory for the longer lists.
    pub(crate) fn append(&mut self, mut more: LentFrames) -> bool {
        debug_assert_eq!(self.slot_pages, more.slot_pages);
        if self.ids.try_reserve(more.ids.len()).is_err()
            || self.settled.try_reserve(more.settled.len()).is_err()
        {
            return false;
        }
        self.ids.append(&mut more.ids);
        self.settled.append(&mut more.settled);
        // `more` drops with empty lists: nothing of it goes back.
        true
    }

    /// Gives back every slot from `slots` on, never used (the lending
    /// shrinks to its first `slots`).
    pub(crate) fn truncate(&mut self, slots: usize) {
        if slots >= self.slots() {
            return;
        }
        debug_assert!(
            !self.settled[slots..].contains(&true),
            "a settled slot given back"
        );
        let mut back = self.ids.split_off(slots * self.slot_pages);
        self.settled.truncate(slots);
        self.store.shared.frames.unreserve(&mut back);
    }

    /// How many slots are lent.
    pub(crate) fn slots(&self) -> usize {
        self.settled.len()
    }

    /// The mappings the lent frames lie in, and each frame's address, slot
    /// after slot (`None` when there is no memory for the lists). Nothing
    /// else in the store touches a slot's frames until
    /// [`settle`](Self::settle) takes them.
    pub(crate) fn memory(&self) -> Option<(Vec<Arc<Mapping>>, Vec<usize>)> {
        let frames = &self.store.shared.frames;
        let mut keep: Vec<Arc<Mapping>> = Vec::new();
        let mut addrs = Vec::new();
        // 8 bytes a lent page: refused, not aborted, when memory is short.
        addrs.try_reserve_exact(self.ids.len()).ok()?;
        let within = |m: &Arc<Mapping>, a: usize| {
            let start = m.as_ptr() as usize;
            (start..start + m.len()).contains(&a)
        };
        for &id in &self.ids {
            let addr = frames.addr(id);
            if !keep.last().is_some_and(|m| within(m, addr)) {
                keep.try_reserve(1).ok()?;
                keep.push(frames.memory(id).0);
            }
            addrs.push(addr);
        }
        keep.sort_unstable_by_key(|m| m.as_ptr() as usize);
        keep.dedup_by(|a, b| Arc::ptr_eq(a, b));
        Some((keep, addrs))
    }

    /// Slot `slot` holds a batch's bytes, its page `i` in the slot's page `i`:
    /// takes the pages `keep` lists as `(page of the region, i)` into `staged`
    /// where they lie, and gives every other frame of the slot back. On an
    /// error the frames not yet taken are given back too.
    pub(crate) fn settle(
        &mut self,
        slot: usize,
        keep: impl Iterator<Item = (usize, usize)>,
        staged: &mut Staged,
    ) -> Result<(), StoreError> {
        let at = self.settle_once(slot);
        let ids = &self.ids[at];
        let frames = &self.store.shared.frames;
        let mut taken = [0u64; SLAB_FRAMES / 64];
        let mut result = Ok(());
        for (page, i) in keep {
            match frames.publish(ids[i]) {
                Ok(got) => {
                    staged.add_published(page, got);
                    if got == ids[i] {
                        taken[i / 64] |= 1 << (i % 64);
                    }
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        let mut back: Vec<FrameId> = (0..self.slot_pages)
            .filter(|&i| taken[i / 64] & (1 << (i % 64)) == 0)
            .map(|i| ids[i])
            .collect();
        frames.unreserve(&mut back);
        result
    }

    /// Gives slot `slot`'s frames back unused: the pool retired it, so no
    /// writer ever copies into it.
    pub(crate) fn give_back(&mut self, slot: usize) {
        let at = self.settle_once(slot);
        let mut back = self.ids[at].to_vec();
        self.store.shared.frames.unreserve(&mut back);
    }

    /// Marks slot `slot` settled (once) and returns where its frames are in `ids`.
    fn settle_once(&mut self, slot: usize) -> std::ops::Range<usize> {
        debug_assert!(!self.settled[slot], "slot {slot} settled twice");
        self.settled[slot] = true;
        slot * self.slot_pages..(slot + 1) * self.slot_pages
    }
}

impl Drop for LentFrames {
    fn drop(&mut self) {
        let per = self.slot_pages;
        let mut back: Vec<FrameId> = self
            .ids
            .chunks(per)
            .zip(&self.settled)
            .filter(|(_, &done)| !done)
            .flat_map(|(ids, _)| ids.iter().copied())
            .collect();
        self.store.shared.frames.unreserve(&mut back);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Tree;

    /// Frees `n` frames in `store` (distinct pages inserted, then released).
    fn free_frames(store: &PageStore, n: usize) {
        let page = crate::sys::page_size();
        let ids: Vec<FrameId> = (0..n)
            .map(|i| {
                let mut bytes = vec![0u8; page];
                bytes[..8].copy_from_slice(&(1000 + i as u64).to_ne_bytes());
                store.test_insert(&bytes)
            })
            .collect();
        for id in ids {
            store.test_release(id);
        }
    }

    /// A slot's kept pages are published where they lie (an equal page already
    /// stored is shared instead), the rest go back, and so does every slot
    /// never settled: lending holds nothing once it is over.
    #[test]
    fn settled_pages_are_kept_and_the_rest_go_back() {
        let page = crate::sys::page_size();
        let store = PageStore::new();
        assert!(
            store.lend_free(2, 4).is_none(),
            "a new store has nothing free"
        );
        let shared = store.test_insert(&vec![7u8; page]);
        free_frames(&store, 8);
        let mut lent = store.lend_free(2, 4).expect("8 free frames");
        assert!(store.lend_free(1, 1).is_none(), "all of them lent");
        let (keep, addrs) = lent.memory().unwrap();
        assert_eq!(addrs.len(), 8);
        for (i, &a) in addrs[..4].iter().enumerate() {
            let m = keep
                .iter()
                .find(|m| (m.as_ptr() as usize..m.as_ptr() as usize + m.len()).contains(&a))
                .expect("each page inside a kept mapping");
            let fill = if i == 1 { 7 } else { 50 + i as u8 };
            m.copy_in(a - m.as_ptr() as usize, &vec![fill; page]);
        }
        let mut staged = Staged::new(&store);
        // Slot 0 held region pages 100..104; pages 100 and 101 were written.
        lent.settle(0, [(100, 0), (101, 1)].into_iter(), &mut staged)
            .unwrap();
        assert_eq!(store.stats().unique_pages, 2, "one new page, one shared");
        let tree = store.commit(&Tree::zero(&store, 128), staged);
        assert_eq!(store.frame(tree.get(100)), &vec![50u8; page][..]);
        assert_eq!(tree.get(101), shared);
        drop(lent);
        // Slot 1 was never settled and slot 0's other pages went back: all
        // six can be lent again.
        assert!(store.lend_free(6, 1).is_some());
    }

    /// New frames lent on top of free ones make one lending; slots given
    /// back by `truncate` and every slot never settled go back to the store,
    /// where they are free frames afterwards.
    #[test]
    fn new_frames_join_free_ones_and_all_go_back() {
        let store = PageStore::new();
        free_frames(&store, 4);
        let mut lent = store.lend_free(4, 2).expect("4 free frames: 2 slots");
        assert!(store.lend_free(1, 1).is_none(), "all free frames lent");
        let new = store
            .lend_new(3, 2)
            .expect("new frames, though none is free");
        assert!(lent.append(new));
        assert_eq!(lent.slots(), 5);
        let (_, addrs) = lent.memory().unwrap();
        assert_eq!(addrs.len(), 10);
        lent.truncate(3);
        assert_eq!(lent.slots(), 3);
        drop(lent);
        // All ten frames are free again (with the rest of the new slab).
        let again = store.lend_free(10, 1).expect("free frames");
        assert!(again.slots() >= 10, "{} free", again.slots());
        assert_eq!(store.stats().unique_pages, 0);
    }
}
