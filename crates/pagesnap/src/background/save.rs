//! Background save: a background snapshot streamed straight to a snapshot file
//! (format version 4, see [`crate::file`]) instead of into the store.
//!
//! ```text
//!  background_save(path):  create the temporary file (fails here, before any
//!                          protection, if the path is not writable)
//!                          protect + peek + lift clean batches, as mod.rs says
//!  copier (drive.rs), per batch, from a writer's staged copy or its own:
//!    every batch:            write its pages: dirty ones from the copy, the
//!                            others from the sync point's frames (in the store)
//!  end:                      table + footer, fsync, rename, fsync the directory
//! ```
//!
//! Nothing is inserted into the store: extra memory is the staging pool, the
//! batch buffer, the writer's output buffer and dedup cache, and the page table
//! being built.
//! Any error (a failed write, a full disk) stops the copier, which lifts all
//! protection and wakes every writer before the error is returned; the
//! temporary file is removed.

use super::drive::{drive, Sink};
use super::{Job, Progress, Shared};
use crate::error::{Error, Result};
use crate::file::stream::{StreamReport, StreamWriter};
use crate::fork::Owner;
use crate::store::frames::FrameId;
use crate::store::{PageStore, Tree};
use crate::sys::page_size;
use crate::sys::staging::StagingPool;
use crate::Digest;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// A background save in progress, from
/// [`Region::background_save`](crate::Region::background_save).
///
/// Dropping it without [`wait`](Self::wait) still finishes the save (so no
/// writer stays blocked).
///
/// In a child forked while it runs, there is no copier: `wait` fails at once
/// with [`Error::ForkedChild`].
pub struct BackgroundSave {
    thread: Option<JoinHandle<Result<StreamReport>>>,
    shared: Arc<Shared>,
    owner: Owner,
}

/// What a finished background save did.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct BackgroundSaveReport {
    /// Pages in the saved snapshot (the region's pages).
    pub pages: u64,
    /// Pages copied out of the region (those written since its last sync point);
    /// the others came from the sync point's snapshot.
    pub copied: u64,
    /// Page records in the file (distinct non-zero pages, as far as checked).
    pub stored_pages: u64,
    /// The file's size in bytes.
    pub bytes: u64,
    /// From the instant of protection until the file was complete and durable.
    pub duration: Duration,
    /// Batches writers had to wait for (the staging pool was full).
    pub faults: u64,
    /// Batches writers copied themselves into the staging pool and went on.
    pub staged: u64,
    /// Bytes of the staging pool (extra memory, at most).
    pub staging_bytes: u64,
    /// Most bytes staged at once.
    pub staging_peak_bytes: u64,
    /// Time writers spent held up by the save, all writers together.
    pub writers_waited: Duration,
    /// The saved snapshot's digest.
    pub digest: Digest,
}

impl BackgroundSave {
    /// Pages copied out of the region so far, of how many.
    pub fn progress(&self) -> Progress {
        self.shared.progress()
    }

    /// Whether the copier has finished (in a forked child: always, there is none).
    pub fn is_finished(&self) -> bool {
        !self.owner.is_here() || self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Waits until the file is complete and durable at its path. Fails (leaving
    /// no file) if pagesnap's SIGSEGV handler was replaced while the copy ran.
    pub fn wait(mut self) -> Result<BackgroundSaveReport> {
        self.owner.check()?;
        let thread = self.thread.take().expect("joined once");
        let r = match thread.join() {
            Ok(r) => r?,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        let p = self.shared.progress();
        Ok(BackgroundSaveReport {
            pages: r.pages,
            copied: p.copied,
            stored_pages: r.stored_pages,
            bytes: r.bytes,
            duration: self.shared.duration(),
            faults: p.faults,
            staged: p.staged,
            staging_bytes: p.staging_bytes,
            staging_peak_bytes: p.staging_peak_bytes,
            writers_waited: p.writers_waited,
            digest: r.digest,
        })
    }
}

impl Drop for BackgroundSave {
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

/// Starts a background save of the job's region to `path`.
pub(crate) fn start(
    job: Job,
    path: &Path,
    peek: impl FnOnce(&mut Vec<usize>) -> Result<()> + Send + 'static,
) -> Result<BackgroundSave> {
    let path: PathBuf = path.to_path_buf();
    let writer =
        StreamWriter::create(&path, job.map.len(), job.map.as_ptr() as usize).map_err(at(&path))?;
    let prepare = |job: &Job| {
        let bytes = super::staging_or(job, super::STAGING_SAVE);
        Ok((super::start::own_pool(job, bytes)?, ()))
    };
    let (thread, shared) = super::start_with(
        job,
        prepare,
        peek,
        move |job, shared, dirty, batch, pool, _: &mut ()| {
            save(job, shared, dirty, batch, pool, writer, &path)
        },
    )?;
    Ok(BackgroundSave {
        thread: Some(thread),
        shared,
        owner: Owner::here(),
    })
}

fn at(path: &Path) -> impl FnOnce(crate::file::FileError) -> Error + '_ {
    move |source| Error::File {
        path: path.to_path_buf(),
        source,
    }
}

/// Every batch into the file: dirty pages from the copy, the others from the
/// sync point's frames.
struct FileSink<'a> {
    writer: StreamWriter,
    path: &'a Path,
    store: PageStore,
    tree: &'a Tree,
    pages_per_batch: usize,
    npages: usize,
    frames: Vec<FrameId>,
}

impl Sink for FileSink<'_> {
    fn batch(&mut self, b: usize, dirty: &[usize], bytes: &[u8]) -> Result<()> {
        let first = b * self.pages_per_batch;
        let end = (first + self.pages_per_batch).min(self.npages);
        self.frames.clear();
        self.frames.extend((first..end).map(|p| self.tree.get(p)));
        self.writer
            .write_batch(first, &self.frames, dirty, bytes, &self.store)
            .map_err(at(self.path))
    }
}

/// The copier: every batch, into the file.
fn save(
    job: &Job,
    shared: &Shared,
    dirty: &[usize],
    batch: usize,
    pool: Option<&StagingPool>,
    writer: StreamWriter,
    path: &Path,
) -> Result<StreamReport> {
    let page = page_size();
    let pages_per_batch = batch / page;
    let mut sink = FileSink {
        writer,
        path,
        store: job.base.store().clone(),
        tree: job.base.tree(),
        pages_per_batch,
        npages: job.map.len() / page,
        frames: Vec::with_capacity(pages_per_batch),
    };
    drive(job, shared, dirty, batch, pool, &mut sink)?;
    sink.writer.finish().map_err(at(path))
}
