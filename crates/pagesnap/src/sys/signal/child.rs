//! A child forked from the process that registered regions. Tracking does not
//! follow it: its regions are its own copies, which it may read and write
//! freely, so the protection pagesnap left on them (mprotect tracking's
//! read-only pages, a point-in-time snapshot's batches not yet copied) only
//! gets in its way.
//!
//! Its own writes fault into the handler, which lifts the page (`lift`). The
//! kernel's writes do not: a `read(2)` into a page left read-only fails with
//! EFAULT, in the child forever (measured before, every backend: a child
//! forked during a point-in-time snapshot could never `read(2)` into pages
//! its parent had not copied at the fork). So a `pthread_atfork` handler
//! makes every inherited region writable as the child starts. `vfork` and
//! `posix_spawn` children share the parent's memory and run no such handler.

use super::background::BACKGROUND;
use super::tracked::SLOTS;
use super::{keeping_errno, make_writable, BACKGROUND_HIGH, SLOTS_HIGH};
use std::sync::atomic::Ordering;
use std::sync::Once;

/// In a child: makes the page at `page_addr` of the inherited region
/// `[start, start + len)` writable; at the limit of mappings, where lifting
/// one page would split a mapping, the whole region (tracking does not
/// follow the child, so nothing needs to stay protected).
pub(super) fn lift(page_addr: usize, page: usize, start: usize, len: usize) -> bool {
    make_writable(page_addr, page)
        || (std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOMEM)
            && make_writable(start, len))
}

/// Registers [`in_child`] to run in every child of `fork`, once.
pub(super) fn lift_regions_in_children() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: in_child is an `extern "C" fn()` that lives forever; a
        // failure (ENOMEM) only leaves children to the handler's lazy lifts.
        unsafe { libc::pthread_atfork(None, None, Some(in_child)) };
    });
}

/// Runs in the child after `fork`: every region registered by then was
/// registered by an ancestor, and is the child's own copy.
extern "C" fn in_child() {
    keeping_errno(|| {
        let background = BACKGROUND[..BACKGROUND_HIGH.load(Ordering::Acquire)]
            .iter()
            .map(|e| (&e.start, &e.len));
        let tracked = SLOTS[..SLOTS_HIGH.load(Ordering::Acquire)]
            .iter()
            .map(|s| (&s.start, &s.len));
        for (start, len) in background.chain(tracked) {
            let start = start.load(Ordering::Acquire);
            if start != 0 {
                // Already read-write: the kernel returns at once, touching no
                // page table.
                make_writable(start, len.load(Ordering::Relaxed));
            }
        }
    });
}
