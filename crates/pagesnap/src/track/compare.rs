//! Compare: no kernel help. Keeps an xxh3-128 hash of every page as of the sync
//! point and hashes the whole region at each collect. Always available; costs
//! O(region) per snapshot, nothing per write.

use super::Tracker;
use crate::digest::page_hash;
use crate::error::Result;
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
        Compare::arm_with(vec![page_hash(&vec![0u8; page]); map.len() / page])
    }

    /// Tracks a region whose page `i` hashes to `hashes[i]` now (a clone: the
    /// hashes of the snapshot it starts from, read off the store's frames).
    pub(crate) fn arm_with(hashes: Vec<u128>) -> Compare {
        let forced = vec![0; hashes.len().div_ceil(64)];
        Compare { hashes, forced }
    }

    fn scan(&mut self, map: &Mapping, update: bool, dirty: &mut Vec<usize>) {
        for (i, (page, old)) in map
            .as_slice()
            .chunks_exact(page_size())
            .zip(self.hashes.iter_mut())
            .enumerate()
        {
            let h = page_hash(page);
            let forced = self.forced[i / 64] & (1 << (i % 64)) != 0;
            if h != *old || forced {
                dirty.push(i);
                if update {
                    *old = h;
                    self.forced[i / 64] &= !(1 << (i % 64));
                }
            }
        }
    }
}

impl Tracker for Compare {
    fn kind(&self) -> Tracking {
        Tracking::Compare
    }

    fn collect(&mut self, map: &Mapping, dirty: &mut Vec<usize>) -> Result<()> {
        self.scan(map, true, dirty);
        Ok(())
    }

    fn peek(&mut self, map: &Mapping, dirty: &mut Vec<usize>) -> Result<()> {
        self.scan(map, false, dirty);
        Ok(())
    }

    fn remark(&mut self, _map: &Mapping, pages: &[usize]) -> Result<()> {
        for &p in pages {
            self.forced[p / 64] |= 1 << (p % 64);
        }
        Ok(())
    }

    fn rearm(&mut self, map: &Mapping, written: &[usize]) -> Result<()> {
        let page = page_size();
        let bytes = map.as_slice();
        for &p in written {
            self.hashes[p] = page_hash(&bytes[p * page..(p + 1) * page]);
            self.forced[p / 64] &= !(1 << (p % 64));
        }
        Ok(())
    }
}
