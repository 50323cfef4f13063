//! Clones (`Snapshot::instantiate`): equal to their snapshot, isolated from each
//! other and from their source, outliving it, sharing one store, and `reset`.

mod common;

use pagesnap::{Error, PageStore, Region, Snapshot, Tracking};

const PAGES: usize = 300;

fn page() -> usize {
    pagesnap::page_size()
}

/// A region whose page `p` holds `seed`-dependent bytes, except every fourth page
/// (left zero).
fn filled(store: &PageStore, tracking: Tracking, seed: u64) -> Region {
    let mut region = Region::builder(PAGES * page())
        .tracking(tracking)
        .store(store)
        .build()
        .unwrap();
    let mut data = vec![0u8; page()];
    for p in (0..PAGES).filter(|p| p % 4 != 3) {
        common::fill(&mut data, seed * 1000 + p as u64);
        region.as_mut_slice()[p * page()..(p + 1) * page()].copy_from_slice(&data);
    }
    region
}

#[test]
fn clones_equal_the_snapshot_byte_for_byte() {
    for t in common::backends() {
        let store = PageStore::new();
        let mut src = filled(&store, t, 1);
        let snap = src.snapshot().unwrap();
        let clone = snap
            .instantiate_with(Region::builder(snap.len()).tracking(t))
            .unwrap();
        assert_eq!(clone.len(), snap.len());
        assert_eq!(clone.tracking(), t);
        assert!(clone.as_slice() == &snap.to_vec()[..], "{t}");
        assert!(clone.last_snapshot().ptr_eq(&snap));
        assert!(clone.store().same_as(&store));
    }
}

#[test]
fn writes_in_one_clone_are_invisible_to_others_and_the_source() {
    for t in common::backends() {
        let store = PageStore::new();
        let mut src = filled(&store, t, 2);
        let snap = src.snapshot().unwrap();
        let bytes = snap.to_vec();
        let mut a = snap
            .instantiate_with(Region::builder(snap.len()).tracking(t))
            .unwrap();
        let b = snap.instantiate().unwrap();
        // Touch b's pages first so they are mapped from the image when a writes.
        let _ = b
            .as_slice()
            .iter()
            .step_by(page())
            .map(|&x| x as u64)
            .sum::<u64>();
        for p in (0..PAGES).step_by(7) {
            a.as_mut_slice()[p * page() + 5] ^= 0xff;
        }
        src.as_mut_slice()[0] ^= 1;
        assert!(b.as_slice() == &bytes[..], "{t}: a sibling saw a write");
        assert!(snap.to_vec() == bytes, "{t}: the snapshot changed");
        assert_eq!(src.as_slice()[5], bytes[5], "{t}");
        assert_ne!(a.as_slice()[5], bytes[5]);
        let sa = a.snapshot().unwrap();
        assert!(sa.to_vec() == a.as_slice(), "{t}");
        // A clone made after the writes still sees the snapshot.
        let c = snap.instantiate().unwrap();
        assert!(c.as_slice() == &bytes[..], "{t}");
    }
}

#[test]
fn a_clone_outlives_its_source_region() {
    let store = PageStore::new();
    let mut src = filled(&store, Tracking::Auto, 3);
    let snap = src.snapshot().unwrap();
    let bytes = snap.to_vec();
    drop(src);
    let mut clone = snap.instantiate().unwrap();
    drop(snap);
    assert!(clone.as_slice() == &bytes[..]);
    clone.as_mut_slice()[100] = 42;
    let s = clone.snapshot().unwrap();
    assert_eq!(s.to_vec()[100], 42);
    clone.reset().unwrap();
    assert!(clone.as_slice() == &bytes[..]);
    drop((clone, s));
    assert_eq!(store.stats().unique_pages, 0);
    assert_eq!(store.stats().table_nodes, 0);
}

#[test]
fn many_clones_of_many_snapshots_share_one_store() {
    let store = PageStore::new();
    let mut src = filled(&store, Tracking::Auto, 4);
    let mut snaps: Vec<(Snapshot, Vec<u8>)> = Vec::new();
    for i in 0..5 {
        src.as_mut_slice()[i * 10 * page()] = i as u8 + 1;
        let s = src.snapshot().unwrap();
        let b = s.to_vec();
        snaps.push((s, b));
    }
    let unique = store.stats().unique_pages;
    let mut clones = Vec::new();
    for (i, (s, b)) in snaps.iter().enumerate() {
        for j in 0..4 {
            let mut c = s.instantiate().unwrap();
            assert!(c.as_slice() == &b[..]);
            c.as_mut_slice()[(i * 4 + j) * page() + 1] = 100 + (i * 4 + j) as u8;
            clones.push((c, i));
        }
    }
    // Cloning copies nothing into the store.
    assert_eq!(store.stats().unique_pages, unique);
    let taken: Vec<Snapshot> = clones
        .iter_mut()
        .map(|(c, _)| c.snapshot().unwrap())
        .collect();
    // Each clone's snapshot adds its one written page, stored once each.
    assert_eq!(store.stats().unique_pages, unique + 20);
    for ((c, i), s) in clones.iter_mut().zip(&taken) {
        assert!(s.to_vec() == c.as_slice());
        c.reset().unwrap();
        assert!(c.as_slice() == &snaps[*i].1[..]);
        assert!(c.last_snapshot().ptr_eq(&snaps[*i].0));
    }
    // Every clone sees its own snapshot's image, not another's.
    for (s, b) in &snaps {
        assert!(s.image_bytes() > 0);
        assert!(s.to_vec() == *b);
    }
    drop((taken, clones, snaps, src));
    assert_eq!(store.stats().unique_pages, 0);
}

#[test]
fn reset_is_exact_and_tracking_stays_exact() {
    for t in common::backends() {
        let store = PageStore::new();
        let mut src = filled(&store, t, 5);
        let snap = src.snapshot().unwrap();
        let bytes = snap.to_vec();
        let mut c = snap
            .instantiate_with(Region::builder(snap.len()).tracking(t))
            .unwrap();
        for round in 0..4u8 {
            // Write, snapshot, write more, restore a mid state, write, then reset.
            c.as_mut_slice()[round as usize * page()] = round + 1;
            let mid = c.snapshot().unwrap();
            let mid_bytes = mid.to_vec();
            c.as_mut_slice()[(PAGES - 1) * page()] = 0xaa;
            c.as_mut_slice()[3 * page()..4 * page()].fill(0); // a page made zero
            c.restore(&mid).unwrap();
            assert!(c.as_slice() == &mid_bytes[..], "{t}");
            c.as_mut_slice()[7 * page() + 9] = 0x55;
            c.reset().unwrap();
            assert!(c.as_slice() == &bytes[..], "{t} round {round}");
            assert!(c.last_snapshot().ptr_eq(&snap));
            // Nothing is reported after a reset, and later writes all are.
            assert!(
                c.snapshot().unwrap().ptr_eq(&snap) || c.last_snapshot().digest() == snap.digest()
            );
            c.as_mut_slice()[11 * page()] = 0x77;
            let after = c.snapshot().unwrap();
            assert!(after.to_vec() == c.as_slice(), "{t}");
            c.reset().unwrap();
        }
        // A reset right after a reset, and after only reads.
        c.reset().unwrap();
        let _ = c.as_slice().iter().step_by(page()).count();
        c.reset().unwrap();
        assert!(c.as_slice() == &bytes[..]);
    }
}

#[test]
fn reset_of_a_region_that_is_no_clone_is_an_error() {
    let mut r = Region::builder(1 << 20).build().unwrap();
    assert!(r.cloned_from().is_none());
    let e = r.reset().unwrap_err();
    assert!(matches!(e, Error::NotAClone));
    assert!(e.to_string().contains("reset needs a clone"), "{e}");
}

#[test]
fn instantiate_with_a_wrong_length_is_an_error() {
    let mut r = Region::builder(8 * page()).build().unwrap();
    let s = r.snapshot().unwrap();
    let e = s.instantiate_with(Region::builder(4 * page())).unwrap_err();
    assert!(
        matches!(e, Error::LengthMismatch { snapshot, region } if snapshot == 8 * page() && region == 4 * page())
    );
    assert!(matches!(
        s.instantiate_with(Region::builder(0)).unwrap_err(),
        Error::ZeroLength
    ));
}

#[test]
fn a_clone_in_another_store_and_with_huge_pages() {
    let store = PageStore::new();
    let mut src = filled(&store, Tracking::Auto, 6);
    let snap = src.snapshot().unwrap();
    let other = PageStore::new();
    let mut c = snap
        .instantiate_with(Region::builder(snap.len()).store(&other).huge_pages(true))
        .unwrap();
    assert!(c.huge_pages());
    assert_eq!(c.as_ptr() as usize % (2 << 20), 0);
    assert!(c.as_slice() == &snap.to_vec()[..]);
    assert!(c.store().same_as(&other));
    assert_eq!(other.stats().unique_pages, store.stats().unique_pages);
    c.as_mut_slice()[0] ^= 1;
    c.reset().unwrap();
    assert!(c.as_slice() == &snap.to_vec()[..]);
}

#[test]
fn an_all_zero_snapshot_clones_too() {
    let mut r = Region::builder(1 << 20).build().unwrap();
    let s = r.snapshot().unwrap();
    let mut c = s.instantiate().unwrap();
    assert_eq!(s.image_bytes(), 0); // zero pages are holes in the image
    assert!(c.as_slice().iter().all(|&b| b == 0));
    c.as_mut_slice()[4096] = 1;
    c.reset().unwrap();
    assert!(c.as_slice().iter().all(|&b| b == 0));
}

#[test]
fn a_background_snapshot_of_a_clone() {
    let store = PageStore::new();
    let mut src = filled(&store, Tracking::Auto, 7);
    let snap = src.snapshot().unwrap();
    let mut c = snap.instantiate().unwrap();
    c.as_mut_slice()[5 * page()] = 0x42;
    let expect = c.as_slice().to_vec();
    let bg = c.background_snapshot().unwrap();
    c.as_mut_slice()[6 * page()] = 0x43; // waits for its batch to be copied first
    let s = bg.wait().unwrap();
    assert!(s.to_vec() == expect);
    assert!(c.snapshot().unwrap().to_vec() == c.as_slice());
    c.reset().unwrap();
    assert!(c.as_slice() == &snap.to_vec()[..]);
}
