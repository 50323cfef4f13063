//! Starting background snapshots and saves of a region: the job handed to the
//! copier (`crate::background`), and the peek of what was written since the
//! sync point.

use super::Region;
use crate::error::{Error, Result};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

impl Region {
    /// Starts a consistent snapshot of the region as it is now, and returns as soon
    /// as the region is protected; other threads may go on writing through
    /// [`as_ptr`](Self::as_ptr) meanwhile. A writer that touches a batch (64 KiB
    /// to 2 MiB) not yet copied copies it into staging memory itself and goes on (see
    /// [`RegionBuilder::staging`](super::RegionBuilder::staging)); only when that memory is full does it wait
    /// for the copier (see `background/mod.rs` for the design). `wait()` on the
    /// result gives the snapshot; tracking stays exact throughout, so the next
    /// [`snapshot`](Self::snapshot) sees every write.
    ///
    /// Pages the program discards during the snapshot (`madvise(MADV_DONTNEED)`,
    /// `MADV_FREE`, `MADV_REMOVE`) take no fault, so nothing copies them first:
    /// each such page holds either its contents at the instant or zeros in the
    /// snapshot. Discard after `wait()`, or use
    /// [`converging_snapshot`](Self::converging_snapshot), which copies what the
    /// region holds at `finish` and sees every discard.
    ///
    /// Fails with [`Error::FaultSignalBlocked`](crate::Error::FaultSignalBlocked),
    /// before anything is protected, while a thread of the process blocks
    /// `SIGSEGV`: its first write to a page not yet copied would kill the
    /// process; and with [`Error::ForeignProtection`](crate::Error::ForeignProtection)
    /// if the program changed the protection of pages of the region itself
    /// (a guard page, a write barrier), which the snapshot would replace.
    ///
    /// Writers stage into store memory freed by earlier snapshots where the
    /// store has it. A store's first snapshot takes new memory, which the
    /// kernel zeroes as writers and the copier first touch it, beside the
    /// writers; [`PageStore::reserve`](crate::PageStore::reserve) at start-up
    /// takes it ahead of time instead.
    ///
    /// ```
    /// let mut region = pagesnap::Region::builder(8 << 20).build()?;
    /// region.as_mut_slice().fill(123);
    /// let bg = region.background_snapshot()?;
    /// region.as_mut_slice()[0] = 7; // its batch is copied first
    /// let snap = bg.wait()?;
    /// assert!(snap.to_vec().iter().all(|&b| b == 123));
    /// assert_eq!(region.snapshot()?.to_vec()[0], 7);
    /// # Ok::<(), pagesnap::Error>(())
    /// ```
    pub fn background_snapshot(&self) -> Result<crate::Background> {
        let job = self.live_job()?;
        crate::background::start(job, self.peeker())
    }

    /// As [`background_snapshot`](Self::background_snapshot), but the snapshot is
    /// streamed to a snapshot file at `path` as the copier goes (atomically and
    /// durably, like [`Snapshot::save`](crate::Snapshot::save)), without entering the store: extra memory
    /// is a few buffers, not the region. [`wait`](crate::BackgroundSave::wait)
    /// returns once the file is complete. On any error the writers are released
    /// and the target is left untouched.
    ///
    /// ```
    /// use pagesnap::{PageStore, Region, Snapshot};
    /// let dir = std::env::temp_dir().join(format!("pagesnap-bgdoc-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir).unwrap();
    /// let mut region = Region::builder(8 << 20).build()?;
    /// region.as_mut_slice().fill(123);
    /// let bg = region.background_save(dir.join("a.snap"))?;
    /// region.as_mut_slice()[0] = 7; // its batch is copied first
    /// let report = bg.wait()?;
    /// let back = Snapshot::load(dir.join("a.snap"), &PageStore::new())?;
    /// assert_eq!(back.digest(), report.digest);
    /// assert!(back.to_vec().iter().all(|&b| b == 123));
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), pagesnap::Error>(())
    /// ```
    pub fn background_save(
        &self,
        path: impl AsRef<std::path::Path>,
    ) -> Result<crate::BackgroundSave> {
        let job = self.live_job()?;
        crate::background::save::start(job, path.as_ref(), self.peeker())
    }

    fn live_job(&self) -> Result<crate::background::Job> {
        self.preflight()?;
        let unprotect_to = self
            .tracker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .unprotect_to();
        let (batches, batch) = {
            let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
            if live.is_none() {
                *live = Some(crate::background::LiveSlot::register(
                    &self.map,
                    self.huge_pages,
                )?);
            }
            live.as_ref()
                .map(|l| (l.batches.clone(), l.batch))
                .expect("registered above")
        };
        Ok(crate::background::Job {
            map: self.map.clone(),
            base: self.base.clone(),
            busy: self.background.clone(),
            unprotect_to,
            batches,
            batch,
            staging: self.staging,
        })
    }

    /// What the copier calls to learn the pages written since the sync point.
    /// Counts a peek pending until it has run (or been dropped unrun, as when
    /// the start is refused: that drop must leave a running copier's count).
    fn peeker(&self) -> impl FnOnce(&mut Vec<usize>) -> Result<()> + Send + 'static {
        struct Pending(Arc<AtomicUsize>);
        impl Drop for Pending {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::Release);
            }
        }
        self.peek_pending.fetch_add(1, Ordering::AcqRel);
        let pending = Pending(self.peek_pending.clone());
        let (tracker, map) = (self.tracker.clone(), self.map.clone());
        // Tracking is in doubt (a failed call could not put its pages back):
        // the copier compares every page with the sync point as well.
        let resync = self.needs_resync().then(|| self.base.clone());
        // Dirty against the sync point too, though the tracker forgot them.
        let carried = self.carried.clone();
        move |dirty| {
            let r = tracker
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .peek(&map, dirty)
                .map_err(Error::from);
            let r = match (r, resync) {
                (Ok(()), Some(base)) => crate::verify::differing(&map, &base, dirty),
                (r, _) => r,
            };
            drop(pending);
            dirty.extend_from_slice(&carried);
            r
        }
    }
}
