//! Where a staging pool's slots are: first the slots over pages its owner
//! lent (frames of a page store), if any, then the pool's own mapping.
//!
//! ```text
//!  slot:   0 … lent_slots-1              lent_slots … slots-1
//!          page i of slot s at           own mapping, slot after slot,
//!          pages[s × per_slot + i]       reused once drained; runs from
//!          (used once: the copy stays    the bottom (huge pages), single
//!          where it lies, the owner's)   batches from the top (small pages)
//! ```

use crate::sys::mmap::{Mapping, Protection};
use std::io;
use std::sync::Arc;

/// The memory under a pool's slots.
pub(super) struct Memory {
    lent: Option<Lent>,
    /// How many slots are lent pages.
    pub(super) lent_slots: usize,
    /// The pool's own mapping.
    pub(super) own: Option<Mapping>,
}

/// Pages lent by the pool's owner, anywhere in the mappings kept alive here.
pub(super) struct Lent {
    _keep: Box<[Arc<Mapping>]>,
    pages: Box<[usize]>,
    page: usize,
}

/// Where one slot is: an offset in the pool's own mapping, or the index of
/// its first page among the lent ones.
pub(super) enum Place<'a> {
    Own(&'a Mapping, usize),
    Lent(&'a Lent, usize),
}

/// The `n` (at most 64) low bits set: the slots of one word of a free mask.
pub(super) fn low_bits(n: usize) -> u64 {
    match n {
        64.. => u64::MAX,
        n => (1 << n) - 1,
    }
}

fn invalid() -> io::Error {
    io::Error::from_raw_os_error(libc::EINVAL)
}

/// `slots` slots of `slot_bytes` of the pool's own, mapped now and filled as
/// slots are first used. The lower half in huge pages where the kernel has
/// them: a writer staging a run there takes one fault per 2 MiB, not one per
/// page. The upper half, where single batches go (`take_single`), in small
/// pages (best effort).
fn own_mapping(slots: usize, slot_bytes: usize) -> io::Result<Mapping> {
    let len = slots
        .checked_mul(slot_bytes)
        .filter(|&l| l > 0)
        .ok_or_else(invalid)?;
    let map = Mapping::anonymous(len, Protection::ReadWrite, true)?;
    let small = slots / 2 * slot_bytes;
    if small > 0 {
        let _ = map.advise(len - small, small, libc::MADV_NOHUGEPAGE);
    }
    Ok(map)
}

impl Memory {
    /// `slots` slots of the pool's own.
    pub(super) fn own(slots: usize, slot_bytes: usize) -> io::Result<Memory> {
        Ok(Memory {
            lent: None,
            lent_slots: 0,
            own: Some(own_mapping(slots, slot_bytes)?),
        })
    }

    /// Slots over `pages` (each `page` bytes inside one of the mappings of
    /// `keep`, else `EINVAL`), `slot_bytes / page` pages a slot, then `own`
    /// slots of the pool's own. Also returns how many slots are lent.
    pub(super) fn lent(
        keep: Vec<Arc<Mapping>>,
        pages: Vec<usize>,
        page: usize,
        slot_bytes: usize,
        own: usize,
    ) -> io::Result<(Memory, usize)> {
        if page == 0 || slot_bytes == 0 || slot_bytes % page != 0 {
            return Err(invalid());
        }
        let per_slot = slot_bytes / page;
        let slots = pages.len() / per_slot;
        if slots == 0 || pages.len() % per_slot != 0 {
            return Err(invalid());
        }
        let mut spans: Vec<(usize, usize)> = Vec::new();
        spans
            .try_reserve_exact(keep.len())
            .map_err(|_| io::Error::from_raw_os_error(libc::ENOMEM))?;
        spans.extend(
            keep.iter()
                .map(|m| (m.as_ptr() as usize, m.as_ptr() as usize + m.len())),
        );
        spans.sort_unstable();
        // Pages come in runs through one mapping: search only on leaving it.
        let mut span = (0, 0);
        let inside = |&a: &usize| {
            let Some(end) = a.checked_add(page) else {
                return false;
            };
            if !(span.0 <= a && end <= span.1) {
                let i = spans.partition_point(|s| s.0 <= a);
                if i == 0 {
                    return false;
                }
                span = spans[i - 1];
            }
            end <= span.1
        };
        if !pages.iter().all(inside) {
            return Err(invalid());
        }
        let own = match own {
            0 => None,
            n => Some(own_mapping(n, slot_bytes)?),
        };
        let lent = Lent {
            _keep: keep.into_boxed_slice(),
            pages: pages.into_boxed_slice(),
            page,
        };
        let mem = Memory {
            lent: Some(lent),
            lent_slots: slots,
            own,
        };
        Ok((mem, slots))
    }

    /// Where slot `slot` (of `slot_bytes`) is.
    pub(super) fn place(&self, slot: usize, slot_bytes: usize) -> Place<'_> {
        match (&self.lent, &self.own) {
            (Some(lent), _) if slot < self.lent_slots => {
                Place::Lent(lent, slot * (slot_bytes / lent.page))
            }
            (_, Some(own)) => Place::Own(own, (slot - self.lent_slots) * slot_bytes),
            _ => unreachable!("slot {slot} past the pool's memory"),
        }
    }

    /// Faults in slot `slot`'s pages with a write of one byte each (a write
    /// fault takes only the mapping's own lock, where `MADV_POPULATE_WRITE`
    /// would hold the process's mmap lock, which writers' `mprotect` waits
    /// for, while it zeroes each page).
    ///
    /// # Safety
    ///
    /// `slot` is a slot of this memory, held by the caller (taken from the
    /// pool's free mask, not given back): nobody else writes it, and a free
    /// slot's bytes are never read before a staging has copied over them.
    pub(super) unsafe fn touch(&self, slot: usize, slot_bytes: usize) {
        match self.place(slot, slot_bytes) {
            Place::Own(m, at) => {
                let page = crate::sys::page_size();
                for o in (at..at + slot_bytes).step_by(page) {
                    // SAFETY: `o` is inside the slot, inside the pool's own
                    // mapping (`place`), which the caller holds.
                    unsafe { std::ptr::write_volatile(m.as_ptr().add(o), 0) };
                }
            }
            Place::Lent(lent, first) => {
                for &dst in &lent.pages[first..][..slot_bytes / lent.page] {
                    // SAFETY: `dst` starts a page inside a mapping kept alive
                    // here (checked by `lent`), lent to this slot, which the
                    // caller holds.
                    unsafe { std::ptr::write_volatile(dst as *mut u8, 0) };
                }
            }
        }
    }

    /// Copies `len` (≤ `slot_bytes`) bytes from `src` into slot `slot`.
    ///
    /// # Safety
    ///
    /// `slot` is a slot of this memory, held by the caller (taken from the
    /// pool's free mask, not given back); `src` is readable for `len` bytes,
    /// nobody writes it meanwhile, and it is not staging memory.
    pub(super) unsafe fn copy_into(
        &self,
        slot: usize,
        slot_bytes: usize,
        src: *const u8,
        len: usize,
    ) {
        debug_assert!(len <= slot_bytes);
        match self.place(slot, slot_bytes) {
            Place::Own(m, at) => {
                // SAFETY: the slot lies inside the pool's own mapping
                // (`place`), the caller holds it and vouches for `src`.
                unsafe { std::ptr::copy_nonoverlapping(src, m.as_ptr().add(at), len) };
            }
            Place::Lent(lent, first) => {
                let page = lent.page;
                for (i, &dst) in lent.pages[first..][..len.div_ceil(page)].iter().enumerate() {
                    let n = page.min(len - i * page);
                    // SAFETY: `dst` starts a page inside a mapping kept alive
                    // here (checked by `lent`), lent to this slot, which the
                    // caller holds; the caller vouches for `src`.
                    unsafe { std::ptr::copy_nonoverlapping(src.add(i * page), dst as *mut u8, n) };
                }
            }
        }
    }
}
