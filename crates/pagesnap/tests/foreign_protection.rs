//! Pages of a region whose protection the program changed itself: a guard
//! page (`PROT_NONE`), a garbage collector's write barrier (`PROT_READ`),
//! code (`PROT_EXEC`). A background or converging snapshot sets the
//! protection of a region's pages itself and reads each page it copies, so it
//! would replace the program's protection (measured before: the program's
//! `PROT_NONE` and `PROT_READ` pages came back read-write after a
//! point-in-time snapshot) or fault reading the page (a converging snapshot
//! of a region with a guard page killed the process). They must refuse with
//! `Error::ForeignProtection`, naming the pages, and leave the program's
//! protection as it was. Pages the program unmapped are refused the same way
//! (`Error::Unmapped`). Each case runs in a forked child.
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

/// The protections a program gives pages itself, with how `/proc/self/maps`
/// spells them, that tracking by `t` can tell from its own: mprotect
/// tracking leaves pages read-only itself, so a program's `PROT_READ` cannot
/// be told apart there (documented).
fn program_protections(t: Tracking) -> impl Iterator<Item = (i32, &'static str)> {
    [
        (libc::PROT_NONE, "---"),
        (libc::PROT_READ, "r--"),
        (libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC, "rwx"),
    ]
    .into_iter()
    .filter(move |&(prot, _)| !(t == Tracking::Mprotect && prot == libc::PROT_READ))
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
        for (prot, perms) in program_protections(t) {
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

/// Whether this kernel answers `PROCMAP_QUERY` (Linux ≥ 6.11), without
/// which synchronous calls do not look (documented: reading the maps file
/// would cost more than a small snapshot).
fn kernel_answers_queries() -> bool {
    use std::os::fd::AsRawFd;
    let maps = std::fs::File::open("/proc/self/maps").unwrap();
    // struct procmap_query: size, query_flags, query_addr, then outputs.
    let mut q = [0u64; 13];
    q[0] = std::mem::size_of_val(&q) as u64;
    q[1] = 0x10; // PROCMAP_QUERY_COVERING_OR_NEXT_VMA
    let cmd =
        (3u64 << 30) | ((std::mem::size_of_val(&q) as u64) << 16) | (u64::from(b'f') << 8) | 17;
    // SAFETY: `q` is a writable procmap_query of the size it states.
    unsafe { libc::ioctl(maps.as_raw_fd(), cmd as _, q.as_mut_ptr()) == 0 }
}

/// A region with page 7 written since its sync point and then protected
/// `prot` by the program; its first snapshot (page 7 = 1).
fn written_then_protected(t: Tracking, prot: i32) -> (Region, pagesnap::Snapshot, usize) {
    let mut region = Region::builder(LEN).tracking(t).build().unwrap();
    region.as_mut_slice().fill(1);
    let first = region.snapshot().unwrap();
    region.as_mut_slice()[7 * pagesnap::page_size()] = 2;
    let page = region.as_ptr() as usize + 7 * pagesnap::page_size();
    protect(page, prot);
    (region, first, page)
}

#[test]
fn synchronous_calls_refuse_pages_the_program_protected() {
    if !kernel_answers_queries() {
        eprintln!("skipped: no PROCMAP_QUERY (Linux < 6.11), so synchronous calls do not look");
        return;
    }
    let _serial = child::serial();
    for t in common::backends() {
        for (prot, perms) in program_protections(t) {
            // Measured before: uffd-wp and compare snapshots, restores and
            // verifies of a written PROT_NONE page died of SIGSEGV; mprotect
            // tracking silently made the program's guard page readable.
            let out = child::run(Duration::from_secs(60), || {
                let (mut region, first, page) = written_then_protected(t, prot);
                assert!(
                    refused_at(region.snapshot(), page, perms),
                    "{t} {perms}: snapshot"
                );
                assert!(
                    refused_at(region.restore(&first), page, perms),
                    "{t} {perms}: restore"
                );
                assert!(
                    refused_at(region.verify(), page, perms),
                    "{t} {perms}: verify"
                );
                assert_eq!(perms_at(page), perms, "{t}: the program's protection kept");
                // Given back, nothing was lost: the write is in the next
                // snapshot, and a restore undoes it.
                protect(page, libc::PROT_READ | libc::PROT_WRITE);
                assert_eq!(
                    region.snapshot().unwrap().to_vec()[7 * pagesnap::page_size()],
                    2
                );
                region.restore(&first).unwrap();
                assert!(
                    region.as_slice().iter().all(|&b| b == 1),
                    "{t} {perms}: restored"
                );
                0
            });
            assert_eq!(out, Outcome::Exited(0), "{t} {perms}");
        }
    }
}

#[test]
fn a_forked_child_and_a_program_closing_pagesnaps_descriptor_are_still_checked() {
    if !kernel_answers_queries() {
        eprintln!("skipped: no PROCMAP_QUERY (Linux < 6.11), so synchronous calls do not look");
        return;
    }
    let _serial = child::serial();
    // The parent asks first: pagesnap keeps its maps file open. A child of
    // fork inherits that descriptor, which names the parent's mappings.
    let (mut parent_region, _, _) = written_then_protected(Tracking::UffdWp, libc::PROT_NONE);
    assert!(parent_region.snapshot().is_err());
    for reuse in [false, true] {
        let out = child::run(Duration::from_secs(60), || {
            let (mut region, _, page) = written_then_protected(Tracking::UffdWp, libc::PROT_NONE);
            assert!(refused_at(region.snapshot(), page, "---"), "child");
            if reuse {
                // The program closes pagesnap's maps file and another file
                // takes its number (a daemon closing every descriptor).
                let maps = std::fs::read_dir("/proc/self/fd")
                    .unwrap()
                    .filter_map(|e| {
                        let e = e.unwrap();
                        let target = std::fs::read_link(e.path()).ok()?;
                        target.ends_with("maps").then(|| e.file_name())
                    })
                    .map(|n| n.to_str().unwrap().parse::<i32>().unwrap())
                    .collect::<Vec<_>>();
                assert!(!maps.is_empty(), "pagesnap keeps its maps file open");
                let other = std::fs::File::open("/proc/self/status").unwrap();
                for fd in maps {
                    use std::os::fd::AsRawFd;
                    // SAFETY: replaces a descriptor pagesnap opened; the
                    // test is the program that closes it.
                    assert_eq!(unsafe { libc::dup2(other.as_raw_fd(), fd) }, fd);
                }
                assert!(
                    refused_at(region.snapshot(), page, "---"),
                    "reused descriptor"
                );
            }
            0
        });
        assert_eq!(out, Outcome::Exited(0), "reuse {reuse}");
    }
}

/// Pages of a region the program unmapped (`munmap` of part of it): pagesnap
/// would fault reading or writing them, so every snapshot refuses with
/// `Error::Unmapped`, naming them, rather than die.
#[test]
fn snapshots_refuse_pages_the_program_unmapped() {
    let _serial = child::serial();
    let dir = std::env::temp_dir().join(format!("pagesnap-unmapped-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sync = kernel_answers_queries();
    let page_size = pagesnap::page_size();
    for t in common::backends() {
        let path = dir.join(format!("{t}.snap"));
        let out = child::run(Duration::from_secs(60), || {
            let mut region = Region::builder(LEN).tracking(t).build().unwrap();
            region.as_mut_slice().fill(1);
            let first = region.snapshot().unwrap();
            region.as_mut_slice()[7 * page_size] = 2;
            let hole = region.as_ptr() as usize + 7 * page_size;
            // SAFETY: two pages of a live region that this child never
            // touches again.
            assert_eq!(
                unsafe { libc::munmap(hole as *mut libc::c_void, 2 * page_size) },
                0
            );
            let unmapped = |r: pagesnap::Result<()>, what: &str| match r {
                Err(Error::Unmapped { addr, len }) => {
                    assert_eq!((addr, len), (hole, 2 * page_size), "{t}: {what}")
                }
                other => panic!("{t}: {what}: {other:?}"),
            };
            unmapped(region.background_snapshot().map(drop), "background");
            unmapped(region.background_save(&path).map(drop), "save");
            assert!(!path.exists(), "{t}: a refused save left a file");
            unmapped(region.converging_snapshot().map(drop), "converging");
            if sync {
                unmapped(region.snapshot().map(drop), "snapshot");
                unmapped(region.restore(&first), "restore");
                unmapped(region.verify().map(drop), "verify");
            }
            0
        });
        assert_eq!(out, Outcome::Exited(0), "{t}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn probe_says_whether_synchronous_calls_look() {
    assert_eq!(pagesnap::probe().procmap_query, kernel_answers_queries());
}

/// The main thread has exited (`pthread_exit` in `main`) and another thread
/// goes on with the program. `/proc/self` then names the exited leader,
/// whose list of mappings is empty. Measured before: mprotect and compare
/// regions were refused as unmapped, and uffd-wp regions could not be built
/// (`/proc/self/pagemap`).
#[test]
fn snapshots_work_after_the_main_thread_exited() {
    let _serial = child::serial();
    let page = pagesnap::page_size();
    for t in common::backends() {
        let out = child::run(Duration::from_secs(60), || {
            std::thread::spawn(move || {
                // Let the main thread's exit go through first.
                std::thread::sleep(Duration::from_millis(200));
                let work = || -> pagesnap::Result<bool> {
                    let mut region = Region::builder(LEN).tracking(t).build()?;
                    region.as_mut_slice().fill(1);
                    let first = region.snapshot()?;
                    region.as_mut_slice()[7 * page] = 2;
                    let bg = region.background_snapshot()?.wait()?;
                    region.as_mut_slice()[8 * page] = 3;
                    let done = region.converging_snapshot()?.finish()?;
                    let exact = bg.to_vec()[7 * page] == 2 && done.to_vec() == region.as_slice();
                    region.restore(&first)?;
                    region.verify()?;
                    Ok(exact && region.as_slice().iter().all(|&b| b == 1))
                };
                let code = match work() {
                    Ok(true) => 0,
                    Ok(false) => 2,
                    Err(e) => {
                        child::say(&format!("{t}: {e}\n"));
                        1
                    }
                };
                // SAFETY: ends the process at once.
                unsafe { libc::_exit(code) };
            });
            // SAFETY: ends only the main thread; the one above goes on.
            unsafe { libc::syscall(libc::SYS_exit, 0) };
            3
        });
        assert_eq!(out, Outcome::Exited(0), "{t} (1: refused, message above)");
    }
}

/// Under the `READ_IMPLIES_EXEC` personality (`setarch --read-implies-exec`)
/// the kernel adds exec to every readable mapping, the region's included:
/// not the program's own protection, also once the program clears the
/// personality. Measured before: every snapshot refused the region as mapped
/// `rwx`.
#[test]
fn read_implies_exec_is_not_the_programs_protection() {
    let _serial = child::serial();
    let page = pagesnap::page_size();
    for t in common::backends() {
        let out = child::run(Duration::from_secs(60), || {
            // SAFETY: sets this child's persona; nothing else changes.
            unsafe { libc::personality(libc::READ_IMPLIES_EXEC as libc::c_ulong) };
            let mut region = Region::builder(LEN).tracking(t).build().unwrap();
            let perms = perms_at(region.as_ptr() as usize);
            assert!(perms.ends_with('x'), "{t}: the personality left {perms}");
            region.as_mut_slice().fill(1);
            let first = region.snapshot().unwrap();
            region.as_mut_slice()[7 * page] = 2;
            let bg = region.background_snapshot().unwrap().wait().unwrap();
            assert_eq!(bg.to_vec()[7 * page], 2, "{t}");
            let done = region.converging_snapshot().unwrap().finish().unwrap();
            assert!(done.to_vec() == region.as_slice(), "{t}");
            region.restore(&first).unwrap();
            region.verify().unwrap();
            assert!(region.as_slice().iter().all(|&b| b == 1), "{t}");
            // The program clears the personality: the region's mappings keep
            // the exec the kernel added.
            // SAFETY: as above.
            unsafe { libc::personality(0) };
            region.as_mut_slice()[9 * page] = 3;
            let later = region.snapshot().unwrap();
            assert!(later.to_vec() == region.as_slice(), "{t}: after clearing");
            let bg = region.background_snapshot().unwrap().wait().unwrap();
            assert!(bg.to_vec() == region.as_slice(), "{t}: after clearing");
            0
        });
        assert_eq!(out, Outcome::Exited(0), "{t}");
    }
}

/// A guard region the program installed in a region
/// (`madvise(MADV_GUARD_INSTALL)`, Linux ≥ 6.13): any access faults, and
/// `/proc/self/maps` does not show it. Background and converging snapshots
/// find it through `PAGEMAP_SCAN` (Linux ≥ 6.14) and refuse, as for a
/// `PROT_NONE` page. Measured before: killed by SIGSEGV.
#[test]
fn background_snapshots_refuse_guard_regions() {
    const MADV_GUARD_INSTALL: i32 = 102;
    let v = pagesnap::probe().kernel_version;
    if v.is_none_or(|v| (v.major, v.minor) < (6, 14)) {
        eprintln!("skipped: guard regions are seen by PAGEMAP_SCAN from Linux 6.14");
        return;
    }
    let _serial = child::serial();
    let dir = std::env::temp_dir().join(format!("pagesnap-guard-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for t in common::backends() {
        let path = dir.join(format!("{t}.snap"));
        let out = child::run(Duration::from_secs(60), || {
            let mut region = Region::builder(LEN).tracking(t).build().unwrap();
            region.as_mut_slice().fill(1);
            region.snapshot().unwrap();
            let page = region.as_ptr() as usize + 7 * pagesnap::page_size();
            // SAFETY: a page of the region this child never touches again.
            let r = unsafe {
                libc::madvise(
                    page as *mut libc::c_void,
                    pagesnap::page_size(),
                    MADV_GUARD_INSTALL,
                )
            };
            assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
            region.as_mut_slice()[0] = 2;
            assert!(
                refused_at(region.background_snapshot(), page, "---"),
                "{t}: background"
            );
            assert!(
                refused_at(region.background_save(&path), page, "---"),
                "{t}: save"
            );
            assert!(!path.exists(), "{t}: a refused save left a file");
            let conv = region.converging_snapshot().map(|_| ());
            assert!(refused_at(conv, page, "---"), "{t}: converging");
            0
        });
        assert_eq!(out, Outcome::Exited(0), "{t}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
