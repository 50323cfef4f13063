//! Kernel-mode writes (`read(2)` from a pipe, `recv(2)` from a socket) into a
//! region during each background mode, asserting the documented behaviour:
//!
//! - converging (`converging_snapshot`): they succeed on every backend except
//!   mprotect (whose read-only pages fail kernel writes with EFAULT, snapshot
//!   or not), and land in the snapshot that `finish` takes after them;
//! - point-in-time (`background_snapshot`): into a batch not yet copied they
//!   fail with EFAULT and leave the data unread; once the batch is copied they
//!   succeed and land after the snapshot's instant — never in it.
#![allow(unsafe_code)]

mod common;

use common::kernel_source::Source;
use pagesnap::{Region, Tracking};

const PAGE_AT: usize = 40 << 20;

fn region(t: Tracking) -> Region {
    let mut region = Region::builder(64 << 20).tracking(t).build().unwrap();
    region.as_mut_slice().fill(1);
    // A sync point: every backend now watches every page.
    region.snapshot().unwrap();
    region
}

#[test]
fn kernel_writes_during_converging_snapshot() {
    let page = pagesnap::page_size();
    for t in common::backends() {
        for socket in [false, true] {
            let mut region = region(t);
            let addr = region.as_ptr() as usize + PAGE_AT;
            let src = Source::filled(socket, 9, page);
            let conv = region.converging_snapshot().unwrap();
            let got = src.read_into(addr, page);
            let what = if socket { "recv" } else { "read" };
            conv.wait_converged();
            let snap = conv.finish().unwrap();
            if t == Tracking::Mprotect {
                assert_eq!(got, Err(libc::EFAULT), "{t}: {what} into a read-only page");
                assert_eq!(snap.to_vec()[PAGE_AT], 1);
            } else {
                assert_eq!(got, Ok(page), "{t}: {what} during converging must succeed");
                let v = snap.to_vec();
                assert!(
                    v[PAGE_AT..PAGE_AT + page].iter().all(|&b| b == 9),
                    "{t}: {what} data not in the snapshot taken after it"
                );
            }
        }
    }
}

#[test]
fn kernel_writes_during_point_in_time_snapshot() {
    let page = pagesnap::page_size();
    for t in common::backends() {
        for socket in [false, true] {
            let region = region(t);
            // Make every page dirty so every batch needs a copy.
            let base = region.as_ptr() as usize;
            for at in (0..region.len()).step_by(page) {
                common::write_u64(base, at, 2);
            }
            let addr = base + PAGE_AT;
            let src = Source::filled(socket, 9, page);
            let bg = region.background_snapshot().unwrap();
            let got = src.read_into(addr, page);
            let snap = bg.wait().unwrap();
            let what = if socket { "recv" } else { "read" };
            let v = snap.to_vec();
            assert!(
                v[PAGE_AT..PAGE_AT + page].iter().all(|&b| b != 9),
                "{t}: {what} data leaked into the snapshot"
            );
            assert_eq!(
                u64::from_ne_bytes(v[PAGE_AT..PAGE_AT + 8].try_into().unwrap()),
                2
            );
            match got {
                Ok(n) => assert_eq!(n, page, "{t}: {what} short"),
                Err(e) => {
                    assert_eq!(e, libc::EFAULT, "{t}: {what} failed otherwise");
                    if t != Tracking::Mprotect {
                        // The data is still there: retried after the copy, it lands.
                        assert_eq!(src.read_into(addr, page), Ok(page), "{t}: {what} retry");
                    }
                }
            }
            eprintln!("{t} {what} during point-in-time: {got:?}");
        }
    }
}
