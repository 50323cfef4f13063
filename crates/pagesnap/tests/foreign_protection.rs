//! Pages of a region whose protection the program changed itself: a guard
//! page (`PROT_NONE`), a garbage collector's write barrier (`PROT_READ`),
//! code (`PROT_EXEC`). A background or converging snapshot sets the
//! protection of a region's pages itself and reads each page it copies, so it
//! would replace the program's protection (measured before: the program's
//! `PROT_NONE` and `PROT_READ` pages came back read-write after a
//! point-in-time snapshot) or fault reading the page (a converging snapshot
//! of a region with a guard page killed the process). They must refuse with
//! `Error::ForeignProtection`, naming the pages, and leave the program's
//! protection as it was. Each case runs in a forked child.
#![allow(unsafe_code)]

mod common;

use common::child::{self, Outcome};
use pagesnap::{Error, Region, Tracking};
use std::time::Duration;

const LEN: usize = 4 << 20;

/// The protection `/proc/self/maps` shows for the page at `addr`.
fn perms_at(addr: usize) -> String {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    maps.lines()
        .find_map(|l| {
            let (range, rest) = l.split_once(' ')?;
            let (a, b) = range.split_once('-')?;
            let (a, b) = (
                usize::from_str_radix(a, 16).ok()?,
                usize::from_str_radix(b, 16).ok()?,
            );
            (a <= addr && addr < b).then(|| rest[..3].to_string())
        })
        .unwrap()
}

fn protect(addr: usize, prot: i32) {
    // SAFETY: one page of a live region; the tests below never touch it
    // while it is unreadable.
    assert_eq!(
        unsafe { libc::mprotect(addr as *mut libc::c_void, pagesnap::page_size(), prot) },
        0
    );
}

fn refused_at<T>(r: pagesnap::Result<T>, addr: usize, perms: &str) -> bool {
    matches!(r, Err(Error::ForeignProtection { addr: a, len, perms: ref p, .. })
        if a == addr && len == pagesnap::page_size() && p == perms)
}

#[test]
fn snapshots_refuse_pages_the_program_protected() {
    let _serial = child::serial();
    let dir = std::env::temp_dir().join(format!("pagesnap-foreign-prot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for t in common::backends() {
        for (prot, perms) in [
            (libc::PROT_NONE, "---"),
            (libc::PROT_READ, "r--"),
            (libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC, "rwx"),
        ] {
            // mprotect tracking leaves pages read-only itself: a program's
            // PROT_READ cannot be told apart there (documented).
            if t == Tracking::Mprotect && prot == libc::PROT_READ {
                continue;
            }
            let path = dir.join(format!("{t}-{perms}.snap"));
            let out = child::run(Duration::from_secs(60), || {
                let mut region = Region::builder(LEN).tracking(t).build().unwrap();
                region.as_mut_slice().fill(1);
                region.snapshot().unwrap();
                let page = region.as_ptr() as usize + 7 * pagesnap::page_size();
                region.as_mut_slice()[7 * pagesnap::page_size()] = 2;
                protect(page, prot);
                let bg = region.background_snapshot();
                assert!(refused_at(bg, page, perms), "{t} {perms}: background");
                let save = region.background_save(&path);
                assert!(refused_at(save, page, perms), "{t} {perms}: save");
                assert!(!path.exists(), "{t} {perms}: a refused save left a file");
                let conv = region.converging_snapshot().map(|_| ());
                assert!(refused_at(conv, page, perms), "{t} {perms}: converging");
                assert_eq!(perms_at(page), perms, "{t}: the program's protection kept");
                // The program gives the page back: everything works again.
                protect(page, libc::PROT_READ | libc::PROT_WRITE);
                let snap = region.background_snapshot().unwrap().wait().unwrap();
                assert_eq!(snap.to_vec()[7 * pagesnap::page_size()], 2);
                let done = region.converging_snapshot().unwrap().finish().unwrap();
                assert!(done.to_vec() == region.as_slice());
                0
            });
            assert_eq!(out, Outcome::Exited(0), "{t} {perms}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
