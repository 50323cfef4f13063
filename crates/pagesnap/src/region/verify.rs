//! Putting a region's tracking right after misuse: every page compared with the
//! sync point, and the ones the tracker missed marked written again.

use super::Region;
use crate::error::Result;
use crate::sys::page_size;
use std::sync::atomic::Ordering;

impl Region {
    /// Compares every page with the last sync point and puts the tracker right
    /// where it missed a write, so that the next [`snapshot`](Self::snapshot) is
    /// exact and the next [`restore`](Self::restore) rewrites every page that
    /// differs. Costs a read of the whole region.
    ///
    /// This is the way back after writers ran during a snapshot or restore (a
    /// documented misuse whose writes the tracker may miss). Writers must be
    /// quiescent while it runs; a running background snapshot is waited for.
    ///
    /// ```
    /// let mut region = pagesnap::Region::builder(1 << 20).build()?;
    /// region.as_mut_slice()[0] = 1;
    /// let snap = region.snapshot()?;
    /// let second_page = pagesnap::page_size();
    /// region.as_mut_slice()[second_page] = 2;
    /// let report = region.verify()?;
    /// assert_eq!((report.changed, report.untracked), (1, 0)); // seen by the tracker
    /// region.restore(&snap)?;
    /// assert_eq!(region.as_slice()[second_page], 0);
    /// # Ok::<(), pagesnap::Error>(())
    /// ```
    pub fn verify(&mut self) -> Result<crate::VerifyReport> {
        // First: in a forked child a background flag may stay set for ever.
        self.owner.check()?;
        self.wait_for_background();
        self.own_protection_quick()?;
        while self.peek_pending.load(Ordering::Acquire) > 0 {
            std::thread::sleep(std::time::Duration::from_micros(20));
        }
        let mut tracker = self.tracker.lock().unwrap_or_else(|e| e.into_inner());
        self.dirty.clear();
        tracker.peek(&self.map, &mut self.dirty)?;
        self.dirty.sort_unstable();
        self.dirty.dedup();
        let mut differing = Vec::new();
        crate::verify::differing(&self.map, &self.base, &mut differing)?;
        let changed = differing.len() as u64;
        let tracked = &self.dirty;
        differing.retain(|p| tracked.binary_search(p).is_err());
        tracker.remark(&self.map, &differing)?;
        drop(tracker);
        self.resync = false;
        self.lost_rounds.store(false, Ordering::Release);
        Ok(crate::VerifyReport {
            pages: (self.len() / page_size()) as u64,
            changed,
            untracked: differing.len() as u64,
        })
    }

    /// Runs [`verify`](Self::verify) when a failed call left tracking in doubt.
    pub(crate) fn resync_if_needed(&mut self) -> Result<()> {
        if self.needs_resync() {
            self.verify()?;
        }
        Ok(())
    }
}
