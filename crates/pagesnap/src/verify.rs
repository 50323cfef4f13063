//! Checking a region against its sync point ([`Region::verify`](crate::Region::verify)):
//! the way back after writes that raced with `snapshot()` / `restore()`, and
//! after a failed call that could not hand its pages back to the tracker.
//!
//! ```text
//!  tracked   = pages the tracker reports written since the sync point (peek)
//!  differing = pages whose bytes differ from the sync point's   (O(region))
//!  untracked = differing − tracked   → marked written again (Tracker::remark)
//! ```
//! After that the tracker's view is exact again: the next snapshot saves every
//! page that differs, and the next restore rewrites it.

use crate::error::{Error, Result};
use crate::snapshot::Snapshot;
use crate::sys::mmap::Mapping;
use crate::sys::page_size;

/// What [`Region::verify`](crate::Region::verify) found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Pages compared (all of the region's).
    pub pages: u64,
    /// Pages whose bytes differ from the last sync point: written since it,
    /// whether the tracker saw the writes or not.
    pub changed: u64,
    /// Of those, pages the tracker had not reported — writes it missed (they
    /// raced with a snapshot or restore, or a failed call lost them). They are
    /// marked written now, so the next snapshot or restore covers them.
    pub untracked: u64,
}

/// Pushes, in page order, every page of `map` whose bytes differ from `base`'s.
/// Reads the region with [`Mapping::copy_out`] and never holds the store lock
/// while doing so; callers keep writers away (quiescent, or write-protected).
pub(crate) fn differing(map: &Mapping, base: &Snapshot, out: &mut Vec<usize>) -> Result<()> {
    let page = page_size();
    let mut bufs = Vec::new();
    bufs.try_reserve_exact(2 * page)
        .map_err(|_| Error::OutOfMemory {
            what: "verify's page buffers",
            bytes: 2 * page,
        })?;
    bufs.resize(2 * page, 0);
    let (mine, theirs) = bufs.split_at_mut(page);
    let tree = base.tree();
    for p in 0..map.len() / page {
        map.copy_out(p * page, mine);
        theirs.copy_from_slice(base.store().frame(tree.get(p)));
        if mine != theirs {
            out.push(p);
        }
    }
    Ok(())
}
