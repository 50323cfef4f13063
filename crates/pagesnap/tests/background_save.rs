//! Background saves: the streamed file is the region at the instant of
//! protection, loads, verifies, and failures release the writers.

mod common;

use pagesnap::{PageStore, Region, Snapshot, Tracking};
use std::path::PathBuf;

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pagesnap-bgsave-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Spawns `n` writers that each overwrite their chunk of the region once.
fn one_pass(region: &Region, n: usize) -> Vec<std::thread::JoinHandle<()>> {
    let (base, len) = (region.as_ptr() as usize, region.len());
    (0..n)
        .map(|tid| {
            std::thread::spawn(move || {
                let chunk = len / n / 8 * 8;
                for at in (tid * chunk..(tid + 1) * chunk).step_by(8) {
                    common::write_u64(base, at, 0xdead_0000 + tid as u64);
                }
            })
        })
        .collect()
}

/// The seed case, streamed: the file holds the region at protection time while
/// writers overwrite it; it loads with `Snapshot::load`, passes `verify`, and its
/// digest is the one an ordinary snapshot of the same bytes has.
#[test]
fn round_trip_while_writers_run() {
    let dir = scratch_dir("roundtrip");
    let page = pagesnap::page_size();
    for t in common::backends() {
        for (len, huge) in [
            (16 << 20, false),
            (16 << 20, true),
            ((3 << 20) + 5 * page, false),
        ] {
            let mut region = Region::builder(len)
                .tracking(t)
                .huge_pages(huge)
                .build()
                .unwrap();
            // A sync point with content (the base pages come from the store), then
            // writes since it (the dirty pages come from the region), with zeros,
            // repeats and distinct pages mixed.
            common::fill(&mut region.as_mut_slice()[..len / 2], 7);
            region.snapshot().unwrap();
            let s = region.as_mut_slice();
            s[len / 4..len / 2].fill(0);
            s[len / 2..3 * len / 4].fill(123);
            common::fill(&mut s[3 * len / 4..], 9);
            s[page..2 * page].fill(0);
            let expected = region.as_slice().to_vec();
            let path = dir.join(format!("{t}-{huge}-{len}.snap"));
            let bg = region.background_save(&path).unwrap();
            for w in one_pass(&region, 2) {
                w.join().unwrap();
            }
            let report = bg.wait().unwrap();
            assert_eq!(report.pages as usize, len / page);
            let info = pagesnap::file::verify(&path).unwrap();
            assert!(info.digest_checked);
            assert_eq!(info.version, 4);
            assert_eq!(info.file_bytes, report.bytes);
            let back = Snapshot::load(&path, &PageStore::new()).unwrap();
            assert_eq!(back.digest(), report.digest);
            assert!(
                back.to_vec() == expected,
                "{t} huge={huge} len={len}: file differs"
            );
            // The same bytes snapshotted the ordinary way hash the same.
            let mut other = Region::builder(len).build().unwrap();
            other.as_mut_slice().copy_from_slice(&expected);
            assert_eq!(other.snapshot().unwrap().digest(), report.digest);
            // Nothing entered the region's store; tracking stayed exact.
            let next = region.snapshot().unwrap();
            assert!(
                next.to_vec() == region.as_slice(),
                "{t}: tracking missed writes"
            );
            // No temporary file left behind; mode 0600.
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Point-in-time consistency for the streamed file: each writer shows one
/// boundary between round r+1 and round r.
#[test]
fn point_in_time_under_continuous_writers() {
    let dir = scratch_dir("pit");
    for (len, huge) in [(8 << 20, false), (12 << 20, true)] {
        let region = Region::builder(len).huge_pages(huge).build().unwrap();
        let mut stampers = common::Stampers::start(region.as_ptr() as usize, len, 3);
        let mut files = Vec::new();
        for i in 0..6 {
            std::thread::sleep(std::time::Duration::from_millis(3));
            let path = dir.join(format!("{len}-{i}.snap"));
            let saved = region.background_save(&path).and_then(|bg| bg.wait());
            files.push((path, saved));
        }
        // Stop the writers before any assertion: a panic must not unmap the
        // region under them.
        stampers.stop();
        for (path, saved) in files {
            saved.unwrap();
            let bytes = Snapshot::load(&path, &PageStore::new()).unwrap().to_vec();
            stampers.assert_consistent(&bytes, &format!("{}", path.display()));
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Joins `handles` or panics after `secs`: a parked writer would hang forever.
fn join_within(handles: Vec<std::thread::JoinHandle<()>>, secs: u64) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for h in handles {
            h.join().unwrap();
        }
        let _ = tx.send(());
    });
    rx.recv_timeout(std::time::Duration::from_secs(secs))
        .expect("writers were left blocked");
}

/// A path that cannot be written (its "directory" is a regular file, or does not
/// exist) fails with a typed file error, leaves no file, and the writers run on.
#[test]
fn unwritable_paths_fail_cleanly() {
    let dir = scratch_dir("unwritable");
    let not_a_dir = dir.join("plain-file");
    std::fs::write(&not_a_dir, b"x").unwrap();
    for path in [not_a_dir.join("a.snap"), dir.join("missing/dir/a.snap")] {
        for t in [Tracking::Auto, Tracking::Mprotect] {
            let mut region = Region::builder(8 << 20).tracking(t).build().unwrap();
            region.as_mut_slice().fill(123);
            let writers = one_pass(&region, 2);
            let err = region.background_save(&path).map(|_| ()).unwrap_err();
            assert!(
                matches!(&err, pagesnap::Error::File { path: p, .. } if *p == path),
                "{err}"
            );
            join_within(writers, 30);
            assert!(!path.exists());
            // The region works on: tracking exact, a later save succeeds.
            let snap = region.snapshot().unwrap();
            assert!(snap.to_vec() == region.as_slice());
            let ok = dir.join("ok.snap");
            region.background_save(&ok).unwrap().wait().unwrap();
            let back = Snapshot::load(&ok, &PageStore::new()).unwrap();
            assert!(back.to_vec() == region.as_slice());
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Dropping a BackgroundSave without waiting finishes it: the writers go on and
/// the file is whole.
#[test]
fn drop_finishes_the_save() {
    let dir = scratch_dir("drop");
    let region = Region::builder(8 << 20).build().unwrap();
    let path = dir.join("a.snap");
    let bg = region.background_save(&path).unwrap();
    let writers = one_pass(&region, 2);
    drop(bg);
    join_within(writers, 30);
    pagesnap::file::verify(&path).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A streamed (version 2) file gets every check a version 1 file gets: any
/// flipped byte or truncation is a typed error, never a panic.
#[test]
fn corrupt_streamed_files_are_refused() {
    let dir = scratch_dir("corrupt");
    let mut region = Region::builder(1 << 20).build().unwrap();
    common::fill(&mut region.as_mut_slice()[..64 << 10], 5);
    region.as_mut_slice()[512 << 10..].fill(77);
    let path = dir.join("a.snap");
    region.background_save(&path).unwrap().wait().unwrap();
    let good = std::fs::read(&path).unwrap();
    pagesnap::file::verify(&path).unwrap();
    let bad = dir.join("bad.snap");
    let step = (good.len() / 300).max(1);
    for at in (0..good.len())
        .step_by(step)
        .chain(good.len() - 80..good.len())
    {
        let mut v = good.clone();
        v[at] ^= 0x40;
        std::fs::write(&bad, &v).unwrap();
        assert!(pagesnap::file::verify(&bad).is_err(), "flip at {at} passed");
        assert!(Snapshot::load(&bad, &PageStore::new()).is_err());
    }
    for cut in [
        0,
        10,
        64,
        100,
        good.len() / 2,
        good.len() - 65,
        good.len() - 1,
    ] {
        std::fs::write(&bad, &good[..cut]).unwrap();
        assert!(pagesnap::file::verify(&bad).is_err(), "cut at {cut} passed");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
