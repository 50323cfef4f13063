//! Clones against a `Vec<u8>` model: random reads, writes, snapshots, restores and
//! resets inside a clone, for every backend this machine has, checking after each
//! step that the clone, its origin, its sibling and the source region are as the
//! model says.

mod common;

use pagesnap::{PageStore, Region, Snapshot, Tracking};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    /// Read one byte of page `page` (maps the image's page into the clone).
    Read(usize),
    Byte {
        at: usize,
        value: u8,
    },
    /// A whole page filled with one value (0 makes a zero page).
    Page {
        page: usize,
        value: u8,
    },
    Snapshot,
    /// Restore the live snapshot `i % live`.
    Restore(usize),
    Reset,
}

fn op(len: usize, pages: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0..pages).prop_map(Op::Read),
        3 => (0..len, any::<u8>()).prop_map(|(at, value)| Op::Byte { at, value }),
        3 => (0..pages, prop_oneof![Just(0u8), any::<u8>()]).prop_map(|(page, value)| Op::Page { page, value }),
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
    let page = pagesnap::page_size();
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
    let len = clone.len();
    let mut model = origin_bytes.clone();
    let mut live: Vec<(Snapshot, Vec<u8>)> = Vec::new();
    for op in ops {
        match *op {
            Op::Read(p) => {
                let p = p % pages;
                assert_eq!(clone.as_slice()[p * page + 1], model[p * page + 1]);
            }
            Op::Byte { at, value } => {
                clone.as_mut_slice()[at % len] = value;
                model[at % len] = value;
            }
            Op::Page { page: p, value } => {
                let p = p % pages;
                clone.as_mut_slice()[p * page..(p + 1) * page].fill(value);
                model[p * page..(p + 1) * page].fill(value);
            }
            Op::Snapshot => {
                let s = clone.snapshot().unwrap();
                assert!(s.to_vec() == model, "snapshot differs from the model");
                live.push((s, model.clone()));
            }
            Op::Restore(i) if !live.is_empty() => {
                let (s, bytes) = &live[i % live.len()];
                clone.restore(s).unwrap();
                model.copy_from_slice(bytes);
            }
            Op::Reset => {
                clone.reset().unwrap();
                model.copy_from_slice(&origin_bytes);
            }
            _ => {}
        }
        assert!(
            clone.as_slice() == &model[..],
            "clone differs from the model after {op:?}"
        );
    }
    // Tracking is exact at the end: what the clone holds is what it snapshots.
    assert!(clone.snapshot().unwrap().to_vec() == model);
    // Nothing leaked out of the clone.
    assert!(origin.to_vec() == origin_bytes);
    assert!(sibling.as_slice() == &origin_bytes[..]);
    assert!(src.as_slice() == &origin_bytes[..]);
    assert!(
        src.snapshot().unwrap().ptr_eq(&origin)
            || src.snapshot().unwrap().digest() == origin.digest()
    );
    for (s, bytes) in &live {
        assert!(s.to_vec() == *bytes, "a live snapshot changed");
    }
}

fn check(tracking: Tracking, pages: usize, cases: u32) {
    let len = pages * pagesnap::page_size();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(cases));
    runner
        .run(&proptest::collection::vec(op(len, pages), 1..50), |ops| {
            run(tracking, pages, &ops);
            Ok(())
        })
        .unwrap();
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
