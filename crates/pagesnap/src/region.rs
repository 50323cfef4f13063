//! [`Region`]: memory whose writes are tracked, snapshotted and restored.

use crate::error::{Error, Result};
use crate::protection::Look;
use crate::snapshot::Snapshot;
use crate::store::frames::FrameId;
use crate::store::{PageStore, Threads, Tree};
use crate::sys::mmap::{Mapping, WriteKey};
use crate::sys::page_size;
use crate::track::{self, Tracker};
use crate::Tracking;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

mod background;
pub(crate) mod converge;
mod converge_rounds;
pub(crate) mod converge_save;
mod forgotten;
mod parts;
mod restore;
mod round_priority;
mod verify;

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
    staging: Option<usize>,
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

    /// Staging memory for background snapshots, in bytes (rounded down to
    /// whole batches: 64 KiB to 2 MiB, see `background/mod.rs`). A writer that touches a part of the region a
    /// background snapshot has not saved yet copies that batch into this
    /// memory itself and goes on; only when it is full does the writer wait
    /// for the copier. 0 makes writers always wait for the copier.
    ///
    /// [`background_save`](Region::background_save): an eighth of the region
    /// by default, mapped when the save starts, filled only as far as writers
    /// use it at once (slots are reused as the copier saves them) and returned
    /// when it is done.
    ///
    /// [`background_snapshot`](Region::background_snapshot): where the store
    /// holds enough free frames (memory of snapshots dropped since, as in a
    /// program that snapshots periodically), the staging is those frames, as
    /// much as the region by default: a batch a writer stages is kept where
    /// it lies as the snapshot's own copy, so it costs no extra memory and no
    /// second copy. Otherwise (a store's first snapshot) it is memory of its
    /// own, half the region by default, as for a save.
    ///
    /// ```
    /// let region = pagesnap::Region::builder(8 << 20).staging(4 << 20).build()?;
    /// let (snap, report) = region.background_snapshot()?.wait_report()?;
    /// assert_eq!(report.staging_bytes, 4 << 20);
    /// # drop(snap);
    /// # Ok::<(), pagesnap::Error>(())
    /// ```
    pub fn staging(mut self, bytes: usize) -> Self {
        self.staging = Some(bytes);
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
            rounds: Mutex::new(None),
            lost_rounds: AtomicBool::new(false),
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
            staging: self.staging,
            origin: None,
            dirty: Vec::new(),
            changes: Vec::new(),
            resync: false,
            owner: crate::fork::Owner::here(),
            carried: Vec::new(),
            last_written: 0,
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
    /// A converging run's round thread (region/forgotten.rs), stopped first.
    rounds: Mutex<Option<Box<dyn forgotten::RoundThread>>>,
    /// A forgotten converging run took pages from the tracker: as `resync`.
    lost_rounds: AtomicBool,
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
    live: Mutex<Option<crate::background::LiveSlot>>,
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
    /// Pages the last restore or reset wrote back (or discarded, for a reset).
    last_written: u64,
    huge_pages: bool,
    threads: Threads,
    /// Staging bytes for background snapshots (None: the default for its size).
    staging: Option<usize>,
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
            staging: None,
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
            return Err(e.into());
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
}

impl Region {
    /// Refuses to work in a process forked from the one that built the region —
    /// checked first, before any lock, since a thread that held one at the fork
    /// does not exist in the child — when the tracker cannot work now, or
    /// where the program protected region pages itself (looked for where the
    /// kernel answers quickly).
    pub(crate) fn preflight(&self) -> Result<()> {
        self.owner.check()?;
        self.reclaim_forgotten_rounds();
        self.tracker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .ready()?;
        self.own_protection_quick()
    }

    /// See [`crate::protection::own_protection`]. Not while a background
    /// snapshot runs: its own protection covers the region then (and it
    /// looked before it began).
    pub(crate) fn own_protection_quick(&self) -> Result<()> {
        if self.background.load(Ordering::Acquire) {
            return Ok(());
        }
        let mprotect = self.tracking() == Tracking::Mprotect;
        crate::protection::own_protection(&self.map, mprotect, Look::Quick)
    }

    /// Blocks while a background snapshot of this region is copying: restore
    /// writes pages the copier may still need.
    fn wait_for_background(&self) {
        self.reclaim_forgotten_rounds();
        while self.background.load(Ordering::Acquire) {
            std::thread::sleep(std::time::Duration::from_micros(50));
        }
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
