//! # Safety
//!
//! [`Buffer`]: an anonymous private mapping owned by the value, used for the
//! baselines' datasets and destination buffers. It is mapped like a pagesnap region
//! (`MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE`, 2 MiB-aligned and
//! `MADV_HUGEPAGE` when huge pages are asked for), so baselines and regions differ
//! only in tracking. The pointer and length always describe exactly one live
//! mapping owned by the value, so the slices built from them are valid for its
//! lifetime and alias nothing else.
#![allow(unsafe_code)]

use std::io;
use std::ptr::NonNull;

/// 2 MiB: the alignment transparent huge pages need (x86-64, arm64 with 4 KiB pages).
const HUGE_PAGE: usize = 2 << 20;

/// Pre-faulted anonymous memory, unmapped on drop.
pub struct Buffer {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: plain memory owned by this value; the mapping has no thread affinity.
unsafe impl Send for Buffer {}

impl Buffer {
    /// Maps `len` bytes (a non-zero multiple of the page size) and writes `fill`
    /// over every page, so no first-touch fault lands in a timed copy later.
    pub fn new(
        len: usize,
        huge: bool,
        mut fill: impl FnMut(usize, &mut [u8]),
    ) -> io::Result<Buffer> {
        let page = pagesnap::page_size();
        if len == 0 || len % page != 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
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
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mut start = raw as usize;
        if huge {
            let aligned = start.next_multiple_of(HUGE_PAGE);
            let (head, tail) = (aligned - start, map_len - (aligned - start) - len);
            // SAFETY: both trimmed pieces lie inside the mapping just made and are
            // outside the [aligned, aligned + len) range kept.
            unsafe {
                if head > 0 {
                    libc::munmap(start as *mut libc::c_void, head);
                }
                if tail > 0 {
                    libc::munmap((aligned + len) as *mut libc::c_void, tail);
                }
                // Advice only: a kernel without THP leaves base pages, which is
                // what the benchmark then measures for every method alike.
                libc::madvise(aligned as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
            }
            start = aligned;
        }
        let ptr = NonNull::new(start as *mut u8).expect("mmap does not return null");
        let mut buf = Buffer { ptr, len };
        for (i, p) in buf.as_mut_slice().chunks_exact_mut(page).enumerate() {
            fill(i, p);
        }
        Ok(buf)
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The contents.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr/len describe a live mapping owned by self (module doc).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The contents, writable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and `&mut self` makes this the only live slice.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        // SAFETY: the mapping is owned by self and no slice of it outlives self.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}
