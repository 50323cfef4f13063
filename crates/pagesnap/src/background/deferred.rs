//! Lifting saved batches at the process's limit of mappings.
//!
//! Where a point-in-time snapshot protects with `mprotect` (soft-dirty
//! tracking, and compare without userfaultfd), each batch lifted between two
//! still protected is a mapping more. A process may hold `vm.max_map_count`
//! of them (65530 by default), so a large region whose writers lift batches
//! all over it reaches the limit: `mprotect` fails with `ENOMEM`. Measured
//! before: the snapshot failed (`mprotect (lift)`). A batch that cannot be
//! lifted alone is left `DEFERRED`: saved but protected, its writers asleep,
//! until it is lifted with a neighbour (a range reaching into lifted
//! mappings merges into them and needs none more) or with the whole region
//! once every batch is saved.

use crate::error::{Error, Result};
use crate::sys::mmap::{Mapping, Protection};
use crate::sys::signal::{BatchStates, COPIED, DEFERRED};
use std::sync::atomic::Ordering;

/// A failed lift of bytes `from..to` of `map`, as the snapshot reports it.
fn lift_failed(map: &Mapping, from: usize, to: usize, source: std::io::Error) -> Error {
    Error::Background {
        step: "mprotect (lift)",
        addr: map.as_ptr() as usize + from,
        len: to - from,
        source,
    }
}

/// Lifts batches `first..end` (saved by the caller, of `batch` bytes) to
/// `to`, together with the deferred batches on either side, and marks them
/// all `COPIED`; at the limit of mappings marks `first..end` `DEFERRED`
/// instead, which is no error. Either way wakes their writers. On another
/// error (reported for `first..end`) they are marked `COPIED` (the caller's
/// error path lifts the whole region).
pub(crate) fn lift(
    map: &Mapping,
    batches: &BatchStates,
    batch: usize,
    (first, end): (usize, usize),
    to: Protection,
) -> Result<()> {
    let states = &batches.states;
    let deferred = |b: usize| states[b].load(Ordering::Acquire) == DEFERRED;
    let lo = (0..first)
        .rev()
        .take_while(|&b| deferred(b))
        .last()
        .unwrap_or(first);
    let hi = (end..states.len())
        .take_while(|&b| deferred(b))
        .last()
        .map_or(end, |b| b + 1);
    let from = lo * batch;
    let lifted = map.protect(from, (hi * batch).min(map.len()) - from, to);
    let (range, state) = match &lifted {
        Err(e) if e.raw_os_error() == Some(libc::ENOMEM) => (first..end, DEFERRED),
        _ => (lo..hi, COPIED),
    };
    for s in &states[range.clone()] {
        s.store(state, Ordering::Release);
    }
    batches.wake(range);
    match lifted {
        Err(e) if e.raw_os_error() != Some(libc::ENOMEM) => Err(lift_failed(
            map,
            first * batch,
            (end * batch).min(map.len()),
            e,
        )),
        _ => Ok(()),
    }
}

/// Once every batch is saved: lifts the whole region to `to` if any batch is
/// still deferred (one range over every mapping: it merges them, needing
/// none more), and wakes their writers.
pub(crate) fn lift_rest(map: &Mapping, batches: &BatchStates, to: Protection) -> Result<()> {
    let states = &batches.states;
    if !states.iter().any(|s| s.load(Ordering::Acquire) == DEFERRED) {
        return Ok(());
    }
    let lifted = map.protect(0, map.len(), to);
    for s in states.iter() {
        let _ = s.compare_exchange(DEFERRED, COPIED, Ordering::AcqRel, Ordering::Acquire);
    }
    batches.wake(0..states.len());
    lifted.map_err(|e| lift_failed(map, 0, map.len(), e))
}
