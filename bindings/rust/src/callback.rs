//! What every trampoline (the `extern "C"` functions the library calls back) shares: a Rust
//! closure's panic or `Err` never crosses into the library; it becomes the thread's
//! `ag_last_error()` and a non-zero return, so the library call that ran the callback fails
//! with `AG_ERR_CALLBACK` quoting it, and the caller gets that as an `Err`.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::error::{set_last_error, Result};

/// Runs `f` for the callback named `what` ("a gradient hook"): 0 when it returns `Ok`, else 1
/// with the error's or the panic's message set as this thread's last error.
pub(crate) fn guard(what: &str, f: impl FnOnce() -> Result<()>) -> i32 {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => {
            set_last_error(&format!("{what} (a Rust closure) returned an error: {e}"));
            1
        }
        Err(payload) => {
            set_last_error(&format!("{what} (a Rust closure) panicked: {}", panic_message(&*payload)));
            drop_quietly(payload);
            1
        }
    }
}

/// Runs `f` (a destructor called by the library) so that a panic inside it cannot unwind into
/// the library: it is caught and dropped.
pub(crate) fn no_unwind(f: impl FnOnce()) {
    if let Err(payload) = catch_unwind(AssertUnwindSafe(f)) {
        drop_quietly(payload);
    }
}

/// The text of a panic payload (`panic!("...")` gives a &str or a String).
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a payload that is not a string".to_string()
    }
}

/// Drops a panic payload; one whose own Drop panics is leaked rather than unwound.
fn drop_quietly(payload: Box<dyn Any + Send>) {
    if let Err(again) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        std::mem::forget(again);
    }
}
