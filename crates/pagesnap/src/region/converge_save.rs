//! A converging snapshot saved to a file: the rounds of `converge.rs`, then
//! `finish` (the pause: the remainder's copy) hands the snapshot of that
//! instant to a thread that writes the file (atomically and durably, like
//! `Snapshot::save`) and then lets it go. The region's sync point stays where
//! it was, as with `background_save`: the store keeps nothing once the file is
//! written.
//!
//! Memory: until the file is written, the copied pages (those written since the
//! sync point) live in the store, deduplicated.

use super::converge::{ConvergeProgress, Converging};
use super::Region;
use crate::error::{Error, Result};
use crate::file::stream::StreamWriter;
use crate::file::SaveReport;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::Duration;

/// A converging save in progress, from [`Region::converging_save`]; call
/// [`finish`](Self::finish) while writers are quiescent.
pub struct ConvergingSave<'r> {
    inner: Converging<'r>,
    path: PathBuf,
}

/// The file being written after [`ConvergingSave::finish`]; writers already
/// run again. Dropping it waits for the file.
pub struct ConvergedSave {
    thread: Option<JoinHandle<Result<SaveReport>>>,
}

impl Region {
    /// As [`converging_snapshot`](Self::converging_snapshot), but the result is
    /// written to a snapshot file at `path` once [`finish`](ConvergingSave::finish)
    /// has taken it, off the caller's thread. Fails here, before any round, if
    /// the file cannot be created.
    ///
    /// ```
    /// use pagesnap::{PageStore, Region, Snapshot};
    /// let dir = std::env::temp_dir().join(format!("pagesnap-cvdoc-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir).unwrap();
    /// let mut region = Region::builder(4 << 20).build()?;
    /// region.as_mut_slice().fill(5);
    /// let conv = region.converging_save(dir.join("a.snap"))?;
    /// conv.wait_converged();
    /// let report = conv.finish()?.wait()?; // finish: the pause
    /// let back = Snapshot::load(dir.join("a.snap"), &PageStore::new())?;
    /// assert_eq!(back.digest(), report.digest);
    /// assert!(back.to_vec().iter().all(|&b| b == 5));
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), pagesnap::Error>(())
    /// ```
    pub fn converging_save(&mut self, path: impl AsRef<Path>) -> Result<ConvergingSave<'_>> {
        let path = path.as_ref().to_path_buf();
        // Fail early on a target that cannot be written (the probe file goes).
        drop(
            StreamWriter::create(&path, self.len(), self.as_ptr() as usize).map_err(|source| {
                Error::File {
                    path: path.clone(),
                    source,
                }
            })?,
        );
        Ok(ConvergingSave {
            inner: self.converging_snapshot()?,
            path,
        })
    }
}

impl ConvergingSave<'_> {
    /// Rounds completed so far.
    pub fn rounds(&self) -> u64 {
        self.inner.rounds()
    }

    /// Rounds, pages copied, and whether the rounds have stopped.
    pub fn progress(&self) -> ConvergeProgress {
        self.inner.progress()
    }

    /// Whether the rounds have stopped on their own.
    pub fn is_converged(&self) -> bool {
        self.inner.is_converged()
    }

    /// Blocks until the rounds have stopped (bounded, whatever the writers do).
    pub fn wait_converged(&self) {
        self.inner.wait_converged()
    }

    /// As [`wait_converged`](Self::wait_converged), for at most `limit`.
    pub fn wait_converged_timeout(&self, limit: Duration) -> bool {
        self.inner.wait_converged_timeout(limit)
    }

    /// Call while writers are quiescent: copies the remainder (the pause) and
    /// starts writing the file of this instant; writers may go on as soon as
    /// it returns.
    pub fn finish(self) -> Result<ConvergedSave> {
        let path = self.path;
        let snap = self.inner.finish_unsynced()?;
        let thread = std::thread::Builder::new()
            .name("pagesnap-save".into())
            .spawn(move || snap.save(&path))
            .map_err(|source| Error::Background {
                step: "spawn save thread",
                addr: 0,
                len: 0,
                source,
            })?;
        Ok(ConvergedSave {
            thread: Some(thread),
        })
    }
}

impl ConvergedSave {
    /// Waits until the file is complete and durable at its path.
    pub fn wait(mut self) -> Result<SaveReport> {
        self.join()
    }

    /// Whether the file is written (or failed).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    fn join(&mut self) -> Result<SaveReport> {
        let t = self.thread.take().expect("joined once");
        match t.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl Drop for ConvergedSave {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = self.join();
        }
    }
}
