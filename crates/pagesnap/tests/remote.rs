//! Remote stores over object storage: the local file system (real files, a second
//! process) and memory. The same scenarios run against an S3-compatible server in
//! `remote_s3.rs`.
#![cfg(feature = "remote")]

mod remote_support;

use pagesnap::remote::{Remote, RemoteError};
use pagesnap::PageStore;
use remote_support::*;
use std::path::Path;

#[test]
fn child_role() {
    remote_support::child_role();
}

/// A fresh directory for one test, removed when dropped.
impl Raw for Dir {
    fn keys(&self, prefix: &str) -> Vec<String> {
        let dir = self.0.join(prefix);
        let mut keys: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| format!("{prefix}{}", e.unwrap().file_name().to_string_lossy()))
            .collect();
        keys.sort();
        keys
    }
    fn get(&self, key: &str) -> Vec<u8> {
        std::fs::read(self.0.join(key)).unwrap()
    }
    fn put(&self, key: &str, bytes: &[u8]) {
        std::fs::write(self.0.join(key), bytes).unwrap()
    }
}

#[test]
fn file_push_then_pull_in_another_process() {
    let d = Dir::new("pull");
    push_then_pull_elsewhere(&d.url());
}

#[test]
fn file_dedup_across_snapshots_and_processes() {
    let d = Dir::new("dedup");
    dedup_across_snapshots_and_processes(&d.url());
}

#[test]
fn file_corruption_is_detected() {
    let d = Dir::new("corrupt");
    corruption_is_detected(&d.url(), &d);
}

#[test]
fn file_killed_push_leaves_remote_consistent() {
    let d = Dir::new("kill");
    killed_push_leaves_remote_consistent(&d.url(), 4);
}

#[test]
fn file_lazy_clone_matches() {
    let d = Dir::new("lazy");
    lazy_clone_matches(&d.url());
}

#[test]
fn file_origin_travels_to_another_process() {
    let d = Dir::new("origin");
    origin_travels(&d.url());
}

#[test]
fn memory_round_trip_and_errors() {
    let remote = Remote::open("memory://").unwrap();
    let snap = snapshot(50, 3, None);
    let r = remote.push(&snap, "one").unwrap();
    assert_eq!(r.pages_uploaded, r.pages);
    // The same contents again, under the same name or another: nothing uploaded.
    assert_eq!(remote.push(&snap, "one").unwrap().pages_uploaded, 0);
    assert_eq!(remote.push(&snap, "two").unwrap().pages_uploaded, 0);
    let other = snapshot(50, 4, None);
    let err = remote.push(&other, "one").unwrap_err();
    assert!(matches!(err, RemoteError::NameTaken { .. }), "{err}");
    let store = PageStore::new();
    let pulled = remote.pull("one", &store).unwrap();
    assert_eq!(pulled.to_vec(), snap.to_vec());
    // Pulling again into the same store shares every page.
    let before = store.stats().unique_pages;
    remote.pull("two", &store).unwrap();
    assert_eq!(store.stats().unique_pages, before);
    let names: Vec<_> = remote.list().unwrap().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["one", "two"]);
    for bad in ["", ".hidden", "a/b", "sp ace"] {
        assert!(
            matches!(remote.push(&snap, bad), Err(RemoteError::Name { .. })),
            "{bad:?}"
        );
    }
    let err = remote.pull("nothing", &store).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the remote has no snapshot named \"nothing\""
    );
}

#[test]
fn bad_urls_are_typed_errors() {
    for url in ["nowhere", "ftp://x/y", "file://relative/path", "s3://"] {
        let err = Remote::open(url).unwrap_err();
        assert!(matches!(err, RemoteError::Url { .. }), "{url}: {err}");
    }
}

/// The eager fallback (what a machine without userfaultfd gets), forced by its
/// variable in a child process.
#[test]
fn eager_fallback_when_asked() {
    if std::env::var(pagesnap::remote::EAGER_ENV).is_ok() {
        let d = Path::new(&std::env::var("PAGESNAP_REMOTE_EAGER_DIR").unwrap()).to_path_buf();
        let remote = Remote::open(&format!("file://{}", d.display())).unwrap();
        let clone = remote.instantiate("e").unwrap();
        assert!(!clone.is_lazy());
        assert!(clone
            .fallback()
            .unwrap()
            .contains(pagesnap::remote::EAGER_ENV));
        println!(
            "equal={}",
            clone.as_slice() == snapshot(100, 8, None).to_vec().as_slice()
        );
        return;
    }
    let d = Dir::new("eager");
    Remote::open(&d.url())
        .unwrap()
        .push(&snapshot(100, 8, None), "e")
        .unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "eager_fallback_when_asked",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(pagesnap::remote::EAGER_ENV, "1")
        .env("PAGESNAP_REMOTE_EAGER_DIR", &d.0)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("equal=true"));
}
