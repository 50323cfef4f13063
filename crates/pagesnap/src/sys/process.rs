//! # Safety
//!
//! `getpid(2)`: no arguments, no memory touched, async-signal-safe (the signal
//! handler calls it to tell a forked child from the process that registered a
//! region).
#![allow(unsafe_code)]

/// The calling process's id (`getpid(2)`; glibc and musl no longer cache it, so a
/// forked child sees its own).
pub(crate) fn id() -> u32 {
    // SAFETY: getpid has no preconditions and cannot fail.
    unsafe { libc::getpid() as u32 }
}
