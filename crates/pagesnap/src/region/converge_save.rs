//! A converging snapshot saved to a file: the rounds of `converge_rounds.rs`
//! copy straight into the file (`file/rounds.rs`: each round appends the pages
//! it copies, and the table names each page's last copy), then `finish` (the
//! pause) copies the remainder into a bounded buffer and hands it to a thread
//! that appends it, lists the other pages from the sync point's frames, and
//! writes the table, atomically and durably, like `Snapshot::save`. The
//! region's sync point stays where it was, as with `background_save`: nothing
//! enters the store.
//!
//! Memory: per page of the region a record index and a hash (0.7 %), one chunk
//! of copied pages, the writer's buffer, and a buffer for the remainder (twice
//! the largest round after the first two, at most [`REMAINDER_BUFFER`],
//! faulted in by the round thread so that the pause only copies; a larger
//! remainder goes to the file in the pause) — never the region's pages.
//! After `finish`, the file is completed on idle CPU time until waited for.
//!
//! Rounds after the first two store changed pages uncompressed: they are short,
//! and the quicker they go the less is left for the pause. A page whose last
//! copy comes from such a round stays uncompressed in the file.

use super::converge::ConvergeProgress;
use super::converge_rounds::{RoundRun, Sink};
use super::round_priority::RoundPriority;
use super::Region;
use crate::error::{Error, Result};
use crate::file::rounds::RoundFile;
use crate::file::{FileError, FileKind, SaveReport};
use crate::snapshot::Snapshot;
use crate::sys::mmap::Mapping;
use crate::sys::page_size;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Most bytes of remainder `finish` keeps in memory for the file thread (a
/// larger remainder goes to the file in the pause, uncompressed: the pause
/// grows, memory does not).
const REMAINDER_BUFFER: usize = 32 << 20;

/// A converging save in progress, from [`Region::converging_save`]; call
/// [`finish`](Self::finish) while writers are quiescent. Dropping it without
/// `finish` stops the rounds and removes the partial file; the target is
/// left as it was.
pub struct ConvergingSave<'r> {
    run: RoundRun<'r, FileCopies>,
    /// The thread that completes the file, started beforehand so that the
    /// pause does not start one; it ends at once if `finish` never comes.
    completer: Option<(SyncSender<Tail>, JoinHandle<Result<SaveReport>>)>,
    /// The completing thread's priority: idle CPU time until waited for.
    priority: Arc<RoundPriority>,
}

/// What `finish` hands the completing thread: the file, the remainder held
/// in memory (pages and their bytes) and the sync point.
struct Tail {
    sink: FileCopies,
    pages: Vec<usize>,
    bytes: Vec<u8>,
    base: Snapshot,
}

/// The file being written after [`ConvergingSave::finish`]; writers already
/// run again. Its thread writes on idle CPU time, as the rounds copied, so
/// that it takes no core from the writers (where the process may raise it
/// back: see [`Region::converging_snapshot`]), until [`wait`](Self::wait)
/// or a drop, which wait for the file at normal priority.
pub struct ConvergedSave {
    thread: Option<JoinHandle<Result<SaveReport>>>,
    priority: Arc<RoundPriority>,
}

/// The file side: the file of the rounds' copies.
pub(super) struct FileCopies {
    file: RoundFile,
    path: PathBuf,
    /// Memory for `finish` to copy the remainder into, faulted in by the
    /// round thread: a buffer first touched in the pause costs more to fault
    /// in than to copy into (0.4–2.4 ms per MiB on a VM, against 0.1).
    warm: Vec<u8>,
    /// Most bytes `warm` holds: the region's size, at most
    /// [`REMAINDER_BUFFER`].
    warm_cap: usize,
    /// Rounds begun so far.
    rounds: u32,
}

impl FileCopies {
    /// Grows the warm buffer (faulting it in, here on the round thread) to
    /// twice `round_pages`, a late round's count (see [`Sink::copy`] below):
    /// those count what writers wrote during one round, as the remainder
    /// counts what they wrote since the last. Grown to the largest, never
    /// shrunk: writers go on writing until `finish`, so the last round (often
    /// nearly empty) says too little. Without memory it stays as it is.
    fn warm_for(&mut self, round_pages: usize) {
        let want = round_pages
            .saturating_mul(2 * page_size())
            .min(self.warm_cap);
        if want > self.warm.len() && self.warm.try_reserve_exact(want - self.warm.len()).is_ok() {
            // Written, not only reserved: the pages are faulted in now.
            self.warm.resize(want, 0);
        }
    }

    fn err(&self) -> impl FnOnce(FileError) -> Error + '_ {
        move |source| Error::File {
            path: self.path.clone(),
            source,
        }
    }
}

impl Sink for FileCopies {
    fn copy(
        &mut self,
        map: &Mapping,
        pages: &[usize],
        go_on: &mut dyn FnMut(usize) -> bool,
    ) -> Result<usize> {
        // The first two rounds copy everything written since the sync point,
        // compressed. Later ones are short and decide how much is left for
        // the pause: they go raw (lz4 was about half the rounds' time on
        // SQLite's pages), and size the buffer the pause copies into.
        let late = self.rounds >= 2;
        self.rounds += 1;
        let r = self.file.copy(map, pages, late, go_on);
        let r = r.map_err(self.err())?;
        if late && r == pages.len() {
            self.warm_for(r);
        }
        Ok(r)
    }

    fn keep_changed(&mut self, map: &Mapping, dirty: &mut Vec<usize>) -> Result<()> {
        let r = self.file.keep_changed(map, dirty);
        r.map_err(self.err())
    }
}

impl Region {
    /// As [`converging_snapshot`](Self::converging_snapshot), but the snapshot
    /// of the [`finish`](ConvergingSave::finish) instant goes to a snapshot file
    /// at `path`: the rounds copy into the file as they go, never into the
    /// store, so extra memory stays small whatever the region's size; after
    /// `finish`, a thread completes the file (atomically and durably, like
    /// [`Snapshot::save`]) while writers run again. The region's sync point
    /// does not move. Fails here, before any round, if the file cannot be
    /// created. The rounds copy on idle CPU time, as those of
    /// [`converging_snapshot`](Self::converging_snapshot) do.
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
        self.owner.check()?;
        let path = path.as_ref().to_path_buf();
        let file =
            RoundFile::create(&path, self.len(), self.as_ptr() as usize).map_err(|source| {
                Error::File {
                    path: path.clone(),
                    source,
                }
            })?;
        let sink = FileCopies {
            file,
            path: path.clone(),
            warm: Vec::new(),
            warm_cap: self.len().min(REMAINDER_BUFFER),
            rounds: 0,
        };
        let (tx, rx) = sync_channel::<Tail>(1);
        let priority = Arc::new(RoundPriority::default());
        let thread_priority = priority.clone();
        let completer = crate::sys::thread::spawn("pagesnap-save", move || {
            let tail = rx.recv().map_err(|_| Error::BackgroundBusy)?;
            // Writers run again: the file is completed on idle CPU time
            // until someone waits for it, as the rounds were copied.
            let _idle = thread_priority.enter_idle();
            complete(tail, &path)
        })
        .map_err(|source| Error::Background {
            step: "spawn save thread",
            addr: self.as_ptr() as usize,
            len: self.len(),
            source,
        })?;
        Ok(ConvergingSave {
            run: RoundRun::start(self, sink)?,
            completer: Some((tx, completer)),
            priority,
        })
    }
}

impl ConvergingSave<'_> {
    /// Rounds completed so far.
    pub fn rounds(&self) -> u64 {
        self.run.progress().rounds
    }

    /// Rounds, pages copied, and whether the rounds have stopped.
    pub fn progress(&self) -> ConvergeProgress {
        self.run.progress()
    }

    /// From now on the rounds copy at normal priority instead of on idle CPU
    /// time only, as [`Converging::hurry`](crate::Converging::hurry).
    pub fn hurry(&self) {
        self.run.hurry()
    }

    /// Whether the rounds have stopped on their own.
    pub fn is_converged(&self) -> bool {
        self.run.is_converged()
    }

    /// Blocks until the rounds have stopped (bounded, whatever the writers
    /// do). From now on they copy at normal priority, as with
    /// [`Converging::wait_converged`](crate::Converging::wait_converged).
    pub fn wait_converged(&self) {
        self.run.wait_converged()
    }

    /// As [`wait_converged`](Self::wait_converged), for at most `limit`.
    pub fn wait_converged_timeout(&self, limit: Duration) -> bool {
        self.run.wait_converged_timeout(limit)
    }

    /// Call while writers are quiescent: copies the remainder (the pause) and
    /// starts completing the file of this instant; writers may go on as soon
    /// as it returns. On error the target is left as it was.
    pub fn finish(mut self) -> Result<ConvergedSave> {
        let rest = self.run.remainder()?;
        let mut sink = rest.sink;
        // The sync point does not move: what the tracker forgot stays dirty.
        self.run.give_back(rest.collected);
        let region = self.run.region();
        let map = region.map.clone();
        let base: Snapshot = region.base.clone();
        let page = page_size();
        // The remainder is small once the rounds converged: into memory, so
        // the pause is a copy; past the buffer, straight into the file.
        let held = rest.dirty.len().min(REMAINDER_BUFFER / page);
        let (now, later) = rest.dirty.split_at(rest.dirty.len() - held);
        let quick = |sink: &mut FileCopies, pages: &[usize]| {
            let r = sink.file.copy_quick(&map, pages);
            r.map_err(sink.err())
        };
        quick(&mut sink, now)?;
        // Into the warm buffer; past it (a remainder larger than the rounds
        // suggested), memory faulted in now, or else the file.
        let mut bytes = std::mem::take(&mut sink.warm);
        let need = later.len() * page;
        if need > bytes.len() && bytes.try_reserve_exact(need - bytes.len()).is_err() {
            quick(&mut sink, later)?;
            bytes = Vec::new();
        } else {
            bytes.resize(need, 0);
            for (i, &p) in later.iter().enumerate() {
                map.copy_out(p * page, &mut bytes[i * page..(i + 1) * page]);
            }
        }
        let pages = if bytes.is_empty() {
            Vec::new()
        } else {
            later.to_vec()
        };
        let (tx, thread) = self.completer.take().expect("finish runs once");
        let tail = Tail {
            sink,
            pages,
            bytes,
            base,
        };
        if tx.send(tail).is_err() {
            // The thread is gone (it cannot be, short of a panic): say why.
            return Err(match thread.join() {
                Ok(Err(e)) => e,
                _ => Error::BackgroundBusy,
            });
        }
        Ok(ConvergedSave {
            thread: Some(thread),
            priority: self.priority.clone(),
        })
    }
}

/// The file thread: the held remainder, then the table; the file's report.
fn complete(tail: Tail, path: &Path) -> Result<SaveReport> {
    let Tail {
        mut sink,
        pages,
        bytes,
        base,
    } = tail;
    let page = page_size();
    let at = |source| Error::File {
        path: path.to_path_buf(),
        source,
    };
    for (i, &p) in pages.iter().enumerate() {
        sink.file
            .put(p, &bytes[i * page..(i + 1) * page])
            .map_err(at)?;
    }
    let r = sink.file.finish(base.tree(), base.store()).map_err(at)?;
    Ok(SaveReport {
        kind: FileKind::Full,
        bytes: r.bytes,
        uncompressed_bytes: r.bytes - r.stored_bytes + r.stored_pages * page as u64,
        pages: r.pages,
        listed_pages: r.listed,
        zero_pages: 0,
        stored_pages: r.stored_pages,
        compressed_pages: r.compressed,
        digest: r.digest,
    })
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
        // Waited for: normal priority from now on.
        self.priority.raise();
        let t = self.thread.take().expect("joined once");
        // A panic (a bug) in the writing thread fails the save like an error
        // (its temporary file is removed as it unwinds), not the caller.
        t.join().unwrap_or_else(|_| {
            Err(Error::Background {
                step: "converging save (the writing thread panicked)",
                addr: 0,
                len: 0,
                source: std::io::Error::other("the writing thread panicked"),
            })
        })
    }
}

impl Drop for ConvergedSave {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = self.join();
        }
    }
}
