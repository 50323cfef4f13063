//! The protection the program gave pages of a region, from the kernel's list
//! of this process's mappings.
//!
//! pagesnap sets the protection of a region's pages itself (mprotect
//! tracking, point-in-time snapshots) and reads or writes every page it
//! copies. A program that protects region pages on its own — a guard page
//! (`PROT_NONE`), a garbage collector's write barrier (`PROT_READ`), code
//! (`PROT_EXEC`) — would have that protection replaced by pagesnap's, or make
//! pagesnap's own access fault. So what is about to protect, copy or write a
//! region first asks the kernel which protections its mappings have:
//!
//! ```text
//!  query.rs  PROCMAP_QUERY (Linux ≥ 6.11): one ioctl a mapping, about a µs;
//!            cheap enough before every synchronous snapshot
//!  text.rs   /proc/self/maps read as text: every kernel, ~0.1 ms a process
//! ```

mod query;
mod text;

/// A run of a region's pages mapped with a protection pagesnap did not set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Foreign {
    /// First byte of the run (page-aligned).
    pub(crate) addr: usize,
    /// Its length in bytes.
    pub(crate) len: usize,
    /// Its protection as `/proc/self/maps` spells it (`r--`, `---`, `rwx`, …);
    /// `None` where nothing is mapped (the program unmapped those pages).
    pub(crate) perms: Option<String>,
}

/// The protections pagesnap leaves a region's pages with between snapshots:
/// read-write, and under mprotect tracking read-only too (a program's own
/// `PROT_READ` cannot be told apart there); with how an error says it. Under
/// the `READ_IMPLIES_EXEC` personality the kernel adds exec to each.
pub(crate) fn expected(mprotect: bool) -> (&'static [&'static str], &'static str) {
    let exec = crate::sys::process::read_implies_exec();
    match (mprotect, exec) {
        (true, false) => (
            &["rw-", "r--"],
            "read-write or read-only (mprotect tracking)",
        ),
        (true, true) => (
            &["rw-", "r--", "rwx", "r-x"],
            "read-write or read-only (mprotect tracking; exec added by READ_IMPLIES_EXEC)",
        ),
        (false, false) => (&["rw-"], "read-write"),
        (false, true) => (
            &["rw-", "rwx"],
            "read-write (exec added by READ_IMPLIES_EXEC)",
        ),
    }
}

/// The first mapping inside `[start, start + len)` whose protection is not
/// one of `allowed` (spelled as in `/proc/self/maps`: `rw-`, `r--`), clipped
/// to the range: asked of the kernel one mapping at a time where it can
/// answer so, else read from `/proc/self/maps`. `None` where neither can be
/// read (a rare sandbox: nothing can be known).
pub(crate) fn foreign_protection(start: usize, len: usize, allowed: &[&str]) -> Option<Foreign> {
    query::foreign_protection(start, len, allowed)
        .unwrap_or_else(|| text::foreign_protection(start, len, allowed))
}

/// [`foreign_protection`] where the kernel answers it in microseconds
/// (PROCMAP_QUERY); `None` on older kernels, where reading the whole maps
/// file would cost more than the small snapshot it guards.
pub(crate) fn foreign_protection_quick(
    start: usize,
    len: usize,
    allowed: &[&str],
) -> Option<Foreign> {
    query::foreign_protection(start, len, allowed).flatten()
}

/// Whether this kernel answers `PROCMAP_QUERY` (what
/// [`foreign_protection_quick`] needs).
pub(crate) fn kernel_answers_queries() -> bool {
    query::foreign_protection(0, 0, &[]).is_some()
}

/// The first run inside `[start, end)` that `maps` (start, end, protection
/// letters; in address order, ending where the kernel's list ends) leave
/// unmapped or map with a protection not one of `allowed`, clipped to the
/// range.
fn first_foreign(
    maps: impl Iterator<Item = (usize, usize, [u8; 3])>,
    start: usize,
    end: usize,
    allowed: &[&str],
) -> Option<Foreign> {
    // The first byte not yet seen mapped.
    let mut covered = start;
    let run = |addr: usize, to: usize, perms: Option<[u8; 3]>| {
        let addr = addr.max(start);
        Some(Foreign {
            addr,
            len: to.min(end) - addr,
            perms: perms.map(|p| String::from_utf8_lossy(&p).into_owned()),
        })
    };
    for (from, to, perms) in maps {
        if from >= end {
            break;
        }
        if to <= covered {
            continue;
        }
        if from > covered {
            return run(covered, from, None);
        }
        if !allowed.iter().any(|a| a.as_bytes() == perms) {
            return run(from, to, Some(perms));
        }
        covered = to;
    }
    (covered < end).then(|| run(covered, end, None)).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::mmap::{Mapping, Protection};

    #[test]
    fn the_kernel_query_and_the_text_agree() {
        if !kernel_answers_queries() {
            eprintln!("skipped: no PROCMAP_QUERY (Linux < 6.11)");
            return;
        }
        let page = crate::sys::page_size();
        let map = Mapping::anonymous(8 * page, Protection::ReadWrite, false).unwrap();
        let start = map.as_ptr() as usize;
        let protect = |i: usize, prot: i32| {
            // SAFETY: pages of `map`, which this test never touches.
            let r = unsafe { libc::mprotect((start + i * page) as *mut libc::c_void, page, prot) };
            assert_eq!(r, 0);
        };
        protect(2, libc::PROT_NONE);
        protect(5, libc::PROT_READ | libc::PROT_EXEC);
        protect(6, libc::PROT_READ);
        for allowed in [
            &["rw-"][..],
            &["rw-", "---"][..],
            &["rw-", "---", "r-x"][..],
            &["rw-", "r--", "---", "r-x"][..],
            &["r--"][..],
        ] {
            for (from, pages) in [(0, 8), (3, 5), (0, 2), (2, 1), (7, 1)] {
                let (s, l) = (start + from * page, pages * page);
                assert_eq!(
                    query::foreign_protection(s, l, allowed).unwrap(),
                    text::foreign_protection(s, l, allowed),
                    "{allowed:?} pages {from}+{pages}"
                );
            }
        }
        let found = foreign_protection_quick(start, 8 * page, &["rw-"]).unwrap();
        assert_eq!(
            (found.addr, found.len, found.perms.as_deref()),
            (start + 2 * page, page, Some("---"))
        );
    }
}
