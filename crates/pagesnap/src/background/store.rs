//! The store sink: a background snapshot's pages hashed and deduplicated into
//! the region's store, then committed as a snapshot on the sync point's tree.

use super::drive::{drive, Sink};
use super::{BesidePool, Job, Shared};
use crate::error::{Error, Result};
use crate::snapshot::Snapshot;
use crate::store::{LentFrames, Staged, TableCost};
use crate::sys::page_size;
use crate::sys::staging::StagingPool;

/// Pages taken into the store as the copier goes (handed back on an error).
struct StoreSink<'a> {
    changes: Staged,
    /// The store frames writers stage into, if any.
    lent: Option<&'a mut LentFrames>,
    /// The pool over them.
    pool: Option<&'a StagingPool>,
    /// Batches with written pages not yet saved: the most lent slots still
    /// of use (a batch with nothing written never takes a slot: the start
    /// made it writable again).
    left: usize,
}

impl Sink for StoreSink<'_> {
    fn batch(&mut self, _b: usize, dirty: &[usize], bytes: &[u8]) -> Result<()> {
        let page = page_size();
        if dirty.is_empty() {
            return Ok(());
        }
        // A batch the copier saves itself needs no staging slot: a lent slot
        // past those the batches left may need goes back, and its frames take
        // this batch's pages instead of fresh memory (while the free frames
        // all sit lent).
        self.left = self.left.saturating_sub(1);
        if let (Some(lent), Some(pool)) = (self.lent.as_deref_mut(), self.pool) {
            if let Some(slot) = pool.retire_lent(self.left) {
                lent.give_back(slot);
            }
        }
        for (&p, bytes) in dirty.iter().zip(bytes.chunks_exact(page)) {
            self.changes.add(p, bytes)?;
        }
        Ok(())
    }

    fn keep_staged(
        &mut self,
        _b: usize,
        dirty: &[usize],
        first: usize,
        slot: usize,
    ) -> Result<bool> {
        // Slots past the lent ones are the pool's own memory: copied as usual.
        let Some(lent) = self.lent.as_mut().filter(|l| slot < l.slots()) else {
            return Ok(false);
        };
        let keep = dirty.iter().map(|&p| (p, p - first));
        self.left = self.left.saturating_sub(1);
        lent.settle(slot, keep, &mut self.changes)?;
        Ok(true)
    }
}

/// The staging pool of a background snapshot into the store. Where the store
/// has free frames (memory of snapshots dropped since), it lends them: a batch
/// a writer stages there is saved where it lies (the copier publishes it: no
/// second copy, no second home in memory, no fresh memory to fault in). Else
/// the pool has memory of its own, reused as the copier saves its slots; and
/// once the pages to save are known, new store frames may join the lent ones
/// ([`BesidePool::refine`]).
pub(super) fn staging(job: &Job) -> Result<(Option<StagingPool>, Option<LentFrames>)> {
    let (page, batch) = (page_size(), job.batch);
    let region_slots = job.map.len().div_ceil(batch);
    // Asked for: that many slots, reused as the copier drains them; lent
    // slots (each used once, as many as the region has batches at most) come
    // first. By default: a slot per batch where the store has the frames,
    // else what it has and half the region's own.
    let (want, own_default) = match job.staging {
        Some(bytes) => (bytes / batch, bytes / batch),
        None => (
            region_slots,
            super::staging_or(job, super::STAGING_SNAPSHOT) / batch,
        ),
    };
    if want == 0 {
        return Ok((None, None));
    }
    if let Some(lent) = job
        .base
        .store()
        .lend_free(want.min(region_slots), batch / page)
    {
        // A lent slot serves one batch and is not reused: the pool's own
        // slots are what writers reuse. When asked for, all of them (mapped,
        // touched only once the lent ones are used up); by default, the
        // slots the free frames do not fill, at most the default.
        let own = if job.staging.is_some() {
            own_default
        } else {
            default_own_slots(job, lent.slots())
        };
        // Without memory for the lists of pages, the frames go back and the
        // pool has memory of its own.
        if let Some((keep, pages)) = lent.memory() {
            if let Ok(pool) = StagingPool::lent(keep, pages, page, batch, own, job.unprotect_to) {
                return Ok((Some(pool), Some(lent)));
            }
        }
    }
    let bytes = job.staging.unwrap_or(own_default * batch);
    Ok((super::start::own_pool(job, bytes)?, None))
}

impl BesidePool for Option<LentFrames> {
    /// With the default staging, once the pages to save are known: where the
    /// free frames lent (if any) cover fewer batches than hold them, the
    /// store lends new frames for the rest (as many as the written pages
    /// fill), so that what writers stage is the snapshot's own copy there
    /// too — no second copy by the copier, no staging memory beside the
    /// store's. The pool is rebuilt over all of them, with fewer slots of its
    /// own; should that fail, the prepared pool stays.
    fn refine(
        &mut self,
        job: &Job,
        dirty: &[usize],
        pool: Option<StagingPool>,
    ) -> Option<StagingPool> {
        if job.staging.is_some() {
            return pool;
        }
        let (page, batch) = (page_size(), job.batch);
        let per = batch / page;
        let need = batches_written(dirty, per).min(dirty.len().div_ceil(per));
        let had = self.as_ref().map_or(0, LentFrames::slots);
        if need <= had {
            return pool;
        }
        let Some(new) = job.base.store().lend_new(need - had, per) else {
            return pool;
        };
        let mut lent = match self.take() {
            Some(mut lent) => {
                if !lent.append(new) {
                    *self = Some(lent);
                    return pool;
                }
                lent
            }
            None => new,
        };
        let own = default_own_slots(job, lent.slots());
        let rebuilt = lent.memory().and_then(|(keep, pages)| {
            StagingPool::lent(keep, pages, page, batch, own, job.unprotect_to)
                .ok()
                .map(|p| p.lent_untouched_from(had))
        });
        match rebuilt {
            Some(p) => {
                *self = Some(lent);
                Some(p)
            }
            None => {
                lent.truncate(had);
                *self = (had > 0).then_some(lent);
                pool
            }
        }
    }
}

/// The pool's own slots by default beside `lent` lent ones: what the lent
/// ones leave of a slot per batch, at most the default staging.
fn default_own_slots(job: &Job, lent: usize) -> usize {
    let region_slots = job.map.len().div_ceil(job.batch);
    let own_default = super::staging_or(job, super::STAGING_SNAPSHOT) / job.batch;
    region_slots.saturating_sub(lent).min(own_default)
}

/// The copier: saves every batch with dirty pages into the store.
pub(super) fn save(
    job: &Job,
    shared: &Shared,
    dirty: &[usize],
    batch: usize,
    pool: Option<&StagingPool>,
    lent: &mut Option<LentFrames>,
) -> Result<Snapshot> {
    let store = job.base.store().clone();
    let _beside = store.beside_writers();
    // Dropped on an error, which hands the frames back.
    let mut sink = StoreSink {
        changes: Staged::new(&store),
        lent: lent.as_mut(),
        pool,
        left: batches_written(dirty, batch / page_size()),
    };
    sink.changes
        .try_reserve(dirty.len() as u64)
        .map_err(|_| Error::OutOfMemory {
            what: "the background snapshot's list of changed pages",
            bytes: dirty.len() * 16,
        })?;
    store.room_for_tables(|| TableCost::of_pages(dirty.iter().copied()))?;
    drive(job, shared, dirty, batch, pool, &mut sink)?;
    let tree = store.commit(job.base.tree(), sink.changes);
    Ok(Snapshot::from_tree_at(
        tree,
        job.base.len(),
        job.map.as_ptr(),
    ))
}

/// How many batches of `pages_per_batch` hold a page of `dirty` (sorted).
fn batches_written(dirty: &[usize], pages_per_batch: usize) -> usize {
    let mut last = None;
    dirty
        .iter()
        .filter(|&&p| last.replace(p / pages_per_batch) != Some(p / pages_per_batch))
        .count()
}
