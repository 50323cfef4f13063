//! Clones against a `Vec<u8>` model: random reads, writes, snapshots, restores and
//! resets inside a clone, for every backend this machine has, checking after each
//! step that the clone, its origin, its sibling and the source region are as the
//! model says.

mod common;

use common::oracle::{self, Op, Oracle};
use pagesnap::{PageStore, Region, Tracking};
use proptest::prelude::*;

fn op(len: usize, pages: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0..pages).prop_map(Op::Read),
        3 => oracle::byte(len),
        3 => oracle::page(pages),
        2 => Just(Op::Snapshot),
        1 => any::<usize>().prop_map(Op::Restore),
        2 => Just(Op::Reset),
    ]
}

/// A source region of `pages` pages with some pages set, some left zero.
fn source(tracking: Tracking, store: &PageStore, pages: usize, seed: u64) -> Region {
    let page = pagesnap::page_size();
    let mut region = Region::builder(pages * page)
        .tracking(tracking)
        .store(store)
        .build()
        .unwrap();
    let mut data = vec![0u8; region.len()];
    common::fill(&mut data, seed);
    for (p, chunk) in data.chunks_exact(page).enumerate() {
        if p % 3 != 2 {
            region.as_mut_slice()[p * page..(p + 1) * page].copy_from_slice(chunk);
        }
    }
    region
}

fn run(tracking: Tracking, pages: usize, ops: &[Op]) {
    let store = PageStore::new();
    let mut src = source(tracking, &store, pages, 7);
    let origin = src.snapshot().unwrap();
    let origin_bytes = origin.to_vec();
    let mut clone = origin
        .instantiate_with(Region::builder(origin.len()).tracking(tracking))
        .unwrap();
    assert_eq!(clone.tracking(), tracking);
    assert!(clone.cloned_from().unwrap().ptr_eq(&origin));
    let sibling = origin.instantiate().unwrap();
    let mut oracle = Oracle::new(origin_bytes.clone());
    for op in ops {
        oracle.step(&mut clone, op);
    }
    let model = &oracle.model;
    // Tracking is exact at the end: what the clone holds is what it snapshots.
    assert!(clone.snapshot().unwrap().to_vec() == *model);
    // Nothing leaked out of the clone.
    assert!(origin.to_vec() == origin_bytes);
    assert!(sibling.as_slice() == &origin_bytes[..]);
    assert!(src.as_slice() == &origin_bytes[..]);
    assert!(
        src.snapshot().unwrap().ptr_eq(&origin)
            || src.snapshot().unwrap().digest() == origin.digest()
    );
    oracle.check_live();
}

fn check(tracking: Tracking, pages: usize, cases: u32) {
    let len = pages * pagesnap::page_size();
    oracle::run_cases(cases, 50, op(len, pages), |ops| run(tracking, pages, ops));
}

#[test]
fn clone_oracle_every_backend() {
    for t in common::backends() {
        eprintln!("clone oracle: {t}");
        check(t, 70, 48);
    }
}

#[test]
fn clone_oracle_several_arming_chunks() {
    // 64² + 5 pages: a three-level table and several uffd-wp arming chunks.
    for t in common::backends() {
        eprintln!("clone oracle (large): {t}");
        check(t, 64 * 64 + 5, 8);
    }
}
