//! Dirty-page tracking: one file per backend behind the [`Tracker`] trait.
//!
//! A tracker reports the pages written since the last *sync point* (the last
//! snapshot or restore). Writers are quiescent during `collect`, `peek` and `rearm`.

pub(crate) mod compare;
mod discards;
pub(crate) mod error;
pub(crate) mod kernel_bugs;
pub(crate) mod kind;
mod mprotect;
pub(crate) mod probe;
pub(crate) mod soft_dirty;
pub(crate) mod uffd_wp;

use crate::sys::mmap::{Mapping, Protection};
use crate::Tracking;
use error::{Result, TrackError};

/// A backend that finds written pages of one region.
pub(crate) trait Tracker: Send + Sync {
    /// Which backend this is.
    fn kind(&self) -> Tracking;

    /// Whether the tracker can work now (`Err` e.g. when the faults it relies on
    /// no longer reach it); called before pagesnap writes the region itself.
    fn ready(&mut self) -> Result<()> {
        Ok(())
    }

    /// Pushes the index of every page written since the sync point (in any order,
    /// possibly repeated) and re-arms tracking for them: the new sync point.
    /// `dirty` has room for every page of the region first (see [`reserve_for`]).
    fn collect(&mut self, map: &Mapping, dirty: &mut Vec<usize>) -> Result<()> {
        reserve_for(map, dirty)?;
        self.collect_written(map, dirty)
    }

    /// As `collect`, but leaves the pages as they are: pagesnap is about to write
    /// them itself and will call `rearm`.
    fn peek(&mut self, map: &Mapping, dirty: &mut Vec<usize>) -> Result<()> {
        reserve_for(map, dirty)?;
        self.peek_written(map, dirty)
    }

    /// The backend's `collect`: reports each written page once where it can
    /// (more than once only where the kernel reports a range twice).
    fn collect_written(&mut self, map: &Mapping, dirty: &mut Vec<usize>) -> Result<()>;

    /// The backend's `peek`, as `collect_written`.
    fn peek_written(&mut self, map: &Mapping, dirty: &mut Vec<usize>) -> Result<()>;

    /// Makes the sync point now: pagesnap itself wrote `written` (sorted, unique,
    /// a superset of what `peek` reported), and none of it may show as dirty.
    fn rearm(&mut self, map: &Mapping, written: &[usize]) -> Result<()>;

    /// pagesnap is about to write `pages` (sorted, unique) itself: lift their
    /// protection in one call per run where the backend can, so the writes take
    /// no fault each. Afterwards the pages count as written since the sync point
    /// (the next `collect` or `peek` reports them and re-arms them). The default
    /// does nothing: each write is then tracked like the application's own.
    fn lift(&mut self, _map: &Mapping, _pages: &[usize]) -> Result<()> {
        Ok(())
    }

    /// Marks `pages` (sorted, unique) written since the sync point again, so the
    /// next `collect` or `peek` reports them: a call that collected them failed
    /// before it could save them, or they were found to differ from the sync
    /// point behind the tracker's back (`Region::verify`). Allocates nothing.
    fn remark(&mut self, map: &Mapping, pages: &[usize]) -> Result<()>;

    /// The protection a page gets back once a background copier has copied it
    /// and lifts the write protection it put on: read-write, except under a
    /// backend that tracks by protection itself (mprotect keeps pages read-only
    /// until their first write faults).
    fn unprotect_to(&self) -> Protection {
        Protection::ReadWrite
    }
}

/// Makes room in `dirty` for every page of `map` beyond what it holds before
/// a backend pushes: the backends push while they change kernel state they
/// cannot roll back, and a growth that failed there (under an address-space
/// limit) would abort the process. The room is address space until pages are
/// pushed, and a region's list keeps it from one snapshot to the next.
fn reserve_for(map: &Mapping, dirty: &mut Vec<usize>) -> Result<()> {
    let pages = map.len().div_ceil(crate::sys::page_size());
    dirty
        .try_reserve(pages)
        .map_err(|_| TrackError::OutOfMemory {
            what: "the list of written pages",
            bytes: pages.saturating_mul(std::mem::size_of::<usize>()),
        })
}

/// A tracker for `map` of the concrete backend `kind` (not `Auto`).
pub(crate) fn arm(kind: Tracking, map: &Mapping) -> Result<Box<dyn Tracker>> {
    Ok(match kind {
        Tracking::UffdWp => Box::new(uffd_wp::UffdWp::arm(map)?),
        Tracking::SoftDirty => Box::new(soft_dirty::SoftDirty::arm(map)?),
        Tracking::Mprotect => Box::new(mprotect::Mprotect::arm(map)?),
        Tracking::Compare => Box::new(compare::Compare::arm(map)),
        Tracking::Auto => unreachable!("resolve Auto before arming"),
    })
}

/// A tracker for `map` of the concrete backend `kind`, whose content is a
/// clone's: what it already holds is known, so a backend that compares content
/// starts from `hashes` (each page's hash, computed only if needed) instead of
/// the zero page.
pub(crate) fn arm_clone(
    kind: Tracking,
    map: &Mapping,
    hashes: impl FnOnce() -> Vec<u128>,
) -> Result<Box<dyn Tracker>> {
    match kind {
        Tracking::Compare => Ok(Box::new(compare::Compare::arm_with(hashes()))),
        kind => arm(kind, map),
    }
}

/// The concrete backend `asked` stands for: `Auto` goes to `PAGESNAP_TRACKING`
/// or the best one available; an explicit choice must be available.
pub(crate) fn resolve(asked: Tracking) -> Result<Tracking> {
    let choice = match asked {
        Tracking::Auto => match Tracking::from_env()? {
            Some(t) => t,
            None => return Ok(auto_for_this_process()),
        },
        t => t,
    };
    let caps = probe::probe();
    match caps.backend(choice) {
        Some(b) if b.available => Ok(choice),
        Some(b) => Err(TrackError::Unavailable {
            backend: choice,
            reason: b.reason.clone(),
        }),
        None => Ok(choice),
    }
}

/// The best backend available: the probe's choice, except that mprotect
/// gives way to compare while a thread blocks `SIGSEGV` (its first write to
/// a protected page would kill the process).
fn auto_for_this_process() -> Tracking {
    match probe::probe().auto {
        Tracking::Mprotect if crate::sys::signal::no_thread_blocks_sigsegv().is_err() => {
            Tracking::Compare
        }
        auto => auto,
    }
}

/// Index ranges of the sorted, unique `pages`, as `(first, count)` runs.
pub(crate) fn runs(pages: &[usize]) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut i = 0;
    std::iter::from_fn(move || {
        let first = *pages.get(i)?;
        let mut n = 1;
        while pages.get(i + n) == Some(&(first + n)) {
            n += 1;
        }
        i += n;
        Some((first, n))
    })
}
