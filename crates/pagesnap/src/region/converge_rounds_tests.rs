//! Unit tests of the converging rounds' engine (converge_rounds.rs).

use super::*;

/// A sink with a bug: its second copy panics. Its first writes page 20
/// of the region, as a writer would during a round, so the second round
/// collects that page from the tracker before the panic.
struct Panics {
    calls: usize,
}

impl Sink for Panics {
    fn copy(
        &mut self,
        map: &Mapping,
        pages: &[usize],
        _go_on: &mut dyn FnMut(usize) -> bool,
    ) -> Result<usize> {
        self.calls += 1;
        if self.calls > 1 {
            panic!("a bug in a sink");
        }
        map.copy_in(20 * page_size(), &[5u8; 8]);
        Ok(pages.len())
    }

    fn keep_changed(&mut self, _map: &Mapping, _dirty: &mut Vec<usize>) -> Result<()> {
        Ok(())
    }
}

/// A round thread that panics fails the converging snapshot with an
/// error, not a panic in the caller, and the pages it had taken from the
/// tracker are not lost: the next snapshot still equals the region.
#[test]
fn a_panicking_round_thread_fails_cleanly_and_loses_no_write() {
    // (Compare has no rounds: its `finish` is an ordinary snapshot.)
    for t in [Tracking::UffdWp, Tracking::Mprotect, Tracking::SoftDirty] {
        let Ok(mut region) = Region::builder(1 << 20).tracking(t).build() else {
            continue;
        };
        region.as_mut_slice()[..4096 * 8].fill(7);
        let mut run = RoundRun::start(&mut region, Panics { calls: 0 }).unwrap();
        // Round 0 copies the 8 pages, round 1 collects page 20 and panics.
        while !super::forgotten::thread_finished(run.region()) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let err = run.remainder().err().expect("the rounds failed");
        assert!(err.to_string().contains("panicked"), "{t}: {err}");
        drop(run);
        let snap = region.snapshot().unwrap();
        assert!(snap.to_vec() == region.as_slice(), "{t}: a write was lost");
    }
}

fn own_policy() -> libc::c_int {
    crate::sys::sched::policy(0).unwrap()
}

#[test]
fn stop_raises_an_idle_round_thread() {
    if !super::super::round_priority::may_go_idle() {
        eprintln!("skipped: neither CAP_SYS_NICE nor RLIMIT_NICE >= 20 here");
        return;
    }
    let ctl = Arc::new(Ctl::new());
    let (entered, stopped) = (std::sync::Barrier::new(2), std::sync::Barrier::new(2));
    std::thread::scope(|s| {
        let t = s.spawn(|| {
            let _idle = ctl.priority.enter_idle();
            let idle = own_policy();
            entered.wait();
            stopped.wait();
            (idle, own_policy())
        });
        entered.wait();
        ctl.stop();
        stopped.wait();
        let (idle, after) = t.join().unwrap();
        assert_eq!(idle, libc::SCHED_IDLE);
        assert_eq!(after, libc::SCHED_OTHER);
    });
}

#[test]
fn a_run_raised_or_stopped_before_it_starts_never_goes_idle() {
    let early: [fn(&Ctl); 2] = [|c| c.priority.raise(), |c| c.stop()];
    for before in early {
        let ctl = Ctl::new();
        before(&ctl);
        std::thread::scope(|s| {
            s.spawn(|| {
                let _idle = ctl.priority.enter_idle();
                assert_eq!(own_policy(), libc::SCHED_OTHER);
                assert!(!ctl.priority.is_idle());
            });
        });
    }
}

#[test]
fn a_round_thread_that_panics_is_forgotten_as_it_unwinds() {
    let ctl = Ctl::new();
    std::thread::scope(|s| {
        let r = s
            .spawn(|| {
                let _idle = ctl.priority.enter_idle();
                assert_eq!(
                    ctl.priority.is_idle(),
                    super::super::round_priority::may_go_idle()
                );
                panic!("a bug in a round (expected by this test)");
            })
            .join();
        assert!(r.is_err());
    });
    // A raise now must not name the dead thread's id (it may be reused).
    assert!(!ctl.priority.is_idle());
}
