//! Memory of a `bench bgsave` round: this process's RSS plus what only a fork
//! child holds, sampled every 2 ms; the peak.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Resident bytes of this process, from `/proc/self/statm` (O(1): reading
/// `smaps_rollup` of our own 1 GiB would walk its page tables under the mmap
/// lock and stall the very mprotect and fault paths being measured).
pub fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|t| t.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * pagesnap::page_size() as u64)
}

/// Bytes only `pid` holds (private clean + dirty, from its `smaps_rollup`; walks
/// the child's page tables, not ours); 0 once it is gone.
fn uss(pid: i32) -> u64 {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) else {
        return 0;
    };
    text.lines()
        .filter_map(|l| {
            l.strip_prefix("Private_Clean:")
                .or_else(|| l.strip_prefix("Private_Dirty:"))
        })
        .filter_map(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .sum::<u64>()
        * 1024
}

/// Samples the memory of this process (RSS: shared pages counted once) plus
/// what only `child` holds (when non-zero), every 2 ms until stopped; the peak.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl Sampler {
    pub fn start(child: Arc<AtomicI32>) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = 0;
            loop {
                let c = child.load(Ordering::Acquire);
                let now = rss() + if c > 0 { uss(c) } else { 0 };
                peak = peak.max(now);
                if s.load(Ordering::Acquire) {
                    return peak;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        Sampler { stop, thread }
    }

    pub fn peak(self) -> u64 {
        self.stop.store(true, Ordering::Release);
        self.thread.join().unwrap_or(0)
    }
}
