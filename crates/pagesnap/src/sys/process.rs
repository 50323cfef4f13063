//! # Safety
//!
//! `getpid(2)`: no arguments, no memory touched, async-signal-safe (the signal
//! handler calls it to tell a forked child from the process that registered a
//! region). `personality(2)` asked for the current persona changes nothing.
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicBool, Ordering};

/// The calling process's id (`getpid(2)`; glibc and musl no longer cache it, so a
/// forked child sees its own).
pub(crate) fn id() -> u32 {
    // SAFETY: getpid has no preconditions and cannot fail.
    unsafe { libc::getpid() as u32 }
}

/// Whether the process runs with the `READ_IMPLIES_EXEC` personality
/// (`setarch --read-implies-exec`, old binaries without `PT_GNU_STACK`), or
/// did when pagesnap mapped memory (each mapping asks): the kernel adds
/// `PROT_EXEC` to every readable mapping and `mprotect` then, and a mapping
/// keeps it after the program clears the personality.
pub(crate) fn read_implies_exec() -> bool {
    static SEEN: AtomicBool = AtomicBool::new(false);
    // SAFETY: personality(0xffffffff) only reads the current persona.
    let persona = unsafe { libc::personality(0xffff_ffff) };
    if persona != -1 && persona & libc::READ_IMPLIES_EXEC != 0 {
        SEEN.store(true, Ordering::Relaxed);
        return true;
    }
    SEEN.load(Ordering::Relaxed)
}

/// A file of this process under `/proc`, reached through the calling
/// thread's directory (`/proc/thread-self/…`; a literal, so no allocation).
/// `/proc/self` names the thread-group leader: once the main thread has
/// exited (`pthread_exit` in `main`), its `maps` is empty, its `pagemap`
/// cannot be opened and its `clear_refs` clears nothing, while every thread's
/// own directory still names the process's memory. A descriptor opened there
/// keeps naming it after that thread exits.
macro_rules! proc_file {
    ($name:literal) => {
        concat!("/proc/thread-self/", $name)
    };
}
pub(crate) use proc_file;
