//! # Safety
//!
//! `/proc/self/pagemap`: the `PAGEMAP_SCAN` ioctl (Linux ≥ 6.7) and plain 64-bit
//! entries read with `pread`. The ioctl gets a `pm_scan_arg` whose `vec` points at a
//! buffer of `vec_len` `page_region`s that outlives the call; the kernel writes at
//! most `vec_len` entries there and returns how many.
#![allow(unsafe_code)]

use linux_raw_sys::general::{page_region, pm_scan_arg};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use linux_raw_sys::general::{
    PAGE_IS_FILE, PAGE_IS_GUARD, PAGE_IS_PFNZERO, PAGE_IS_PRESENT, PAGE_IS_SWAPPED,
    PAGE_IS_WRITTEN, PM_SCAN_CHECK_WPASYNC, PM_SCAN_WP_MATCHING,
};

/// Address space one `PAGEMAP_SCAN` call covers at most. The call holds the
/// process's mmap lock for reading throughout, and writers of a region under a
/// point-in-time background snapshot lift protection with `mprotect`, which
/// waits for it: one call over a 1.26 GiB region held it for 7–8 ms on a VM.
const SCAN_STEP: u64 = 64 << 20;

/// `PAGEMAP_SCAN` = `_IOWR('f', 16, struct pm_scan_arg)`; missing from the C headers
/// of the development machines and from linux_raw_sys.
const PAGEMAP_SCAN: libc::c_ulong = 0xC060_6610;
const _: () = assert!(std::mem::size_of::<pm_scan_arg>() == 96);
const _: () = assert!(std::mem::size_of::<page_region>() == 24);
const _: () =
    assert!(PAGEMAP_SCAN == ((3 << 30) | (96 << 16) | ((b'f' as u64) << 8) | 16) as libc::c_ulong);

/// Bit 55 of a pagemap entry: the page is soft-dirty.
pub(crate) const PM_SOFT_DIRTY: u64 = 1 << 55;
/// Bit 56 of a pagemap entry: the page is mapped by this process alone.
pub(crate) const PM_MMAP_EXCLUSIVE: u64 = 1 << 56;
/// Bit 62 of a pagemap entry: the page is swapped out.
pub(crate) const PM_SWAP: u64 = 1 << 62;
/// Bit 63 of a pagemap entry: the page is present.
pub(crate) const PM_PRESENT: u64 = 1 << 63;

/// How many result ranges one ioctl call may return.
const VEC_LEN: usize = 1024;

/// `/proc/self/pagemap`, opened once per tracker.
///
/// The file names the process that opened it, also in a child forked later: a
/// scan from the child would read (and with `reprotect`, write-protect) the
/// parent's pages. So every call from another process than the opener fails.
#[derive(Debug)]
pub(crate) struct Pagemap {
    file: File,
    buf: Vec<page_region>,
    /// The process whose pagemap this is.
    pid: u32,
}

impl Pagemap {
    pub(crate) fn open() -> io::Result<Pagemap> {
        Ok(Pagemap {
            pid: super::process::id(),
            file: File::open(super::process::proc_file!("pagemap"))?,
            buf: vec![
                page_region {
                    start: 0,
                    end: 0,
                    categories: 0
                };
                VEC_LEN
            ],
        })
    }

    /// Every range of `[start, end)` whose pages were written since they were last
    /// write-protected, as `f(range_start, range_end)` calls (addresses). With
    /// `reprotect`, the same pass write-protects them again (`PM_SCAN_WP_MATCHING`),
    /// which needs a uffd-wp async registration over the range.
    ///
    /// Ranges may repeat or overlap: callers must not assume they are disjoint.
    pub(crate) fn scan_written(
        &mut self,
        start: usize,
        end: usize,
        reprotect: bool,
        f: impl FnMut(usize, usize),
    ) -> io::Result<()> {
        let mut flags = 0u64;
        if reprotect {
            flags |= (PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC) as u64;
        }
        let written = PAGE_IS_WRITTEN as u64;
        self.scan(start, end, flags, 0, written, 0, written, f)
    }

    /// Every range of `[start, end)` whose pages are present or swapped out (not
    /// holes) and are not page-cache pages, as `f(range_start, range_end)` calls.
    /// Needs no registration; costs what has page tables, not the length of the
    /// range.
    ///
    /// In a private file mapping (a clone of a snapshot) a page differs from the
    /// file only once written, and then it is an anonymous copy: page-cache pages
    /// mapped by reads (or by the kernel's fault-around) are left out. In an
    /// anonymous mapping no page is a page-cache page.
    pub(crate) fn scan_populated(
        &mut self,
        start: usize,
        end: usize,
        f: impl FnMut(usize, usize),
    ) -> io::Result<()> {
        let any = (PAGE_IS_PRESENT | PAGE_IS_SWAPPED) as u64;
        let file = PAGE_IS_FILE as u64;
        // category_inverted flips FILE before the mask test: "FILE must be clear".
        self.scan(start, end, 0, file, file, any, any, f)
    }

    /// [`scan_populated`](Self::scan_populated) of a range just write-protected
    /// by a uffd-wp registration with unpopulated-page tracking: there every
    /// hole holds a marker that the kernel reports as swapped out, so a
    /// swapped-out page counts here only if it was not write-protected (it went
    /// out before the protection). Present pages count whatever their bit.
    pub(crate) fn scan_populated_armed(
        &mut self,
        start: usize,
        end: usize,
        f: impl FnMut(usize, usize),
    ) -> io::Result<()> {
        let any = (PAGE_IS_PRESENT | PAGE_IS_WRITTEN) as u64;
        let file = PAGE_IS_FILE as u64;
        self.scan(start, end, 0, file, file, any, any, f)
    }

    /// Every range of `[start, end)` that holds no memory of its own, as
    /// `f(range_start, range_end)` calls: holes (neither present nor swapped
    /// out) and pages mapping the shared zero page (read since they were last
    /// written or discarded).
    pub(crate) fn scan_unbacked(
        &mut self,
        start: usize,
        end: usize,
        f: impl FnMut(usize, usize),
    ) -> io::Result<()> {
        let (present, swapped, zero) = (
            PAGE_IS_PRESENT as u64,
            PAGE_IS_SWAPPED as u64,
            PAGE_IS_PFNZERO as u64,
        );
        // With present and swapped inverted: swapped must be clear, and present
        // clear or the page the zero page. One pass for both kinds.
        let inverted = present | swapped;
        let all = present | swapped | zero;
        self.scan(start, end, 0, inverted, swapped, present | zero, all, f)
    }

    /// The first run of `[start, end)` made a guard region by the program
    /// (`madvise(MADV_GUARD_INSTALL)`, Linux ≥ 6.13: any access faults, and
    /// `/proc/self/maps` does not show it), as (start, end). `Err` where the
    /// kernel cannot say (its `PAGEMAP_SCAN` lacks `PAGE_IS_GUARD`, Linux <
    /// 6.14, or has no `PAGEMAP_SCAN`).
    pub(crate) fn first_guard(
        &mut self,
        start: usize,
        end: usize,
    ) -> io::Result<Option<(usize, usize)>> {
        let guard = PAGE_IS_GUARD as u64;
        let mut first = None;
        self.scan(start, end, 0, 0, guard, 0, guard, |a, b| {
            first.get_or_insert((a, b));
        })?;
        Ok(first)
    }

    /// The calls cover [`SCAN_STEP`] of address space at most each.
    #[allow(clippy::too_many_arguments)]
    fn scan(
        &mut self,
        start: usize,
        end: usize,
        flags: u64,
        category_inverted: u64,
        category_mask: u64,
        category_anyof_mask: u64,
        return_mask: u64,
        mut f: impl FnMut(usize, usize),
    ) -> io::Result<()> {
        self.check_owner()?;
        let mut from = start as u64;
        while from < end as u64 {
            let mut arg = pm_scan_arg {
                size: std::mem::size_of::<pm_scan_arg>() as u64,
                flags,
                start: from,
                end: (end as u64).min(from.saturating_add(SCAN_STEP)),
                walk_end: 0,
                vec: self.buf.as_mut_ptr() as u64,
                vec_len: self.buf.len() as u64,
                max_pages: 0,
                category_inverted,
                category_mask,
                category_anyof_mask,
                return_mask,
            };
            // SAFETY: arg.vec points at self.buf, vec_len entries long, alive and
            // exclusively borrowed for the whole call.
            let n = unsafe { libc::ioctl(self.file.as_raw_fd(), PAGEMAP_SCAN, &mut arg) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            for r in &self.buf[..n as usize] {
                f(r.start as usize, r.end as usize);
            }
            if arg.walk_end <= from {
                // The kernel made no progress: stop instead of spinning.
                return Err(io::Error::from_raw_os_error(libc::EIO));
            }
            from = arg.walk_end;
        }
        Ok(())
    }

    /// An error unless called by the process that opened the file.
    fn check_owner(&self) -> io::Result<()> {
        let here = super::process::id();
        if here == self.pid {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "/proc/self/pagemap was opened by process {} and names it, not this \
                 process ({here}, forked from it)",
                self.pid
            )))
        }
    }

    /// Whether the kernel has `PAGEMAP_SCAN` (scans one page of `addr`, collect only).
    pub(crate) fn has_scan(&mut self, addr: usize) -> io::Result<bool> {
        let page = super::page_size();
        match self.scan_written(addr, addr + page, false, |_, _| {}) {
            Ok(()) => Ok(true),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTTY | libc::EINVAL)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Raw 64-bit pagemap entries of the pages starting at virtual page `first_page`.
    pub(crate) fn read_entries(&self, first_page: usize, out: &mut [u64]) -> io::Result<()> {
        self.check_owner()?;
        let mut bytes = vec![0u8; out.len() * 8];
        self.file
            .read_exact_at(&mut bytes, (first_page as u64) * 8)?;
        for (o, c) in out.iter_mut().zip(bytes.chunks_exact(8)) {
            *o = u64::from_ne_bytes(c.try_into().expect("chunks of 8"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::mmap::{Mapping, Protection};

    /// A scan longer than one call's step reports every populated page once,
    /// on both sides of each step's edge, and nothing else.
    #[test]
    fn a_scan_across_steps_reports_each_populated_page() {
        let page = crate::sys::page_size();
        let len = 3 * SCAN_STEP as usize;
        let map = Mapping::anonymous(len, Protection::ReadWrite, false).expect("map");
        let mut pagemap = Pagemap::open().expect("open pagemap");
        let start = map.as_ptr() as usize;
        if !pagemap.has_scan(start).expect("probe") {
            eprintln!("skipped: this kernel has no PAGEMAP_SCAN (Linux 6.7)");
            return;
        }
        let step = SCAN_STEP as usize;
        let want = [0, step - page, step, 2 * step + 5 * page, len - page];
        for &at in &want {
            map.copy_in(at, &[1]);
        }
        let mut got = Vec::new();
        pagemap
            .scan_populated(start, start + len, |s, e| {
                got.extend((s - start..e - start).step_by(page))
            })
            .expect("scan");
        got.sort_unstable();
        assert_eq!(got, want);
    }

    /// The unbacked scan lists holes, discarded pages and pages mapping the
    /// zero page, and none that hold memory of their own.
    #[test]
    fn an_unbacked_scan_lists_holes_and_zero_pages() {
        let page = crate::sys::page_size();
        let map = Mapping::anonymous(8 * page, Protection::ReadWrite, false).expect("map");
        let start = map.as_ptr() as usize;
        let mut pagemap = Pagemap::open().expect("open pagemap");
        if !pagemap.has_scan(start).expect("probe") {
            eprintln!("skipped: this kernel has no PAGEMAP_SCAN (Linux 6.7)");
            return;
        }
        for p in [0, 2, 4] {
            map.copy_in(p * page, &[1]);
        }
        let mut byte = [9u8];
        map.copy_out(6 * page, &mut byte);
        assert_eq!(byte, [0]);
        // SAFETY: page 2 lies inside `map`, and no reference into it is alive
        // while it drops to zeros.
        let rc = unsafe { libc::madvise((start + 2 * page) as *mut _, page, libc::MADV_DONTNEED) };
        assert_eq!(rc, 0, "madvise: {}", io::Error::last_os_error());
        let mut got = Vec::new();
        pagemap
            .scan_unbacked(start, start + 8 * page, |s, e| {
                got.extend((s - start..e - start).map(|b| b / page))
            })
            .expect("scan");
        got.sort_unstable();
        got.dedup();
        assert_eq!(got, [1, 2, 3, 5, 6, 7]);
    }

    /// Once a range is write-protected with unpopulated-page tracking, its
    /// holes hold markers that a plain populated scan takes for swapped-out
    /// pages (on Linux 6.18, every page of the range); the armed scan reports
    /// only the pages written, whether before the protection or after it.
    #[test]
    fn an_armed_scan_reports_written_pages_not_the_markers_in_holes() {
        use crate::sys::userfaultfd;
        let page = crate::sys::page_size();
        let len = 512 * page;
        let map = Mapping::anonymous(len, Protection::ReadWrite, false).expect("map");
        let start = map.as_ptr() as usize;
        let mut pagemap = Pagemap::open().expect("open pagemap");
        let want = u64::from(userfaultfd::FEATURE_WP_ASYNC | userfaultfd::FEATURE_WP_UNPOPULATED);
        let fd = match userfaultfd::open_with_api(want) {
            Ok((fd, _, got)) if got & want == want && pagemap.has_scan(start).expect("probe") => fd,
            _ => {
                eprintln!(
                    "skipped: no userfaultfd with WP_ASYNC and WP_UNPOPULATED, or no PAGEMAP_SCAN"
                );
                return;
            }
        };
        map.copy_in(3 * page, &[1]);
        map.copy_in(200 * page, &[1]);
        userfaultfd::register_wp(&fd, start, len).expect("register");
        userfaultfd::write_protect(&fd, start, len, true).expect("protect");
        map.copy_in(400 * page, &[1]);
        let scan = |pagemap: &mut Pagemap, armed: bool| {
            let mut got = Vec::new();
            let f = |s: usize, e: usize| got.extend((s - start..e - start).step_by(page));
            let r = if armed {
                pagemap.scan_populated_armed(start, start + len, f)
            } else {
                pagemap.scan_populated(start, start + len, f)
            };
            r.expect("scan");
            got.sort_unstable();
            got.dedup();
            got
        };
        let plain = scan(&mut pagemap, false).len();
        eprintln!("a plain populated scan reports {plain} of the 512 pages");
        assert_eq!(scan(&mut pagemap, true), [3 * page, 200 * page, 400 * page]);
    }
}
