//! The copier core, shared by every sink: serves each batch of the region
//! once, whoever copied it, and hands its dirty pages to a [`Sink`].
//!
//! ```text
//!  loop until every batch is served:
//!    1. batches a writer waits for (REQUESTED; the pool was full):
//!       claim, copy from the region, lift, wake — then sink
//!    2. staged copies in the pool's own memory (a writer copied its batch
//!       into a slot): sink from the slot, free the slot, mark it COPIED
//!    3. staging memory faulted in ahead of the writers (`warm.rs`)
//!    4. the next batch in address order (or following a writer that waited):
//!       PENDING, mostly written, a lent slot free → stage it (and the mostly
//!       written ones after it, up to 2 MiB) into lent slots, lift — it
//!       comes back through 5; else PENDING → claim, copy, lift, sink;
//!       COPIED by the start (no dirty page) → sink it empty; a writer has
//!       it → it comes back through 2 or 5.
//!    5. no batch left to visit: sink the copies in lent slots (the
//!       snapshot's own pages: hashed where they lie) as they fill
//!  then: was pagesnap's SIGSEGV handler in place all along?
//! ```

use super::start::release_all;
use super::{Job, Shared};
use crate::error::{Error, Result};
use crate::sys::mmap::HUGE_PAGE;
use crate::sys::page_size;
use crate::sys::signal::{self, COPIED, DEFERRED, PENDING, REQUESTED};
use crate::sys::staging::{claim, FilledSlot, StagingPool, MAX_RUN};
use std::sync::atomic::Ordering;

/// Where a batch's pages go: the store (`store.rs`) or a file (`save.rs`).
pub(crate) trait Sink {
    /// Saves batch `b`, whose pages written since the sync point are `dirty`
    /// (sorted), with their bytes at the instant in `bytes` (page `i` of
    /// `dirty` at `i * page`). Called once per batch of the region, in any
    /// order; `dirty` is empty for a batch with nothing written.
    fn batch(&mut self, b: usize, dirty: &[usize], bytes: &[u8]) -> Result<()>;

    /// Keeps batch `b` where a writer staged it: in slot `slot` of a pool over
    /// memory this sink lent (page `first + i` of the region in the slot's
    /// page `i`). False if the sink lent no memory: the copier hands the
    /// bytes to [`batch`](Self::batch) instead.
    fn keep_staged(
        &mut self,
        _b: usize,
        _dirty: &[usize],
        _first: usize,
        _slot: usize,
    ) -> Result<bool> {
        Ok(false)
    }
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

/// Serves every batch once into `sink` (see the module docs). On an error,
/// stops, lifts all protection and wakes every writer — none is ever left
/// parked — and returns the error. Once every batch is served, checks that
/// pagesnap's handler was still installed: if another replaced it, a write
/// after the instant may have gone in unseen, and the result is an error.
/// Records the copier's finishing time either way.
pub(crate) fn drive(
    job: &Job,
    shared: &Shared,
    dirty: &[usize],
    batch: usize,
    pool: Option<&StagingPool>,
    sink: &mut impl Sink,
) -> Result<()> {
    let mut copier = Copier {
        job,
        shared,
        dirty,
        batch,
        pages_per_batch: batch / page_size(),
        buf: batch_buffer(batch)?,
        done: vec![false; shared.batches.states.len()],
        staged_here: vec![false; shared.batches.states.len()],
        left: shared.batches.states.len(),
        sink,
    };
    let mut result = copier.run(pool);
    if result.is_ok() {
        result = super::deferred::lift_rest(&job.map, &shared.batches, job.unprotect_to);
    }
    if result.is_ok() {
        result = signal::check().map_err(Error::from);
    }
    if result.is_err() {
        let _ = release_all(&job.map, job.unprotect_to, &shared.batches);
    }
    shared.finish();
    result
}

struct Copier<'a, S: Sink> {
    job: &'a Job,
    shared: &'a Shared,
    dirty: &'a [usize],
    batch: usize,
    pages_per_batch: usize,
    buf: Vec<u8>,
    /// Batches handed to the sink.
    done: Vec<bool>,
    /// Batches this copier staged itself (into lent slots), until it takes
    /// them back (their state says `COPIED` meanwhile, see
    /// [`StagingPool::stage_lent`]).
    staged_here: Vec<bool>,
    left: usize,
    sink: &'a mut S,
}

impl<S: Sink> Copier<'_, S> {
    fn run(&mut self, pool: Option<&StagingPool>) -> Result<()> {
        /// Most writers followed at once.
        const CURSORS: usize = 16;
        let states = &self.shared.batches.states;
        let n = states.len();
        let mut cursors: Vec<usize> = Vec::with_capacity(CURSORS);
        let mut turn = 0;
        let mut seen_requests = 0;
        let mut next = 0;
        while self.left > 0 {
            // 1. Writers waiting (the pool was full, or there is none).
            let requests = self.shared.batches.requests.load(Ordering::Acquire);
            if requests != seen_requests {
                seen_requests = requests;
                for b in 0..n {
                    if !self.done[b]
                        && states[b].load(Ordering::Acquire) == REQUESTED
                        && self.direct(b)?
                    {
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
            // 2. Staged copies in the pool's own memory: free their slots for
            //    the next writers. (Copies in lent memory are the snapshot's
            //    own pages already: their hashing waits until every batch is
            //    out of the writers' way, below.)
            if let Some(slot) = pool.and_then(|p| p.take_filled_own()) {
                self.staged(slot)?;
                continue;
            }
            // 3. Fresh staging memory ahead of the writers, faulted in here.
            if pool.is_some_and(|p| p.warm_ahead()) {
                continue;
            }
            // 4. Ahead of the writers that waited, then address order.
            cursors.retain(|&c| c < n && !self.done[c]);
            let b = if !cursors.is_empty() {
                turn = (turn + 1) % cursors.len();
                let c = cursors[turn];
                cursors[turn] = c + 1;
                Some(c)
            } else {
                while next < n
                    && (self.done[next] || self.staged_here[next] || self.with_writer(next))
                {
                    next += 1;
                }
                (next < n).then_some(next)
            };
            match b {
                Some(b) => self.in_order(b, pool)?,
                // 5. Every batch is out of the writers' way: hash what is staged.
                None => match pool.and_then(|p| p.take_filled()) {
                    Some(slot) => self.staged(slot)?,
                    // Every batch left is with a writer, copying it into a slot.
                    None => std::thread::yield_now(),
                },
            }
        }
        Ok(())
    }

    /// Batch `b` in its turn: copied here if nobody has it; sunk empty if the
    /// start lifted it (nothing written since the sync point); left alone if
    /// a writer has it (it comes back staged).
    fn in_order(&mut self, b: usize, pool: Option<&StagingPool>) -> Result<()> {
        if self.staged_here[b] {
            // Staged here, `COPIED` to the handler: it comes back through
            // `staged`.
            return Ok(());
        }
        if let Some(pool) = pool.filter(|p| p.has_lent()) {
            if self.stage_run(b, pool) {
                return Ok(());
            }
        }
        // Lifted at the start (or left protected there, at the limit of
        // mappings): nothing was written since the sync point.
        if !self.direct(b)?
            && matches!(
                self.shared.batches.states[b].load(Ordering::Acquire),
                COPIED | DEFERRED
            )
        {
            self.serve(b, &[])?;
        }
        Ok(())
    }

    /// Stages batch `b`, if mostly written, and the mostly written waiting
    /// batches after it (up to a huge page in all) into lent slots, as a writer
    /// would: one copy each, straight into store frames, and one `mprotect`
    /// for the run; they come back through [`staged`](Self::staged) once
    /// every batch is served. (Copying a batch here, then into the store,
    /// would read and write its pages twice, and keep the writers out of it
    /// until it is hashed too.) False if it did not.
    fn stage_run(&mut self, b: usize, pool: &StagingPool) -> bool {
        let states = &self.shared.batches.states;
        let dense = |c: usize| {
            let (lo, hi) = self.range(c);
            2 * (hi - lo) >= self.pages_per_batch
        };
        // Up to a huge page per call, as a writer's run: a writer that
        // faults on a batch of the run waits for all of it.
        let most = (HUGE_PAGE / self.batch).clamp(1, MAX_RUN);
        let run = (b..states.len().min(b + most))
            .take_while(|&c| {
                !self.done[c] && states[c].load(Ordering::Acquire) == PENDING && dense(c)
            })
            .count();
        if run == 0 {
            return false;
        }
        let at = (&*self.job.map, self.batch);
        let staged = pool.stage_lent(&self.shared.batches, b, at, run - 1);
        self.staged_here[b..b + staged].fill(true);
        staged > 0
    }

    /// Whether a writer has claimed batch `b` (not done) to stage it.
    fn with_writer(&self, b: usize) -> bool {
        use crate::sys::signal::{COPYING, STAGED};
        matches!(
            self.shared.batches.states[b].load(Ordering::Acquire),
            COPYING | STAGED
        )
    }

    /// Batch `b`'s dirty pages, as a range of `self.dirty`.
    fn range(&self, b: usize) -> (usize, usize) {
        let first = b * self.pages_per_batch;
        let lo = self.dirty.partition_point(|&p| p < first);
        let hi = self
            .dirty
            .partition_point(|&p| p < first + self.pages_per_batch);
        (lo, hi)
    }

    /// Claims batch `b` and copies it from the region (it is still protected),
    /// lifts it and wakes its writers, then sinks it. False if someone else
    /// has it or it is saved already.
    fn direct(&mut self, b: usize) -> Result<bool> {
        let states = &self.shared.batches.states;
        if self.done[b] || !claim(&states[b]) {
            return Ok(false);
        }
        let (map, page) = (&*self.job.map, page_size());
        let (lo, hi) = self.range(b);
        let dirty = self.dirty;
        let mine = &dirty[lo..hi];
        for (i, &p) in mine.iter().enumerate() {
            map.copy_out(p * page, &mut self.buf[i * page..(i + 1) * page]);
        }
        // Writers go on as soon as the bytes are out; the sink follows.
        let batches = &self.shared.batches;
        let to = self.job.unprotect_to;
        super::deferred::lift(map, batches, self.batch, (b, b + 1), to)?;
        let buf = std::mem::take(&mut self.buf);
        let r = self.serve(b, &buf[..mine.len() * page]);
        self.buf = buf;
        r.map(|()| true)
    }

    /// Sinks a writer's staged copy and frees its slot.
    fn staged(&mut self, slot: FilledSlot<'_>) -> Result<()> {
        let b = slot.batch();
        let page = page_size();
        let (lo, hi) = self.range(b);
        let dirty = self.dirty;
        let mine = &dirty[lo..hi];
        let first = b * self.pages_per_batch;
        let contiguous =
            mine.first() == Some(&first) && mine.last() == Some(&(first + mine.len() - 1));
        let kept = self.sink.keep_staged(b, mine, first, slot.slot());
        let r = match (kept, slot.bytes()) {
            (Ok(false), Some(bytes)) if mine.is_empty() || contiguous => {
                self.serve(b, &bytes[..mine.len() * page])
            }
            (Ok(false), Some(bytes)) => {
                // Gather the dirty pages out of the batch's copy.
                let mut buf = std::mem::take(&mut self.buf);
                for (i, &p) in mine.iter().enumerate() {
                    let at = (p - first) * page;
                    buf[i * page..(i + 1) * page].copy_from_slice(&bytes[at..at + page]);
                }
                let r = self.serve(b, &buf[..mine.len() * page]);
                self.buf = buf;
                r
            }
            (Ok(false), None) => Err(Error::Background {
                step: "staging pool (lent pages not kept by their lender)",
                addr: self.job.map.as_ptr() as usize + b * self.batch,
                len: self.batch,
                source: std::io::Error::from_raw_os_error(libc::EINVAL),
            }),
            (kept, _) => {
                self.count(b);
                kept.map(drop)
            }
        };
        drop(slot);
        if !std::mem::take(&mut self.staged_here[b]) {
            self.shared.staged.fetch_add(1, Ordering::Relaxed);
        }
        self.shared.batches.states[b].store(COPIED, Ordering::Release);
        r
    }

    /// Hands batch `b` to the sink and counts it done.
    fn serve(&mut self, b: usize, bytes: &[u8]) -> Result<()> {
        let (lo, hi) = self.range(b);
        let dirty = self.dirty;
        self.count(b);
        self.sink.batch(b, &dirty[lo..hi], bytes)
    }

    /// Counts batch `b` done, with its dirty pages copied.
    fn count(&mut self, b: usize) {
        let (lo, hi) = self.range(b);
        self.done[b] = true;
        self.left -= 1;
        self.shared
            .copied
            .fetch_add((hi - lo) as u64, Ordering::Relaxed);
    }
}
