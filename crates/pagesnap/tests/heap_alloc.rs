//! The arena allocator inside a heap: reuse after restore, out-of-memory, foreign
//! snapshots, and the containers (Vec, Box, String, HashMap) surviving round trips.

use pagesnap::arena::{Box, HashMap, String, Vec};
use pagesnap::{in_arena, Arena, Error, Heap};

in_arena! {
    struct Blocks<'a> {
        arena: Arena<'a>,
        blocks: Vec<'a, Box<'a, [u8]>>,
    }
}

type BlockHeap = Heap<Blocks<'static>>;

fn blocks(len: usize) -> BlockHeap {
    Heap::new(len, |arena| Blocks {
        arena,
        blocks: Vec::new_in(arena),
    })
    .unwrap()
}

/// Appends a block of `len` bytes filled with `fill`.
fn push(b: &mut Blocks<'_>, len: usize, fill: u8) {
    let mut v = Vec::with_capacity_in(len, b.arena);
    v.resize(len, fill);
    b.blocks.push(v.into_boxed_slice());
}

/// (address, length, fill) of every block; panics if a block is not uniform.
fn layout(heap: &BlockHeap) -> std::vec::Vec<(usize, usize, u8)> {
    heap.with(|b| {
        b.blocks
            .iter()
            .map(|blk| {
                let fill = blk.first().copied().unwrap_or(0);
                assert!(blk.iter().all(|&x| x == fill), "block contents changed");
                (blk.as_ptr() as usize, blk.len(), fill)
            })
            .collect()
    })
}

fn assert_disjoint(spans: &[(usize, usize, u8)]) {
    let mut s: std::vec::Vec<_> = spans.iter().map(|&(a, l, _)| (a, a + l)).collect();
    s.sort_unstable();
    for w in s.windows(2) {
        assert!(
            w[0].1 <= w[1].0,
            "blocks overlap: {:x?} and {:x?}",
            w[0],
            w[1]
        );
    }
}

#[test]
fn allocator_reuse_after_restore() {
    let mut heap = blocks(8 << 20);
    heap.with_mut(|b| {
        for i in 0..64 {
            push(b, 1000 + i * 37, i as u8 + 1);
        }
    });
    let before = layout(&heap);
    let stats_before = heap.stats();
    let snap = heap.snapshot().unwrap();

    // Free half and allocate more, reusing the freed space.
    heap.with_mut(|b| {
        let kept: std::vec::Vec<_> = b
            .blocks
            .drain(..)
            .enumerate()
            .filter(|(i, _)| i % 2 == 0)
            .map(|(_, x)| x)
            .collect();
        b.blocks.extend(kept);
        for i in 0..40 {
            push(b, 700 + i * 101, 0xA0 + i as u8);
        }
    });
    assert_disjoint(&layout(&heap));
    assert_ne!(heap.stats().allocations, stats_before.allocations);

    heap.restore(&snap).unwrap();
    assert_eq!(
        layout(&heap),
        before,
        "contents and addresses roll back exactly"
    );
    assert_eq!(heap.stats().allocated_bytes, stats_before.allocated_bytes);
    assert_eq!(heap.stats().allocations, stats_before.allocations);

    // The allocator state rolled back too: new blocks land in free space only.
    heap.with_mut(|b| {
        for i in 0..50 {
            push(b, 512 + i * 53, 0x10 + i as u8);
        }
    });
    let after = layout(&heap);
    assert_eq!(&after[..before.len()], &before[..], "old blocks untouched");
    assert_disjoint(&after);
}

#[test]
fn out_of_memory_is_an_error_not_corruption() {
    let mut heap = blocks(1 << 20);
    heap.with_mut(|b| push(b, 1000, 7));
    let snap = heap.snapshot().unwrap();
    let err = heap.with_mut(|b| {
        let mut v: Vec<'_, u8> = Vec::new_in(b.arena);
        let too_big = v.try_reserve(4 << 20);
        // Fill the arena with 64 KiB blocks until it says no.
        let mut n = 0;
        loop {
            let mut blk: Vec<'_, u8> = Vec::new_in(b.arena);
            if blk.try_reserve_exact(64 << 10).is_err() {
                break;
            }
            blk.resize(64 << 10, 0xEE);
            b.blocks.push(blk.into_boxed_slice());
            n += 1;
        }
        assert!(
            n > 8 && n < 16,
            "a 1 MiB arena holds about 15 blocks of 64 KiB, got {n}"
        );
        assert!(Box::try_new_in([0u8; 128 << 10], b.arena).is_err());
        too_big
    });
    assert!(err.is_err());
    // Everything allocated is intact and the heap still works after restore.
    let full = layout(&heap);
    assert_disjoint(&full);
    assert_eq!(full[0], (full[0].0, 1000, 7));
    heap.restore(&snap).unwrap();
    heap.with_mut(|b| push(b, 100 << 10, 3));
    assert_disjoint(&layout(&heap));
}

in_arena! {
    struct Big { data: [u8; 8192] }
}

#[test]
fn too_small_and_foreign_snapshots_are_errors() {
    let e = Heap::<Big>::new(4096, |_| Big { data: [1; 8192] }).unwrap_err();
    assert!(matches!(e, Error::HeapTooSmall { .. }), "{e}");
    assert!(e.to_string().contains("too small"), "{e}");

    let mut a = blocks(1 << 20);
    let mut b = blocks(1 << 20);
    let sa = a.snapshot().unwrap();
    let e = b.restore(&sa).unwrap_err();
    assert!(matches!(e, Error::ForeignSnapshot), "{e}");
    assert!(e.to_string().contains("not taken from this heap"), "{e}");
    let mut copy = pagesnap::FullCopy::new();
    a.copy_into(&mut copy);
    assert!(matches!(b.restore_copy(&copy), Err(Error::ForeignSnapshot)));
    a.restore_copy(&copy).unwrap();
    let c = blocks(2 << 20).snapshot().unwrap();
    assert!(matches!(a.restore(&c), Err(Error::LengthMismatch { .. })));
}

in_arena! {
    struct Dict<'a> {
        names: HashMap<'a, u32, String<'a>>,
    }
}

#[test]
fn strings_in_a_hash_map_round_trip() {
    let mut heap = Heap::<Dict<'static>>::new(4 << 20, |arena| Dict {
        names: HashMap::new_in(arena),
    })
    .unwrap();
    heap.with_mut(|d| {
        let arena = *d.names.allocator();
        for i in 0..1000 {
            d.names
                .insert(i, String::from_str_in(&format!("name {i}"), arena));
        }
    });
    let s = heap.snapshot().unwrap();
    let d0 = s.digest();
    heap.with_mut(|d| {
        d.names.retain(|k, _| k % 3 == 0);
        d.names.get_mut(&3).unwrap().push_str(" changed");
    });
    assert_ne!(heap.digest().unwrap(), d0);
    heap.restore(&s).unwrap();
    assert_eq!(heap.digest().unwrap(), d0);
    heap.with(|d| {
        assert_eq!(d.names.len(), 1000);
        assert_eq!(d.names[&3].as_str(), "name 3");
        assert_eq!(d.names[&999].as_str(), "name 999");
    });
}
