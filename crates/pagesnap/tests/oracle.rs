//! Differential test: random writes, snapshots, restores and drops against a plain
//! `Vec<u8>` model of the region, for every backend this machine has.

mod common;

use pagesnap::{PageStore, Region, Snapshot, Tracking};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    /// One byte.
    Byte {
        at: usize,
        value: u8,
    },
    /// A whole page filled with one value (0 makes a zero page again).
    Page {
        page: usize,
        value: u8,
    },
    /// A run of bytes that may span pages, with pseudo-random contents.
    Run {
        at: usize,
        len: usize,
        seed: u64,
    },
    Snapshot,
    /// Restore the live snapshot `i % live`.
    Restore(usize),
    /// Drop the live snapshot `i % live`.
    Drop(usize),
}

fn op(len: usize, pages: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..len, any::<u8>()).prop_map(|(at, value)| Op::Byte { at, value }),
        3 => (0..pages, prop_oneof![Just(0u8), any::<u8>()]).prop_map(|(page, value)| Op::Page { page, value }),
        2 => (0..len, 1..3 * 4096usize, any::<u64>()).prop_map(|(at, len, seed)| Op::Run { at, len, seed }),
        3 => Just(Op::Snapshot),
        2 => any::<usize>().prop_map(Op::Restore),
        1 => any::<usize>().prop_map(Op::Drop),
    ]
}

fn run(tracking: Tracking, huge: bool, pages: usize, ops: &[Op]) {
    let page = pagesnap::page_size();
    let store = PageStore::new();
    let mut region = Region::builder(pages * page)
        .tracking(tracking)
        .huge_pages(huge)
        .store(&store)
        .build()
        .unwrap();
    assert_eq!(region.tracking(), tracking);
    let len = region.len();
    let mut model = vec![0u8; len];
    let mut live: Vec<(Snapshot, Vec<u8>)> = Vec::new();
    for op in ops {
        match *op {
            Op::Byte { at, value } => {
                region.as_mut_slice()[at % len] = value;
                model[at % len] = value;
            }
            Op::Page { page: p, value } => {
                let p = p % pages;
                region.as_mut_slice()[p * page..(p + 1) * page].fill(value);
                model[p * page..(p + 1) * page].fill(value);
            }
            Op::Run { at, len: n, seed } => {
                let at = at % len;
                let n = n.min(len - at);
                let mut data = vec![0u8; n];
                common::fill(&mut data, seed);
                region.as_mut_slice()[at..at + n].copy_from_slice(&data);
                model[at..at + n].copy_from_slice(&data);
            }
            Op::Snapshot => {
                let s = region.snapshot().unwrap();
                assert!(s.to_vec() == model, "snapshot differs from the model");
                live.push((s, model.clone()));
            }
            Op::Restore(i) if !live.is_empty() => {
                let (s, bytes) = &live[i % live.len()];
                region.restore(s).unwrap();
                model.copy_from_slice(bytes);
            }
            Op::Drop(i) if !live.is_empty() => {
                live.remove(i % live.len());
            }
            _ => {}
        }
        assert!(
            region.as_slice() == &model[..],
            "region differs from the model after {op:?}"
        );
        for (s, bytes) in &live {
            assert!(s.to_vec() == *bytes, "a live snapshot changed");
        }
    }
    // Digests: equal contents, equal digests; every snapshot matches its bytes.
    for (a, ab) in &live {
        for (b, bb) in &live {
            assert_eq!(a.digest() == b.digest(), ab == bb);
        }
    }
    // The store holds exactly the distinct non-zero pages the live snapshots hold
    // (plus the region's own sync point).
    let mut distinct = std::collections::HashSet::new();
    let sync = region.last_snapshot().to_vec();
    for bytes in live.iter().map(|(_, b)| b).chain(std::iter::once(&sync)) {
        for p in bytes.chunks_exact(page) {
            if p.iter().any(|&b| b != 0) {
                distinct.insert(p.to_vec());
            }
        }
    }
    assert_eq!(store.stats().unique_pages, distinct.len() as u64);
    drop(live);
    drop(region);
    assert_eq!(store.stats().unique_pages, 0);
    assert_eq!(store.stats().table_nodes, 0);
}

fn check(tracking: Tracking, huge: bool, pages: usize, cases: u32) {
    let len = pages * pagesnap::page_size();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(cases));
    runner
        .run(&proptest::collection::vec(op(len, pages), 1..60), |ops| {
            run(tracking, huge, pages, &ops);
            Ok(())
        })
        .unwrap();
}

#[test]
fn oracle_every_backend() {
    for t in common::backends() {
        eprintln!("oracle: {t}");
        check(t, false, 70, 64); // more than one leaf, not a whole number of leaves
    }
}

#[test]
fn oracle_every_backend_huge_pages() {
    for t in common::backends() {
        eprintln!("oracle (huge pages): {t}");
        check(t, true, 1024, 32); // two huge pages, two arming chunks
    }
}

#[test]
fn oracle_large_region_two_levels() {
    // 64² + 5 pages: a three-level table, and several uffd-wp arming chunks.
    for t in common::backends() {
        check(t, false, 64 * 64 + 5, 12);
    }
}
