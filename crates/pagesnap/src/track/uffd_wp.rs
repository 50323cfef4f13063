//! userfaultfd write-protect in async mode, collected with `PAGEMAP_SCAN`.
//!
//! The region is registered with a userfaultfd (`UFFD_USER_MODE_ONLY`, so it works
//! unprivileged) that has `WP_ASYNC` and `WP_UNPOPULATED`: a write to a protected
//! page is resolved inside the kernel, which lifts the protection and marks the
//! page *written* — no thread of ours is involved, and kernel-mode writes
//! (`read(2)` into the region) are tracked too. `PAGEMAP_SCAN` with
//! `PM_SCAN_WP_MATCHING` then reports the written pages and protects them again in
//! the same pass.

use super::Tracker;
use crate::error::{Error, Result};
use crate::sys::mmap::Mapping;
use crate::sys::pagemap::Pagemap;
use crate::sys::{page_size, userfaultfd};
use crate::Tracking;
use std::io;
use std::os::fd::OwnedFd;

pub(crate) struct UffdWp {
    /// Closing it unregisters the region.
    _fd: OwnedFd,
    pagemap: Pagemap,
    start: usize,
    len: usize,
}

fn track_err(step: &'static str, addr: usize, len: usize) -> impl FnOnce(io::Error) -> Error {
    move |source| Error::Track {
        backend: Tracking::UffdWp,
        step,
        addr,
        len,
        source,
    }
}

impl UffdWp {
    /// Registers and write-protects all of `map`.
    pub(crate) fn arm(map: &Mapping) -> Result<UffdWp> {
        let (start, len) = (map.as_ptr() as usize, map.len());
        let (fd, _) = userfaultfd::open().map_err(|f| Error::Unavailable {
            backend: Tracking::UffdWp,
            reason: format!(
                "userfaultfd(2): {}; /dev/userfaultfd: {}",
                f.syscall, f.device
            ),
        })?;
        let want = u64::from(userfaultfd::FEATURE_WP_ASYNC | userfaultfd::FEATURE_WP_UNPOPULATED);
        userfaultfd::api(&fd, want).map_err(track_err(
            "UFFDIO_API (WP_ASYNC | WP_UNPOPULATED)",
            start,
            len,
        ))?;
        userfaultfd::register_wp(&fd, start, len).map_err(track_err(
            "UFFDIO_REGISTER",
            start,
            len,
        ))?;
        userfaultfd::write_protect(&fd, start, len, true).map_err(track_err(
            "UFFDIO_WRITEPROTECT",
            start,
            len,
        ))?;
        let pagemap = Pagemap::open().map_err(track_err("open /proc/self/pagemap", start, len))?;
        Ok(UffdWp {
            _fd: fd,
            pagemap,
            start,
            len,
        })
    }

    fn scan(
        &mut self,
        from: usize,
        to: usize,
        reprotect: bool,
        dirty: Option<&mut Vec<usize>>,
    ) -> Result<()> {
        let (base, page) = (self.start, page_size());
        let mut sink = dirty;
        self.pagemap
            .scan_written(from, to, reprotect, |s, e| {
                if let Some(out) = sink.as_deref_mut() {
                    out.extend((s - base) / page..(e - base) / page);
                }
            })
            .map_err(track_err("PAGEMAP_SCAN", from, to - from))
    }
}

impl Tracker for UffdWp {
    fn kind(&self) -> Tracking {
        Tracking::UffdWp
    }

    fn collect(&mut self, _map: &Mapping, dirty: &mut Vec<usize>) -> Result<()> {
        self.scan(self.start, self.start + self.len, true, Some(dirty))
    }

    fn peek(&mut self, _map: &Mapping, dirty: &mut Vec<usize>) -> Result<()> {
        self.scan(self.start, self.start + self.len, false, Some(dirty))
    }

    fn rearm(&mut self, _map: &Mapping, written: &[usize]) -> Result<()> {
        let (Some(first), Some(last)) = (written.first(), written.last()) else {
            return Ok(());
        };
        let page = page_size();
        let (from, to) = (self.start + first * page, self.start + (last + 1) * page);
        self.scan(from, to, true, None)
    }
}
