//! A converging snapshot's rounds copy on idle CPU time only (where the
//! process may raise them again); `hurry` raises them, and `finish` does not
//! wait long on a round thread starved by busy CPUs.

mod common;

use pagesnap::Region;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Whether this process may return a `SCHED_IDLE` thread to normal:
/// `CAP_SYS_NICE` (bit 23 of CapEff) or `RLIMIT_NICE` ≥ 20.
fn may_raise() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let caps = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|h| u64::from_str_radix(h.trim(), 16).unwrap())
        .unwrap();
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a live rlimit the kernel writes.
    let nice_ok =
        unsafe { libc::getrlimit(libc::RLIMIT_NICE, &mut lim) } == 0 && lim.rlim_cur >= 20;
    caps & (1 << 23) != 0 || nice_ok
}

/// The policy of this process's thread named `name`, if one is alive.
fn policy_of(name: &str) -> Option<i32> {
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim_end() == name {
            let tid: i32 = task.file_name().to_str()?.parse().ok()?;
            // SAFETY: sched_getscheduler only reads the policy of `tid`.
            let p = unsafe { libc::sched_getscheduler(tid) };
            if p >= 0 {
                return Some(p);
            }
        }
    }
    None
}

/// Threads that keep every CPU busy at normal priority until dropped.
struct Spinners {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Spinners {
    fn start(n: usize) -> Spinners {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..n)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        Spinners { stop, threads }
    }
}

impl Spinners {
    /// Twice as many spinners as CPUs.
    fn busy() -> Spinners {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        Spinners::start(2 * cpus)
    }
}

/// A 128 MiB region filled from `seed`: a first round copies all of it, which
/// on CPUs kept busy keeps an idle round thread at it for seconds.
fn first_round_region(seed: u64) -> Region {
    let mut region = Region::builder(128 << 20).build().unwrap();
    common::fill(region.as_mut_slice(), seed);
    region
}

/// After `what` raised the round thread: it runs at normal priority, or it
/// is gone and the rounds have stopped (`converged`).
fn assert_raised(converged: bool, what: &str) {
    match policy_of("pagesnap-rounds") {
        Some(p) => assert_eq!(p, libc::SCHED_OTHER, "policy after {what}"),
        None => assert!(converged, "round thread gone, rounds not done"),
    }
}

impl Drop for Spinners {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[test]
fn rounds_run_idle_and_finish_is_prompt_on_a_busy_machine() {
    // One round thread at a time in this binary: they are found by name.
    let _serial = common::child::serial();
    let mut region = first_round_region(11);
    let spinners = Spinners::busy();
    let conv = region.converging_snapshot().unwrap();
    let want = if may_raise() {
        libc::SCHED_IDLE
    } else {
        eprintln!("no CAP_SYS_NICE and RLIMIT_NICE < 20: rounds run at normal priority");
        libc::SCHED_OTHER
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    let seen = loop {
        match policy_of("pagesnap-rounds") {
            Some(p) if p == want || Instant::now() > deadline => break Some(p),
            None if conv.is_converged() => break None,
            _ => std::thread::sleep(Duration::from_millis(1)),
        }
    };
    match seen {
        Some(p) => assert_eq!(p, want, "round thread policy"),
        // At normal priority the rounds may be done already.
        None => assert_eq!(want, libc::SCHED_OTHER, "idle rounds ended on busy CPUs"),
    }
    if seen == Some(libc::SCHED_IDLE) {
        // Still copying its first round on busy CPUs: hurry raises it.
        conv.hurry();
        assert_raised(conv.is_converged(), "hurry");
    }
    let progress = conv.progress();
    let t = Instant::now();
    let snap = conv.finish().unwrap();
    let took = t.elapsed();
    drop(spinners);
    eprintln!(
        "finish on busy CPUs after {} rounds ({} pages copied): {took:?}",
        progress.rounds, progress.copied
    );
    assert!(snap.to_vec() == region.as_slice(), "finish != region");
    // Raised, the round thread stops at its next chunk and finish copies the
    // rest at a normal thread's share of the CPUs.
    assert!(took < Duration::from_secs(5), "finish took {took:?}");
}

/// Waiting for the rounds raises them: a program that waits wants them done,
/// however busy the machine (other processes included) keeps its CPUs.
#[test]
fn waiting_for_the_rounds_raises_them() {
    let _serial = common::child::serial();
    if !may_raise() {
        eprintln!("skipped: no CAP_SYS_NICE and RLIMIT_NICE < 20 (rounds run at normal priority)");
        return;
    }
    let mut region = first_round_region(12);
    let spinners = Spinners::busy();
    let conv = region.converging_snapshot().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while policy_of("pagesnap-rounds") != Some(libc::SCHED_IDLE) {
        assert!(
            Instant::now() < deadline,
            "the round thread never went idle"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let done = conv.wait_converged_timeout(Duration::ZERO);
    assert_raised(done || conv.is_converged(), "a wait");
    drop(spinners);
    assert!(conv.finish().unwrap().to_vec() == region.as_slice());
}

/// After a converging save's `finish`, the thread completing the file runs on
/// idle CPU time too (writers run again and keep their cores), and waiting for
/// the file raises it: `wait` returns promptly however busy the CPUs are.
#[test]
fn a_converging_saves_file_is_completed_idle_until_waited_for() {
    let _serial = common::child::serial();
    if !may_raise() {
        eprintln!(
            "skipped: no CAP_SYS_NICE and RLIMIT_NICE < 20 (the thread runs at normal priority)"
        );
        return;
    }
    let dir = std::env::temp_dir().join(format!("pagesnap-prio-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("idle.snap");
    let mut region = first_round_region(13);
    let (base, len, page) = (
        region.as_ptr() as usize,
        region.len(),
        pagesnap::page_size(),
    );
    let conv = region.converging_save(&path).unwrap();
    conv.wait_converged();
    // Every page written again: the remainder is the whole region.
    (0..len / page).for_each(|p| common::write_u64(base, p * page, p as u64));
    let spinners = Spinners::busy();
    let saving = conv.finish().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let seen = loop {
        match policy_of("pagesnap-save") {
            Some(p) if p == libc::SCHED_IDLE || Instant::now() > deadline => break Some(p),
            None if saving.is_finished() => break None,
            _ => std::thread::sleep(Duration::from_millis(1)),
        }
    };
    assert_eq!(
        seen,
        Some(libc::SCHED_IDLE),
        "the completing thread's policy"
    );
    let t = Instant::now();
    let report = saving.wait().unwrap();
    let took = t.elapsed();
    drop(spinners);
    eprintln!("waited {took:?} for the file on busy CPUs");
    assert!(took < Duration::from_secs(10), "wait took {took:?}");
    let back = pagesnap::Snapshot::load(&path, &pagesnap::PageStore::new()).unwrap();
    assert_eq!(back.digest(), report.digest);
    assert!(back.to_vec() == region.as_slice(), "file != region");
    std::fs::remove_dir_all(&dir).unwrap();
}
