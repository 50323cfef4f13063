//! # Safety
//!
//! `userfaultfd(2)` and its ioctls. Each ioctl gets a pointer to a properly laid
//! out `linux_raw_sys` struct that lives for the duration of the call; the kernel
//! validates the address ranges, so a wrong range is an `EINVAL`, never UB.
//!
//! The C headers on the development machines predate WP_ASYNC, so the few numbers
//! `linux_raw_sys` lacks are defined here and checked against the `_IOC` formula.
#![allow(unsafe_code)]

use linux_raw_sys::general::{
    uffdio_api, uffdio_range, uffdio_register, uffdio_writeprotect, UFFDIO_REGISTER_MODE_MISSING,
    UFFDIO_REGISTER_MODE_WP, UFFD_API, UFFD_USER_MODE_ONLY,
};
use linux_raw_sys::ioctl::{UFFDIO_API, UFFDIO_REGISTER, UFFDIO_WRITEPROTECT};
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

pub(crate) use linux_raw_sys::general::{
    UFFD_FEATURE_WP_ASYNC as FEATURE_WP_ASYNC,
    UFFD_FEATURE_WP_UNPOPULATED as FEATURE_WP_UNPOPULATED,
};

/// `UFFDIO_WRITEPROTECT_MODE_WP` (include/uapi/linux/userfaultfd.h).
const WRITEPROTECT_MODE_WP: u64 = 1;
/// `USERFAULTFD_IOC_NEW` = `_IO(0xAA, 0x00)`, the ioctl of `/dev/userfaultfd`.
const USERFAULTFD_IOC_NEW: libc::c_ulong = ioc(0, 0xAA, 0x00, 0);

/// The `_IOC` formula of asm-generic/ioctl.h.
const fn ioc(dir: u32, ty: u32, nr: u32, size: u32) -> libc::c_ulong {
    ((dir << 30) | (size << 16) | (ty << 8) | nr) as libc::c_ulong
}

// ABI facts: struct sizes the ioctl numbers encode.
const _: () = assert!(std::mem::size_of::<uffdio_api>() == 24);
const _: () = assert!(std::mem::size_of::<uffdio_register>() == 32);
const _: () = assert!(std::mem::size_of::<uffdio_writeprotect>() == 24);
const _: () = assert!(UFFDIO_WRITEPROTECT as libc::c_ulong == ioc(3, 0xAA, 0x06, 24));
const _: () = assert!(UFFDIO_API as libc::c_ulong == ioc(3, 0xAA, 0x3F, 24));
const _: () = assert!(USERFAULTFD_IOC_NEW == 0xAA00);

/// How a userfaultfd was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// `userfaultfd(2)` with `UFFD_USER_MODE_ONLY` (allowed unprivileged).
    SyscallUserMode,
    /// `/dev/userfaultfd` (allowed to whoever may open the device).
    Device,
}

/// Why no userfaultfd could be had: the syscall's error, then the device's.
#[derive(Debug)]
pub(crate) struct OpenFailure {
    pub(crate) syscall: io::Error,
    pub(crate) device: io::Error,
}

/// A userfaultfd: the syscall with `UFFD_USER_MODE_ONLY` first, then `/dev/userfaultfd`.
pub(crate) fn open() -> Result<(OwnedFd, Source), OpenFailure> {
    let flags = libc::O_CLOEXEC | libc::O_NONBLOCK | UFFD_USER_MODE_ONLY as libc::c_int;
    // SAFETY: userfaultfd(2) takes only a flags word and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, flags) };
    if fd >= 0 {
        // SAFETY: fd is a fresh descriptor that nothing else owns.
        return Ok((
            unsafe { OwnedFd::from_raw_fd(fd as i32) },
            Source::SyscallUserMode,
        ));
    }
    let syscall = io::Error::last_os_error();
    let device = match OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/userfaultfd")
    {
        Ok(dev) => {
            // SAFETY: USERFAULTFD_IOC_NEW takes its flags by value.
            let fd = unsafe {
                libc::ioctl(
                    dev.as_raw_fd(),
                    USERFAULTFD_IOC_NEW,
                    (libc::O_CLOEXEC | libc::O_NONBLOCK) as libc::c_ulong,
                )
            };
            if fd >= 0 {
                // SAFETY: fd is a fresh descriptor that nothing else owns.
                return Ok((unsafe { OwnedFd::from_raw_fd(fd) }, Source::Device));
            }
            io::Error::last_os_error()
        }
        Err(e) => e,
    };
    Err(OpenFailure { syscall, device })
}

/// `UFFDIO_API` handshake asking for `features`; returns what the kernel supports.
/// Asking for 0 reports every supported feature.
pub(crate) fn api(fd: &OwnedFd, features: u64) -> io::Result<u64> {
    let mut arg = uffdio_api {
        api: UFFD_API as u64,
        features,
        ioctls: 0,
    };
    // SAFETY: arg is a valid uffdio_api living across the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), UFFDIO_API as libc::c_ulong, &mut arg) };
    if rc == 0 {
        Ok(arg.features)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Why no usable userfaultfd could be had.
#[derive(Debug)]
pub(crate) enum Unusable {
    /// Neither way of opening one worked.
    Open(OpenFailure),
    /// One opened, but the `UFFDIO_API` handshake failed.
    Api(io::Error),
}

impl std::fmt::Display for Unusable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unusable::Open(o) => write!(
                f,
                "userfaultfd(2): {}; /dev/userfaultfd: {}",
                o.syscall, o.device
            ),
            Unusable::Api(e) => write!(f, "UFFDIO_API: {e}"),
        }
    }
}

/// A userfaultfd after the `UFFDIO_API` handshake asking for `features` (0: none,
/// which reports every supported one): the fd, how it was had, the features the
/// kernel supports.
pub(crate) fn open_with_api(features: u64) -> Result<(OwnedFd, Source, u64), Unusable> {
    let (fd, source) = open().map_err(Unusable::Open)?;
    let supported = api(&fd, features).map_err(Unusable::Api)?;
    Ok((fd, source, supported))
}

/// How a range is registered: which faults it reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Writes to write-protected pages.
    WriteProtect,
    /// Accesses to pages not present.
    #[cfg_attr(not(feature = "remote"), allow(dead_code))]
    Missing,
}

/// `UFFDIO_REGISTER` of `[addr, addr + len)` in `mode`.
pub(crate) fn register(fd: &OwnedFd, addr: usize, len: usize, mode: Mode) -> io::Result<()> {
    let mut arg = uffdio_register {
        range: uffdio_range {
            start: addr as u64,
            len: len as u64,
        },
        mode: match mode {
            Mode::WriteProtect => UFFDIO_REGISTER_MODE_WP,
            Mode::Missing => UFFDIO_REGISTER_MODE_MISSING,
        } as u64,
        ioctls: 0,
    };
    // SAFETY: arg is a valid uffdio_register living across the call; the kernel
    // checks the range belongs to this process's mappings.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), UFFDIO_REGISTER as libc::c_ulong, &mut arg) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `UFFDIO_REGISTER` of `[addr, addr + len)` in write-protect mode.
pub(crate) fn register_wp(fd: &OwnedFd, addr: usize, len: usize) -> io::Result<()> {
    register(fd, addr, len, Mode::WriteProtect)
}

/// `UFFDIO_WRITEPROTECT` of `[addr, addr + len)`: protect (`wp`) or lift protection.
pub(crate) fn write_protect(fd: &OwnedFd, addr: usize, len: usize, wp: bool) -> io::Result<()> {
    let mut arg = uffdio_writeprotect {
        range: uffdio_range {
            start: addr as u64,
            len: len as u64,
        },
        mode: if wp { WRITEPROTECT_MODE_WP } else { 0 },
    };
    // SAFETY: arg is a valid uffdio_writeprotect living across the call.
    let rc = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            UFFDIO_WRITEPROTECT as libc::c_ulong,
            &mut arg,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
