//! `ps_converging`: a converging snapshot or save driven from C.
//!
//! A converging snapshot borrows its region until `finish`, and C calls come
//! from any thread at any time, so a thread of its own holds the region (its
//! lock) and the converging snapshot, and answers the calls sent to it:
//!
//! ```text
//!  ps_converging_start     heap lock → flag "converging" → spawn the thread:
//!                          region lock, rounds start → started
//!  _progress / _wait       asked of the thread
//!  _finish / _finish_save  the thread finishes under the heap lock, answers,
//!                          unlocks the region, clears the flag, ends
//!  _free                   before finish: the thread drops it (rounds abandoned)
//! ```
//! Meanwhile calls that need the whole region (snapshot, restore, background)
//! fail with PS_ERR_BUSY instead of waiting; heap calls go on.

use crate::converging_thread::{run, Answer, Ask, Asks};
use crate::handle::{self, Handled, Object};
use crate::region::{ps_region, RegionCell};
use crate::save_job::ps_save_report;
use crate::snapshot::ps_snapshot;
use crate::status::{call, CallError};
use pagesnap_lib::{ConvergedSave, Error};
use std::ffi::{c_char, c_int};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{channel, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A converging snapshot or save in progress. Opaque: only pointers to it exist.
#[allow(non_camel_case_types)]
pub struct ps_converging {
    _opaque: [u8; 0],
}

/// How far the copy rounds have come, from ps_converging_progress().
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ps_converge_progress {
    /// Rounds completed.
    pub rounds: u64,
    /// Pages copied by the rounds in all (a page counts once per round).
    pub copied_pages: u64,
    /// Pages the last completed round found written.
    pub last_round_pages: u64,
    /// 1 once the rounds have stopped (finish then copies only what was
    /// written since), 0 before.
    pub converged: u64,
}

/// The handle's state.
pub(crate) struct Conv {
    /// To the converging thread; `None` once it finished.
    asks: Option<Asks>,
    thread: Option<JoinHandle<()>>,
    /// After ps_converging_finish_save(): the file being completed.
    saving: Option<(ConvergedSave, Instant, u64)>,
    save: bool,
}

pub(crate) type ConvCell = Arc<Mutex<Conv>>;

impl Handled for ConvCell {
    type Handle = ps_converging;
    const KIND: &'static str = "ps_converging";
    fn into_object(self) -> Object {
        Object::Converging(self)
    }
    fn from_object(o: &Object) -> Option<Self> {
        match o {
            Object::Converging(c) => Some(c.clone()),
            _ => None,
        }
    }
}

const CONV: &str = "conv (ps_converging *)";

/// Starts a converging snapshot of `region`: copy rounds run in a thread of
/// their own while other threads keep writing, never blocked and never
/// faulted into waiting; each round copies only what changed since the last.
/// With `path` NULL the snapshot goes into the store
/// (ps_converging_finish() returns it); otherwise it is written to a
/// snapshot file at `path` (ps_converging_finish_save(), then
/// ps_converging_save_wait()), the rounds copying into the file as they go, so
/// extra memory stays small. Call the finish function at a moment the
/// program's writers are quiescent (between commands, after a commit): the
/// snapshot holds the region at that instant, and the pause is copying what
/// was written since the last round.
///
/// Until then, calls that need the whole region (ps_snapshot_take(),
/// ps_restore(), ps_region_reset(), ps_background_*()) fail with PS_ERR_BUSY;
/// ps_heap_*() calls and writes go on. NULL on failure (dead handle, a
/// background snapshot of this region running, the file cannot be created).
///
/// Ownership: the caller owns the handle and must pass it to
/// ps_converging_finish(), ps_converging_save_wait() or ps_converging_free().
///
/// # Safety
/// `path` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn ps_converging_start(
    region: *mut ps_region,
    path: *const c_char,
) -> *mut ps_converging {
    call(std::ptr::null_mut(), || {
        let r: Arc<RegionCell> = handle::get(region, "region (ps_region *)")?;
        let path = if path.is_null() {
            None
        } else {
            // SAFETY: `path` is non-NULL and NUL-terminated by this function's contract.
            Some(unsafe { crate::file::path_arg(path) }?.to_path_buf())
        };
        let save = path.is_some();
        // Under the heap lock (taken before the region's, as everywhere): a call
        // that holds it sees the flag, so none waits for the region while the
        // converging thread waits for the heap lock at finish.
        let _heap = r.heap_lock();
        if r.converging.swap(true, Ordering::AcqRel) {
            return Err(Error::BackgroundBusy.into());
        }
        let (started_tx, started_rx) = sync_channel(1);
        let (asks_tx, asks_rx) = channel();
        let cell = r.clone();
        // Only where its stacks fit: a thread whose signal stack cannot be
        // mapped aborts the process (see `pagesnap_lib::spawn_thread`).
        let spawned = pagesnap_lib::spawn_thread("pagesnap-converge", move || {
            run(&cell, path, &started_tx, &asks_rx);
            cell.converging.store(false, Ordering::Release);
        });
        let thread = match spawned {
            Ok(t) => t,
            Err(e) => {
                r.converging.store(false, Ordering::Release);
                return Err(CallError::Library(Error::Background {
                    step: "spawn the converging thread",
                    addr: 0,
                    len: 0,
                    source: e,
                }));
            }
        };
        match started_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e.into());
            }
            Err(_) => {
                let _ = thread.join();
                return Err(CallError::Panic("the converging thread ended".into()));
            }
        }
        let conv = Conv {
            asks: Some(asks_tx),
            thread: Some(thread),
            saving: None,
            save,
        };
        Ok(handle::insert::<ConvCell>(Arc::new(Mutex::new(conv))))
    })
}

/// Sends `a` to the converging thread of `c` and returns its answer.
fn ask(c: *const ps_converging, a: Ask) -> Result<Answer, CallError> {
    ask_cell(&handle::get(c, CONV)?, a)
}

/// [`ask`], for a handle's state (taken out of the table already, maybe).
fn ask_cell(cell: &ConvCell, a: Ask) -> Result<Answer, CallError> {
    let asks = cell
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .asks
        .clone()
        .ok_or(CallError::Misuse(
            "conv (ps_converging *) was finished already: its rounds no longer run",
        ))?;
    let (tx, rx) = sync_channel(1);
    let gone = |_| CallError::Panic("the converging thread ended".into());
    asks.send((a, tx)).map_err(|e| gone(e.to_string()))?;
    rx.recv().map_err(|e| gone(e.to_string()))
}

/// Fills `*out` with how far the rounds have come. Returns 0, or -1 (dead
/// handle, NULL out, already finished).
///
/// # Safety
/// `out` is NULL or points to a writable ps_converge_progress.
#[no_mangle]
pub unsafe extern "C" fn ps_converging_progress(
    conv: *const ps_converging,
    out: *mut ps_converge_progress,
) -> c_int {
    call(-1, || {
        if out.is_null() {
            return Err(CallError::Null {
                arg: "out (ps_converge_progress *)",
            });
        }
        let Answer::Progress(p) = ask(conv, Ask::Progress)? else {
            unreachable!("a progress ask gets a progress answer")
        };
        let p = ps_converge_progress {
            rounds: p.rounds,
            copied_pages: p.copied,
            last_round_pages: p.last_round,
            converged: u64::from(p.converged),
        };
        // SAFETY: `out` is non-NULL (checked) and writable by the contract.
        unsafe { out.write(p) };
        Ok(0)
    })
}

/// From now on the rounds copy at normal priority instead of on idle CPU
/// time only (where the process may raise them back, they run under
/// SCHED_IDLE so that they never take a core from the program's threads, until
/// ps_converging_wait or a finish raises them): for a program that keeps every
/// CPU busy and wants the rounds to go on without waiting for them. Returns 0,
/// or -1 (dead handle, already finished).
#[no_mangle]
pub extern "C" fn ps_converging_hurry(conv: *const ps_converging) -> c_int {
    call(-1, || {
        let Answer::Hurried = ask(conv, Ask::Hurry)? else {
            unreachable!("a hurry ask gets a hurry answer")
        };
        Ok(0)
    })
}

/// Waits until the rounds have stopped on their own (they always do: their
/// number is bounded, whatever the writers do), for at most `timeout_ms`
/// milliseconds (negative: no limit). Returns 1 once they have stopped, 0 if
/// the time ran out first, -1 on failure (dead handle, already finished). From
/// then on the rounds copy at normal priority (see ps_converging_hurry).
#[no_mangle]
pub extern "C" fn ps_converging_wait(conv: *const ps_converging, timeout_ms: i64) -> c_int {
    call(-1, || {
        let limit = u64::try_from(timeout_ms).ok().map(Duration::from_millis);
        let Answer::Waited(done) = ask(conv, Ask::Wait(limit))? else {
            unreachable!("a wait ask gets a wait answer")
        };
        Ok(c_int::from(done))
    })
}

/// Ends the converging thread after a finish; the region is free again.
fn end(cell: &ConvCell) {
    let thread = {
        let mut g = cell.lock().unwrap_or_else(|e| e.into_inner());
        g.asks = None;
        g.thread.take()
    };
    if let Some(t) = thread {
        let _ = t.join();
    }
}

/// Call while the program's writers are quiescent (a converging snapshot
/// started with `path` NULL): copies what was written since the last round
/// (the pause) and returns the snapshot of the region at this instant, which
/// becomes its sync point. Frees `conv` in every case. NULL on failure (dead
/// handle, a save's handle, out of memory: nothing is lost, the region's next
/// snapshot still sees every write).
///
/// Ownership: the caller owns the returned snapshot and frees it with
/// ps_snapshot_free().
#[no_mangle]
pub extern "C" fn ps_converging_finish(conv: *mut ps_converging) -> *mut ps_snapshot {
    call(std::ptr::null_mut(), || {
        let cell: ConvCell = handle::get(conv, CONV)?;
        if cell.lock().unwrap_or_else(|e| e.into_inner()).save {
            return Err(CallError::Misuse(
                "conv (ps_converging *) saves to a file: finish it with ps_converging_finish_save()",
            ));
        }
        handle::remove::<ConvCell>(conv, CONV)?;
        let answer = ask_cell(&cell, Ask::Finish);
        end(&cell);
        match answer? {
            Answer::Snapshot(s) => Ok(handle::insert(s?)),
            _ => unreachable!("a store finish answers with a snapshot"),
        }
    })
}

/// Call while the program's writers are quiescent (a converging save): copies
/// what was written since the last round (the pause) and returns; the file of
/// this instant is completed in the background while writers go on, on idle
/// CPU time as the rounds (ps_converging_save_wait() raises it). The
/// region's sync point does not move. `conv` stays the caller's: pass it to
/// ps_converging_save_wait() (or ps_converging_free(), which also waits for
/// the file). Returns 0, or -1 (dead handle, not a save, I/O error: no file is
/// left at the path, any older file is untouched).
#[no_mangle]
pub extern "C" fn ps_converging_finish_save(conv: *mut ps_converging) -> c_int {
    call(-1, || {
        let cell: ConvCell = handle::get(conv, CONV)?;
        if !cell.lock().unwrap_or_else(|e| e.into_inner()).save {
            return Err(CallError::Misuse(
                "conv (ps_converging *) goes into the store: finish it with ps_converging_finish()",
            ));
        }
        let copied = match ask(conv, Ask::Progress)? {
            Answer::Progress(p) => p.copied,
            _ => 0,
        };
        let t = Instant::now();
        let answer = ask(conv, Ask::Finish);
        end(&cell);
        let Answer::Saving(saving) = answer? else {
            unreachable!("a save finish answers with the saving file")
        };
        cell.lock().unwrap_or_else(|e| e.into_inner()).saving = Some((saving?, t, copied));
        Ok(0)
    })
}

/// Waits until the file of a ps_converging_finish_save() is complete and
/// durable, fills `*report` (if not NULL; `writer_waits` is always 0: writers
/// never wait) and frees `conv` in every case. Returns 0, or -1 (dead handle,
/// not finished, I/O error: the file is then not there, any older file is
/// untouched).
///
/// # Safety
/// `report` is NULL or points to a writable ps_save_report.
#[no_mangle]
pub unsafe extern "C" fn ps_converging_save_wait(
    conv: *mut ps_converging,
    report: *mut ps_save_report,
) -> c_int {
    call(-1, || {
        let cell: ConvCell = handle::get(conv, CONV)?;
        handle::remove::<ConvCell>(conv, CONV)?;
        let taken = cell.lock().unwrap_or_else(|e| e.into_inner()).saving.take();
        end(&cell); // not finished: the rounds are abandoned
        let (saving, t, copied) = taken.ok_or(CallError::Misuse(
            "conv (ps_converging *) has no file to wait for: call ps_converging_finish_save() first",
        ))?;
        let r = saving.wait()?;
        if !report.is_null() {
            let out = ps_save_report {
                pages: r.pages,
                copied_pages: copied,
                stored_pages: r.stored_pages,
                file_bytes: r.bytes,
                duration_ns: crate::op_stats::nanos(t.elapsed()),
                writer_waits: 0,
                writer_wait_ns: 0,
            };
            // SAFETY: `report` is non-NULL (checked) and writable by the contract.
            unsafe { report.write(out) };
        }
        Ok(0)
    })
}

/// Frees `conv`. Before a finish it abandons the rounds: the copies are
/// discarded, a save's partial file is removed (the path is left as it was),
/// and the region's next snapshot still sees every write. After
/// ps_converging_finish_save() it waits for the file first. Returns 0, or -1
/// (dead handle).
#[no_mangle]
pub extern "C" fn ps_converging_free(conv: *mut ps_converging) -> c_int {
    call(-1, || {
        if conv.is_null() {
            return Ok(0);
        }
        let cell: ConvCell = handle::get(conv, CONV)?;
        handle::remove::<ConvCell>(conv, CONV)?;
        end(&cell);
        let saving = cell.lock().unwrap_or_else(|e| e.into_inner()).saving.take();
        if let Some((saving, _, _)) = saving {
            // Its outcome is not asked for: dropping waits for the file.
            drop(saving);
        }
        Ok(0)
    })
}
