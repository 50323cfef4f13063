//! Letting go of a region's last sync point drains the store, and every later
//! snapshot, restore and background snapshot stays exact, on every backend.

use pagesnap::{page_size, PageStore, Region, Tracking};

fn backends() -> Vec<Tracking> {
    let mut out = Vec::new();
    for t in [
        Tracking::UffdWp,
        Tracking::SoftDirty,
        Tracking::Mprotect,
        Tracking::Compare,
    ] {
        match Region::builder(page_size()).tracking(t).build() {
            Ok(_) => out.push(t),
            Err(e) => eprintln!("skipping {t:?}: {e}"),
        }
    }
    out
}

#[test]
fn release_drains_the_store_and_snapshots_stay_exact() {
    let page = page_size();
    for t in backends() {
        let store = PageStore::new();
        let mut region = Region::builder(64 * page)
            .tracking(t)
            .store(&store)
            .build()
            .unwrap();
        for p in 0..16 {
            region.as_mut_slice()[p * page] = p as u8 + 1;
        }
        let first = region.snapshot().unwrap();
        assert_eq!(store.stats().unique_pages, 16, "{t:?}");
        // A handle the caller keeps still holds its pages.
        region.release_sync_point().unwrap();
        assert_eq!(store.stats().unique_pages, 16, "{t:?}: `first` holds them");
        drop(first);
        assert_eq!(store.stats().unique_pages, 0, "{t:?}: drained");

        // Untracked-since-release pages must still reach the next snapshot.
        region.as_mut_slice()[40 * page] = 99;
        let expected = region.as_slice().to_vec();
        let snap = region.snapshot().unwrap();
        assert_eq!(snap.to_vec(), expected, "{t:?}: snapshot after release");

        // Restore after a release: pages written since, and pages the old sync
        // point held, all go back.
        region.release_sync_point().unwrap();
        region.as_mut_slice()[3 * page] = 0xee;
        region.as_mut_slice()[50 * page] = 0xdd;
        region.restore(&snap).unwrap();
        assert_eq!(
            region.as_slice(),
            &expected[..],
            "{t:?}: restore after release"
        );
        assert!(region.last_restore_pages() >= 2, "{t:?}");

        // A background snapshot after a release copies every non-zero page.
        region.release_sync_point().unwrap();
        let bg = region.background_snapshot().unwrap().wait().unwrap();
        assert_eq!(bg.to_vec(), expected, "{t:?}: background after release");
    }
}

#[test]
fn restore_reports_the_pages_it_wrote() {
    let page = page_size();
    for t in backends() {
        let mut region = Region::builder(32 * page).tracking(t).build().unwrap();
        region.as_mut_slice()[0] = 1;
        let a = region.snapshot().unwrap();
        assert_eq!(region.last_restore_pages(), 0);
        for p in 1..5 {
            region.as_mut_slice()[p * page] = 2;
        }
        let b = region.snapshot().unwrap();
        // Back to `a`: 4 pages differ in the tables, and 3 more written since `b`.
        for p in 10..13 {
            region.as_mut_slice()[p * page] = 3;
        }
        region.restore(&a).unwrap();
        assert_eq!(region.last_restore_pages(), 7, "{t:?}");
        // Nothing written, same snapshot: nothing to write back.
        region.restore(&a).unwrap();
        assert_eq!(region.last_restore_pages(), 0, "{t:?}");
        region.restore(&b).unwrap();
        assert_eq!(region.last_restore_pages(), 4, "{t:?}");
    }
}
