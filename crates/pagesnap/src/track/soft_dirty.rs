//! Soft-dirty bits: writing `4` to `/proc/self/clear_refs` clears the bit of every
//! page of the process and write-protects it; the next write sets bit 55 of the
//! page's pagemap entry.
//!
//! `clear_refs` is process-wide, so clearing for one region would wipe what other
//! regions have not collected yet. Every soft-dirty region is therefore in one
//! registry, and before any clear, the bits of *every* registered region are
//! harvested into that region's pending bitmap:
//!
//! ```text
//!  clear():  for each region R: pending[R] |= pagemap bit 55 over R
//!            write "4" > /proc/self/clear_refs
//! ```
//! Contract: while any soft-dirty region takes a snapshot, the writers of every
//! soft-dirty region of the process are quiescent (a write racing with the clear
//! could otherwise be lost — the kernel offers no per-range clear). That loss is
//! real: tests running on parallel threads, each with its own soft-dirty regions,
//! lost writes this way in the kernel matrix (`tests/soft_dirty_regions.rs` holds
//! the contract's test; the matrix runs suites one test at a time).
//!
//! A page the program discards (`MADV_DONTNEED`) loses its entry and with it
//! the bit. The harvest reads every entry anyway, so it also keeps which pages
//! were written, and marks pending each of them that holds no memory of its
//! own now (as `track/discards.rs` describes).
//!
//! Many kernels lack `CONFIG_MEM_SOFT_DIRTY`: the files exist but the bit never
//! sets, so availability is decided by a write-and-check probe ([`works`]).

use super::discards::holds_its_own;
use super::error::{Result, TrackError};
use super::Tracker;
use crate::sys::mmap::{Mapping, Protection};
use crate::sys::page_size;
use crate::sys::pagemap::{Pagemap, PM_PRESENT, PM_SOFT_DIRTY, PM_SWAP};
use crate::Tracking;
use std::io;
use std::sync::{Arc, Mutex, Weak};

struct Shared {
    /// Virtual page number of the region's first page.
    first_vpn: usize,
    pages: usize,
    /// Pages seen soft-dirty at a clear made for some region (or discarded),
    /// not yet collected.
    pending: Mutex<Vec<u64>>,
    /// Pages written (soft-dirty at a harvest) and not seen as holes since.
    held: Mutex<Vec<u64>>,
}

static REGISTRY: Mutex<Vec<Weak<Shared>>> = Mutex::new(Vec::new());

pub(crate) struct SoftDirty {
    shared: Arc<Shared>,
    pagemap: Pagemap,
}

fn track_err(step: &'static str, addr: usize, len: usize) -> impl FnOnce(io::Error) -> TrackError {
    move |source| TrackError::Track {
        backend: Tracking::SoftDirty,
        step,
        addr,
        len,
        source,
    }
}

/// Harvests the bits of every registered region, then clears them process-wide.
fn clear(pagemap: &Pagemap, registry: &mut Vec<Weak<Shared>>) -> io::Result<()> {
    registry.retain(|w| w.strong_count() > 0);
    for shared in registry.iter().filter_map(Weak::upgrade) {
        harvest(pagemap, &shared)?;
    }
    std::fs::write(crate::sys::process::proc_file!("clear_refs"), "4")
}

/// ORs the soft-dirty bits of `shared`'s pages into its pending bitmap, and
/// the pages discarded since the last harvest.
fn harvest(pagemap: &Pagemap, shared: &Shared) -> io::Result<()> {
    const CHUNK: usize = 4096;
    let mut entries = vec![0u64; CHUNK];
    let mut pending = shared.pending.lock().unwrap_or_else(|e| e.into_inner());
    let mut held = shared.held.lock().unwrap_or_else(|e| e.into_inner());
    let mut done = 0;
    while done < shared.pages {
        let n = CHUNK.min(shared.pages - done);
        pagemap.read_entries(shared.first_vpn + done, &mut entries[..n])?;
        for (i, &e) in entries[..n].iter().enumerate() {
            let (p, bit) = (done + i, 1 << ((done + i) % 64));
            if e & PM_SOFT_DIRTY != 0 {
                pending[p / 64] |= bit;
                held[p / 64] |= bit;
            } else if held[p / 64] & bit != 0 && !holds_its_own(e) {
                // Discarded, or shared with a forked child: reported, and
                // looked at again next time unless it is a hole, which reads
                // as zeros until it is written again.
                pending[p / 64] |= bit;
                if e & (PM_PRESENT | PM_SWAP) == 0 {
                    held[p / 64] &= !bit;
                }
            }
        }
        done += n;
    }
    Ok(())
}

fn drain(bits: &mut [u64], take: bool, dirty: &mut Vec<usize>) {
    for (w, word) in bits.iter_mut().enumerate() {
        let mut v = *word;
        if take {
            *word = 0;
        }
        while v != 0 {
            dirty.push(w * 64 + v.trailing_zeros() as usize);
            v &= v - 1;
        }
    }
}

impl SoftDirty {
    pub(crate) fn arm(map: &Mapping) -> Result<SoftDirty> {
        let (start, len) = (map.as_ptr() as usize, map.len());
        let page = page_size();
        let pagemap = Pagemap::open().map_err(track_err("open /proc/self/pagemap", start, len))?;
        let shared = Arc::new(Shared {
            first_vpn: start / page,
            pages: len / page,
            pending: Mutex::new(vec![0; (len / page).div_ceil(64)]),
            held: Mutex::new(vec![0; (len / page).div_ceil(64)]),
        });
        let mut registry = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
        // Clear first (a new mapping reads as all soft-dirty), then join.
        clear(&pagemap, &mut registry).map_err(track_err("clear_refs", start, len))?;
        registry.push(Arc::downgrade(&shared));
        Ok(SoftDirty { shared, pagemap })
    }

    fn addr(&self) -> (usize, usize) {
        let page = page_size();
        (self.shared.first_vpn * page, self.shared.pages * page)
    }
}

impl Tracker for SoftDirty {
    fn kind(&self) -> Tracking {
        Tracking::SoftDirty
    }

    fn collect_written(&mut self, _map: &Mapping, dirty: &mut Vec<usize>) -> Result<()> {
        let (addr, len) = self.addr();
        let mut registry = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
        clear(&self.pagemap, &mut registry).map_err(track_err("clear_refs", addr, len))?;
        drop(registry);
        let mut pending = self
            .shared
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        drain(&mut pending, true, dirty);
        Ok(())
    }

    fn peek_written(&mut self, _map: &Mapping, dirty: &mut Vec<usize>) -> Result<()> {
        let (addr, len) = self.addr();
        harvest(&self.pagemap, &self.shared).map_err(track_err("read pagemap", addr, len))?;
        let mut pending = self
            .shared
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        drain(&mut pending, false, dirty);
        Ok(())
    }

    fn remark(&mut self, _map: &Mapping, pages: &[usize]) -> Result<()> {
        let mut pending = self
            .shared
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for &p in pages {
            pending[p / 64] |= 1 << (p % 64);
        }
        Ok(())
    }

    fn rearm(&mut self, map: &Mapping, _written: &[usize]) -> Result<()> {
        let mut discard = Vec::new();
        self.collect(map, &mut discard)
    }
}

/// Whether soft-dirty bits work in this kernel: map a page, clear, write it, and
/// check bit 55.
pub(crate) fn works() -> std::result::Result<(), String> {
    let page = page_size();
    let mut map = Mapping::anonymous(page, Protection::ReadWrite, false)
        .map_err(|e| format!("mmap of a probe page: {e}"))?;
    let pagemap = Pagemap::open().map_err(|e| format!("/proc/self/pagemap: {e}"))?;
    map.as_mut_slice()[0] = 1;
    {
        let mut registry = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
        clear(&pagemap, &mut registry).map_err(|e| format!("/proc/self/clear_refs: {e}"))?;
    }
    map.as_mut_slice()[0] = 2;
    let mut entry = [0u64];
    pagemap
        .read_entries(map.as_ptr() as usize / page, &mut entry)
        .map_err(|e| format!("reading /proc/self/pagemap: {e}"))?;
    if entry[0] & PM_SOFT_DIRTY != 0 {
        Ok(())
    } else {
        Err(
            "pagemap bit 55 stays clear after a write (kernel built without CONFIG_MEM_SOFT_DIRTY)"
                .into(),
        )
    }
}
