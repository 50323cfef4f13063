//! userfaultfd write-protect in async mode, collected with `PAGEMAP_SCAN`.
//!
//! A userfaultfd (`UFFD_USER_MODE_ONLY`, so it works unprivileged) with
//! `WP_ASYNC` and `WP_UNPOPULATED` write-protects the region: a write to a
//! protected page is resolved inside the kernel, which lifts the protection and
//! marks the page *written* — no thread of ours is involved, and kernel-mode writes
//! (`read(2)` into the region) are tracked too. `PAGEMAP_SCAN` with
//! `PM_SCAN_WP_MATCHING` then reports the written pages and protects them again in
//! the same pass.
//!
//! Arming follows use, not length. With WP_UNPOPULATED the kernel builds page
//! tables for everything it protects (≈ 35 ms per GiB, and every scan walks them),
//! so a 16 GiB reservation with 1 GiB in use would pay 16×. The region is split
//! into chunks that are armed the first time they hold anything:
//!
//! ```text
//!  chunk:   [ armed ][ armed ][  never populated  ][ armed ] ...
//!  collect:  PAGEMAP_SCAN written + re-protect       (armed runs)
//!            PAGEMAP_SCAN present|swapped            (unarmed runs: holes cost ~0)
//!            → those pages are dirty (the chunk was all zeros), and the chunk is
//!              registered and protected now
//! ```
//! An unarmed chunk is all zeros at the sync point, so "populated" is exactly
//! "possibly written". Once armed, a chunk stays armed.
//!
//! A clone (`clone.rs`) is a private mapping of its snapshot's image: there an
//! unarmed chunk holds the image at the sync point, reads map page-cache pages,
//! and only a written page becomes anonymous — so "populated" leaves page-cache
//! pages out (`Pagemap::scan_populated`), and stays exactly "possibly written".

use super::error::{Result, TrackError};
use super::{runs, Tracker};
use crate::sys::mmap::{Mapping, HUGE_PAGE};
use crate::sys::pagemap::Pagemap;
use crate::sys::{page_size, userfaultfd};
use crate::Tracking;
use std::io;
use std::os::fd::OwnedFd;

/// A region is armed in at most about this many chunks.
const CHUNKS: usize = 64;

pub(crate) struct UffdWp {
    /// Closing it unregisters the region.
    fd: OwnedFd,
    pagemap: Pagemap,
    start: usize,
    len: usize,
    chunk: usize,
    armed: Vec<bool>,
}

/// Shortest run of pages a restore unprotects in one call before writing it
/// back; shorter runs take their write faults instead.
const LIFT_MIN_RUN: usize = 8;

fn track_err(step: &'static str, addr: usize, len: usize) -> impl FnOnce(io::Error) -> TrackError {
    move |source| TrackError::Track {
        backend: Tracking::UffdWp,
        step,
        addr,
        len,
        source,
    }
}

impl UffdWp {
    /// Opens the userfaultfd for `map`; chunks are armed as they come into use.
    pub(crate) fn arm(map: &Mapping) -> Result<UffdWp> {
        let (start, len) = (map.as_ptr() as usize, map.len());
        let (fd, _) = userfaultfd::open().map_err(|f| TrackError::Unavailable {
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
        let pagemap = Pagemap::open().map_err(track_err("open /proc/self/pagemap", start, len))?;
        // Whole huge pages, so a THP is never split by a registration boundary.
        let chunk = (len / CHUNKS).next_multiple_of(HUGE_PAGE).min(len);
        Ok(UffdWp {
            fd,
            pagemap,
            start,
            len,
            chunk,
            armed: vec![false; len.div_ceil(chunk)],
        })
    }

    /// Byte range of chunk `c`.
    fn chunk_range(&self, c: usize) -> (usize, usize) {
        let from = self.start + c * self.chunk;
        (from, (from + self.chunk).min(self.start + self.len))
    }

    /// Registers and write-protects chunks `first..first + n`.
    fn arm_chunks(&mut self, first: usize, n: usize) -> Result<()> {
        let (from, _) = self.chunk_range(first);
        let (_, to) = self.chunk_range(first + n - 1);
        userfaultfd::register_wp(&self.fd, from, to - from).map_err(track_err(
            "UFFDIO_REGISTER",
            from,
            to - from,
        ))?;
        userfaultfd::write_protect(&self.fd, from, to - from, true).map_err(track_err(
            "UFFDIO_WRITEPROTECT",
            from,
            to - from,
        ))?;
        self.armed[first..first + n].fill(true);
        Ok(())
    }

    /// Runs of chunks `(first, count)` that are armed (`armed`) or not.
    fn chunk_runs(&self, armed: bool) -> Vec<(usize, usize)> {
        let picked: Vec<usize> = (0..self.armed.len())
            .filter(|&c| self.armed[c] == armed)
            .collect();
        runs(&picked).collect()
    }

    /// Pages written in armed chunks (re-protecting them with `reprotect`) and,
    /// without `reprotect`, pages populated in unarmed chunks, pushed to `dirty`
    /// when given. Returns the unarmed chunks that hold pages: with `reprotect`
    /// the caller arms them and then reports their pages (once, not twice).
    fn scan(&mut self, reprotect: bool, mut dirty: Option<&mut Vec<usize>>) -> Result<Vec<usize>> {
        let (base, page) = (self.start, page_size());
        let mut push = |s: usize, e: usize| {
            if let Some(out) = dirty.as_deref_mut() {
                out.extend((s - base) / page..(e - base) / page);
            }
        };
        for (first, n) in self.chunk_runs(true) {
            let (from, _) = self.chunk_range(first);
            let (_, to) = self.chunk_range(first + n - 1);
            self.pagemap
                .scan_written(from, to, reprotect, &mut push)
                .map_err(track_err("PAGEMAP_SCAN", from, to - from))?;
        }
        let mut newly_used = Vec::new();
        for (first, n) in self.chunk_runs(false) {
            let (from, _) = self.chunk_range(first);
            let (_, to) = self.chunk_range(first + n - 1);
            let chunk = self.chunk;
            self.pagemap
                .scan_populated(from, to, |s, e| {
                    if !reprotect {
                        push(s, e);
                    }
                    let (c0, c1) = ((s - base) / chunk, (e - 1 - base) / chunk);
                    newly_used.extend(c0..=c1);
                })
                .map_err(track_err("PAGEMAP_SCAN", from, to - from))?;
        }
        newly_used.sort_unstable();
        newly_used.dedup();
        Ok(newly_used)
    }

    /// Pushes every populated page of `chunks` (sorted, unique, just armed: the
    /// markers in their holes are not pages).
    fn report_populated(&mut self, chunks: &[usize], dirty: &mut Vec<usize>) -> Result<()> {
        let (base, page) = (self.start, page_size());
        for (first, n) in runs(chunks).collect::<Vec<_>>() {
            let (from, _) = self.chunk_range(first);
            let (_, to) = self.chunk_range(first + n - 1);
            self.pagemap
                .scan_populated_armed(from, to, |s, e| {
                    dirty.extend((s - base) / page..(e - base) / page)
                })
                .map_err(track_err("PAGEMAP_SCAN", from, to - from))?;
        }
        Ok(())
    }

    /// Lifts the write protection of `pages` (sorted, unique), one
    /// `UFFDIO_WRITEPROTECT` per run within a chunk. PAGEMAP_SCAN reports a page
    /// as written when its uffd-wp bit is clear, so this marks them written. A page
    /// of an unarmed chunk needs nothing: it is not protected, and differs from the
    /// chunk's sync image only if populated — populated pages there are reported
    /// anyway.
    fn unprotect(&mut self, pages: &[usize]) -> Result<()> {
        self.unprotect_runs(runs(pages))
    }

    /// [`unprotect`](Self::unprotect) of `(first, count)` runs of pages.
    fn unprotect_runs(&mut self, runs: impl Iterator<Item = (usize, usize)>) -> Result<()> {
        let page = page_size();
        for (first, n) in runs {
            let mut p = first;
            while p < first + n {
                let c = p * page / self.chunk;
                let chunk_end = ((c + 1) * self.chunk / page).min(first + n);
                if self.armed[c] {
                    let (addr, len) = (self.start + p * page, (chunk_end - p) * page);
                    userfaultfd::write_protect(&self.fd, addr, len, false).map_err(track_err(
                        "UFFDIO_WRITEPROTECT (unprotect)",
                        addr,
                        len,
                    ))?;
                }
                p = chunk_end;
            }
        }
        Ok(())
    }

    fn arm_all(&mut self, chunks: &[usize]) -> Result<()> {
        for (first, n) in runs(chunks).collect::<Vec<_>>() {
            self.arm_chunks(first, n)?;
        }
        Ok(())
    }
}

impl Tracker for UffdWp {
    fn kind(&self) -> Tracking {
        Tracking::UffdWp
    }

    fn collect_written(&mut self, _map: &Mapping, dirty: &mut Vec<usize>) -> Result<()> {
        let newly_used = self.scan(true, Some(dirty))?;
        self.arm_all(&newly_used)?;
        // The new chunks' pages are reported after arming, not from the scan:
        // a converging snapshot collects while writers run, and a page first
        // written between the scan of a new chunk and its arming is now
        // write-protected as if clean.
        self.report_populated(&newly_used, dirty)
    }

    fn peek_written(&mut self, _map: &Mapping, dirty: &mut Vec<usize>) -> Result<()> {
        self.scan(false, Some(dirty)).map(drop)
    }

    fn remark(&mut self, _map: &Mapping, pages: &[usize]) -> Result<()> {
        self.unprotect(pages)
    }

    fn lift(&mut self, _map: &Mapping, pages: &[usize]) -> Result<()> {
        // Unprotected, a page is writable without a fault and reads as written
        // to PAGEMAP_SCAN: the collect or rearm after pagesnap's writes re-protects it.
        // Only runs of LIFT_MIN_RUN pages or more: one ioctl costs about one write
        // fault, and the faults of scattered pages are taken by the writing
        // threads in parallel, while lifting happens on one thread.
        self.unprotect_runs(runs(pages).filter(|&(_, n)| n >= LIFT_MIN_RUN))
    }

    fn rearm(&mut self, _map: &Mapping, written: &[usize]) -> Result<()> {
        if written.is_empty() {
            return Ok(());
        }
        // Armed chunks: re-protect what was written. Unarmed chunks pagesnap wrote
        // into: arm them now, after the writes, so their contents start clean.
        let newly_used = self.scan(true, None)?;
        self.arm_all(&newly_used)
    }
}

/// Arms all of `map` at once and reports whether a write to its first page is
/// seen: the probe's end-to-end check.
pub(crate) fn check(map: &mut Mapping) -> Result<bool> {
    let mut t = UffdWp::arm(map)?;
    let chunks = t.armed.len();
    t.arm_chunks(0, chunks)?;
    std::hint::black_box(map.as_mut_slice())[0] = 1;
    let mut dirty = Vec::new();
    t.collect(map, &mut dirty)?;
    Ok(dirty.contains(&0))
}
