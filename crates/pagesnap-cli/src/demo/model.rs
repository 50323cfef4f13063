//! The checked system: processes with heap-allocated buffers and message queues,
//! all inside one pagesnap `Heap`, and the protocols they run.
//!
//! Transitions never allocate or free: every buffer and queue is sized when the
//! heap is built, queues shift their slots and zero the vacated one. So the heap's
//! bytes are a function of the logical state alone (no allocator history, no stale
//! bytes past a `len`), and a digest (pagesnap) or a byte hash (naive) counts the
//! same distinct states.

use pagesnap::arena::{HashMap, Vec};
use pagesnap::{in_arena, Arena};
use std::hash::{BuildHasherDefault, Hasher};

/// Message-queue slots per process.
pub const QUEUE: usize = 4;
/// Critical-section visits are counted modulo this (keeps the state space finite).
pub const VISITS_MOD: u8 = 2;
/// The token message.
const TOKEN: u32 = 1;

/// FNV-1a: a fixed, seedless hasher, so both heaps of a `--compare-naive` run lay
/// out their maps identically.
#[derive(Default)]
pub struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for &b in bytes {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        self.0 = h;
    }
}

in_arena! {
    /// One process: a program counter, a private working buffer and an inbox.
    pub struct Proc<'a> {
        pub pc: u8,
        /// Critical-section entries, modulo `VISITS_MOD`.
        pub visits: u8,
        /// Private memory (filled at start, a page of it written per visit).
        pub scratch: Vec<'a, u8>,
        /// Inbox: `QUEUE` slots, the first `inbox_len` in use, the rest zero.
        pub inbox: Vec<'a, u32>,
        pub inbox_len: u32,
    }

    /// The whole system state: the root of the heap.
    pub struct World<'a> {
        pub procs: Vec<'a, Proc<'a>>,
        /// Shared lock word (broken-lock).
        pub lock: u8,
        /// Per-process critical-section entry counts, modulo `VISITS_MOD`, in a
        /// hash map (updated in place: keys are fixed at start).
        pub entries: HashMap<'a, u32, u32, BuildHasherDefault<Fnv>>,
    }
}

impl<'a> World<'a> {
    /// `n` processes, each with `scratch` bytes of private memory.
    pub fn new(arena: Arena<'a>, n: usize, scratch: usize, protocol: Protocol) -> Self {
        let mut procs = Vec::with_capacity_in(n, arena);
        let mut entries = HashMap::with_capacity_and_hasher_in(n, Default::default(), arena);
        for i in 0..n {
            let mut buf = Vec::with_capacity_in(scratch, arena);
            // A recognisable, non-zero pattern: real processes have real data.
            let mut x = 0x9e37_79b9u32.wrapping_mul(i as u32 + 1) | 1;
            buf.extend((0..scratch).map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            }));
            let mut inbox = Vec::with_capacity_in(QUEUE, arena);
            inbox.resize(QUEUE, 0);
            procs.push(Proc {
                pc: 0,
                visits: 0,
                scratch: buf,
                inbox,
                inbox_len: 0,
            });
            entries.insert(i as u32, 0);
        }
        let mut w = World {
            procs,
            lock: 0,
            entries,
        };
        if protocol == Protocol::TokenRing {
            w.send(0, TOKEN);
        }
        w
    }

    fn send(&mut self, to: usize, msg: u32) {
        let p = &mut self.procs[to];
        let at = p.inbox_len as usize;
        assert!(at < QUEUE, "inbox of P{to} overflows");
        p.inbox[at] = msg;
        p.inbox_len += 1;
    }

    fn recv(&mut self, pid: usize) -> Option<u32> {
        let p = &mut self.procs[pid];
        let len = p.inbox_len as usize;
        if len == 0 {
            return None;
        }
        let msg = p.inbox[0];
        p.inbox.copy_within(1..len, 0);
        p.inbox[len - 1] = 0;
        p.inbox_len -= 1;
        Some(msg)
    }

    fn enter(&mut self, pid: usize) {
        let p = &mut self.procs[pid];
        p.visits = (p.visits + 1) % VISITS_MOD;
        // Touch the page of private memory this visit works on.
        let page = 4096 * (usize::from(p.visits) + 1);
        let at = page % p.scratch.len().max(1);
        if let Some(b) = p.scratch.get_mut(at) {
            *b = 0x80 | p.visits;
        }
        if let Some(e) = self.entries.get_mut(&(pid as u32)) {
            *e = (*e + 1) % u32::from(VISITS_MOD);
        }
    }

    /// Processes in their critical section.
    pub fn in_critical(&self) -> usize {
        self.procs.iter().filter(|p| p.pc == CRIT).count()
    }
}

const IDLE: u8 = 0;
const WANT: u8 = 1;
/// broken-lock only: saw the lock free, about to take it.
const SAW_FREE: u8 = 2;
const CRIT: u8 = 3;

/// The protocols `pagesnap demo` can check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// Correct: a token circulates through the processes' message queues; only its
    /// holder enters the critical section.
    TokenRing,
    /// Seeded bug: test-and-set split into a read and a later write, so two
    /// processes can both see the lock free.
    BrokenLock,
}

impl Protocol {
    /// Its command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::TokenRing => "token-ring",
            Protocol::BrokenLock => "broken-lock",
        }
    }

    /// One line for a newcomer.
    pub fn describe(self) -> &'static str {
        match self {
            Protocol::TokenRing => {
                "a token travels P0 → P1 → … through the processes' message queues; \
                 only the process holding it may enter its critical section"
            }
            Protocol::BrokenLock => {
                "a lock word guards the critical section, but 'test' and 'set' are two \
                 separate steps (a seeded bug)"
            }
        }
    }

    /// The one transition process `pid` can take, applied, or `None` when it is
    /// blocked. Processes are deterministic: the search branches on which one moves.
    pub fn step(self, w: &mut World<'_>, pid: usize) -> Option<&'static str> {
        let n = w.procs.len();
        let pc = w.procs[pid].pc;
        match self {
            Protocol::TokenRing => match pc {
                IDLE if w.procs[pid].inbox_len > 0 => {
                    w.recv(pid);
                    w.send((pid + 1) % n, TOKEN);
                    Some("idle, passes the token on")
                }
                IDLE => {
                    w.procs[pid].pc = WANT;
                    Some("wants the critical section")
                }
                WANT => {
                    w.recv(pid)?;
                    w.procs[pid].pc = CRIT;
                    w.enter(pid);
                    Some("receives the token, enters the critical section")
                }
                _ => {
                    w.procs[pid].pc = IDLE;
                    w.send((pid + 1) % n, TOKEN);
                    Some("leaves the critical section, sends the token on")
                }
            },
            Protocol::BrokenLock => match pc {
                IDLE => {
                    w.procs[pid].pc = WANT;
                    Some("wants the critical section")
                }
                WANT if w.lock == 0 => {
                    w.procs[pid].pc = SAW_FREE;
                    Some("reads lock = 0 (free)")
                }
                WANT => None,
                SAW_FREE => {
                    w.lock = 1;
                    w.procs[pid].pc = CRIT;
                    w.enter(pid);
                    Some("sets lock = 1, enters the critical section")
                }
                _ => {
                    w.lock = 0;
                    w.procs[pid].pc = IDLE;
                    Some("sets lock = 0, leaves the critical section")
                }
            },
        }
    }
}

/// The property: at most one process in its critical section.
pub fn violation(w: &World<'_>) -> Option<String> {
    let k = w.in_critical();
    (k > 1).then(|| {
        let who: std::vec::Vec<String> = (0..w.procs.len())
            .filter(|&i| w.procs[i].pc == CRIT)
            .map(|i| format!("P{i}"))
            .collect();
        format!(
            "mutual exclusion violated: {} are in the critical section together",
            who.join(" and ")
        )
    })
}
