//! Compare: no kernel help. Keeps a hash of every page as of the sync point
//! (xxh3-128 under a per-process random secret, so that crafted pages cannot
//! hide a write: `digest::keyed_page_hash`) and hashes the whole region at each
//! collect. Always available; costs
//! O(region) per snapshot, nothing per write.

use super::error::{Result, TrackError};
use super::Tracker;
use crate::digest::keyed_page_hash;
use crate::sys::mmap::Mapping;
use crate::sys::page_size;
use crate::Tracking;

pub(crate) struct Compare {
    hashes: Vec<u128>,
    /// Pages `remark`ed: reported dirty whatever their hash (one bit each).
    forced: Vec<u64>,
}

impl Compare {
    /// Tracks a freshly mapped (all-zero) region.
    pub(crate) fn arm(map: &Mapping) -> Compare {
        let page = page_size();
        Compare::arm_with(vec![keyed_page_hash(&vec![0u8; page]); map.len() / page])
    }

    /// Tracks a region whose page `i` hashes to `hashes[i]` now (a clone: the
    /// keyed hashes of the snapshot it starts from, made from its frames).
    pub(crate) fn arm_with(hashes: Vec<u128>) -> Compare {
        let forced = vec![0; hashes.len().div_ceil(64)];
        Compare { hashes, forced }
    }

    /// Hashes every page, comparing with the sync point's hashes. Reads the
    /// region by copying it out in pieces (it is shared with a background
    /// copier, which calls `peek`; see `sys::mmap` on aliasing).
    fn scan(&mut self, map: &Mapping, update: bool, dirty: &mut Vec<usize>) -> Result<()> {
        let page = page_size();
        let mut buf = bounce(page)?;
        let per = buf.len() / page;
        let pages = self.hashes.len();
        for first in (0..pages).step_by(per) {
            let n = per.min(pages - first);
            map.copy_out(first * page, &mut buf[..n * page]);
            for (j, bytes) in buf[..n * page].chunks_exact(page).enumerate() {
                let i = first + j;
                let h = keyed_page_hash(bytes);
                let forced = self.forced[i / 64] & (1 << (i % 64)) != 0;
                if h != self.hashes[i] || forced {
                    dirty.push(i);
                    if update {
                        self.hashes[i] = h;
                        self.forced[i / 64] &= !(1 << (i % 64));
                    }
                }
            }
        }
        Ok(())
    }
}

/// A buffer of up to 64 KiB (whole pages) to copy the region out through.
fn bounce(page: usize) -> Result<Vec<u8>> {
    let len = (64 << 10).max(page);
    let mut buf = Vec::new();
    buf.try_reserve_exact(len)
        .map_err(|_| TrackError::OutOfMemory {
            what: "the compare tracker's buffer",
            bytes: len,
        })?;
    buf.resize(len, 0);
    Ok(buf)
}

impl Tracker for Compare {
    fn kind(&self) -> Tracking {
        Tracking::Compare
    }

    fn collect_written(&mut self, map: &Mapping, dirty: &mut Vec<usize>) -> Result<()> {
        self.scan(map, true, dirty)
    }

    fn peek_written(&mut self, map: &Mapping, dirty: &mut Vec<usize>) -> Result<()> {
        self.scan(map, false, dirty)
    }

    fn remark(&mut self, _map: &Mapping, pages: &[usize]) -> Result<()> {
        for &p in pages {
            self.forced[p / 64] |= 1 << (p % 64);
        }
        Ok(())
    }

    fn rearm(&mut self, map: &Mapping, written: &[usize]) -> Result<()> {
        let page = page_size();
        let mut buf = bounce(page)?;
        for &p in written {
            map.copy_out(p * page, &mut buf[..page]);
            self.hashes[p] = keyed_page_hash(&buf[..page]);
            self.forced[p / 64] &= !(1 << (p % 64));
        }
        Ok(())
    }
}
