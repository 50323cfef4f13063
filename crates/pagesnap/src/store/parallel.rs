//! Snapshot and restore across cores: a snapshot's dirty pages (or a restore's
//! pages to write) are split into contiguous parts, one per thread
//! (`std::thread::scope`), each staging its part with its own slot reservation.
//!
//! Only work big enough to pay for a thread gets one: below
//! [`MIN_PAGES_PER_THREAD`] pages per thread everything stays on the caller's
//! thread, so small snapshots and one-core machines run exactly as before.

use super::frames::FrameId;
use super::{PageStore, Staged, StoreError, TableCost, Tree};
use crate::sys::mmap::Mapping;
use std::sync::OnceLock;

/// Pages a thread must have to be worth starting (≈ 2 MiB of copying and hashing,
/// some hundred microseconds, against tens for a thread).
const MIN_PAGES_PER_THREAD: usize = 512;

/// How the pages of a mapping may be read.
#[derive(Clone, Copy)]
enum Src {
    /// Nobody writes them meanwhile: read in place.
    Quiescent,
    /// Other threads may write them: copied out first.
    Live,
}

/// How many threads a snapshot or restore may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Threads(usize);

impl Threads {
    /// Every core the process may run on.
    pub(crate) const AUTO: Threads = Threads(0);

    /// At most `n` threads; 0 means [`AUTO`](Self::AUTO).
    pub(crate) fn at_most(n: usize) -> Threads {
        Threads(n)
    }

    /// Threads for `pages` pages of work.
    fn for_pages(self, pages: usize) -> usize {
        let max = match self.0 {
            0 => available(),
            n => n,
        };
        (pages / MIN_PAGES_PER_THREAD).clamp(1, max)
    }
}

/// `std::thread::available_parallelism`, asked once (it reads cgroup files).
fn available() -> usize {
    static N: OnceLock<usize> = OnceLock::new();
    *N.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Runs `work` on each of `parts`, the first on this thread and the rest on
/// scoped threads (inline where a thread cannot be started), results in order.
pub(super) fn run_parts<'a, T: Sync + 'a, R: Send>(
    parts: impl Iterator<Item = &'a [T]>,
    work: impl Fn(&'a [T]) -> R + Sync,
) -> Vec<R> {
    let parts: Vec<&[T]> = parts.collect();
    std::thread::scope(|scope| {
        let work = &work;
        let spawned: Vec<_> = parts[1..]
            .iter()
            .map(|&part| {
                crate::sys::thread::spawn_scoped(scope, "pagesnap-worker", move || work(part))
                    .map_err(|_| part)
            })
            .collect();
        let mut out = Vec::with_capacity(parts.len());
        out.push(work(parts[0]));
        for s in spawned {
            out.push(match s {
                Ok(handle) => handle
                    .join()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p)),
                Err(part) => work(part),
            });
        }
        out
    })
}

impl PageStore {
    /// A new table: `base` with `pages` (sorted, unique, in range) of `src` in
    /// place of its own. On error nothing was taken into the store.
    pub(crate) fn commit_pages(
        &self,
        base: &Tree,
        src: &Mapping,
        pages: &[usize],
        threads: Threads,
    ) -> Result<Tree, StoreError> {
        self.commit_from(base, src, pages, threads, Src::Quiescent)
    }

    /// As [`commit_pages`](Self::commit_pages), for a mapping other threads may
    /// be writing meanwhile (a converging round, or its `finish`, where
    /// writers are quiescent only by the program's word): each page is copied
    /// out, never referenced, before it is stored. On error (memory ran out)
    /// nothing of `pages` is kept.
    pub(crate) fn commit_pages_live(
        &self,
        base: &Tree,
        src: &Mapping,
        pages: &[usize],
        threads: Threads,
    ) -> Result<Tree, StoreError> {
        self.commit_from(base, src, pages, threads, Src::Live)
    }

    fn commit_from(
        &self,
        base: &Tree,
        src: &Mapping,
        pages: &[usize],
        threads: Threads,
        how: Src,
    ) -> Result<Tree, StoreError> {
        self.room_for_tables(|| TableCost::of_pages(pages.iter().copied()))?;
        let stage = |part: &[usize]| self.stage(src, part, how);
        let n = threads.for_pages(pages.len());
        let staged = if n <= 1 {
            stage(pages)?
        } else {
            let mut all = Staged::with_capacity(self, pages.len());
            // On an error the parts staged so far are dropped, releasing their pages.
            for part in run_parts(pages.chunks(pages.len().div_ceil(n)), stage) {
                all.append(part?);
            }
            all
        };
        Ok(self.commit_on(base, staged, n))
    }

    /// Stages the pages `part` of `src`. On error nothing of `part` is kept.
    fn stage(&self, src: &Mapping, part: &[usize], how: Src) -> Result<Staged, StoreError> {
        let page = self.shared.frames.page_size();
        let mut staged = Staged::with_capacity(self, part.len());
        let mut buf = match how {
            Src::Quiescent => Vec::new(),
            Src::Live => vec![0u8; page],
        };
        for &p in part {
            let bytes = match how {
                Src::Quiescent => src.range(p * page, page),
                Src::Live => {
                    // Writers may be writing this page: no reference to it.
                    src.copy_out(p * page, &mut buf);
                    &buf[..]
                }
            };
            staged.add(p, bytes)?;
        }
        Ok(staged)
    }

    /// Writes each `(page, frame)` of `changes` (frames the caller holds) into
    /// `dst`, whose other users must be quiescent.
    pub(crate) fn write_pages(
        &self,
        dst: &Mapping,
        changes: &[(usize, FrameId)],
        threads: Threads,
    ) {
        let page = self.shared.frames.page_size();
        let write = |part: &[(usize, FrameId)]| {
            for &(p, id) in part {
                dst.copy_in(p * page, self.frame(id));
            }
        };
        let n = threads.for_pages(changes.len());
        if n <= 1 {
            write(changes);
        } else {
            run_parts(changes.chunks(changes.len().div_ceil(n)), write);
        }
    }
}
