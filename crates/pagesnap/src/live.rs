//! Background snapshots: a consistent point-in-time copy while writers keep
//! running — the `fork()` replacement.
//!
//! ```text
//!  background_snapshot():  register batch states with the SIGSEGV handler
//!                          mprotect(region, PROT_READ)          ◄── the instant
//!                          spawn the copier; return      (the pause ends here)
//!  copier thread:          dirty = pages written since the sync point (peek:
//!                          exact, since no batch has been lifted yet)
//!                          batches without dirty pages: writable again at once
//!                          then every batch once (`drive`): any batch a writer
//!                          is parked on first; then onward from where writers
//!                          last parked (they go in address order, so the copier
//!                          runs ahead of each and spares it the next fault);
//!                          then address order. Per batch: copy its dirty pages
//!                          into a buffer, lift the protection, wake the writers,
//!                          and only then hash them into the store (or stream
//!                          them to a file: live_save.rs)
//!  writer touching a batch not yet copied: SIGSEGV → handler marks the batch
//!                          REQUESTED and sleeps on a futex until it is COPIED
//! ```
//!
//! Only pages written since the region's last sync point are copied: the others
//! equal the sync point's snapshot, which the store already holds. Protection and
//! service work in batches of 2 MiB (one huge page): one fault per batch instead
//! of one per page, which is what lets this beat fork's per-page copy-on-write.
//!
//! The dirty tracker underneath is never disarmed: mprotect leaves userfaultfd-wp
//! and soft-dirty bits alone, so the next `snapshot()` still sees every write made
//! before, during and after the background snapshot.

use crate::error::{Error, Result};
use crate::fork::Owner;
use crate::snapshot::Snapshot;
use crate::store::Staged;
use crate::sys::mmap::{Mapping, Protection};
use crate::sys::page_size;
use crate::sys::signal::{self, BatchStates, COPIED, COPYING, PENDING, REQUESTED};
use crate::sys::{futex, mmap::HUGE_PAGE};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How far a background snapshot has come, from [`Background::progress`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Progress {
    /// Pages saved so far.
    pub copied: u64,
    /// Pages to save in all (those written since the region's last sync point).
    pub total: u64,
    /// Batches that writers had to wait for (faults served ahead of order).
    pub faults: u64,
}

/// A background snapshot in progress, from [`Region::background_snapshot`](crate::Region::background_snapshot).
///
/// Dropping it without [`wait`](Self::wait) still finishes the copy (so no writer
/// stays blocked) and discards the result.
///
/// In a child forked while it runs, there is no copier: `wait` fails at once
/// with [`Error::ForkedChild`], and the child's writes to the region go through.
pub struct Background {
    thread: Option<JoinHandle<Result<Snapshot>>>,
    shared: Arc<Shared>,
    owner: Owner,
}

/// What the copier reports, and how it ended.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct BackgroundReport {
    /// Pages copied.
    pub pages: u64,
    /// Bytes copied.
    pub bytes: u64,
    /// From the instant of protection until the copier finished.
    pub duration: Duration,
    /// Batches served ahead of order because a writer waited for them.
    pub faults: u64,
}

pub(crate) struct Shared {
    pub(crate) copied: AtomicU64,
    pub(crate) total: AtomicU64,
    pub(crate) batches: Arc<BatchStates>,
    /// `batches.requests` before this run protected anything: the counter lives
    /// as long as the region, a run's faults are what it added.
    requests_before: usize,
    started: Instant,
    finished_ns: AtomicU64,
}

impl Shared {
    pub(crate) fn progress(&self) -> Progress {
        Progress {
            copied: self.copied.load(Ordering::Relaxed),
            total: self.total.load(Ordering::Relaxed),
            faults: self
                .batches
                .requests
                .load(Ordering::Relaxed)
                .wrapping_sub(self.requests_before) as u64,
        }
    }

    fn finish(&self) {
        self.finished_ns
            .store(self.started.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }

    /// From the instant of protection until the copier finished.
    pub(crate) fn duration(&self) -> Duration {
        Duration::from_nanos(self.finished_ns.load(Ordering::Relaxed))
    }
}

impl Background {
    /// Pages copied so far, of how many.
    pub fn progress(&self) -> Progress {
        self.shared.progress()
    }

    /// Whether the copier has finished (in a forked child: always, there is none).
    pub fn is_finished(&self) -> bool {
        !self.owner.is_here() || self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Waits for the copy to finish: the snapshot of the region at the instant of
    /// protection, in the region's store, deduplicated like any other.
    ///
    /// Fails with [`Error::HandlerReplaced`] if pagesnap's SIGSEGV handler was
    /// replaced while the copy ran (a write after the instant could have gone
    /// in), and with [`Error::ForkedChild`] in a forked child.
    pub fn wait(mut self) -> Result<Snapshot> {
        self.join()
    }

    /// As [`wait`](Self::wait), with a report of what was done.
    pub fn wait_report(mut self) -> Result<(Snapshot, BackgroundReport)> {
        let snap = self.join()?;
        let p = self.progress();
        let report = BackgroundReport {
            pages: p.copied,
            bytes: p.copied * page_size() as u64,
            duration: self.shared.duration(),
            faults: p.faults,
        };
        Ok((snap, report))
    }

    fn join(&mut self) -> Result<Snapshot> {
        // In a forked child the copier thread does not exist: joining would wait
        // forever (Drop leaves the handle alone there).
        self.owner.check()?;
        let thread = self.thread.take().expect("joined once");
        match thread.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            if self.owner.is_here() {
                let _ = t.join();
            } else {
                // A forked child's copy of the handle names no thread of its own.
                std::mem::forget(t);
            }
        }
    }
}

/// Everything the copier needs, moved into its thread.
pub(crate) struct Job {
    pub(crate) map: Arc<Mapping>,
    pub(crate) base: Snapshot,
    pub(crate) busy: Arc<AtomicBool>,
    /// What a batch goes back to once saved: writable, or read-only when the
    /// mprotect tracker watches the region.
    pub(crate) unprotect_to: Protection,
    /// The region's batch states, registered with the SIGSEGV handler for the
    /// region's whole life (all `COPIED` between background snapshots).
    pub(crate) batches: Arc<BatchStates>,
}

/// Bytes per batch: one huge page, or the whole region if smaller.
pub(crate) fn batch_bytes(len: usize) -> usize {
    HUGE_PAGE.min(len)
}

/// A region's registration with the handler's background table.
pub(crate) struct LiveSlot {
    pub(crate) batches: Arc<BatchStates>,
    _slot: signal::BackgroundSlot,
}

impl LiveSlot {
    /// Registers `map` (all batches `COPIED`: writes go ahead).
    pub(crate) fn register(map: &Mapping) -> Result<LiveSlot> {
        let (addr, len) = (map.as_ptr() as usize, map.len());
        let batch = batch_bytes(len);
        let batches = Arc::new(BatchStates {
            states: (0..len.div_ceil(batch))
                .map(|_| AtomicU32::new(COPIED))
                .collect(),
            requests: AtomicUsize::new(0),
        });
        let slot =
            signal::register_background(addr, len, batch, batches.clone()).map_err(
                |e| match e {
                    signal::RegisterError::Full => Error::TooManyBackground {
                        max: signal::MAX_BACKGROUND,
                    },
                    signal::RegisterError::Sigaction(source) => Error::Background {
                        step: "sigaction(SIGSEGV)",
                        addr,
                        len,
                        source,
                    },
                },
            )?;
        Ok(LiveSlot {
            batches,
            _slot: slot,
        })
    }
}

/// Protects the region and starts the copier. `peek` reports the pages written
/// since the sync point; the copier calls it first, while every batch is still
/// protected, so it is exact and stays out of the caller's pause.
pub(crate) fn start(
    job: Job,
    peek: impl FnOnce(&mut Vec<usize>) -> Result<()> + Send + 'static,
) -> Result<Background> {
    let (thread, shared) = start_with(job, peek, copy)?;
    Ok(Background {
        thread: Some(thread),
        shared,
        owner: Owner::here(),
    })
}

/// Protects the region and starts a copier running `body`, which is given the
/// job, the shared state, the dirty pages (sorted) and the batch size, and must
/// serve every batch (see [`drive`]).
pub(crate) fn start_with<T, F>(
    job: Job,
    peek: impl FnOnce(&mut Vec<usize>) -> Result<()> + Send + 'static,
    body: F,
) -> Result<(JoinHandle<Result<T>>, Arc<Shared>)>
where
    T: Send + 'static,
    F: FnOnce(&Job, &Shared, &[usize], usize) -> Result<T> + Send + 'static,
{
    if job.busy.swap(true, Ordering::AcqRel) {
        return Err(Error::BackgroundBusy);
    }
    // Writers must fault into pagesnap's handler to wait for their batch.
    if let Err(replaced) = signal::check() {
        job.busy.store(false, Ordering::Release);
        return Err(replaced.into());
    }
    let busy = job.busy.clone();
    let started = start_inner(job, peek, body);
    if started.is_err() {
        busy.store(false, Ordering::Release);
    }
    started
}

fn start_inner<T, F>(
    job: Job,
    peek: impl FnOnce(&mut Vec<usize>) -> Result<()> + Send + 'static,
    body: F,
) -> Result<(JoinHandle<Result<T>>, Arc<Shared>)>
where
    T: Send + 'static,
    F: FnOnce(&Job, &Shared, &[usize], usize) -> Result<T> + Send + 'static,
{
    let map = &job.map;
    let len = map.len();
    let batch = batch_bytes(len);
    let nbatches = len.div_ceil(batch);
    let batches = job.batches.clone();
    debug_assert_eq!(batches.states.len(), nbatches);
    for st in batches.states.iter() {
        st.store(PENDING, Ordering::Release);
    }
    let addr = map.as_ptr() as usize;
    let release_all = |batches: &BatchStates| {
        let r = map.protect(0, len, job.unprotect_to);
        for s in batches.states.iter() {
            s.store(COPIED, Ordering::Release);
            futex::wake_all(s);
        }
        r
    };
    let requests_before = batches.requests.load(Ordering::Acquire);
    let started = Instant::now();
    map.protect(0, len, Protection::Read).map_err(|source| {
        let _ = release_all(&batches);
        Error::Background {
            step: "mprotect(PROT_READ)",
            addr,
            len,
            source,
        }
    })?;
    // Everything else happens in the copier: the caller's pause is the
    // protection alone. Until the peek is done every batch stays protected, so
    // no write can change what it reports.
    let shared = Arc::new(Shared {
        copied: AtomicU64::new(0),
        total: AtomicU64::new(0),
        batches,
        requests_before,
        started,
        finished_ns: AtomicU64::new(0),
    });
    let thread_shared = shared.clone();
    let (map, unprotect_to) = (job.map.clone(), job.unprotect_to);
    let thread = std::thread::Builder::new()
        .name("pagesnap-copier".into())
        .spawn(move || {
            let mut dirty = Vec::new();
            let r = peek(&mut dirty)
                .and_then(|()| lift_clean(&job, &thread_shared, &mut dirty, batch))
                .and_then(|()| body(&job, &thread_shared, &dirty, batch));
            if r.is_err() {
                crate::live::release_all(&job, &thread_shared);
                thread_shared.finish();
            }
            job.busy.store(false, Ordering::Release);
            r
        })
        .map_err(|source| {
            // No copier: release the writers here.
            let _ = map.protect(0, len, unprotect_to);
            for s in shared.batches.states.iter() {
                s.store(COPIED, Ordering::Release);
                futex::wake_all(s);
            }
            Error::Background {
                step: "spawn copier thread",
                addr,
                len,
                source,
            }
        })?;
    Ok((thread, shared))
}

/// The copier's first step: sorts the dirty pages and makes the batches without
/// any writable again at once (their pages equal the sync point's).
fn lift_clean(job: &Job, shared: &Shared, dirty: &mut Vec<usize>, batch: usize) -> Result<()> {
    let (map, page) = (&*job.map, page_size());
    let len = map.len();
    let states = &shared.batches.states;
    if !dirty.windows(2).all(|w| w[0] < w[1]) {
        dirty.sort_unstable();
        dirty.dedup();
    }
    shared.total.store(dirty.len() as u64, Ordering::Relaxed);
    let pages_per_batch = batch / page;
    let mut has_dirty = vec![false; states.len()];
    for &p in dirty.iter() {
        has_dirty[p / pages_per_batch] = true;
    }
    let clean: Vec<usize> = (0..states.len()).filter(|&b| !has_dirty[b]).collect();
    for (first, n) in crate::track::runs(&clean) {
        let from = first * batch;
        let to = ((first + n) * batch).min(len);
        map.protect(from, to - from, job.unprotect_to)
            .map_err(|source| Error::Background {
                step: "mprotect (lift)",
                addr: map.as_ptr() as usize + from,
                len: to - from,
                source,
            })?;
        for s in &states[first..first + n] {
            s.store(COPIED, Ordering::Release);
            futex::wake_all(s);
        }
    }
    Ok(())
}

/// Claims batch `b` for copying: true if it was waiting (`PENDING` or
/// `REQUESTED`), false if it is already saved or clean.
pub(crate) fn claim(shared: &Shared, b: usize) -> bool {
    let s = &shared.batches.states[b];
    s.compare_exchange(PENDING, COPYING, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
        || s.compare_exchange(REQUESTED, COPYING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
}

/// Lifts the protection of claimed batch `b`, whose `pages` dirty pages are
/// saved, and wakes its writers.
pub(crate) fn lift(job: &Job, shared: &Shared, b: usize, batch: usize, pages: usize) -> Result<()> {
    let map = &*job.map;
    let s = &shared.batches.states[b];
    let from = b * batch;
    let to = (from + batch).min(map.len());
    let lifted = map.protect(from, to - from, job.unprotect_to);
    s.store(COPIED, Ordering::Release);
    futex::wake_all(s);
    shared.copied.fetch_add(pages as u64, Ordering::Relaxed);
    lifted.map_err(|source| Error::Background {
        step: "mprotect (lift)",
        addr: map.as_ptr() as usize + from,
        len: to - from,
        source,
    })
}

/// Runs `serve(b)` once for every batch. Order: first any batch a writer is
/// waiting for; then onward from the batches writers last waited for (writers
/// go in address order, so the copier runs ahead of each and spares it the next
/// fault), taking the cursors in turn; then address order. On an error, stops,
/// lifts all protection and wakes every writer — none is ever left parked — and
/// returns the error. Once every batch is served, checks that pagesnap's handler
/// was still installed: if another replaced it, a write after the instant may
/// have gone in unseen, and the result is an error. Records the copier's
/// finishing time either way.
pub(crate) fn drive(
    job: &Job,
    shared: &Shared,
    mut serve: impl FnMut(usize) -> Result<()>,
) -> Result<()> {
    /// Most writers followed at once.
    const CURSORS: usize = 16;
    let states = &shared.batches.states;
    let n = states.len();
    let mut done = vec![false; n];
    let mut left = n;
    let mut cursors: Vec<usize> = Vec::with_capacity(CURSORS);
    let mut turn = 0;
    let mut seen_requests = 0;
    let mut next = 0;
    let mut run = |b: usize, done: &mut [bool], left: &mut usize| -> Result<()> {
        done[b] = true;
        *left -= 1;
        serve(b)
    };
    let mut result = Ok(());
    while left > 0 && result.is_ok() {
        let requests = shared.batches.requests.load(Ordering::Acquire);
        if requests != seen_requests {
            seen_requests = requests;
            for b in 0..n {
                if !done[b] && states[b].load(Ordering::Acquire) == REQUESTED {
                    result = run(b, &mut done, &mut left);
                    if result.is_err() {
                        break;
                    }
                    // Follow this writer: replace the cursor that led here.
                    match cursors.iter().position(|&c| c == b) {
                        Some(i) => cursors[i] = b + 1,
                        None if cursors.len() < CURSORS => cursors.push(b + 1),
                        None => cursors[turn % CURSORS] = b + 1,
                    }
                }
            }
            continue;
        }
        cursors.retain(|&c| c < n && !done[c]);
        if !cursors.is_empty() {
            turn = (turn + 1) % cursors.len();
            let c = cursors[turn];
            cursors[turn] = c + 1;
            result = run(c, &mut done, &mut left);
            continue;
        }
        while next < n && done[next] {
            next += 1;
        }
        if next < n {
            result = run(next, &mut done, &mut left);
        }
    }
    if result.is_ok() {
        result = signal::check().map_err(Error::from);
    }
    if result.is_err() {
        release_all(job, shared);
    }
    shared.finish();
    result
}

/// The copier's batch buffer, or an error when memory is short.
pub(crate) fn batch_buffer(batch: usize) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    buf.try_reserve_exact(batch)
        .map_err(|_| Error::OutOfMemory {
            what: "the copier's batch buffer",
            bytes: batch,
        })?;
    buf.resize(batch, 0);
    Ok(buf)
}

/// Lifts all protection and wakes every writer.
fn release_all(job: &Job, shared: &Shared) {
    let _ = job.map.protect(0, job.map.len(), job.unprotect_to);
    for s in shared.batches.states.iter() {
        s.store(COPIED, Ordering::Release);
        futex::wake_all(s);
    }
}

/// The copier: saves every batch with dirty pages, writers' requests first.
fn copy(job: &Job, shared: &Shared, dirty: &[usize], batch: usize) -> Result<Snapshot> {
    let (map, page) = (&*job.map, page_size());
    let pages_per_batch = batch / page;
    let store = job.base.store().clone();
    // Dropped on an error, which hands the frames back.
    let mut changes = Staged::new(&store);
    changes
        .try_reserve(dirty.len() as u64)
        .map_err(|_| Error::OutOfMemory {
            what: "the background snapshot's list of changed pages",
            bytes: dirty.len() * 16,
        })?;
    let mut buf = batch_buffer(batch)?;
    let result = drive(job, shared, |b| {
        if !claim(shared, b) {
            return Ok(());
        }
        let lo = dirty.partition_point(|&p| p < b * pages_per_batch);
        let hi = dirty.partition_point(|&p| p < (b + 1) * pages_per_batch);
        let mine = &dirty[lo..hi];
        for (i, &p) in mine.iter().enumerate() {
            map.copy_out(p * page, &mut buf[i * page..(i + 1) * page]);
        }
        // Writers go on as soon as the bytes are out; hashing and dedup follow.
        let lifted = lift(job, shared, b, batch, mine.len());
        for (i, &p) in mine.iter().enumerate() {
            changes.add(p, &buf[i * page..(i + 1) * page])?;
        }
        lifted
    });
    result?;
    let tree = store.commit(job.base.tree(), changes);
    Ok(Snapshot::from_tree_at(
        tree,
        job.base.len(),
        job.map.as_ptr(),
    ))
}
