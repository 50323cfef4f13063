//! `ps_snapshot`: an immutable, deduplicated copy of a region's contents.

use crate::handle::{self, Handled, Object};
use crate::status::{call, CallError};
use pagesnap_lib::Snapshot;
use std::ffi::{c_int, c_void};

/// The contents of a region at one instant; shares its pages with every other
/// snapshot holding the same contents. Opaque: only pointers to it exist.
/// Immutable, so any number of threads may use one snapshot at once.
#[allow(non_camel_case_types)]
pub struct ps_snapshot {
    _opaque: [u8; 0],
}

impl Handled for Snapshot {
    type Handle = ps_snapshot;
    const KIND: &'static str = "ps_snapshot";
    fn into_object(self) -> Object {
        Object::Snapshot(self)
    }
    fn from_object(o: &Object) -> Option<Self> {
        match o {
            Object::Snapshot(s) => Some(s.clone()),
            _ => None,
        }
    }
}

const SNAP: &str = "snap (ps_snapshot *)";

/// The address of the region the snapshot was taken from: where the pointers it
/// holds into itself are valid (give it to ps_snapshot_instantiate_at()). Kept in
/// snapshot files. NULL for a snapshot loaded from a file written before the
/// format recorded it, or if `snap` is not a live handle (ps_last_error() tells
/// them apart).
///
/// Ownership: an address, not memory: nothing is mapped there on pagesnap's
/// account, and the caller must not dereference it unless a region is mapped there.
#[no_mangle]
pub extern "C" fn ps_snapshot_origin(snap: *const ps_snapshot) -> *mut c_void {
    call(std::ptr::null_mut(), || {
        let s: Snapshot = handle::get(snap, SNAP)?;
        Ok(s.origin().unwrap_or(0) as *mut c_void)
    })
}

/// Releases a snapshot handle; pages no other snapshot holds are freed. NULL is a
/// no-op (returns 0); -1 for a handle that is not live (e.g. freed twice).
#[no_mangle]
pub extern "C" fn ps_snapshot_free(snap: *mut ps_snapshot) -> c_int {
    call(-1, || handle::remove::<Snapshot>(snap, SNAP).map(|_| 0))
}

/// Writes the snapshot's 128-bit content digest to out[0..16] (big-endian): equal
/// for snapshots with equal contents and length, different otherwise. `out` must
/// point to 16 writable bytes. Returns 0, or -1 (dead handle, NULL out).
///
/// # Safety
/// `out` is NULL or points to 16 writable bytes.
#[no_mangle]
pub unsafe extern "C" fn ps_snapshot_digest(snap: *const ps_snapshot, out: *mut u8) -> c_int {
    call(-1, || {
        let s: Snapshot = handle::get(snap, SNAP)?;
        if out.is_null() {
            return Err(CallError::Null {
                arg: "out (uint8_t[16])",
            });
        }
        let bytes = s.digest().to_bytes();
        // SAFETY: `out` is non-NULL (checked above) and points to 16 writable bytes
        // by this function's contract; `bytes` is a local array, so they cannot overlap.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), out, bytes.len()) };
        Ok(0)
    })
}

/// The snapshot's length in bytes (its region's length). 0 if `snap` is not a live
/// handle (a snapshot is never empty).
#[no_mangle]
pub extern "C" fn ps_snapshot_len(snap: *const ps_snapshot) -> usize {
    call(0, || Ok(handle::get::<Snapshot>(snap, SNAP)?.len()))
}

/// Copies `len` bytes of the snapshot, starting at byte `offset`, into `buf`.
/// `buf` must point to `len` writable bytes (it may be NULL when `len` is 0).
/// Returns 0, or -1 (dead handle, NULL buf, a range past the end).
///
/// # Safety
/// `buf` is NULL or points to `len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn ps_snapshot_read(
    snap: *const ps_snapshot,
    offset: usize,
    buf: *mut c_void,
    len: usize,
) -> c_int {
    call(-1, || {
        let s: Snapshot = handle::get(snap, SNAP)?;
        // The range is checked before `buf` becomes a slice, so the slice is never
        // longer than the snapshot (and so never longer than isize::MAX).
        if offset.checked_add(len).is_none_or(|end| end > s.len()) {
            return Err(pagesnap_lib::Error::OutOfBounds {
                offset,
                len,
                snapshot: s.len(),
            }
            .into());
        }
        if len == 0 {
            return Ok(0);
        }
        if buf.is_null() {
            return Err(CallError::Null {
                arg: "buf (void *)",
            });
        }
        // SAFETY: `buf` is non-NULL and `len` <= the snapshot's length <= isize::MAX
        // (both checked above); it points to `len` writable bytes by this function's
        // contract; nothing this call reads aliases it
        // (a snapshot's pages live in the store's own heap frames).
        let out = unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), len) };
        s.read(offset, out)?;
        Ok(0)
    })
}
