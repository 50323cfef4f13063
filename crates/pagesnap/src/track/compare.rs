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
}

impl Compare {
    /// Tracks a freshly mapped (all-zero) region.
    pub(crate) fn arm(map: &Mapping) -> Compare {
        let page = page_size();
        Compare {
            hashes: vec![page_hash(&vec![0u8; page]); map.len() / page],
        }
    }

    /// Tracks a region whose page `i` hashes to `hashes[i]` now (a clone: the
    /// hashes of the snapshot it starts from, read off the store's frames).
    pub(crate) fn arm_with(hashes: Vec<u128>) -> Compare {
        Compare { hashes }
    }

    fn scan(&mut self, map: &Mapping, update: bool, dirty: &mut Vec<usize>) {
        for (i, (page, old)) in map
            .as_slice()
            .chunks_exact(page_size())
            .zip(self.hashes.iter_mut())
            .enumerate()
        {
            let h = page_hash(page);
            if h != *old {
                dirty.push(i);
                if update {
                    *old = h;
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

    fn rearm(&mut self, map: &Mapping, written: &[usize]) -> Result<()> {
        let page = page_size();
        let bytes = map.as_slice();
        for &p in written {
            self.hashes[p] = page_hash(&bytes[p * page..(p + 1) * page]);
        }
        Ok(())
    }
}
