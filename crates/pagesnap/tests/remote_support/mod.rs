//! Scenarios shared by the remote tests: each runs against any remote URL, with
//! "raw" access to the stored objects (to corrupt them), and re-executes the test
//! binary as a second process where the scenario needs one (a pull with an empty
//! cache, a second pusher, a push killed midway).
#![allow(dead_code)]

#[path = "../common/rng.rs"]
mod rng;

use pagesnap::remote::{PushReport, Remote, RemoteError};
use pagesnap::{page_size, PageStore, Region, Snapshot};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Set in a re-executed child: its role, one argument per line.
pub const CHILD_ENV: &str = "PAGESNAP_REMOTE_CHILD";

/// Direct access to a remote's objects, bypassing pagesnap.
pub trait Raw {
    /// Keys under `prefix` (relative to the remote's root).
    fn keys(&self, prefix: &str) -> Vec<String>;
    fn get(&self, key: &str) -> Vec<u8>;
    fn put(&self, key: &str, bytes: &[u8]);
}

/// Deterministic page contents: page `i` of seed `s` (never all zeros).
pub fn page_bytes(seed: u64, i: usize, out: &mut [u8]) {
    let mut x = rng::XorShift(
        seed.wrapping_mul(0x9e37_79b9_7f4a_7c15)
            ^ (i as u64 + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9),
    );
    for chunk in out.chunks_mut(8) {
        let b = x.next_u64().to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
}

/// A snapshot of `pages` pages of seed `seed` (every 7th page left zero), with
/// every `changed_every`-th page (if any) rewritten from seed `seed + 1`.
pub fn snapshot(pages: usize, seed: u64, changed_every: Option<usize>) -> Snapshot {
    let ps = page_size();
    let mut region = Region::builder(pages * ps).build().unwrap();
    let buf = region.as_mut_slice();
    for i in 0..pages {
        let page = &mut buf[i * ps..(i + 1) * ps];
        match changed_every {
            Some(n) if i % n == 0 => page_bytes(seed + 1, i, page),
            _ if i % 7 == 3 => {}
            _ => page_bytes(seed, i, page),
        }
    }
    region.snapshot().unwrap()
}

/// Runs this test binary's `child_role` test with `role` as its arguments.
pub fn spawn_child(role: &[&str]) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_role",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .env(CHILD_ENV, role.join("\n"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for `child` at most `limit`; kills it past that and fails.
pub fn wait(mut child: Child, limit: Duration) -> Output {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("child timed out after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// The `KEY=value` line a child printed.
pub fn field(out: &Output, key: &str) -> String {
    let text = String::from_utf8_lossy(&out.stdout);
    let prefix = format!("{key}=");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| {
            panic!(
                "child printed no {key}: stdout {text:?} stderr {:?}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
        .to_string()
}

fn run_child(role: &[&str]) -> Output {
    let out = wait(spawn_child(role), Duration::from_secs(120));
    assert!(
        out.status.success(),
        "child {role:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The child roles. Returns at once in the ordinary test run.
pub fn child_role() {
    let Ok(role) = std::env::var(CHILD_ENV) else {
        return;
    };
    let args: Vec<&str> = role.lines().collect();
    match args.as_slice() {
        ["push", url, name, pages, seed, every] => {
            let every: usize = every.parse().unwrap();
            let snap = snapshot(
                pages.parse().unwrap(),
                seed.parse().unwrap(),
                (every > 0).then_some(every),
            );
            let r = Remote::open(url).unwrap().push(&snap, name).unwrap();
            println!("digest={}", snap.digest());
            println!("uploaded={}", r.pages_uploaded);
        }
        ["pushloop", url, pages] => {
            let remote = Remote::open(url).unwrap();
            for seed in 1000u64.. {
                let snap = snapshot(pages.parse().unwrap(), seed, None);
                println!("pushing={}", snap.digest());
                remote.push(&snap, &format!("loop-{seed}")).unwrap();
            }
        }
        ["pull", url, name] => {
            let remote = Remote::open(url).unwrap();
            let snap = remote.pull(name, &PageStore::new()).unwrap();
            println!("digest={}", snap.digest());
            let clone = remote.instantiate(name).unwrap();
            println!("lazy={}", clone.is_lazy());
            println!("equal={}", clone.as_slice() == snap.to_vec().as_slice());
        }
        ["at", url, name, origin] => {
            let remote = Remote::open(url).unwrap();
            let snap = remote.pull(name, &PageStore::new()).unwrap();
            println!("pulled_origin={}", snap.origin().unwrap_or(0));
            let clone = remote
                .instantiate_at(name, origin.parse().unwrap())
                .unwrap();
            println!("clone_at={}", clone.as_slice().as_ptr() as usize);
            println!("equal={}", clone.as_slice() == snap.to_vec().as_slice());
        }
        _ => panic!("unknown role {args:?}"),
    }
}

/// Push here, pull and instantiate in another process with an empty store.
pub fn push_then_pull_elsewhere(url: &str) {
    let snap = snapshot(300, 1, None);
    let remote = Remote::open(url).unwrap();
    let r = remote.push(&snap, "base").unwrap();
    assert_eq!(r.pages as usize, snap.nonzero_pages());
    assert_eq!(
        r.pages_uploaded, r.pages,
        "a first push uploads every distinct page"
    );
    let out = run_child(&["pull", url, "base"]);
    assert_eq!(field(&out, "digest"), snap.digest().to_string());
    assert_eq!(field(&out, "equal"), "true");
    let listed = remote.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].name.as_str(), listed[0].digest, listed[0].len),
        ("base", snap.digest(), snap.len() as u64)
    );
}

/// A second snapshot sharing all but 1 % of its pages uploads only those, whether
/// pushed by this process or another; two processes pushing at once both succeed.
pub fn dedup_across_snapshots_and_processes(url: &str) {
    let ps = page_size();
    let remote = Remote::open(url).unwrap();
    let first = snapshot(1000, 5, None);
    remote.push(&first, "v1").unwrap();
    let second = snapshot(1000, 5, Some(100)); // pages 0, 100, …, 900 changed
    let changed = 10u64;
    let r: PushReport = remote.push(&second, "v2").unwrap();
    assert_eq!(r.pages_uploaded, changed);
    let manifest = remote
        .list()
        .unwrap()
        .into_iter()
        .find(|s| s.name == "v2")
        .unwrap()
        .manifest_bytes;
    assert!(
        r.bytes_uploaded - manifest <= changed * ps as u64 * 11 / 10,
        "{r:?} with a {manifest}-byte manifest"
    );
    // The same change pushed from another process: nothing new.
    let out = run_child(&["push", url, "v2-again", "1000", "5", "100"]);
    assert_eq!(field(&out, "uploaded"), "0");
    // Two processes pushing snapshots that share pages, at once.
    let a = spawn_child(&["push", url, "para-a", "1000", "9", "50"]);
    let b = spawn_child(&["push", url, "para-b", "1000", "9", "40"]);
    let (a, b) = (
        wait(a, Duration::from_secs(120)),
        wait(b, Duration::from_secs(120)),
    );
    assert!(
        a.status.success() && b.status.success(),
        "{}",
        String::from_utf8_lossy(&b.stderr)
    );
    for (name, out) in [("para-a", &a), ("para-b", &b)] {
        let pulled = remote.pull(name, &PageStore::new()).unwrap();
        assert_eq!(pulled.digest().to_string(), field(out, "digest"));
    }
    let pulled = remote.pull("v2", &PageStore::new()).unwrap();
    assert_eq!(pulled.digest(), second.digest());
    assert_eq!(pulled.to_vec(), second.to_vec());
}

/// A flipped byte in a stored page, or in a manifest, is an error on pull.
pub fn corruption_is_detected(url: &str, raw: &dyn Raw) {
    let remote = Remote::open(url).unwrap();
    let snap = snapshot(64, 11, None);
    remote.push(&snap, "victim").unwrap();
    let pack = raw
        .keys("packs/")
        .into_iter()
        .find(|k| k.ends_with(".pack"))
        .unwrap();
    let mut bytes = raw.get(&pack);
    bytes[page_size() + 5] ^= 0x40;
    raw.put(&pack, &bytes);
    // A fresh handle: nothing cached.
    let err = Remote::open(url)
        .unwrap()
        .pull("victim", &PageStore::new())
        .unwrap_err();
    assert!(matches!(err, RemoteError::PageHash { .. }), "{err}");
    assert!(err.to_string().contains("does not match its hash"), "{err}");

    let other = snapshot(8, 12, None);
    remote.push(&other, "manifest-victim").unwrap();
    let key = "snapshots/manifest-victim.snap";
    let mut bytes = raw.get(key);
    let n = bytes.len();
    bytes[n - 10] ^= 1; // inside the last hash
    raw.put(key, &bytes);
    let err = remote
        .pull("manifest-victim", &PageStore::new())
        .unwrap_err();
    assert!(matches!(err, RemoteError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("checksum"), "{err}");
}

/// A pusher killed at random moments leaves a remote where every listed snapshot
/// pulls whole, and a later push of the same contents completes.
pub fn killed_push_leaves_remote_consistent(url: &str, rounds: usize) {
    let remote = Remote::open(url).unwrap();
    let mut rng = rng::XorShift(0x2545_f491_4f6c_dd1du64 ^ u64::from(std::process::id()));
    for _ in 0..rounds {
        let child = spawn_child(&["pushloop", url, "2048"]);
        std::thread::sleep(Duration::from_millis(300 + rng.next_u64() % 900));
        let mut child = child;
        let _ = child.kill();
        let _ = child.wait();
    }
    for s in remote.list().unwrap() {
        let pulled = remote.pull(&s.name, &PageStore::new()).unwrap();
        assert_eq!(pulled.digest(), s.digest, "{}", s.name);
    }
    let snap = snapshot(2048, 1000, None);
    remote.push(&snap, "after-kill").unwrap();
    assert_eq!(
        remote
            .pull("after-kill", &PageStore::new())
            .unwrap()
            .digest(),
        snap.digest()
    );
}

/// A lazy clone reads as the snapshot, fetches only around what is touched, and
/// keeps its writes to itself.
pub fn lazy_clone_matches(url: &str) {
    let remote = Remote::open(url).unwrap();
    let pages = 4096;
    let snap = snapshot(pages, 21, None);
    remote.push(&snap, "lazy").unwrap();
    let ps = page_size();
    let mut clone = remote.instantiate("lazy").unwrap();
    if let Some(why) = clone.fallback() {
        println!("lazy clone fell back to an eager pull: {why}");
    } else {
        // One page touched: one read-ahead window fetched, not the snapshot.
        let at = 1000 * ps + 17;
        let expected = {
            let mut b = [0u8; 1];
            snap.read(at, &mut b).unwrap();
            b[0]
        };
        assert_eq!(clone.as_slice()[at], expected);
        let s = clone.stats();
        assert!(s.pages >= 1 && s.pages <= 256, "{s:?}");
        assert!(s.bytes_fetched < (pages * ps / 8) as u64, "{s:?}");
    }
    clone.as_mut_slice()[5] ^= 0xff;
    let mut expected = snap.to_vec();
    expected[5] ^= 0xff;
    assert!(
        clone.as_slice() == expected.as_slice(),
        "the lazy clone differs from the snapshot"
    );
    assert_eq!(clone.digest(), snap.digest());
    // Writes stay in the clone: another one reads the original.
    let again = remote.instantiate("lazy").unwrap();
    assert_eq!(again.as_slice()[5], snap.to_vec()[5]);
}

/// The origin travels with a snapshot: a pull in another process returns it, and
/// a lazy clone started there at the origin holds the same bytes at that address.
pub fn origin_travels(url: &str) {
    let snap = snapshot(64, 31, None);
    let origin = snap.origin().expect("a region's snapshot knows its origin");
    let remote = Remote::open(url).unwrap();
    remote.push(&snap, "placed").unwrap();
    assert_eq!(remote.info("placed").unwrap().origin, Some(origin));
    assert_eq!(
        remote.pull("placed", &PageStore::new()).unwrap().origin(),
        Some(origin)
    );
    let out = run_child(&["at", url, "placed", &origin.to_string()]);
    assert_eq!(field(&out, "pulled_origin"), origin.to_string());
    assert_eq!(field(&out, "clone_at"), origin.to_string());
    assert_eq!(field(&out, "equal"), "true");
    let err = remote.info("absent").unwrap_err();
    assert!(matches!(err, RemoteError::NotFound { .. }), "{err}");
}

/// A `file://` remote in a scratch directory, removed on drop.
pub struct Dir(pub std::path::PathBuf);

impl Dir {
    pub fn new(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("pagesnap-remote-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        Dir(d)
    }
    pub fn url(&self) -> String {
        format!("file://{}", self.0.display())
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
