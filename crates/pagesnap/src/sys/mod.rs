//! Thin wrappers around the Linux mechanisms pagesnap uses.
//!
//! Every `unsafe` block of the crate that talks to the kernel lives in this
//! folder, one file per mechanism; each wrapper states the invariant it relies on
//! in a `// SAFETY:` line. The only other unsafe code is the heap's allocator
//! (`heap/alloc.rs`), fenced in its own module. `sys/` imports nothing from the
//! layers above it.
#![allow(unsafe_code)]

pub(crate) mod futex;
pub(crate) mod maps;
pub(crate) mod memfd;
pub(crate) mod mmap;
pub(crate) mod pagemap;
pub(crate) mod process;
pub(crate) mod room;
pub(crate) mod sched;
pub(crate) mod signal;
pub(crate) mod staging;
pub(crate) mod thread;
#[cfg(feature = "remote")]
pub(crate) mod uffd_missing;
pub(crate) mod userfaultfd;

use std::sync::OnceLock;

/// The base page size of this machine (`sysconf(_SC_PAGESIZE)`), read once.
pub(crate) fn page_size() -> usize {
    static PAGE: OnceLock<usize> = OnceLock::new();
    *PAGE.get_or_init(|| {
        // SAFETY: sysconf has no memory-safety preconditions.
        let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if n > 0 {
            n as usize
        } else {
            4096
        }
    })
}
