//! A region built over the pieces of a clone (`clone.rs`), and those pieces
//! lent back to `Region::reset`.

use super::Region;
use crate::snapshot::Snapshot;
use crate::store::frames::FrameId;
use crate::store::{PageStore, Threads};
use crate::sys::mmap::{Mapping, WriteKey};
use crate::track::Tracker;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex};

/// A clone's pieces, borrowed for `Region::reset` (clone.rs).
pub(crate) struct Parts<'a> {
    pub(crate) map: &'a Mapping,
    pub(crate) key: &'a mut WriteKey,
    pub(crate) tracker: std::sync::MutexGuard<'a, Box<dyn Tracker>>,
    pub(crate) base: &'a mut Snapshot,
    pub(crate) origin: Option<&'a Snapshot>,
    pub(crate) dirty: &'a mut Vec<usize>,
    /// Pages dirty against `base` that the tracker no longer reports.
    pub(crate) carried: &'a mut Vec<usize>,
    pub(crate) changes: &'a mut Vec<(usize, FrameId)>,
    pub(crate) last_written: &'a mut u64,
}

impl Region {
    /// A region over `map`, whose contents equal `base` now and which `tracker`
    /// tracks from here (clone.rs: `map` is a private view of `base`'s image).
    pub(crate) fn from_parts(
        map: Mapping,
        tracker: Box<dyn Tracker>,
        store: PageStore,
        base: Snapshot,
        huge_pages: bool,
    ) -> Region {
        let key = map.write_key().expect("a new mapping has its key");
        Region {
            rounds: Mutex::new(None),
            lost_rounds: AtomicBool::new(false),
            tracker: Arc::new(Mutex::new(tracker)),
            key,
            peek_pending: Arc::new(AtomicUsize::new(0)),
            live: Mutex::new(None),
            map: Arc::new(map),
            background: Arc::new(AtomicBool::new(false)),
            store,
            origin: Some(base.clone()),
            base,
            huge_pages,
            threads: Threads::AUTO,
            staging: None,
            dirty: Vec::new(),
            changes: Vec::new(),
            resync: false,
            owner: crate::fork::Owner::here(),
            carried: Vec::new(),
            last_written: 0,
        }
    }

    /// The pieces `reset` works on, once no background snapshot runs.
    pub(crate) fn parts(&mut self) -> Parts<'_> {
        self.wait_for_background();
        Parts {
            map: &self.map,
            key: &mut self.key,
            tracker: self.tracker.lock().unwrap_or_else(|e| e.into_inner()),
            base: &mut self.base,
            origin: self.origin.as_ref(),
            dirty: &mut self.dirty,
            carried: &mut self.carried,
            changes: &mut self.changes,
            last_written: &mut self.last_written,
        }
    }

    /// The snapshot this region was cloned from ([`Snapshot::instantiate`]), which
    /// [`reset`](Self::reset) goes back to; `None` for a region built empty.
    /// (Not to be confused with [`Snapshot::origin`], the address a snapshot
    /// was taken at.)
    pub fn cloned_from(&self) -> Option<&Snapshot> {
        self.origin.as_ref()
    }
}
