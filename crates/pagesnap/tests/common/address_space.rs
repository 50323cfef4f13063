//! Address-space limits (`RLIMIT_AS`) for tests of allocation failure: run a
//! closure with little room above what the process uses now.

/// The process's address-space size (VmSize), in bytes.
pub fn vm_size() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmSize:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// Sets the soft `RLIMIT_AS` (`None`: back to the hard limit).
pub fn set_soft_limit(bytes: Option<u64>) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit to fill and then pass back.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_AS, &mut lim), 0);
        lim.rlim_cur = bytes.map_or(lim.rlim_max, |b| b.min(lim.rlim_max));
        assert_eq!(libc::setrlimit(libc::RLIMIT_AS, &lim), 0);
    }
}

/// Runs `f` with the address space capped at current use plus `headroom`.
pub fn with_headroom<T>(headroom: u64, f: impl FnOnce() -> T) -> T {
    set_soft_limit(Some(vm_size() + headroom));
    let r = f();
    set_soft_limit(None);
    r
}
