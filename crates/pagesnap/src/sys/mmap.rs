//! # Safety
//!
//! Private mappings (anonymous, or of a file: a clone's copy-on-write view of its
//! image) owned by a [`Mapping`] value: created with `mmap(2)`,
//! changed with `mprotect(2)` / `madvise(2)`, released with `munmap(2)` on drop.
//! The pointer and length of a `Mapping` always describe exactly one live mapping
//! that this value owns, so slices built from them are valid for its lifetime.
//!
//! Aliasing: a mapping that is shared (a region's, by `Arc`, with a background
//! copier) hands out Rust references only to the holder of its one [`WriteKey`]
//! (`as_slice_keyed` / `as_mut_slice_keyed`, borrowing the key), so a `&mut [u8]`
//! never coexists with another reference into it; everyone else copies bytes out
//! with [`Mapping::copy_out`]. An unshared mapping (a store slab) gives slices
//! through `&self` / `&mut self` as usual, and never issues a key.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};

/// The size huge pages are aligned to on x86-64 and arm64 (4 KiB base pages).
pub(crate) const HUGE_PAGE: usize = 2 << 20;

/// Access allowed to a range of a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Protection {
    Read,
    ReadWrite,
}

impl Protection {
    pub(crate) fn bits(self) -> libc::c_int {
        match self {
            Protection::Read => libc::PROT_READ,
            Protection::ReadWrite => libc::PROT_READ | libc::PROT_WRITE,
        }
    }
}

/// One anonymous, private, page-aligned mapping, unmapped on drop.
#[derive(Debug)]
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
    /// Whether the mapping's [`WriteKey`] was handed out; from then on its bytes
    /// are referenced only through the key.
    keyed: AtomicBool,
}

/// The right to form Rust references into a shared [`Mapping`]: one per
/// mapping, not `Clone`. A `&mut [u8]` from [`Mapping::as_mut_slice_keyed`]
/// borrows the key mutably, so no other reference into the mapping can exist
/// while it lives.
#[derive(Debug)]
pub(crate) struct WriteKey {
    /// The mapping's address, to catch a key used with another mapping.
    addr: usize,
}

// SAFETY: a Mapping is plain memory owned by this value; the kernel object has no
// thread affinity. Through `&self`, references into the memory are formed only
// by the holder of the one WriteKey (or, for a mapping that never issued one,
// shared slices only); other access is by raw-pointer copies and syscalls.
unsafe impl Send for Mapping {}
// SAFETY: as above: `&Mapping` alone never yields a `&mut [u8]`.
unsafe impl Sync for Mapping {}

/// The result of an `mmap(2)` call: its error, or the address, once the
/// personality it was mapped under is noted for the protection checks
/// (mapped with exec added?).
fn mapped(raw: *mut libc::c_void) -> io::Result<*mut libc::c_void> {
    if raw == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    super::process::read_implies_exec();
    Ok(raw)
}

impl Mapping {
    /// `mmap(NULL, len, prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)`.
    ///
    /// `len` must be a non-zero multiple of the page size (checked by the caller,
    /// `Region::builder`). With `huge`, the mapping is aligned to 2 MiB (by mapping
    /// more and trimming) and marked `MADV_HUGEPAGE`.
    pub(crate) fn anonymous(len: usize, prot: Protection, huge: bool) -> io::Result<Mapping> {
        debug_assert!(len > 0 && len % super::page_size() == 0);
        let map_len = if huge {
            len.checked_add(HUGE_PAGE)
                .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))?
        } else {
            len
        };
        // SAFETY: a fresh anonymous mapping at an address the kernel chooses cannot
        // alias any Rust object.
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                prot.bits(),
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        let raw = mapped(raw)?;
        let mut start = raw as usize;
        if huge {
            let aligned = start.next_multiple_of(HUGE_PAGE);
            let head = aligned - start;
            let tail = map_len - head - len;
            // SAFETY: both trimmed pieces lie inside the mapping just created and
            // are not part of the range we keep.
            unsafe {
                if head > 0 {
                    libc::munmap(raw, head);
                }
                if tail > 0 {
                    libc::munmap((aligned + len) as *mut libc::c_void, tail);
                }
            }
            start = aligned;
        }
        let mapping = Mapping {
            ptr: NonNull::new(start as *mut u8).expect("mmap never returns NULL on success"),
            len,
            keyed: AtomicBool::new(false),
        };
        if huge {
            mapping.advise(0, len, libc::MADV_HUGEPAGE)?;
        }
        Ok(mapping)
    }

    /// `mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, fd, 0)`:
    /// a private copy-on-write view of the first `len` bytes of `fd` (a clone's
    /// memory). Reads map the file's page-cache pages, shared with every other
    /// private mapping of the file; a write copies the page into this mapping
    /// alone, and never reaches the file.
    ///
    /// `len` must be a non-zero multiple of the page size, and the file at least
    /// that long (checked by the caller, `clone.rs`). With `huge`, the mapping is
    /// placed at a 2 MiB-aligned address (inside a larger `PROT_NONE` reservation,
    /// with `MAP_FIXED` over it, the rest unmapped) and marked `MADV_HUGEPAGE`.
    pub(crate) fn private_file(fd: BorrowedFd<'_>, len: usize, huge: bool) -> io::Result<Mapping> {
        debug_assert!(len > 0 && len % super::page_size() == 0);
        let mut hint = std::ptr::null_mut();
        let mut flags = libc::MAP_PRIVATE | libc::MAP_NORESERVE;
        let mut reservation = None;
        if huge {
            let reserved = Mapping::anonymous(
                len.checked_add(HUGE_PAGE)
                    .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))?,
                Protection::Read,
                false,
            )?;
            hint = (reserved.as_ptr() as usize).next_multiple_of(HUGE_PAGE) as *mut libc::c_void;
            flags |= libc::MAP_FIXED;
            reservation = Some(reserved);
        }
        // SAFETY: without MAP_FIXED the kernel picks an address that aliases no
        // Rust object. With MAP_FIXED, `hint..hint + len` lies inside `reservation`,
        // an anonymous mapping this function just made and nothing references.
        let raw = unsafe {
            libc::mmap(
                hint,
                len,
                Protection::ReadWrite.bits(),
                flags,
                fd.as_raw_fd(),
                0,
            )
        };
        let raw = mapped(raw)?;
        let mapping = Mapping {
            ptr: NonNull::new(raw.cast()).expect("mmap never returns NULL on success"),
            len,
            keyed: AtomicBool::new(false),
        };
        if let Some(reserved) = reservation {
            let (start, end) = (
                reserved.as_ptr() as usize,
                reserved.as_ptr() as usize + reserved.len,
            );
            let (ours, ours_end) = (raw as usize, raw as usize + len);
            std::mem::forget(reserved);
            // SAFETY: both pieces lie inside the reservation made above and outside
            // the file mapping that replaced its middle; nothing references them.
            unsafe {
                if ours > start {
                    libc::munmap(start as *mut libc::c_void, ours - start);
                }
                if end > ours_end {
                    libc::munmap(ours_end as *mut libc::c_void, end - ours_end);
                }
            }
            mapping.advise(0, len, libc::MADV_HUGEPAGE)?;
        }
        Ok(mapping)
    }

    /// `mmap(addr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED_NOREPLACE |
    /// MAP_NORESERVE | (fd ? 0 : MAP_ANONYMOUS), fd, 0)`: a mapping at exactly
    /// `addr`, anonymous (`fd` None) or a private view of `fd` as in
    /// [`private_file`](Self::private_file). Never replaces a mapping: if any page
    /// of `[addr, addr + len)` is mapped already, the error is `EEXIST` and nothing
    /// changes. (A kernel older than 4.17 takes the flag as a mere hint; a mapping
    /// placed elsewhere is undone and reported as `EEXIST` too.)
    ///
    /// `addr` must be page-aligned and non-zero and `len` a non-zero multiple of
    /// the page size (checked by the caller, `RegionBuilder::build`). With `huge`,
    /// the range is marked `MADV_HUGEPAGE` (huge pages come only where `addr` is
    /// 2 MiB-aligned).
    pub(crate) fn fixed(
        addr: usize,
        len: usize,
        fd: Option<BorrowedFd<'_>>,
        huge: bool,
    ) -> io::Result<Mapping> {
        debug_assert!(addr != 0 && addr % super::page_size() == 0);
        debug_assert!(len > 0 && len % super::page_size() == 0);
        let mut flags = libc::MAP_PRIVATE | libc::MAP_NORESERVE | libc::MAP_FIXED_NOREPLACE;
        let raw_fd = match fd {
            Some(fd) => fd.as_raw_fd(),
            None => {
                flags |= libc::MAP_ANONYMOUS;
                -1
            }
        };
        // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping (EEXIST
        // instead), so the new pages alias no Rust object; the kernel checks the
        // range lies in the user address space.
        let raw = unsafe {
            libc::mmap(
                addr as *mut libc::c_void,
                len,
                Protection::ReadWrite.bits(),
                flags,
                raw_fd,
                0,
            )
        };
        let raw = mapped(raw)?;
        if raw as usize != addr {
            // SAFETY: the kernel just made this mapping elsewhere (an old kernel
            // that took the address as a hint); nothing references it.
            unsafe { libc::munmap(raw, len) };
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        let mapping = Mapping {
            ptr: NonNull::new(raw.cast()).expect("mmap never returns NULL on success"),
            len,
            keyed: AtomicBool::new(false),
        };
        if huge {
            mapping.advise(0, len, libc::MADV_HUGEPAGE)?;
        }
        Ok(mapping)
    }

    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The one [`WriteKey`] of this mapping; `None` once handed out.
    pub(crate) fn write_key(&self) -> Option<WriteKey> {
        (!self.keyed.swap(true, Ordering::AcqRel)).then_some(WriteKey {
            addr: self.ptr.as_ptr() as usize,
        })
    }

    fn check_key(&self, key: &WriteKey) {
        assert_eq!(
            key.addr,
            self.ptr.as_ptr() as usize,
            "a write key used with another mapping"
        );
    }

    /// The whole mapping as bytes, for a mapping that never issued a key.
    #[cfg_attr(not(feature = "remote"), allow(dead_code))]
    pub(crate) fn as_slice(&self) -> &[u8] {
        assert!(
            !self.keyed.load(Ordering::Acquire),
            "a keyed mapping is read through its key or copy_out"
        );
        // SAFETY: ptr/len describe one live readable mapping owned by self (type
        // invariant; it is never PROT_NONE). Without a key, a `&mut [u8]` comes
        // only from `as_mut_slice(&mut self)`, which this shared borrow excludes.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The whole mapping as mutable bytes, for its exclusive owner.
    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as for as_slice; `&mut self` excludes every other reference
        // into the mapping, keyed ones included (they borrow `self`).
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// The whole mapping as bytes, for the key holder.
    pub(crate) fn as_slice_keyed<'a>(&'a self, key: &'a WriteKey) -> &'a [u8] {
        self.check_key(key);
        // SAFETY: as for as_slice; a `&mut [u8]` into this mapping needs `&mut`
        // of the one key (checked to be this mapping's), which `key` excludes.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The whole mapping as mutable bytes, for the key holder. Under mprotect
    /// tracking (and during a background snapshot), writes to read-only pages
    /// fault and are resolved by pagesnap's signal handler.
    pub(crate) fn as_mut_slice_keyed<'a>(&'a self, key: &'a mut WriteKey) -> &'a mut [u8] {
        self.check_key(key);
        // SAFETY: as for as_slice; this borrows the mapping's one key mutably
        // (checked to be this mapping's), so no other reference into the mapping
        // exists while the slice lives. Other threads touch the bytes only by
        // raw-pointer copies (`copy_out`) and syscalls.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// Copies `buf.len()` bytes at `offset` into `buf` without forming a reference
    /// to the rest of the mapping, which other threads may be writing meanwhile.
    /// The caller makes sure nobody writes these bytes during the copy (the
    /// background copier reads only pages it has write-protected).
    pub(crate) fn copy_out(&self, offset: usize, buf: &mut [u8]) {
        let end = offset.checked_add(buf.len());
        assert!(
            end.is_some_and(|e| e <= self.len),
            "copy_out past the end of the mapping"
        );
        // SAFETY: the source range lies inside this live mapping (checked above)
        // and cannot overlap `buf`, a Rust-owned buffer outside it.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.ptr.as_ptr().add(offset),
                buf.as_mut_ptr(),
                buf.len(),
            );
        }
    }

    /// Copies `src` to `offset` without forming a reference to the rest of the
    /// mapping, which other threads may be reading or writing elsewhere meanwhile.
    /// The caller makes sure nobody else touches these bytes during the copy (the
    /// store writes only frame slots it has reserved; a restore writes pages while
    /// the region's writers are quiescent).
    pub(crate) fn copy_in(&self, offset: usize, src: &[u8]) {
        let end = offset.checked_add(src.len());
        assert!(
            end.is_some_and(|e| e <= self.len),
            "copy_in past the end of the mapping"
        );
        // SAFETY: the destination range lies inside this live, writable mapping
        // (checked above); `src` is a Rust reference, so it cannot be these bytes,
        // which the caller makes sure nobody references during the copy.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr.as_ptr().add(offset), src.len());
        }
    }

    /// `[offset, offset + len)` as bytes, without forming a reference to the rest
    /// of the mapping. The caller makes sure nobody writes these bytes while the
    /// slice lives (a stored frame is written once, before anyone can name it).
    pub(crate) fn range(&self, offset: usize, len: usize) -> &[u8] {
        let end = offset.checked_add(len);
        assert!(
            end.is_some_and(|e| e <= self.len),
            "range past the end of the mapping"
        );
        // SAFETY: the range lies inside this live, readable mapping (checked
        // above) and borrows `self`, so it cannot outlive the mapping.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(offset), len) }
    }

    /// `mprotect(2)` of `[offset, offset + len)`; both page-aligned, inside the mapping.
    pub(crate) fn protect(&self, offset: usize, len: usize, prot: Protection) -> io::Result<()> {
        self.check_range(offset, len)?;
        // SAFETY: the range lies inside this mapping (checked above); changing its
        // protection cannot invalidate Rust references (they are to readable memory,
        // and Read/ReadWrite both keep it readable).
        let rc = unsafe { libc::mprotect(self.ptr.as_ptr().add(offset).cast(), len, prot.bits()) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// `madvise(2)` of `[offset, offset + len)`.
    pub(crate) fn advise(&self, offset: usize, len: usize, advice: libc::c_int) -> io::Result<()> {
        self.check_range(offset, len)?;
        // SAFETY: the range lies inside this mapping; the advice values used by the
        // crate (MADV_HUGEPAGE, MADV_NOHUGEPAGE, MADV_POPULATE_WRITE, MADV_DONTFORK)
        // never change its contents.
        let rc = unsafe { libc::madvise(self.ptr.as_ptr().add(offset).cast(), len, advice) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// `madvise(MADV_DONTNEED)` of `[offset, offset + len)`: drops this mapping's
    /// pages there. In a private file mapping (a clone) the range then reads as the
    /// file again; in an anonymous one, as zeros.
    ///
    /// Takes the mapping's key mutably: no Rust reference into the mapping is
    /// alive while its contents change.
    pub(crate) fn discard(&self, key: &mut WriteKey, offset: usize, len: usize) -> io::Result<()> {
        self.check_key(key);
        self.check_range(offset, len)?;
        // SAFETY: the range lies inside this mapping (checked above) and stays
        // mapped and readable; no reference into it exists (the key is borrowed
        // mutably, see `as_mut_slice_keyed`).
        let rc = unsafe {
            libc::madvise(
                self.ptr.as_ptr().add(offset).cast(),
                len,
                libc::MADV_DONTNEED,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    fn check_range(&self, offset: usize, len: usize) -> io::Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(io::Error::from_raw_os_error(libc::EINVAL)),
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: ptr/len is the one mapping this value owns; no slice into it can
        // outlive `self` (they borrow it).
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}
