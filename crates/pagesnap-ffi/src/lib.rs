//! # pagesnap-ffi
//!
//! The C ABI of [pagesnap](../pagesnap/index.html): `libpagesnap.so`,
//! `libpagesnap.a` and the header `include/pagesnap.h` (generated from this crate
//! by cbindgen; `tests/header.rs` fails when the committed copy is stale).
//!
//! ```text
//!  C program ── ps_store * / ps_region * / ps_snapshot * (tokens) ──┐
//!                                                                  ▼
//!  status::call   clears ps_last_error(), catches panics, maps errors to -1 / NULL
//!  handle         token → live object table (NULL, freed, foreign handles: errors)
//!  store, region, snapshot, background, file, tracking    one file per C concern
//! ```
//!
//! Every entry point returns an `int` status (0 success, -1 failure), a pointer
//! (NULL on failure) or a value with a documented failure value, and leaves the
//! reason in `ps_last_error()`. Handles are never dereferenced: a stale one is
//! reported, not undefined behaviour. Raw pointers the C caller passes (output
//! buffers) are checked for NULL and then trusted for their documented size; each
//! such use is one small `unsafe` block with a `SAFETY` line.
// `#[no_mangle]` counts as unsafe code; the few real `unsafe` blocks opt in one by one.
#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks, unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod background;
mod codes;
mod converging;
mod converging_thread;
mod file;
mod handle;
mod heap;
mod heap_layout;
mod op_stats;
mod region;
mod save_job;
mod snapshot;
mod status;
mod store;
mod tracking;

pub use background::{
    ps_background, ps_background_done, ps_background_free, ps_background_progress,
    ps_background_save, ps_background_snapshot, ps_background_wait,
};
pub use codes::{
    PS_ERR_ADDRESS_TAKEN, PS_ERR_ARGUMENT, PS_ERR_BUSY, PS_ERR_FILE, PS_ERR_HANDLE, PS_ERR_HEAP,
    PS_ERR_HEAP_FULL, PS_ERR_INTERNAL, PS_ERR_NOT_A_CLONE, PS_ERR_NULL, PS_ERR_SYSTEM,
    PS_ERR_UNAVAILABLE, PS_OK,
};
pub use converging::{
    ps_converge_progress, ps_converging, ps_converging_finish, ps_converging_finish_save,
    ps_converging_free, ps_converging_progress, ps_converging_save_wait, ps_converging_start,
    ps_converging_wait,
};
pub use file::{
    ps_snapshot_load, ps_snapshot_load_delta, ps_snapshot_save, ps_snapshot_save_delta,
};
pub use heap::{
    ps_heap_alloc, ps_heap_calloc, ps_heap_free, ps_heap_init, ps_heap_realloc, ps_heap_root,
    ps_heap_set_root, ps_heap_stats, ps_heap_usable_size, ps_heap_usage,
};
pub use op_stats::{ps_op_stats, ps_region_last_op};
pub use region::{
    ps_region, ps_region_free, ps_region_len, ps_region_new, ps_region_new_at, ps_region_ptr,
    ps_region_reset, ps_region_tracking, ps_restore, ps_snapshot_instantiate,
    ps_snapshot_instantiate_at, ps_snapshot_take,
};
pub use save_job::{
    ps_background_save_start, ps_progress, ps_save_job, ps_save_job_done, ps_save_job_free,
    ps_save_job_progress, ps_save_job_wait, ps_save_report,
};
pub use snapshot::{
    ps_snapshot, ps_snapshot_digest, ps_snapshot_free, ps_snapshot_len, ps_snapshot_origin,
    ps_snapshot_read,
};
pub use status::{ps_last_error, ps_last_error_code};
pub use store::{ps_stats, ps_store, ps_store_free, ps_store_new, ps_store_stats};
pub use tracking::{
    ps_page_size, ps_tracking_auto, ps_tracking_available, ps_tracking_name, ps_version,
    PS_TRACKING_AUTO, PS_TRACKING_COMPARE, PS_TRACKING_MPROTECT, PS_TRACKING_SOFT_DIRTY,
    PS_TRACKING_UFFD_WP,
};
