//! Differential test: random writes, snapshots, restores and drops against a plain
//! `Vec<u8>` model of the region, for every backend this machine has.

mod common;

use common::oracle::{self, Op, Oracle};
use pagesnap::{PageStore, Region, Tracking};
use proptest::prelude::*;

fn op(len: usize, pages: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => oracle::byte(len),
        3 => oracle::page(pages),
        2 => oracle::run(len),
        3 => Just(Op::Snapshot),
        2 => any::<usize>().prop_map(Op::Restore),
        1 => any::<usize>().prop_map(Op::Drop),
    ]
}

fn run(tracking: Tracking, huge: bool, threads: usize, pages: usize, ops: &[Op]) {
    let page = pagesnap::page_size();
    let store = PageStore::new();
    let mut region = Region::builder(pages * page)
        .tracking(tracking)
        .huge_pages(huge)
        .threads(threads)
        .store(&store)
        .build()
        .unwrap();
    assert_eq!(region.tracking(), tracking);
    let mut oracle = Oracle::new(vec![0u8; region.len()]);
    for op in ops {
        oracle.step(&mut region, op);
        oracle.check_live();
    }
    let live = oracle.live;
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
    oracle::run_cases(cases, 60, op(len, pages), |ops| {
        run(tracking, huge, 0, pages, ops)
    });
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

/// Long runs of random bytes: thousands of pages change between snapshots, so
/// snapshots and restores split their pages and their table update across
/// threads (four, whatever the machine has).
fn long_run(len: usize) -> impl Strategy<Value = Op> {
    (0..len, 1..len / 2, any::<u64>()).prop_map(|(at, len, seed)| Op::Run { at, len, seed })
}

#[test]
fn oracle_many_pages_per_snapshot_on_several_threads() {
    // 4·64² + 5 pages (64 MiB): a root whose subtrees are split two levels down.
    let pages = 4 * 64 * 64 + 5;
    let len = pages * pagesnap::page_size();
    let ops = prop_oneof![
        3 => long_run(len),
        2 => oracle::page(pages),
        3 => Just(Op::Snapshot),
        2 => any::<usize>().prop_map(Op::Restore),
        1 => any::<usize>().prop_map(Op::Drop),
    ];
    for t in common::backends() {
        eprintln!("oracle (many pages, 4 threads): {t}");
        oracle::run_cases(6, 16, ops.clone(), |ops| run(t, false, 4, pages, ops));
    }
}
