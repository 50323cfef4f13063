//! # Safety
//!
//! `futex(2)` wait and wake on an `AtomicU32`: the only blocking primitive that is
//! async-signal-safe, so a writer stopped in the SIGSEGV handler can sleep until
//! the background copier has saved the page it wants to write.
#![allow(unsafe_code)]

use std::sync::atomic::AtomicU32;

/// Sleeps while `word` holds `expected` (returns at once if it does not, or on a
/// wake-up or a signal: callers re-check in a loop).
pub(crate) fn wait(word: &AtomicU32, expected: u32) {
    // SAFETY: the address is a live, aligned u32 for the duration of the call;
    // FUTEX_WAIT with a null timeout only reads it.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            std::ptr::null::<libc::timespec>(),
        );
    }
}

/// Wakes every thread sleeping on `word`.
pub(crate) fn wake_all(word: &AtomicU32) {
    // SAFETY: as above; FUTEX_WAKE does not touch the memory.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            i32::MAX,
        );
    }
}
