//! Mappings asked of the kernel one at a time: the `PROCMAP_QUERY` ioctl on
//! an open `/proc/self/maps` (Linux ≥ 6.11), about a microsecond a mapping
//! where reading the text costs ~0.1 ms a process. Written by hand: neither
//! `libc` nor `linux-raw-sys` has the ioctl's number (the latter has its
//! struct, used here).

use super::{first_foreign, Foreign};
use linux_raw_sys::general::{procmap_query, procmap_query_flags};
use std::os::fd::IntoRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// `_IOWR('f', 17, struct procmap_query)` from `<linux/fs.h>`.
const PROCMAP_QUERY: libc::c_ulong = (3 << 30)
    | ((std::mem::size_of::<procmap_query>() as libc::c_ulong) << 16)
    | ((b'f' as libc::c_ulong) << 8)
    | 17;

/// The open `/proc/self/maps`: the pid that opened it (high 32 bits) and its
/// descriptor (low 32), 0 before the first. A child of `fork` inherits the
/// descriptor, which still names its parent's mappings: the pid tells it to
/// open its own. (The inherited one is left open: the child may have closed
/// it and reused its number for a file of its own.)
static MAPS: AtomicU64 = AtomicU64::new(0);

/// Set once the kernel has refused the ioctl on a fresh descriptor.
static UNSUPPORTED: AtomicBool = AtomicBool::new(false);

/// This process's `/proc/self/maps`, opened on first use (`fresh`: opened
/// anew even if one is cached); `None` where it cannot be opened.
fn maps_fd(fresh: bool) -> Option<i32> {
    let pid = std::process::id();
    let cached = MAPS.load(Ordering::Acquire);
    if !fresh && cached != 0 && (cached >> 32) as u32 == pid {
        return Some(cached as u32 as i32);
    }
    let fd = std::fs::File::open(crate::sys::process::proc_file!("maps"))
        .ok()?
        .into_raw_fd();
    let entry = (u64::from(pid) << 32) | u64::from(fd as u32);
    match MAPS.compare_exchange(cached, entry, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => Some(fd),
        Err(now) => {
            // Another thread opened one first: use it, close ours.
            // SAFETY: `fd` was opened above and never shared.
            unsafe { libc::close(fd) };
            ((now >> 32) as u32 == pid).then_some(now as u32 as i32)
        }
    }
}

/// The mapping covering `addr`, or the first after it: (start, end,
/// protection letters). `Ok(None)` past the last mapping.
fn query(fd: i32, addr: usize) -> std::io::Result<Option<(usize, usize, [u8; 3])>> {
    // SAFETY: an all-zero `procmap_query` is valid (plain integers): no name
    // or build id is asked for (their sizes are 0).
    let mut q: procmap_query = unsafe { std::mem::zeroed() };
    q.size = std::mem::size_of::<procmap_query>() as u64;
    q.query_flags = procmap_query_flags::PROCMAP_QUERY_COVERING_OR_NEXT_VMA as u64;
    q.query_addr = addr as u64;
    // SAFETY: `q` is a live, writable `procmap_query` whose `size` is its
    // size; the kernel writes only inside it.
    if unsafe { libc::ioctl(fd, PROCMAP_QUERY as _, &mut q) } != 0 {
        let err = std::io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::ENOENT) => Ok(None),
            _ => Err(err),
        };
    }
    let flag = |f: procmap_query_flags, c: u8| {
        if q.vma_flags & f as u64 != 0 {
            c
        } else {
            b'-'
        }
    };
    let perms = [
        flag(procmap_query_flags::PROCMAP_QUERY_VMA_READABLE, b'r'),
        flag(procmap_query_flags::PROCMAP_QUERY_VMA_WRITABLE, b'w'),
        flag(procmap_query_flags::PROCMAP_QUERY_VMA_EXECUTABLE, b'x'),
    ];
    Ok(Some((q.vma_start as usize, q.vma_end as usize, perms)))
}

/// As [`super::foreign_protection`]; `None` where the kernel cannot answer
/// this way (older than 6.11, no `/proc`, a sandbox refusing the ioctl).
pub(super) fn foreign_protection(
    start: usize,
    len: usize,
    allowed: &[&str],
) -> Option<Option<Foreign>> {
    if UNSUPPORTED.load(Ordering::Relaxed) {
        return None;
    }
    let mut fd = maps_fd(false)?;
    let first = match query(fd, start) {
        Ok(m) => m,
        Err(_) => {
            // The cached descriptor may have been closed (and its number
            // reused) by the program: ask once more on a fresh one.
            fd = maps_fd(true)?;
            match query(fd, start) {
                Ok(m) => m,
                Err(_) => {
                    UNSUPPORTED.store(true, Ordering::Relaxed);
                    return None;
                }
            }
        }
    };
    // The rest one by one, as `first_foreign` asks for them.
    let (mut first, mut at, mut failed) = (first, None, false);
    let maps = std::iter::from_fn(|| {
        let this = match first.take() {
            Some(m) => m,
            None => match query(fd, at.take()?) {
                Ok(m) => m?,
                Err(_) => {
                    failed = true;
                    return None;
                }
            },
        };
        // A mapping ends past its start; the guard keeps a confused answer
        // from looping.
        at = (this.1 > this.0).then_some(this.1);
        Some(this)
    });
    let found = first_foreign(maps, start, start.saturating_add(len), allowed);
    // A query that failed part-way is not the end of the list (which would
    // show the rest of the range as unmapped): nothing is known.
    (!failed).then_some(found)
}
