//! Hostile snapshot files: forged on purpose, checksums recomputed so that every
//! check past the checksums is exercised. Loading, verifying and inspecting them
//! must end in a typed error (or, for a file that only re-encodes the same
//! snapshot, in that snapshot) — never a panic, an overflow, an I/O error standing
//! in for a verdict, or memory and time that follow a length the file merely
//! declares.
//!
//! The test profile keeps overflow checks on, so any unchecked offset arithmetic
//! on file data panics here. The corpus runs in a child process (this binary,
//! re-executed) under an address-space limit, so that an allocation beyond it
//! fails the parent's assertion instead of the machine. Files that declare huge
//! regions have their own test, `huge_region_files.rs`.

mod common;
#[path = "common/forge.rs"]
mod forge;
#[path = "common/reexec.rs"]
mod reexec;

use pagesnap::{page_size, Error, FileError, PageStore, Region, Snapshot};
use std::path::{Path, PathBuf};
use std::time::Duration;

const CORPUS_CHILD: &str = "PAGESNAP_HOSTILE_CORPUS_CHILD";

/// Valid files to start from: a full snapshot (raw, compressed, repeated and zero
/// pages) and a delta on it, each in layout version 1 and 2.
struct Bases {
    dir: PathBuf,
    parent: Snapshot,
    /// (name, bytes, digest of what they hold, is a delta)
    files: Vec<(&'static str, Vec<u8>, pagesnap::Digest, bool)>,
}

fn bases(name: &str) -> Bases {
    let dir = std::env::temp_dir().join(format!("pagesnap-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ps = page_size();
    let mut r = Region::builder(24 * ps).build().unwrap();
    {
        let m = r.as_mut_slice();
        common::fill(&mut m[..3 * ps], 1);
        for p in 3..6 {
            common::fill(&mut m[p * ps..p * ps + 64], p as u64);
        }
        for p in 8..12 {
            m[p * ps..(p + 1) * ps].fill(0xab);
        }
        common::fill(&mut m[20 * ps..21 * ps], 9);
    }
    let parent = r.snapshot().unwrap();
    {
        let m = r.as_mut_slice();
        m[0..ps].fill(0);
        common::fill(&mut m[13 * ps..14 * ps], 77);
        m[4 * ps + 100] ^= 1;
    }
    let child = r.snapshot().unwrap();
    parent.save(dir.join("full")).unwrap();
    child.save_delta(dir.join("delta"), &parent).unwrap();
    let full = std::fs::read(dir.join("full")).unwrap();
    let delta = std::fs::read(dir.join("delta")).unwrap();
    let files = vec![
        ("full v1", full.clone(), parent.digest(), false),
        ("full v2", forge::to_v2(&full), parent.digest(), false),
        ("delta v1", delta.clone(), child.digest(), true),
        ("delta v2", forge::to_v2(&delta), child.digest(), true),
    ];
    Bases { dir, parent, files }
}

/// Every forged variant of `v`, named.
fn variants(v: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let size = v.len() as u64;
    let f = forge::footer(v);
    let ps = page_size() as u64;
    let mut with = |what: String, change: &dyn Fn(&mut Vec<u8>)| {
        let mut m = v.to_vec();
        change(&mut m);
        if m != v {
            out.push((what, m));
        }
    };
    // Footer offsets and counts at extremes, checksum recomputed.
    for (field, at) in [
        ("table offset", forge::TABLE_OFF),
        ("records offset", forge::DATA_OFF),
        ("record count", forge::DATA_COUNT),
        ("file length", forge::FILE_LEN),
    ] {
        for x in forge::extremes(size) {
            with(format!("footer {field} = {x}"), &|m| {
                forge::set_u64(m, f + at, x);
                forge::fix_footer_crc(m);
            });
        }
    }
    // Header fields, checksum recomputed.
    let len = forge::get_u64(v, forge::REGION_LEN);
    for x in [
        0,
        ps,
        len - ps,
        len + ps,
        1 << 47,
        (1 << 47) + ps,
        1 << 63,
        u64::MAX - ps + 1,
        u64::MAX,
    ] {
        with(format!("header region length = {x}"), &|m| {
            forge::set_u64(m, forge::REGION_LEN, x);
            forge::fix_header_crc(m);
        });
    }
    for (field, at, values) in [
        (
            "page size",
            forge::PAGE_SIZE,
            &[0, 1, 511, 512, 8192, 65536, 131072, u32::MAX][..],
        ),
        ("version", forge::VERSION, &[0, 1, 2, 3, u32::MAX][..]),
        ("kind", forge::KIND, &[0, 1, 2, u32::MAX][..]),
    ] {
        for &x in values {
            with(format!("header {field} = {x}"), &|m| {
                forge::set_u32(m, at, x);
                forge::fix_header_crc(m);
            });
        }
    }
    // The page table: run count and the first runs' fields, checksum recomputed.
    let t = forge::table(v);
    for x in forge::extremes(size) {
        with(format!("run count = {x}"), &|m| {
            forge::set_u64(m, t.start, x);
            forge::fix_table_crc(m);
        });
    }
    let runs = (t.len() - 12) / 16;
    for k in 0..runs.min(4) {
        let at = t.start + 8 + 16 * k;
        for x in [0, 1, 23, 24, 25, 1 << 35, u64::MAX - 1, u64::MAX] {
            with(format!("run {k} first page = {x}"), &|m| {
                forge::set_u64(m, at, x);
                forge::fix_table_crc(m);
            });
        }
        let words = [
            0,
            1,
            24,
            25,
            (1 << 31) - 1,
            forge::REPEAT,
            forge::REPEAT | 1,
        ];
        for x in words
            .into_iter()
            .chain([forge::REPEAT | ((1 << 31) - 1), u32::MAX])
        {
            with(format!("run {k} count word = {x:#x}"), &|m| {
                forge::set_u32(m, at + 8, x);
                forge::fix_table_crc(m);
            });
        }
        for x in [0, 1, 2, 3, 7, 8, u32::MAX - 2, u32::MAX - 1, u32::MAX] {
            with(format!("run {k} data index = {x}"), &|m| {
                forge::set_u32(m, at + 12, x);
                forge::fix_table_crc(m);
            });
        }
    }
    // Page records: length words and payload bytes, checksum recomputed.
    let page = ps as u32;
    for (k, &at) in forge::records(v).iter().take(4).enumerate() {
        let c = 1 << 31;
        for x in [
            0,
            1,
            page - 1,
            page,
            page + 1,
            0x7fff_ffff,
            c,
            c | 1,
            c | 20,
            c | page,
            u32::MAX,
        ] {
            with(format!("record {k} length word = {x:#x}"), &|m| {
                forge::set_u32(m, at, x);
                forge::fix_record_crc(m, at);
            });
        }
        for off in [8, 9, 12, 20, 40] {
            with(format!("record {k} byte {off} flipped"), &|m| {
                if at + off < forge::data(m).end {
                    m[at + off] ^= 0x5a;
                    forge::fix_record_crc(m, at);
                }
            });
        }
    }
    // Truncations at and around every boundary.
    let mut cuts: Vec<usize> = vec![0, 1, 8, 63, 64, 65, 76, 77, f - 1, f, f + 1, v.len() - 1];
    cuts.extend([t.start, t.end, forge::data(v).start, forge::data(v).end]);
    cuts.extend(forge::records(v));
    for c in cuts {
        for c in [c.saturating_sub(1), c, c + 1] {
            if c < v.len() {
                with(format!("truncated to {c}"), &|m| m.truncate(c));
            }
        }
    }
    // Random flips: plain, and with every checksum recomputed afterwards.
    let mut rng = common::rng::XorShift(0x9e37_79b9_7f4a_7c15);
    let mut next = move || rng.next_u64();
    for i in 0..400 {
        let at = (next() % size) as usize;
        let bit = 1u8 << (next() % 8);
        let fix = i % 2 == 1;
        with(format!("bit flip at {at} (checksums fixed: {fix})"), &|m| {
            m[at] ^= bit;
            if fix {
                forge::fix_header_crc(m);
                forge::fix_footer_crc(m);
            }
        });
    }
    out
}

/// A verdict on a forged file: the typed error's text, or the digest it loaded.
fn verdict(
    what: &str,
    op: &str,
    r: Result<pagesnap::Digest, Error>,
) -> Result<pagesnap::Digest, String> {
    match r {
        Ok(d) => Ok(d),
        Err(Error::File { source, .. }) => {
            let text = pagesnap::error::chain(&source);
            assert!(
                !matches!(source, FileError::Io { .. }),
                "{what}: {op}: an I/O error is not a verdict on the file: {text}"
            );
            assert!(
                !text.contains("overflow") && !text.contains("panick"),
                "{what}: {op}: {text}"
            );
            Err(text)
        }
        Err(e) => panic!("{what}: {op}: not a file error: {e}"),
    }
}

fn check_file(path: &Path, what: &str, digest: pagesnap::Digest, parent: Option<&Snapshot>) {
    let store = PageStore::new();
    let loaded = match parent {
        None => Snapshot::load(path, &store),
        Some(p) => Snapshot::load_delta(path, p),
    };
    if let Ok(d) = verdict(what, "load", loaded.map(|s| s.digest())) {
        assert_eq!(d, digest, "{what}: loaded a different snapshot");
    }
    let verified = pagesnap::file::verify(path);
    if let Ok(info) = &verified {
        // A delta's digest needs its parent: verify checks it only for full files.
        if info.digest_checked {
            assert_eq!(
                info.digest, digest,
                "{what}: verify accepted another digest"
            );
        }
    }
    let _ = verdict(what, "verify", verified.map(|i| i.digest));
    let _ = verdict(
        what,
        "inspect",
        pagesnap::file::inspect(path).map(|i| i.digest),
    );
    assert_eq!(
        store.stats().unique_pages,
        0,
        "{what}: pages left in the store"
    );
}

/// The child's part of [`forged_corpus_gets_typed_errors_and_no_panic`].
#[test]
fn corpus_child_role() {
    if std::env::var_os(CORPUS_CHILD).is_none() {
        return;
    }
    let b = bases("hostile-corpus");
    reexec::limit_address_space(1 << 30);
    let path = b.dir.join("forged");
    let mut n = 0;
    for (name, bytes, digest, delta) in &b.files {
        for (what, v) in variants(bytes) {
            let _ = std::fs::remove_file(&path);
            std::fs::write(&path, &v).unwrap();
            let what = format!("{name}: {what}");
            check_file(&path, &what, *digest, delta.then_some(&b.parent));
            n += 1;
        }
    }
    std::fs::remove_dir_all(&b.dir).unwrap();
    println!("corpus done: {n} forged files");
}

#[test]
fn forged_corpus_gets_typed_errors_and_no_panic() {
    let out = reexec::run_test("corpus_child_role", CORPUS_CHILD, Duration::from_secs(300));
    assert!(
        !out.timed_out && out.status.success() && out.output.contains("corpus done"),
        "the corpus child failed ({:?}, timed out: {}): {}",
        out.status,
        out.timed_out,
        out.output
    );
    eprintln!(
        "{}",
        out.output
            .lines()
            .find(|l| l.contains("corpus done"))
            .unwrap()
    );
}

/// A table offset near 2^64 (checksum recomputed) once overflowed the reader's
/// arithmetic: a panic in debug builds, an I/O EINVAL in release.
#[test]
fn a_table_offset_near_the_top_of_u64_is_a_typed_footer_error() {
    let b = bases("hostile-offset");
    let path = b.dir.join("forged");
    for (name, bytes, _, _) in &b.files {
        for (field, at) in [("table", forge::TABLE_OFF), ("records", forge::DATA_OFF)] {
            for x in [u64::MAX - 5, u64::MAX - 11, u64::MAX] {
                let mut v = bytes.clone();
                let f = forge::footer(&v);
                forge::set_u64(&mut v, f + at, x);
                forge::fix_footer_crc(&mut v);
                std::fs::write(&path, &v).unwrap();
                let e = pagesnap::file::inspect(&path).unwrap_err();
                let Error::File { source, .. } = &e else {
                    panic!("{e}")
                };
                match source {
                    FileError::Invalid {
                        what,
                        offset,
                        reason,
                    } => {
                        assert_eq!(what, "footer", "{name} {field} {x}: {e}");
                        assert_eq!(*offset, (f + at) as u64, "{name} {field} {x}: {e}");
                        assert!(reason.contains(&format!("byte {x}")), "{e}");
                    }
                    other => panic!("{name}: {field} offset {x}: {other}"),
                }
                let e = Snapshot::load(&path, &PageStore::new()).unwrap_err();
                assert!(pagesnap::error::chain(&e).contains("invalid footer"), "{e}");
                assert!(pagesnap::file::verify(&path).is_err());
            }
        }
    }
    std::fs::remove_dir_all(&b.dir).unwrap();
}
