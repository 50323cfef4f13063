//! Starting pagesnap's own threads without putting the process at risk.
//!
//! Rust's runtime maps each new thread's signal stack from inside that thread,
//! before any code of ours runs there, and aborts the whole process if the
//! mapping fails. Under an address-space limit (`RLIMIT_AS`) a thread's stack
//! can fit while its signal stack then does not (a test sweeping the headroom in
//! 4 KiB steps aborted a snapshot's worker and a background copier). So a thread
//! starts only after a probe mapping of its stack, a margin for the signal stack
//! and room for its first allocations succeeded (those abort too if malloc
//! fails: a C program's converging round did, in a table update); otherwise the
//! caller gets the error and does the work on its own thread or fails with a
//! typed error. The probe is private and writable, so
//! under strict overcommit (`vm.overcommit_memory = 2`) it is charged as the two
//! stacks are. A thread of the application that takes the last memory between
//! the probe and the start can still win that race; nothing in the library can
//! close it short of starting threads without Rust's runtime.

use super::mmap::{Mapping, Protection};
use std::io;
use std::thread::{Builder, JoinHandle, Scope, ScopedJoinHandle};

/// Stack of pagesnap's threads (the runtime's default).
const STACK: usize = 2 << 20;
/// What the runtime maps beyond the stack before the thread's code runs: the
/// signal stack (`SIGSTKSZ`, or the kernel's `AT_MINSIGSTKSZ` where larger:
/// tens of KiB with AVX-512 state) and its guard page, with room to spare.
const SIGNAL_STACK_MARGIN: usize = 256 << 10;

/// Mappings a new thread takes: its stack and guard page, its signal stack
/// and guard page, an arena of malloc's; with some to spare.
const THREAD_MAPPINGS: usize = 8;

/// A builder for a thread of pagesnap's, if its stacks fit now with room for
/// its first allocations (malloc's room, as `room.rs` asks for), and the
/// process may still hold the mappings they take.
fn builder(name: &str) -> io::Result<Builder> {
    let len = STACK + SIGNAL_STACK_MARGIN + super::room::MALLOC_ROOM;
    // Mapped and unmapped at once: only whether it fits matters.
    Mapping::anonymous(len, Protection::ReadWrite, false)?;
    room_for_mappings(THREAD_MAPPINGS)?;
    Ok(Builder::new().name(name.into()).stack_size(STACK))
}

/// Whether the process may hold `n` more mappings (`vm.max_map_count`): at
/// the limit a thread's stack may still be mapped and its signal stack then
/// not, which aborts the process as under `RLIMIT_AS` (measured: a
/// snapshot's worker, started beside a program at the limit). Probed by
/// cutting a fresh mapping into `n` (a few µs), undone at once.
fn room_for_mappings(n: usize) -> io::Result<()> {
    let page = super::page_size();
    let probe = Mapping::anonymous(n * page, Protection::ReadWrite, false)?;
    // Every other page read-only: `n` mappings.
    for i in (1..n).step_by(2) {
        probe.protect(i * page, page, Protection::Read)?;
    }
    Ok(())
}

/// Starts a thread named `name` running `f`, if its stacks fit.
pub(crate) fn spawn<F, T>(name: &str, f: F) -> io::Result<JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    builder(name)?.spawn(unblocking(f))
}

/// `f`, run after unblocking `SIGSEGV` in its thread: a pagesnap thread
/// inherits the mask of the thread that started it, and must neither die on
/// a fault nor count as a thread that blocks it (`signal/blocked.rs`).
fn unblocking<T>(f: impl FnOnce() -> T) -> impl FnOnce() -> T {
    move || {
        // Fails only for an invalid argument; the thread still runs.
        let _ = super::signal::unblock_in_this_thread();
        f()
    }
}

/// [`spawn`] in `scope`.
pub(crate) fn spawn_scoped<'scope, F, T>(
    scope: &'scope Scope<'scope, '_>,
    name: &str,
    f: F,
) -> io::Result<ScopedJoinHandle<'scope, T>>
where
    F: FnOnce() -> T + Send + 'scope,
    T: Send + 'scope,
{
    builder(name)?.spawn_scoped(scope, unblocking(f))
}
