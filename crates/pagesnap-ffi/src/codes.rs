//! Numeric error codes (`PS_ERR_*`, from `ps_last_error_code()`) and the C
//! wording of library errors: messages name `ps_*` functions and `PS_*`
//! constants, never Rust items.

use crate::heap_layout::HeapError;
use crate::status::CallError;
use crate::tracking;
use pagesnap_lib::{error::chain, Error};
use std::ffi::c_int;

/// The last call succeeded.
pub const PS_OK: c_int = 0;
/// A pointer argument (handle, path, output buffer) was NULL.
pub const PS_ERR_NULL: c_int = 1;
/// A handle that is not live: freed already, never issued, or of another type.
pub const PS_ERR_HANDLE: c_int = 2;
/// An argument out of range: a length of 0 or one that overflows, a length that
/// does not match, an unknown PS_TRACKING_* constant, an unaligned or NULL
/// address, a read past a snapshot's end, a root slot past 15.
pub const PS_ERR_ARGUMENT: c_int = 3;
/// An explicit tracking backend this kernel or process cannot provide; or a
/// thread of the process blocks SIGSEGV, which mprotect tracking and background
/// snapshots need every writing thread to take (the message names the thread);
/// or the program changed the protection of pages of the region, which
/// background and converging snapshots set and read themselves.
pub const PS_ERR_UNAVAILABLE: c_int = 4;
/// ps_region_new_at() / ps_snapshot_instantiate_at(): the range is already mapped.
pub const PS_ERR_ADDRESS_TAKEN: c_int = 5;
/// A background snapshot or save of the region is already running, or too many
/// run at once.
pub const PS_ERR_BUSY: c_int = 6;
/// A snapshot file could not be written or read (I/O, corrupt, wrong version).
pub const PS_ERR_FILE: c_int = 7;
/// ps_heap_*: the region holds no heap, holds one formatted at another address,
/// or a pointer is not a live block of it.
pub const PS_ERR_HEAP: c_int = 8;
/// ps_heap_*: no free block is large enough.
pub const PS_ERR_HEAP_FULL: c_int = 9;
/// ps_region_reset() on a region that is not a clone.
pub const PS_ERR_NOT_A_CLONE: c_int = 10;
/// A kernel call failed (mmap, userfaultfd, memfd, ...); the message names it.
pub const PS_ERR_SYSTEM: c_int = 11;
/// pagesnap itself failed (a caught panic): please report it.
pub const PS_ERR_INTERNAL: c_int = 12;

/// The code of a failed call.
pub(crate) fn code(e: &CallError) -> c_int {
    match e {
        CallError::Null { .. } => PS_ERR_NULL,
        CallError::NotLive { .. } => PS_ERR_HANDLE,
        CallError::BadTracking(_) | CallError::Misuse(_) => PS_ERR_ARGUMENT,
        CallError::Heap(h) => match h {
            HeapError::Full { .. } => PS_ERR_HEAP_FULL,
            HeapError::BadSlot { .. }
            | HeapError::RootOutside { .. }
            | HeapError::Overflow { .. }
            | HeapError::TooSmall { .. } => PS_ERR_ARGUMENT,
            HeapError::NotFormatted | HeapError::Moved { .. } | HeapError::NotABlock { .. } => {
                PS_ERR_HEAP
            }
        },
        CallError::Library(e) => library_code(e),
        CallError::Panic(_) => PS_ERR_INTERNAL,
    }
}

fn library_code(e: &Error) -> c_int {
    match e {
        Error::ZeroLength
        | Error::LengthOverflow { .. }
        | Error::LengthMismatch { .. }
        | Error::OutOfBounds { .. }
        | Error::BadAddress { .. }
        | Error::BadTrackingVariable { .. }
        | Error::HeapTooSmall { .. }
        | Error::ForeignSnapshot => PS_ERR_ARGUMENT,
        Error::Unavailable { .. }
        | Error::FaultSignalBlocked { .. }
        | Error::ForeignProtection { .. }
        | Error::Unmapped { .. } => PS_ERR_UNAVAILABLE,
        Error::AddressTaken { .. } => PS_ERR_ADDRESS_TAKEN,
        Error::BackgroundBusy | Error::TooManyBackground { .. } | Error::TooManyRegions { .. } => {
            PS_ERR_BUSY
        }
        Error::File { .. } => PS_ERR_FILE,
        Error::NotAClone => PS_ERR_NOT_A_CLONE,
        _ => PS_ERR_SYSTEM,
    }
}

/// A library error in C terms.
pub(crate) fn message(e: &Error) -> String {
    let backend = |t: &pagesnap_lib::Tracking| match tracking::to_c(*t) {
        tracking::PS_TRACKING_UFFD_WP => "PS_TRACKING_UFFD_WP",
        tracking::PS_TRACKING_SOFT_DIRTY => "PS_TRACKING_SOFT_DIRTY",
        tracking::PS_TRACKING_MPROTECT => "PS_TRACKING_MPROTECT",
        tracking::PS_TRACKING_COMPARE => "PS_TRACKING_COMPARE",
        _ => "PS_TRACKING_AUTO",
    };
    match e {
        Error::ZeroLength => "a region must be at least one page long (len is 0)".into(),
        Error::Unavailable { backend: t, reason } => {
            format!("tracking backend {} is unavailable: {reason}", backend(t))
        }
        Error::Track {
            backend: t,
            step,
            addr,
            len,
            source,
        } => format!(
            "{} tracking: {step} failed for {len} bytes at {addr:#x}: {source}",
            backend(t)
        ),
        Error::NotAClone => "ps_region_reset() needs a clone (a region made by ps_snapshot_instantiate() or ps_snapshot_instantiate_at()); this region was made by ps_region_new() — ps_restore() a snapshot instead".into(),
        Error::BackgroundBusy => "a background snapshot or save of this region is already running (ps_background_snapshot(), ps_background_save_start())".into(),
        Error::OutOfBounds { offset, len, snapshot } => format!(
            "ps_snapshot_read() of {len} bytes at offset {offset} is outside the snapshot ({snapshot} bytes)"
        ),
        other => chain(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_c_items() {
        let m = message(&Error::NotAClone);
        assert!(
            m.contains("ps_region_reset()") && !m.contains("Snapshot::"),
            "{m}"
        );
        let m = message(&Error::Unavailable {
            backend: pagesnap_lib::Tracking::SoftDirty,
            reason: "not compiled in".into(),
        });
        assert!(
            m.contains("PS_TRACKING_SOFT_DIRTY") && !m.contains("SoftDirty"),
            "{m}"
        );
        assert_eq!(
            code(&CallError::Library(Error::NotAClone)),
            PS_ERR_NOT_A_CLONE
        );
        assert_eq!(
            code(&CallError::Library(Error::AddressTaken {
                addr: 4096,
                len: 4096
            })),
            PS_ERR_ADDRESS_TAKEN
        );
    }
}
