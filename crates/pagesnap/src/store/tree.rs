//! The persistent page table: a radix tree from page index to frame id, 64
//! children per inner node and 16 pages per leaf.
//!
//! ```text
//!            root (height 2: 16·64² pages)
//!           /   |    \
//!   inner(1)  inner(1)  ZERO(1) ◄── one shared all-zero node per height
//!   /  |  \
//! leaf leaf ZERO(0)       leaf: [FrameId; 16] + xxh3-128 of their 16 page hashes
//! ```
//! Leaves are small because a changed page copies its whole leaf, and each copied
//! slot takes a frame reference: 16 slots keep that (and the metadata per
//! snapshot) low, 64-way inner nodes keep the tree shallow.
//!
//! A new snapshot copies only the paths to the pages that changed; every other
//! subtree is shared with the previous table by `Arc`, so metadata grows with the
//! changes, not with the region. Each node carries a Merkle digest of its subtree,
//! computed the first time it is asked for and kept: a snapshot costs no hashing
//! of the table, and a digest costs only the nodes no earlier digest covered. Each leaf slot holds one reference to its
//! frame; a leaf's references are dropped when the last table holding the leaf goes.

mod cost;
mod merkle;
mod parallel_update;
mod runs;

pub(crate) use cost::TableCost;
pub(crate) use merkle::StreamDigest;
use merkle::{height, table_digest, BITS, FANOUT, LEAF, MAX_HEIGHT};
pub(crate) use runs::{PageRun, RunFrames};

use super::frames::FrameId;
use super::{PageStore, Shared};
use crate::digest::{combine, page_hash};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

pub(crate) enum Node {
    Leaf {
        frames: [FrameId; LEAF],
        digest: Memo,
    },
    Inner {
        children: Box<[Arc<Node>; FANOUT]>,
        digest: Memo,
    },
}

/// A node's digest once computed. `lo == 0` means not yet: a digest whose low
/// half is 0 (one in 2^64) is computed again at each use rather than kept.
#[derive(Default)]
pub(crate) struct Memo {
    lo: AtomicU64,
    hi: AtomicU64,
}

impl Memo {
    fn known(digest: u128) -> Memo {
        let memo = Memo::default();
        memo.get_or(|| digest);
        memo
    }

    /// The digest, from `compute` the first time. Threads racing here compute
    /// the same value; `hi` is stored before `lo` is published.
    fn get_or(&self, compute: impl FnOnce() -> u128) -> u128 {
        let lo = self.lo.load(Ordering::Acquire);
        if lo != 0 {
            return (u128::from(self.hi.load(Ordering::Relaxed)) << 64) | u128::from(lo);
        }
        let digest = compute();
        self.hi.store((digest >> 64) as u64, Ordering::Relaxed);
        self.lo.store(digest as u64, Ordering::Release);
        digest
    }
}

/// Bytes of a leaf, with its `Arc`'s counts.
const LEAF_BYTES: u64 = (std::mem::size_of::<Node>() + 16) as u64;
/// Bytes of an inner node, with its `Arc`'s counts and its boxed children.
const INNER_BYTES: u64 = (std::mem::size_of::<Node>() + 16 + 8 * FANOUT) as u64;

impl Node {
    pub(super) fn leaf(frames: [FrameId; LEAF]) -> Node {
        Node::Leaf {
            frames,
            digest: Memo::default(),
        }
    }

    pub(super) fn inner(children: [Arc<Node>; FANOUT]) -> Node {
        Node::Inner {
            children: Box::new(children),
            digest: Memo::default(),
        }
    }

    /// The Merkle digest of the subtree: of a leaf, its 16 page hashes; of an
    /// inner node, its 64 children's digests. Computed on first use (reading the
    /// frames' hashes from `st`), then kept.
    fn digest(&self, st: &Shared) -> u128 {
        match self {
            Node::Leaf { frames, digest } => {
                digest.get_or(|| combine(&frames.map(|id| st.frames.hash(id))))
            }
            Node::Inner { children, digest } => digest.get_or(|| {
                let below: [u128; FANOUT] = std::array::from_fn(|i| children[i].digest(st));
                combine(&below)
            }),
        }
    }
}

/// The all-zero node of each height, shared by every table of every store.
fn zero_node(height: u32) -> &'static Arc<Node> {
    static ZERO: OnceLock<Vec<Arc<Node>>> = OnceLock::new();
    let nodes = ZERO.get_or_init(|| {
        let zero_hash = page_hash(&vec![0u8; crate::sys::page_size()]);
        let mut digest = combine(&[zero_hash; LEAF]);
        let leaf = Arc::new(Node::Leaf {
            frames: [FrameId::ZERO; LEAF],
            digest: Memo::known(digest),
        });
        let mut nodes = vec![leaf];
        for h in 1..=MAX_HEIGHT {
            let below = nodes[h as usize - 1].clone();
            digest = combine(&[digest; FANOUT]);
            nodes.push(Arc::new(Node::Inner {
                children: Box::new(std::array::from_fn(|_| below.clone())),
                digest: Memo::known(digest),
            }));
        }
        nodes
    });
    &nodes[height as usize]
}

/// Pages covered by each child of a node of `height` (≥ 1).
fn child_span(height: u32) -> usize {
    LEAF << (BITS * (height - 1))
}

/// One page table, owning one reference to its root. Dropping it releases the
/// nodes (and their frames) no other table shares.
pub(crate) struct Tree {
    root: Option<Arc<Node>>,
    height: u32,
    pages: usize,
    store: PageStore,
}

impl Tree {
    /// The table of `pages` zero pages.
    pub(crate) fn zero(store: &PageStore, pages: usize) -> Tree {
        let height = height(pages);
        Tree {
            root: Some(zero_node(height).clone()),
            height,
            pages,
            store: store.clone(),
        }
    }

    fn root(&self) -> &Arc<Node> {
        self.root.as_ref().expect("the root is only taken in drop")
    }

    pub(crate) fn pages(&self) -> usize {
        self.pages
    }

    pub(crate) fn store(&self) -> &PageStore {
        &self.store
    }

    /// The Merkle digest of the table (with its length mixed in). The first call
    /// on a table hashes the nodes no earlier digest covered (those its snapshot
    /// made), later calls cost nothing.
    pub(crate) fn digest(&self) -> u128 {
        table_digest(self.pages, self.root().digest(&self.store.shared))
    }

    /// A new table equal to this one except at `changes` (page, frame), which must be
    /// sorted by page, unique, and in range. Each frame in `changes` carries one
    /// reference that the new table takes over (see `PageStore::commit`).
    pub(super) fn with_changes(&self, changes: &[(usize, FrameId)]) -> Tree {
        debug_assert!(changes.windows(2).all(|w| w[0].0 < w[1].0));
        debug_assert!(changes.last().is_none_or(|c| c.0 < self.pages));
        let root = if changes.is_empty() {
            self.root().clone()
        } else {
            update(self.root(), self.height, 0, changes, &self.store.shared)
        };
        Tree {
            root: Some(root),
            height: self.height,
            pages: self.pages,
            store: self.store.clone(),
        }
    }

    /// The frame at `page` (< pages).
    pub(crate) fn get(&self, page: usize) -> FrameId {
        let mut node = self.root();
        let mut h = self.height;
        loop {
            match &**node {
                Node::Leaf { frames, .. } => return frames[page % LEAF],
                Node::Inner { children, .. } => {
                    node = &children[(page / child_span(h)) % FANOUT];
                    h -= 1;
                }
            }
        }
    }

    /// Calls `f(page, frame)` for every page whose frame is not the zero page, in
    /// page order. Shared all-zero subtrees are skipped without a visit.
    pub(crate) fn for_each_nonzero(&self, mut f: impl FnMut(usize, FrameId)) {
        visit(
            self.root(),
            self.height,
            0,
            &mut |first, frames: &[FrameId; LEAF]| {
                for (i, &id) in frames.iter().enumerate() {
                    if id != FrameId::ZERO {
                        f(first + i, id);
                    }
                }
            },
        );
    }

    /// Pushes `(page, frame in other)` for every page where `other` differs from
    /// `self` (same page count). Subtrees the two share are skipped by identity.
    pub(crate) fn diff(&self, other: &Tree, out: &mut Vec<(usize, FrameId)>) {
        debug_assert_eq!(self.pages, other.pages);
        diff(self.root(), other.root(), self.height, 0, out);
    }
}

fn visit(node: &Arc<Node>, height: u32, first: usize, f: &mut impl FnMut(usize, &[FrameId; LEAF])) {
    if Arc::ptr_eq(node, zero_node(height)) {
        return;
    }
    match &**node {
        Node::Leaf { frames, .. } => f(first, frames),
        Node::Inner { children, .. } => {
            for (i, c) in children.iter().enumerate() {
                visit(c, height - 1, first + i * child_span(height), f);
            }
        }
    }
}

fn diff(a: &Arc<Node>, b: &Arc<Node>, height: u32, first: usize, out: &mut Vec<(usize, FrameId)>) {
    if Arc::ptr_eq(a, b) {
        return;
    }
    match (&**a, &**b) {
        (Node::Leaf { frames: fa, .. }, Node::Leaf { frames: fb, .. }) => {
            for (i, (x, y)) in fa.iter().zip(fb.iter()).enumerate() {
                if x != y {
                    out.push((first + i, *y));
                }
            }
        }
        (Node::Inner { children: ca, .. }, Node::Inner { children: cb, .. }) => {
            for (i, (x, y)) in ca.iter().zip(cb.iter()).enumerate() {
                diff(x, y, height - 1, first + i * child_span(height), out);
            }
        }
        _ => unreachable!("tables of one page count have one shape"),
    }
}

fn update(
    node: &Arc<Node>,
    height: u32,
    first: usize,
    changes: &[(usize, FrameId)],
    st: &Shared,
) -> Arc<Node> {
    match &**node {
        Node::Leaf { frames: old, .. } => {
            let mut new = *old;
            let mut changed = [false; LEAF];
            for &(page, id) in changes {
                new[page - first] = id;
                changed[page - first] = true;
            }
            if new == *old {
                // Written, but with the same contents: keep sharing the old leaf.
                st.frames.release_all(changes.iter().map(|c| c.1));
                return node.clone();
            }
            for (id, was_changed) in new.iter().zip(changed) {
                if !was_changed {
                    st.frames.retain(*id);
                }
            }
            st.nodes.fetch_add(1, Ordering::Relaxed);
            st.node_bytes.fetch_add(LEAF_BYTES, Ordering::Relaxed);
            Arc::new(Node::leaf(new))
        }
        Node::Inner { .. } => {
            let span = child_span(height);
            let updated = by_child(first, span, changes).map(|(i, mine)| {
                let child = child_of(node, i);
                (i, update(child, height - 1, first + i * span, mine, st))
            });
            with_children(node, updated, st)
        }
    }
}

/// `changes` (sorted) split by the child of span `span` each falls in, for a
/// node whose pages start at `first`: (child index, its changes), in order.
fn by_child(
    first: usize,
    span: usize,
    changes: &[(usize, FrameId)],
) -> impl Iterator<Item = (usize, &[(usize, FrameId)])> {
    let mut rest = changes;
    std::iter::from_fn(move || {
        let &(page, _) = rest.first()?;
        let i = (page - first) / span;
        let n = rest.partition_point(|c| c.0 < first + (i + 1) * span);
        let (mine, tail) = rest.split_at(n);
        rest = tail;
        Some((i, mine))
    })
}

/// Child `i` of inner node `node`.
fn child_of(node: &Arc<Node>, i: usize) -> &Arc<Node> {
    match &**node {
        Node::Inner { children, .. } => &children[i],
        Node::Leaf { .. } => unreachable!("a leaf has no children"),
    }
}

/// Inner node `node` with the children `updated` (index, new child) in place
/// of its own; `node` itself where none changed.
fn with_children(
    node: &Arc<Node>,
    updated: impl IntoIterator<Item = (usize, Arc<Node>)>,
    st: &Shared,
) -> Arc<Node> {
    let Node::Inner { children, .. } = &**node else {
        unreachable!("only inner nodes have children")
    };
    let mut new_children: [Arc<Node>; FANOUT] = (**children).clone();
    let mut any = false;
    for (i, child) in updated {
        any |= !Arc::ptr_eq(&child, &children[i]);
        new_children[i] = child;
    }
    if !any {
        return node.clone();
    }
    st.nodes.fetch_add(1, Ordering::Relaxed);
    st.node_bytes.fetch_add(INNER_BYTES, Ordering::Relaxed);
    Arc::new(Node::inner(new_children))
}

impl Drop for Tree {
    fn drop(&mut self) {
        let Some(root) = self.root.take() else { return };
        // Arc::into_inner hands the node to exactly one of the tables dropping it
        // at once, so each node's frames are released exactly once.
        let mut stack = vec![root];
        let mut frames = Vec::new();
        let (mut leaves, mut inners) = (0u64, 0u64);
        while let Some(node) = stack.pop() {
            match Arc::into_inner(node) {
                Some(Node::Leaf { frames: f, .. }) => {
                    leaves += 1;
                    frames.extend(f.iter().copied().filter(|&id| id != FrameId::ZERO));
                }
                Some(Node::Inner { children, .. }) => {
                    inners += 1;
                    stack.extend(*children);
                }
                None => {}
            }
        }
        if leaves + inners > 0 {
            let st = &self.store.shared;
            st.frames.release_all(frames);
            st.nodes.fetch_sub(leaves + inners, Ordering::Relaxed);
            st.node_bytes.fetch_sub(
                leaves * LEAF_BYTES + inners * INNER_BYTES,
                Ordering::Relaxed,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(store: &PageStore, tag: u8) -> FrameId {
        let mut b = vec![0u8; crate::sys::page_size()];
        b[0] = tag;
        store.test_insert(&b)
    }

    /// Digests are computed on demand and kept per node: a table whose shared
    /// nodes were digested through an earlier table gets the digest of a table
    /// built afresh (another store, nothing digested before) with its contents.
    #[test]
    fn kept_digests_equal_fresh_ones() {
        let pages = 5000;
        let (a, b) = (PageStore::new(), PageStore::new());
        let ids_a: Vec<FrameId> = (1..=3).map(|t| page(&a, t)).collect();
        let ids_b: Vec<FrameId> = (1..=3).map(|t| page(&b, t)).collect();
        let first = [(7, ids_a[0]), (4000, ids_a[1])];
        let parent = Tree::zero(&a, pages).with_changes(&first);
        let parent_digest = parent.digest();
        a.test_retain(ids_a[2]);
        let child = parent.with_changes(&[(4001, ids_a[2])]);
        let fresh = Tree::zero(&b, pages).with_changes(&[
            (7, ids_b[0]),
            (4000, ids_b[1]),
            (4001, ids_b[2]),
        ]);
        assert_eq!(child.digest(), fresh.digest());
        assert_ne!(child.digest(), parent_digest);
        assert_eq!(
            parent.digest(),
            parent_digest,
            "kept, not recomputed differently"
        );
    }
}
