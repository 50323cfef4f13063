//! Every damaged file is rejected with a typed error: random byte flips,
//! truncations and appended garbage over small valid files (full and delta),
//! well over 10 000 variants. None is accepted, none panics, and nothing a failed
//! load read stays in the store.

mod common;

use pagesnap::{page_size, Error, FileError, PageStore, Region, Snapshot};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use common::rng::XorShift as Rng;

fn seed() -> u64 {
    std::env::var("PAGESNAP_CORRUPTION_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_0ff1_1e00)
}

struct Fixture {
    dir: PathBuf,
    store: PageStore,
    parent: Snapshot,
    full: Vec<u8>,
    delta: Vec<u8>,
}

/// A full file with raw, compressed, repeated and zero pages, and a delta on it.
fn fixture(name: &str) -> Fixture {
    let dir = std::env::temp_dir().join(format!("pagesnap-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ps = page_size();
    let store = PageStore::new();
    let mut r = Region::builder(24 * ps).store(&store).build().unwrap();
    {
        let m = r.as_mut_slice();
        common::fill(&mut m[..4 * ps], 1); // raw pages
        for p in 4..8 {
            common::fill(&mut m[p * ps..p * ps + 64], p as u64); // compressible
        }
        for p in 8..12 {
            m[p * ps..(p + 1) * ps].fill(0xab); // one page, repeated
        }
        common::fill(&mut m[20 * ps..21 * ps], 9);
    }
    let parent = r.snapshot().unwrap();
    {
        let m = r.as_mut_slice();
        m[0..ps].fill(0); // becomes zero
        common::fill(&mut m[13 * ps..14 * ps], 77);
        m[5 * ps + 100] ^= 1;
    }
    let child = r.snapshot().unwrap();
    parent.save(dir.join("full")).unwrap();
    child.save_delta(dir.join("delta"), &parent).unwrap();
    let full = std::fs::read(dir.join("full")).unwrap();
    let delta = std::fs::read(dir.join("delta")).unwrap();
    drop(child);
    Fixture {
        dir,
        store,
        parent,
        full,
        delta,
    }
}

fn mutate(rng: &mut Rng, orig: &[u8]) -> (String, Vec<u8>) {
    let mut v = orig.to_vec();
    match rng.below(4) {
        0 => {
            let at = rng.below(v.len());
            let x = (rng.below(255) + 1) as u8;
            v[at] ^= x;
            (format!("flip byte {at} ^ {x:#04x}"), v)
        }
        1 => {
            let n = rng.below(4) + 2;
            let mut what = String::from("flip bytes");
            for _ in 0..n {
                let at = rng.below(v.len());
                v[at] ^= 1 << rng.below(8);
                what += &format!(" {at}");
            }
            // Flips of the same bit twice cancel out: force a difference.
            if v == orig {
                v[0] ^= 1;
            }
            (what, v)
        }
        2 => {
            let at = rng.below(v.len());
            v.truncate(at);
            (format!("truncate to {at}"), v)
        }
        _ => {
            let n = rng.below(80) + 1;
            for _ in 0..n {
                v.push(rng.next_u64() as u8);
            }
            // Sometimes garbage that looks like the end of a file.
            if rng.below(4) == 0 {
                let tail = orig[orig.len() - 64..].to_vec();
                v.extend_from_slice(&tail);
            }
            (format!("append {n} bytes"), v)
        }
    }
}

fn check(path: &Path, what: &str, load: impl FnOnce() -> Result<Snapshot, Error>) -> String {
    let result = catch_unwind(AssertUnwindSafe(load));
    match result {
        Err(_) => panic!("{}: {what}: the reader panicked", path.display()),
        Ok(Ok(s)) => panic!(
            "{}: {what}: accepted, digest {}",
            path.display(),
            s.digest()
        ),
        Ok(Err(Error::File { source, .. })) => match source {
            FileError::Io { .. } => panic!("{what}: an I/O error is not a verdict: {source}"),
            other => other.to_string(),
        },
        Ok(Err(e)) => panic!("{what}: not a file error: {e}"),
    }
}

#[test]
fn ten_thousand_damaged_files_are_all_rejected() {
    let fx = fixture("corrupt");
    let baseline = fx.store.stats().unique_pages;
    let mut rng = Rng(seed());
    let path = fx.dir.join("damaged");
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    let variants = 12_000;
    for i in 0..variants {
        let delta = i % 3 == 2;
        let orig = if delta { &fx.delta } else { &fx.full };
        let (what, bytes) = mutate(&mut rng, orig);
        // Unlink first: ext4 flushes a file truncated and rewritten in place.
        let _ = std::fs::remove_file(&path);
        std::fs::write(&path, &bytes).unwrap();
        let msg = if delta {
            check(&path, &what, || Snapshot::load_delta(&path, &fx.parent))
        } else {
            check(&path, &what, || Snapshot::load(&path, &fx.store))
        };
        // The structural checks (no parent, no store) reject it too, unless the
        // damage is only visible through the digest.
        let inspected = catch_unwind(|| pagesnap::file::inspect(&path)).expect("inspect panicked");
        if inspected.is_ok() {
            assert!(
                msg.contains("digest"),
                "{what}: inspect accepted it, load said {msg}"
            );
        }
        let kind = msg
            .split(':')
            .next()
            .unwrap_or("")
            .split(" at byte")
            .next()
            .unwrap()
            .to_string();
        *kinds.entry(kind).or_default() += 1;
    }
    assert_eq!(
        fx.store.stats().unique_pages,
        baseline,
        "failed loads released every page they read"
    );
    eprintln!("{variants} variants rejected; reasons:");
    for (k, n) in &kinds {
        eprintln!("{n:6}  {k}");
    }
    let _ = std::fs::remove_dir_all(&fx.dir);
}

#[test]
fn errors_name_the_part_and_the_byte_offset() {
    let fx = fixture("corrupt-text");
    let path = fx.dir.join("damaged");
    let render = |bytes: &[u8]| {
        std::fs::write(&path, bytes).unwrap();
        pagesnap::error::chain(&Snapshot::load(&path, &PageStore::new()).unwrap_err())
    };
    let mut v = fx.full.clone();
    v[3] ^= 1;
    assert_eq!(
        render(&v),
        format!(
            "snapshot file {}: not a pagesnap snapshot file: no header magic at byte 0",
            path.display()
        )
    );

    let mut v = fx.full.clone();
    v[70] ^= 1; // inside the page table
    let text = render(&v);
    assert!(
        text.contains(": checksum mismatch in page table at byte 64: stored 0x"),
        "{text}"
    );

    // The first record follows the header and the table; damage its payload.
    let info = pagesnap::file::inspect(fx.dir.join("full")).unwrap();
    let first_record = 64 + 12 + 16 * info.runs;
    let mut v = fx.full.clone();
    v[first_record as usize + 100] ^= 1;
    let text = render(&v);
    assert!(
        text.contains(&format!(
            "checksum mismatch in page record 0 at byte {first_record}"
        )),
        "{text}"
    );

    let v = &fx.full[..fx.full.len() - 1];
    let text = render(v);
    assert!(text.contains("no footer magic at byte"), "{text}");

    let v = &fx.full[..100];
    let text = render(v);
    assert!(
        text.contains("truncated") || text.contains("footer"),
        "{text}"
    );

    let mut v = fx.full.clone();
    v[8] = 9; // a future version
    let text = render(&v);
    assert!(
        text.ends_with("format version 9 is not supported (this build reads versions 1 to 4)"),
        "{text}"
    );

    std::fs::write(&path, b"hello").unwrap();
    let text = pagesnap::error::chain(&Snapshot::load(&path, &PageStore::new()).unwrap_err());
    assert!(
        text.ends_with("not a pagesnap snapshot file: no header magic at byte 0"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&fx.dir);
}
