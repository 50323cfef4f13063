//! Converging runs whose handle the program forgot.
//!
//! `std::mem::forget` is safe, so a `Converging` or `ConvergingSave` may never
//! run its `Drop`: its round thread would go on holding the region's background
//! flag (every later `restore`, `verify` and `reset` waiting for it forever), and
//! the pages it took from the tracker would be missing from every later
//! snapshot. So the region, not the handle, holds the round thread. A handle
//! borrows its region mutably, so whenever one of the region's own methods runs
//! no handle can be alive: a round thread still held then was forgotten. It is
//! stopped and joined (what it copied is dropped: frames, a temporary file),
//! and the region compares every page with its sync point before its next
//! snapshot, restore or reset, as after any call that lost track of pages.

use super::converge_rounds::{Ctl, Rounds, Sink};
use super::Region;
use std::any::Any;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;

/// A round thread, whatever its sink.
pub(super) trait RoundThread: Send {
    /// Stops the rounds and waits for the thread; what it copied is dropped.
    /// Does nothing once the thread was taken (joined by its handle).
    fn abandon(&mut self);

    /// For the handle, to take its typed thread back.
    fn as_any(&mut self) -> &mut dyn Any;

    /// Whether the thread has ended (or was taken).
    #[cfg(test)]
    fn is_finished(&self) -> bool;
}

impl Region {
    /// Stops and joins a round thread whose handle was forgotten (see the
    /// module doc); the next snapshot, restore or reset resyncs.
    pub(super) fn reclaim_forgotten_rounds(&self) {
        let forgotten = self.rounds.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut thread) = forgotten {
            thread.abandon();
            self.lost_rounds.store(true, Ordering::Release);
            self.background.store(false, Ordering::Release);
        }
    }

    /// Whether tracking is in doubt: a failed call lost pages, or a forgotten
    /// converging run took some from the tracker.
    pub(super) fn needs_resync(&self) -> bool {
        self.resync || self.lost_rounds.load(Ordering::Acquire)
    }
}

/// The round thread, as its region holds it.
struct Thread<S: Sink> {
    ctl: Arc<Ctl>,
    handle: Option<JoinHandle<Rounds<S>>>,
    /// The process that started it: a forked child has no such thread to join.
    pid: u32,
}

impl<S: Sink> RoundThread for Thread<S> {
    fn abandon(&mut self) {
        if let Some(handle) = self.handle.take() {
            self.ctl.stop();
            if std::process::id() == self.pid {
                // Its copies go with it; a panic there changes nothing here.
                let _ = handle.join();
            }
        }
    }

    fn as_any(&mut self) -> &mut dyn Any {
        self
    }

    #[cfg(test)]
    fn is_finished(&self) -> bool {
        self.handle.as_ref().is_none_or(|h| h.is_finished())
    }
}

impl<S: Sink> Drop for Thread<S> {
    fn drop(&mut self) {
        self.abandon();
    }
}

/// The region's slot for the round thread (`&mut`: no lock is taken).
fn slot(region: &mut Region) -> &mut Option<Box<dyn RoundThread>> {
    region.rounds.get_mut().unwrap_or_else(|e| e.into_inner())
}

/// Gives the region a run's round thread to hold.
pub(super) fn hold<S: Sink>(region: &mut Region, ctl: Arc<Ctl>, handle: JoinHandle<Rounds<S>>) {
    *slot(region) = Some(Box::new(Thread {
        ctl,
        handle: Some(handle),
        pid: std::process::id(),
    }));
}

/// Takes the round thread back from the region (once), to join it.
pub(super) fn take<S: Sink>(region: &mut Region) -> Option<JoinHandle<Rounds<S>>> {
    let mut held = slot(region).take()?;
    held.as_any()
        .downcast_mut::<Thread<S>>()
        .and_then(|t| t.handle.take())
}

/// Whether the region still holds a round thread.
pub(super) fn holds(region: &mut Region) -> bool {
    slot(region).is_some()
}

/// Whether the region's round thread has ended (none held: true).
#[cfg(test)]
pub(super) fn thread_finished(region: &mut Region) -> bool {
    slot(region).as_ref().is_none_or(|t| t.is_finished())
}
