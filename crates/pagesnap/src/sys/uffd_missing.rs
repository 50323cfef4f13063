//! # Safety
//!
//! userfaultfd in `MISSING` mode, for clones filled lazily from a remote store:
//! read the page-fault messages of a range registered with
//! [`userfaultfd::register`](super::userfaultfd::register), and resolve each
//! fault with `UFFDIO_COPY`, plus the `eventfd` + `poll` that stop the handler
//! thread. Opening the fd and its handshake are
//! [`userfaultfd::open_with_api`](super::userfaultfd::open_with_api).
//!
//! `UFFDIO_COPY` writes into this process's memory, so its proof matters: the kernel
//! fills only pages of a range registered with this userfaultfd that are not
//! present (a present page is `EEXIST`; an address outside a registered range is
//! `ENOENT`/`EINVAL`). Such a page has never held data any reference could see:
//! every access to it blocks in the kernel until the copy lands. Each ioctl gets a
//! properly laid out `linux_raw_sys` struct living across the call.
#![allow(unsafe_code)]

use linux_raw_sys::general::{uffd_msg, uffdio_copy, uffdio_range, UFFD_EVENT_PAGEFAULT};
use linux_raw_sys::ioctl::{UFFDIO_COPY, UFFDIO_WAKE};
use std::io;
use std::mem::{size_of, MaybeUninit};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

// ABI facts the ioctl numbers encode (see the `_IOC` formula in userfaultfd.rs).
const _: () = assert!(size_of::<uffd_msg>() == 32);
const _: () = assert!(size_of::<uffdio_copy>() == 40);
const _: () = assert!(size_of::<uffdio_range>() == 16);
const _: () = assert!(UFFDIO_COPY == (3 << 30) | (40 << 16) | (0xAA << 8) | 0x03);
const _: () = assert!(UFFDIO_WAKE == (2 << 30) | (16 << 16) | (0xAA << 8) | 0x02);

/// `UFFDIO_COPY` of `src` to `dst` (page aligned, `src.len()` a whole number of
/// pages), waking the threads waiting there. Pages already present are skipped
/// (`EEXIST` is not an error): only missing pages are filled, one page at a time
/// past the first present one.
pub(crate) fn copy(fd: &OwnedFd, dst: usize, src: &[u8], page: usize) -> io::Result<()> {
    let mut done = 0usize;
    while done < src.len() {
        let mut arg = uffdio_copy {
            dst: (dst + done) as u64,
            src: src[done..].as_ptr() as u64,
            len: (src.len() - done) as u64,
            mode: 0,
            copy: 0,
        };
        // SAFETY: src[done..] is readable for len bytes; the kernel writes only
        // missing pages of a range registered with fd (module header).
        let rc = unsafe { libc::ioctl(fd.as_raw_fd(), UFFDIO_COPY as libc::c_ulong, &mut arg) };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        // `copy` holds the bytes copied before the failure, or -errno.
        if arg.copy > 0 {
            done += arg.copy as usize;
            continue;
        }
        match err.raw_os_error() {
            Some(libc::EAGAIN) => continue,
            // The page at dst + done is already there: step over it.
            Some(libc::EEXIST) => done += page,
            _ => return Err(err),
        }
    }
    wake(fd, dst, src.len())
}

/// Whether the page at `addr` (page aligned, in a live mapping) holds memory
/// now (`mincore`). A missing-page fault on a page the handler filled before
/// means the program dropped it since (`MADV_DONTNEED`): it must be filled
/// again, not only woken. Where `mincore` fails the page counts as resident.
pub(crate) fn resident(addr: usize, page: usize) -> bool {
    let mut vec = 0u8;
    // SAFETY: one page from `addr` needs one byte of `vec`, which lives across
    // the call; the kernel only writes that byte.
    let rc = unsafe { libc::mincore(addr as *mut libc::c_void, page, &mut vec) };
    rc != 0 || vec & 1 != 0
}

/// `UFFDIO_WAKE` of `[addr, addr + len)`: lets threads waiting on a fault there retry.
pub(crate) fn wake(fd: &OwnedFd, addr: usize, len: usize) -> io::Result<()> {
    let mut arg = uffdio_range {
        start: addr as u64,
        len: len as u64,
    };
    // SAFETY: arg is a valid uffdio_range living across the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), UFFDIO_WAKE as libc::c_ulong, &mut arg) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Reads the pending messages of a non-blocking userfaultfd and pushes the address
/// of each page fault onto `out` (other events are not asked for). Returns when
/// none is left (`EAGAIN`).
pub(crate) fn read_faults(fd: &OwnedFd, out: &mut Vec<u64>) -> io::Result<()> {
    const N: usize = 16;
    let mut msgs = [MaybeUninit::<uffd_msg>::uninit(); N];
    loop {
        // SAFETY: msgs is writable for N messages; read(2) writes whole messages.
        let n = unsafe {
            libc::read(
                fd.as_raw_fd(),
                msgs.as_mut_ptr().cast(),
                size_of::<uffd_msg>() * N,
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(libc::EAGAIN) => Ok(()),
                Some(libc::EINTR) => continue,
                _ => Err(err),
            };
        }
        let count = n as usize / size_of::<uffd_msg>();
        for m in &msgs[..count] {
            // SAFETY: the kernel wrote the first `count` messages.
            let m = unsafe { m.assume_init_ref() };
            if u32::from(m.event) == UFFD_EVENT_PAGEFAULT {
                // SAFETY: a PAGEFAULT message's union holds its `pagefault` member.
                out.push(unsafe { m.arg.pagefault.address });
            }
        }
        if count < N {
            return Ok(());
        }
    }
}

/// An `eventfd(2)` used as a stop signal for a polling thread.
#[derive(Debug)]
pub(crate) struct EventFd(OwnedFd);

impl EventFd {
    pub(crate) fn new() -> io::Result<EventFd> {
        // SAFETY: eventfd(2) takes two integers and returns a new fd or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor that nothing else owns.
        Ok(EventFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Makes the eventfd readable.
    pub(crate) fn signal(&self) -> io::Result<()> {
        let one: u64 = 1;
        // SAFETY: writes the 8 bytes of `one`, which live across the call.
        let n = unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8) };
        if n == 8 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

impl AsFd for EventFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// `poll(2)` for readability of `a` and `b`, without a timeout; which are readable.
pub(crate) fn poll_two(a: BorrowedFd<'_>, b: BorrowedFd<'_>) -> io::Result<(bool, bool)> {
    let mut fds = [
        libc::pollfd {
            fd: a.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: b.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    loop {
        // SAFETY: fds is a valid array of 2 pollfd living across the call.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if rc >= 0 {
            let ready =
                |f: &libc::pollfd| f.revents & (libc::POLLIN | libc::POLLERR | libc::POLLHUP) != 0;
            return Ok((ready(&fds[0]), ready(&fds[1])));
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) {
            return Err(err);
        }
    }
}
