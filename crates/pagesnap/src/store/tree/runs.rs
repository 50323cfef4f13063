//! Building a table from runs of pages ([`Tree::with_runs`]) in time and memory
//! that follow the runs, not the pages they cover.
//!
//! ```text
//!   run: pages 0 .. 2^26, every one frame F          run: pages 5 .. 9, frames a b c d
//!
//!   root ─┬─ U(F, 3) ─┬─ U(F, 2) ─ … ─ U(F, 0)       a leaf copied from the base,
//!         ├─ U(F, 3) ─┘   (each child: the same       slots 5..9 set, the rest kept
//!         └─ …            Arc, built once)
//! ```
//!
//! A node that one run covers entirely is *full*: its contents depend only on the
//! run and where in the run the node starts, so it is built once and shared by
//! every place that needs it, as the all-zero nodes are. A run of one frame makes
//! one full node per height; a run of distinct frames makes one per position in
//! its frame list, however many runs (or places in one run) repeat that list.
//! Only nodes that a run's end cuts through are copied from the base, as
//! [`Tree::with_changes`] copies them — a few per run and height.

use super::{child_span, zero_node, Node, Tree, BITS, FANOUT, INNER_BYTES, LEAF, LEAF_BYTES};
use crate::store::frames::FrameId;
use crate::store::Shared;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// What the pages of a [`PageRun`] hold.
#[derive(Clone, Copy, Debug)]
pub(crate) enum RunFrames<'a> {
    /// Every page holds this frame.
    Same(FrameId),
    /// Page `first + i` holds `frames[i]`; as many frames as pages.
    Each(&'a [FrameId]),
}

/// `count` pages from `first`, set to `frames`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PageRun<'a> {
    pub(crate) first: usize,
    pub(crate) count: usize,
    pub(crate) frames: RunFrames<'a>,
}

impl PageRun<'_> {
    fn end(&self) -> usize {
        self.first + self.count
    }

    /// The frame of the run's `i`-th page.
    fn at(&self, i: usize) -> FrameId {
        match self.frames {
            RunFrames::Same(id) => id,
            RunFrames::Each(ids) => ids[i],
        }
    }
}

/// What a full node holds: one frame everywhere, or a stretch of a frame list
/// (named by the address of its first element, which is unique while the list
/// lives, that is for the whole build).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Contents {
    Same(FrameId),
    Each(usize),
}

/// Pages covered by a node of `height`.
fn node_span(height: u32) -> usize {
    LEAF << (BITS * height)
}

impl Tree {
    /// A new table equal to this one except at `runs`, which must be sorted,
    /// disjoint, non-empty and in range. Unlike [`with_changes`](Tree::with_changes)
    /// the frames carry no references: the new table takes its own.
    pub(crate) fn with_runs(&self, runs: &[PageRun<'_>]) -> Tree {
        let st = &*self.store.shared;
        debug_assert!(runs.iter().all(|r| r.count > 0 && r.end() <= self.pages));
        debug_assert!(runs.windows(2).all(|w| w[0].end() <= w[1].first));
        debug_assert!(runs.iter().all(|r| match r.frames {
            RunFrames::Same(_) => true,
            RunFrames::Each(ids) => ids.len() == r.count,
        }));
        let root = if runs.is_empty() {
            self.root().clone()
        } else {
            let mut b = Builder {
                st,
                full: HashMap::new(),
            };
            b.update(self.root(), self.height, 0, runs)
        };
        Tree {
            root: Some(root),
            height: self.height,
            pages: self.pages,
            store: self.store.clone(),
        }
    }
}

struct Builder<'s> {
    st: &'s Shared,
    /// Full nodes built so far, by height and contents.
    full: HashMap<(u32, Contents), Arc<Node>>,
}

impl Builder<'_> {
    fn leaf(&mut self, frames: [FrameId; LEAF]) -> Arc<Node> {
        for &id in &frames {
            self.st.frames.retain(id);
        }
        self.st.nodes.fetch_add(1, Ordering::Relaxed);
        self.st.node_bytes.fetch_add(LEAF_BYTES, Ordering::Relaxed);
        Arc::new(Node::leaf(frames))
    }

    fn inner(&mut self, children: [Arc<Node>; FANOUT]) -> Arc<Node> {
        self.st.nodes.fetch_add(1, Ordering::Relaxed);
        self.st.node_bytes.fetch_add(INNER_BYTES, Ordering::Relaxed);
        Arc::new(Node::inner(children))
    }

    /// The node of `height` holding pages `at ..` of `run` (all of them in the run).
    fn full(&mut self, height: u32, run: &PageRun<'_>, at: usize) -> Arc<Node> {
        let contents = match run.frames {
            RunFrames::Same(FrameId::ZERO) => return zero_node(height).clone(),
            RunFrames::Same(id) => Contents::Same(id),
            RunFrames::Each(ids) => Contents::Each(ids[at..].as_ptr() as usize),
        };
        if let Some(node) = self.full.get(&(height, contents)) {
            return node.clone();
        }
        let node = if height == 0 {
            self.leaf(std::array::from_fn(|i| run.at(at + i)))
        } else {
            let span = child_span(height);
            let mut children: [Option<Arc<Node>>; FANOUT] = std::array::from_fn(|_| None);
            for (i, c) in children.iter_mut().enumerate() {
                *c = Some(self.full(height - 1, run, at + i * span));
            }
            self.inner(children.map(|c| c.expect("every child was built")))
        };
        self.full.insert((height, contents), node.clone());
        node
    }

    /// `node` (of `height`, first page `first`) with `runs` applied; every run
    /// overlaps the node.
    fn update(
        &mut self,
        node: &Arc<Node>,
        height: u32,
        first: usize,
        runs: &[PageRun<'_>],
    ) -> Arc<Node> {
        if let [run] = runs {
            if run.first <= first && run.end() >= first + node_span(height) {
                return self.full(height, run, first - run.first);
            }
        }
        match &**node {
            Node::Leaf { frames: old, .. } => {
                let mut new = *old;
                for run in runs {
                    let lo = run.first.max(first);
                    let hi = run.end().min(first + LEAF);
                    for p in lo..hi {
                        new[p - first] = run.at(p - run.first);
                    }
                }
                if new == *old {
                    return node.clone();
                }
                self.leaf(new)
            }
            Node::Inner { children, .. } => {
                let span = child_span(height);
                let mut new_children: [Arc<Node>; FANOUT] = (**children).clone();
                let mut any = false;
                let mut rest = runs;
                let mut i = (rest[0].first.max(first) - first) / span;
                while i < FANOUT && !rest.is_empty() {
                    let child_first = first + i * span;
                    let child_end = child_first + span;
                    let n = rest.partition_point(|r| r.first < child_end);
                    if n == 0 {
                        // Nothing here: on to the child where the next run starts.
                        i = (rest[0].first - first) / span;
                        continue;
                    }
                    let child = self.update(&children[i], height - 1, child_first, &rest[..n]);
                    any |= !Arc::ptr_eq(&child, &children[i]);
                    new_children[i] = child;
                    // Only the last of these runs can reach into the next child.
                    let goes_on = rest[n - 1].end() > child_end;
                    rest = &rest[if goes_on { n - 1 } else { n }..];
                    i += 1;
                }
                if !any {
                    return node.clone();
                }
                self.inner(new_children)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::PageStore;

    fn page(store: &PageStore, tag: u8) -> FrameId {
        let mut b = vec![0u8; crate::sys::page_size()];
        b[0] = tag;
        b[100] = tag;
        store.test_insert(&b)
    }

    /// `with_runs` makes the very table `with_changes` makes from the same pages,
    /// over a zero base and over a non-trivial one.
    #[test]
    fn runs_match_page_by_page_changes() {
        let store = PageStore::new();
        let ids: Vec<FrameId> = (1..=40).map(|t| page(&store, t)).collect();
        let pages = LEAF * FANOUT * 3 + 5;
        let mut base_changes: Vec<(usize, FrameId)> = Vec::new();
        for p in (0..pages).step_by(37) {
            let id = ids[p % 7];
            store.test_retain(id);
            base_changes.push((p, id));
        }
        let zero = Tree::zero(&store, pages);
        let other = zero.with_changes(&base_changes);
        let runs = [
            PageRun {
                first: 3,
                count: 10,
                frames: RunFrames::Each(&ids[0..10]),
            },
            PageRun {
                first: 13,
                count: LEAF * FANOUT * 2 + 7,
                frames: RunFrames::Same(ids[11]),
            },
            PageRun {
                first: LEAF * FANOUT * 2 + 30,
                count: 40,
                frames: RunFrames::Each(&ids[..]),
            },
            PageRun {
                first: LEAF * FANOUT * 2 + 70,
                count: LEAF * 3,
                frames: RunFrames::Same(FrameId::ZERO),
            },
            PageRun {
                first: pages - 2,
                count: 2,
                frames: RunFrames::Each(&ids[5..7]),
            },
        ];
        for base in [&zero, &other] {
            let mut changes = Vec::new();
            for r in &runs {
                for i in 0..r.count {
                    let id = r.at(i);
                    store.test_retain(id);
                    changes.push((r.first + i, id));
                }
            }
            let by_pages = base.with_changes(&changes);
            let by_runs = base.with_runs(&runs);
            assert_eq!(by_runs.digest(), by_pages.digest());
            for p in 0..pages {
                assert_eq!(by_runs.get(p), by_pages.get(p), "page {p}");
            }
            let mut diff = Vec::new();
            by_pages.diff(&by_runs, &mut diff);
            assert!(diff.is_empty());
        }
        drop(other);
        drop(zero);
        for id in ids {
            store.test_release(id);
        }
        assert_eq!(store.stats().unique_pages, 0, "every reference released");
        assert_eq!(store.stats().table_nodes, 0);
    }

    /// Random run sets (repeats of one frame list included) over random bases:
    /// `with_runs` agrees with `with_changes` page by page and in the digest.
    #[test]
    fn random_runs_match_page_by_page_changes() {
        let store = PageStore::new();
        let ids: Vec<FrameId> = (1..=64).map(|t| page(&store, t)).collect();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut rnd = |n: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as usize
        };
        for _ in 0..40 {
            let pages = 1 + rnd(LEAF * FANOUT * 2 + 100);
            let mut base_changes = Vec::new();
            for p in (rnd(50)..pages).step_by(1 + rnd(40)) {
                let id = ids[rnd(ids.len())];
                store.test_retain(id);
                base_changes.push((p, id));
            }
            let base = Tree::zero(&store, pages).with_changes(&base_changes);
            let mut runs = Vec::new();
            let mut at = rnd(20);
            while at < pages {
                let long = rnd(4) == 0;
                let count = (1 + rnd(if long { 3000 } else { 40 })).min(pages - at);
                let frames = match rnd(3) {
                    0 => RunFrames::Same(ids[rnd(ids.len())]),
                    1 => RunFrames::Same(FrameId::ZERO),
                    // Each needs as many frames as pages: runs longer than
                    // the list repeat one frame instead.
                    _ if count <= ids.len() => {
                        let start = rnd(ids.len() - count + 1);
                        RunFrames::Each(&ids[start..start + count])
                    }
                    _ => RunFrames::Same(ids[0]),
                };
                runs.push(PageRun {
                    first: at,
                    count,
                    frames,
                });
                at += count + rnd(30);
            }
            let mut changes = Vec::new();
            for r in &runs {
                for i in 0..r.count {
                    let id = r.at(i);
                    store.test_retain(id);
                    changes.push((r.first + i, id));
                }
            }
            let by_pages = base.with_changes(&changes);
            let by_runs = base.with_runs(&runs);
            assert_eq!(
                by_runs.digest(),
                by_pages.digest(),
                "{pages} pages, {runs:?}"
            );
            let mut diff = Vec::new();
            by_pages.diff(&by_runs, &mut diff);
            assert!(diff.is_empty(), "{pages} pages: {diff:?}");
        }
        for id in ids {
            store.test_release(id);
        }
        assert_eq!(store.stats().unique_pages, 0, "every reference released");
        assert_eq!(store.stats().table_nodes, 0);
    }

    /// A run of one frame over 2^30 pages builds one node per height.
    #[test]
    fn a_long_run_of_one_frame_shares_its_subtrees() {
        let store = PageStore::new();
        let id = page(&store, 9);
        let pages = 1usize << 30;
        let zero = Tree::zero(&store, pages);
        let run = PageRun {
            first: 1,
            count: pages - 1,
            frames: RunFrames::Same(id),
        };
        let t = zero.with_runs(&[run]);
        assert!(store.stats().table_nodes < 64, "{:?}", store.stats());
        assert_eq!(t.get(0), FrameId::ZERO);
        assert_eq!(t.get(pages - 1), id);
        assert_eq!(t.get(pages / 3), id);
        drop(t);
        store.test_release(id);
        assert_eq!(store.stats().unique_pages, 0);
        assert_eq!(store.stats().table_nodes, 0);
    }
}
