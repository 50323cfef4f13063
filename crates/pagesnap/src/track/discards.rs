//! Pages a program discards — `madvise(MADV_DONTNEED)`, `MADV_REMOVE`, or
//! `MADV_FREE` once the kernel reclaims them — read as zeros afterwards, yet
//! nothing wrote them. A tracker that sees writes by protection faults
//! (mprotect) or soft-dirty bits sees nothing, and the next snapshot would
//! keep the old contents. (uffd-wp needs no help: the kernel reports a
//! discarded protected page as written. The compare tracker reads contents.)
//!
//! [`Discards`] keeps which pages were written, and at each collect reports
//! those that hold no memory of their own now: a hole (neither present nor
//! swapped out), or the shared zero page (a read after the discard maps it).
//! With `PAGEMAP_SCAN` (Linux 6.7) the kernel lists those pages in one pass
//! (1.7 ms a GiB on the development VM: the mprotect snapshot of `pagesnap
//! bench` went from 12.0 to 13.7 ms). Before it, each written page's
//! `/proc/self/pagemap` entry is read, where the zero page's number is hidden
//! from unprivileged readers: a present page not mapped by this process alone
//! counts as discarded, which also reports pages shared with a forked child
//! (a page reported that did not change costs its hashing, nothing else).

use crate::sys::page_size;
use crate::sys::pagemap::{Pagemap, PM_MMAP_EXCLUSIVE, PM_PRESENT, PM_SWAP};
use std::io;

/// Pagemap entries read per call.
const CHUNK: usize = 4096;

pub(crate) struct Discards {
    /// Virtual page number of the region's first page.
    first_vpn: usize,
    pages: usize,
    /// Bit per page: it held memory when last looked at.
    held: Vec<u64>,
    /// Whether the kernel has `PAGEMAP_SCAN`, once asked.
    scan: Option<bool>,
}

impl Discards {
    /// For `pages` pages from virtual page `first_vpn`, none holding memory yet.
    /// `None` if the bitmap cannot be allocated.
    pub(crate) fn new(first_vpn: usize, pages: usize) -> Option<Discards> {
        let mut held = Vec::new();
        held.try_reserve_exact(pages.div_ceil(64)).ok()?;
        held.resize(pages.div_ceil(64), 0);
        Some(Discards {
            first_vpn,
            pages,
            held,
            scan: None,
        })
    }

    /// Marks `pages` (in the region) as holding memory: they were written.
    pub(crate) fn note_held(&mut self, pages: impl IntoIterator<Item = usize>) {
        for p in pages {
            self.held[p / 64] |= 1 << (p % 64);
        }
    }

    /// Calls `found(page)` for each page that held memory of its own and does
    /// not now, and forgets it. With `PAGEMAP_SCAN` (Linux 6.7) the kernel
    /// lists such pages itself; before it, every held page's entry is read.
    pub(crate) fn find(
        &mut self,
        pagemap: &mut Pagemap,
        found: impl FnMut(usize),
    ) -> io::Result<()> {
        let start = self.first_vpn * page_size();
        if *self
            .scan
            .get_or_insert_with(|| pagemap.has_scan(start).unwrap_or(false))
        {
            self.find_by_scan(pagemap, found)
        } else {
            self.find_by_entries(pagemap, found)
        }
    }

    fn find_by_scan(
        &mut self,
        pagemap: &mut Pagemap,
        mut found: impl FnMut(usize),
    ) -> io::Result<()> {
        let page = page_size();
        let start = self.first_vpn * page;
        let held = &mut self.held;
        pagemap.scan_unbacked(start, start + self.pages * page, |s, e| {
            let (mut p, end) = ((s - start) / page, (e - start) / page);
            while p < end {
                // A word with nothing held is passed over whole.
                if held[p / 64] == 0 {
                    p = (p / 64 + 1) * 64;
                    continue;
                }
                let bit = 1 << (p % 64);
                if held[p / 64] & bit != 0 {
                    held[p / 64] &= !bit;
                    found(p);
                }
                p += 1;
            }
        })
    }

    /// `find` from each held page's pagemap entry.
    fn find_by_entries(
        &mut self,
        pagemap: &Pagemap,
        mut found: impl FnMut(usize),
    ) -> io::Result<()> {
        let mut entries = vec![0u64; CHUNK];
        let mut at = 0;
        while at < self.pages {
            // Stretches with nothing held are skipped a word at a time.
            if self.held[at / 64] == 0 {
                at = (at / 64 + 1) * 64;
                continue;
            }
            let end = (at + CHUNK).min(self.pages);
            let got = &mut entries[..end - at];
            pagemap.read_entries(self.first_vpn + at, got)?;
            for (i, e) in got.iter().enumerate() {
                let p = at + i;
                let bit = 1 << (p % 64);
                if self.held[p / 64] & bit != 0 && !holds_its_own(*e) {
                    self.held[p / 64] &= !bit;
                    found(p);
                }
            }
            at = end;
        }
        Ok(())
    }
}

/// Whether a pagemap entry is memory of this process's own: swapped out, or
/// present and mapped here alone.
pub(super) fn holds_its_own(entry: u64) -> bool {
    entry & PM_SWAP != 0
        || entry & (PM_PRESENT | PM_MMAP_EXCLUSIVE) == PM_PRESENT | PM_MMAP_EXCLUSIVE
}
