//! [`Staged`]: pages taken into the store for a table not built yet.
//!
//! Each staged page holds one reference to its frame. [`PageStore::commit`]
//! hands the references to the new table; dropping a `Staged` instead (an error
//! half way) releases them, so a failed snapshot leaves the store as it was.
//! A `Staged` reserves frame slots a few dozen at a time, so inserting takes the
//! store's allocation lock once per batch, not once per page; several threads
//! each fill their own and [`append`](Staged::append) them.

use super::error::StoreError;
use super::frames::FrameId;
use super::PageStore;

/// Slots reserved per trip to the allocator.
const RESERVE: usize = 32;

pub(crate) struct Staged {
    store: PageStore,
    /// `(page, frame)`: in any order until commit sorts them.
    pages: Vec<(usize, FrameId)>,
    /// Reserved, unused frame slots.
    spare: Vec<FrameId>,
}

impl Staged {
    pub(crate) fn new(store: &PageStore) -> Staged {
        Staged {
            store: store.clone(),
            pages: Vec::new(),
            spare: Vec::new(),
        }
    }

    pub(crate) fn with_capacity(store: &PageStore, n: usize) -> Staged {
        let mut s = Staged::new(store);
        s.pages.reserve(n);
        s
    }

    /// Takes `bytes` (one page) into the store as page `page`'s contents: copied
    /// once, hashed from the copy, stored once per distinct contents.
    pub(crate) fn add(&mut self, page: usize, bytes: &[u8]) -> Result<FrameId, StoreError> {
        let frames = &self.store.shared.frames;
        let slot = match self.spare.last() {
            Some(&id) => id,
            None => {
                frames.reserve(RESERVE, &mut self.spare)?;
                *self.spare.last().expect("reserve gives at least one slot")
            }
        };
        let id = frames.insert(slot, bytes)?;
        if id == slot {
            self.spare.pop();
        }
        self.pages.push((page, id));
        Ok(id)
    }

    /// Stages page `page` with frame `id`, whose reference the caller hands
    /// over (just published: `lent.rs`).
    pub(crate) fn add_published(&mut self, page: usize, id: FrameId) {
        self.pages.push((page, id));
    }

    /// Stages page `page` with frame `id`, which this `Staged` already holds
    /// (from [`add`](Self::add)), as one more reference to it.
    #[cfg_attr(not(feature = "remote"), allow(dead_code))]
    pub(crate) fn add_same(&mut self, page: usize, id: FrameId) {
        debug_assert!(self.pages.iter().any(|c| c.1 == id));
        self.store.shared.frames.retain(id);
        self.pages.push((page, id));
    }

    /// Room for `n` more pages, or an error where it cannot be allocated.
    pub(crate) fn try_reserve(&mut self, n: u64) -> Result<(), std::collections::TryReserveError> {
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        self.pages.try_reserve_exact(n)
    }

    /// The frame staged `i`-th.
    #[cfg(test)]
    pub(crate) fn frame(&self, i: usize) -> FrameId {
        self.pages[i].1
    }

    /// Moves `other`'s pages (of the same store) into `self`.
    pub(crate) fn append(&mut self, mut other: Staged) {
        debug_assert!(self.store.same_as(&other.store));
        if self.pages.is_empty() {
            std::mem::swap(&mut self.pages, &mut other.pages);
        } else {
            self.pages.append(&mut other.pages);
        }
        self.spare.append(&mut other.spare);
    }

    /// The staged pages, sorted by page, for the tree; `self` holds nothing after.
    pub(super) fn take_sorted(&mut self) -> Vec<(usize, FrameId)> {
        let mut pages = std::mem::take(&mut self.pages);
        if !pages.is_sorted_by_key(|c| c.0) {
            pages.sort_unstable_by_key(|c| c.0);
        }
        pages
    }

    pub(super) fn store(&self) -> &PageStore {
        &self.store
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        let frames = &self.store.shared.frames;
        frames.unreserve(&mut self.spare);
        frames.release_all(self.pages.drain(..).map(|c| c.1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Threads staging overlapping contents at once store each contents once,
    /// and dropping what they staged empties the store again.
    #[test]
    fn concurrent_staging_stores_each_contents_once() {
        let store = PageStore::new();
        let page = crate::sys::page_size();
        let staged: Vec<Staged> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..4u64)
                .map(|t| {
                    let store = &store;
                    s.spawn(move || {
                        let mut st = Staged::new(store);
                        let mut buf = vec![0u8; page];
                        for i in 0..300u64 {
                            // 200 contents shared by every thread, 100 its own, zeros.
                            let key = if i < 200 { i + 1 } else { 1000 * (t + 1) + i };
                            buf[..8].copy_from_slice(&key.to_le_bytes());
                            st.add(i as usize, &buf).expect("memory for the store");
                        }
                        st.add(300, &vec![0u8; page]).expect("zero page");
                        st
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        assert_eq!(store.stats().unique_pages, 200 + 4 * 100);
        for st in &staged {
            assert_eq!(st.frame(300), FrameId::ZERO);
            let mut want = vec![0u8; page];
            want[..8].copy_from_slice(&5u64.to_le_bytes());
            assert_eq!(store.frame(st.frame(4)), &want[..]);
        }
        drop(staged);
        assert_eq!(store.stats().unique_pages, 0);
    }
}
