//! Tracking constants and what this machine offers: `ps_tracking_*`, `ps_page_size`,
//! `ps_version`.

use crate::status::{call, CallError};
use pagesnap_lib::Tracking;
use std::ffi::{c_char, c_int};

/// Pick the best backend this machine offers (or the one `PAGESNAP_TRACKING` names).
pub const PS_TRACKING_AUTO: c_int = 0;
/// userfaultfd write-protect (async) with PAGEMAP_SCAN: Linux >= 6.7.
pub const PS_TRACKING_UFFD_WP: c_int = 1;
/// The kernel's soft-dirty bits (needs CONFIG_MEM_SOFT_DIRTY).
pub const PS_TRACKING_SOFT_DIRTY: c_int = 2;
/// Read-only mapping + SIGSEGV handler. read(2) into the region fails with EFAULT.
pub const PS_TRACKING_MPROTECT: c_int = 3;
/// No kernel help: every page hashed and compared at each snapshot.
pub const PS_TRACKING_COMPARE: c_int = 4;

/// The backend a `PS_TRACKING_*` constant names.
pub(crate) fn from_c(tracking: c_int) -> Result<Tracking, CallError> {
    Ok(match tracking {
        PS_TRACKING_AUTO => Tracking::Auto,
        PS_TRACKING_UFFD_WP => Tracking::UffdWp,
        PS_TRACKING_SOFT_DIRTY => Tracking::SoftDirty,
        PS_TRACKING_MPROTECT => Tracking::Mprotect,
        PS_TRACKING_COMPARE => Tracking::Compare,
        other => return Err(CallError::BadTracking(other)),
    })
}

/// The `PS_TRACKING_*` constant of a backend.
pub(crate) fn to_c(tracking: Tracking) -> c_int {
    match tracking {
        Tracking::Auto => PS_TRACKING_AUTO,
        Tracking::UffdWp => PS_TRACKING_UFFD_WP,
        Tracking::SoftDirty => PS_TRACKING_SOFT_DIRTY,
        Tracking::Mprotect => PS_TRACKING_MPROTECT,
        Tracking::Compare => PS_TRACKING_COMPARE,
    }
}

/// The name of a `PS_TRACKING_*` constant: "auto", "uffd-wp", "soft-dirty",
/// "mprotect" or "compare" (the names `PAGESNAP_TRACKING` accepts).
///
/// Returns NULL for any other value (see ps_last_error()).
/// Ownership: a static string; never free it.
#[no_mangle]
pub extern "C" fn ps_tracking_name(tracking: c_int) -> *const c_char {
    call(std::ptr::null(), || {
        Ok(match from_c(tracking)? {
            Tracking::Auto => c"auto",
            Tracking::UffdWp => c"uffd-wp",
            Tracking::SoftDirty => c"soft-dirty",
            Tracking::Mprotect => c"mprotect",
            Tracking::Compare => c"compare",
        }
        .as_ptr())
    })
}

/// Whether a backend works on this machine: 1 yes, 0 no (ps_last_error() then
/// says why), -1 for a value that is not a `PS_TRACKING_*` constant.
/// `PS_TRACKING_AUTO` is always available. The kernel is probed once per process.
#[no_mangle]
pub extern "C" fn ps_tracking_available(tracking: c_int) -> c_int {
    let r = call(-1, || {
        let t = from_c(tracking)?;
        match pagesnap_lib::probe().backend(t) {
            None => Ok(1), // Auto
            Some(b) if b.available => Ok(1),
            // Reported as an error so the message says why; mapped to 0 below.
            Some(b) => Err(CallError::Library(pagesnap_lib::Error::Unavailable {
                backend: t,
                reason: b.reason.clone(),
            })),
        }
    });
    if r == -1 && from_c(tracking).is_ok() {
        0
    } else {
        r
    }
}

/// The backend `PS_TRACKING_AUTO` picks on this machine (before
/// `PAGESNAP_TRACKING` is applied): one of the concrete `PS_TRACKING_*` constants.
#[no_mangle]
pub extern "C" fn ps_tracking_auto() -> c_int {
    call(-1, || Ok(to_c(pagesnap_lib::probe().auto)))
}

/// The base page size in bytes; region and snapshot lengths are multiples of it.
#[no_mangle]
pub extern "C" fn ps_page_size() -> usize {
    call(0, || Ok(pagesnap_lib::page_size()))
}

/// The library's version, e.g. "0.1.0". Ownership: a static string; never free it.
#[no_mangle]
pub extern "C" fn ps_version() -> *const c_char {
    const VERSION: &std::ffi::CStr = match std::ffi::CStr::from_bytes_with_nul(
        concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes(),
    ) {
        Ok(v) => v,
        Err(_) => panic!("the crate version has a NUL byte"),
    };
    VERSION.as_ptr()
}
