//! The differential harness the oracle tests share: random operations applied
//! to a region and to a plain `Vec<u8>` model of it, checked after every step.

use pagesnap::{Region, Snapshot};
use proptest::prelude::*;

/// One step of a random sequence.
#[derive(Clone, Debug)]
pub enum Op {
    /// Read one byte of page `page` (maps a clone's image page in).
    Read(usize),
    /// One byte.
    Byte {
        at: usize,
        value: u8,
    },
    /// A whole page filled with one value (0 makes a zero page again).
    Page {
        page: usize,
        value: u8,
    },
    /// A run of bytes that may span pages, with pseudo-random contents.
    Run {
        at: usize,
        len: usize,
        seed: u64,
    },
    Snapshot,
    /// Restore the live snapshot `i % live`.
    Restore(usize),
    /// Drop the live snapshot `i % live`.
    Drop(usize),
    /// Take a clone back to its origin.
    Reset,
}

/// A byte write anywhere in `len` bytes.
pub fn byte(len: usize) -> impl Strategy<Value = Op> {
    (0..len, any::<u8>()).prop_map(|(at, value)| Op::Byte { at, value })
}

/// A page of `pages` filled with zeros or one random value.
pub fn page(pages: usize) -> impl Strategy<Value = Op> {
    (0..pages, prop_oneof![Just(0u8), any::<u8>()])
        .prop_map(|(page, value)| Op::Page { page, value })
}

/// A run of up to three pages of random bytes anywhere in `len` bytes.
pub fn run(len: usize) -> impl Strategy<Value = Op> {
    (0..len, 1..3 * 4096usize, any::<u64>()).prop_map(|(at, len, seed)| Op::Run { at, len, seed })
}

/// Runs `cases` random sequences of 1 to `max_ops` steps drawn from `op`.
pub fn run_cases(cases: u32, max_ops: usize, op: impl Strategy<Value = Op>, f: impl Fn(&[Op])) {
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(cases));
    runner
        .run(&proptest::collection::vec(op, 1..max_ops), |ops| {
            f(&ops);
            Ok(())
        })
        .unwrap();
}

/// The model of one region: its bytes, the live snapshots with the bytes each
/// must hold, and what a reset goes back to.
pub struct Oracle {
    pub model: Vec<u8>,
    pub live: Vec<(Snapshot, Vec<u8>)>,
    pub origin: Vec<u8>,
}

impl Oracle {
    /// A model of a region that holds `bytes` now (and at its origin).
    pub fn new(bytes: Vec<u8>) -> Oracle {
        Oracle {
            origin: bytes.clone(),
            model: bytes,
            live: Vec::new(),
        }
    }

    /// Applies `op` to `region` and to the model, then checks they are equal.
    pub fn step(&mut self, region: &mut Region, op: &Op) {
        let page = pagesnap::page_size();
        let len = self.model.len();
        let pages = len / page;
        match *op {
            Op::Read(p) => {
                let at = (p % pages) * page + 1;
                assert_eq!(region.as_slice()[at], self.model[at]);
            }
            Op::Byte { at, value } => {
                region.as_mut_slice()[at % len] = value;
                self.model[at % len] = value;
            }
            Op::Page { page: p, value } => {
                let p = p % pages;
                region.as_mut_slice()[p * page..(p + 1) * page].fill(value);
                self.model[p * page..(p + 1) * page].fill(value);
            }
            Op::Run { at, len: n, seed } => {
                let at = at % len;
                let n = n.min(len - at);
                let mut data = vec![0u8; n];
                super::fill(&mut data, seed);
                region.as_mut_slice()[at..at + n].copy_from_slice(&data);
                self.model[at..at + n].copy_from_slice(&data);
            }
            Op::Snapshot => {
                let s = region.snapshot().unwrap();
                assert!(s.to_vec() == self.model, "snapshot differs from the model");
                self.live.push((s, self.model.clone()));
            }
            Op::Restore(i) if !self.live.is_empty() => {
                let (s, bytes) = &self.live[i % self.live.len()];
                region.restore(s).unwrap();
                self.model.copy_from_slice(bytes);
            }
            Op::Drop(i) if !self.live.is_empty() => {
                self.live.remove(i % self.live.len());
            }
            Op::Reset => {
                region.reset().unwrap();
                self.model.copy_from_slice(&self.origin);
            }
            _ => {}
        }
        assert!(
            region.as_slice() == &self.model[..],
            "region differs from the model after {op:?}"
        );
    }

    /// Checks every live snapshot still holds its bytes.
    pub fn check_live(&self) {
        for (s, bytes) in &self.live {
            assert!(s.to_vec() == *bytes, "a live snapshot changed");
        }
    }
}
