//! Snapshot files round-trip exactly: random contents against a `Vec<u8>` model,
//! full files and chains of deltas, in the same store and in fresh ones.

mod common;

use pagesnap::{page_size, Error, FileError, FileKind, PageStore, Region, Snapshot};
use proptest::prelude::*;
use std::path::PathBuf;

/// A scratch directory for one test, removed when dropped.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("pagesnap-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What one write puts in a page.
#[derive(Clone, Debug)]
enum Fill {
    Zero,
    Byte(u8),
    Random(u64),
    /// Half random, half zeros: compresses.
    Half(u64),
    /// A copy of another page of the model (dedup).
    CopyOf(usize),
}

fn fill() -> impl Strategy<Value = Fill> {
    prop_oneof![
        1 => Just(Fill::Zero),
        1 => any::<u8>().prop_map(Fill::Byte),
        2 => any::<u64>().prop_map(Fill::Random),
        2 => any::<u64>().prop_map(Fill::Half),
        1 => any::<usize>().prop_map(Fill::CopyOf),
    ]
}

fn apply(model: &mut [u8], page: usize, f: &Fill) {
    let ps = page_size();
    let pages = model.len() / ps;
    let p = page % pages;
    let mut bytes = vec![0u8; ps];
    match *f {
        Fill::Zero => {}
        Fill::Byte(b) => bytes.fill(b),
        Fill::Random(seed) => common::fill(&mut bytes, seed),
        Fill::Half(seed) => common::fill(&mut bytes[..ps / 2], seed),
        Fill::CopyOf(q) => bytes.copy_from_slice(&model[(q % pages) * ps..][..ps]),
    }
    model[p * ps..(p + 1) * ps].copy_from_slice(&bytes);
}

type Step = Vec<(usize, Fill)>;

fn steps() -> impl Strategy<Value = (usize, Vec<Step>)> {
    (
        1usize..160,
        prop::collection::vec(prop::collection::vec((any::<usize>(), fill()), 0..40), 1..5),
    )
}

fn write_step(region: &mut Region, model: &mut [u8], step: &Step) {
    for (page, f) in step {
        apply(model, *page, f);
    }
    region.as_mut_slice().copy_from_slice(model);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn full_and_delta_chains_round_trip((pages, steps) in steps()) {
        let dir = Dir::new("roundtrip");
        let ps = page_size();
        let store = PageStore::new();
        let mut region = Region::builder(pages * ps).store(&store).build().unwrap();
        let mut model = vec![0u8; pages * ps];
        let mut snaps: Vec<(Snapshot, Vec<u8>)> = Vec::new();
        for (i, step) in steps.iter().enumerate() {
            write_step(&mut region, &mut model, step);
            let s = region.snapshot().unwrap();
            let full = dir.file(&format!("full{i}"));
            let rep = s.save(&full).unwrap();
            prop_assert_eq!(rep.kind, FileKind::Full);
            prop_assert_eq!(rep.bytes, std::fs::metadata(&full).unwrap().len());
            if let Some((prev, _)) = snaps.last() {
                s.save_delta(dir.file(&format!("delta{i}")), prev).unwrap();
            }
            snaps.push((s, model.clone()));
        }

        // Full files, into a fresh store and into the store that holds them.
        for (i, (s, m)) in snaps.iter().enumerate() {
            for target in [PageStore::new(), store.clone()] {
                let back = Snapshot::load(dir.file(&format!("full{i}")), &target).unwrap();
                prop_assert_eq!(back.digest(), s.digest());
                prop_assert_eq!(&back.to_vec(), m);
            }
            let info = pagesnap::file::verify(dir.file(&format!("full{i}"))).unwrap();
            prop_assert!(info.digest_checked);
            prop_assert_eq!(info.digest, s.digest());
        }

        // The delta chain, from the first full file, in a fresh store.
        let fresh = PageStore::new();
        let mut cur = Snapshot::load(dir.file("full0"), &fresh).unwrap();
        for (i, (s, m)) in snaps.iter().enumerate().skip(1) {
            cur = Snapshot::load_delta(dir.file(&format!("delta{i}")), &cur).unwrap();
            prop_assert_eq!(cur.digest(), s.digest());
            prop_assert_eq!(&cur.to_vec(), m);
        }
        drop(cur);
        prop_assert_eq!(fresh.stats().unique_pages, 0);
    }
}

#[test]
fn loaded_pages_are_deduplicated_and_released() {
    let dir = Dir::new("dedup");
    let ps = page_size();
    let store = PageStore::new();
    let mut r = Region::builder(64 * ps).store(&store).build().unwrap();
    for p in 0..64 {
        r.as_mut_slice()[p * ps..(p + 1) * ps].fill((p % 4) as u8 + 1);
    }
    let s = r.snapshot().unwrap();
    let rep = s.save(dir.file("a")).unwrap();
    assert_eq!(rep.stored_pages, 4, "equal pages are stored once");
    assert_eq!(rep.compressed_pages, 4);
    assert!(rep.bytes < 1024, "{rep:?}");
    let before = store.stats().unique_pages;
    let back = Snapshot::load(dir.file("a"), &store).unwrap();
    assert_eq!(
        store.stats().unique_pages,
        before,
        "loaded pages deduplicate"
    );
    assert_eq!(back.to_vec(), s.to_vec());

    let other = PageStore::new();
    let b2 = Snapshot::load(dir.file("a"), &other).unwrap();
    assert_eq!(other.stats().unique_pages, 4);
    drop(b2);
    assert_eq!(other.stats().unique_pages, 0);
}

#[test]
fn delta_of_one_percent_is_about_the_dirty_bytes() {
    let dir = Dir::new("delta-size");
    let ps = page_size();
    let pages = 4096;
    let mut r = Region::builder(pages * ps).build().unwrap();
    common::fill(r.as_mut_slice(), 7);
    let a = r.snapshot().unwrap();
    let dirty = pages / 100;
    for i in 0..dirty {
        let p = (i * 97) % pages;
        common::fill(&mut r.as_mut_slice()[p * ps..(p + 1) * ps], 1000 + i as u64);
    }
    let b = r.snapshot().unwrap();
    let rep = b.save_delta(dir.file("d"), &a).unwrap();
    assert_eq!(rep.listed_pages, dirty as u64);
    let dirty_bytes = (dirty * ps) as f64;
    assert!(
        rep.uncompressed_bytes as f64 <= 1.2 * dirty_bytes,
        "{} > 1.2 × {dirty_bytes}",
        rep.uncompressed_bytes
    );
    let back = Snapshot::load_delta(dir.file("d"), &a).unwrap();
    assert_eq!(back.digest(), b.digest());
}

#[test]
fn wrong_parent_kind_and_length_are_typed_errors() {
    let dir = Dir::new("wrong-parent");
    let ps = page_size();
    let mut r = Region::builder(8 * ps).build().unwrap();
    r.as_mut_slice()[0] = 1;
    let a = r.snapshot().unwrap();
    r.as_mut_slice()[ps] = 2;
    let b = r.snapshot().unwrap();
    b.save_delta(dir.file("d"), &a).unwrap();
    b.save(dir.file("f")).unwrap();

    let e = Snapshot::load_delta(dir.file("d"), &b).unwrap_err();
    assert!(
        matches!(
            e,
            Error::File {
                source: FileError::ParentDigest { .. },
                ..
            }
        ),
        "{e:?}"
    );
    let text = pagesnap::error::chain(&e);
    assert!(text.contains("the delta's parent has digest"), "{text}");

    let e = Snapshot::load(dir.file("d"), &PageStore::new()).unwrap_err();
    assert!(
        matches!(
            e,
            Error::File {
                source: FileError::Kind { .. },
                ..
            }
        ),
        "{e:?}"
    );
    let e = Snapshot::load_delta(dir.file("f"), &a).unwrap_err();
    assert!(
        matches!(
            e,
            Error::File {
                source: FileError::Kind { .. },
                ..
            }
        ),
        "{e:?}"
    );

    let other = Region::builder(16 * ps)
        .build()
        .unwrap()
        .snapshot()
        .unwrap();
    let e = b.save_delta(dir.file("x"), &other).unwrap_err();
    assert!(
        matches!(
            e,
            Error::File {
                source: FileError::ParentLength { .. },
                ..
            }
        ),
        "{e:?}"
    );
    let e = Snapshot::load_delta(dir.file("d"), &other).unwrap_err();
    assert!(
        matches!(
            e,
            Error::File {
                source: FileError::ParentLength { .. },
                ..
            }
        ),
        "{e:?}"
    );
    assert!(!dir.file("x").exists());
}

#[test]
fn files_are_private_and_replace_atomically() {
    use std::os::unix::fs::PermissionsExt;
    let dir = Dir::new("mode");
    let ps = page_size();
    let mut r = Region::builder(4 * ps).build().unwrap();
    r.as_mut_slice()[0] = 1;
    let a = r.snapshot().unwrap();
    a.save(dir.file("s")).unwrap();
    let mode = std::fs::metadata(dir.file("s"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    r.as_mut_slice()[0] = 2;
    let b = r.snapshot().unwrap();
    b.save(dir.file("s")).unwrap();
    let back = Snapshot::load(dir.file("s"), &PageStore::new()).unwrap();
    assert_eq!(back.digest(), b.digest());
    let names: Vec<_> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "no temporary file is left: {names:?}");

    let e = a.save(dir.file("missing-dir/s")).unwrap_err();
    let text = pagesnap::error::chain(&e);
    assert!(text.contains("create the temporary file"), "{text}");
}
