//! The table of regions under a background snapshot, and the states of their
//! batches.
//!
//! `BACKGROUND[i]` names a region, its batch size and its [`BatchStates`]; the
//! handler (`on_fault` in `mod.rs`) reads it to stage a batch a writer touches
//! before the copier saved it, or to park the writer on a futex
//! ([`BatchStates::wait_until_copied`]) until the copier has. Everything the handler calls
//! here is async-signal-safe: atomics, `memcpy` into the staging pool, `futex(2)`
//! and `clock_gettime(2)`.

use super::{install, registry_unless_inherited, RegisterError, REGISTRY};
use crate::sys::futex;
use crate::sys::process;
use crate::sys::staging::{self, StagingPool};
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// Batch states of a background snapshot.
pub(crate) const PENDING: u32 = 0;
/// A writer waits for this batch: the copier serves it first.
pub(crate) const REQUESTED: u32 = 1;
/// The copier is saving this batch.
pub(crate) const COPYING: u32 = 2;
/// Saved (or never needed saving): writes may go ahead.
pub(crate) const COPIED: u32 = 3;
/// Copied by a writer into the staging pool and writable again; a copier has
/// yet to save the copy (then it becomes `COPIED`). Writes may go ahead.
pub(crate) const STAGED: u32 = 4;
/// Saved, but still protected: lifting it alone would take a mapping more
/// and the process is at its limit (`vm.max_map_count`). Writers sleep until
/// the copier lifts it with a neighbour, or the whole region at the end.
pub(crate) const DEFERRED: u32 = 5;

/// Writers asleep at once whose batches [`BatchStates`] lists (more still
/// work: they make wakes cover whole ranges).
pub(super) const SLEEP_TABLE: usize = 64;

/// How many background snapshots can run at once in one process.
pub(crate) const MAX_BACKGROUND: usize = 1024;

pub(super) struct BackgroundEntry {
    pub(super) start: AtomicUsize,
    pub(super) len: AtomicUsize,
    pub(super) batch: AtomicUsize,
    pub(super) batches: AtomicPtr<BatchStates>,
    pub(super) pid: AtomicU32,
}

#[allow(clippy::declare_interior_mutable_const)]
const NO_BACKGROUND: BackgroundEntry = BackgroundEntry {
    start: AtomicUsize::new(0),
    len: AtomicUsize::new(0),
    batch: AtomicUsize::new(0),
    batches: AtomicPtr::new(std::ptr::null_mut()),
    pid: AtomicU32::new(0),
};
pub(super) static BACKGROUND: [BackgroundEntry; MAX_BACKGROUND] = [NO_BACKGROUND; MAX_BACKGROUND];

/// The shared state of one background snapshot, read by the handler.
pub(crate) struct BatchStates {
    /// One state per batch of `batch` bytes.
    pub(crate) states: Box<[AtomicU32]>,
    /// Bumped each time a writer requests a batch.
    pub(crate) requests: AtomicUsize,
    /// Writers asleep on a batch's state right now: [`wake`](Self::wake) makes
    /// a syscall only if there are any (a writer staging in order would
    /// otherwise make one per batch).
    pub(crate) sleepers: AtomicUsize,
    /// The batches those writers sleep on (index + 1; 0: a free entry), so
    /// that a wake over many batches (the start lifting every batch with
    /// nothing written) makes one syscall per sleeper, not one per batch.
    pub(super) sleeping: [AtomicUsize; SLEEP_TABLE],
    /// Sleepers that found `sleeping` full: wakes then cover every batch of
    /// their range, as without the table.
    pub(super) unlisted: AtomicUsize,
    /// Nanoseconds writers spent in the handler on batches of this region:
    /// staging their batch, or waiting for the copier.
    pub(crate) waited_ns: AtomicU64,
    /// The running snapshot's staging pool (null: none), see [`publish`](Self::publish).
    pool: AtomicPtr<StagingPool>,
    /// Handlers between loading `pool` and being done with it.
    inside: AtomicUsize,
    /// Handlers lifting the tracker's protection of a page of a saved batch
    /// (see [`enter_tracker_lift`](Self::enter_tracker_lift)).
    lifting: AtomicUsize,
}

impl BatchStates {
    /// `n` batches, all in `state`, no pool.
    pub(crate) fn new(n: usize, state: u32) -> BatchStates {
        BatchStates {
            states: (0..n).map(|_| AtomicU32::new(state)).collect(),
            requests: AtomicUsize::new(0),
            sleepers: AtomicUsize::new(0),
            sleeping: [const { AtomicUsize::new(0) }; SLEEP_TABLE],
            unlisted: AtomicUsize::new(0),
            waited_ns: AtomicU64::new(0),
            pool: AtomicPtr::new(std::ptr::null_mut()),
            inside: AtomicUsize::new(0),
            lifting: AtomicUsize::new(0),
        }
    }

    /// From the handler, before the mprotect tracker's path lifts the
    /// protection of a page of batch `b`: whether that batch is still saved
    /// (`COPIED` or `STAGED`). If so the caller lifts and marks the page, then
    /// calls [`leave_tracker_lift`](Self::leave_tracker_lift); if not, a
    /// snapshot started meanwhile: retry the write, which faults into it.
    /// Async-signal-safe.
    ///
    /// Without this, a lift decided before a snapshot's start could land
    /// after its protection, leaving a page of a batch not yet copied
    /// writable: later writes would reach the snapshot.
    pub(crate) fn enter_tracker_lift(&self, b: usize) -> bool {
        // SeqCst pairs with `wait_tracker_lifts`: either the start sees us
        // counted and waits, or we see the batch pending.
        self.lifting.fetch_add(1, Ordering::SeqCst);
        if matches!(self.states[b].load(Ordering::SeqCst), COPIED | STAGED) {
            return true;
        }
        self.lifting.fetch_sub(1, Ordering::SeqCst);
        false
    }

    /// The lift [`enter_tracker_lift`](Self::enter_tracker_lift) allowed is
    /// done (the page marked). Async-signal-safe.
    pub(crate) fn leave_tracker_lift(&self) {
        self.lifting.fetch_sub(1, Ordering::SeqCst);
    }

    /// From a snapshot's start, after setting every batch pending and before
    /// protecting the region: waits out the tracker lifts decided before (a
    /// few microseconds each), so that the protection comes after them.
    ///
    /// Also waits out handlers that have not yet looked the fault up in the
    /// background table ([`enter_lookup`]): one that does not find this
    /// region there (registered just now, before its first snapshot) lifts
    /// the tracker's protection without asking the batch state.
    pub(crate) fn wait_tracker_lifts(&self) {
        std::sync::atomic::fence(Ordering::SeqCst);
        while self.lifting.load(Ordering::SeqCst) != 0 || LOOKING.load(Ordering::SeqCst) != 0 {
            std::thread::yield_now();
        }
    }

    /// Lets faulting writers stage their batches into `pool` until the returned
    /// guard drops; the guard keeps the pool alive and, on drop, waits until no
    /// handler uses it any more.
    pub(crate) fn publish(self: &Arc<Self>, pool: Arc<StagingPool>) -> Published {
        self.pool
            .store(Arc::as_ptr(&pool) as *mut StagingPool, Ordering::SeqCst);
        Published {
            batches: self.clone(),
            pool,
        }
    }

    /// Wakes the writers asleep on the batches in `range`, if any writer is
    /// asleep at all (each wake is a syscall). Call after storing the batches'
    /// new states. Async-signal-safe.
    pub(crate) fn wake(&self, range: std::ops::Range<usize>) {
        // Pairs with the sleeper's count-then-futex-check in
        // `wait_until_copied`: either it is counted here, or its futex sees
        // the new state and does not sleep.
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.sleepers.load(Ordering::SeqCst) == 0 {
            return;
        }
        if self.unlisted.load(Ordering::SeqCst) != 0 {
            for state in &self.states[range] {
                futex::wake_all(state);
            }
            return;
        }
        // Listed before the sleeper's futex re-checks its state, like the count.
        for entry in &self.sleeping {
            match entry.load(Ordering::SeqCst) {
                0 => {}
                b if range.contains(&(b - 1)) => futex::wake_all(&self.states[b - 1]),
                _ => {}
            }
        }
    }

    /// Lists batch `b` as slept on: the entry taken, or `None` (counted in
    /// `unlisted`) if the table is full. Async-signal-safe.
    fn list_sleeper(&self, b: usize) -> Option<usize> {
        let entry = self.sleeping.iter().position(|e| {
            e.compare_exchange(0, b + 1, Ordering::SeqCst, Ordering::Relaxed)
                .is_ok()
        });
        if entry.is_none() {
            self.unlisted.fetch_add(1, Ordering::SeqCst);
        }
        entry
    }

    fn unlist_sleeper(&self, entry: Option<usize>) {
        match entry {
            Some(i) => self.sleeping[i].store(0, Ordering::SeqCst),
            None => {
                self.unlisted.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }

    /// The writer's side of batch `b` when it could not stage it: returns at
    /// once if it is `COPIED` or `STAGED` (false: nothing waited); otherwise
    /// asks the copier for it (PENDING → REQUESTED, counted in `requests`)
    /// and sleeps until it is `COPIED` or `STAGED` (true). Async-signal-safe.
    pub(crate) fn wait_until_copied(&self, b: usize) -> bool {
        let state = &self.states[b];
        let mut waited = false;
        loop {
            match state.load(Ordering::Acquire) {
                COPIED | STAGED => return waited,
                PENDING => {
                    if state
                        .compare_exchange(PENDING, REQUESTED, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                    {
                        self.requests.fetch_add(1, Ordering::Release);
                    }
                }
                s => {
                    waited = true;
                    // Listed and counted before the futex re-checks the state,
                    // so a waker that changes it either sees us or we see its
                    // change (both sides SeqCst; see `wake`).
                    let entry = self.list_sleeper(b);
                    self.sleepers.fetch_add(1, Ordering::SeqCst);
                    futex::wait(state, s);
                    self.sleepers.fetch_sub(1, Ordering::SeqCst);
                    self.unlist_sleeper(entry);
                }
            }
        }
    }

    /// From the handler: stages batch `b` (and up to `ahead` waiting batches
    /// after it) of the region at `at` = (start, len, batch bytes) if a pool is
    /// published and has room.
    pub(super) fn stage(
        &self,
        b: usize,
        at: (usize, usize, usize),
        ahead: usize,
    ) -> staging::Staged {
        // SeqCst pairs with `Published::drop`: either it sees us inside, or we
        // see the pool withdrawn.
        self.inside.fetch_add(1, Ordering::SeqCst);
        let pool = self.pool.load(Ordering::SeqCst);
        let r = if pool.is_null() {
            staging::Staged::NoRoom
        } else {
            // SAFETY: a published pool stays alive until `Published::drop` has
            // withdrawn it and seen `inside` at zero, which our increment above
            // (made before the load) prevents until we decrement below.
            unsafe { &*pool }.stage(self, b, at, ahead)
        };
        self.inside.fetch_sub(1, Ordering::SeqCst);
        r
    }
}

/// A staging pool published to the handler; withdrawn on drop.
pub(crate) struct Published {
    batches: Arc<BatchStates>,
    pool: Arc<StagingPool>,
}

impl Published {
    pub(crate) fn pool(&self) -> &StagingPool {
        &self.pool
    }
}

impl Drop for Published {
    fn drop(&mut self) {
        self.batches
            .pool
            .store(std::ptr::null_mut(), Ordering::SeqCst);
        // A handler that loaded the pointer before the store above is counted:
        // wait for it to leave (a memcpy of one batch at most).
        while self.batches.inside.load(Ordering::SeqCst) != 0 {
            std::thread::yield_now();
        }
    }
}

/// One past the highest table index ever used: the handler scans no further.
pub(super) static BACKGROUND_HIGH: AtomicUsize = AtomicUsize::new(0);

/// A region's entry in the background table; removed on drop. It is owned by the
/// region (not by one background snapshot), so a writer that faulted just before
/// the copier finished still finds it — with its batch `COPIED` — and retries
/// instead of being handed to the previous handler; and the states it reads are
/// never freed while the region lives.
pub(crate) struct BackgroundSlot {
    pub(super) index: usize,
    // Keeps the states alive while the handler may read them.
    _shared: Arc<BatchStates>,
}

/// Parks writers to `[start, start + len)` whose batch (of `batch` bytes) is not
/// `COPIED` until it is.
pub(crate) fn register_background(
    start: usize,
    len: usize,
    batch: usize,
    shared: Arc<BatchStates>,
) -> Result<BackgroundSlot, RegisterError> {
    let _guard = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    install().map_err(RegisterError::Sigaction)?;
    let index = BACKGROUND
        .iter()
        .position(|s| s.start.load(Ordering::Relaxed) == 0)
        .ok_or(RegisterError::Full)?;
    BACKGROUND_HIGH.fetch_max(index + 1, Ordering::Release);
    let e = &BACKGROUND[index];
    e.batches
        .store(Arc::as_ptr(&shared) as *mut BatchStates, Ordering::Relaxed);
    e.batch.store(batch, Ordering::Relaxed);
    e.len.store(len, Ordering::Relaxed);
    e.pid.store(process::id(), Ordering::Relaxed);
    e.start.store(start, Ordering::Release);
    Ok(BackgroundSlot {
        index,
        _shared: shared,
    })
}

impl Drop for BackgroundSlot {
    fn drop(&mut self) {
        let e = &BACKGROUND[self.index];
        let _guard = registry_unless_inherited(&e.pid);
        e.start.store(0, Ordering::Release);
    }
}

/// Handlers between [`enter_lookup`] and [`leave_lookup`].
static LOOKING: AtomicUsize = AtomicUsize::new(0);

/// From the handler, before it looks the fault up in [`BACKGROUND`]. If it
/// finds no entry it may lift the mprotect tracker's protection at once; a
/// region registered meanwhile and starting its first snapshot must not see
/// that lift land after its protection. With the SeqCst fence either the
/// start's [`BatchStates::wait_tracker_lifts`] sees this handler counted and
/// waits, or this handler's lookup sees the entry (stored before that wait)
/// and goes through the batch state. Async-signal-safe.
pub(super) fn enter_lookup() {
    LOOKING.fetch_add(1, Ordering::SeqCst);
    std::sync::atomic::fence(Ordering::SeqCst);
}

/// The handler found its background entry (the batch state decides from
/// here), or its tracker lift is done. Async-signal-safe.
pub(super) fn leave_lookup() {
    LOOKING.fetch_sub(1, Ordering::SeqCst);
}

/// CLOCK_MONOTONIC in nanoseconds, from the handler (clock_gettime is
/// async-signal-safe; `Instant::now` is not promised to be).
pub(super) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}
