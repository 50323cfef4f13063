//! `pagesnap verify` and `pagesnap inspect` on hostile files: each ends with its
//! documented exit code (verify: 1, inspect: 2) and a one-line reason — never a
//! panic, an overflow, or memory and time that follow a region length the file
//! merely declares. Each run has a time limit and an address-space limit.

#[path = "../../pagesnap/tests/common/forge.rs"]
mod forge;
#[path = "../../pagesnap/tests/common/reexec.rs"]
mod reexec;

use pagesnap::{page_size, Error, FileError, PageStore, Region, Snapshot};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Address space a `pagesnap` run may map: far less than a page table of any of
/// the huge regions below.
const ADDRESS_SPACE: u64 = 1 << 30;

fn pagesnap(args: &[&str]) -> reexec::Outcome {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pagesnap"));
    cmd.args(args);
    // SAFETY: the closure runs in the forked child before exec and only calls
    // setrlimit, which is async-signal-safe, on a struct on its own stack.
    unsafe {
        cmd.pre_exec(|| {
            let rl = libc::rlimit {
                rlim_cur: ADDRESS_SPACE,
                rlim_max: ADDRESS_SPACE,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &rl) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = reexec::run(cmd, Duration::from_secs(60));
    assert!(!out.timed_out, "pagesnap {args:?} hung: {}", out.output);
    out
}

fn temp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pagesnap-cli-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A valid full file of a small region with varied pages.
fn valid_file(dir: &Path) -> Vec<u8> {
    let ps = page_size();
    let mut r = Region::builder(16 * ps).build().unwrap();
    for p in 0..6 {
        r.as_mut_slice()[p * ps..p * ps + 200].fill(p as u8 + 1);
    }
    r.as_mut_slice()[9 * ps..10 * ps].fill(0x33);
    r.snapshot().unwrap().save(dir.join("valid")).unwrap();
    std::fs::read(dir.join("valid")).unwrap()
}

/// Forged files, each named.
fn forged(valid: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let f = forge::footer(valid);
    let t = forge::table(valid);
    let first_record = forge::records(valid)[0];
    let change = |edit: &dyn Fn(&mut Vec<u8>)| {
        let mut v = valid.to_vec();
        edit(&mut v);
        v
    };
    vec![
        ("empty", Vec::new()),
        ("not a snapshot", b"hello, world\n".to_vec()),
        (
            "garbage",
            (0..20_000u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
                .collect(),
        ),
        ("truncated", valid[..valid.len() / 2].to_vec()),
        ("no footer", valid[..f].to_vec()),
        ("header magic", change(&|v| v[0] ^= 1)),
        (
            "future version",
            change(&|v| {
                forge::set_u32(v, forge::VERSION, 9);
                forge::fix_header_crc(v);
            }),
        ),
        (
            "region length 2^64 - 1",
            change(&|v| {
                forge::set_u64(v, forge::REGION_LEN, u64::MAX);
                forge::fix_header_crc(v);
            }),
        ),
        ("v2 table offset near 2^64", {
            let mut v = forge::to_v2(valid);
            let f = forge::footer(&v);
            forge::set_u64(&mut v, f + forge::TABLE_OFF, u64::MAX - 5);
            forge::fix_footer_crc(&mut v);
            v
        }),
        (
            "records offset 2^64 - 1",
            change(&|v| {
                forge::set_u64(v, f + forge::DATA_OFF, u64::MAX);
                forge::fix_footer_crc(v);
            }),
        ),
        (
            "record count 2^64 - 1",
            change(&|v| {
                forge::set_u64(v, f + forge::DATA_COUNT, u64::MAX);
                forge::fix_footer_crc(v);
            }),
        ),
        (
            "run count 2^64 - 1",
            change(&|v| {
                forge::set_u64(v, t.start, u64::MAX);
                forge::fix_table_crc(v);
            }),
        ),
        (
            "run past the region",
            change(&|v| {
                forge::set_u64(v, t.start + 8, u64::MAX - 1);
                forge::fix_table_crc(v);
            }),
        ),
        (
            "record length 2^32 - 1",
            change(&|v| {
                forge::set_u32(v, first_record, u32::MAX);
                forge::fix_record_crc(v, first_record);
            }),
        ),
        (
            "digest",
            change(&|v| {
                let mut d = [0u8; 16];
                d[0] = 1;
                forge::set_digest(v, d);
            }),
        ),
    ]
}

fn assert_clean(out: &reexec::Outcome, args: &[&str], code: i32, prefix: &str) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "pagesnap {args:?}: {:?}: {}",
        out.status,
        out.output
    );
    let text = out.output.trim();
    assert!(text.starts_with(prefix), "pagesnap {args:?}: {text}");
    assert_eq!(
        text.lines().count(),
        1,
        "pagesnap {args:?}: one line: {text}"
    );
    for bad in ["panicked", "overflow", "RUST_BACKTRACE"] {
        assert!(!text.contains(bad), "pagesnap {args:?}: {text}");
    }
}

#[test]
fn verify_and_inspect_refuse_hostile_files_cleanly() {
    let dir = temp_dir("hostile");
    let valid = valid_file(&dir);
    let mut cases: Vec<(String, PathBuf)> = Vec::new();
    for (name, bytes) in forged(&valid) {
        let path = dir.join(name.replace(' ', "-"));
        std::fs::write(&path, bytes).unwrap();
        cases.push((name.to_string(), path));
    }
    cases.push(("missing".into(), dir.join("no-such-file")));
    cases.push(("a directory".into(), dir.clone()));
    for (name, path) in &cases {
        let p = path.to_str().unwrap();
        let args = ["verify", p];
        assert_clean(&pagesnap(&args), &args, 1, "invalid: ");
        for args in [&["inspect", p][..], &["inspect", "--json", p][..]] {
            let out = pagesnap(args);
            if name == "digest" {
                // inspect checks every block but not the digest (verify does).
                assert!(out.status.success(), "{name}: {}", out.output);
                continue;
            }
            assert_clean(&out, args, 2, "pagesnap: ");
        }
        // A bad parent for a delta check is refused the same way.
        let valid_path = dir.join("valid");
        let args = ["verify", valid_path.to_str().unwrap(), "--parent", p];
        assert_clean(&pagesnap(&args), &args, 1, "invalid: ");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A 4 KiB file declaring 2^35 pages (2^47 bytes) of one repeated page: verify
/// and inspect take milliseconds and fit in the address-space limit.
#[test]
fn a_tiny_file_declaring_a_huge_region_is_checked_fast() {
    let dir = temp_dir("huge");
    let ps = page_size() as u64;
    let pages = (1u64 << 47) / ps;
    let mut v = forge::repeat_file(ps as u32, pages, 7);
    let path = dir.join("huge");
    // The library computes the digest: the first load names it in its error.
    std::fs::write(&path, &v).unwrap();
    match Snapshot::load(&path, &PageStore::new()) {
        Err(Error::File {
            source: FileError::Digest { computed, .. },
            ..
        }) => forge::set_digest(&mut v, computed.to_bytes()),
        other => panic!("expected a digest mismatch: {other:?}"),
    }
    std::fs::write(&path, &v).unwrap();
    let p = path.to_str().unwrap();
    let start = Instant::now();
    let out = pagesnap(&["verify", p]);
    assert!(out.status.success(), "{}", out.output);
    assert!(out.output.contains("verified"), "{}", out.output);
    let out = pagesnap(&["inspect", "--json", p]);
    assert!(out.status.success(), "{}", out.output);
    let json: serde_json::Value = serde_json::from_str(&out.output).unwrap();
    assert_eq!(json["pages"], pages);
    assert_eq!(json["listed_pages"], pages);
    let took = start.elapsed();
    eprintln!(
        "verify + inspect of {} bytes declaring {pages} pages: {took:?}",
        v.len()
    );
    assert!(took < Duration::from_secs(20), "{took:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}
