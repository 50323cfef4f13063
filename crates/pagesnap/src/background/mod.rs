//! Background snapshots: a consistent point-in-time copy while writers keep
//! running — the `fork()` replacement.
//!
//! ```text
//!  background_snapshot():  map the staging pool
//!                          mprotect(region, PROT_READ)          ◄── the instant
//!                          spawn the copier; return      (the pause ends here)
//!  copier, first:          dirty = pages written since the sync point (peek:
//!                          exact, since no batch has been lifted yet); batches
//!                          without dirty pages: writable again at once; then
//!                          publish the staging pool to the SIGSEGV handler
//!  writer touching a batch not yet copied: SIGSEGV → in the handler, claims
//!                          the batch (PENDING → COPYING), memcpy's it into a
//!                          free staging slot, lifts its protection, marks it
//!                          STAGED and retries its write: no waiting for anyone.
//!                          Pool full: marks it REQUESTED and sleeps on a futex
//!                          until a copier has saved it (COPIED).
//!                          (Before the pool is published, writers wait.)
//!  copier thread (drive.rs): every batch once: those writers wait for
//!                          first, then staged copies (freeing their slots),
//!                          then the rest in address order (claimed with the
//!                          same CAS, copied into the copier's buffer, lifted).
//!                          Each batch's dirty pages then go to the sink: the
//!                          store (store.rs: hashed, deduplicated) or a file
//!                          (save.rs) — off the writers' path either way.
//! ```
//!
//! Only pages written since the region's last sync point are saved: the others
//! equal the sync point's snapshot, which the store already holds. Protection and
//! service work in batches ([`batch_bytes`]: 64 KiB up to one 2 MiB huge page):
//! one fault per batch instead of one per page, and a writer's copy is one
//! memcpy per batch — copy-on-write as fork does it, at batch granularity and
//! without copying page tables. A writer going through memory in order stages
//! the batches ahead of it in the same fault, up to a huge page.
//!
//! Extra memory: the staging pool ([`Progress::staging_bytes`], mapped at the
//! start and filled as writers use it), the copier's batch buffer, and what the
//! sink keeps. A snapshot into a store that holds free frames stages into
//! those (`store.rs`): a staged batch is then the snapshot's own copy, kept
//! where it lies, and the pool costs no memory of its own.
//!
//! The dirty tracker underneath is never disarmed: mprotect leaves userfaultfd-wp
//! and soft-dirty bits alone, so the next `snapshot()` still sees every write made
//! before, during and after the background snapshot.

mod deferred;
mod drive;
pub(crate) mod save;
mod start;
mod store;

pub use save::{BackgroundSave, BackgroundSaveReport};

use crate::error::{Error, Result};
use crate::fork::Owner;
use crate::snapshot::Snapshot;
use crate::sys::mmap::{Mapping, Protection, HUGE_PAGE};
use crate::sys::page_size;
use crate::sys::signal::{self, BatchStates, COPIED};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub(crate) use start::{start_with, BesidePool};

/// How far a background snapshot has come, from [`Background::progress`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Progress {
    /// Pages saved so far.
    pub copied: u64,
    /// Pages to save in all (those written since the region's last sync point).
    pub total: u64,
    /// Batches that writers had to wait for (the staging pool was full).
    pub faults: u64,
    /// Batches writers copied themselves into the staging pool and went on.
    pub staged: u64,
    /// Bytes of the staging pool (mapped at the start, filled as writers use
    /// it): its own memory (extra memory, at most) and the store's free
    /// frames lent to it, if any (no extra memory).
    pub staging_bytes: u64,
    /// Most bytes staged at once so far.
    pub staging_peak_bytes: u64,
    /// Time writers spent held up by the snapshot, all writers together:
    /// copying their batch into the staging pool, or waiting for the copier.
    /// A writer's time is added as it leaves the fault handler, so one still
    /// leaving when the copy completes may be missing from the final figure.
    pub writers_waited: Duration,
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
    /// Batches writers had to wait for (the staging pool was full).
    pub faults: u64,
    /// Batches writers copied themselves into the staging pool and went on.
    pub staged: u64,
    /// Bytes of the staging pool: its own memory (extra memory, at most) and
    /// the store's free frames lent to it, if any (no extra memory: the
    /// snapshot keeps what writers staged there, the rest goes back).
    pub staging_bytes: u64,
    /// Most bytes staged at once.
    pub staging_peak_bytes: u64,
    /// Time writers spent held up by the snapshot, all writers together:
    /// copying their batch into the staging pool, or waiting for the copier.
    pub writers_waited: Duration,
}

pub(crate) struct Shared {
    pub(crate) copied: AtomicU64,
    pub(crate) total: AtomicU64,
    pub(crate) staged: AtomicU64,
    pub(crate) staging_peak: AtomicU64,
    pub(crate) staging_bytes: AtomicU64,
    pub(crate) batches: Arc<BatchStates>,
    /// `batches.requests` before this run protected anything: the counter lives
    /// as long as the region, a run's faults are what it added.
    requests_before: usize,
    /// `batches.waited_ns` likewise.
    pub(crate) waited_before: u64,
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
            staged: self.staged.load(Ordering::Relaxed),
            staging_bytes: self.staging_bytes.load(Ordering::Relaxed),
            staging_peak_bytes: self.staging_peak.load(Ordering::Relaxed),
            writers_waited: Duration::from_nanos(
                self.batches
                    .waited_ns
                    .load(Ordering::Relaxed)
                    .wrapping_sub(self.waited_before),
            ),
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
            staged: p.staged,
            staging_bytes: p.staging_bytes,
            staging_peak_bytes: p.staging_peak_bytes,
            writers_waited: p.writers_waited,
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
    /// Bytes per batch ([`batch_bytes`]).
    pub(crate) batch: usize,
    /// Bytes of staging memory for writers' own copies (rounded down to whole
    /// batches; 0: writers always wait for the copier). None: the default of
    /// the mode ([`STAGING_SNAPSHOT`], [`STAGING_SAVE`]).
    pub(crate) staging: Option<usize>,
}

/// Bytes per batch, the unit a faulting writer copies and unprotects: one
/// huge page under huge pages (a smaller mprotect would split it); otherwise
/// the smallest power of two from 64 KiB that keeps the region within
/// [`MAX_BATCHES`], up to one huge page. A writer pays for the whole batch it
/// lands in, so small batches spare a random writer (a B-tree, a hash table)
/// most of the copying, while a writer going through memory in order stages
/// the batches ahead of it in the same call, up to a huge page at a time. The
/// cap bounds the mappings the unprotected islands split the region into (each
/// is one more VMA; the kernel allows 65530 by default) and the copier's
/// per-batch work.
pub(crate) fn batch_bytes(len: usize, huge: bool) -> usize {
    let batch = if huge {
        HUGE_PAGE
    } else {
        (len / MAX_BATCHES)
            .next_power_of_two()
            .clamp(MIN_BATCH, HUGE_PAGE)
    };
    batch.min(len)
}

/// The smallest batch (see [`batch_bytes`]).
const MIN_BATCH: usize = 64 << 10;
/// The most batches a region is cut into unless its batches are one huge page
/// each (see [`batch_bytes`]).
const MAX_BATCHES: usize = 4096;

/// Default staging of a background snapshot into the store when it has its
/// own pool, as a divisor of the region's size: half of it (a pool that
/// rarely fills keeps writers from ever waiting). When the store lends free
/// frames instead (`store.rs`), the default is the whole region: what a
/// writer stages there is the snapshot's own copy, not extra memory.
pub(crate) const STAGING_SNAPSHOT: usize = 2;
/// Default staging of a background save, as a divisor: an eighth of the
/// region (a save otherwise keeps next to nothing in memory, and a bigger pool
/// did not spare writers more: measured at 1 GiB with 2 writers, 128 MiB and
/// 256 MiB slowed them alike).
pub(crate) const STAGING_SAVE: usize = 8;

/// The job's staging bytes, or `len / divisor` (at least one batch) by default.
pub(crate) fn staging_or(job: &Job, divisor: usize) -> usize {
    let len = job.map.len();
    job.staging
        .unwrap_or_else(|| (len / divisor).max(job.batch))
}

/// A region's registration with the handler's background table.
pub(crate) struct LiveSlot {
    pub(crate) batches: Arc<BatchStates>,
    /// Bytes per batch.
    pub(crate) batch: usize,
    _slot: signal::BackgroundSlot,
}

impl LiveSlot {
    /// Registers `map` (all batches `COPIED`: writes go ahead), cut into
    /// batches of [`batch_bytes`].
    pub(crate) fn register(map: &Mapping, huge: bool) -> Result<LiveSlot> {
        let (addr, len) = (map.as_ptr() as usize, map.len());
        let batch = batch_bytes(len, huge);
        let batches = Arc::new(BatchStates::new(len.div_ceil(batch), COPIED));
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
            batch,
            _slot: slot,
        })
    }
}

/// Protects the region and starts the copier, which saves into the store.
/// `peek` reports the pages written since the sync point; the copier calls it
/// first, while every batch it has not lifted is still protected, so it is
/// exact and stays out of the caller's pause.
pub(crate) fn start(
    job: Job,
    peek: impl FnOnce(&mut Vec<usize>) -> Result<()> + Send + 'static,
) -> Result<Background> {
    let (thread, shared) = start_with(job, store::staging, peek, store::save)?;
    Ok(Background {
        thread: Some(thread),
        shared,
        owner: Owner::here(),
    })
}
