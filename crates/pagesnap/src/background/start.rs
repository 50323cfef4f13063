//! Starting a background snapshot: the staging pool, the instant of
//! protection, the copier thread, and lifting the batches with nothing to save.

use super::{Job, Shared};
use crate::error::{Error, Result};
use crate::protection::{own_protection, Look};
use crate::sys::mmap::{Mapping, Protection};
use crate::sys::page_size;
use crate::sys::signal::{self, BatchStates, COPIED, PENDING};
use crate::sys::staging::{claim, StagingPool};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

/// What a mode keeps beside its staging pool (see [`start_with`]). Once the
/// copier knows the pages to save, and before any writer may stage, it may
/// give the pool a new shape for them.
pub(crate) trait BesidePool: Send + 'static {
    /// The pool writers will use, given the one prepared and `dirty` (sorted).
    fn refine(
        &mut self,
        _job: &Job,
        _dirty: &[usize],
        pool: Option<StagingPool>,
    ) -> Option<StagingPool> {
        pool
    }
}

impl BesidePool for () {}

/// Protects the region and starts a copier running `body`, which is given the
/// job, the shared state, the dirty pages (sorted), the batch size, the
/// staging pool and what `prepare` made beside it (the memory lent to the
/// pool: dropped only once the pool is withdrawn and no writer is inside it),
/// and must serve every batch (see [`drive`](super::drive::drive)). `prepare`
/// maps the staging pool before the instant (a failure is reported with
/// nothing protected yet), and only once the start is not refused; `X` may
/// reshape it once the dirty pages are known ([`BesidePool::refine`]).
pub(crate) fn start_with<T, X, F>(
    job: Job,
    prepare: impl FnOnce(&Job) -> Result<(Option<StagingPool>, X)>,
    peek: impl FnOnce(&mut Vec<usize>) -> Result<()> + Send + 'static,
    body: F,
) -> Result<(JoinHandle<Result<T>>, Arc<Shared>)>
where
    T: Send + 'static,
    X: BesidePool,
    F: FnOnce(&Job, &Shared, &[usize], usize, Option<&StagingPool>, &mut X) -> Result<T>
        + Send
        + 'static,
{
    if job.busy.swap(true, Ordering::AcqRel) {
        return Err(Error::BackgroundBusy);
    }
    // Writers must fault into pagesnap's handler to stage or wait for their batch.
    if let Err(replaced) = signal::check() {
        job.busy.store(false, Ordering::Release);
        return Err(replaced.into());
    }
    // ... and a writer that blocks SIGSEGV would kill the process instead;
    // a protection the program set would be replaced by ours.
    let mprotect = job.unprotect_to == Protection::Read;
    let checked = signal::no_thread_blocks_sigsegv()
        .map_err(Error::from)
        .and_then(|()| own_protection(&job.map, mprotect, Look::Always));
    if let Err(e) = checked {
        job.busy.store(false, Ordering::Release);
        return Err(e);
    }
    let busy = job.busy.clone();
    let started = prepare(&job).and_then(|(pool, extra)| start_inner(job, pool, extra, peek, body));
    if started.is_err() {
        busy.store(false, Ordering::Release);
    }
    started
}

/// A staging pool of its own for the job (`bytes` in whole batches; none for
/// less than one), mapped before the instant so that a failure is reported
/// with nothing protected yet.
pub(crate) fn own_pool(job: &Job, bytes: usize) -> Result<Option<StagingPool>> {
    let slots = bytes / job.batch;
    if slots == 0 {
        return Ok(None);
    }
    StagingPool::new(slots, job.batch, job.unprotect_to)
        .map(Some)
        .map_err(|source| Error::Background {
            step: "mmap (staging pool)",
            addr: job.map.as_ptr() as usize,
            len: slots * job.batch,
            source,
        })
}

/// Makes every batch writable again (as it was before) and `COPIED`, and
/// wakes every writer: after an error, or when there is no copier.
pub(crate) fn release_all(
    map: &Mapping,
    unprotect_to: Protection,
    batches: &BatchStates,
) -> std::io::Result<()> {
    let r = map.protect(0, map.len(), unprotect_to);
    for s in batches.states.iter() {
        s.store(COPIED, Ordering::Release);
    }
    batches.wake(0..batches.states.len());
    r
}

fn start_inner<T, X, F>(
    job: Job,
    pool: Option<StagingPool>,
    extra: X,
    peek: impl FnOnce(&mut Vec<usize>) -> Result<()> + Send + 'static,
    body: F,
) -> Result<(JoinHandle<Result<T>>, Arc<Shared>)>
where
    T: Send + 'static,
    X: BesidePool,
    F: FnOnce(&Job, &Shared, &[usize], usize, Option<&StagingPool>, &mut X) -> Result<T>
        + Send
        + 'static,
{
    let map = &job.map;
    let len = map.len();
    let addr = map.as_ptr() as usize;
    let batch = job.batch;
    let batches = job.batches.clone();
    debug_assert_eq!(batches.states.len(), len.div_ceil(batch));
    // Published to the handler only once the peek is done.
    for st in batches.states.iter() {
        st.store(PENDING, Ordering::Release);
    }
    // A tracker lift a handler decided before must land before the
    // protection, not after it.
    batches.wait_tracker_lifts();
    let requests_before = batches.requests.load(Ordering::Acquire);
    let waited_before = batches.waited_ns.load(Ordering::Acquire);
    let started = Instant::now();
    map.protect(0, len, Protection::Read).map_err(|source| {
        let _ = release_all(map, job.unprotect_to, &batches);
        Error::Background {
            step: "mprotect(PROT_READ)",
            addr,
            len,
            source,
        }
    })?;
    // Everything else happens in the copier: the caller's pause is the
    // protection alone.
    let shared = Arc::new(Shared {
        copied: AtomicU64::new(0),
        total: AtomicU64::new(0),
        staged: AtomicU64::new(0),
        staging_peak: AtomicU64::new(0),
        staging_bytes: AtomicU64::new(pool.as_ref().map_or(0, |p| p.bytes() as u64)),
        batches,
        requests_before,
        waited_before,
        started,
        finished_ns: AtomicU64::new(0),
    });
    let thread_shared = shared.clone();
    let (map, unprotect_to) = (job.map.clone(), job.unprotect_to);
    let thread = crate::sys::thread::spawn("pagesnap-copier", move || {
        let shared = &thread_shared;
        let mut extra = extra;
        let mut dirty = Vec::new();
        // The peek runs while every batch is still protected (writers that
        // fault meanwhile wait), so what it sees and leaves behind in the
        // tracker is exact; only then may writers lift batches themselves.
        let mut published = None;
        // A panic (a bug) must not leave writers parked on protected
        // batches: it fails the snapshot like any error, and they go on.
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            peek(&mut dirty)
                .and_then(|()| lift_clean(&job, shared, &mut dirty, batch))
                .and_then(|()| {
                    let pool = extra.refine(&job, &dirty, pool);
                    let bytes = pool.as_ref().map_or(0, |p| p.bytes() as u64);
                    shared.staging_bytes.store(bytes, Ordering::Relaxed);
                    published = pool.map(|p| shared.batches.publish(Arc::new(p)));
                    body(
                        &job,
                        shared,
                        &dirty,
                        batch,
                        published.as_ref().map(|p| p.pool()),
                        &mut extra,
                    )
                })
        }))
        .unwrap_or_else(|_| {
            Err(Error::Background {
                step: "copier (it panicked)",
                addr,
                len,
                source: std::io::Error::other("the copier thread panicked"),
            })
        });
        if r.is_err() {
            let _ = release_all(&job.map, job.unprotect_to, &shared.batches);
            shared.finish();
        }
        if let Some(p) = published.as_ref().map(|p| p.pool()) {
            shared
                .staging_peak
                .store(p.peak_bytes() as u64, Ordering::Relaxed);
        }
        // Withdraw the pool (waiting out any writer still inside it) and
        // unmap it before the caller learns that the copy is done; only
        // then may memory lent to it go back to its owner.
        drop(published);
        drop(extra);
        job.busy.store(false, Ordering::Release);
        r
    })
    .map_err(|source| {
        // No copier: release the writers here (the pool went with the
        // closure, withdrawn).
        let _ = release_all(&map, unprotect_to, &shared.batches);
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
    let clean: Vec<usize> = (0..states.len())
        .filter(|&b| !has_dirty[b] && claim(&states[b]))
        .collect();
    for (first, n) in crate::track::runs(&clean) {
        super::deferred::lift(
            map,
            &shared.batches,
            batch,
            (first, first + n),
            job.unprotect_to,
        )?;
    }
    Ok(())
}
