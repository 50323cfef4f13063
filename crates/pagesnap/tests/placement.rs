//! Regions and clones at a chosen address (`RegionBuilder::at`,
//! `Snapshot::instantiate_at`), snapshots' origin addresses, kept in files.

mod common;

use pagesnap::{Error, PageStore, Region, Snapshot, Tracking};
use std::path::PathBuf;

fn page() -> usize {
    pagesnap::page_size()
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pagesnap-place-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// An address range of `len` bytes that is free right now (mapped, then unmapped).
/// The tests of this file map at addresses they just freed: one at a time, so
/// that another's mappings (thread stacks, regions) do not land there.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn free_range(len: usize) -> usize {
    let r = Region::builder(len).build().unwrap();
    r.as_ptr() as usize
}

/// A region built at an address that was free a moment before. Other tests of
/// this binary map memory meanwhile and may take the range first: then the
/// build fails with `AddressTaken` (nothing replaced), and it tries another.
fn region_at_a_free_range(len: usize, t: Tracking) -> (Region, usize) {
    for _ in 0..20 {
        let free = free_range(len);
        match Region::builder(len).tracking(t).at(free).build() {
            Ok(r) => return (r, free),
            Err(Error::AddressTaken { .. }) => continue,
            Err(e) => panic!("{t:?} at {free:#x}: {e}"),
        }
    }
    panic!("{t:?}: no free range stayed free long enough to map at it")
}

#[test]
fn a_region_maps_exactly_at_its_address_and_never_replaces_a_mapping() {
    let _serial = serial();
    for t in common::backends() {
        let len = 64 * page();
        let mut a = Region::builder(len).tracking(t).build().unwrap();
        a.as_mut_slice().fill(0x5A);
        let addr = a.as_ptr() as usize;
        for at in [addr, addr + 8 * page(), addr - 8 * page()] {
            let e = Region::builder(len).tracking(t).at(at).build().unwrap_err();
            assert!(
                matches!(e, Error::AddressTaken { .. }),
                "{t:?} {at:#x}: {e}"
            );
            assert!(e.to_string().contains("nothing was replaced"), "{e}");
        }
        // `a` is untouched, still mapped and tracked.
        assert!(a.as_slice().iter().all(|&b| b == 0x5A));
        a.as_mut_slice()[5] = 1;
        assert_eq!(a.snapshot().unwrap().to_vec()[5], 1);

        let e = Region::builder(len).at(addr + 1).build().unwrap_err();
        assert!(matches!(e, Error::BadAddress { .. }), "{e}");
        let e = Region::builder(len).at(0).build().unwrap_err();
        assert!(matches!(e, Error::BadAddress { .. }), "{e}");
        let e = Region::builder(len)
            .at(usize::MAX - page() + 1)
            .build()
            .unwrap_err();
        assert!(matches!(e, Error::BadAddress { .. }), "{e}");

        let (mut b, free) = region_at_a_free_range(len, t);
        assert_eq!(b.as_ptr() as usize, free);
        assert_eq!(b.tracking(), t);
        b.as_mut_slice()[3 * page()] = 9;
        let s = b.snapshot().unwrap();
        assert_eq!(s.origin(), Some(free));
        b.as_mut_slice()[3 * page()] = 0;
        b.restore(&s).unwrap();
        assert_eq!(b.as_slice()[3 * page()], 9);
    }
}

/// A region holding a linked list of absolute pointers into itself.
fn linked(len: usize, tracking: Tracking) -> Region {
    let mut r = Region::builder(len).tracking(tracking).build().unwrap();
    let base = r.as_ptr() as usize;
    let bytes = r.as_mut_slice();
    // Node i at page i holds (next pointer, value).
    let nodes = len / page();
    for i in 0..nodes {
        let next = if i + 1 < nodes {
            base + (i + 1) * page()
        } else {
            0
        };
        bytes[i * page()..i * page() + 8].copy_from_slice(&next.to_ne_bytes());
        bytes[i * page() + 8..i * page() + 16].copy_from_slice(&(i as u64 * 7).to_ne_bytes());
    }
    r
}

/// Follows the list from the region's first byte, reading through the pointers.
fn walk(r: &Region) -> Vec<u64> {
    let (base, bytes) = (r.as_ptr() as usize, r.as_slice());
    let mut at = base;
    let mut out = Vec::new();
    while at != 0 {
        assert!(
            (base..base + r.len()).contains(&at),
            "pointer {at:#x} leaves the region"
        );
        let off = at - base;
        let word = |o: usize| u64::from_ne_bytes(bytes[o..o + 8].try_into().unwrap());
        out.push(word(off + 8));
        at = word(off) as usize;
    }
    out
}

#[test]
fn a_clone_at_the_origin_follows_the_snapshots_own_pointers() {
    let _serial = serial();
    for t in common::backends() {
        let len = 32 * page();
        let mut src = linked(len, t);
        let want = walk(&src);
        let snap = src.snapshot().unwrap();
        let origin = snap.origin().unwrap();
        assert_eq!(origin, src.as_ptr() as usize);
        let e = snap.instantiate_at(origin).unwrap_err();
        assert!(matches!(e, Error::AddressTaken { .. }), "{e}");
        drop(src);

        let mut clone = snap
            .instantiate_with(Region::builder(len).tracking(t).at(origin))
            .unwrap();
        assert_eq!(clone.as_ptr() as usize, origin);
        assert_eq!(walk(&clone), want);
        clone.as_mut_slice()[8] = 99;
        let s = clone.snapshot().unwrap();
        assert_eq!(s.origin(), Some(origin));
        clone.reset().unwrap();
        assert_eq!(walk(&clone), want);
        assert!(clone.cloned_from().unwrap().ptr_eq(&snap));
    }
}

#[test]
fn files_keep_the_origin_and_older_versions_still_load() {
    let _serial = serial();
    let dir = scratch("files");
    let len = 16 * page();
    let store = PageStore::new();
    let mut src = linked(len, Tracking::Auto);
    let origin = src.as_ptr() as usize;
    let snap = src.snapshot().unwrap();
    snap.save(dir.join("a.snap")).unwrap();
    let info = pagesnap::file::inspect(dir.join("a.snap")).unwrap();
    assert_eq!((info.version, info.origin), (3, Some(origin)));
    let back = Snapshot::load(dir.join("a.snap"), &store).unwrap();
    assert_eq!(back.origin(), Some(origin));

    src.background_save(dir.join("b.snap"))
        .unwrap()
        .wait()
        .unwrap();
    let info = pagesnap::file::inspect(dir.join("b.snap")).unwrap();
    assert_eq!((info.version, info.origin), (4, Some(origin)));
    let back = Snapshot::load(dir.join("b.snap"), &store).unwrap();
    assert_eq!(back.origin(), Some(origin));

    // Rewritten as the versions before the origin field: they load, without one.
    for (name, new_version) in [("a.snap", 1u32), ("b.snap", 2)] {
        let mut bytes = std::fs::read(dir.join(name)).unwrap();
        bytes[8..12].copy_from_slice(&new_version.to_le_bytes());
        bytes[48..56].fill(0);
        let crc = crc32c::crc32c(&bytes[..60]);
        bytes[60..64].copy_from_slice(&crc.to_le_bytes());
        let old = dir.join(format!("old-{name}"));
        std::fs::write(&old, &bytes).unwrap();
        let back = Snapshot::load(&old, &store).unwrap();
        assert_eq!(back.digest(), snap.digest());
        assert_eq!(back.origin(), None);
    }

    // Loaded, then instantiated at its origin once the source is gone.
    drop(src);
    let loaded = Snapshot::load(dir.join("a.snap"), &store).unwrap();
    let clone = loaded.instantiate_at(loaded.origin().unwrap()).unwrap();
    assert_eq!(walk(&clone).len(), 16);
    std::fs::remove_dir_all(&dir).unwrap();
}
