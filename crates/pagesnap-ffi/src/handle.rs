//! The handle table: how C handles map to Rust objects without C ever holding a
//! Rust pointer.
//!
//! A handle (`ps_store *`, `ps_region *`, `ps_snapshot *`, `ps_background *`) is a
//! token, not an address: a number from a counter that never repeats, cast to a
//! pointer type.
//! The table maps each live token to its object and its type.
//!
//! ```text
//!   C: ps_region *r ─── 0x10040 ──► TABLE { 0x10030: Store(..),
//!                                           0x10040: Region(Arc<RegionCell>),
//!                                           0x10050: Snapshot(..) }
//! ```
//!
//! So a NULL, freed, never-issued or wrong-type handle is always detected and
//! reported — no entry point dereferences memory it was handed. An entry point
//! clones the object (an `Arc` or a cheap shared handle) out of the table and drops
//! the lock before working, so `ps_*_free` on one thread while another thread is
//! inside a call on the same handle is defined too: the object lives until that
//! call returns.

use crate::status::CallError;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// A live object behind a handle.
pub(crate) enum Object {
    Store(pagesnap_lib::PageStore),
    Region(Arc<crate::region::RegionCell>),
    Snapshot(pagesnap_lib::Snapshot),
    Background(crate::background::BackgroundCell),
    Save(crate::save_job::SaveCell),
    Converging(crate::converging::ConvCell),
}

/// An object type that has C handles of type `Self::Handle`.
pub(crate) trait Handled: Sized {
    /// The opaque C type.
    type Handle;
    /// Its C name, for messages.
    const KIND: &'static str;
    fn into_object(self) -> Object;
    /// A clone of the object if `o` is of this type.
    fn from_object(o: &Object) -> Option<Self>;
}

struct Table {
    /// The next token. Starts far from 0 and steps by 16, so a token looks like an
    /// aligned pointer and small integers cast to pointers are never tokens.
    next: usize,
    live: BTreeMap<usize, Object>,
}

static TABLE: Mutex<Table> = Mutex::new(Table {
    next: 0x10000,
    live: BTreeMap::new(),
});

fn table() -> MutexGuard<'static, Table> {
    // The table is consistent between statements (an insert or remove either
    // happened or not), so a panic elsewhere that poisoned it does not matter.
    TABLE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Registers `object` and returns its new handle (never NULL).
pub(crate) fn insert<T: Handled>(object: T) -> *mut T::Handle {
    let mut t = table();
    let token = t.next;
    t.next = t.next.checked_add(16).expect("2^60 handles issued");
    t.live.insert(token, object.into_object());
    token as *mut T::Handle
}

/// A clone of the object behind `h`, or why there is none. `arg` names the
/// parameter in the message.
pub(crate) fn get<T: Handled>(h: *const T::Handle, arg: &'static str) -> Result<T, CallError> {
    if h.is_null() {
        return Err(CallError::Null { arg });
    }
    let addr = h as usize;
    table()
        .live
        .get(&addr)
        .and_then(T::from_object)
        .ok_or(CallError::NotLive {
            arg,
            addr,
            kind: T::KIND,
        })
}

/// Unregisters `h`. NULL is a no-op (`Ok(false)`), like `free(NULL)`. The object
/// is dropped after the table lock is released (and later still if another call is
/// using it).
pub(crate) fn remove<T: Handled>(h: *mut T::Handle, arg: &'static str) -> Result<bool, CallError> {
    if h.is_null() {
        return Ok(false);
    }
    let addr = h as usize;
    let removed = {
        let mut t = table();
        match t.live.get(&addr).and_then(T::from_object) {
            Some(_) => t.live.remove(&addr),
            None => None,
        }
    };
    match removed {
        Some(object) => {
            drop(object);
            Ok(true)
        }
        None => Err(CallError::NotLive {
            arg,
            addr,
            kind: T::KIND,
        }),
    }
}
