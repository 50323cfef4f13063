//! A source of bytes for kernel-mode writes into a region: `read(2)` from a
//! pipe or `recv(2)` from a socket, whose kernel copy faults like any write
//! but never reaches a user-mode handler.
#![allow(unsafe_code)]

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

/// A pipe, or a socket pair (the writing end, the reading end).
pub enum Source {
    Pipe([libc::c_int; 2]),
    Socket(UnixStream, UnixStream),
}

impl Source {
    /// An empty pipe (`socket` false) or socket pair.
    pub fn new(socket: bool) -> Source {
        if socket {
            let (a, b) = UnixStream::pair().unwrap();
            Source::Socket(a, b)
        } else {
            let mut fds = [0; 2];
            // SAFETY: fds has room for the two descriptors.
            assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
            Source::Pipe(fds)
        }
    }

    /// A source holding `n` bytes of `byte` (`n` fits a pipe's buffer).
    pub fn filled(socket: bool, byte: u8, n: usize) -> Source {
        let s = Source::new(socket);
        s.put(&vec![byte; n]);
        s
    }

    /// Writes `data` into the source, to be read later.
    pub fn put(&self, data: &[u8]) {
        // SAFETY: writing our buffer to a descriptor we own.
        let w = unsafe {
            match self {
                Source::Pipe(fds) => libc::write(fds[1], data.as_ptr().cast(), data.len()),
                Source::Socket(a, _) => {
                    libc::write(a.as_raw_fd(), data.as_ptr().cast(), data.len())
                }
            }
        };
        assert_eq!(w, data.len() as isize);
    }

    /// One read of up to `n` bytes into `addr`: bytes read, or the errno.
    pub fn read_into(&self, addr: usize, n: usize) -> Result<usize, i32> {
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
