//! [`Region`]: memory whose writes are tracked, snapshotted and restored.

use crate::error::{Error, Result};
use crate::snapshot::Snapshot;
use crate::store::frames::FrameId;
use crate::store::{PageStore, Threads, Tree};
use crate::sys::mmap::{Mapping, Protection, WriteKey};
use crate::sys::page_size;
use crate::track::{self, Tracker};
use crate::Tracking;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

pub(crate) mod converge;
pub(crate) mod converge_save;

/// Builds a [`Region`]: `Region::builder(len).tracking(..).huge_pages(..).store(..).build()`.
#[derive(Clone, Debug)]
#[must_use]
pub struct RegionBuilder {
    len: usize,
    tracking: Tracking,
    huge_pages: bool,
    store: Option<PageStore>,
    threads: usize,
    at: Option<usize>,
}

impl RegionBuilder {
    /// Map the region at exactly `addr` (page-aligned), so that pointers into it
    /// stay valid in a snapshot restored, cloned or loaded there later. Never
    /// replaces a mapping: a range already in use is
    /// [`Error::AddressTaken`]. Default: an address the kernel chooses.
    ///
    /// ```
    /// let a = pagesnap::Region::builder(1 << 20).build()?;
    /// let addr = a.as_ptr() as usize;
    /// // The range is taken by `a`: refused, and `a` is untouched.
    /// let taken = pagesnap::Region::builder(1 << 20).at(addr).build();
    /// assert!(matches!(taken, Err(pagesnap::Error::AddressTaken { .. })));
    /// drop(a);
    /// let b = pagesnap::Region::builder(1 << 20).at(addr).build()?;
    /// assert_eq!(b.as_ptr() as usize, addr);
    /// # Ok::<(), pagesnap::Error>(())
    /// ```
    pub fn at(mut self, addr: usize) -> Self {
        self.at = Some(addr);
        self
    }

    /// The tracking backend (default `Tracking::Auto`). An explicit backend this
    /// machine lacks makes `build` fail with [`Error::Unavailable`].
    pub fn tracking(mut self, tracking: Tracking) -> Self {
        self.tracking = tracking;
        self
    }

    /// Ask for transparent huge pages (`MADV_HUGEPAGE`, 2 MiB-aligned mapping).
    /// Tracking and snapshots stay exact at base-page granularity.
    pub fn huge_pages(mut self, on: bool) -> Self {
        self.huge_pages = on;
        self
    }

    /// Keep snapshot pages in `store` (shared with other regions); default: a new store.
    pub fn store(mut self, store: &PageStore) -> Self {
        self.store = Some(store.clone());
        self
    }

    /// Use at most `n` threads for a snapshot or restore (0, the default: every
    /// core this process may run on). Only work large enough to pay for a thread
    /// is split (some hundred pages per thread), so small snapshots stay on the
    /// caller's thread whatever `n` is.
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = n;
        self
    }

    /// The builder's settings, for `Snapshot::instantiate_with` (clone.rs): length
    /// as asked (not rounded), tracking, huge pages, store, address.
    #[allow(clippy::type_complexity)]
    pub(crate) fn into_parts(self) -> (usize, Tracking, bool, Option<PageStore>, Option<usize>) {
        (
            self.len,
            self.tracking,
            self.huge_pages,
            self.store,
            self.at,
        )
    }

    /// Maps the region (all zeros) and arms tracking.
    pub fn build(self) -> Result<Region> {
        if self.len == 0 {
            return Err(Error::ZeroLength);
        }
        let page = page_size();
        let len = self
            .len
            .checked_next_multiple_of(page)
            .filter(|l| *l <= isize::MAX as usize)
            .ok_or(Error::LengthOverflow { len: self.len })?;
        let kind = track::resolve(self.tracking)?;
        let map = crate::placement::anonymous(len, self.huge_pages, self.at)?;
        let tracker = Arc::new(Mutex::new(track::arm(kind, &map)?));
        let key = map.write_key().expect("a new mapping has its key");
        let store = self.store.unwrap_or_default();
        let base = Snapshot::from_tree_at(Tree::zero(&store, len / page), len, map.as_ptr());
        Ok(Region {
            tracker,
            peek_pending: Arc::new(AtomicUsize::new(0)),
            live: Mutex::new(None),
            map: Arc::new(map),
            key,
            background: Arc::new(AtomicBool::new(false)),
            store,
            base,
            huge_pages: self.huge_pages,
            threads: Threads::at_most(self.threads),
            origin: None,
            dirty: Vec::new(),
            changes: Vec::new(),
            resync: false,
            owner: crate::fork::Owner::here(),
            carried: Vec::new(),
        })
    }
}

/// A span of memory whose writes pagesnap tracks, for O(changes) snapshots and
/// restores.
///
/// Write to it through [`as_mut_slice`](Self::as_mut_slice) or, from any number of
/// threads, through [`as_ptr`](Self::as_ptr). Writers must be quiescent while
/// [`snapshot`](Self::snapshot) or [`restore`](Self::restore) runs; every write
/// between those calls is tracked.
///
/// # fork()
///
/// A region belongs to the process that built it. A child forked from that
/// process gets a copy-on-write copy of the memory, which it may read and write
/// freely — also while the parent's background snapshot is still copying. The
/// tracking does not come along (the kernel drops userfaultfd registrations in a
/// child, and descriptors opened before the fork still name the parent), so in
/// the child [`snapshot`](Self::snapshot), [`restore`](Self::restore),
/// [`reset`](Self::reset), [`background_snapshot`](Self::background_snapshot)
/// and [`background_save`](Self::background_save) of an inherited region fail
/// with [`Error::ForkedChild`] before taking any lock, and `wait` on an
/// inherited background snapshot returns that error at once. Nothing the child
/// does changes the parent's tracking: its next snapshot is exact.
///
/// The child may also read snapshots and build regions of its own — unless
/// another thread of the parent was inside pagesnap at the fork (a background
/// copier, say): as with any library that takes locks, a lock held by a thread
/// that does not exist in the child stays held there.
///
/// # Signal handlers
///
/// The mprotect backend and background snapshots receive write faults through a
/// SIGSEGV handler; faults pagesnap did not cause go to the handler installed
/// before it (or kill the process, as they would have). A handler installed
/// *after* pagesnap's that does not pass faults on would make writes go
/// unrecorded: pagesnap checks that its handler is still installed at each
/// snapshot, restore and background start and finish, and fails with
/// [`Error::HandlerReplaced`] instead of returning a wrong snapshot; once its
/// handler is back, the next snapshot of an mprotect-tracked region takes every
/// page anew (costing the region's size once), so it is exact again. (A handler replaced and put back between
/// two pagesnap calls goes unseen.) Install other SIGSEGV handlers before
/// creating regions, or chain to the one found.
///
/// ```
/// use pagesnap::{Region, Tracking};
/// let mut region = Region::builder(1 << 20).tracking(Tracking::Auto).build()?;
/// region.as_mut_slice()[..5].copy_from_slice(b"hello");
/// let before = region.snapshot()?;
/// region.as_mut_slice()[..5].copy_from_slice(b"world");
/// let after = region.snapshot()?;
/// region.restore(&before)?;
/// assert_eq!(&region.as_slice()[..5], b"hello");
/// assert_ne!(before.digest(), after.digest());
/// # Ok::<(), pagesnap::Error>(())
/// ```
pub struct Region {
    // Declared first so it is dropped (unregistered) before the mapping goes.
    // Behind a mutex only so `background_snapshot(&self)` can peek; the `&mut self`
    // paths use `get_mut`.
    /// Shared (by `Arc`) with a background copier, which peeks it off the
    /// caller's thread.
    tracker: Arc<Mutex<Box<dyn Tracker>>>,
    /// How many background copiers have yet to peek the tracker: while non-zero,
    /// a snapshot must not collect (and so clear) what a copier is about to read.
    /// A count, not a flag: a refused second start must not clear the first's.
    peek_pending: Arc<AtomicUsize>,
    /// The region's entry in the background-snapshot fault table, made at the
    /// first background snapshot and kept until the region goes.
    live: Mutex<Option<crate::live::LiveSlot>>,
    /// Shared with a running background copier, which keeps it mapped (and
    /// reads it only by copying bytes out).
    map: Arc<Mapping>,
    /// The mapping's one write key: Rust references into the memory are formed
    /// through it, borrowed from `self`, so `&mut self` makes them exclusive.
    key: WriteKey,
    /// Whether a background snapshot is running.
    background: Arc<AtomicBool>,
    store: PageStore,
    /// The sync point: the region's contents equal `base` plus the pages the
    /// tracker reports.
    base: Snapshot,
    huge_pages: bool,
    threads: Threads,
    /// For a clone (`Snapshot::instantiate`, clone.rs): the snapshot it started
    /// from, which its mapping shows wherever it has not written, and which
    /// `reset` goes back to. `None` for a region built empty.
    origin: Option<Snapshot>,
    /// Reused buffers of the hot paths.
    dirty: Vec<usize>,
    changes: Vec<(usize, FrameId)>,
    /// Whether the tracker may have lost pages (a failed call could not put
    /// them back): the next snapshot or restore runs [`verify`](Self::verify)
    /// first, and a background copier compares every page.
    resync: bool,
    /// The process that built the region: in a forked child, calls are refused.
    owner: crate::fork::Owner,
    /// Pages written since the sync point that the tracker no longer reports
    /// (a converging snapshot collected them and did not make them the sync
    /// point): the next collect adds them.
    carried: Vec<usize>,
}

impl Region {
    /// A builder for a region of `len` bytes, rounded up to whole pages.
    pub fn builder(len: usize) -> RegionBuilder {
        RegionBuilder {
            len,
            tracking: Tracking::Auto,
            huge_pages: false,
            store: None,
            threads: 0,
            at: None,
        }
    }

    /// Length in bytes (a whole number of pages).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Always false: a region has at least one page.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The first byte. Other threads may write through it between snapshots; the
    /// pointer is valid until the region is dropped.
    pub fn as_ptr(&self) -> *mut u8 {
        self.map.as_ptr()
    }

    /// The contents.
    pub fn as_slice(&self) -> &[u8] {
        self.map.as_slice_keyed(&self.key)
    }

    /// The contents, writable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        self.map.as_mut_slice_keyed(&mut self.key)
    }

    /// The backend in use (never `Auto`).
    pub fn tracking(&self) -> Tracking {
        self.tracker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .kind()
    }

    /// Whether huge pages were asked for.
    pub fn huge_pages(&self) -> bool {
        self.huge_pages
    }

    /// The store the region's snapshots live in.
    pub fn store(&self) -> &PageStore {
        &self.store
    }

    /// The last sync point: the snapshot last taken or restored.
    pub fn last_snapshot(&self) -> &Snapshot {
        &self.base
    }

    /// Takes a snapshot of the contents. Costs what was written since the last
    /// snapshot or restore, not the region size.
    ///
    /// Writers must be quiescent: a write racing with the call may be missing
    /// from this snapshot *and* from the tracker, leaving the region out of step
    /// with its sync point. After such misuse, [`verify`](Self::verify) finds
    /// and re-marks every page that differs, and the next snapshot or restore is
    /// exact again.
    ///
    /// On an error (e.g. [`Error::OutOfMemory`]) nothing is lost: the pages this
    /// call collected are marked written again, so the next successful snapshot
    /// equals the region's bytes.
    pub fn snapshot(&mut self) -> Result<Snapshot> {
        self.preflight()?;
        self.resync_if_needed()?;
        self.dirty.clear();
        while self.peek_pending.load(Ordering::Acquire) > 0 {
            std::thread::sleep(std::time::Duration::from_micros(20));
        }
        let mut tracker = self.tracker.lock().unwrap_or_else(|e| e.into_inner());
        let collected = tracker.collect(&self.map, &mut self.dirty);
        drop(tracker);
        if let Err(e) = collected {
            // It may have re-armed pages it could not report.
            self.resync = true;
            return Err(e);
        }
        self.dirty.append(&mut self.carried);
        self.dirty.sort_unstable();
        self.dirty.dedup();
        match self.store_dirty() {
            Ok(snap) => {
                self.base = snap.clone();
                Ok(snap)
            }
            Err(e) => {
                // Collected but not saved: put them back for the next call.
                let mut tracker = self.tracker.lock().unwrap_or_else(|e| e.into_inner());
                if tracker.remark(&self.map, &self.dirty).is_err() {
                    self.resync = true;
                }
                Err(e)
            }
        }
    }

    /// The sync point with the pages of `self.dirty` (sorted, unique) saved into
    /// the store. On failure the store holds nothing new.
    fn store_dirty(&mut self) -> Result<Snapshot> {
        let tree =
            self.store
                .commit_pages(self.base.tree(), &self.map, &self.dirty, self.threads)?;
        Ok(Snapshot::from_tree_at(tree, self.len(), self.map.as_ptr()))
    }

    /// Starts a consistent snapshot of the region as it is now, and returns as soon
    /// as the region is protected; other threads may go on writing through
    /// [`as_ptr`](Self::as_ptr) meanwhile. A writer that touches a batch not yet
    /// copied waits until it is (see `live.rs` for the design). `wait()` on the
    /// result gives the snapshot; tracking stays exact throughout, so the next
    /// [`snapshot`](Self::snapshot) sees every write.
    ///
    /// ```
    /// let mut region = pagesnap::Region::builder(8 << 20).build()?;
    /// region.as_mut_slice().fill(123);
    /// let bg = region.background_snapshot()?;
    /// region.as_mut_slice()[0] = 7; // waits for its batch to be copied first
    /// let snap = bg.wait()?;
    /// assert!(snap.to_vec().iter().all(|&b| b == 123));
    /// assert_eq!(region.snapshot()?.to_vec()[0], 7);
    /// # Ok::<(), pagesnap::Error>(())
    /// ```
    pub fn background_snapshot(&self) -> Result<crate::Background> {
        let job = self.live_job()?;
        crate::live::start(job, self.peeker())
    }

    /// As [`background_snapshot`](Self::background_snapshot), but the snapshot is
    /// streamed to a snapshot file at `path` as the copier goes (atomically and
    /// durably, like [`Snapshot::save`]), without entering the store: extra memory
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
    /// region.as_mut_slice()[0] = 7; // waits for its batch to be copied first
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
        crate::live_save::start(job, path.as_ref(), self.peeker())
    }

    fn live_job(&self) -> Result<crate::live::Job> {
        self.preflight()?;
        let unprotect_to = if self.tracking() == Tracking::Mprotect {
            Protection::Read
        } else {
            Protection::ReadWrite
        };
        let batches = {
            let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
            if live.is_none() {
                *live = Some(crate::live::LiveSlot::register(&self.map)?);
            }
            live.as_ref()
                .map(|l| l.batches.clone())
                .expect("registered above")
        };
        Ok(crate::live::Job {
            map: self.map.clone(),
            base: self.base.clone(),
            busy: self.background.clone(),
            unprotect_to,
            batches,
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
        let resync = self.resync.then(|| self.base.clone());
        // Dirty against the sync point too, though the tracker forgot them.
        let carried = self.carried.clone();
        move |dirty| {
            let r = tracker
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .peek(&map, dirty);
            let r = match (r, resync) {
                (Ok(()), Some(base)) => crate::verify::differing(&map, &base, dirty),
                (r, _) => r,
            };
            drop(pending);
            dirty.extend_from_slice(&carried);
            r
        }
    }

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
        self.preflight()?;
        let snap = snap.in_store(&self.store)?;
        self.wait_for_background();
        self.resync_if_needed()?;
        // Until the new sync point is made, a failure leaves tracking in doubt.
        self.resync = true;
        // 1. Pages where the sync point and `snap` differ: known from the tables
        //    alone, written first.
        self.changes.clear();
        let target = snap.tree();
        self.base.tree().diff(target, &mut self.changes);
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
            let pages = self.dirty.iter().map(|&p| (p, target.get(p)));
            write_frames(&self.map, &self.store, pages);
            tracker.rearm(&self.map, &self.dirty)?;
        }
        drop(tracker);
        self.resync = false;
        self.base = snap;
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
        self.wait_for_background();
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
        Ok(crate::VerifyReport {
            pages: (self.len() / page_size()) as u64,
            changed,
            untracked: differing.len() as u64,
        })
    }

    /// Runs [`verify`](Self::verify) when a failed call left tracking in doubt.
    fn resync_if_needed(&mut self) -> Result<()> {
        if self.resync {
            self.verify()?;
        }
        Ok(())
    }

    /// Refuses to work in a process forked from the one that built the region —
    /// checked first, before any lock, since a thread that held one at the fork
    /// does not exist in the child — or when the tracker cannot work now.
    pub(crate) fn preflight(&self) -> Result<()> {
        self.owner.check()?;
        self.tracker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .ready()
    }

    /// Blocks while a background snapshot of this region is copying: restore
    /// writes pages the copier may still need.
    fn wait_for_background(&self) {
        while self.background.load(Ordering::Acquire) {
            std::thread::sleep(std::time::Duration::from_micros(50));
        }
    }
}

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
            dirty: Vec::new(),
            changes: Vec::new(),
            resync: false,
            owner: crate::fork::Owner::here(),
            carried: Vec::new(),
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

impl fmt::Debug for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Region")
            .field("addr", &self.as_ptr())
            .field("len", &self.len())
            .field("tracking", &self.tracking())
            .field("huge_pages", &self.huge_pages)
            .finish()
    }
}
