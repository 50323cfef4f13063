//! What a table's changes will cost in nodes, counted before any is made, so
//! that a caller under an address-space limit can refuse the work up front
//! (see `PageStore::room_for_tables`).
//!
//! A changed page copies its leaf and every node above it; changed pages under
//! one node share its copy. The cost is therefore, at each height, the number
//! of distinct nodes the changed pages lie under: 16 dense pages cost one leaf,
//! one page alone in its 4 MiB costs a leaf and an inner node.

use super::merkle::{BITS, LEAF, MAX_HEIGHT};
use super::{INNER_BYTES, LEAF_BYTES};

const HEIGHTS: usize = MAX_HEIGHT as usize + 1;

/// Nodes that changes to a table will copy, counted page run by page run.
#[derive(Default)]
pub(crate) struct TableCost {
    /// Distinct nodes so far, by height (0: leaves).
    nodes: [u64; HEIGHTS],
    /// The last node counted at each height, which the next run may share.
    last: [Option<usize>; HEIGHTS],
}

impl TableCost {
    /// The cost of changing `pages` (ascending; out of order they are only
    /// over-counted, never under-counted).
    pub(crate) fn of_pages(pages: impl IntoIterator<Item = usize>) -> TableCost {
        let mut cost = TableCost::default();
        for p in pages {
            cost.add_run(p, 1);
        }
        cost
    }

    /// Counts pages `first..first + count` (runs in ascending order).
    pub(crate) fn add_run(&mut self, first: usize, count: usize) {
        self.add(first, count, u64::MAX);
    }

    /// Counts a run of `count` pages from `first` that all hold one frame:
    /// the nodes it covers whole are one shared node per height (see
    /// `Tree::with_runs`), so at each height it costs at most its two edge
    /// nodes and that one.
    pub(crate) fn add_same_run(&mut self, first: usize, count: usize) {
        self.add(first, count, 3);
    }

    /// Counts the nodes under pages `first..first + count`, at most `cap` new
    /// ones per height.
    fn add(&mut self, first: usize, count: usize, cap: u64) {
        if count == 0 {
            return;
        }
        let end = first.saturating_add(count - 1);
        for height in 0..HEIGHTS {
            let shift = LEAF.trailing_zeros() + BITS * height as u32;
            let lo = first.checked_shr(shift).unwrap_or(0);
            let hi = end.checked_shr(shift).unwrap_or(0);
            let shared = self.last[height] == Some(lo);
            self.nodes[height] += ((hi - lo) as u64 + u64::from(!shared)).min(cap);
            self.last[height] = Some(hi);
        }
    }

    /// Bytes of the nodes counted (each height up to the tallest tree, so a
    /// few inner nodes above a smaller table's root are counted too).
    pub(crate) fn bytes(&self) -> u64 {
        let inner: u64 = self.nodes[1..].iter().sum();
        self.nodes[0]
            .saturating_mul(LEAF_BYTES)
            .saturating_add(inner.saturating_mul(INNER_BYTES))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nodes counted above the leaves and the first inner height: one per
    /// height from 2 up, for a table that lies in one node there.
    const ABOVE: u64 = MAX_HEIGHT as u64 - 1;

    #[test]
    fn dense_pages_share_their_leaves_and_sparse_ones_pay_a_path_each() {
        let dense = TableCost::of_pages(0..1024);
        assert_eq!(dense.nodes[0], 64, "16 pages a leaf");
        assert_eq!(dense.nodes[1], 1, "1024 pages under one inner node");
        assert_eq!(dense.bytes(), 64 * LEAF_BYTES + (1 + ABOVE) * INNER_BYTES);

        let sparse = TableCost::of_pages((0..100).map(|i| i * 1024));
        assert_eq!(sparse.nodes[0], 100);
        assert_eq!(sparse.nodes[1], 100, "each page alone under its inner node");
        assert_eq!(sparse.nodes[2], 2, "64 inner nodes under each of height 2");
    }

    #[test]
    fn runs_count_as_their_pages_do() {
        let mut runs = TableCost::default();
        // Runs that share a leaf at their edges, and one alone.
        runs.add_run(3, 20);
        runs.add_run(23, 9);
        runs.add_run(5000, 1);
        let pages = TableCost::of_pages((3..32).chain([5000]));
        assert_eq!(runs.nodes, pages.nodes);
        assert_eq!(runs.bytes(), pages.bytes());
    }

    #[test]
    fn a_run_of_one_frame_costs_its_edges_and_one_shared_node_a_height() {
        let mut same = TableCost::default();
        same.add_same_run(5, 1 << 30);
        assert!(same.nodes.iter().all(|&n| n <= 3), "{:?}", same.nodes);
        let mut each = TableCost::default();
        each.add_run(5, 1 << 30);
        assert_eq!(each.nodes[0], (1 << 30) / 16 + 1);
    }

    #[test]
    fn pages_at_the_top_of_the_address_space_do_not_overflow() {
        let mut cost = TableCost::default();
        cost.add_run(usize::MAX - 3, 10);
        cost.add_run(usize::MAX, 1);
        assert!(cost.bytes() > 0);
    }
}
