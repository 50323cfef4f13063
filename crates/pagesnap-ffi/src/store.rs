//! `ps_store`: a page store shared by regions and their snapshots.

use crate::handle::{self, Handled, Object};
use crate::status::{call, CallError};
use pagesnap_lib::PageStore;
use std::ffi::c_int;

/// A content-addressed store of pages; each distinct non-zero page is held once,
/// however many snapshots or regions hold it. Opaque: only pointers to it exist.
#[allow(non_camel_case_types)]
pub struct ps_store {
    _opaque: [u8; 0],
}

/// What a store holds, filled in by ps_store_stats().
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ps_stats {
    /// Distinct non-zero pages held.
    pub unique_pages: u64,
    /// Bytes of page contents held (unique_pages * page_size).
    pub stored_bytes: u64,
    /// The page size in bytes.
    pub page_size: u64,
    /// Bytes of metadata: page-table nodes of all snapshots, the frame table and its index.
    pub metadata_bytes: u64,
    /// Live page-table nodes (shared nodes count once).
    pub table_nodes: u64,
}

impl Handled for PageStore {
    type Handle = ps_store;
    const KIND: &'static str = "ps_store";
    fn into_object(self) -> Object {
        Object::Store(self)
    }
    fn from_object(o: &Object) -> Option<Self> {
        match o {
            Object::Store(s) => Some(s.clone()),
            _ => None,
        }
    }
}

/// A new, empty store. NULL on failure.
///
/// Ownership: the caller owns the handle and frees it with ps_store_free(). Regions
/// and snapshots made with it keep the pages alive after that: freeing the handle
/// only gives up the caller's reference.
#[no_mangle]
pub extern "C" fn ps_store_new() -> *mut ps_store {
    call(std::ptr::null_mut(), || {
        Ok(handle::insert(PageStore::new()))
    })
}

/// Releases a handle from ps_store_new(). NULL is a no-op (returns 0). Returns -1
/// for a handle that is not live (e.g. freed twice).
#[no_mangle]
pub extern "C" fn ps_store_free(store: *mut ps_store) -> c_int {
    call(-1, || {
        handle::remove::<PageStore>(store, "store (ps_store *)").map(|_| 0)
    })
}

/// Fills `*out` with what `store` holds now. Returns 0, or -1 if `store` is not a
/// live handle or `out` is NULL.
///
/// # Safety
/// `out` is NULL or points to a writable ps_stats.
#[no_mangle]
pub unsafe extern "C" fn ps_store_stats(store: *const ps_store, out: *mut ps_stats) -> c_int {
    call(-1, || {
        let s: PageStore = handle::get(store, "store (ps_store *)")?;
        if out.is_null() {
            return Err(CallError::Null {
                arg: "out (ps_stats *)",
            });
        }
        let st = s.stats();
        let stats = ps_stats {
            unique_pages: st.unique_pages,
            stored_bytes: st.stored_bytes,
            page_size: st.page_size,
            metadata_bytes: st.metadata_bytes,
            table_nodes: st.table_nodes,
        };
        // SAFETY: `out` is non-NULL (checked above) and, by this function's contract,
        // points to a writable ps_stats; `write` needs no initialised old value.
        unsafe { out.write(stats) };
        Ok(0)
    })
}

/// Makes sure `store` has free memory for at least `bytes` of new pages, mapped
/// and faulted in now (see `PageStore::reserve`): a program that reserves its
/// region's size at start-up moves the cost of fresh memory (the kernel zeroes
/// every page touched for the first time) out of its first snapshot, whose
/// writers and copier then stage into the reserved memory. The memory stays
/// with the store and holds the next pages taken in. Returns 0, or -1 (see
/// ps_last_error()) if `store` is not a live handle or memory ran out (what was
/// reserved by then stays reserved). A request for more than the memory
/// available (free memory and swap, or the cgroup's limit) is refused with
/// PS_ERR_SYSTEM (the message says how much is available) before anything
/// is mapped.
#[no_mangle]
pub extern "C" fn ps_store_reserve(store: *const ps_store, bytes: usize) -> c_int {
    call(-1, || {
        let s: PageStore = handle::get(store, "store (ps_store *)")?;
        s.reserve(bytes).map_err(pagesnap_lib::Error::from)?;
        Ok(0)
    })
}
