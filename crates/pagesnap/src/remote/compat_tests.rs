//! Manifests written before origins and places (version 1) still pull and clone.

use super::{manifest_path, Remote};
use crate::{page_size, PageStore, Region};
use object_store::ObjectStoreExt;

#[test]
fn version_1_manifests_still_pull_and_clone() {
    let remote = Remote::open("memory://").unwrap();
    let ps = page_size();
    let mut region = Region::builder(64 * ps).build().unwrap();
    // Five distinct contents over 60 pages (repeats), then 4 zero pages.
    for (i, page) in region.as_mut_slice()[..60 * ps]
        .chunks_exact_mut(ps)
        .enumerate()
    {
        page.fill((i % 5) as u8 + 1);
    }
    let snap = region.snapshot().unwrap();
    remote.push(&snap, "old").unwrap();
    let shared = &*remote.shared;
    let mut manifest = shared.manifest("old").unwrap();
    assert!(manifest.places.is_some());
    assert_eq!(manifest.origin, region.as_ptr() as u64);
    assert_eq!(manifest.repeats.len(), 5);

    // Rewrite it as version 1 wrote it: no origin, no places.
    manifest.places = None;
    let bytes = manifest.encode();
    assert_eq!(bytes[8..12], 1u32.to_le_bytes());
    let path = manifest_path("old");
    shared
        .block_on(shared.store.put(&path, bytes.into()))
        .unwrap()
        .unwrap();

    let info = remote.info("old").unwrap();
    assert_eq!((info.origin, info.digest), (None, snap.digest()));
    let pulled = remote.pull("old", &PageStore::new()).unwrap();
    assert_eq!(pulled.digest(), snap.digest());
    assert_eq!(pulled.origin(), None);
    let clone = remote.instantiate("old").unwrap();
    assert!(clone.as_slice() == snap.to_vec().as_slice());
    if clone.is_lazy() {
        // Five contents, each fetched once however many pages hold it.
        assert!(
            clone.stats().bytes_fetched <= (5 * ps) as u64,
            "{:?}",
            clone.stats()
        );
    }
}
