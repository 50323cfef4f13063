//! The handler's decisions, driven directly (no signal raised): which faults are
//! pagesnap's, how a writer waits for a background batch, and what an entry
//! inherited from a parent process does.

use super::*;
use crate::sys::mmap::{Mapping, Protection};
use crate::sys::page_size;
use background::SLEEP_TABLE;
use std::sync::Arc;
use std::time::Duration;

fn mapping(pages: usize) -> Mapping {
    Mapping::anonymous(pages * page_size(), Protection::ReadWrite, false).unwrap()
}

fn batches(n: usize, state: u32) -> Arc<BatchStates> {
    Arc::new(BatchStates::new(n, state))
}

/// Whether the page at `addr` is mapped writable, from /proc/self/maps (a write
/// would fault into the real handler if not).
fn writable(addr: usize) -> bool {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    maps.lines().any(|l| {
        let (range, rest) = l.split_once(' ').unwrap();
        let (a, b) = range.split_once('-').unwrap();
        let (a, b) = (
            usize::from_str_radix(a, 16).unwrap(),
            usize::from_str_radix(b, 16).unwrap(),
        );
        a <= addr && addr < b && rest.starts_with("rw")
    })
}

#[test]
fn a_copied_batch_never_waits() {
    let b = batches(1, COPIED);
    assert!(!b.wait_until_copied(0));
    assert_eq!(b.requests.load(Ordering::Relaxed), 0);
}

#[test]
fn a_pending_batch_is_requested_once_and_waited_for_until_copied() {
    let b = batches(1, PENDING);
    let writer = {
        let b = b.clone();
        std::thread::spawn(move || b.wait_until_copied(0))
    };
    while b.states[0].load(Ordering::Acquire) != REQUESTED {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(b.requests.load(Ordering::Acquire), 1);
    // The copier claims it: the writer keeps waiting through COPYING.
    b.states[0].store(COPYING, Ordering::Release);
    super::super::futex::wake_all(&b.states[0]);
    std::thread::sleep(Duration::from_millis(20));
    assert!(
        !writer.is_finished(),
        "a writer went on before its batch was saved"
    );
    b.states[0].store(COPIED, Ordering::Release);
    super::super::futex::wake_all(&b.states[0]);
    assert!(writer.join().unwrap(), "the writer reports that it waited");
    assert_eq!(b.requests.load(Ordering::Relaxed), 1);
}

/// `n` writer threads waiting on batches `0, 7, 14, …` of `b`, all asleep
/// when this returns.
fn sleepers_on(b: &Arc<BatchStates>, n: usize) -> Vec<std::thread::JoinHandle<bool>> {
    let writers: Vec<_> = (0..n)
        .map(|i| {
            let b = b.clone();
            std::thread::spawn(move || b.wait_until_copied(i * 7))
        })
        .collect();
    while b.sleepers.load(Ordering::SeqCst) != n {
        std::thread::sleep(Duration::from_millis(1));
    }
    writers
}

/// A wake over a range reaches the writers asleep on batches inside it, and
/// only once their batch is saved do they go on; with more sleepers than the
/// table lists, wakes cover whole ranges and still reach every one.
#[test]
fn a_wake_over_a_range_reaches_every_sleeper_in_it() {
    for n in [3, SLEEP_TABLE + 6] {
        let b = batches(7 * n + 10, PENDING);
        let writers = sleepers_on(&b, n);
        // The copier claims them all, then saves the first half.
        for s in b.states.iter() {
            crate::sys::staging::claim(s);
        }
        let half = 7 * (n / 2);
        for s in &b.states[..half] {
            s.store(COPIED, Ordering::Release);
        }
        b.wake(0..half);
        std::thread::sleep(Duration::from_millis(50));
        for (i, w) in writers.iter().enumerate() {
            assert_eq!(
                w.is_finished(),
                i * 7 < half,
                "{n} sleepers: writer {i} on batch {} (saved up to {half})",
                i * 7
            );
        }
        for s in &b.states[half..] {
            s.store(COPIED, Ordering::Release);
        }
        b.wake(half..b.states.len());
        for w in writers {
            assert!(w.join().unwrap(), "{n} sleepers: a writer did not wait");
        }
        assert_eq!(b.sleepers.load(Ordering::SeqCst), 0);
        assert_eq!(b.unlisted.load(Ordering::SeqCst), 0);
        assert!(b.sleeping.iter().all(|e| e.load(Ordering::SeqCst) == 0));
    }
}

#[test]
fn a_fault_outside_every_region_is_not_ours() {
    let elsewhere = Box::new(0u64);
    assert!(!on_fault(&*elsewhere as *const u64 as usize));
}

#[test]
fn a_fault_in_a_saved_background_batch_is_retried() {
    let map = mapping(4);
    let (addr, len) = (map.as_ptr() as usize, map.len());
    let shared = batches(2, COPIED);
    let slot = register_background(addr, len, len / 2, shared).unwrap();
    assert!(on_fault(addr + len - 1));
    drop(slot);
    assert!(
        !on_fault(addr + len - 1),
        "a removed entry still claims faults"
    );
}

#[test]
fn a_tracked_page_is_recorded_and_made_writable() {
    let map = mapping(8);
    let page = page_size();
    map.protect(0, map.len(), Protection::Read).unwrap();
    let bits: Arc<[AtomicU64]> = (0..1).map(|_| AtomicU64::new(0)).collect();
    let _slot = register(map.as_ptr() as usize, map.len(), bits.clone()).unwrap();
    let at = map.as_ptr() as usize + 3 * page + 5;
    assert!(!writable(at));
    assert!(on_fault(at));
    assert_eq!(bits[0].load(Ordering::Relaxed), 1 << 3);
    assert!(writable(at));
    assert!(!writable(at + page), "only the faulting page is lifted");
}

#[test]
fn an_entry_inherited_from_a_parent_lifts_protection_without_waiting_or_recording() {
    let map = mapping(8);
    let (addr, len, page) = (map.as_ptr() as usize, map.len(), page_size());
    map.protect(0, len, Protection::Read).unwrap();
    let shared = batches(1, PENDING);
    let bg = register_background(addr, len, len, shared.clone()).unwrap();
    let bits: Arc<[AtomicU64]> = (0..1).map(|_| AtomicU64::new(0)).collect();
    let slot = register(addr, len, bits.clone()).unwrap();
    // As a forked child sees them: registered by another process.
    BACKGROUND[bg.index].pid.store(1, Ordering::Relaxed);
    SLOTS[slot.index].pid.store(1, Ordering::Relaxed);
    assert!(on_fault(addr + 2 * page));
    assert!(writable(addr + 2 * page));
    assert_eq!(
        shared.states[0].load(Ordering::Relaxed),
        PENDING,
        "no copier was asked"
    );
    assert_eq!(shared.requests.load(Ordering::Relaxed), 0);
    assert_eq!(
        bits[0].load(Ordering::Relaxed),
        0,
        "nothing recorded for the parent"
    );
}

#[test]
fn check_passes_while_the_handler_is_installed() {
    let map = mapping(1);
    let bits: Arc<[AtomicU64]> = (0..1).map(|_| AtomicU64::new(0)).collect();
    let _slot = register(map.as_ptr() as usize, map.len(), bits).unwrap();
    assert_eq!(check(), Ok(()));
}
