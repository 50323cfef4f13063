//! Background snapshots: a consistent point-in-time copy while writers keep
//! running — the `fork()` replacement.
//!
//! ```text
//!  background_snapshot():  register batch states with the SIGSEGV handler
//!                          mprotect(region, PROT_READ)          ◄── the instant
//!                          dirty = pages written since the sync point (peek)
//!                          batches without dirty pages: writable again at once
//!                          spawn the copier; return
//!  copier thread:          batches in address order, but any batch a writer is
//!                          parked on first: copy its dirty pages into the store,
//!                          lift the protection, wake the writers
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
use crate::snapshot::Snapshot;
use crate::store::frames::FrameId;
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
pub struct Background {
    thread: Option<JoinHandle<Result<Snapshot>>>,
    shared: Arc<Shared>,
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

struct Shared {
    copied: AtomicU64,
    total: u64,
    batches: Arc<BatchStates>,
    started: Instant,
    finished_ns: AtomicU64,
}

impl Background {
    /// Pages copied so far, of how many.
    pub fn progress(&self) -> Progress {
        Progress {
            copied: self.shared.copied.load(Ordering::Relaxed),
            total: self.shared.total,
            faults: self.shared.batches.requests.load(Ordering::Relaxed) as u64,
        }
    }

    /// Whether the copier has finished.
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Waits for the copy to finish: the snapshot of the region at the instant of
    /// protection, in the region's store, deduplicated like any other.
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
            duration: Duration::from_nanos(self.shared.finished_ns.load(Ordering::Relaxed)),
            faults: p.faults,
        };
        Ok((snap, report))
    }

    fn join(&mut self) -> Result<Snapshot> {
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
            let _ = t.join();
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
/// since the sync point (called after the protection, so it is exact).
pub(crate) fn start(
    job: Job,
    peek: impl FnOnce(&mut Vec<usize>) -> Result<()>,
) -> Result<Background> {
    if job.busy.swap(true, Ordering::AcqRel) {
        return Err(Error::BackgroundBusy);
    }
    let busy = job.busy.clone();
    let started = start_inner(job, peek);
    if started.is_err() {
        busy.store(false, Ordering::Release);
    }
    started
}

fn start_inner(job: Job, peek: impl FnOnce(&mut Vec<usize>) -> Result<()>) -> Result<Background> {
    let map = &job.map;
    let (len, page) = (map.len(), page_size());
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
    let mut dirty = Vec::new();
    if let Err(e) = peek(&mut dirty) {
        let _ = release_all(&batches);
        return Err(e);
    }
    dirty.sort_unstable();
    dirty.dedup();
    // Batches with nothing written since the sync point need no copy.
    let pages_per_batch = batch / page;
    let mut has_dirty = vec![false; nbatches];
    for &p in &dirty {
        has_dirty[p / pages_per_batch] = true;
    }
    let clean: Vec<usize> = (0..nbatches).filter(|&b| !has_dirty[b]).collect();
    for (first, n) in crate::track::runs(&clean) {
        let from = first * batch;
        let to = ((first + n) * batch).min(len);
        if let Err(source) = map.protect(from, to - from, job.unprotect_to) {
            let _ = release_all(&batches);
            return Err(Error::Background {
                step: "mprotect (lift)",
                addr: addr + from,
                len: to - from,
                source,
            });
        }
        for s in &batches.states[first..first + n] {
            s.store(COPIED, Ordering::Release);
            futex::wake_all(s);
        }
    }
    let shared = Arc::new(Shared {
        copied: AtomicU64::new(0),
        total: dirty.len() as u64,
        batches,
        started,
        finished_ns: AtomicU64::new(0),
    });
    let thread_shared = shared.clone();
    let thread = std::thread::Builder::new()
        .name("pagesnap-copier".into())
        .spawn(move || {
            let r = copy(&job, &thread_shared, &dirty, batch);
            job.busy.store(false, Ordering::Release);
            r
        })
        .map_err(|source| Error::Background {
            step: "spawn copier thread",
            addr,
            len,
            source,
        })?;
    Ok(Background {
        thread: Some(thread),
        shared,
    })
}

/// The copier: saves every batch with dirty pages, writers' requests first.
fn copy(job: &Job, shared: &Shared, dirty: &[usize], batch: usize) -> Result<Snapshot> {
    let (map, page) = (&*job.map, page_size());
    let states = &shared.batches.states;
    let pages_per_batch = batch / page;
    let store = job.base.store().clone();
    let mut changes: Vec<(usize, FrameId)> = Vec::with_capacity(dirty.len());
    let mut buf = vec![0u8; batch];
    let mut seen_requests = 0;
    let mut next = 0;
    let mut serve = |b: usize, changes: &mut Vec<(usize, FrameId)>| -> Result<()> {
        let s = &states[b];
        let claimed = s
            .compare_exchange(PENDING, COPYING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
            || s.compare_exchange(REQUESTED, COPYING, Ordering::AcqRel, Ordering::Acquire)
                .is_ok();
        if !claimed {
            return Ok(());
        }
        let lo = dirty.partition_point(|&p| p < b * pages_per_batch);
        let hi = dirty.partition_point(|&p| p < (b + 1) * pages_per_batch);
        let mine = &dirty[lo..hi];
        for (i, &p) in mine.iter().enumerate() {
            map.copy_out(p * page, &mut buf[i * page..(i + 1) * page]);
        }
        {
            let mut st = store.lock();
            for (i, &p) in mine.iter().enumerate() {
                changes.push((p, st.frames.insert(&buf[i * page..(i + 1) * page])));
            }
        }
        let from = b * batch;
        let to = (from + batch).min(map.len());
        let lifted = map.protect(from, to - from, job.unprotect_to);
        s.store(COPIED, Ordering::Release);
        futex::wake_all(s);
        shared
            .copied
            .fetch_add(mine.len() as u64, Ordering::Relaxed);
        lifted.map_err(|source| Error::Background {
            step: "mprotect (lift)",
            addr: map.as_ptr() as usize + from,
            len: to - from,
            source,
        })
    };
    let mut result = Ok(());
    while next < states.len() {
        let requests = shared.batches.requests.load(Ordering::Acquire);
        if requests != seen_requests {
            seen_requests = requests;
            for b in 0..states.len() {
                if states[b].load(Ordering::Acquire) == REQUESTED {
                    result = result.and(serve(b, &mut changes));
                }
            }
        }
        result = result.and(serve(next, &mut changes));
        next += 1;
        if result.is_err() {
            break;
        }
    }
    if result.is_err() {
        // Never leave a writer parked: lift everything and wake everyone.
        let _ = map.protect(0, map.len(), job.unprotect_to);
        for s in states.iter() {
            s.store(COPIED, Ordering::Release);
            futex::wake_all(s);
        }
    }
    shared.finished_ns.store(
        shared.started.elapsed().as_nanos() as u64,
        Ordering::Relaxed,
    );
    if let Err(e) = result {
        // Hand the frames back before reporting the failure.
        let mut st = store.lock();
        for (_, id) in changes {
            st.frames.release(id);
        }
        return Err(e);
    }
    changes.sort_unstable_by_key(|c| c.0);
    let tree = job.base.tree().with_changes(&mut store.lock(), &changes);
    Ok(Snapshot::from_tree(tree, job.base.len()))
}
