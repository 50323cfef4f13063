//! Paths a deployment hands to saves and loads that are not plain files: a
//! directory as the target is refused when the save starts (before a background
//! save protects anything), a target name as long as file systems allow is
//! savable, and loading a FIFO, a directory or a socket fails at once instead
//! of waiting for a writer.
mod common;

use common::child::{self, Outcome};
use pagesnap::{PageStore, Region, Snapshot};
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pagesnap-targets-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect()
}

fn region() -> Region {
    let mut region = Region::builder(4 << 20).build().unwrap();
    common::fill(region.as_mut_slice(), 3);
    region
}

#[test]
fn a_directory_target_is_refused_before_anything_is_copied() {
    let dir = scratch("dir");
    let target = dir.join("target");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("inside"), b"kept").unwrap();
    let mut region = region();
    let snap = region.snapshot().unwrap();
    let is_dir_error = |e: &pagesnap::Error| {
        let mut chain = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            chain.push_str(&format!(": {s}"));
            source = s.source();
        }
        chain.contains("Is a directory") && chain.contains("replace")
    };
    let e = snap.save(&target).unwrap_err();
    assert!(is_dir_error(&e), "save: {e}");
    // Refused by the start itself, not by `wait` after a whole protected copy.
    let e = region
        .background_save(&target)
        .err()
        .expect("background_save");
    assert!(is_dir_error(&e), "background_save: {e}");
    let e = region
        .converging_save(&target)
        .err()
        .expect("converging_save");
    assert!(is_dir_error(&e), "converging_save: {e}");
    assert_eq!(std::fs::read(target.join("inside")).unwrap(), b"kept");
    assert!(leftovers(&dir).is_empty(), "{:?}", leftovers(&dir));
    // The region is exact and free afterwards.
    region.as_mut_slice()[9] ^= 1;
    let bg = region.background_snapshot().unwrap().wait().unwrap();
    assert!(bg.to_vec() == region.as_slice());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_target_name_of_the_longest_length_is_savable() {
    let dir = scratch("long");
    let mut region = region();
    let snap = region.snapshot().unwrap();
    for (i, len) in [200, 240, 250, 255].into_iter().enumerate() {
        let name: String = std::iter::repeat_n(char::from(b'a' + i as u8), len).collect();
        let target = dir.join(&name);
        snap.save(&target)
            .unwrap_or_else(|e| panic!("save, {len} bytes: {e}"));
        std::fs::remove_file(&target).unwrap();
        region
            .background_save(&target)
            .and_then(|bg| bg.wait())
            .unwrap_or_else(|e| panic!("background_save, {len} bytes: {e}"));
        std::fs::remove_file(&target).unwrap();
        let conv = region.converging_save(&target).unwrap();
        conv.finish()
            .and_then(|s| s.wait())
            .unwrap_or_else(|e| panic!("converging_save, {len} bytes: {e}"));
        let back = Snapshot::load(&target, &PageStore::new()).unwrap();
        assert!(back.to_vec() == region.as_slice(), "{len} bytes");
        std::fs::remove_file(&target).unwrap();
    }
    assert!(leftovers(&dir).is_empty(), "{:?}", leftovers(&dir));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn loading_what_is_not_a_regular_file_fails_at_once() {
    let dir = scratch("special");
    let fifo = dir.join("fifo");
    let c = CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let socket = dir.join("socket");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let _serial = child::serial();
    for path in [fifo.clone(), socket.clone(), dir.clone()] {
        let out = child::run(Duration::from_secs(10), || {
            let store = PageStore::new();
            let loaded = Snapshot::load(&path, &store).is_err();
            let inspected = pagesnap::file::inspect(&path).is_err();
            let verified = pagesnap::file::verify(&path).is_err();
            i32::from(!(loaded && inspected && verified))
        });
        assert_eq!(
            out,
            Outcome::Exited(0),
            "{}: (TimedOut: it hung)",
            path.display()
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
