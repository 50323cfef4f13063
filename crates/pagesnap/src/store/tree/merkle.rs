//! The Merkle layout of a page table, in one place: how pages group into leaves
//! and leaves into inner nodes, how tall a table of `n` pages is, and how the
//! digest is formed — for the [`Tree`](super::Tree), which keeps each node's
//! digest, and for [`StreamDigest`], which computes the same digest from page
//! hashes that arrive in page order (a file streamed out without a tree).
//!
//! ```text
//!  digest = combine([pages, root])
//!  root   = combine(64 children)      inner node of height h ≥ 1
//!  leaf   = combine(16 page hashes)   height 0; pages past the end are zero pages
//! ```

use crate::digest::combine;

/// log2 of [`FANOUT`].
pub(crate) const BITS: u32 = 6;
/// Children per inner node.
pub(crate) const FANOUT: usize = 1 << BITS;
/// Pages per leaf.
pub(crate) const LEAF: usize = 16;
/// Tallest tree: 16·64^10 pages is beyond any address space.
pub(crate) const MAX_HEIGHT: u32 = 10;

/// The height of the root of a table of `pages` pages (0: the root is a leaf).
pub(crate) fn height(pages: usize) -> u32 {
    let mut height = 0;
    while height < MAX_HEIGHT && (LEAF << (BITS * height)) < pages {
        height += 1;
    }
    height
}

/// A table's digest: its root's digest with the page count mixed in.
pub(crate) fn table_digest(pages: usize, root: u128) -> u128 {
    combine(&[pages as u128, root])
}

/// Entries per node at level `k` (page hashes at 0).
fn group(k: usize) -> usize {
    if k == 0 {
        LEAF
    } else {
        FANOUT
    }
}

/// A table's digest computed from page hashes pushed in page order, holding
/// one partial node per height (never the pages or the whole tree).
pub(crate) struct StreamDigest {
    pages: usize,
    height: u32,
    /// `levels[k]`: digests of complete nodes of height `k - 1` (page hashes at
    /// 0) whose parent is not complete yet.
    levels: Vec<Vec<u128>>,
    /// `zero[k]`: what an all-zero entry of `levels[k]` holds.
    zero: Vec<u128>,
}

impl StreamDigest {
    /// For a table of `pages` pages, where a zero page hashes to `zero_hash`.
    pub(crate) fn new(pages: usize, zero_hash: u128) -> StreamDigest {
        let height = height(pages);
        let mut zero = vec![zero_hash];
        for k in 1..=height as usize + 1 {
            let below = vec![zero[k - 1]; group(k - 1)];
            zero.push(combine(&below));
        }
        StreamDigest {
            pages,
            height,
            levels: (0..height as usize + 2)
                .map(|k| Vec::with_capacity(group(k)))
                .collect(),
            zero,
        }
    }

    fn push_at(&mut self, mut k: usize, mut h: u128) {
        loop {
            self.levels[k].push(h);
            if k > self.height as usize || self.levels[k].len() < group(k) {
                return;
            }
            h = combine(&self.levels[k]);
            self.levels[k].clear();
            k += 1;
        }
    }

    /// The hash of the next page.
    pub(crate) fn push(&mut self, page_hash: u128) {
        self.push_at(0, page_hash);
    }

    /// The digest, pages not pushed counting as zero pages.
    pub(crate) fn finish(&mut self) -> u128 {
        for k in 0..=self.height as usize {
            if !self.levels[k].is_empty() {
                while self.levels[k].len() < group(k) {
                    let z = self.zero[k];
                    self.levels[k].push(z);
                }
                let h = combine(&self.levels[k]);
                self.levels[k].clear();
                self.push_at(k + 1, h);
            }
        }
        let top = self.height as usize + 1;
        let root = self.levels[top].first().copied().unwrap_or(self.zero[top]);
        table_digest(self.pages, root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::page_hash;
    use crate::store::{PageStore, Staged, Tree};

    /// The streamed digest equals the tree's, for sizes around every boundary.
    #[test]
    fn stream_digest_matches_the_tree() {
        let page = crate::sys::page_size();
        let store = PageStore::new();
        let zero_hash = page_hash(&vec![0u8; page]);
        for pages in [
            1,
            2,
            LEAF - 1,
            LEAF,
            LEAF + 1,
            LEAF * FANOUT,
            LEAF * FANOUT + 3,
            5000,
        ] {
            let mut changes = Staged::new(&store);
            let mut m = StreamDigest::new(pages, zero_hash);
            for p in 0..pages {
                if p % 7 == 3 {
                    m.push(zero_hash);
                } else {
                    let mut b = vec![0u8; page];
                    b[..8].copy_from_slice(&(p as u64 % 300 + 1).to_le_bytes());
                    let id = changes.add(p, &b).expect("memory for the store");
                    m.push(store.frame_hash(id));
                }
            }
            let tree = store.commit(&Tree::zero(&store, pages), changes);
            assert_eq!(m.finish(), tree.digest(), "{pages} pages");
        }
    }
}
