//! Status reporting across the C boundary: the thread-local last-error message and
//! [`call`], which every exported function runs its body through.
//!
//! ```text
//!  C caller ──► ps_xxx(..) ──► call(fail, body)
//!                                 │ clears this thread's message
//!                                 │ catch_unwind(body)
//!                                 ├─ Ok(v)          → v
//!                                 ├─ Err(CallError) → message set, `fail` returned
//!                                 └─ panic          → message set, `fail` returned
//! ```

use std::cell::Cell;
use std::ffi::{c_char, c_int};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Why a C call failed; rendered into the thread's last-error message.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    /// A handle or pointer argument was NULL.
    #[error("{arg} is NULL")]
    Null {
        /// The parameter, e.g. "region (ps_region *)".
        arg: &'static str,
    },
    /// A handle that is not live: already freed, never returned by pagesnap, or a
    /// handle of another type.
    #[error("{arg} {addr:#x} is not a live {kind} handle (freed already, or never returned by pagesnap as a {kind})")]
    NotLive {
        /// The parameter.
        arg: &'static str,
        /// The handle's value.
        addr: usize,
        /// The expected handle type, e.g. "ps_region".
        kind: &'static str,
    },
    /// A tracking constant outside `PS_TRACKING_*`.
    #[error("tracking {0} is not one of PS_TRACKING_AUTO (0), PS_TRACKING_UFFD_WP (1), PS_TRACKING_SOFT_DIRTY (2), PS_TRACKING_MPROTECT (3), PS_TRACKING_COMPARE (4)")]
    BadTracking(i32),
    /// A handle used in a way its kind does not allow, e.g. finishing a
    /// converging save as a snapshot.
    #[error("{0}")]
    Misuse(&'static str),
    /// A heap call was refused (ps_heap_*).
    #[error(transparent)]
    Heap(#[from] crate::heap_layout::HeapError),
    /// The library returned an error (worded for C: `codes::message`).
    #[error("{}", crate::codes::message(.0))]
    Library(#[from] pagesnap_lib::Error),
    /// Rust code panicked; the panic was stopped at the boundary.
    #[error("internal error (a panic was caught at the C boundary): {0}")]
    Panic(String),
}

/// Room for a message and its NUL; longer messages are cut (ours are far shorter).
const MESSAGE_CAP: usize = 1024;

thread_local! {
    /// The `PS_ERR_*` code of the last call on this thread (PS_OK after a success).
    static LAST_CODE: Cell<c_int> = const { Cell::new(0) };

    /// The NUL-terminated message of the last failed call on this thread; "" (a NUL
    /// first byte) after a success. Written in place and never moved or freed while
    /// the thread lives, so a pointer from ps_last_error() never dangles: a stale
    /// one reads a newer message, never freed memory.
    static LAST_ERROR: [Cell<u8>; MESSAGE_CAP] = const { [const { Cell::new(0) }; MESSAGE_CAP] };
}

/// Sets this thread's message (`None`: the empty message).
fn set_last_error(message: Option<&str>) {
    // `try_with` fails only while the thread is being torn down; nothing to report to then.
    let _ = LAST_ERROR.try_with(|buf| {
        let mut text = message.unwrap_or("");
        // Cut at a char boundary so the message stays UTF-8; drop interior NULs' tails.
        let mut end = text.len().min(MESSAGE_CAP - 1);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text = &text[..end];
        let text = text.split('\0').next().unwrap_or("");
        for (cell, b) in buf.iter().zip(text.bytes()) {
            cell.set(b);
        }
        buf[text.len()].set(0);
    });
}

fn set_code(code: c_int) {
    let _ = LAST_CODE.try_with(|c| c.set(code));
}

/// Runs `body` for an exported function: clears the thread's last error, turns an
/// `Err` or a panic into the thread's last error plus the return value `fail`.
pub(crate) fn call<T>(fail: T, body: impl FnOnce() -> Result<T, CallError>) -> T {
    set_last_error(None);
    set_code(crate::codes::PS_OK);
    // AssertUnwindSafe: after a panic nothing `body` touched is used again by this
    // call; handles whose state a panic could break are behind poison-tolerant locks.
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            set_code(crate::codes::code(&e));
            set_last_error(Some(&e.to_string()));
            fail
        }
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".to_string());
            set_code(crate::codes::PS_ERR_INTERNAL);
            set_last_error(Some(&CallError::Panic(what).to_string()));
            fail
        }
    }
}

/// The message of the last failed `ps_*` call on this thread, or "" when the last
/// call succeeded. Never NULL. Each thread has its own message.
///
/// Ownership: the string belongs to pagesnap; never free it. Its contents are valid
/// until the next `ps_*` call on this thread: copy them to keep them. (The buffer
/// itself stays in place for the thread's life, so a stale pointer reads a newer
/// message, never freed memory.)
#[no_mangle]
pub extern "C" fn ps_last_error() -> *const c_char {
    LAST_ERROR
        // `Cell<u8>` has the layout of `u8`, so the array is the bytes of the message.
        .try_with(|buf| buf.as_ptr().cast::<c_char>())
        .unwrap_or(c"".as_ptr())
}

/// The `PS_ERR_*` code of the last `ps_*` call on this thread: PS_OK (0) when it
/// succeeded, else the kind of failure (ps_last_error() has the details). Each
/// thread has its own code. Use it to branch (e.g. PS_ERR_ADDRESS_TAKEN: try
/// another address; PS_ERR_HEAP_FULL: grow or evict); the message is for people.
#[no_mangle]
pub extern "C" fn ps_last_error_code() -> c_int {
    LAST_CODE.try_with(Cell::get).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    fn last() -> String {
        // SAFETY: ps_last_error never returns NULL and its string lives until the
        // next ps_* call on this thread; it is copied before any.
        unsafe { CStr::from_ptr(ps_last_error()) }
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn a_panic_becomes_an_error_and_the_fail_value() {
        let v = call(-1, || -> Result<i32, CallError> { panic!("boom {}", 7) });
        assert_eq!(v, -1);
        assert_eq!(
            last(),
            "internal error (a panic was caught at the C boundary): boom 7"
        );
        assert_eq!(call(-1, || Ok(5)), 5);
        assert_eq!(last(), "");
    }

    #[test]
    fn an_error_sets_the_message_and_success_clears_it() {
        let v = call(0usize, || Err(CallError::Null { arg: "region" }));
        assert_eq!(v, 0);
        assert_eq!(last(), "region is NULL");
        assert_eq!(call(0, || Ok(1)), 1);
        assert_eq!(last(), "");
    }

    #[test]
    fn long_messages_are_cut_and_old_pointers_stay_readable() {
        let stale = ps_last_error();
        let long = "é".repeat(MESSAGE_CAP);
        let _ = call(0, || Err(CallError::Panic(long.clone())));
        let m = last();
        assert!(m.len() < MESSAGE_CAP && m.ends_with('é'), "{m}");
        // SAFETY: the thread's buffer never moves, so `stale` points into it still.
        let again = unsafe { CStr::from_ptr(stale) }
            .to_string_lossy()
            .into_owned();
        assert_eq!(again, m);
    }

    #[test]
    fn messages_are_per_thread() {
        let _ = call(0, || Err(CallError::BadTracking(9)));
        std::thread::spawn(|| assert_eq!(last(), ""))
            .join()
            .unwrap();
        assert!(last().starts_with("tracking 9 is not one of"));
    }
}
