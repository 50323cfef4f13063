//! Depth-first search over the model's states, with two ways to keep states:
//! pagesnap snapshots (digest = identity, restore = backtrack) or full copies
//! (hash of all bytes = identity, memcpy back = backtrack).

use super::model::{violation, Protocol, World};
use indicatif::ProgressBar;
use pagesnap::{FullCopy, Heap, Region, Tracking};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

pub type WorldHeap = Heap<World<'static>>;

/// How states are saved, identified and restored.
pub enum Keeper {
    /// pagesnap: `snapshot()`, `digest()`, `restore()`.
    Pagesnap,
    /// Full memcpy of the region per saved state; a 128-bit hash of all its bytes
    /// identifies a state. Spare copies are reused (no fresh page faults).
    Naive { spare: Vec<FullCopy> },
}

enum Saved {
    Snap(pagesnap::Snapshot),
    Copy(FullCopy),
}

/// The configuration of one search.
#[derive(Clone, Copy)]
pub struct Config {
    pub protocol: Protocol,
    pub procs: usize,
    pub heap_bytes: usize,
    pub scratch_bytes: usize,
    pub huge_pages: bool,
    /// Paths longer than this are cut (see `run`).
    pub max_depth: usize,
}

/// What a search found and what it cost.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// States reached by a transition, counting revisits, plus the initial state.
    pub states: u64,
    pub transitions: u64,
    pub distinct: u64,
    pub max_depth: usize,
    /// States found only beyond the depth bound, never explored (0: the search was
    /// exhaustive).
    pub cut: u64,
    /// Snapshots (or copies) held at the deepest point.
    pub max_alive: usize,
    /// Peak bytes held by saved states (store pages + metadata, or full copies).
    pub peak_snapshot_bytes: u64,
    /// For pagesnap: peak unique pages in the store.
    pub peak_unique_pages: u64,
    /// What full copies of every snapshot alive at the peak would have taken.
    pub full_copy_equivalent: u64,
    pub elapsed: Duration,
    /// The violation and the path to it.
    pub bug: Option<(String, Vec<(usize, &'static str)>)>,
    pub tracking: String,
    pub heap_bytes: usize,
    pub allocated_bytes: usize,
}

impl Outcome {
    pub fn states_per_sec(&self) -> f64 {
        self.states as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

struct Frame {
    saved: Saved,
    next: usize,
    step: Option<(usize, &'static str)>,
}

pub fn build_heap(cfg: &Config, naive: bool) -> pagesnap::Result<WorldHeap> {
    // The naive run never asks the region for a snapshot, so it pays for no
    // tracking (the compare backend does nothing per write).
    let builder = if naive {
        Region::builder(cfg.heap_bytes).tracking(Tracking::Compare)
    } else {
        Region::builder(cfg.heap_bytes).huge_pages(cfg.huge_pages)
    };
    let (n, scratch, protocol) = (cfg.procs, cfg.scratch_bytes, cfg.protocol);
    Heap::with_region(builder, move |arena| {
        World::new(arena, n, scratch, protocol)
    })
}

impl Keeper {
    fn save(&mut self, heap: &mut WorldHeap) -> pagesnap::Result<(Saved, u128)> {
        match self {
            Keeper::Pagesnap => {
                let s = heap.snapshot()?;
                let d = u128::from_be_bytes(s.digest().to_bytes());
                Ok((Saved::Snap(s), d))
            }
            Keeper::Naive { spare } => {
                let mut c = spare.pop().unwrap_or_default();
                heap.copy_into(&mut c);
                let d = twox_hash::XxHash3_128::oneshot(c.as_bytes());
                Ok((Saved::Copy(c), d))
            }
        }
    }

    fn load(&mut self, heap: &mut WorldHeap, saved: &Saved) -> pagesnap::Result<()> {
        match saved {
            Saved::Snap(s) => heap.restore(s),
            Saved::Copy(c) => heap.restore_copy(c),
        }
    }

    fn release(&mut self, saved: Saved) {
        if let (Keeper::Naive { spare }, Saved::Copy(c)) = (self, saved) {
            spare.push(c);
        }
    }
}

/// Runs the search to completion or to the first violation.
pub fn run(cfg: &Config, naive: bool, bar: &ProgressBar) -> pagesnap::Result<Outcome> {
    let mut heap = build_heap(cfg, naive)?;
    let mut keeper = if naive {
        Keeper::Naive { spare: Vec::new() }
    } else {
        Keeper::Pagesnap
    };
    let len = heap.len() as u64;
    let mut out = Outcome {
        tracking: if naive {
            "none (full copies)".into()
        } else {
            heap.tracking().to_string()
        },
        heap_bytes: heap.len(),
        allocated_bytes: heap.stats().allocated_bytes,
        ..Outcome::default()
    };
    let start = Instant::now();
    // State identity → the shallowest depth it was explored at.
    let mut visited: HashMap<u128, usize> = HashMap::new();
    // States found only beyond the bound (unless a shorter path reaches them later).
    let mut cut: HashSet<u128> = HashSet::new();
    let (s0, d0) = keeper.save(&mut heap)?;
    visited.insert(d0, 0);
    out.states = 1;
    out.distinct = 1;
    let mut stack = vec![Frame {
        saved: s0,
        next: 0,
        step: None,
    }];
    // Whether the heap holds the state of the top frame.
    let mut at_top = true;
    let measure = |out: &mut Outcome, heap: &WorldHeap, alive: usize| {
        let bytes = if naive {
            alive as u64 * len
        } else {
            let s = heap.store().stats();
            out.peak_unique_pages = out.peak_unique_pages.max(s.unique_pages);
            s.stored_bytes + s.metadata_bytes
        };
        if bytes > out.peak_snapshot_bytes {
            out.peak_snapshot_bytes = bytes;
        }
        if alive > out.max_alive {
            out.max_alive = alive;
            out.full_copy_equivalent = alive as u64 * len;
        }
    };
    measure(&mut out, &heap, 1);
    while let Some(top) = stack.last_mut() {
        if top.next == cfg.procs {
            let f = stack.pop().expect("non-empty");
            keeper.release(f.saved);
            at_top = false;
            continue;
        }
        let pid = top.next;
        top.next += 1;
        if !at_top {
            keeper.load(&mut heap, &top.saved)?;
            at_top = true;
        }
        let protocol = cfg.protocol;
        let Some(what) = heap.with_mut(|w| protocol.step(w, pid)) else {
            continue; // blocked: nothing changed
        };
        out.transitions += 1;
        out.states += 1;
        let (saved, key) = keeper.save(&mut heap)?;
        at_top = false;
        let depth = stack.len();
        let seen = visited.get(&key).copied();
        if seen.is_some_and(|d| d <= depth) {
            keeper.release(saved);
            continue;
        }
        if depth > cfg.max_depth {
            // Beyond the bound: not explored (and not recorded, so a shorter path
            // can still reach it).
            cut.insert(key);
            keeper.release(saved);
            continue;
        }
        // New, or reached by a shorter path than before: (re)explore it, so every
        // state within the bound is explored with all its successors.
        if seen.is_none() {
            out.distinct += 1;
        }
        visited.insert(key, depth);
        stack.push(Frame {
            saved,
            next: 0,
            step: Some((pid, what)),
        });
        at_top = true;
        out.max_depth = out.max_depth.max(stack.len() - 1);
        if stack.len() > out.max_alive || out.distinct % 16 == 0 {
            measure(&mut out, &heap, stack.len());
        }
        if out.distinct % 64 == 0 {
            bar.set_position(out.states);
            bar.set_message(format!(
                "{} distinct, depth {}",
                out.distinct,
                stack.len() - 1
            ));
        }
        if let Some(msg) = heap.with(violation) {
            let trace = stack.iter().filter_map(|f| f.step).collect();
            out.bug = Some((msg, trace));
            break;
        }
    }
    measure(&mut out, &heap, stack.len());
    out.elapsed = start.elapsed();
    out.cut = cut.iter().filter(|k| !visited.contains_key(k)).count() as u64;
    bar.set_position(out.states);
    Ok(out)
}
