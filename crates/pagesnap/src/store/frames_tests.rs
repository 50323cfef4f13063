//! Tests of the frame table and its index (`frames.rs`).

use super::*;

/// Two contents under one hash are both kept and both found by it, each
/// by its bytes; releasing one leaves the other indexed.
#[test]
fn two_contents_with_one_hash_are_kept_apart() {
    let page = crate::sys::page_size();
    let frames = Frames::new(page);
    let mut ids = Vec::new();
    frames.reserve(5, &mut ids).unwrap();
    let hash = 0x1234_5678_9abc_def0_u128;
    let (a, b, a2, b2, a3) = (ids[0], ids[1], ids[2], ids[3], ids[4]);
    let put = |id: FrameId, byte: u8| {
        frames.slabs.write(id, &vec![byte; page]);
        frames.publish_as(id, hash).unwrap()
    };
    assert_eq!(put(a, 1), a);
    assert_eq!(put(b, 2), b, "other bytes, one hash: a frame of its own");
    assert_eq!(frames.unique(), 2);
    assert_eq!(put(a2, 1), a, "the first is found");
    assert_eq!(put(b2, 2), b, "the second is found too, not stored again");
    assert_eq!(frames.unique(), 2);
    frames.release_all([a, a]);
    assert_eq!(frames.unique(), 1);
    assert_eq!(put(a3, 2), b, "still indexed after the other went");
    assert_eq!(frames.slabs.slot(b).refs.load(Ordering::Relaxed), 3);
    frames.release_all([b, b, b]);
    assert_eq!(frames.unique(), 0);
}

/// Past [`MAX_SAME_KEY`] contents under one hash, a further content is
/// stored each time (not indexed), and every content keeps its bytes.
#[test]
fn contents_past_the_cap_on_one_hash_are_stored_but_not_indexed() {
    let page = crate::sys::page_size();
    let frames = Frames::new(page);
    let hash = 0x0bad_cafe_u128;
    let mut ids = Vec::new();
    frames.reserve(MAX_SAME_KEY + 4, &mut ids).unwrap();
    let put = |id: FrameId, byte: u8| {
        frames.slabs.write(id, &vec![byte; page]);
        frames.publish_as(id, hash).unwrap()
    };
    for (i, &id) in ids[..MAX_SAME_KEY].iter().enumerate() {
        assert_eq!(put(id, i as u8 + 1), id);
    }
    let extra = MAX_SAME_KEY as u8 + 1;
    let (x1, x2) = (ids[MAX_SAME_KEY], ids[MAX_SAME_KEY + 1]);
    assert_eq!(put(x1, extra), x1);
    assert_eq!(put(x2, extra), x2, "past the cap: stored again");
    assert_eq!(
        put(ids[MAX_SAME_KEY + 2], 3),
        ids[2],
        "the indexed ones are found"
    );
    for (i, &id) in ids[..MAX_SAME_KEY].iter().enumerate() {
        assert!(frames.slabs.bytes(id).iter().all(|&b| b == i as u8 + 1));
    }
    assert!(frames.slabs.bytes(x2).iter().all(|&b| b == extra));
    frames.release_all([x1, x2]);
    assert_eq!(frames.unique(), MAX_SAME_KEY as u64);
}

/// The index finds every frame after its tables grew many times (growing
/// reads each entry's key back from the frame table), and forgets freed ones.
#[test]
fn every_frame_is_found_after_the_index_grew() {
    let page = crate::sys::page_size();
    let frames = Frames::new(page);
    let n = 20_000;
    let content = |i: usize| {
        let mut p = vec![0u8; page];
        p[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
        p
    };
    let mut ids = Vec::new();
    frames.reserve(n, &mut ids).unwrap();
    let first: Vec<FrameId> = (0..n)
        .map(|i| frames.insert(ids[i], &content(i)).unwrap())
        .collect();
    assert_eq!(first, ids, "distinct contents: each its own frame");
    let mut again = Vec::new();
    frames.reserve(n, &mut again).unwrap();
    for i in 0..n {
        assert_eq!(
            frames.insert(again[i], &content(i)).unwrap(),
            first[i],
            "page {i}"
        );
    }
    frames.unreserve(&mut again);
    // Free the even ones: their contents come back as new frames.
    frames.release_all(first.iter().step_by(2).flat_map(|&id| [id, id]));
    assert_eq!(frames.unique(), n as u64 / 2);
    let mut third = Vec::new();
    frames.reserve(n, &mut third).unwrap();
    for i in 0..n {
        let got = frames.insert(third[i], &content(i)).unwrap();
        if i % 2 == 0 {
            assert_eq!(got, third[i], "page {i} was freed: stored anew");
        } else {
            assert_eq!(got, first[i], "page {i} still held");
        }
    }
}

/// Free slots count the never-used ones of the last slab mapped, not only
/// those freed: a slab is mapped and faulted in whole.
#[test]
fn free_slots_count_a_slabs_never_used_ones() {
    let page = crate::sys::page_size();
    let frames = Frames::new(page);
    assert_eq!(frames.free_slots(), 0, "nothing mapped yet");
    let mut ids = Vec::new();
    frames.reserve(3, &mut ids).unwrap();
    // Slot 0 is the zero page's: a slab holds one slot fewer at first.
    assert_eq!(frames.free_slots(), SLAB_FRAMES - 1 - 3);
    let mut page_bytes = vec![7u8; page];
    assert_eq!(frames.insert(ids[0], &page_bytes).unwrap(), ids[0]);
    page_bytes[0] = 8;
    assert_eq!(frames.insert(ids[1], &page_bytes).unwrap(), ids[1]);
    frames.unreserve(&mut ids.split_off(2));
    assert_eq!(frames.free_slots(), SLAB_FRAMES - 1 - 2);
    frames.release_all([ids[0]]);
    assert_eq!(frames.free_slots(), SLAB_FRAMES - 1 - 1);
    frames.keep_free(SLAB_FRAMES).unwrap();
    assert!(frames.free_slots() >= SLAB_FRAMES);
}
