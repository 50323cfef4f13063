//! Room left under the process's address-space limit (`RLIMIT_AS`).
//!
//! pagesnap's large allocations are fallible (frames, page lists, the index),
//! but the small ones of its tables (tree nodes) are ordinary Rust allocations,
//! and Rust aborts the process when one fails. Work that makes many of them
//! first checks that the limit leaves room for them and for malloc's own
//! growth, and fails with a typed error otherwise: nothing has been done yet,
//! so nothing is lost. Without a limit (the usual case) this is one `getrlimit`.

use std::io::Read;

/// What malloc may need beyond the caller's estimate: a fresh heap or a few
/// chunks mapped on their own.
pub(crate) const MALLOC_ROOM: usize = 8 << 20;

/// Whether `bytes()` more (plus malloc's room) fit under the address-space
/// limit. `bytes` is called only when a limit is set: working the size out
/// may cost a pass over the work.
pub(crate) fn has_room(bytes: impl FnOnce() -> usize) -> bool {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit for getrlimit to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut lim) } != 0
        || lim.rlim_cur == libc::RLIM_INFINITY
    {
        return true;
    }
    let Some(used) = address_space_bytes() else {
        return true;
    };
    used.saturating_add(bytes() as u64)
        .saturating_add(MALLOC_ROOM as u64)
        <= lim.rlim_cur
}

/// The process's address-space size, from `/proc/self/statm` (read into a
/// buffer on the stack: no allocation, which is the point).
fn address_space_bytes() -> Option<u64> {
    let mut buf = [0u8; 128];
    let mut f = std::fs::File::open(super::process::proc_file!("statm")).ok()?;
    let n = f.read(&mut buf).ok()?;
    let text = std::str::from_utf8(&buf[..n]).ok()?;
    let pages: u64 = text.split_ascii_whitespace().next()?.parse().ok()?;
    Some(pages * super::page_size() as u64)
}

/// Memory the process could still fault in without the kernel's out-of-memory
/// killer: the system's available memory plus free swap (`/proc/meminfo`),
/// or, where lower, what its control group's limit leaves (cgroup v2
/// `memory.max` less `memory.current`). `None` where neither can be read.
pub(crate) fn available_memory() -> Option<u64> {
    let system = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let field = |name: &str| -> Option<u64> {
                let line = text.lines().find(|l| l.starts_with(name))?;
                let kb: u64 = line[name.len()..]
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse()
                    .ok()?;
                Some(kb * 1024)
            };
            Some(field("MemAvailable:")? + field("SwapFree:").unwrap_or(0))
        });
    let group = cgroup_room();
    match (system, group) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// What this process's cgroup v2 memory limit leaves; `None` without a limit.
fn cgroup_room() -> Option<u64> {
    let own = std::fs::read_to_string(super::process::proc_file!("cgroup")).ok()?;
    let path = own.lines().find_map(|l| l.strip_prefix("0::"))?;
    let dir = std::path::Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'));
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
    let max: u64 = read("memory.max")?.trim().parse().ok()?; // "max": no limit
    let current: u64 = read("memory.current")?.trim().parse().ok()?;
    Some(max.saturating_sub(current))
}
