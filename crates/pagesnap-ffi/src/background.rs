//! `ps_background`: a consistent snapshot taken while writers keep running (the
//! fork() replacement).

use crate::handle::{self, Handled, Object};
use crate::region::{ps_region, RegionCell};
use crate::snapshot::ps_snapshot;
use crate::status::{call, CallError};
use pagesnap_lib::Background;
use std::ffi::{c_char, c_int};
use std::sync::{Arc, Mutex};

/// A background snapshot in progress. Opaque: only pointers to it exist.
#[allow(non_camel_case_types)]
pub struct ps_background {
    _opaque: [u8; 0],
}

/// A background snapshot behind a handle: `None` once ps_background_wait() has
/// taken it (the handle is unregistered at that moment too).
pub(crate) type BackgroundCell = Arc<Mutex<Option<Background>>>;

impl Handled for BackgroundCell {
    type Handle = ps_background;
    const KIND: &'static str = "ps_background";
    fn into_object(self) -> Object {
        Object::Background(self)
    }
    fn from_object(o: &Object) -> Option<Self> {
        match o {
            Object::Background(b) => Some(b.clone()),
            _ => None,
        }
    }
}

const BG: &str = "bg (ps_background *)";

/// Starts a consistent snapshot of the region as it is now and returns as soon as
/// the region is write-protected; other threads may keep writing meanwhile (a
/// writer touching a part not yet copied copies that batch, 64 KiB to 2 MiB, into
/// staging memory itself, or waits for the copier when that memory is full).
/// Tracking stays exact: the next ps_snapshot_take() sees every write. One
/// background snapshot per region at a time. NULL on failure.
///
/// Ownership: the caller owns the handle and must pass it to ps_background_wait()
/// (which frees it) or ps_background_free().
#[no_mangle]
pub extern "C" fn ps_background_snapshot(region: *mut ps_region) -> *mut ps_background {
    call(std::ptr::null_mut(), || {
        let r: Arc<RegionCell> = handle::get(region, "region (ps_region *)")?;
        let bg = {
            let _heap = r.heap_lock();
            let region = r.lock()?;
            region.background_snapshot()?
        };
        Ok(handle::insert::<BackgroundCell>(Arc::new(Mutex::new(
            Some(bg),
        ))))
    })
}

/// Waits until the background copy is done and returns the snapshot of the region
/// at the instant ps_background_snapshot() returned. Frees `bg` in every case
/// (success or failure): do not use it again. NULL on failure.
///
/// Ownership: the caller owns the returned snapshot and frees it with
/// ps_snapshot_free().
#[no_mangle]
pub extern "C" fn ps_background_wait(bg: *mut ps_background) -> *mut ps_snapshot {
    call(std::ptr::null_mut(), || {
        let cell: BackgroundCell = handle::get(bg, BG)?;
        // Whoever unregisters the handle first owns the wait; a racing second call
        // sees a dead handle.
        handle::remove::<BackgroundCell>(bg, BG)?;
        let taken = cell.lock().unwrap_or_else(|e| e.into_inner()).take();
        let job = taken.ok_or(CallError::NotLive {
            arg: BG,
            addr: bg as usize,
            kind: "ps_background",
        })?;
        Ok(handle::insert(job.wait()?))
    })
}

/// Whether the background copy has finished: 1 yes, 0 not yet, -1 if `bg` is not
/// a live handle. Never blocks.
#[no_mangle]
pub extern "C" fn ps_background_done(bg: *const ps_background) -> c_int {
    call(-1, || {
        let cell: BackgroundCell = handle::get(bg, BG)?;
        let done = cell
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_none_or(|b| b.is_finished());
        Ok(c_int::from(done))
    })
}

/// Fills `*out` with how far the background snapshot has come. Never blocks.
/// Returns 0, or -1 (dead handle, NULL out).
///
/// # Safety
/// `out` is NULL or points to a writable ps_progress.
#[no_mangle]
pub unsafe extern "C" fn ps_background_progress(
    bg: *const ps_background,
    out: *mut crate::save_job::ps_progress,
) -> c_int {
    // SAFETY: `out` is NULL or writable, as this function's contract says.
    unsafe { crate::save_job::job_progress(|| handle::get::<BackgroundCell>(bg, BG), out) }
}

/// Abandons a background snapshot: waits for the copy to finish (so no writer stays
/// blocked), discards the result and frees `bg`. NULL is a no-op (returns 0); -1
/// for a handle that is not live.
#[no_mangle]
pub extern "C" fn ps_background_free(bg: *mut ps_background) -> c_int {
    call(-1, || handle::remove::<BackgroundCell>(bg, BG).map(|_| 0))
}

/// Saves a consistent snapshot of the region as it is now straight to a snapshot
/// file at `path` (atomically replacing any file there), and returns when the file
/// is complete and durable. Other threads may keep writing meanwhile: only the
/// calling thread waits (a writer touching a part not yet saved waits until it
/// is). The pages go to the file, not into the store; memory used is a few
/// buffers. ps_snapshot_load() reads the file. Returns 0, or -1 (dead handle, NULL
/// path, a background snapshot of this region already running, I/O error — the
/// writers are released and no file is left in every failure case).
///
/// # Safety
/// `path` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn ps_background_save(region: *mut ps_region, path: *const c_char) -> c_int {
    call(-1, || {
        let r: Arc<RegionCell> = handle::get(region, "region (ps_region *)")?;
        // SAFETY: `path` is NULL or NUL-terminated by this function's contract.
        let path = unsafe { crate::file::path_arg(path) }?;
        // The region's lock is held only to start: writers and other calls on
        // the region go on while the file is written.
        let bg = {
            let _heap = r.heap_lock();
            let region = r.lock()?;
            region.background_save(path)?
        };
        bg.wait()?;
        Ok(0)
    })
}
