//! Behaviour in a process of its own: signal chaining, and containers whose
//! seccomp filter forbids userfaultfd. Each test re-runs this test binary as a
//! child with `PAGESNAP_TEST_CHILD` naming the role.

use pagesnap::{Error, Region, Tracking};
use std::os::unix::process::ExitStatusExt;
use std::process::Command;

fn child_role() -> Option<String> {
    std::env::var("PAGESNAP_TEST_CHILD").ok()
}

fn spawn_child(test: &str, role: &str) -> std::process::Output {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env("PAGESNAP_TEST_CHILD", role)
        .env_remove("PAGESNAP_TRACKING")
        .output()
        .unwrap()
}

/// A fault outside every region, with the mprotect handler installed, still kills
/// the process with SIGSEGV (invariant 5).
#[test]
fn foreign_fault_still_crashes() {
    if child_role().as_deref() == Some("segv") {
        let mut r = Region::builder(4096)
            .tracking(Tracking::Mprotect)
            .build()
            .unwrap();
        r.as_mut_slice()[0] = 1; // a fault the handler resolves
        assert_eq!(r.snapshot().unwrap().to_vec()[0], 1);
        eprintln!("child: dereferencing a bad pointer");
        let bad = std::hint::black_box(16usize) as *const u8;
        #[allow(unsafe_code)]
        // SAFETY: not safe at all: this child exists to crash here.
        let v = unsafe { bad.read_volatile() };
        eprintln!("child: survived a bad read ({v})");
        std::process::exit(0);
    }
    let out = spawn_child("foreign_fault_still_crashes", "segv");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("dereferencing a bad pointer"),
        "child did not get there: {stderr}"
    );
    assert_eq!(
        out.status.signal(),
        Some(11),
        "child should die by SIGSEGV: {:?} {stderr}",
        out.status
    );
}

/// In a "container" whose seccomp filter makes userfaultfd(2) and
/// /dev/userfaultfd's ioctl fail with EPERM: Auto picks the next backend, probe
/// says why, and asking for UffdWp explicitly is an error naming the cause.
#[test]
fn seccomp_forbids_userfaultfd() {
    if child_role().as_deref() == Some("seccomp") {
        forbid_userfaultfd();
        let caps = pagesnap::probe();
        let uffd = caps.backend(Tracking::UffdWp).unwrap();
        eprintln!("child: probe says uffd-wp: {}", uffd.reason);
        assert!(!uffd.available);
        assert!(
            uffd.reason.contains("Operation not permitted"),
            "{}",
            uffd.reason
        );
        assert!(caps.userfaultfd.is_err());
        let r = Region::builder(4096).build().unwrap();
        assert_ne!(r.tracking(), Tracking::UffdWp);
        assert_eq!(r.tracking(), caps.auto);
        let err = Region::builder(4096)
            .tracking(Tracking::UffdWp)
            .build()
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::Unavailable {
                    backend: Tracking::UffdWp,
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("userfaultfd(2): Operation not permitted"),
            "{err}"
        );
        eprintln!("child: ok, auto = {}", r.tracking());
        std::process::exit(0);
    }
    if !pagesnap::probe()
        .backend(Tracking::UffdWp)
        .unwrap()
        .available
    {
        eprintln!("skipping: this machine has no uffd-wp to forbid");
        return;
    }
    let out = spawn_child("seccomp_forbids_userfaultfd", "seccomp");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed: {stderr}");
    assert!(stderr.contains("child: ok"), "{stderr}");
}

fn forbid_userfaultfd() {
    use seccompiler::{
        BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
        SeccompRule,
    };
    let eperm = 1;
    let ioc_new = SeccompRule::new(vec![SeccompCondition::new(
        1,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::Eq,
        0xAA00, // USERFAULTFD_IOC_NEW
    )
    .unwrap()])
    .unwrap();
    let rules = vec![
        (libc_sys::USERFAULTFD, vec![]),
        (libc_sys::IOCTL, vec![ioc_new]),
    ]
    .into_iter()
    .collect();
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(eperm),
        std::env::consts::ARCH.try_into().unwrap(),
    )
    .unwrap();
    let prog: BpfProgram = filter.try_into().unwrap();
    seccompiler::apply_filter(&prog).unwrap();
}

/// Syscall numbers (x86-64 and aarch64).
mod libc_sys {
    #[cfg(target_arch = "x86_64")]
    pub const USERFAULTFD: i64 = 323;
    #[cfg(target_arch = "x86_64")]
    pub const IOCTL: i64 = 16;
    #[cfg(target_arch = "aarch64")]
    pub const USERFAULTFD: i64 = 282;
    #[cfg(target_arch = "aarch64")]
    pub const IOCTL: i64 = 29;
}
