//! Random operations on a hashbrown map and a vector inside a `Heap`, interleaved
//! with snapshot / restore / drop, checked against a model kept outside the arena.

use pagesnap::arena::{HashMap, Vec};
use pagesnap::{in_arena, Heap, Snapshot};
use proptest::prelude::*;
use std::collections::BTreeMap;

in_arena! {
    struct State<'a> {
        map: HashMap<'a, u32, Vec<'a, u8>>,
        list: Vec<'a, u64>,
    }
}

#[derive(Clone, Debug)]
enum Op {
    Insert(u32, u16, u8),
    Remove(u32),
    Push(u64),
    Pop,
    Truncate(usize),
    Snapshot,
    Restore(usize),
    Drop(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u32..64, 0u16..3000, any::<u8>()).prop_map(|(k, n, b)| Op::Insert(k, n, b)),
        2 => (0u32..64).prop_map(Op::Remove),
        3 => any::<u64>().prop_map(Op::Push),
        1 => Just(Op::Pop),
        1 => (0usize..200).prop_map(Op::Truncate),
        2 => Just(Op::Snapshot),
        2 => any::<usize>().prop_map(Op::Restore),
        1 => any::<usize>().prop_map(Op::Drop),
    ]
}

#[derive(Clone, Debug, Default, PartialEq)]
struct Model {
    map: BTreeMap<u32, std::vec::Vec<u8>>,
    list: std::vec::Vec<u64>,
}

fn observe(heap: &Heap<State<'static>>) -> Model {
    heap.with(|s| Model {
        map: s.map.iter().map(|(k, v)| (*k, v.to_vec())).collect(),
        list: s.list.to_vec(),
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn heap_matches_model(ops in proptest::collection::vec(op(), 1..120)) {
        let mut heap = Heap::<State<'static>>::new(8 << 20, |a| State {
            map: HashMap::new_in(a),
            list: Vec::new_in(a),
        }).unwrap();
        let mut model = Model::default();
        let mut snaps: std::vec::Vec<(Snapshot, Model)> = std::vec::Vec::new();
        for op in ops {
            match op {
                Op::Insert(k, n, b) => {
                    heap.with_mut(|s| {
                        let mut v = Vec::with_capacity_in(n as usize, *s.list.allocator());
                        v.resize(n as usize, b);
                        s.map.insert(k, v);
                    });
                    model.map.insert(k, vec![b; n as usize]);
                }
                Op::Remove(k) => {
                    heap.with_mut(|s| { s.map.remove(&k); });
                    model.map.remove(&k);
                }
                Op::Push(x) => {
                    heap.with_mut(|s| s.list.push(x));
                    model.list.push(x);
                }
                Op::Pop => {
                    heap.with_mut(|s| s.list.pop());
                    model.list.pop();
                }
                Op::Truncate(n) => {
                    heap.with_mut(|s| { s.list.truncate(n); s.list.shrink_to_fit(); });
                    model.list.truncate(n);
                }
                Op::Snapshot => snaps.push((heap.snapshot().unwrap(), model.clone())),
                Op::Restore(i) if !snaps.is_empty() => {
                    let (s, m) = &snaps[i % snaps.len()];
                    heap.restore(s).unwrap();
                    model = m.clone();
                    prop_assert_eq!(heap.digest().unwrap(), s.digest());
                }
                Op::Drop(i) if !snaps.is_empty() => {
                    let n = snaps.len();
                    snaps.remove(i % n);
                }
                _ => {}
            }
            prop_assert_eq!(&observe(&heap), &model);
        }
        let st = heap.stats();
        prop_assert!(st.allocated_bytes <= st.arena_bytes);
    }
}
