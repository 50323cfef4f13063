//! The tables of big snapshots under an address-space limit (`RLIMIT_AS`):
//! a background snapshot's copier and a file load build one table node per
//! few changed pages, small allocations that abort the process if they fail.
//! With the frames already in hand (reserved, or shared with a live snapshot)
//! and the headroom swept across what the tables need, each call must give an
//! exact snapshot or a typed error, after which a plain snapshot is exact;
//! the process never aborts. Each sweep runs in a forked child.

mod common;

use common::address_space::with_headroom;
use common::child::assert_clean as in_child;
use common::generation::{assert_snap_gen, fill_all, fill_page, pg};
use common::headroom::{sweep, Contents};
use pagesnap::{Error, FileError, PageStore, Region, Snapshot};

const MIB: u64 = 1 << 20;
/// 131,072 pages of 4 KiB: their table nodes take several MiB.
const LEN: usize = 512 << 20;

/// Headrooms from 0 to 40 MiB in 2 MiB steps: below what a copier thread and
/// the tables need, across it, and above.
fn headrooms() -> impl Iterator<Item = u64> {
    (0..=20).map(|i| i * 2 * MIB)
}

fn out_of_memory(e: &Error) -> bool {
    match e {
        Error::OutOfMemory { .. } | Error::Background { .. } => true,
        Error::File { source, .. } => matches!(source, FileError::TooLarge { .. }),
        _ => false,
    }
}

#[test]
fn a_background_snapshots_tables_under_a_tight_limit_fail_cleanly() {
    in_child("background tables under RLIMIT_AS", 240, || {
        let store = PageStore::new();
        store.reserve(LEN).unwrap();
        let mut region = Region::builder(LEN)
            .store(&store)
            .threads(1)
            .build()
            .unwrap();
        let contents = Contents {
            fill: |r: &mut Region, gen| fill_all(r.as_mut_slice(), gen),
            check: assert_snap_gen,
        };
        let take = |r: &mut Region| r.background_snapshot().and_then(|bg| bg.wait());
        sweep(
            "background tables",
            &mut region,
            headrooms(),
            contents,
            take,
            out_of_memory,
        );
    });
}

#[test]
fn a_file_loads_tables_under_a_tight_limit_fail_cleanly() {
    in_child("load tables under RLIMIT_AS", 240, || {
        let dir = std::env::temp_dir().join(format!("pagesnap-tables-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("big.snap");
        let store = PageStore::new();
        let mut region = Region::builder(LEN).store(&store).build().unwrap();
        fill_all(region.as_mut_slice(), 7);
        // Kept alive: the load shares its frames, so it needs memory only for
        // its lists and tables.
        let saved = region.snapshot().unwrap();
        saved.save(&file).unwrap();
        drop(region);
        let (mut ok, mut failed) = (0, 0);
        for headroom in headrooms() {
            let context = format!("load, headroom {} MiB", headroom / MIB);
            match with_headroom(headroom, || Snapshot::load(&file, &store)) {
                Ok(snap) => {
                    ok += 1;
                    assert_snap_gen(&snap, 7, &context);
                }
                Err(e) => {
                    failed += 1;
                    assert!(out_of_memory(&e), "{context}: {e:?}");
                }
            }
        }
        let again = Snapshot::load(&file, &store).unwrap();
        assert_eq!(again.digest(), saved.digest());
        std::fs::remove_dir_all(&dir).unwrap();
        eprintln!("load tables: {ok} succeeded under the limit, {failed} failed");
        assert!(ok > 0 && failed > 0, "the sweep crossed the limit");
    });
}

/// One page in each 4 MiB of a 64 GiB region: each changed page copies a
/// leaf and an inner node of its own (some 750 bytes, where 16 dense pages
/// share a 120-byte leaf), so the tables of 16,384 pages take about 12 MiB.
#[test]
fn sparse_changes_tables_under_a_tight_limit_fail_cleanly() {
    const SPARSE_LEN: usize = 64 << 30;
    const STRIDE: usize = 4 << 20;
    in_child("sparse tables under RLIMIT_AS", 240, || {
        let store = PageStore::new();
        store.reserve(SPARSE_LEN / STRIDE * pg()).unwrap();
        let mut region = Region::builder(SPARSE_LEN)
            .store(&store)
            .threads(1)
            .build()
            .unwrap();
        let contents = Contents {
            fill: |region: &mut Region, gen| {
                for at in (0..SPARSE_LEN).step_by(STRIDE) {
                    fill_page(&mut region.as_mut_slice()[at..at + pg()], gen, at / pg());
                }
            },
            check: |snap: &Snapshot, gen, context: &str| {
                let (mut got, mut want) = (vec![0u8; pg()], vec![0u8; pg()]);
                for at in (0..SPARSE_LEN).step_by(STRIDE) {
                    snap.read(at, &mut got).unwrap();
                    fill_page(&mut want, gen, at / pg());
                    assert!(
                        got == want,
                        "{context}: page {} is not generation {gen}",
                        at / pg()
                    );
                }
            },
        };
        let headrooms = (0..=32).map(|i| i * MIB);
        sweep(
            "sparse tables",
            &mut region,
            headrooms,
            contents,
            Region::snapshot,
            out_of_memory,
        );
    });
}
