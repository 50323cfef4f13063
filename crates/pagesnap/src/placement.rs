//! Where a region's memory goes: wherever the kernel likes, or exactly at an
//! address the caller chose ([`RegionBuilder::at`](crate::RegionBuilder::at),
//! [`Snapshot::instantiate_at`](crate::Snapshot::instantiate_at)).
//!
//! A chosen address is what lets pointer-bearing state (a heap whose blocks point
//! at each other) survive a clone or a snapshot file: the bytes come back where
//! their pointers say they are. The mapping is made with `MAP_FIXED_NOREPLACE`,
//! so it never replaces anything already mapped there; a taken range is
//! [`Error::AddressTaken`] and leaves the address space as it was.

use crate::error::{Error, Result};
use crate::sys::mmap::{Mapping, Protection};
use crate::sys::page_size;
use std::io;
use std::os::fd::BorrowedFd;

/// Checks that `addr` can start a region of `len` bytes (`len` a whole number of
/// pages).
pub(crate) fn check(addr: usize, len: usize) -> Result<()> {
    let bad = |reason| Err(Error::BadAddress { addr, reason });
    if addr == 0 {
        return bad("the address is NULL");
    }
    if addr % page_size() != 0 {
        return bad("the address is not a multiple of the page size");
    }
    if addr
        .checked_add(len)
        .is_none_or(|end| end > isize::MAX as usize)
    {
        return bad("the region would run past the end of the address space");
    }
    Ok(())
}

/// An anonymous read-write mapping of `len` bytes at `at`, or anywhere.
pub(crate) fn anonymous(len: usize, huge: bool, at: Option<usize>) -> Result<Mapping> {
    match at {
        None => Mapping::anonymous(len, Protection::ReadWrite, huge)
            .map_err(|source| Error::Map { len, source }),
        Some(addr) => {
            check(addr, len)?;
            Mapping::fixed(addr, len, None, huge).map_err(|e| fixed_error(addr, len, e))
        }
    }
}

/// A private view of `fd` at `at`, or anywhere (a clone's memory).
pub(crate) fn private_file(
    fd: BorrowedFd<'_>,
    len: usize,
    huge: bool,
    at: Option<usize>,
) -> Result<Mapping> {
    let clone_error = |source| Error::Clone {
        step: "mmap(MAP_PRIVATE) of the image",
        len,
        source,
    };
    match at {
        None => Mapping::private_file(fd, len, huge).map_err(clone_error),
        Some(addr) => {
            check(addr, len)?;
            Mapping::fixed(addr, len, Some(fd), huge).map_err(|e| match fixed_error(addr, len, e) {
                Error::Map { source, .. } => clone_error(source),
                other => other,
            })
        }
    }
}

fn fixed_error(addr: usize, len: usize, e: io::Error) -> Error {
    if e.raw_os_error() == Some(libc::EEXIST) {
        Error::AddressTaken { addr, len }
    } else {
        Error::Map { len, source: e }
    }
}
