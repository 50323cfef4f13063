//! What tracking can fail with. The track layer sits below the crate's
//! [`Error`](crate::Error), which takes each of these over as the public variant of
//! the same name (same fields, same message).

use crate::sys::signal::{Blocked, Replaced};
use crate::Tracking;
use std::io;

/// A failure of a tracking backend (arming, collecting, resolving a choice).
#[derive(Debug, thiserror::Error)]
pub(crate) enum TrackError {
    /// As [`Error::Unavailable`](crate::Error::Unavailable).
    #[error("tracking backend {backend:?} is unavailable: {reason}")]
    Unavailable { backend: Tracking, reason: String },

    /// As [`Error::BadTrackingVariable`](crate::Error::BadTrackingVariable).
    #[error("PAGESNAP_TRACKING={value:?} is not one of uffd-wp, soft-dirty, mprotect, compare")]
    BadTrackingVariable { value: String },

    /// As [`Error::Track`](crate::Error::Track).
    #[error("{backend:?} tracking: {step} failed for {len} bytes at {addr:#x}")]
    Track {
        backend: Tracking,
        step: &'static str,
        addr: usize,
        len: usize,
        #[source]
        source: io::Error,
    },

    /// As [`Error::TooManyRegions`](crate::Error::TooManyRegions).
    #[error("too many regions use mprotect tracking at once (at most {max})")]
    TooManyRegions { max: usize },

    /// As [`Error::OutOfMemory`](crate::Error::OutOfMemory).
    #[error("out of memory: {what} ({bytes} bytes) could not be allocated")]
    OutOfMemory { what: &'static str, bytes: usize },

    /// As [`Error::HandlerReplaced`](crate::Error::HandlerReplaced).
    #[error("pagesnap's SIGSEGV handler has been replaced (the handler now installed is at {current:#x})")]
    HandlerReplaced { current: usize },

    /// As [`Error::FaultSignalBlocked`](crate::Error::FaultSignalBlocked).
    #[error("thread {thread} ({name}) blocks SIGSEGV")]
    FaultSignalBlocked { thread: i32, name: String },
}

/// `Result` with [`TrackError`].
pub(crate) type Result<T, E = TrackError> = std::result::Result<T, E>;

impl From<Blocked> for TrackError {
    fn from(b: Blocked) -> Self {
        TrackError::FaultSignalBlocked {
            thread: b.tid,
            name: b.name,
        }
    }
}

impl From<Replaced> for TrackError {
    fn from(r: Replaced) -> Self {
        TrackError::HandlerReplaced { current: r.current }
    }
}

/// `e` and its sources, joined by ": " (as [`crate::error::chain`]).
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
