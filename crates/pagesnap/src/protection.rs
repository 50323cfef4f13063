//! The program's own protection of region pages: found before pagesnap
//! protects, reads or writes them, and refused with
//! [`Error::ForeignProtection`] (or [`Error::Unmapped`] where the program
//! unmapped them).

use crate::error::{Error, Result};
use crate::sys::maps;
use crate::sys::mmap::Mapping;
use crate::sys::pagemap::Pagemap;

/// How thoroughly to look.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Look {
    /// Always: by the kernel's one-mapping-at-a-time query, else by reading
    /// `/proc/self/maps` (~0.1 ms), and for guard regions by a page-table
    /// scan: before background and converging snapshots.
    Always,
    /// Only where the kernel answers in microseconds (Linux ≥ 6.11): before
    /// synchronous snapshots, restores and verifies, which may take less
    /// than reading the maps file would.
    Quick,
}

/// Fails if the program changed the protection of pages of the region `map`
/// (tracked by mprotect if `mprotect`): pagesnap would replace it with its own
/// (a point-in-time snapshot protects and lifts every page; mprotect tracking
/// re-protects written pages), or fault reading or writing a page the program
/// made unreadable or read-only.
pub(crate) fn own_protection(map: &Mapping, mprotect: bool, look: Look) -> Result<()> {
    let (allowed, expected) = maps::expected(mprotect);
    let (start, len) = (map.as_ptr() as usize, map.len());
    let found = match look {
        Look::Always => maps::foreign_protection(start, len, allowed).or_else(|| guard(start, len)),
        Look::Quick => maps::foreign_protection_quick(start, len, allowed),
    };
    match found {
        Some(maps::Foreign {
            addr,
            len,
            perms: Some(perms),
        }) => Err(Error::ForeignProtection {
            addr,
            len,
            perms,
            expected,
        }),
        Some(maps::Foreign {
            addr,
            len,
            perms: None,
        }) => Err(Error::Unmapped { addr, len }),
        None => Ok(()),
    }
}

/// The first guard region (`MADV_GUARD_INSTALL`) in `[start, start + len)`,
/// as a run the program made inaccessible, where the kernel can say (Linux ≥
/// 6.14). A walk of the region's page tables (tens of µs for 64 MiB): asked
/// before background and converging snapshots only.
fn guard(start: usize, len: usize) -> Option<maps::Foreign> {
    let mut pagemap = Pagemap::open().ok()?;
    let (from, to) = pagemap.first_guard(start, start + len).ok()??;
    Some(maps::Foreign {
        addr: from,
        len: to - from,
        perms: Some("---".into()),
    })
}
