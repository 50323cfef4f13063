//! [`probe`]: what this kernel and process offer, found once and cached.

use super::kernel_bugs::{auto_choice, known_bugs, KernelVersion, KnownBug};
use crate::sys::mmap::{Mapping, Protection};
use crate::sys::pagemap::Pagemap;
use crate::sys::{page_size, userfaultfd};
use crate::track::soft_dirty;
use crate::Tracking;
use std::sync::OnceLock;

/// What this machine offers pagesnap, from [`probe`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Capabilities {
    /// `uname -r`.
    pub kernel: String,
    /// The upstream version the kernel is built from (see [`KernelVersion::from_kernel`]),
    /// or what `PAGESNAP_KERNEL_VERSION` pretends; `None` if unreadable.
    pub kernel_version: Option<KernelVersion>,
    /// Known bugs of that version in the mechanisms pagesnap uses ([`known_bugs`]).
    pub known_bugs: Vec<KnownBug>,
    /// Base page size in bytes.
    pub page_size: usize,
    /// Whether a userfaultfd could be opened, and how (`Err` holds why not).
    pub userfaultfd: Result<UffdAccess, String>,
    /// `UFFD_FEATURE_WP_ASYNC`.
    pub wp_async: bool,
    /// `UFFD_FEATURE_WP_UNPOPULATED`.
    pub wp_unpopulated: bool,
    /// The `PAGEMAP_SCAN` ioctl (Linux ≥ 6.7).
    pub pagemap_scan: bool,
    /// Soft-dirty bits work (write-and-check probe).
    pub soft_dirty: bool,
    /// The `PROCMAP_QUERY` ioctl (Linux ≥ 6.11), with which synchronous
    /// snapshots, restores and verifies also refuse pages the program
    /// protected or unmapped ([`Error::ForeignProtection`](crate::Error::ForeignProtection),
    /// [`Error::Unmapped`](crate::Error::Unmapped)); background and converging
    /// snapshots look either way.
    pub procmap_query: bool,
    /// Transparent huge pages mode (`always`, `madvise`, `never`), if readable.
    pub thp: Option<String>,
    /// Kernel samepage merging: `Some(true)` running, `Some(false)` present but off.
    pub ksm: Option<bool>,
    /// Each concrete backend, best first, with whether it can be used and why not.
    pub backends: Vec<BackendStatus>,
    /// What `Tracking::Auto` picks (before `PAGESNAP_TRACKING` is applied): the
    /// best available backend that no known bug of this kernel rules out.
    pub auto: Tracking,
}

/// How a userfaultfd was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum UffdAccess {
    /// `userfaultfd(2)` with `UFFD_USER_MODE_ONLY`: works unprivileged; faults in
    /// kernel mode are not delivered to handlers (async WP still tracks them).
    UserModeOnly,
    /// Through `/dev/userfaultfd`.
    Device,
}

/// One backend's availability.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct BackendStatus {
    /// The backend.
    pub tracking: Tracking,
    /// Whether it can be used here.
    pub available: bool,
    /// Why not (empty when available).
    pub reason: String,
}

impl Capabilities {
    /// The status of one concrete backend.
    pub fn backend(&self, t: Tracking) -> Option<&BackendStatus> {
        self.backends.iter().find(|b| b.tracking == t)
    }
}

/// Probes the kernel once (cached for the life of the process) and reports what
/// pagesnap can use.
///
/// ```
/// let caps = pagesnap::probe();
/// println!("kernel {}: Auto uses {}", caps.kernel, caps.auto);
/// assert!(caps.backend(pagesnap::Tracking::Compare).unwrap().available);
/// ```
pub fn probe() -> &'static Capabilities {
    static CAPS: OnceLock<Capabilities> = OnceLock::new();
    CAPS.get_or_init(run)
}

fn run() -> Capabilities {
    let mut uffd_features = 0u64;
    let userfaultfd = match userfaultfd::open_with_api(0) {
        Ok((_, source, features)) => {
            uffd_features = features;
            Ok(match source {
                userfaultfd::Source::SyscallUserMode => UffdAccess::UserModeOnly,
                userfaultfd::Source::Device => UffdAccess::Device,
            })
        }
        Err(e) => Err(e.to_string()),
    };
    let wp_async = uffd_features & u64::from(userfaultfd::FEATURE_WP_ASYNC) != 0;
    let wp_unpopulated = uffd_features & u64::from(userfaultfd::FEATURE_WP_UNPOPULATED) != 0;
    let pagemap_scan = has_pagemap_scan();
    let soft_dirty_result = soft_dirty::works();

    let uffd_reason = match (&userfaultfd, wp_async, wp_unpopulated, pagemap_scan) {
        (Err(e), ..) => e.clone(),
        (Ok(_), false, _, _) => "userfaultfd lacks WP_ASYNC (Linux ≥ 6.7)".into(),
        (Ok(_), _, false, _) => "userfaultfd lacks WP_UNPOPULATED (Linux ≥ 6.7)".into(),
        (Ok(_), _, _, false) => "no PAGEMAP_SCAN ioctl on /proc/self/pagemap (Linux ≥ 6.7)".into(),
        _ => match try_uffd_wp() {
            Ok(()) => String::new(),
            Err(e) => e,
        },
    };
    let backends = vec![
        status(Tracking::UffdWp, uffd_reason),
        status(
            Tracking::SoftDirty,
            soft_dirty_result
                .as_ref()
                .err()
                .cloned()
                .unwrap_or_default(),
        ),
        status(Tracking::Mprotect, String::new()),
        status(Tracking::Compare, String::new()),
    ];
    let kernel = read_trimmed("/proc/sys/kernel/osrelease").unwrap_or_else(|| "unknown".into());
    let kernel_version = pretended_version().or_else(|| {
        KernelVersion::from_kernel(
            &kernel,
            &read_trimmed("/proc/sys/kernel/version").unwrap_or_default(),
            read_trimmed("/proc/version_signature").as_deref(),
        )
    });
    let known_bugs = kernel_version.map(known_bugs).unwrap_or_default();
    let available: Vec<Tracking> = backends
        .iter()
        .filter(|b| b.available)
        .map(|b| b.tracking)
        .collect();
    let auto = auto_choice(&available, &known_bugs);
    Capabilities {
        kernel,
        kernel_version,
        known_bugs,
        page_size: page_size(),
        userfaultfd,
        wp_async,
        wp_unpopulated,
        pagemap_scan,
        procmap_query: crate::sys::maps::kernel_answers_queries(),
        soft_dirty: soft_dirty_result.is_ok(),
        thp: read_thp(),
        ksm: std::fs::read_to_string("/sys/kernel/mm/ksm/run")
            .ok()
            .map(|s| s.trim() == "1"),
        backends,
        auto,
    }
}

fn status(tracking: Tracking, reason: String) -> BackendStatus {
    BackendStatus {
        tracking,
        available: reason.is_empty(),
        reason,
    }
}

fn has_pagemap_scan() -> bool {
    let Ok(map) = Mapping::anonymous(page_size(), Protection::ReadWrite, false) else {
        return false;
    };
    let Ok(mut pagemap) = Pagemap::open() else {
        return false;
    };
    pagemap.has_scan(map.as_ptr() as usize).unwrap_or(false)
}

/// Arms the real backend on one page, writes, and checks the write is reported.
fn try_uffd_wp() -> Result<(), String> {
    let mut map = Mapping::anonymous(page_size(), Protection::ReadWrite, false)
        .map_err(|e| format!("mmap of a probe page: {e}"))?;
    match crate::track::uffd_wp::check(&mut map) {
        Ok(true) => Ok(()),
        Ok(false) => {
            Err("a write to a write-protected page was not reported by PAGEMAP_SCAN".into())
        }
        Err(e) => Err(super::error::chain(&e)),
    }
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// `PAGESNAP_KERNEL_VERSION=6.8.5` makes the probe judge known bugs as if the
/// kernel were that version (to try Auto's decision on any machine); the
/// mechanisms themselves are still probed for real.
fn pretended_version() -> Option<KernelVersion> {
    KernelVersion::parse(&std::env::var("PAGESNAP_KERNEL_VERSION").ok()?)
}

fn read_thp() -> Option<String> {
    let s = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").ok()?;
    let start = s.find('[')? + 1;
    let end = s[start..].find(']')? + start;
    Some(s[start..end].to_string())
}
