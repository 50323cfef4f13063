//! Kernel releases with known bugs in the mechanisms pagesnap uses, and what
//! `Tracking::Auto` does about them. Everything here is a pure function of a
//! parsed [`KernelVersion`], so the decision is unit-tested for any kernel;
//! `PAGESNAP_KERNEL_VERSION` makes [`crate::probe`] pretend a version.
//!
//! ```text
//!  uname -v "… Debian 6.1.192-3 …"  ─┐
//!  /proc/version_signature (Ubuntu) ─┼─► KernelVersion ─► known_bugs() ─► Auto
//!  uname -r "6.18.44-…"             ─┘     (or PAGESNAP_KERNEL_VERSION)
//! ```
//! Distributions backport fixes without changing the base version, and
//! `uname -r` on Debian and Ubuntu names only the branch ("6.1.0-57-amd64"): the
//! stable release they are built from is read where they publish it, and a
//! kernel that carries a fix older than its base version says is still reported.

use crate::Tracking;
use std::fmt;

/// A kernel version: `major.minor.patch` of the upstream release a kernel is
/// built from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KernelVersion {
    /// `6` in 6.8.10.
    pub major: u32,
    /// `8` in 6.8.10.
    pub minor: u32,
    /// `10` in 6.8.10 (0 when the string has none).
    pub patch: u32,
}

impl KernelVersion {
    /// A version from its parts.
    pub const fn new(major: u32, minor: u32, patch: u32) -> KernelVersion {
        KernelVersion {
            major,
            minor,
            patch,
        }
    }

    /// The leading `major.minor[.patch]` of a release string such as
    /// `6.8.0-45-generic`, `6.12.117+deb12-amd64` or `6.1.192-3`; `None` if it does
    /// not start with two numbers.
    ///
    /// ```
    /// use pagesnap::KernelVersion;
    /// assert_eq!(KernelVersion::parse("6.12.117+deb12-amd64"), Some(KernelVersion::new(6, 12, 117)));
    /// assert_eq!(KernelVersion::parse("5.14.0-427.el9.x86_64"), Some(KernelVersion::new(5, 14, 0)));
    /// assert_eq!(KernelVersion::parse("6.8"), Some(KernelVersion::new(6, 8, 0)));
    /// assert_eq!(KernelVersion::parse("linux"), None);
    /// ```
    pub fn parse(s: &str) -> Option<KernelVersion> {
        let mut parts = s.trim().splitn(3, '.');
        let number = |p: Option<&str>| -> Option<u32> {
            let p = p?;
            let end = p.find(|c: char| !c.is_ascii_digit()).unwrap_or(p.len());
            p[..end].parse().ok()
        };
        let major = number(parts.next())?;
        let minor = number(parts.next())?;
        let patch = number(parts.next()).unwrap_or(0);
        Some(KernelVersion::new(major, minor, patch))
    }

    /// The upstream version of a running kernel from what it reports: Debian's
    /// `uname -v` ("#1 SMP … Debian 6.1.192-3 (…)"), Ubuntu's
    /// `/proc/version_signature` ("Ubuntu 6.8.0-45.45-generic 6.8.12"), else
    /// `uname -r`.
    pub fn from_kernel(release: &str, version: &str, signature: Option<&str>) -> Option<Self> {
        if let Some(v) = signature.and_then(|s| s.split_whitespace().last()) {
            if let Some(v) = KernelVersion::parse(v) {
                return Some(v);
            }
        }
        if let Some(at) = version.find("Debian ") {
            if let Some(v) = KernelVersion::parse(&version[at + "Debian ".len()..]) {
                return Some(v);
            }
        }
        KernelVersion::parse(release)
    }
}

impl fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// A known kernel bug that touches a pagesnap backend, from [`known_bugs`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct KnownBug {
    /// A short name: the CVE or the upstream fix.
    pub name: &'static str,
    /// What goes wrong, and on which releases.
    pub summary: &'static str,
    /// The backend `Tracking::Auto` passes over on such a kernel, if any (an
    /// explicit choice of it still works); `None` when pagesnap's use of the
    /// mechanism stays correct there.
    pub auto_avoids: Option<Tracking>,
    /// Why pagesnap avoids the backend, or why it is unaffected.
    pub consequence: &'static str,
}

const V6_7: KernelVersion = KernelVersion::new(6, 7, 0);

/// The known bugs of kernel `v` that concern pagesnap.
///
/// The ranges:
/// - CVE-2024-36943: a `PAGEMAP_SCAN` that write-protects as it goes could drop
///   the young/dirty bits a CPU set on the entry meanwhile (lost writeback of a
///   written page). The ioctl came in 6.7; the fix is in 6.8.10 and 6.9 (6.7.y
///   was already at its end), so 6.7.0 – 6.8.9 are affected.
/// - Upstream 07b4377bdbe7 ("fix PAGEMAP_SCAN written state for unpopulated
///   ptes") and 40de8160ca7f ("… for PMD holes"), merged for 7.2 in July 2026:
///   before them, a scan whose masks are not exactly `PAGE_IS_WRITTEN` reports a
///   written page whose entry was zapped (`MADV_DONTNEED`, reclaim of a huge
///   page) as clean. Every kernel with the ioctl before 7.2 is affected unless
///   its vendor backported the fixes. pagesnap asks only for the written state,
///   with category and return masks exactly `PAGE_IS_WRITTEN` (the kernel's fast
///   path, which these commits did not need to fix), so it stays correct there;
///   its scan of populated pages in ranges not yet registered does not ask for
///   the written state at all. Its scan of chunks it has just registered asks
///   for pages present or written (`Pagemap::scan_populated_armed`), and may
///   meet the bug: a page zapped there reads as zeros, which is what such a
///   chunk held at the last sync point, so reporting it clean loses nothing.
///
/// ```
/// use pagesnap::{known_bugs, KernelVersion, Tracking};
/// let bugs = known_bugs(KernelVersion::new(6, 8, 5));
/// assert!(bugs.iter().any(|b| b.auto_avoids == Some(Tracking::UffdWp)));
/// assert!(known_bugs(KernelVersion::new(6, 1, 192)).is_empty());
/// ```
pub fn known_bugs(v: KernelVersion) -> Vec<KnownBug> {
    let mut bugs = Vec::new();
    if v >= V6_7 && v < KernelVersion::new(6, 8, 10) {
        bugs.push(KnownBug {
            name: "CVE-2024-36943",
            summary: "PAGEMAP_SCAN with write-protection can lose dirty bits set during \
                      the scan (Linux 6.7 – 6.8.9; fixed in 6.8.10)",
            auto_avoids: Some(Tracking::UffdWp),
            consequence: "Auto uses the next backend; choose uffd-wp explicitly only on \
                          a kernel that carries the fix",
        });
    }
    if v >= V6_7 && v < KernelVersion::new(7, 2, 0) {
        bugs.push(KnownBug {
            name: "PAGEMAP_SCAN written state (upstream 07b4377bdbe7, 40de8160ca7f)",
            summary: "a scan with masks other than exactly PAGE_IS_WRITTEN reports a \
                      zapped written page or PMD hole as clean (Linux 6.7 – 7.1, unless \
                      backported)",
            auto_avoids: None,
            consequence: "pagesnap's scans use exactly the PAGE_IS_WRITTEN masks, which \
                          stay correct: uffd-wp is unaffected",
        });
    }
    bugs
}

/// The backend `Tracking::Auto` picks: the first of `available` (best first)
/// that no bug of `bugs` tells it to avoid, else the first available at all,
/// else `Compare`.
pub(crate) fn auto_choice(available: &[Tracking], bugs: &[KnownBug]) -> Tracking {
    let avoided = |t: &Tracking| bugs.iter().any(|b| b.auto_avoids == Some(*t));
    available
        .iter()
        .find(|t| !avoided(t))
        .or(available.first())
        .copied()
        .unwrap_or(Tracking::Compare)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> KernelVersion {
        KernelVersion::parse(s).unwrap()
    }

    const ALL: [Tracking; 4] = Tracking::ALL;

    #[test]
    fn versions_from_what_kernels_report() {
        let debian = "#1 SMP PREEMPT_DYNAMIC Debian 6.1.192-3 (2026-11-02)";
        assert_eq!(
            KernelVersion::from_kernel("6.1.0-57-amd64", debian, None),
            Some(v("6.1.192"))
        );
        let ubuntu = "Ubuntu 6.8.0-45.45-generic 6.8.12";
        assert_eq!(
            KernelVersion::from_kernel("6.8.0-45-generic", "#45-Ubuntu SMP", Some(ubuntu)),
            Some(v("6.8.12"))
        );
        assert_eq!(
            KernelVersion::from_kernel("6.18.44-fc-v1147", "#1 SMP", None),
            Some(v("6.18.44"))
        );
        assert_eq!(KernelVersion::from_kernel("x", "y", None), None);
        assert!(v("6.8.9") < v("6.8.10") && v("6.10") > v("6.9.12"));
    }

    #[test]
    fn auto_avoids_uffd_wp_only_where_scans_lose_dirty_bits() {
        for (kernel, auto) in [
            ("6.1.192", Tracking::UffdWp),
            ("6.6.60", Tracking::UffdWp),
            ("6.7.0", Tracking::SoftDirty),
            ("6.7.12", Tracking::SoftDirty),
            ("6.8.0", Tracking::SoftDirty),
            ("6.8.9", Tracking::SoftDirty),
            ("6.8.10", Tracking::UffdWp),
            ("6.8.12", Tracking::UffdWp),
            ("6.12.117", Tracking::UffdWp),
            ("7.2.0", Tracking::UffdWp),
        ] {
            assert_eq!(auto_choice(&ALL, &known_bugs(v(kernel))), auto, "{kernel}");
        }
        // Without soft-dirty the next one down; nothing avoided is ever dropped
        // when it is all there is.
        let no_soft_dirty = [Tracking::UffdWp, Tracking::Mprotect, Tracking::Compare];
        assert_eq!(
            auto_choice(&no_soft_dirty, &known_bugs(v("6.8.2"))),
            Tracking::Mprotect
        );
        assert_eq!(
            auto_choice(&[Tracking::UffdWp], &known_bugs(v("6.8.2"))),
            Tracking::UffdWp
        );
        assert_eq!(auto_choice(&[], &[]), Tracking::Compare);
    }

    #[test]
    fn the_written_state_fixes_are_reported_but_change_nothing() {
        let names = |k: &str| -> Vec<&str> { known_bugs(v(k)).iter().map(|b| b.name).collect() };
        assert_eq!(names("6.6.99").len(), 0);
        assert_eq!(names("6.8.5").len(), 2);
        assert_eq!(names("6.12.117").len(), 1);
        assert!(names("6.12.117")[0].contains("07b4377bdbe7"));
        assert_eq!(names("7.2.0").len(), 0);
        assert!(known_bugs(v("7.1.3"))
            .iter()
            .all(|b| b.auto_avoids.is_none()));
    }
}
