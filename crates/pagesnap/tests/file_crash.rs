//! Crash safety: a child process saves snapshots over one path in a loop and is
//! SIGKILLed at random points; the path must then hold a whole file the child
//! finished (it loads, and its digest is one the child announced) or nothing.
//!
//! The child is this test binary itself, started with `PAGESNAP_CRASH_CHILD` set to
//! a directory; without the variable the child role returns at once.

mod common;

use pagesnap::{page_size, PageStore, Region, Snapshot};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "PAGESNAP_CRASH_CHILD";

/// The child role: save forever, announcing each digest before its save starts.
#[test]
fn crash_child_role() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let dir = Path::new(&dir);
    let ps = page_size();
    let pages = 2048; // 8 MiB with 4 KiB pages: a save takes a while
    let mut region = Region::builder(pages * ps).build().unwrap();
    common::fill(region.as_mut_slice(), 42);
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(dir.join("digests"))
        .unwrap();
    for round in 0u64.. {
        // Change a few pages, some to zeros, so files differ in size and content.
        for k in 0..64 {
            let p = ((round * 131 + k * 31) as usize) % pages;
            let page = &mut region.as_mut_slice()[p * ps..(p + 1) * ps];
            if k % 5 == 0 {
                page.fill(0);
            } else {
                common::fill(page, round * 1000 + k);
            }
        }
        let snap = region.snapshot().unwrap();
        writeln!(log, "{}", snap.digest()).unwrap();
        snap.save(dir.join("target")).unwrap();
    }
}

#[test]
fn sigkill_mid_save_leaves_the_old_file_or_none() {
    let dir = std::env::temp_dir().join(format!("pagesnap-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut seen_file = 0;
    let mut rng = common::rng::XorShift(0x9e37_79b9_7f4a_7c15u64 ^ u64::from(std::process::id()));
    let kills = 24;
    for round in 0..kills {
        let target = dir.join("target");
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash_child_role",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Wait for the child to be saving, then kill it after a random delay
        // (some rounds before its first save in this round can have finished).
        let start = Instant::now();
        let digests = dir.join("digests");
        while std::fs::metadata(&digests).map(|m| m.len()).unwrap_or(0) == 0 {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the child never started"
            );
            if let Some(status) = child.try_wait().unwrap() {
                panic!("the child exited early: {status}");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_micros(rng.next_u64() % 120_000));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        let announced = std::fs::read_to_string(&digests).unwrap();
        match Snapshot::load(&target, &PageStore::new()) {
            Ok(s) => {
                let d = s.digest().to_string();
                assert!(
                    announced.lines().any(|l| l == d),
                    "round {round}: the file's digest {d} was never saved"
                );
                assert!(pagesnap::file::verify(&target).unwrap().digest_checked);
                seen_file += 1;
            }
            Err(e) => {
                assert!(
                    !target.exists(),
                    "round {round}: a damaged file at the target: {}",
                    pagesnap::error::chain(&e)
                );
            }
        }
        // Stray temporaries are allowed (the kill may land before the rename), and
        // only under the hidden temporary name.
        for entry in std::fs::read_dir(&dir).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            if name.starts_with(".target.") {
                assert!(name.ends_with(".tmp"), "{name}");
                std::fs::remove_file(dir.join(&name)).unwrap();
            } else {
                assert!(
                    name == "target" || name == "digests",
                    "unexpected file {name}"
                );
            }
        }
        // Every other round starts from nothing.
        if round % 2 == 1 {
            let _ = std::fs::remove_file(&target);
            std::fs::remove_file(&digests).unwrap();
        }
    }
    assert!(seen_file > 0, "no kill landed after a complete save");
    eprintln!("{kills} kills: {seen_file} left a whole file, the rest none");
    let _ = std::fs::remove_dir_all(&dir);
}
