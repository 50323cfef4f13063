//! Pages a program discards — `madvise(MADV_DONTNEED)`, `MADV_REMOVE`, or
//! `MADV_FREE` once the kernel reclaims them — read as zeros afterwards, yet
//! nothing wrote them. A tracker that sees writes by protection faults
//! (mprotect) or soft-dirty bits sees nothing, and the next snapshot would
//! keep the old contents. (uffd-wp needs no help: the kernel reports a
//! discarded protected page as written. The compare tracker reads contents.)
//!
//! [`Discards`] keeps which pages held memory of their own when last looked
//! at, and reports those that do not now, from `/proc/self/pagemap`: a hole
//! (neither present nor swapped out), or a present page not mapped by this
//! process alone — after a discard, a read maps the shared zero page. A page
//! shared with a forked child reads the same way, and is reported too: a
//! page reported that did not change costs its hashing, nothing else. Only
//! pages that held memory are read, so a sparse region costs what it uses:
//! 8 bytes of pagemap a page.

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
        })
    }

    /// Marks `pages` (in the region) as holding memory: they were written.
    pub(crate) fn note_held(&mut self, pages: impl IntoIterator<Item = usize>) {
        for p in pages {
            self.held[p / 64] |= 1 << (p % 64);
        }
    }

    /// Calls `found(page)` for each page that held memory of its own and does
    /// not now, and forgets it.
    pub(crate) fn find(
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
fn holds_its_own(entry: u64) -> bool {
    entry & PM_SWAP != 0
        || entry & (PM_PRESENT | PM_MMAP_EXCLUSIVE) == PM_PRESENT | PM_MMAP_EXCLUSIVE
}
