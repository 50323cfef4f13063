//! Converging snapshots: copy rounds while writers run unobstructed, then a
//! short `finish` at the program's own quiescent point.
//!
//! ```text
//!  converging_snapshot():  spawn the round thread; return      (no protection)
//!  round 0 (peek):         pages written since the sync point → copied into
//!                          the store (tracking left armed as it is, so
//!                          writers that already wrote a page do not fault)
//!  round k ≥ 1 (collect):  pages written since the last collect (the tracker
//!                          clears and re-arms them atomically per page) →
//!                          copied; stop when a round finds nothing, stops
//!                          shrinking, or after MAX_ROUNDS
//!  finish() (quiescent):   stop the rounds; collect the remainder; copy it;
//!                          the result is the region at this instant and
//!                          becomes the sync point
//! ```
//!
//! Why a page copied while a writer writes it is still right: every collect
//! re-arms a page before the round copies it, so a write racing the copy marks
//! the page dirty again and a later round (or `finish`) copies it once more.
//! The last copy of every page is made while writers are quiescent or after
//! its last write. Pages a round collected (so the tracker no longer reports
//! them) are remembered; if the rounds end without `finish` (drop, error),
//! they go back to the region, whose next snapshot copies them.
//!
//! Per backend: uffd-wp and mprotect collect per page atomically enough to
//! run rounds (mprotect faults each first write per round, and kernel-mode
//! writes into its read-only pages fail with EFAULT as always). soft-dirty
//! cannot clear bits without losing a racing write, so it runs the peek round
//! only; `finish` collects and compares the reported pages with their round
//! copies, copying only those that differ. compare cannot tell what changed
//! until it hashes every page, so it runs no rounds: `finish` is a snapshot.

use super::converge_rounds::{RoundRun, Sink};
use super::Region;
use crate::error::{Error, Result};
use crate::snapshot::Snapshot;
use crate::store::{PageStore, Threads};
use crate::sys::mmap::Mapping;
use crate::sys::page_size;
use std::time::Duration;

/// How far the rounds have come, from [`Converging::progress`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConvergeProgress {
    /// Rounds completed.
    pub rounds: u64,
    /// Pages copied by the rounds in all (a page may count once per round).
    pub copied: u64,
    /// Pages the last completed round found written.
    pub last_round: u64,
    /// Whether the rounds have stopped (nothing left, no longer shrinking, or
    /// the round limit): `finish` will copy only what was written since.
    pub converged: bool,
}

/// A converging snapshot in progress, from
/// [`Region::converging_snapshot`]. Writers go on through
/// [`Region::as_ptr`] pointers taken before; call [`finish`](Self::finish)
/// while they are quiescent.
///
/// Dropping it without `finish` stops the rounds and discards their copies;
/// the region's next snapshot still sees every write. Forgotten
/// (`std::mem::forget`), it is stopped by the region's next call, which then
/// compares every page with the sync point once.
pub struct Converging<'r> {
    run: RoundRun<'r, StoreCopies>,
}

/// Pages a round stores between two calls of its `go_on`, and between two
/// updates of its table.
const LIVE_CHUNK: usize = 512;

/// Pages `finish` stores between two updates of its table: each part frees
/// the older copies of its pages before the next is copied, so a remainder
/// of most of the region does not hold two copies of it.
const FINISH_CHUNK: usize = 8192;

/// The store side: the sync point plus every round's copies.
pub(super) struct StoreCopies {
    store: PageStore,
    current: Snapshot,
}

impl StoreCopies {
    /// Stores `pages` of `map`, `chunk` at a time (copied on up to `threads`
    /// threads), telling `go_on` after each; how many were stored.
    fn copy_on(
        &mut self,
        map: &Mapping,
        pages: &[usize],
        chunk: usize,
        threads: Threads,
        go_on: &mut dyn FnMut(usize) -> bool,
    ) -> Result<usize> {
        let mut done = 0;
        for chunk in pages.chunks(chunk) {
            let Ok(tree) = self
                .store
                .commit_pages_live(self.current.tree(), map, chunk, threads)
            else {
                // Out of memory: the chunk is not taken; the rest can be tried again.
                break;
            };
            // The table before goes now, chunk by chunk: a page copied again
            // this round frees its older copy at once, so a round that
            // re-copies most of the region does not hold both copies.
            self.current = Snapshot::from_tree_at(tree, self.current.len(), map.as_ptr());
            done += chunk.len();
            if !go_on(chunk.len()) {
                break;
            }
        }
        Ok(done)
    }
}

impl Sink for StoreCopies {
    /// One thread: the rounds run beside the writers, on idle CPU time.
    fn copy(
        &mut self,
        map: &Mapping,
        pages: &[usize],
        go_on: &mut dyn FnMut(usize) -> bool,
    ) -> Result<usize> {
        self.copy_on(map, pages, LIVE_CHUNK, Threads::at_most(1), go_on)
    }

    fn keep_changed(&mut self, map: &Mapping, dirty: &mut Vec<usize>) -> Result<()> {
        let page = page_size();
        // Read through copy_out: no slice of the region is formed.
        let mut buf = vec![0u8; page];
        let store = self.current.store();
        let tree = self.current.tree();
        dirty.retain(|&p| {
            map.copy_out(p * page, &mut buf);
            store.frame(tree.get(p)) != &buf[..]
        });
        Ok(())
    }
}

impl Region {
    /// Starts a converging snapshot: copy rounds run in a background thread
    /// while other threads go on writing through [`as_ptr`](Self::as_ptr)
    /// pointers, unobstructed (nothing is protected beyond what the tracking
    /// backend always does, so `read(2)`/`recv(2)` into the region keep working
    /// under uffd-wp, soft-dirty and compare). Each round copies only what
    /// changed since the last. Then, at a moment when writers are quiescent
    /// (between commands, after a commit), [`Converging::finish`] copies the
    /// small remainder and returns the snapshot of that instant.
    ///
    /// Use it when the program has such a moment; it is the mode that never
    /// makes a write wait or fail. [`background_snapshot`](Self::background_snapshot)
    /// needs no quiescent moment but protects the region meanwhile.
    /// Fails with [`Error::BackgroundBusy`] while a background snapshot or save
    /// of this region is still copying.
    ///
    /// The rounds copy on idle CPU time, so they never take a core from the
    /// program's threads: where the process may raise a thread back to normal
    /// priority (`CAP_SYS_NICE`, or an `RLIMIT_NICE` of 20 or more), the round
    /// thread runs under `SCHED_IDLE` until someone waits for it —
    /// [`wait_converged`](Converging::wait_converged) (and its timeout form),
    /// `finish` and drop raise it to normal priority first. Where every CPU
    /// is busy (the program's threads, or other processes), idle rounds
    /// progress slowly: [`Converging::hurry`] raises them without waiting.
    /// Without that permission they run at normal priority.
    ///
    /// ```
    /// let mut region = pagesnap::Region::builder(8 << 20).build()?;
    /// region.as_mut_slice().fill(1);
    /// let p = region.as_ptr() as usize;
    /// let conv = region.converging_snapshot()?;
    /// let writer = std::thread::spawn(move || {
    ///     // SAFETY (doc example): inside the region, one writer.
    ///     unsafe { (p as *mut u8).add(4096).write_volatile(2) };
    /// });
    /// writer.join().unwrap(); // the quiescent point
    /// conv.wait_converged();
    /// let snap = conv.finish()?;
    /// assert_eq!(snap.to_vec()[4096], 2);
    /// assert_eq!(region.last_snapshot().digest(), snap.digest());
    /// # Ok::<(), pagesnap::Error>(())
    /// ```
    pub fn converging_snapshot(&mut self) -> Result<Converging<'_>> {
        let sink = StoreCopies {
            store: self.store.clone(),
            current: self.base.clone(),
        };
        Ok(Converging {
            run: RoundRun::start(self, sink)?,
        })
    }
}

impl Converging<'_> {
    /// Rounds completed so far.
    pub fn rounds(&self) -> u64 {
        self.run.progress().rounds
    }

    /// Rounds, pages copied, and whether the rounds have stopped.
    pub fn progress(&self) -> ConvergeProgress {
        self.run.progress()
    }

    /// From now on the rounds copy at normal priority, sharing the CPUs with
    /// the program's threads, instead of on idle CPU time only (see
    /// [`Region::converging_snapshot`]): for a program that keeps every CPU
    /// busy and wants the rounds to go on anyway.
    pub fn hurry(&self) {
        self.run.hurry()
    }

    /// Whether the rounds have stopped on their own.
    pub fn is_converged(&self) -> bool {
        self.run.is_converged()
    }

    /// Blocks until the rounds have stopped (they always do: the round count
    /// is bounded, whatever the writers do). From now on they copy at normal
    /// priority (see [`Region::converging_snapshot`]).
    pub fn wait_converged(&self) {
        self.run.wait_converged()
    }

    /// As [`wait_converged`](Self::wait_converged) (the rounds copy at normal
    /// priority from now on), for at most `limit`; whether they have stopped.
    pub fn wait_converged_timeout(&self, limit: Duration) -> bool {
        self.run.wait_converged_timeout(limit)
    }

    /// Call while writers are quiescent: stops the rounds (early, if they
    /// still run), copies what was written since the last round, and returns
    /// the snapshot of the region at this instant, which becomes its sync
    /// point. The pause is this call.
    pub fn finish(mut self) -> Result<Snapshot> {
        let mut rest = self.run.remainder()?;
        let map = self.run.region().map.clone();
        // Writers are quiescent: the remainder is copied on every core.
        let done =
            rest.sink
                .copy_on(&map, &rest.dirty, FINISH_CHUNK, Threads::AUTO, &mut |_| {
                    true
                })?;
        if done < rest.dirty.len() {
            // Out of memory: nothing is lost, the region keeps every page
            // for the next snapshot.
            self.run.give_back(rest.collected);
            self.run.give_back(rest.dirty);
            return Err(Error::OutOfMemory {
                what: "the converging snapshot's last pages",
                bytes: page_size(),
            });
        }
        // The collected pages are in the new sync point.
        self.run.region().base = rest.sink.current.clone();
        Ok(rest.sink.current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Tree;
    use crate::sys::mmap::Protection;

    /// A round that copies every page again frees the older copies as it goes:
    /// the store never holds much more than one copy of the region.
    #[test]
    fn a_round_frees_older_copies_chunk_by_chunk() {
        let page = page_size();
        let n = 4 * LIVE_CHUNK;
        let map = Mapping::anonymous(n * page, Protection::ReadWrite, false).unwrap();
        let fill = |round: u64| {
            for p in 0..n {
                let word = (round << 32 | p as u64).to_ne_bytes();
                map.copy_in(p * page, &word);
            }
        };
        let store = PageStore::new();
        let base = Snapshot::from_tree_at(Tree::zero(&store, n), n * page, map.as_ptr());
        let mut sink = StoreCopies {
            store: store.clone(),
            current: base,
        };
        let pages: Vec<usize> = (0..n).collect();
        fill(1);
        assert_eq!(sink.copy(&map, &pages, &mut |_| true).unwrap(), n);
        assert_eq!(store.stats().unique_pages, n as u64);
        fill(2);
        let mut most = 0;
        let copied = sink
            .copy(&map, &pages, &mut |_| {
                most = most.max(store.stats().unique_pages);
                true
            })
            .unwrap();
        assert_eq!(copied, n);
        assert_eq!(store.stats().unique_pages, n as u64);
        assert!(
            most <= (n + LIVE_CHUNK) as u64,
            "held {most} pages at once for a region of {n}"
        );
        let mut buf = vec![0u8; 8];
        sink.current.read(3 * page, &mut buf).unwrap();
        assert_eq!(buf, (2u64 << 32 | 3).to_ne_bytes());
    }
}
