//! `ps_save_job`: a background save whose instant the caller sees
//! (`ps_background_save_start`), then waits for, polls or abandons.

use crate::handle::{self, Handled, Object};
use crate::region::{ps_region, RegionCell};
use crate::status::{call, CallError};
use pagesnap_lib::{BackgroundSave, Progress};
use std::ffi::{c_char, c_int};
use std::sync::{Arc, Mutex};

/// A background save in progress. Opaque: only pointers to it exist.
#[allow(non_camel_case_types)]
pub struct ps_save_job {
    _opaque: [u8; 0],
}

/// How far a background snapshot or save has come, from ps_save_job_progress()
/// or ps_background_progress().
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ps_progress {
    /// Pages copied out of the region so far: those written since its last sync
    /// point (the others come from that snapshot, already stored).
    pub copied_pages: u64,
    /// Pages to copy in all.
    pub total_pages: u64,
    /// Batches (64 KiB to 2 MiB) that writers touched before the copier
    /// reached them, and so waited for (served ahead of order).
    pub writer_waits: u64,
    /// Nanoseconds writers spent held up so far, all writers together: copying
    /// their batch into the staging pool, or waiting for the copier.
    pub writer_wait_ns: u64,
    /// 1 once the copy (and for a save, the file) is complete; 0 before.
    pub done: u64,
}

/// What a finished background save wrote, from ps_save_job_wait().
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ps_save_report {
    /// Pages in the saved snapshot (the region's).
    pub pages: u64,
    /// Pages copied out of the region (written since its last sync point).
    pub copied_pages: u64,
    /// Page records in the file (distinct non-zero pages).
    pub stored_pages: u64,
    /// The file's size in bytes.
    pub file_bytes: u64,
    /// Nanoseconds from the instant until the file was complete and durable.
    pub duration_ns: u64,
    /// Batches writers waited for.
    pub writer_waits: u64,
    /// Nanoseconds writers spent held up, all writers together.
    pub writer_wait_ns: u64,
}

pub(crate) type SaveCell = Arc<Mutex<Option<BackgroundSave>>>;

impl Handled for SaveCell {
    type Handle = ps_save_job;
    const KIND: &'static str = "ps_save_job";
    fn into_object(self) -> Object {
        Object::Save(self)
    }
    fn from_object(o: &Object) -> Option<Self> {
        match o {
            Object::Save(s) => Some(s.clone()),
            _ => None,
        }
    }
}

const JOB: &str = "job (ps_save_job *)";

/// A job whose progress the `*_progress` functions report.
pub(crate) trait Job {
    fn progress(&self) -> Progress;
    fn is_finished(&self) -> bool;
}

impl Job for BackgroundSave {
    fn progress(&self) -> Progress {
        BackgroundSave::progress(self)
    }
    fn is_finished(&self) -> bool {
        BackgroundSave::is_finished(self)
    }
}

impl Job for pagesnap_lib::Background {
    fn progress(&self) -> Progress {
        pagesnap_lib::Background::progress(self)
    }
    fn is_finished(&self) -> bool {
        pagesnap_lib::Background::is_finished(self)
    }
}

/// The body of ps_save_job_progress() and ps_background_progress(): the
/// progress of the job behind the handle `get` looks up, into `*out` (zeros
/// once the job was taken by a wait).
///
/// # Safety
/// `out` is NULL or points to a writable ps_progress.
pub(crate) unsafe fn job_progress<J: Job>(
    get: impl FnOnce() -> Result<Arc<Mutex<Option<J>>>, CallError>,
    out: *mut ps_progress,
) -> c_int {
    call(-1, || {
        let cell = get()?;
        if out.is_null() {
            return Err(CallError::Null {
                arg: "out (ps_progress *)",
            });
        }
        let p = {
            let g = cell.lock().unwrap_or_else(|e| e.into_inner());
            match g.as_ref() {
                Some(job) => {
                    let p = job.progress();
                    ps_progress {
                        copied_pages: p.copied,
                        total_pages: p.total,
                        writer_waits: p.faults,
                        writer_wait_ns: crate::op_stats::nanos(p.writers_waited),
                        done: u64::from(job.is_finished()),
                    }
                }
                None => ps_progress::default(),
            }
        };
        // SAFETY: `out` is non-NULL (checked) and writable by this function's contract.
        unsafe { out.write(p) };
        Ok(0)
    })
}

/// Starts saving the region as it is at this instant to a snapshot file at
/// `path`, and returns as soon as the instant has passed (the region is
/// write-protected): from then on, writes by any thread go to the live region,
/// not to the file. The copy and the file are finished by a pagesnap thread;
/// ps_save_job_wait() waits for the file to be complete and durable (it
/// atomically replaces any file at `path`). A writer touching a part not yet
/// copied waits until it is. NULL on failure (dead handle, NULL path, a
/// background snapshot or save of this region running, the file cannot be
/// created); the writers are never left blocked.
///
/// What writers must hold at the instant: the file holds the region exactly as
/// it is when this call takes its instant, mid-operation states included. A lock
/// that lives in the region and is held at the instant is held in the file, and
/// stays held forever in whatever is restored from it; a half-done update is half
/// done there. So make the instant a quiet point: call this while holding the
/// lock(s) that writers take around their updates (e.g. your own mutex around
/// each SQLite transaction), and release them once this returns; writers then go
/// on at once. The heap lock (ps_heap_*) is taken for the instant, so allocator
/// state is always whole in the file.
///
/// Ownership: the caller owns the job and must pass it to ps_save_job_wait()
/// (which frees it) or ps_save_job_free().
///
/// # Safety
/// `path` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn ps_background_save_start(
    region: *mut ps_region,
    path: *const c_char,
) -> *mut ps_save_job {
    call(std::ptr::null_mut(), || {
        let r: Arc<RegionCell> = handle::get(region, "region (ps_region *)")?;
        // SAFETY: `path` is NULL or NUL-terminated by this function's contract.
        let path = unsafe { crate::file::path_arg(path) }?;
        let job = {
            let _heap = r.heap_lock();
            let region = r.lock()?;
            region.background_save(path)?
        };
        Ok(handle::insert::<SaveCell>(Arc::new(Mutex::new(Some(job)))))
    })
}

/// Waits until the file is complete and durable, fills `*report` (if not NULL)
/// and frees `job` in every case (success or failure). Returns 0, or -1 (dead
/// handle, I/O error: the file is then not there, any older file is untouched).
///
/// # Safety
/// `report` is NULL or points to a writable ps_save_report.
#[no_mangle]
pub unsafe extern "C" fn ps_save_job_wait(
    job: *mut ps_save_job,
    report: *mut ps_save_report,
) -> c_int {
    call(-1, || {
        let cell: SaveCell = handle::get(job, JOB)?;
        handle::remove::<SaveCell>(job, JOB)?;
        let taken = cell.lock().unwrap_or_else(|e| e.into_inner()).take();
        let save = taken.ok_or(CallError::NotLive {
            arg: JOB,
            addr: job as usize,
            kind: "ps_save_job",
        })?;
        let r = save.wait()?;
        if !report.is_null() {
            let out = ps_save_report {
                pages: r.pages,
                copied_pages: r.copied,
                stored_pages: r.stored_pages,
                file_bytes: r.bytes,
                duration_ns: crate::op_stats::nanos(r.duration),
                writer_waits: r.faults,
                writer_wait_ns: crate::op_stats::nanos(r.writers_waited),
            };
            // SAFETY: `report` is non-NULL (checked) and writable by the contract.
            unsafe { report.write(out) };
        }
        Ok(0)
    })
}

/// Whether the save has finished (file complete, or failed: ps_save_job_wait()
/// says which): 1 yes, 0 not yet, -1 if `job` is not a live handle. Never blocks.
#[no_mangle]
pub extern "C" fn ps_save_job_done(job: *const ps_save_job) -> c_int {
    call(-1, || {
        let cell: SaveCell = handle::get(job, JOB)?;
        let done = cell
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_none_or(|s| s.is_finished());
        Ok(c_int::from(done))
    })
}

/// Fills `*out` with how far the save has come. Never blocks. Returns 0, or -1
/// (dead handle, NULL out).
///
/// # Safety
/// `out` is NULL or points to a writable ps_progress.
#[no_mangle]
pub unsafe extern "C" fn ps_save_job_progress(
    job: *const ps_save_job,
    out: *mut ps_progress,
) -> c_int {
    // SAFETY: `out` is NULL or writable, as this function's contract says.
    unsafe { job_progress(|| handle::get::<SaveCell>(job, JOB), out) }
}

/// Abandons waiting: lets the save finish (so no writer stays blocked; the file
/// is still written) and frees `job`. NULL is a no-op (returns 0); -1 for a
/// handle that is not live.
#[no_mangle]
pub extern "C" fn ps_save_job_free(job: *mut ps_save_job) -> c_int {
    call(-1, || handle::remove::<SaveCell>(job, JOB).map(|_| 0))
}
