//! fork(): which process a region belongs to.
//!
//! A child forked from a process that uses pagesnap inherits its regions' memory
//! (copy-on-write) but not their tracking: the kernel drops userfaultfd
//! registrations in the child, a `/proc/self/pagemap` opened before the fork
//! still names the parent (so a scan through it would read — and re-protect —
//! the parent's pages), `clear_refs` acts on whichever process writes it, and no
//! copier thread of a background snapshot exists in the child. So every region
//! and background snapshot records the process that made it, and refuses work
//! in any other ([`Error::ForkedChild`]) before touching a lock or a descriptor:
//!
//! ```text
//!  parent (owner)                          child (inherits a copy)
//!  ───────────────                         ───────────────────────
//!  snapshot / restore / background: work   snapshot / restore / reset /
//!  tracking exact whatever the child does  background_*: Err(ForkedChild)
//!                                          Background::wait: Err at once (no join)
//!                                          reads and writes: go through (the
//!                                          SIGSEGV handler lifts inherited
//!                                          protection instead of waiting)
//!                                          new regions: its own, fully working
//! ```

use crate::error::{Error, Result};
use crate::sys::process;

/// The process that created a region or a background snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Owner {
    pid: u32,
}

impl Owner {
    /// This process.
    pub(crate) fn here() -> Owner {
        Owner { pid: process::id() }
    }

    /// Whether this is still the process that created it (not a forked child).
    pub(crate) fn is_here(self) -> bool {
        self.pid == process::id()
    }

    /// `Err(ForkedChild)` in a forked child.
    pub(crate) fn check(self) -> Result<()> {
        let current = process::id();
        if current == self.pid {
            Ok(())
        } else {
            Err(Error::ForkedChild {
                owner: self.pid,
                current,
            })
        }
    }
}
