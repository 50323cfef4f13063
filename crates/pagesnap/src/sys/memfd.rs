//! # Safety
//!
//! `memfd_create(2)`, `ftruncate(2)` and `pwritev(2)` on a memory file this module
//! creates and owns as an [`OwnedFd`]. `pwritev` gets an array of `iovec`s built
//! from live Rust slices that outlive the call; the kernel only reads them.
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// At most this many buffers go to one `pwritev(2)` (`IOV_MAX` on Linux).
const IOV_MAX: usize = 1024;

/// An anonymous memory file (tmpfs-backed), closed on drop.
#[derive(Debug)]
pub(crate) struct Memfd {
    fd: OwnedFd,
    len: usize,
}

impl Memfd {
    /// `memfd_create(name, MFD_CLOEXEC)` then `ftruncate(fd, len)`: a file of `len`
    /// bytes that reads as zeros and holds no memory until written.
    ///
    /// [memfd_create(2)](https://man7.org/linux/man-pages/man2/memfd_create.2.html)
    pub(crate) fn create(name: &CStr, len: usize) -> io::Result<Memfd> {
        let size =
            libc::off_t::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
        // SAFETY: `name` is a NUL-terminated string alive across the call; the
        // call returns a new descriptor or -1.
        let raw = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: ftruncate takes a descriptor we own and a length by value.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), size) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Memfd { fd, len })
    }

    /// Writes `bufs` back to back at byte `offset` with `pwritev(2)`, as many calls
    /// as it takes (short writes are resumed). The range must lie inside the file.
    ///
    /// [pwritev(2)](https://man7.org/linux/man-pages/man2/pwritev.2.html)
    pub(crate) fn write_at(&self, mut offset: usize, bufs: &[&[u8]]) -> io::Result<()> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if offset.checked_add(total).is_none_or(|end| end > self.len) {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        // The first buffer not fully written, and how much of it is.
        let (mut i, mut skip) = (0, 0);
        let mut iov = Vec::with_capacity(bufs.len().min(IOV_MAX));
        while i < bufs.len() {
            iov.clear();
            iov.extend(bufs[i..].iter().take(IOV_MAX).enumerate().map(|(k, b)| {
                let b = if k == 0 { &b[skip..] } else { b };
                libc::iovec {
                    iov_base: b.as_ptr() as *mut libc::c_void,
                    iov_len: b.len(),
                }
            }));
            // SAFETY: every iovec describes a live slice of `bufs`, which outlives
            // the call; pwritev only reads them. The file range was checked above.
            let n = unsafe {
                libc::pwritev(
                    self.fd.as_raw_fd(),
                    iov.as_ptr(),
                    iov.len() as libc::c_int,
                    offset as libc::off_t,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if n == 0 {
                return Err(io::Error::from(io::ErrorKind::WriteZero));
            }
            let mut n = n as usize;
            offset += n;
            while n > 0 {
                let left = bufs[i].len() - skip;
                if n >= left {
                    n -= left;
                    i += 1;
                    skip = 0;
                } else {
                    skip += n;
                    n = 0;
                }
            }
            // Skip empty buffers so the loop ends.
            while i < bufs.len() && bufs[i].len() == skip {
                i += 1;
                skip = 0;
            }
        }
        Ok(())
    }

    /// Bytes of memory the file holds (`st_blocks` × 512): its written pages.
    pub(crate) fn resident_bytes(&self) -> io::Result<u64> {
        let meta = std::fs::File::from(self.fd.try_clone()?).metadata()?;
        Ok(std::os::unix::fs::MetadataExt::blocks(&meta) * 512)
    }
}

impl AsFd for Memfd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
