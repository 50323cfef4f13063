//! Threads that block `SIGSEGV`.
//!
//! A write to a page pagesnap protected raises `SIGSEGV` in the writing
//! thread. If that thread blocks the signal, the kernel does not queue it: it
//! unblocks it and resets the process's action to the default, which kills
//! the whole process (POSIX leaves a fault under a blocked `SIGSEGV`
//! undefined). Programs do block it by accident: the common way to handle
//! signals in one thread is to block *every* signal in `main` before starting
//! threads, and each thread inherits that mask. So whatever is about to
//! protect a region first asks `/proc/self/task/*/status` whether any thread
//! blocks `SIGSEGV`, and refuses with an error naming it; pagesnap's own
//! threads unblock it as they start ([`unblock_in_this_thread`]), since they
//! inherit the mask of whichever thread started them.

use std::io;

/// A thread of this process that blocks `SIGSEGV`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Blocked {
    /// Its thread id.
    pub(crate) tid: i32,
    /// Its name (`comm`).
    pub(crate) name: String,
}

/// `Err` with the first thread of this process found blocking `SIGSEGV`. A
/// thread that exits during the scan is passed over, and so is one that
/// blocks it only for a moment, as glibc does: `pthread_create` blocks every
/// signal in the creating thread around `clone`, and the new thread starts
/// so until it sets its own mask, which under load can take milliseconds
/// (tests running beside each other caught such threads); `raise` blocks the
/// application's signals around sending one. The first two also block the
/// library's internal signals, which an application cannot block, so such a
/// mask is passed over; any other is looked at again a few times. Without
/// `/proc` (a rare sandbox) nothing can be known: `Ok`.
pub(crate) fn no_thread_blocks_sigsegv() -> Result<(), Blocked> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Ok(());
    };
    let found = tasks.flatten().find_map(|task| {
        let tid = task.file_name().to_str()?.parse::<i32>().ok()?;
        let path = task.path().join("status");
        let read = || std::fs::read_to_string(&path).ok();
        let mut status = read().filter(|s| blocks_sigsegv(s))?;
        for _ in 0..CONFIRM {
            std::thread::sleep(CONFIRM_GAP);
            status = read().filter(|s| blocks_sigsegv(s))?;
        }
        Some(Blocked {
            tid,
            name: field(&status, "Name:").unwrap_or_default().to_string(),
        })
    });
    found.map_or(Ok(()), Err)
}

/// How many more times a thread found blocking `SIGSEGV` is looked at, and
/// how far apart, before it counts.
const CONFIRM: usize = 2;
const CONFIRM_GAP: std::time::Duration = std::time::Duration::from_micros(200);

/// The signals glibc (and musl) keep for themselves (32 and 33: thread
/// cancellation and `setxid`), as bits of a `SigBlk` mask: its
/// `sigprocmask` never blocks them for the application.
const INTERNAL: u64 = 0b11 << 31;

/// Whether a task's `status` text shows `SIGSEGV` in its blocked mask
/// (`SigBlk:`, hexadecimal, bit `signal - 1`), the application's doing (not
/// with the C library's internal signals blocked too).
fn blocks_sigsegv(status: &str) -> bool {
    field(status, "SigBlk:")
        .and_then(|hex| u64::from_str_radix(hex, 16).ok())
        .is_some_and(|mask| mask & (1 << (libc::SIGSEGV - 1)) != 0 && mask & INTERNAL == 0)
}

/// The trimmed value of the line starting with `key`.
fn field<'a>(status: &'a str, key: &str) -> Option<&'a str> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .map(str::trim)
}

/// Unblocks `SIGSEGV` in the calling thread: pagesnap's own threads run this
/// first, so that they neither die on a fault nor count as a thread that
/// blocks it.
#[allow(unsafe_code)]
pub(crate) fn unblock_in_this_thread() -> io::Result<()> {
    // SAFETY: an empty set with one signal added, passed by reference; the old
    // mask is not asked for. pthread_sigmask changes only this thread's mask.
    let r = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGSEGV);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut())
    };
    match r {
        0 => Ok(()),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_blocked_mask() {
        let status = "Name:\tworker\nSigPnd:\t0000000000000000\nSigBlk:\t0000000000000400\n";
        assert!(blocks_sigsegv(status));
        assert_eq!(field(status, "Name:"), Some("worker"));
        assert!(!blocks_sigsegv("SigBlk:\tfffffffffffffbff\n"));
        assert!(blocks_sigsegv("SigBlk:\tfffffffe7ffbfeff\n"));
        // glibc's own, inside pthread_create: every signal, its internal ones too.
        assert!(!blocks_sigsegv("SigBlk:\tfffffffffffbfeff\n"));
        assert!(!blocks_sigsegv("Name:\tno mask line\n"));
        assert!(!blocks_sigsegv("SigBlk:\tnot hex\n"));
    }
}
