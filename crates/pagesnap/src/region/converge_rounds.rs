//! The engine under both converging modes (`converge.rs`, `converge_save.rs`):
//! the round thread, and the collect of the remainder at `finish`. Where the
//! copies go is a [`Sink`]: the page store, or a snapshot file.
//!
//! ```text
//!  start:   background flag; the round thread gets the tracker, the mapping,
//!           the sink and the pages carried over from abandoned rounds
//!  rounds:  round 0 peeks, rounds ≥ 1 collect; each copies into the sink;
//!           stop on nothing left, no longer shrinking, MAX_ROUNDS, or `stop`
//!  finish:  stop, join, collect the remainder (the caller copies it)
//!  drop:    what the tracker forgot goes back to the region (`carried`)
//! ```

use super::Region;
use crate::error::{Error, Result};
use crate::protection::{own_protection, Look};
use crate::sys::mmap::Mapping;
use crate::sys::page_size;
use crate::track::Tracker;
use crate::Tracking;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::converge::ConvergeProgress;
use super::forgotten;
use super::round_priority::RoundPriority;
use std::marker::PhantomData;

/// Most copy rounds before the rounds stop on their own.
const MAX_ROUNDS: u64 = 12;

/// How the rounds find what changed, by backend.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Mode {
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

/// Where a converging snapshot's copies go.
pub(super) trait Sink: Send + 'static {
    /// Copies `pages` (sorted, unique) of `map`, which other threads may be
    /// writing; after each chunk `go_on` is told how many were copied and
    /// answers whether to go on. How many of `pages` (a prefix) were copied:
    /// fewer when `go_on` said stop or memory ran out (the rest can be tried
    /// again). An error fails the converging snapshot.
    fn copy(
        &mut self,
        map: &Mapping,
        pages: &[usize],
        go_on: &mut dyn FnMut(usize) -> bool,
    ) -> Result<usize>;

    /// Keeps the pages of `dirty` whose bytes differ from their last copy
    /// (writers are quiescent).
    fn keep_changed(&mut self, map: &Mapping, dirty: &mut Vec<usize>) -> Result<()>;
}

/// What the round thread and the caller share.
pub(super) struct Ctl {
    stop: AtomicBool,
    /// The round thread's priority (idle until someone waits for it).
    priority: RoundPriority,
    rounds: AtomicU64,
    copied: AtomicU64,
    last: AtomicU64,
    done: Mutex<bool>,
    cv: Condvar,
}

impl Ctl {
    fn new() -> Ctl {
        Ctl {
            stop: AtomicBool::new(false),
            priority: RoundPriority::default(),
            rounds: AtomicU64::new(0),
            copied: AtomicU64::new(0),
            last: AtomicU64::new(0),
            done: Mutex::new(false),
            cv: Condvar::new(),
        }
    }

    /// Tells the rounds to stop and raises the round thread back to normal
    /// priority: the caller is about to wait for it.
    pub(super) fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.priority.raise();
    }
}

/// What the round thread leaves behind.
pub(super) struct Rounds<S> {
    sink: S,
    /// Pages the tracker was made to forget (collected): dirty against the
    /// sync point until a finish moves it.
    collected: Vec<usize>,
    /// Collected pages not yet copied (rounds stopped mid-round).
    pending: Vec<usize>,
    error: Option<Error>,
}

/// Converging rounds running into a sink `S`, borrowing their region (which
/// holds the round thread: see forgotten.rs).
pub(super) struct RoundRun<'r, S: Sink> {
    region: &'r mut Region,
    ctl: Arc<Ctl>,
    mode: Mode,
    sink: PhantomData<S>,
}

/// What `finish` copies: the remainder and the pages the tracker forgot.
pub(super) struct Remainder<S> {
    pub(super) sink: S,
    /// Pages to copy now (sorted, unique).
    pub(super) dirty: Vec<usize>,
    /// Pages the tracker no longer reports (unsorted, maybe repeated).
    pub(super) collected: Vec<usize>,
}

impl<'r, S: Sink> RoundRun<'r, S> {
    /// Starts the round thread (Fails with [`Error::BackgroundBusy`] while a
    /// background snapshot of `region` runs).
    pub(super) fn start(region: &'r mut Region, sink: S) -> Result<Self> {
        region.owner.check()?;
        // Pages a failed call (or a forgotten run) took from the tracker are
        // found by comparing first: the rounds only see what it reports.
        region.reclaim_forgotten_rounds();
        if region.background.load(Ordering::Acquire) {
            return Err(Error::BackgroundBusy);
        }
        region.resync_if_needed()?;
        if region.background.swap(true, Ordering::AcqRel) {
            return Err(Error::BackgroundBusy);
        }
        // The rounds read every page they copy: one the program made
        // unreadable would fault in the round thread.
        let mprotect = region.tracking() == crate::Tracking::Mprotect;
        if let Err(e) = own_protection(&region.map, mprotect, Look::Always) {
            region.background.store(false, Ordering::Release);
            return Err(e);
        }
        let mode = mode(region.tracking());
        let ctl = Arc::new(Ctl::new());
        let map = region.map.clone();
        let tracker = region.tracker.clone();
        let carried = std::mem::take(&mut region.carried);
        let thread_ctl = ctl.clone();
        let (addr, len) = (region.map.as_ptr() as usize, region.map.len());
        let spawned = crate::sys::thread::spawn("pagesnap-rounds", move || {
            let idle = thread_ctl.priority.enter_idle();
            let out = run_rounds(&map, &tracker, sink, carried, mode, &thread_ctl);
            // Cleared before the thread ends (on a panic too, as it
            // unwinds), so `hurry` never names a thread id that could be
            // reused.
            drop(idle);
            *thread_ctl.done.lock().unwrap_or_else(|e| e.into_inner()) = true;
            thread_ctl.cv.notify_all();
            out
        });
        match spawned {
            Ok(t) => {
                forgotten::hold(region, ctl.clone(), t);
                Ok(RoundRun {
                    region,
                    ctl,
                    mode,
                    sink: PhantomData,
                })
            }
            Err(source) => {
                // The carried pages went with the failed closure: nothing was
                // collected, so a full look is needed.
                region.carried.extend(0..len / page_size());
                region.background.store(false, Ordering::Release);
                Err(Error::Background {
                    step: "spawn round thread",
                    addr,
                    len,
                    source,
                })
            }
        }
    }

    pub(super) fn region(&mut self) -> &mut Region {
        self.region
    }

    /// Rounds, pages copied, and whether the rounds have stopped.
    pub(super) fn progress(&self) -> ConvergeProgress {
        ConvergeProgress {
            rounds: self.ctl.rounds.load(Ordering::Relaxed),
            copied: self.ctl.copied.load(Ordering::Relaxed),
            last_round: self.ctl.last.load(Ordering::Relaxed),
            converged: self.is_converged(),
        }
    }

    /// The rounds copy at normal priority from now on.
    pub(super) fn hurry(&self) {
        self.ctl.priority.raise();
    }

    pub(super) fn is_converged(&self) -> bool {
        *self.ctl.done.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for the rounds (raised first: the caller waits on them).
    pub(super) fn wait_converged(&self) {
        self.ctl.priority.raise();
        let mut done = self.ctl.done.lock().unwrap_or_else(|e| e.into_inner());
        while !*done {
            done = self.ctl.cv.wait(done).unwrap_or_else(|e| e.into_inner());
        }
    }

    pub(super) fn wait_converged_timeout(&self, limit: Duration) -> bool {
        self.ctl.priority.raise();
        let done = self.ctl.done.lock().unwrap_or_else(|e| e.into_inner());
        let (done, _) = self
            .ctl
            .cv
            .wait_timeout_while(done, limit, |d| !*d)
            .unwrap_or_else(|e| e.into_inner());
        *done
    }

    /// Stops the rounds and collects what was written since the last: the
    /// caller copies it while writers stay quiescent. On error every page the
    /// tracker forgot went back to the region.
    pub(super) fn remainder(&mut self) -> Result<Remainder<S>> {
        self.ctl.stop();
        let Rounds {
            mut sink,
            mut collected,
            pending,
            error,
        } = self.join()?;
        let region = &mut *self.region;
        if let Some(e) = error {
            collected.extend(pending);
            region.carried.extend(collected);
            return Err(e);
        }
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
            return Err(e.into());
        }
        dirty.sort_unstable();
        dirty.dedup();
        if self.mode == Mode::Verify {
            if let Err(e) = sink.keep_changed(&region.map, &mut dirty) {
                collected.extend(dirty);
                region.carried.extend(collected);
                return Err(e);
            }
        }
        Ok(Remainder {
            sink,
            dirty,
            collected,
        })
    }

    /// Hands pages back to the region: dirty against its sync point.
    pub(super) fn give_back(&mut self, pages: Vec<usize>) {
        let carried = &mut self.region.carried;
        if carried.is_empty() {
            // Moved, not copied: this runs in the pause.
            *carried = pages;
        } else {
            carried.extend(pages);
        }
    }

    /// The round thread's results. If it panicked (a bug), what it took from
    /// the tracker is lost with it: the region compares every page with its
    /// sync point before its next snapshot or restore, so nothing is missed,
    /// and the converging snapshot fails.
    fn join(&mut self) -> Result<Rounds<S>> {
        let t = forgotten::take::<S>(self.region).expect("joined once");
        t.join().map_err(|_| {
            self.region.resync = true;
            Error::Background {
                step: "converging rounds (the round thread panicked)",
                addr: self.region.map.as_ptr() as usize,
                len: self.region.map.len(),
                source: std::io::Error::other("the round thread panicked"),
            }
        })
    }
}

impl<S: Sink> Drop for RoundRun<'_, S> {
    fn drop(&mut self) {
        if forgotten::holds(self.region) {
            self.ctl.stop();
            // The copies are discarded; what the tracker forgot goes back
            // (after a panic, `join` has the region resync instead).
            if let Ok(r) = self.join() {
                self.region.carried.extend(r.collected);
                self.region.carried.extend(r.pending);
            }
        }
        self.region.background.store(false, Ordering::Release);
    }
}

/// The round thread.
fn run_rounds<S: Sink>(
    map: &Mapping,
    tracker: &Mutex<Box<dyn Tracker>>,
    sink: S,
    carried: Vec<usize>,
    mode: Mode,
    ctl: &Ctl,
) -> Rounds<S> {
    let mut out = Rounds {
        sink,
        collected: carried.clone(),
        pending: carried,
        error: None,
    };
    if mode == Mode::Finish {
        return out;
    }
    let mut go_on = |n: usize| {
        ctl.copied.fetch_add(n as u64, Ordering::Relaxed);
        !ctl.stop.load(Ordering::Acquire)
    };
    let mut prev = usize::MAX;
    for round in 0..MAX_ROUNDS {
        if ctl.stop.load(Ordering::Acquire) {
            break;
        }
        let mut dirty = std::mem::take(&mut out.pending);
        let before = dirty.len();
        let mut t = tracker.lock().unwrap_or_else(|e| e.into_inner());
        // Round 0 peeks: it leaves tracking armed as it is, so a writer that
        // wrote a page since the sync point goes on without a fault.
        let got = if round == 0 {
            t.peek(map, &mut dirty)
        } else {
            t.collect(map, &mut dirty)
        };
        drop(t);
        if round > 0 {
            out.collected.extend_from_slice(&dirty[before..]);
        }
        dirty.sort_unstable();
        dirty.dedup();
        let copied = got
            .map_err(Error::from)
            .and_then(|()| out.sink.copy(map, &dirty, &mut go_on));
        let n = dirty.len();
        match copied {
            Err(e) => {
                out.pending = dirty;
                out.error = Some(e);
                return out;
            }
            Ok(done) if done < n => {
                out.pending = dirty.split_off(done);
                break;
            }
            Ok(_) => {}
        }
        ctl.rounds.fetch_add(1, Ordering::Relaxed);
        ctl.last.store(n as u64, Ordering::Relaxed);
        // Round 1 re-reports round 0's pages (the peek cleared nothing), so
        // shrinking is judged from round 2 on.
        if n == 0 || mode == Mode::Verify || (round >= 2 && n >= prev) {
            break;
        }
        if round >= 1 {
            prev = n;
        }
    }
    out
}

#[cfg(test)]
#[path = "converge_rounds_tests.rs"]
mod tests;
