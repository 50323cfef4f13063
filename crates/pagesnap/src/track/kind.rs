//! [`Tracking`]: which mechanism finds the pages written between snapshots.

use super::error::{Result, TrackError};
use std::fmt;
use std::str::FromStr;

/// A dirty-page tracking backend.
///
/// | backend | needs | cost of a write | cost of a collect |
/// |---|---|---|---|
/// | `UffdWp` | Linux ≥ 6.7: userfaultfd WP_ASYNC + PAGEMAP_SCAN | one in-kernel fault per page (≈ 1.5 µs) | one scan, re-protecting as it goes |
/// | `SoftDirty` | CONFIG_MEM_SOFT_DIRTY | one in-kernel fault per page | read pagemap of the region; `clear_refs` (process-wide) |
/// | `Mprotect` | any Linux | a SIGSEGV round trip per page (≈ 10 µs) | one `mprotect` per dirty run |
/// | `Compare` | nothing | none | hashes every page of the region |
///
/// `Auto` picks the first one this kernel and process support, in that order
/// (or what `PAGESNAP_TRACKING` names); it passes over `Mprotect` while a
/// thread of the process blocks `SIGSEGV`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tracking {
    /// The best backend available: see [`crate::probe`].
    Auto,
    /// userfaultfd write-protect in async mode, collected with `PAGEMAP_SCAN`.
    UffdWp,
    /// The kernel's soft-dirty bits (`/proc/self/clear_refs`, pagemap bit 55).
    SoftDirty,
    /// Read-only mapping and a SIGSEGV handler that records the page.
    ///
    /// Kernel-mode writes into a protected page (e.g. `read(2)` from a file or a
    /// pipe into the region) fail with `EFAULT` under this backend: write such data
    /// into a buffer outside the region first. Writes through `/proc/<pid>/mem`
    /// or `ptrace(PTRACE_POKEDATA)` (a debugger's) pass the protection without
    /// a fault and are never seen. No thread that writes the region
    /// may block `SIGSEGV` (the kernel would kill the process): arming fails with
    /// [`Error::FaultSignalBlocked`](crate::Error::FaultSignalBlocked) while one does.
    Mprotect,
    /// No kernel help: per-page hashes compared at each snapshot.
    Compare,
}

impl Tracking {
    /// The four concrete backends, best first.
    pub const ALL: [Tracking; 4] = [
        Tracking::UffdWp,
        Tracking::SoftDirty,
        Tracking::Mprotect,
        Tracking::Compare,
    ];

    /// The name used by `PAGESNAP_TRACKING` and the CLI: `uffd-wp`, `soft-dirty`,
    /// `mprotect`, `compare` (or `auto`).
    pub fn name(self) -> &'static str {
        match self {
            Tracking::Auto => "auto",
            Tracking::UffdWp => "uffd-wp",
            Tracking::SoftDirty => "soft-dirty",
            Tracking::Mprotect => "mprotect",
            Tracking::Compare => "compare",
        }
    }

    /// What `PAGESNAP_TRACKING` asks `Auto` to use, if set.
    pub(crate) fn from_env() -> Result<Option<Tracking>> {
        match std::env::var("PAGESNAP_TRACKING") {
            Ok(v) if v.is_empty() || v == "auto" => Ok(None),
            Ok(v) => match v.parse::<Tracking>() {
                Ok(t) => Ok(Some(t)),
                Err(_) => Err(TrackError::BadTrackingVariable { value: v }),
            },
            Err(_) => Ok(None),
        }
    }
}

impl fmt::Display for Tracking {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Error parsing a [`Tracking`] name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown tracking backend {0:?}: expected auto, uffd-wp, soft-dirty, mprotect or compare")]
pub struct ParseTrackingError(pub String);

impl FromStr for Tracking {
    type Err = ParseTrackingError;
    fn from_str(s: &str) -> std::result::Result<Tracking, ParseTrackingError> {
        match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "auto" => Ok(Tracking::Auto),
            "uffd-wp" | "uffdwp" | "uffd" => Ok(Tracking::UffdWp),
            "soft-dirty" | "softdirty" => Ok(Tracking::SoftDirty),
            "mprotect" => Ok(Tracking::Mprotect),
            "compare" => Ok(Tracking::Compare),
            _ => Err(ParseTrackingError(s.to_string())),
        }
    }
}
