//! A new table on several threads: a snapshot of many changed pages spends
//! much of its time in the table update (each changed leaf is copied and its
//! other frames take a reference: cache misses, one per frame), which on many
//! cores would otherwise be the snapshot's one serial part.
//!
//! ```text
//!  root ─ subtrees one or two levels down, each with its changes ─► parts,
//!         one per thread, of about equal changes; each part updated as
//!         `update` does on its own thread; the root (and the level between)
//!         rebuilt from the new subtrees on the caller's thread
//! ```
//! The result is the table `with_changes` makes: the same nodes, frame
//! references and counts.

use super::{by_child, child_of, child_span, update, with_children, Node, Tree, FANOUT};
use crate::store::frames::FrameId;
use crate::store::parallel::run_parts;
use std::sync::Arc;

/// A subtree to update on its own: the root's child it lies under, its index
/// in that child (when the split is two levels down), and its changes.
struct Part<'t, 'c> {
    top: usize,
    sub: usize,
    node: &'t Arc<Node>,
    first: usize,
    changes: &'c [(usize, FrameId)],
}

impl Tree {
    /// [`with_changes`](Self::with_changes) on up to `threads` threads.
    pub(in crate::store) fn with_changes_on(
        &self,
        changes: &[(usize, FrameId)],
        threads: usize,
    ) -> Tree {
        let root = self.root();
        if threads <= 1 || self.height == 0 || changes.is_empty() {
            return self.with_changes(changes);
        }
        debug_assert!(changes.windows(2).all(|w| w[0].0 < w[1].0));
        let st = &self.store.shared;
        let height = self.height;
        let span = child_span(height);
        // One level down where that gives every thread a few subtrees, else two.
        let deep = height >= 2 && by_child(0, span, changes).count() < 2 * threads;
        // A part per subtree (64² at most) and a new child per root child (64
        // at most); without memory for these lists the update runs on this
        // thread.
        let mut parts: Vec<Part> = Vec::new();
        let mut level: Vec<(usize, Arc<Node>)> = Vec::new();
        if parts
            .try_reserve_exact(changes.len().min(FANOUT * FANOUT))
            .is_err()
            || level.try_reserve_exact(FANOUT).is_err()
        {
            return self.with_changes(changes);
        }
        for (i, mine) in by_child(0, span, changes) {
            let child = child_of(root, i);
            if deep {
                let sub = child_span(height - 1);
                for (j, theirs) in by_child(i * span, sub, mine) {
                    parts.push(Part {
                        top: i,
                        sub: j,
                        node: child_of(child, j),
                        first: i * span + j * sub,
                        changes: theirs,
                    });
                }
            } else {
                parts.push(Part {
                    top: i,
                    sub: 0,
                    node: child,
                    first: i * span,
                    changes: mine,
                });
            }
        }
        let below = if deep { height - 2 } else { height - 1 };
        let updated: Vec<Arc<Node>> = run_parts(balanced(&parts, changes.len(), threads), |ps| {
            ps.iter()
                .map(|p| update(p.node, below, p.first, p.changes, st))
                .collect::<Vec<_>>()
        })
        .into_iter()
        .flatten()
        .collect();
        // Rebuilt bottom-up: the level between (if any), then the root.
        let mut k = 0;
        while k < parts.len() {
            let i = parts[k].top;
            let end = k + parts[k..].iter().take_while(|p| p.top == i).count();
            let child = if deep {
                let new = (k..end).map(|m| (parts[m].sub, updated[m].clone()));
                with_children(child_of(root, i), new, st)
            } else {
                updated[k].clone()
            };
            level.push((i, child));
            k = end;
        }
        Tree {
            root: Some(with_children(root, level, st)),
            height,
            pages: self.pages,
            store: self.store.clone(),
        }
    }
}

/// `parts` cut into at most `threads` runs of about `total / threads` changes.
fn balanced<'p, 't, 'c>(
    parts: &'p [Part<'t, 'c>],
    total: usize,
    threads: usize,
) -> impl Iterator<Item = &'p [Part<'t, 'c>]> {
    let each = total.div_ceil(threads).max(1);
    let mut rest = parts;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut sum = 0;
        let n = rest
            .iter()
            .take_while(|p| {
                let under = sum < each;
                sum += p.changes.len();
                under
            })
            .count()
            .max(1);
        let (run, tail) = rest.split_at(n);
        rest = tail;
        Some(run)
    })
}

#[cfg(test)]
mod tests {
    use crate::store::frames::FrameId;
    use crate::store::{PageStore, Tree};

    /// The parallel update makes the table the serial one makes, frame for
    /// frame, at every size that splits one or two levels down.
    #[test]
    fn same_table_as_the_serial_update() {
        let store = PageStore::new();
        let page = crate::sys::page_size();
        for pages in [1usize, 15, 16, 1000, 65_536, 300_000] {
            let base = Tree::zero(&store, pages);
            let mut x = 0x2545_F491_4F6C_DD1Du64;
            let mut at: Vec<(usize, u64)> = (0..(pages / 7).max(1))
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x as usize % pages, x)
                })
                .collect();
            at.sort_unstable_by_key(|c| c.0);
            at.dedup_by_key(|c| c.0);
            let changes: Vec<(usize, FrameId)> = at
                .iter()
                .map(|&(p, v)| {
                    let mut bytes = vec![0u8; page];
                    bytes[..8].copy_from_slice(&v.to_le_bytes());
                    (p, store.test_insert(&bytes))
                })
                .collect();
            for &(_, id) in &changes {
                store.test_retain(id);
            }
            let serial = base.with_changes(&changes);
            for threads in [2, 3, 16] {
                for &(_, id) in &changes {
                    store.test_retain(id);
                }
                let parallel = base.with_changes_on(&changes, threads);
                assert_eq!(
                    parallel.digest(),
                    serial.digest(),
                    "{pages} pages, {threads}"
                );
                for p in (0..pages).step_by(97).chain(changes.iter().map(|c| c.0)) {
                    assert_eq!(parallel.get(p), serial.get(p), "page {p}");
                }
            }
            for &(_, id) in &changes {
                store.test_release(id);
            }
        }
        assert_eq!(store.stats().unique_pages, 0, "every reference went back");
    }
}
