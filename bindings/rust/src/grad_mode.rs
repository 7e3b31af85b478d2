//! Grad mode: whether operations on this thread record graphs (`torch.no_grad()`).

use std::marker::PhantomData;

use crate::sys;

/// Turns recording off (or to a chosen state) on this thread until dropped, then restores the
/// state it found, also when the scope is left by a panic. Grad mode is per thread, so the
/// guard is neither `Send` nor `Sync`.
#[must_use = "grad mode is restored as soon as the guard is dropped"]
pub struct GradModeGuard {
    previous: bool,
    _per_thread: PhantomData<*const ()>,
}

impl GradModeGuard {
    /// Sets grad mode to `enabled` on this thread; the guard restores the previous state.
    pub fn new(enabled: bool) -> GradModeGuard {
        GradModeGuard { previous: set_grad_enabled(enabled), _per_thread: PhantomData }
    }
}

impl Drop for GradModeGuard {
    fn drop(&mut self) {
        set_grad_enabled(self.previous);
    }
}

/// Runs `f` with grad mode off on this thread (nothing it computes records a graph), then
/// restores the previous state, also if `f` panics.
pub fn no_grad<R>(f: impl FnOnce() -> R) -> R {
    let _guard = GradModeGuard::new(false);
    f()
}

/// Runs `f` with grad mode on on this thread (inside a `no_grad` scope, or a hook), then
/// restores the previous state.
pub fn enable_grad<R>(f: impl FnOnce() -> R) -> R {
    let _guard = GradModeGuard::new(true);
    f()
}

/// Sets grad mode on this thread and returns the previous state.
pub fn set_grad_enabled(enabled: bool) -> bool {
    let mut previous = true;
    // SAFETY: `previous` is a valid place for the old state; the call never fails.
    unsafe {
        sys::ag_set_grad_enabled(&mut previous, enabled);
    }
    previous
}

/// Whether operations on this thread record graphs.
pub fn is_grad_enabled() -> bool {
    let mut on = true;
    // SAFETY: `on` is a valid place for the result; it fails only for a NULL pointer.
    unsafe {
        sys::ag_is_grad_enabled(&mut on);
    }
    on
}
