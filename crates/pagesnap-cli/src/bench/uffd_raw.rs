//! # Safety
//!
//! The `uffd-raw` reference: a buffer write-protected by hand with userfaultfd in
//! async mode, with no pagesnap code anywhere near it, so `uffd-raw write` is the
//! bare kernel cost of a write-protect fault that `uffd-wp write` is compared to.
//!
//! ```text
//!  userfaultfd(O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY)
//!  UFFDIO_API        features = WP_ASYNC | WP_UNPOPULATED
//!  UFFDIO_REGISTER   [buf, buf + len)  mode WP
//!  UFFDIO_WRITEPROTECT [buf, buf + len) mode WP        ← armed: every page protected
//!  … timed writes: each first write per page faults and is resolved in the kernel …
//!  UFFDIO_WRITEPROTECT of each written run              ← untimed re-arm per round
//! ```
//! This duplicates a few lines of the library's private `sys/userfaultfd.rs` on
//! purpose: the point is to measure without the library. Each ioctl gets a pointer to
//! a properly laid out `linux_raw_sys` struct that lives across the call; the kernel
//! checks the ranges, so a wrong one is `EINVAL`, never undefined behaviour.
#![allow(unsafe_code)]

use super::buffer::Buffer;
use linux_raw_sys::general::{
    uffdio_api, uffdio_range, uffdio_register, uffdio_writeprotect, UFFDIO_REGISTER_MODE_WP,
    UFFD_API, UFFD_FEATURE_WP_ASYNC, UFFD_FEATURE_WP_UNPOPULATED, UFFD_USER_MODE_ONLY,
};
use linux_raw_sys::ioctl::{UFFDIO_API, UFFDIO_REGISTER, UFFDIO_WRITEPROTECT};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `UFFDIO_WRITEPROTECT_MODE_WP` (include/uapi/linux/userfaultfd.h; not in the
/// development machines' C headers).
const WRITEPROTECT_MODE_WP: u64 = 1;
const _: () = assert!(std::mem::size_of::<uffdio_api>() == 24);
const _: () = assert!(std::mem::size_of::<uffdio_register>() == 32);
const _: () = assert!(std::mem::size_of::<uffdio_writeprotect>() == 24);

/// A buffer registered and write-protected with an async userfaultfd.
pub struct RawUffd {
    // Declared first: closing the fd unregisters before the buffer is unmapped.
    fd: OwnedFd,
    buf: Buffer,
}

impl RawUffd {
    /// Registers all of `buf` and write-protects it.
    pub fn arm(buf: Buffer) -> io::Result<RawUffd> {
        let flags = libc::O_CLOEXEC | libc::O_NONBLOCK | UFFD_USER_MODE_ONLY as libc::c_int;
        // SAFETY: userfaultfd(2) takes a flags word and returns a new fd or -1.
        let raw = unsafe { libc::syscall(libc::SYS_userfaultfd, flags) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: raw is a fresh descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw as i32) };
        let mut api = uffdio_api {
            api: UFFD_API as u64,
            features: u64::from(UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED),
            ioctls: 0,
        };
        // SAFETY: api is a valid uffdio_api living across the call.
        check(unsafe { libc::ioctl(fd.as_raw_fd(), UFFDIO_API as libc::c_ulong, &mut api) })?;
        let range = uffdio_range {
            start: buf.as_slice().as_ptr() as u64,
            len: buf.len() as u64,
        };
        let mut reg = uffdio_register {
            range,
            mode: UFFDIO_REGISTER_MODE_WP as u64,
            ioctls: 0,
        };
        // SAFETY: reg is a valid uffdio_register living across the call; the range
        // is the buffer's own mapping.
        check(unsafe { libc::ioctl(fd.as_raw_fd(), UFFDIO_REGISTER as libc::c_ulong, &mut reg) })?;
        let me = RawUffd { fd, buf };
        me.protect(0, me.buf.len())?;
        Ok(me)
    }

    /// The buffer, for the timed writes.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        self.buf.as_mut_slice()
    }

    /// Write-protects each run of consecutive pages in `pages` (sorted) again.
    pub fn reprotect(&self, pages: &[usize]) -> io::Result<()> {
        let page = pagesnap::page_size();
        let mut i = 0;
        while i < pages.len() {
            let mut n = 1;
            while pages.get(i + n) == Some(&(pages[i] + n)) {
                n += 1;
            }
            self.protect(pages[i] * page, n * page)?;
            i += n;
        }
        Ok(())
    }

    /// `UFFDIO_WRITEPROTECT` (mode WP) of `[offset, offset + len)` of the buffer.
    fn protect(&self, offset: usize, len: usize) -> io::Result<()> {
        assert!(offset + len <= self.buf.len(), "range outside the buffer");
        let mut wp = uffdio_writeprotect {
            range: uffdio_range {
                start: self.buf.as_slice().as_ptr() as u64 + offset as u64,
                len: len as u64,
            },
            mode: WRITEPROTECT_MODE_WP,
        };
        // SAFETY: wp is a valid uffdio_writeprotect living across the call; the
        // range lies inside the registered buffer (asserted above).
        check(unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                UFFDIO_WRITEPROTECT as libc::c_ulong,
                &mut wp,
            )
        })
    }
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
