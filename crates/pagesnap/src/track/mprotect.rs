//! mprotect + SIGSEGV: the region is mapped read-only; the first write to a page
//! faults into pagesnap's handler (see `sys::signal`), which sets the page's bit
//! and makes it writable. Collecting takes the bits and protects those pages again.
//!
//! Kernel-mode writes (`read(2)` into a protected page) do not fault into a signal
//! handler: they fail with `EFAULT`.
//!
//! The tracker is only as good as the faults it receives. A SIGSEGV handler
//! installed after pagesnap's that does not pass faults on (a JIT or a garbage
//! collector that lifts protection itself) makes writes go unrecorded. Every
//! call first checks that pagesnap's handler is still installed and fails with
//! [`Error::HandlerReplaced`](crate::Error::HandlerReplaced) if not; and once a replacement has been seen
//! (here or by a background snapshot), the tracker no longer trusts its bits:
//! the next collect made with pagesnap's handler back reports every page and
//! protects them all again, so the snapshot after it is exact.
//!
//! Pages the program discards (`MADV_DONTNEED`) take no fault: each collect
//! also reports them, from `/proc/self/pagemap` where it can be read (see
//! `Discards`).

use super::discards::Discards;
use super::error::{Result, TrackError};
use super::{runs, Tracker};
use crate::sys::mmap::{Mapping, Protection};
use crate::sys::page_size;
use crate::sys::pagemap::Pagemap;
use crate::sys::signal::{self, FaultSlot, RegisterError};
use crate::Tracking;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub(crate) struct Mprotect {
    bits: Arc<[AtomicU64]>,
    /// Dropping it removes the region from the handler's table (before the unmap).
    _slot: FaultSlot,
    scratch: Vec<usize>,
    /// [`signal::replacements`] as of the last check.
    replacements: u64,
    /// Writes may have gone unrecorded: the next collect reports every page.
    lost: bool,
    /// Pages discarded since they were written; `None` where
    /// `/proc/self/pagemap` cannot be read.
    discards: Option<(Pagemap, Discards)>,
}

impl Mprotect {
    pub(crate) fn arm(map: &Mapping) -> Result<Mprotect> {
        let pages = map.len() / page_size();
        // Before anything is protected: a thread that blocks SIGSEGV would
        // kill the process with its first write.
        signal::no_thread_blocks_sigsegv()?;
        let bits: Arc<[AtomicU64]> = (0..pages.div_ceil(64)).map(|_| AtomicU64::new(0)).collect();
        protect(map, 0, pages, Protection::Read)?;
        let slot = signal::register(map.as_ptr() as usize, map.len(), bits.clone()).map_err(
            |e| match e {
                RegisterError::Full => TrackError::TooManyRegions {
                    max: signal::MAX_REGIONS,
                },
                RegisterError::Sigaction(source) => TrackError::Track {
                    backend: Tracking::Mprotect,
                    step: "sigaction(SIGSEGV)",
                    addr: map.as_ptr() as usize,
                    len: map.len(),
                    source,
                },
            },
        )?;
        signal::check()?;
        let held = Discards::new(map.as_ptr() as usize / page_size(), pages).ok_or(
            TrackError::OutOfMemory {
                what: "the bitmap of pages written under mprotect tracking",
                bytes: pages.div_ceil(8),
            },
        )?;
        // Without /proc (a rare sandbox), discards go unseen.
        let discards = Pagemap::open().ok().map(|pagemap| (pagemap, held));
        Ok(Mprotect {
            bits,
            _slot: slot,
            scratch: Vec::new(),
            replacements: signal::replacements(),
            lost: false,
            discards,
        })
    }

    /// `Err(HandlerReplaced)` unless pagesnap's handler is installed; notes in
    /// `lost` whether it was found replaced, here or elsewhere, since the last
    /// check.
    fn faults_reach_us(&mut self) -> Result<()> {
        let checked = signal::check();
        let seen = signal::replacements();
        if seen != self.replacements || checked.is_err() {
            self.replacements = seen;
            self.lost = true;
        }
        Ok(checked?)
    }

    /// Sets the bit of every page discarded since it was written, as a write
    /// would have.
    fn find_discards(&mut self, map: &Mapping) -> Result<()> {
        let Some((pagemap, discards)) = &mut self.discards else {
            return Ok(());
        };
        let bits = &self.bits;
        discards
            .find(pagemap, |p| {
                bits[p / 64].fetch_or(1 << (p % 64), Ordering::Relaxed);
            })
            .map_err(|source| TrackError::Track {
                backend: Tracking::Mprotect,
                step: "read /proc/self/pagemap",
                addr: map.as_ptr() as usize,
                len: map.len(),
                source,
            })
    }

    /// `pages` were written: from now on a discard of them is looked for.
    fn note_held(&mut self, pages: &[usize]) {
        if let Some((_, discards)) = &mut self.discards {
            discards.note_held(pages.iter().copied());
        }
    }

    /// Every page, for a collect or peek after writes may have gone unrecorded.
    fn all_pages(&self, map: &Mapping, dirty: &mut Vec<usize>) {
        dirty.extend(0..map.len() / page_size());
    }

    fn read_bits(&self, take: bool, dirty: &mut Vec<usize>) {
        for (w, word) in self.bits.iter().enumerate() {
            let mut v = if take {
                word.swap(0, Ordering::Relaxed)
            } else {
                word.load(Ordering::Relaxed)
            };
            while v != 0 {
                dirty.push(w * 64 + v.trailing_zeros() as usize);
                v &= v - 1;
            }
        }
    }
}

/// Gives pages `first..first + count` of `map` the protection `to`.
fn protect(map: &Mapping, first: usize, count: usize, to: Protection) -> Result<()> {
    let page = page_size();
    map.protect(first * page, count * page, to)
        .map_err(|source| TrackError::Track {
            backend: Tracking::Mprotect,
            step: match to {
                Protection::Read => "mprotect(PROT_READ)",
                Protection::ReadWrite => "mprotect(PROT_READ | PROT_WRITE)",
            },
            addr: map.as_ptr() as usize + first * page,
            len: count * page,
            source,
        })
}

impl Tracker for Mprotect {
    fn kind(&self) -> Tracking {
        Tracking::Mprotect
    }

    fn unprotect_to(&self) -> Protection {
        Protection::Read
    }

    fn ready(&mut self) -> Result<()> {
        self.faults_reach_us()
    }

    fn collect_written(&mut self, map: &Mapping, dirty: &mut Vec<usize>) -> Result<()> {
        self.faults_reach_us()?;
        let from = dirty.len();
        if self.lost {
            self.read_bits(true, &mut Vec::new());
            protect(map, 0, map.len() / page_size(), Protection::Read)?;
            self.all_pages(map, dirty);
            self.lost = false;
        } else {
            self.find_discards(map)?;
            self.read_bits(true, dirty);
            // read_bits yields pages in ascending order.
            for (first, n) in runs(&dirty[from..]) {
                protect(map, first, n, Protection::Read)?;
            }
        }
        self.note_held(&dirty[from..]);
        Ok(())
    }

    fn peek_written(&mut self, map: &Mapping, dirty: &mut Vec<usize>) -> Result<()> {
        self.faults_reach_us()?;
        if self.lost {
            self.all_pages(map, dirty);
        } else {
            self.find_discards(map)?;
            self.read_bits(false, dirty);
        }
        Ok(())
    }

    fn remark(&mut self, _map: &Mapping, pages: &[usize]) -> Result<()> {
        // A set bit is all `collect` reads; the page may stay read-only (a write
        // faults and sets the bit again).
        for &p in pages {
            self.bits[p / 64].fetch_or(1 << (p % 64), Ordering::Relaxed);
        }
        Ok(())
    }

    fn lift(&mut self, map: &Mapping, pages: &[usize]) -> Result<()> {
        // The bits first: whatever happens below, `collect` re-protects these
        // pages. Then one mprotect per run instead of a SIGSEGV round trip per page.
        self.remark(map, pages)?;
        for (i, (first, n)) in runs(pages).enumerate() {
            match protect(map, first, n, Protection::ReadWrite) {
                // At the process's limit of mappings (each run lifted is one
                // more): protect again what was lifted, which merges the
                // mappings back, so that the caller's threads can still start
                // (a thread needs mappings for its stacks). The pages' writes
                // fault into the handler instead, which lifts them another way
                // (see `sys/signal/widen.rs`). Their bits stay set.
                Err(TrackError::Track { source, .. })
                    if source.raw_os_error() == Some(libc::ENOMEM) =>
                {
                    for (first, n) in runs(pages).take(i) {
                        let _ = protect(map, first, n, Protection::Read);
                    }
                    return Ok(());
                }
                r => r?,
            }
        }
        Ok(())
    }

    fn rearm(&mut self, map: &Mapping, _written: &[usize]) -> Result<()> {
        // Every page pagesnap wrote faulted and set its bit: collecting re-protects
        // exactly those.
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        let r = self.collect(map, &mut scratch);
        self.scratch = scratch;
        r
    }
}
