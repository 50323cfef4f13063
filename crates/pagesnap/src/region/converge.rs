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

use super::Region;
use crate::error::{Error, Result};
use crate::snapshot::Snapshot;
use crate::store::{PageStore, Staged};
use crate::sys::mmap::Mapping;
use crate::sys::page_size;
use crate::track::Tracker;
use crate::Tracking;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Most copy rounds before the rounds stop on their own.
const MAX_ROUNDS: u64 = 12;
/// Pages copied between two looks at the stop flag and two store locks.
const CHUNK: usize = 512;

/// How the rounds find what changed, by backend.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    /// A peek round, then collect rounds (uffd-wp, mprotect).
    Collect,
    /// The peek round only; finish compares with the copies (soft-dirty).
    Verify,
    /// No rounds; finish does a whole snapshot (compare).
    Finish,
}

fn mode(t: Tracking) -> Mode {
    match t {
        Tracking::UffdWp | Tracking::Mprotect => Mode::Collect,
        Tracking::SoftDirty => Mode::Verify,
        _ => Mode::Finish,
    }
}

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

/// What the round thread and the caller share.
struct Ctl {
    stop: AtomicBool,
    rounds: AtomicU64,
    copied: AtomicU64,
    last: AtomicU64,
    done: Mutex<bool>,
    cv: Condvar,
}

/// What the round thread leaves behind.
struct Rounds {
    /// The sync point plus every round's copies.
    current: Snapshot,
    /// Pages the tracker was made to forget (collected): dirty against the
    /// sync point until a finish copies them.
    collected: Vec<usize>,
    /// Collected pages not yet copied (rounds stopped mid-round).
    pending: Vec<usize>,
    error: Option<Error>,
}

/// A converging snapshot in progress, from
/// [`Region::converging_snapshot`]. Writers go on through
/// [`Region::as_ptr`] pointers taken before; call [`finish`](Self::finish)
/// while they are quiescent.
///
/// Dropping it without `finish` stops the rounds and discards their copies;
/// the region's next snapshot still sees every write.
pub struct Converging<'r> {
    region: &'r mut Region,
    ctl: Arc<Ctl>,
    thread: Option<JoinHandle<Rounds>>,
    mode: Mode,
}

/// The pieces the round thread needs.
struct Job {
    map: Arc<Mapping>,
    tracker: Arc<Mutex<Box<dyn Tracker>>>,
    store: PageStore,
    base: Snapshot,
    carried: Vec<usize>,
    mode: Mode,
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
        if self.background.swap(true, Ordering::AcqRel) {
            return Err(Error::BackgroundBusy);
        }
        let mode = mode(self.tracking());
        let job = Job {
            map: self.map.clone(),
            tracker: self.tracker.clone(),
            store: self.store.clone(),
            base: self.base.clone(),
            carried: std::mem::take(&mut self.carried),
            mode,
        };
        let ctl = Arc::new(Ctl {
            stop: AtomicBool::new(false),
            rounds: AtomicU64::new(0),
            copied: AtomicU64::new(0),
            last: AtomicU64::new(0),
            done: Mutex::new(false),
            cv: Condvar::new(),
        });
        let thread_ctl = ctl.clone();
        let (addr, len) = (self.map.as_ptr() as usize, self.map.len());
        let spawned = std::thread::Builder::new()
            .name("pagesnap-rounds".into())
            .spawn(move || {
                let out = run_rounds(job, &thread_ctl);
                *thread_ctl.done.lock().unwrap_or_else(|e| e.into_inner()) = true;
                thread_ctl.cv.notify_all();
                out
            });
        match spawned {
            Ok(t) => Ok(Converging {
                region: self,
                ctl,
                thread: Some(t),
                mode,
            }),
            Err(source) => {
                // The job (and the carried pages in it) went with the failed
                // closure: nothing was collected, so a full look is needed.
                self.carried.extend(0..len / page_size());
                self.background.store(false, Ordering::Release);
                Err(Error::Background {
                    step: "spawn round thread",
                    addr,
                    len,
                    source,
                })
            }
        }
    }
}

impl Converging<'_> {
    /// Rounds completed so far.
    pub fn rounds(&self) -> u64 {
        self.ctl.rounds.load(Ordering::Relaxed)
    }

    /// Rounds, pages copied, and whether the rounds have stopped.
    pub fn progress(&self) -> ConvergeProgress {
        ConvergeProgress {
            rounds: self.rounds(),
            copied: self.ctl.copied.load(Ordering::Relaxed),
            last_round: self.ctl.last.load(Ordering::Relaxed),
            converged: self.is_converged(),
        }
    }

    /// Whether the rounds have stopped on their own.
    pub fn is_converged(&self) -> bool {
        *self.ctl.done.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Blocks until the rounds have stopped (they always do: the round count
    /// is bounded, whatever the writers do).
    pub fn wait_converged(&self) {
        let mut done = self.ctl.done.lock().unwrap_or_else(|e| e.into_inner());
        while !*done {
            done = self.ctl.cv.wait(done).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// As [`wait_converged`](Self::wait_converged), for at most `limit`;
    /// whether they have stopped.
    pub fn wait_converged_timeout(&self, limit: Duration) -> bool {
        let done = self.ctl.done.lock().unwrap_or_else(|e| e.into_inner());
        let (done, _) = self
            .ctl
            .cv
            .wait_timeout_while(done, limit, |d| !*d)
            .unwrap_or_else(|e| e.into_inner());
        *done
    }

    /// Call while writers are quiescent: stops the rounds (early, if they
    /// still run), copies what was written since the last round, and returns
    /// the snapshot of the region at this instant, which becomes its sync
    /// point. The pause is this call.
    pub fn finish(mut self) -> Result<Snapshot> {
        let (snap, forgotten) = self.finish_inner()?;
        drop(forgotten);
        self.region.base = snap.clone();
        Ok(snap)
    }

    /// The snapshot of this instant without making it the sync point, and
    /// the pages the tracker no longer reports (dirty against the sync
    /// point), for a save that leaves the store alone.
    pub(crate) fn finish_unsynced(mut self) -> Result<Snapshot> {
        let (snap, forgotten) = self.finish_inner()?;
        self.region.carried.extend(forgotten);
        Ok(snap)
    }

    fn finish_inner(&mut self) -> Result<(Snapshot, Vec<usize>)> {
        self.ctl.stop.store(true, Ordering::Release);
        let rounds = self.join();
        let Rounds {
            mut current,
            mut collected,
            pending,
            error,
        } = rounds;
        if let Some(e) = error {
            collected.extend(pending);
            self.region.carried.extend(collected);
            return Err(e);
        }
        let region = &mut *self.region;
        let mut dirty = pending;
        let before = dirty.len();
        let got = region
            .tracker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .collect(&region.map, &mut dirty);
        collected.extend_from_slice(&dirty[before..]);
        if let Err(e) = got {
            collected.extend(dirty);
            region.carried.extend(collected);
            return Err(e);
        }
        dirty.sort_unstable();
        dirty.dedup();
        if self.mode == Mode::Verify {
            keep_changed(&region.map, &current, &mut dirty);
        }
        let ctl = Ctl {
            stop: AtomicBool::new(false),
            rounds: AtomicU64::new(0),
            copied: AtomicU64::new(0),
            last: AtomicU64::new(0),
            done: Mutex::new(false),
            cv: Condvar::new(),
        };
        if copy_pages(&region.map, &region.store, &mut current, &dirty, &ctl) < dirty.len() {
            // Out of memory: nothing is lost, the region keeps every page
            // for the next snapshot.
            collected.extend(dirty);
            region.carried.extend(collected);
            return Err(Error::OutOfMemory {
                what: "the converging snapshot's last pages",
                bytes: page_size(),
            });
        }
        // Unsorted, maybe repeated: the next collect sorts (kept out of the pause).
        Ok((current, collected))
    }

    fn join(&mut self) -> Rounds {
        let t = self.thread.take().expect("joined once");
        match t.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl Drop for Converging<'_> {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.ctl.stop.store(true, Ordering::Release);
            let r = self.join();
            // The copies are discarded; what the tracker forgot goes back.
            self.region.carried.extend(r.collected);
            self.region.carried.extend(r.pending);
        }
        self.region.background.store(false, Ordering::Release);
    }
}

/// The round thread.
fn run_rounds(job: Job, ctl: &Ctl) -> Rounds {
    let mut out = Rounds {
        current: job.base.clone(),
        collected: job.carried.clone(),
        pending: job.carried,
        error: None,
    };
    if job.mode == Mode::Finish {
        return out;
    }
    let mut prev = usize::MAX;
    for round in 0..MAX_ROUNDS {
        if ctl.stop.load(Ordering::Acquire) {
            break;
        }
        let mut dirty = std::mem::take(&mut out.pending);
        let before = dirty.len();
        let mut tracker = job.tracker.lock().unwrap_or_else(|e| e.into_inner());
        // Round 0 peeks: it leaves tracking armed as it is, so a writer that
        // wrote a page since the sync point goes on without a fault.
        let got = if round == 0 {
            tracker.peek(&job.map, &mut dirty)
        } else {
            tracker.collect(&job.map, &mut dirty)
        };
        drop(tracker);
        if round > 0 {
            out.collected.extend_from_slice(&dirty[before..]);
        }
        dirty.sort_unstable();
        dirty.dedup();
        if let Err(e) = got {
            out.pending = dirty;
            out.error = Some(e);
            return out;
        }
        let n = dirty.len();
        let done = copy_pages(&job.map, &job.store, &mut out.current, &dirty, ctl);
        if done < n {
            out.pending = dirty.split_off(done);
            break;
        }
        ctl.rounds.fetch_add(1, Ordering::Relaxed);
        ctl.last.store(n as u64, Ordering::Relaxed);
        // Round 1 re-reports round 0's pages (the peek cleared nothing), so
        // shrinking is judged from round 2 on.
        if n == 0 || job.mode == Mode::Verify || (round >= 2 && n >= prev) {
            break;
        }
        if round >= 1 {
            prev = n;
        }
    }
    out
}

/// Copies `pages` (sorted, unique) of `map` into `store` and `current`, in
/// chunks, until done or `ctl.stop`; how many were copied.
fn copy_pages(
    map: &Mapping,
    store: &PageStore,
    current: &mut Snapshot,
    pages: &[usize],
    ctl: &Ctl,
) -> usize {
    let page = page_size();
    let mut buf = vec![0u8; CHUNK.min(pages.len().max(1)) * page];
    let mut all = Staged::new(store);
    let mut done = 0;
    for chunk in pages.chunks(CHUNK) {
        if ctl.stop.load(Ordering::Acquire) {
            break;
        }
        for (i, &p) in chunk.iter().enumerate() {
            map.copy_out(p * page, &mut buf[i * page..(i + 1) * page]);
        }
        let mut staged = Staged::with_capacity(store, chunk.len());
        let stored = chunk
            .iter()
            .enumerate()
            .try_for_each(|(i, &p)| staged.add(p, &buf[i * page..(i + 1) * page]).map(drop));
        if stored.is_err() {
            // Out of memory: this chunk counts as not copied (its pages stay
            // pending; dropping `staged` hands them back), the earlier ones are kept.
            break;
        }
        all.append(staged);
        done += chunk.len();
        ctl.copied.fetch_add(chunk.len() as u64, Ordering::Relaxed);
    }
    if done > 0 {
        let tree = store.commit(current.tree(), all);
        *current = Snapshot::from_tree_at(tree, current.len(), map.as_ptr());
    }
    done
}

/// Keeps the pages of `dirty` whose bytes differ from `current`'s.
fn keep_changed(map: &Mapping, current: &Snapshot, dirty: &mut Vec<usize>) {
    let page = page_size();
    // Read through copy_out: writers may be running, so no slice of the region.
    let mut buf = vec![0u8; page];
    let store = current.store();
    let tree = current.tree();
    dirty.retain(|&p| {
        map.copy_out(p * page, &mut buf);
        store.frame(tree.get(p)) != &buf[..]
    });
}
