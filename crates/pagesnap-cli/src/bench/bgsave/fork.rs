//! # Safety
//!
//! The baselines of `bench bgsave`: `none` (writers alone) and `fork` (the
//! seed: fork, and the child copies the array out). The child of `fork(2)`
//! (forked while the other threads wait on a barrier) calls only `mmap`,
//! `memcpy`, `munmap` and `_exit`, as the seed's child does.
#![allow(unsafe_code)]

use super::data::{writers, Data};
use super::sampler::{rss, Sampler};
use super::{ms, Round};
use crate::bench::buffer::Buffer;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Instant;

/// The seed's copy batch (the fork child's).
const BATCH: usize = 2 << 20;

/// One round of `none` or `fork`.
pub fn round(
    fork: bool,
    data: Data,
    len: usize,
    nwriters: usize,
    huge: bool,
) -> Result<Round, Box<dyn std::error::Error>> {
    let page = pagesnap::page_size();
    let go = Arc::new(Barrier::new(nwriters + 1));
    let mut buf = Buffer::new(len, huge, |i, p| data.fill(i * page, p))?;
    let base = buf.as_mut_slice().as_mut_ptr() as usize;
    let ws = writers(base, len, nwriters, &go);
    let child_pid = Arc::new(AtomicI32::new(0));
    let baseline = rss();
    let sampler = Sampler::start(child_pid.clone());
    let t0 = Instant::now();
    let pid = if fork {
        // SAFETY: see the module doc: the child only copies and exits.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        if pid == 0 {
            child_copy(base, len);
        }
        pid
    } else {
        0
    };
    let pause = t0.elapsed();
    child_pid.store(pid, Ordering::Release);
    let reaper = (pid > 0).then(|| {
        std::thread::spawn(move || {
            let mut status = 0;
            // SAFETY: reaping our own child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            t0.elapsed()
        })
    });
    let tw = Instant::now();
    go.wait();
    for w in ws {
        w.join().map_err(|_| "writer panicked")?;
    }
    let writers_t = tw.elapsed();
    let complete = match reaper {
        Some(r) => r.join().map_err(|_| "reaper panicked")?,
        None => t0.elapsed(),
    };
    let peak = sampler.peak();
    drop(buf);
    Ok(Round {
        pause_ms: ms(pause),
        writers_ms: ms(writers_t),
        complete_ms: ms(complete),
        extra_rss_mb: peak.saturating_sub(baseline) as f64 / (1 << 20) as f64,
        verified: None,
        faults: None,
        staged: None,
        rounds: None,
    })
}

/// The fork child, as in the seed: copy the array into a fresh buffer in 2 MiB
/// batches, unmapping each source batch once copied, then exit.
fn child_copy(base: usize, len: usize) -> ! {
    // SAFETY: async-signal-safe calls only; `base..base + len` is the array this
    // process inherited, and the buffer is a fresh mapping of `len` bytes.
    unsafe {
        let dst = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if dst == libc::MAP_FAILED {
            libc::_exit(1);
        }
        let mut off = 0;
        while off < len {
            let n = BATCH.min(len - off);
            libc::memcpy(
                (dst as usize + off) as *mut libc::c_void,
                (base + off) as *const libc::c_void,
                n,
            );
            libc::munmap((base + off) as *mut libc::c_void, n);
            off += n;
        }
        libc::_exit(0)
    }
}
