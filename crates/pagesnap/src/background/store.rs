//! The store sink: a background snapshot's pages hashed and deduplicated into
//! the region's store, then committed as a snapshot on the sync point's tree.

use super::drive::{drive, Sink};
use super::{Job, Shared};
use crate::error::{Error, Result};
use crate::snapshot::Snapshot;
use crate::store::Staged;
use crate::sys::page_size;
use crate::sys::staging::StagingPool;

/// Pages taken into the store as the copier goes (handed back on an error).
struct StoreSink {
    changes: Staged,
}

impl Sink for StoreSink {
    fn batch(&mut self, _b: usize, dirty: &[usize], bytes: &[u8]) -> Result<()> {
        let page = page_size();
        for (&p, bytes) in dirty.iter().zip(bytes.chunks_exact(page)) {
            self.changes.add(p, bytes)?;
        }
        Ok(())
    }
}

/// The copier: saves every batch with dirty pages into the store.
pub(super) fn save(
    job: &Job,
    shared: &Shared,
    dirty: &[usize],
    batch: usize,
    pool: Option<&StagingPool>,
) -> Result<Snapshot> {
    let store = job.base.store().clone();
    let _beside = store.beside_writers();
    // Dropped on an error, which hands the frames back.
    let mut sink = StoreSink {
        changes: Staged::new(&store),
    };
    sink.changes
        .try_reserve(dirty.len() as u64)
        .map_err(|_| Error::OutOfMemory {
            what: "the background snapshot's list of changed pages",
            bytes: dirty.len() * 16,
        })?;
    drive(job, shared, dirty, batch, pool, &mut sink)?;
    let tree = store.commit(job.base.tree(), sink.changes);
    Ok(Snapshot::from_tree_at(
        tree,
        job.base.len(),
        job.map.as_ptr(),
    ))
}
