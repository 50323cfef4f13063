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

use pagesnap::{Region, Tracking};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

const PAGE_AT: usize = 40 << 20;

/// A source of `n` bytes of `byte` readable by `read(2)` or `recv(2)`.
enum Source {
    Pipe([libc::c_int; 2]),
    /// The writing end (kept open) and the reading end.
    Socket(#[allow(dead_code)] UnixStream, UnixStream),
}

impl Source {
    fn new(socket: bool, byte: u8, n: usize) -> Source {
        let data = vec![byte; n];
        if socket {
            let (a, b) = UnixStream::pair().unwrap();
            use std::io::Write;
            (&a).write_all(&data).unwrap();
            Source::Socket(a, b)
        } else {
            let mut fds = [0; 2];
            // SAFETY: fds has room for the two descriptors.
            assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
            // SAFETY: writing our buffer to the pipe we own (n fits its buffer).
            let w = unsafe { libc::write(fds[1], data.as_ptr().cast(), n) };
            assert_eq!(w, n as isize);
            Source::Pipe(fds)
        }
    }

    /// One read into `addr`: bytes read, or the errno.
    fn read_into(&self, addr: usize, n: usize) -> Result<usize, i32> {
        // SAFETY: addr..addr+n lies inside a live region of the caller; the
        // kernel writes it (or fails with EFAULT without touching memory).
        let r = unsafe {
            match self {
                Source::Pipe(fds) => libc::read(fds[0], addr as *mut libc::c_void, n),
                Source::Socket(_, b) => libc::recv(b.as_raw_fd(), addr as *mut libc::c_void, n, 0),
            }
        };
        if r < 0 {
            Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
        } else {
            Ok(r as usize)
        }
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        if let Source::Pipe(fds) = self {
            // SAFETY: closing the pipe's descriptors, ours.
            unsafe {
                libc::close(fds[0]);
                libc::close(fds[1]);
            }
        }
    }
}

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
            let src = Source::new(socket, 9, page);
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
            let src = Source::new(socket, 9, page);
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
