//! Tiny, well-formed files that declare huge regions: one stored page repeated
//! over 2^26 pages, or over 2^47 bytes. Loading, verifying and inspecting them
//! must cost what the file holds — milliseconds and kilobytes — not what it
//! declares (a page table of that length: gigabytes and seconds); and a caller's
//! `LoadOptions::max_len` must refuse them with a typed error before any page is
//! read. The checks run in a child process (this binary, re-executed) under an
//! address-space limit far below what a table of the declared length needs.

#[path = "common/forge.rs"]
mod forge;
#[path = "common/reexec.rs"]
mod reexec;

use pagesnap::{page_size, Error, FileError, LoadOptions, PageStore, Snapshot};
use std::path::Path;
use std::time::{Duration, Instant};

const HUGE_CHILD: &str = "PAGESNAP_HUGE_REGION_CHILD";

/// Loads `v` (whose footer digest is unknown), learns the digest from the typed
/// error, writes it in, and loads again: the library computes it, not the test.
fn load_forged(path: &Path, v: &mut Vec<u8>, store: &PageStore) -> Snapshot {
    std::fs::write(path, &*v).unwrap();
    let e = Snapshot::load(path, store).unwrap_err();
    let Error::File {
        source: FileError::Digest { computed, .. },
        ..
    } = e
    else {
        panic!(
            "expected a digest mismatch, got: {}",
            pagesnap::error::chain(&e)
        );
    };
    forge::set_digest(v, computed.to_bytes());
    std::fs::write(path, &*v).unwrap();
    Snapshot::load(path, store).unwrap()
}

/// The child's part of [`tiny_files_declaring_huge_regions_load_fast_and_small`].
#[test]
fn huge_child_role() {
    if std::env::var_os(HUGE_CHILD).is_none() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("pagesnap-hostile-huge-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ps = page_size() as u64;
    // A 256 MiB address-space allowance: loading one of these files as a page
    // table of its declared length would need gigabytes.
    reexec::limit_address_space(256 << 20);
    let store = PageStore::new();
    for pages in [1u64 << 26, (1 << 47) / ps] {
        let path = dir.join(format!("repeat-{pages}"));
        let mut v = forge::repeat_file(ps as u32, pages, 1);
        let start = Instant::now();
        let snap = load_forged(&path, &mut v, &store);
        assert_eq!(snap.len() as u64, pages * ps);
        let mut tail = [0u8; 8];
        snap.read(snap.len() - 8, &mut tail).unwrap();
        assert_eq!(tail, [1; 8]);
        let nodes = store.stats().table_nodes;
        assert!(
            nodes < 1000,
            "{pages} pages of one frame take {nodes} table nodes"
        );
        let verified = pagesnap::file::verify(&path).unwrap();
        assert!(verified.digest_checked);
        assert_eq!(verified.digest, snap.digest());
        let info = pagesnap::file::inspect(&path).unwrap();
        assert_eq!(info.listed_pages, pages);
        let took = start.elapsed();
        println!(
            "{} bytes declaring {pages} pages: load + verify + inspect in {took:?}",
            v.len()
        );
        assert!(took < Duration::from_secs(5), "{took:?}");

        // A caller's cap is enforced from the header, as a typed error.
        let cap = LoadOptions::new().max_len(1 << 30);
        let e = Snapshot::load_with(&path, &store, &cap).unwrap_err();
        match &e {
            Error::File {
                source: FileError::RegionLimit { len, max },
                ..
            } => assert_eq!((*len, *max), (pages * ps, 1 << 30)),
            other => panic!("{other}"),
        }
        assert!(
            e.to_string()
                .contains("more than the 1073741824 bytes this load accepts")
                || pagesnap::error::chain(&e).contains("more than the 1073741824 bytes"),
            "{}",
            pagesnap::error::chain(&e)
        );
        let e = pagesnap::file::verify_with(&path, &cap).unwrap_err();
        assert!(matches!(
            e,
            Error::File {
                source: FileError::RegionLimit { .. },
                ..
            }
        ));
        let fits = LoadOptions::new().max_len(pages * ps);
        assert_eq!(
            Snapshot::load_with(&path, &store, &fits).unwrap().digest(),
            snap.digest()
        );
        drop(snap);
        assert_eq!(store.stats().unique_pages, 0);
        assert_eq!(store.stats().table_nodes, 0);
    }
    std::fs::remove_dir_all(&dir).unwrap();
    println!("huge done");
}

#[test]
fn tiny_files_declaring_huge_regions_load_fast_and_small() {
    let out = reexec::run_test("huge_child_role", HUGE_CHILD, Duration::from_secs(120));
    assert!(
        !out.timed_out && out.status.success() && out.output.contains("huge done"),
        "the child failed ({:?}, timed out: {}): {}",
        out.status,
        out.timed_out,
        out.output
    );
    for l in out.output.lines().filter(|l| l.contains("declaring")) {
        eprintln!("{l}");
    }
}
