//! Restoring a region to a snapshot, and letting go of its sync point.

use super::Region;
use crate::error::{Error, Result};
use crate::snapshot::Snapshot;
use crate::store::frames::FrameId;
use crate::store::{PageStore, Tree};
use crate::sys::mmap::Mapping;
use crate::sys::page_size;

impl Region {
    /// Makes the contents equal to `snap`, writing only the pages written since
    /// the last sync point and those where it differs from `snap`. `snap` becomes
    /// the sync point. Any snapshot of a region of this length works (from this
    /// region, a clone, or another store — the last costs a copy into this store).
    ///
    /// Writers must be quiescent. After writes that raced with a snapshot or
    /// restore, call [`verify`](Self::verify) first: it re-marks the pages the
    /// tracker missed, so this restore rewrites them too and the region equals
    /// `snap` again.
    ///
    /// On an error the region may be partly restored, but tracking stays exact:
    /// the next snapshot equals the region's bytes, and a retried restore
    /// finishes the job. A snapshot from another store that does not fit in
    /// memory ([`Error::OutOfMemory`]) changes nothing.
    pub fn restore(&mut self, snap: &Snapshot) -> Result<()> {
        if snap.len() != self.len() {
            return Err(Error::LengthMismatch {
                snapshot: snap.len(),
                region: self.len(),
            });
        }
        // A forked child refused first (a copier at the fork never ends
        // there), then after any background snapshot: its protection is not
        // the program's.
        self.owner.check()?;
        self.wait_for_background();
        self.preflight()?;
        let snap = snap.in_store(&self.store)?;
        self.resync_if_needed()?;
        // Until the new sync point is made, a failure leaves tracking in doubt.
        self.resync = true;
        // 1. Pages where the sync point and `snap` differ: known from the tables
        //    alone, written first.
        self.changes.clear();
        let target = snap.tree();
        self.base.tree().diff(target, &mut self.changes);
        //    Their protection is lifted run by run first, so the writes take no
        //    fault each (no lock is held while writing).
        self.dirty.clear();
        self.dirty.extend(self.changes.iter().map(|c| c.0));
        self.tracker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .lift(&self.map, &self.dirty)?;
        self.store
            .write_pages(&self.map, &self.changes, self.threads);
        // 2. One collect makes the new sync point: it re-protects what step 1
        //    wrote and reports, besides those, the pages written since the last
        //    sync point, which must go back to `snap` too.
        self.dirty.clear();
        let mut tracker = self.tracker.lock().unwrap_or_else(|e| e.into_inner());
        tracker.collect(&self.map, &mut self.dirty)?;
        self.dirty.append(&mut self.carried);
        self.dirty.sort_unstable();
        self.dirty.dedup();
        let restored = &self.changes;
        self.dirty
            .retain(|p| restored.binary_search_by_key(p, |c| c.0).is_err());
        if !self.dirty.is_empty() {
            // 3. Those pages, and a re-arm of just them. (Right after a snapshot,
            //    the common case when backtracking, there are none.) Nothing is
            //    allocated here: the frames are looked up page by page.
            tracker.lift(&self.map, &self.dirty)?;
            drop(tracker);
            let pages = self.dirty.iter().map(|&p| (p, target.get(p)));
            write_frames(&self.map, &self.store, pages);
            self.tracker
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .rearm(&self.map, &self.dirty)?;
        } else {
            drop(tracker);
        }
        self.last_written = (self.changes.len() + self.dirty.len()) as u64;
        self.resync = false;
        self.base = snap;
        Ok(())
    }

    /// Pages the last [`restore`](Self::restore) (or clone
    /// [`reset`](Self::reset)) wrote back: those where the sync point and the
    /// snapshot differ plus those written since the sync point. 0 before the first.
    pub fn last_restore_pages(&self) -> u64 {
        self.last_written
    }

    /// Lets go of the last sync point, so that the store can free the pages only
    /// it still holds (every [`Snapshot`] handle the caller dropped): a long-lived
    /// region otherwise pins its last snapshot's pages for as long as it lives.
    ///
    /// The region's contents and tracking are untouched. What it costs: the next
    /// [`snapshot`](Self::snapshot), [`restore`](Self::restore) or background
    /// snapshot first compares every page with zero (a read of the whole region,
    /// as [`verify`](Self::verify) does), since no sync point is left to compare
    /// with. A clone keeps the snapshot it was cloned from for
    /// [`reset`](Self::reset).
    ///
    /// ```
    /// use pagesnap::{PageStore, Region};
    /// let store = PageStore::new();
    /// let mut region = Region::builder(1 << 20).store(&store).build()?;
    /// region.as_mut_slice()[..8].copy_from_slice(b"pagesnap");
    /// drop(region.snapshot()?);
    /// assert_eq!(store.stats().unique_pages, 1);
    /// region.release_sync_point()?;
    /// assert_eq!(store.stats().unique_pages, 0); // drained
    /// assert_eq!(&region.snapshot()?.to_vec()[..8], b"pagesnap"); // still exact
    /// # Ok::<(), pagesnap::Error>(())
    /// ```
    ///
    /// In a child forked from the process that built the region it fails with
    /// [`Error::ForkedChild`], as every other call does.
    pub fn release_sync_point(&mut self) -> Result<()> {
        self.owner.check()?;
        self.wait_for_background();
        let page = page_size();
        self.base = Snapshot::from_tree_at(
            Tree::zero(&self.store, self.len() / page),
            self.len(),
            self.map.as_ptr(),
        );
        self.resync = true;
        Ok(())
    }
}

/// Copies each `(page, frame)` of `changes` into the region (no lock: frames
/// are read straight from the store).
fn write_frames(map: &Mapping, store: &PageStore, changes: impl Iterator<Item = (usize, FrameId)>) {
    let page = page_size();
    let mut changes = changes.peekable();
    if changes.peek().is_none() {
        return;
    }
    for (p, id) in changes {
        map.copy_in(p * page, store.frame(id));
    }
}
