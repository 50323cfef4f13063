//! Several regions in one process. soft-dirty's `clear_refs` is process-wide: a
//! snapshot of one region clears the bits of every page of the process, so it must
//! not lose what the other regions wrote and have not collected yet. The oracle
//! runs for every backend (one model per region); the scripted case names the
//! soft-dirty contract step by step and says why it skips where the kernel lacks
//! soft-dirty (the kernel matrix boots kernels that have it).

mod common;

use pagesnap::{probe, PageStore, Region, Snapshot, Tracking};
use proptest::prelude::*;

const PAGES: usize = 24;

/// soft-dirty's contract is process-wide: while one soft-dirty region snapshots,
/// the writers of every soft-dirty region of the process are quiescent. The test
/// harness runs tests on parallel threads, so the tests here take turns.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn page() -> usize {
    pagesnap::page_size()
}

fn region(t: Tracking, store: &PageStore, huge: bool) -> Region {
    Region::builder(PAGES * page())
        .tracking(t)
        .huge_pages(huge)
        .store(store)
        .build()
        .unwrap()
}

/// Takes a snapshot of `region` and checks it holds exactly the region's bytes.
#[track_caller]
fn assert_snapshot_whole(region: &mut Region, what: &str) {
    let snap = region.snapshot().unwrap();
    assert!(snap.to_vec() == region.as_slice(), "{what}");
}

#[test]
fn soft_dirty_keeps_every_regions_dirty_pages() {
    let _turn = one_at_a_time();
    let b = probe().backend(Tracking::SoftDirty).unwrap();
    if !b.available {
        eprintln!("skipping soft-dirty: {}", b.reason);
        return;
    }
    let t = Tracking::SoftDirty;
    let store = PageStore::new();
    let mut a = region(t, &store, false);
    let mut b = region(t, &store, true);
    let p = page();

    // B's writes survive A's snapshot (a clear_refs made for A).
    b.as_mut_slice()[3 * p] = 1;
    a.as_mut_slice()[0] = 9;
    assert_snapshot_whole(&mut a, "A after writes to A and B");
    b.as_mut_slice()[7 * p] = 2;
    assert_snapshot_whole(&mut b, "B lost a page to A's clear");

    // ... A's restore (peek, write, clear),
    let a0 = a.last_snapshot().clone();
    b.as_mut_slice()[5 * p] = 3;
    a.as_mut_slice()[p] = 4;
    a.restore(&a0).unwrap();
    assert_eq!(a.as_slice()[p], 0);
    assert_snapshot_whole(&mut b, "B lost a page to A's restore");

    // ... a new region (arming clears too), a dropped one, a background snapshot.
    b.as_mut_slice()[11 * p] = 5;
    let mut c = region(t, &store, false);
    drop(region(t, &store, false));
    c.as_mut_slice()[2 * p] = 6;
    a.as_mut_slice()[2 * p] = 7;
    let bg = a.background_snapshot().unwrap().wait().unwrap();
    assert!(bg.to_vec() == a.as_slice(), "A's background snapshot");
    assert_snapshot_whole(&mut c, "C lost a page");
    assert_snapshot_whole(&mut b, "B lost a page to a new region");
    assert_snapshot_whole(&mut a, "A after its background snapshot");

    // Nothing is reported twice as changed: an untouched region snapshots to its
    // sync point again.
    let before = b.last_snapshot().digest();
    assert_eq!(b.snapshot().unwrap().digest(), before);
}

#[derive(Clone, Debug)]
enum Op {
    /// Fill page `page` of region `r` with `value`.
    Write {
        r: usize,
        page: usize,
        value: u8,
    },
    Snapshot(usize),
    /// Restore region `r` to its snapshot `i % live`.
    Restore {
        r: usize,
        i: usize,
    },
    /// Drop region `r` and build a new one (all zeros) in its place.
    Replace(usize),
}

fn op(regions: usize) -> impl Strategy<Value = Op> {
    let r = 0..regions;
    prop_oneof![
        6 => (r.clone(), 0..PAGES, any::<u8>()).prop_map(|(r, page, value)| Op::Write { r, page, value }),
        3 => r.clone().prop_map(Op::Snapshot),
        2 => (r.clone(), any::<usize>()).prop_map(|(r, i)| Op::Restore { r, i }),
        1 => r.prop_map(Op::Replace),
    ]
}

struct Modelled {
    region: Region,
    model: Vec<u8>,
    live: Vec<(Snapshot, Vec<u8>)>,
}

fn run(t: Tracking, ops: &[Op]) {
    let store = PageStore::new();
    let fresh = |huge| Modelled {
        region: region(t, &store, huge),
        model: vec![0; PAGES * page()],
        live: Vec::new(),
    };
    let mut all: Vec<Modelled> = (0..3).map(|i| fresh(i == 1)).collect();
    for op in ops {
        match *op {
            Op::Write { r, page: n, value } => {
                let m = &mut all[r];
                let range = n * page()..(n + 1) * page();
                m.region.as_mut_slice()[range.clone()].fill(value);
                m.model[range].fill(value);
            }
            Op::Snapshot(r) => {
                let m = &mut all[r];
                let s = m.region.snapshot().unwrap();
                assert!(
                    s.to_vec() == m.model,
                    "{t}: snapshot of region {r} lost a write"
                );
                m.live.push((s, m.model.clone()));
            }
            Op::Restore { r, i } if !all[r].live.is_empty() => {
                let m = &mut all[r];
                let (s, bytes) = &m.live[i % m.live.len()];
                m.region.restore(s).unwrap();
                m.model.copy_from_slice(bytes);
            }
            Op::Replace(r) => all[r] = fresh(r == 1),
            Op::Restore { .. } => {}
        }
    }
    for (r, m) in all.iter_mut().enumerate() {
        assert!(m.region.as_slice() == &m.model[..], "{t}: region {r}");
        let s = m.region.snapshot().unwrap();
        assert!(s.to_vec() == m.model, "{t}: last snapshot of region {r}");
    }
}

#[test]
fn several_regions_oracle_every_backend() {
    let _turn = one_at_a_time();
    for t in common::backends() {
        eprintln!("several regions: {t}");
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(24));
        runner
            .run(&proptest::collection::vec(op(3), 1..80), |ops| {
                run(t, &ops);
                Ok(())
            })
            .unwrap();
    }
}
