//! Snapshot files: `ps_snapshot_save`, `ps_snapshot_load` and their delta forms.

use crate::handle;
use crate::snapshot::ps_snapshot;
use crate::status::{call, CallError};
use crate::store::ps_store;
use pagesnap_lib::{PageStore, Snapshot};
use std::ffi::{c_char, c_int, CStr, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

const SNAP: &str = "snap (ps_snapshot *)";
const PARENT: &str = "parent (ps_snapshot *)";

/// The path a C string names (bytes, as Linux takes them).
///
/// # Safety
/// `path` is NULL or a NUL-terminated string that stays unchanged during the call.
pub(crate) unsafe fn path_arg<'a>(path: *const c_char) -> Result<&'a Path, CallError> {
    if path.is_null() {
        return Err(CallError::Null {
            arg: "path (const char *)",
        });
    }
    // SAFETY: `path` is non-NULL (checked above) and NUL-terminated, unchanged for
    // the call, by this function's contract.
    let bytes = unsafe { CStr::from_ptr(path) }.to_bytes();
    Ok(Path::new(OsStr::from_bytes(bytes)))
}

/// Saves `snap` as a self-contained file at `path`, atomically replacing any file
/// there: a crash leaves the old file or the new one, whole. Zero pages are not
/// stored, equal pages once. Returns 0, or -1 (dead handle, NULL path, I/O error).
///
/// # Safety
/// `path` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn ps_snapshot_save(snap: *const ps_snapshot, path: *const c_char) -> c_int {
    call(-1, || {
        let s: Snapshot = handle::get(snap, SNAP)?;
        // SAFETY: `path` is NULL or NUL-terminated by this function's contract.
        let path = unsafe { path_arg(path) }?;
        s.save(path)?;
        Ok(0)
    })
}

/// Saves only the pages where `snap` differs from `parent` (a snapshot of the same
/// length) and `parent`'s digest; ps_snapshot_load_delta() with that parent rebuilds
/// `snap`. Returns 0, or -1 (dead handles, NULL path, lengths differ, I/O error).
///
/// # Safety
/// `path` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn ps_snapshot_save_delta(
    snap: *const ps_snapshot,
    parent: *const ps_snapshot,
    path: *const c_char,
) -> c_int {
    call(-1, || {
        let s: Snapshot = handle::get(snap, SNAP)?;
        let p: Snapshot = handle::get(parent, PARENT)?;
        // SAFETY: `path` is NULL or NUL-terminated by this function's contract.
        let path = unsafe { path_arg(path) }?;
        s.save_delta(path, &p)?;
        Ok(0)
    })
}

/// Loads a file written by ps_snapshot_save() into `store` (pages are deduplicated
/// against what it holds). Every part of the file is checked; a corrupt, truncated
/// or foreign file is an error and nothing is kept. NULL on failure.
///
/// Ownership: the caller owns the returned handle and frees it with
/// ps_snapshot_free().
///
/// # Safety
/// `path` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn ps_snapshot_load(
    store: *const ps_store,
    path: *const c_char,
) -> *mut ps_snapshot {
    call(std::ptr::null_mut(), || {
        let st: PageStore = handle::get(store, "store (ps_store *)")?;
        // SAFETY: `path` is NULL or NUL-terminated by this function's contract.
        let path = unsafe { path_arg(path) }?;
        Ok(handle::insert(Snapshot::load(path, &st)?))
    })
}

/// Loads a file written by ps_snapshot_save_delta() on top of `parent` (into
/// `parent`'s store). Fails if `parent` is not the snapshot the delta was saved
/// against. NULL on failure.
///
/// Ownership: the caller owns the returned handle and frees it with
/// ps_snapshot_free().
///
/// # Safety
/// `path` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn ps_snapshot_load_delta(
    parent: *const ps_snapshot,
    path: *const c_char,
) -> *mut ps_snapshot {
    call(std::ptr::null_mut(), || {
        let p: Snapshot = handle::get(parent, PARENT)?;
        // SAFETY: `path` is NULL or NUL-terminated by this function's contract.
        let path = unsafe { path_arg(path) }?;
        Ok(handle::insert(Snapshot::load_delta(path, &p)?))
    })
}
