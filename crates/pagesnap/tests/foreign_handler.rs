//! Other SIGSEGV handlers in the same process. A handler installed *after*
//! pagesnap's that does not pass faults on (it lifts protection itself, as JITs
//! and garbage collectors do) must make pagesnap fail with
//! `Error::HandlerReplaced` — never return a snapshot missing writes, nor a
//! background snapshot holding writes made after its instant. A handler
//! installed *before* pagesnap's still gets the faults pagesnap did not cause.
//! Handlers are process-wide, so each case runs in a forked child.
#![allow(unsafe_code)]

mod common;
#[path = "common/reexec.rs"]
mod reexec;

use common::child::{self, Outcome};
use common::{backends, fill};
use pagesnap::{Error, Region, Tracking};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(30);

/// Faults the application's handler served.
static APP_FAULTS: AtomicUsize = AtomicUsize::new(0);
/// The page the plain (non-SA_SIGINFO) application handler unprotects.
static APP_PAGE: AtomicUsize = AtomicUsize::new(0);

fn page() -> usize {
    pagesnap::page_size()
}

/// A JIT-style handler: makes the faulting page writable and returns, passing
/// nothing on.
extern "C" fn lift_and_return(_sig: i32, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let addr = unsafe { (*info).si_addr() } as usize & !(page() - 1);
    // SAFETY: mprotect is async-signal-safe; the page is the faulting one.
    unsafe { libc::mprotect(addr as *mut _, page(), libc::PROT_READ | libc::PROT_WRITE) };
    APP_FAULTS.fetch_add(1, Ordering::Relaxed);
}

/// A handler without SA_SIGINFO: it knows its one page.
extern "C" fn plain_lift(_sig: i32) {
    let addr = APP_PAGE.load(Ordering::Relaxed);
    // SAFETY: as above.
    unsafe { libc::mprotect(addr as *mut _, page(), libc::PROT_READ | libc::PROT_WRITE) };
    APP_FAULTS.fetch_add(1, Ordering::Relaxed);
}

/// Installs `f` for SIGSEGV (with SA_SIGINFO if `siginfo`); returns the action
/// it replaced.
fn install(f: usize, siginfo: bool) -> libc::sigaction {
    // SAFETY: zeroed sigaction = empty mask, no flags; f has the signature the
    // flags announce; `old` receives the previous action.
    unsafe {
        let mut new: libc::sigaction = std::mem::zeroed();
        new.sa_sigaction = f;
        new.sa_flags = if siginfo { libc::SA_SIGINFO } else { 0 };
        let mut old: libc::sigaction = std::mem::zeroed();
        assert_eq!(libc::sigaction(libc::SIGSEGV, &new, &mut old), 0);
        old
    }
}

fn reinstall(action: &libc::sigaction) {
    // SAFETY: `action` was returned by sigaction, so it is a valid action.
    unsafe {
        assert_eq!(
            libc::sigaction(libc::SIGSEGV, action, std::ptr::null_mut()),
            0
        )
    };
}

fn replaced<T>(r: &pagesnap::Result<T>) -> bool {
    matches!(r, Err(Error::HandlerReplaced { .. }))
}

/// mprotect tracking under a replacing handler: snapshot, restore and background
/// snapshot fail; with pagesnap's handler back, the next snapshot is exact again
/// (writes made meanwhile included) and restores are exact.
#[test]
fn mprotect_tracking_refuses_to_snapshot_past_a_replacing_handler() {
    let _serial = child::serial();
    let outcome = child::run(DEADLINE, || {
        let mut r = Region::builder(16 * page())
            .tracking(Tracking::Mprotect)
            .build()
            .unwrap();
        fill(r.as_mut_slice(), 1);
        let s0 = r.snapshot().unwrap();
        let ours = install(lift_and_return as *const () as usize, true);
        for p in 0..8 {
            r.as_mut_slice()[p * page() + 1] ^= 0xff;
        }
        if APP_FAULTS.load(Ordering::Relaxed) != 8 {
            return 2; // the scenario: the replacing handler took every fault
        }
        if !replaced(&r.snapshot()) {
            return 10;
        }
        if !replaced(&r.restore(&s0)) {
            return 20;
        }
        if !replaced(&r.background_snapshot()) {
            return 30;
        }
        if !replaced(&Region::builder(page()).tracking(Tracking::Mprotect).build()) {
            return 35;
        }
        reinstall(&ours);
        let s1 = r.snapshot().unwrap();
        if s1.to_vec() != r.as_slice() {
            return 40;
        }
        r.as_mut_slice()[12 * page()] = 9;
        let s2 = r.snapshot().unwrap();
        if s2.to_vec() != r.as_slice() {
            return 50;
        }
        r.restore(&s0).unwrap();
        if s0.to_vec() != r.as_slice() {
            return 60;
        }
        r.restore(&s1).unwrap();
        if s1.to_vec() != r.as_slice() {
            return 70;
        }
        0
    });
    assert_eq!(outcome, Outcome::Exited(0));
}

/// A background snapshot (every backend) whose writers meet a replacing handler
/// after the instant: their writes go in before the copy, so `wait` must fail;
/// so must a background save (leaving no file), and a background snapshot started
/// while the handler is replaced. With pagesnap's handler back, tracking is exact.
#[test]
fn background_snapshot_past_a_replacing_handler_is_an_error() {
    let _serial = child::serial();
    let dir = std::env::temp_dir().join(format!("pagesnap-foreign-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for t in backends() {
        let path = dir.join(format!("{t}.snap"));
        let outcome = child::run(DEADLINE, || {
            let mut r = Region::builder(32 << 20).tracking(t).build().unwrap();
            fill(r.as_mut_slice(), 2);
            let instant = r.as_slice().to_vec();
            let mut code = 0;
            for save in [false, true] {
                let bg = (!save).then(|| r.background_snapshot().unwrap());
                let bs = save.then(|| r.background_save(&path).unwrap());
                let ours = install(lift_and_return as *const () as usize, true);
                let base = r.as_ptr() as usize;
                for at in (0..r.len()).step_by(page()) {
                    common::write_u64(base, at, 0xdead);
                }
                let raced = APP_FAULTS.swap(0, Ordering::Relaxed) > 0;
                if !raced {
                    child::say("the copier finished before the handler was replaced\n");
                }
                let ok = match (bg, bs) {
                    (Some(bg), _) => match bg.wait() {
                        Err(Error::HandlerReplaced { .. }) => true,
                        // The copier finished before the handler was replaced:
                        // then the snapshot must be the instant.
                        Ok(s) => !raced && s.to_vec() == instant,
                        Err(_) => false,
                    },
                    (_, Some(bs)) => match bs.wait() {
                        Err(Error::HandlerReplaced { .. }) => !path.exists(),
                        Ok(_) => !raced,
                        Err(_) => false,
                    },
                    _ => unreachable!(),
                };
                if !ok && code == 0 {
                    code = if save { 20 } else { 10 };
                }
                if !replaced(&r.background_snapshot()) && code == 0 {
                    code = 30;
                }
                reinstall(&ours);
                if r.snapshot()
                    .map(|s| s.to_vec() != r.as_slice())
                    .unwrap_or(true)
                    && code == 0
                {
                    code = 40;
                }
                fill(r.as_mut_slice(), 3);
                r.snapshot().unwrap();
            }
            code
        });
        assert_eq!(outcome, Outcome::Exited(0), "{t}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// An application handler installed before pagesnap's (with or without
/// SA_SIGINFO) still serves its own faults, beside mprotect tracking and a
/// background snapshot, and pagesnap's snapshots stay exact.
#[test]
fn an_earlier_application_handler_still_gets_its_faults() {
    let _serial = child::serial();
    for siginfo in [true, false] {
        let outcome = child::run(DEADLINE, || {
            // The application's own protected page, and its handler, first.
            let mut own = vec![0u8; 3 * page()];
            let own_page = (own.as_mut_ptr() as usize).next_multiple_of(page());
            APP_PAGE.store(own_page, Ordering::Relaxed);
            if siginfo {
                install(lift_and_return as *const () as usize, true);
            } else {
                install(plain_lift as *const () as usize, false);
            }
            let mut r = Region::builder(8 << 20)
                .tracking(Tracking::Mprotect)
                .build()
                .unwrap();
            let protect = || {
                // SAFETY: own_page is a whole page inside `own`, which lives on.
                unsafe { libc::mprotect(own_page as *mut _, page(), libc::PROT_READ) };
            };
            protect();
            r.as_mut_slice()[5 * page()] = 1;
            common::write_u64(own_page, 8, 42);
            if APP_FAULTS.load(Ordering::Relaxed) != 1 {
                return 10;
            }
            if r.snapshot()
                .map(|s| s.to_vec() != r.as_slice())
                .unwrap_or(true)
            {
                return 20;
            }
            let bg = r.background_snapshot().unwrap();
            protect();
            r.as_mut_slice()[7 * page()] = 2;
            common::write_u64(own_page, 16, 43);
            if APP_FAULTS.load(Ordering::Relaxed) != 2 {
                return 30;
            }
            match bg.wait() {
                Ok(s) if s.to_vec()[7 * page()] == 0 => {}
                _ => return 40,
            }
            if r.snapshot()
                .map(|s| s.to_vec() != r.as_slice())
                .unwrap_or(true)
            {
                return 50;
            }
            0
        });
        assert_eq!(outcome, Outcome::Exited(0), "SA_SIGINFO: {siginfo}");
    }
}

/// Signals the application's handler got that were sent, not faults.
static SENT_SEEN: AtomicUsize = AtomicUsize::new(0);

extern "C" fn count_sent(_sig: i32, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    if unsafe { (*info).si_code } == libc::SI_QUEUE {
        SENT_SEEN.fetch_add(1, Ordering::Relaxed);
    }
}

/// A SIGSEGV that was sent (sigqueue, kill, raise), not raised by a fault,
/// goes on to the application's handler, even when the word where a fault
/// has its address names a page of a region (the sender chose it): pagesnap
/// must neither take it for a write to that page nor swallow it. Under
/// mprotect tracking and during a background snapshot.
#[test]
fn a_sent_sigsegv_goes_on_to_the_application() {
    let _serial = child::serial();
    let outcome = child::run(DEADLINE, || {
        install(count_sent as *const () as usize, true);
        let r = Region::builder(8 << 20)
            .tracking(Tracking::Mprotect)
            .build()
            .unwrap();
        let send = |addr: usize| {
            // SAFETY: a zeroed siginfo with the fields rt_tgsigqueueinfo needs
            // for a signal to this very thread (si_code < 0: sent by a user);
            // si_addr shares its place with the sender's pid and uid, as a
            // sender may set it.
            unsafe {
                let mut info: libc::siginfo_t = std::mem::zeroed();
                info.si_signo = libc::SIGSEGV;
                info.si_code = libc::SI_QUEUE;
                let fields = &mut info as *mut libc::siginfo_t as *mut u8;
                // si_addr's offset in the x86-64 layout: after signo, errno, code and padding.
                (fields.add(16) as *mut usize).write(addr);
                libc::syscall(
                    libc::SYS_rt_tgsigqueueinfo,
                    libc::getpid(),
                    libc::gettid(),
                    libc::SIGSEGV,
                    &info,
                )
            }
        };
        let inside = r.as_ptr() as usize + 3 * page();
        if send(inside) != 0 || SENT_SEEN.load(Ordering::Relaxed) != 1 {
            return 10;
        }
        let bg = r.background_snapshot().unwrap();
        if send(inside) != 0 || SENT_SEEN.load(Ordering::Relaxed) != 2 {
            return 20;
        }
        if bg.wait().is_err() {
            return 30;
        }
        0
    });
    assert_eq!(outcome, Outcome::Exited(0));
}

/// With no handler of the program's (a C program: Rust's runtime installs
/// one of its own), a SIGSEGV sent to the process kills it as it would
/// without pagesnap, and one the program ignores stays ignored. In a fresh
/// process each, so that pagesnap's handler is installed over that action.
#[test]
fn a_sent_sigsegv_takes_the_default_or_ignored_action() {
    const VAR: &str = "PAGESNAP_TEST_SENT_SIGSEGV";
    if let Ok(action) = std::env::var(VAR) {
        let action = if action == "ignore" {
            libc::SIG_IGN
        } else {
            libc::SIG_DFL
        };
        // SAFETY: this process exists for this test alone.
        unsafe { libc::signal(libc::SIGSEGV, action) };
        let _region = Region::builder(1 << 20)
            .tracking(Tracking::Mprotect)
            .build()
            .unwrap();
        // SAFETY: a signal to this process.
        unsafe { libc::kill(libc::getpid(), libc::SIGSEGV) };
        std::thread::sleep(Duration::from_millis(100));
        std::process::exit(0);
    }
    use std::os::unix::process::ExitStatusExt;
    let exe = std::env::current_exe().unwrap();
    for (action, killed) in [("default", true), ("ignore", false)] {
        let mut cmd = std::process::Command::new(&exe);
        cmd.args([
            "--exact",
            "a_sent_sigsegv_takes_the_default_or_ignored_action",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(VAR, action);
        let out = reexec::run(cmd, DEADLINE);
        let signal = out.status.signal();
        assert_eq!(
            signal == Some(libc::SIGSEGV),
            killed,
            "{action}: {:?}\n{}",
            out.status,
            out.output
        );
        assert!(killed || out.status.success(), "{action}: {}", out.output);
    }
}

/// Calls of the crash reporter below.
static REPORTS: AtomicUsize = AtomicUsize::new(0);

/// A crash reporter installed with SA_RESETHAND: it reports and returns, and
/// the kernel, having reset the action on its call, kills the process when
/// the bad write runs again. A second call means the reset was lost.
extern "C" fn report_once(_sig: i32, _info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    if REPORTS.fetch_add(1, Ordering::Relaxed) > 0 {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(77) };
    }
}

/// A program's crash reporter (SA_RESETHAND, installed before pagesnap's
/// handler) runs once on a real bad write, and the process then dies of
/// SIGSEGV as it would without pagesnap. Measured before: under mprotect
/// tracking, and after a background snapshot under every backend, the
/// reporter ran millions of times and the process never died.
#[test]
fn a_crash_reporter_with_sa_resethand_runs_once_then_the_process_dies() {
    let _serial = child::serial();
    for t in backends() {
        for background in [false, true] {
            let outcome = child::run(DEADLINE, || {
                // No core file from the expected death.
                let none = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                // SAFETY: a valid rlimit; zeroed sigaction = empty mask; the
                // handler has the SA_SIGINFO signature.
                unsafe {
                    libc::setrlimit(libc::RLIMIT_CORE, &none);
                    let mut sa: libc::sigaction = std::mem::zeroed();
                    sa.sa_sigaction = report_once as *const () as usize;
                    sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESETHAND as libc::c_int;
                    assert_eq!(libc::sigaction(libc::SIGSEGV, &sa, std::ptr::null_mut()), 0);
                }
                let mut r = Region::builder(1 << 20).tracking(t).build().unwrap();
                r.as_mut_slice()[0] = 1;
                r.snapshot().unwrap();
                r.as_mut_slice()[page()] = 1;
                if background {
                    r.background_snapshot().unwrap().wait().unwrap();
                }
                // SAFETY: none: the program's bug, at an address never mapped.
                unsafe { std::ptr::write_volatile(std::ptr::dangling_mut::<u8>(), 1) };
                10
            });
            assert_eq!(
                outcome,
                Outcome::Signaled(libc::SIGSEGV),
                "{t}, background {background} (77: the reporter ran twice)"
            );
        }
    }
}

/// A crash reporter with a watchdog: it arms `alarm()` so that a report
/// that hangs still ends the process, then hangs.
extern "C" fn report_with_watchdog(
    _sig: i32,
    _info: *mut libc::siginfo_t,
    _ctx: *mut libc::c_void,
) {
    // SAFETY: alarm and pause are async-signal-safe.
    unsafe {
        libc::alarm(1);
        loop {
            libc::pause();
        }
    }
}

/// The earlier handler runs with the mask the kernel would have given it
/// (the interrupted code's and its own), not with pagesnap's, which blocks
/// nearly every signal: a reporter's watchdog `SIGALRM` must still end the
/// process. Measured before: the process hung.
#[test]
fn an_earlier_handler_runs_with_its_own_mask() {
    let _serial = child::serial();
    for t in backends() {
        let outcome = child::run(DEADLINE, || {
            // SAFETY: zeroed sigaction = empty mask; the handler has the
            // SA_SIGINFO signature.
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = report_with_watchdog as *const () as usize;
                sa.sa_flags = libc::SA_SIGINFO | libc::SA_NODEFER;
                assert_eq!(libc::sigaction(libc::SIGSEGV, &sa, std::ptr::null_mut()), 0);
            }
            let mut r = Region::builder(1 << 20).tracking(t).build().unwrap();
            r.as_mut_slice()[0] = 1;
            r.background_snapshot().unwrap().wait().unwrap();
            // SAFETY: none: the program's bug, at an address never mapped.
            unsafe { std::ptr::write_volatile(std::ptr::dangling_mut::<u8>(), 1) };
            10
        });
        assert_eq!(outcome, Outcome::Signaled(libc::SIGALRM), "{t}");
    }
}
