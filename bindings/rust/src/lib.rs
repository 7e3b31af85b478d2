//! Safe Rust bindings to Autograd, a reverse-mode automatic-differentiation engine for
//! N-dimensional float32/float64 tensors, over its C library `libautograd.so`
//! (`include/autograd.h`). No dependencies beyond the standard library.
//!
//! ```
//! use autograd::Tensor;
//!
//! fn main() -> autograd::Result<()> {
//!     // f(x, W) = sum(relu(x @ W) * 2), the C example's graph.
//!     let x = Tensor::from_slice(&[1.0, 2.0, -1.0, 0.5, -1.5, 2.0], &[2, 3])?.requiring_grad()?;
//!     let w = Tensor::from_slice(&[0.5, -1.0, 1.5, 0.25, -0.5, 2.0], &[3, 2])?.requiring_grad()?;
//!     let f = (x.matmul(&w)?.relu()? * 2.0).sum()?;
//!     f.backward()?;
//!     println!("f = {}", f.item()?); // 14.25
//!     println!("df/dx = {:?}", x.grad()?.unwrap().to_vec_f64()?); // [1, 3, -1, -2, 0.5, 4]
//!     Ok(())
//! }
//! ```
//!
//! # Errors
//!
//! Every fallible call returns [`Result`]: an [`Error`] carries the library's [`Status`]
//! (`AG_ERR_SHAPE`, ...) and its message (`ag_last_error()`, read on the calling thread right
//! after the call). Operators cannot return a `Result`, so `&a + &b`, `a * 2.0`, `-a` and the
//! rest *panic* with that status and message when the operation fails: such a failure
//! (shapes that do not broadcast, mixed dtypes) is a programming error, as an index out of
//! bounds is. Each operator has a method that returns the error instead: `a.add(&b)?`,
//! `a.mul_scalar(2.0)?`, `a.neg()?`.
//!
//! Accessors that cannot fail on a live handle (`shape`, `ndim`, `numel`, `dtype`,
//! `requires_grad`) return plain values, and `Clone` takes a new handle; they panic only if
//! the library breaks that promise (or cannot make a new handle, for `clone`; see
//! [`Tensor::try_clone`]).
//!
//! # Callbacks
//!
//! Hooks ([`Tensor::register_hook`]), custom ops ([`CustomOp`]) and [`gradcheck`] take Rust
//! closures. The library calls them through `extern "C"` trampolines that catch every panic
//! (`std::panic::catch_unwind`): a panic or an `Err` in a closure is stored as the thread's
//! error message (`ag_set_error`) and reported to the library as a failure, so the call that
//! ran the closure returns `Err` with `Status::Callback` and a message quoting it, and the
//! process carries on. No panic ever unwinds into the library. Closures the library keeps are
//! dropped through the header's destroy callbacks, once it can no longer call them.
//!
//! # Threads
//!
//! The header (its "Threads" paragraph) allows using the library from several threads at
//! once, the same tensors included: operations only read their inputs, and backward passes,
//! gradients, hooks and optimizer steps are serialised inside the library. So [`Tensor`],
//! [`Optimizer`] and [`CustomOp`] are `Send` and `Sync`. Two things are per thread: the last
//! error message (read by this crate on the thread of the failed call) and grad mode
//! ([`no_grad`], [`GradModeGuard`], which is therefore not `Send`). Closures given to the
//! library must be `Send + Sync` where the library may call them from other threads (hooks,
//! custom ops); `gradcheck`'s runs on the calling thread only.
//!
//! # Finding the library
//!
//! The build script links `libautograd.so` from `AUTOGRAD_LIB_DIR`, else from the repository's
//! `.build/release` (see `build.rs`).
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod callback;
mod custom_op;
mod error;
mod grad_mode;
mod gradcheck;
mod hooks;
mod ops;
mod optim;
#[rustfmt::skip]
pub mod sys;
mod tensor;

pub use custom_op::{BackwardCtx, CustomOp, ForwardCtx};
pub use error::{Error, Result, Status};
pub use grad_mode::{enable_grad, is_grad_enabled, no_grad, set_grad_enabled, GradModeGuard};
pub use gradcheck::{gradcheck, GradcheckReport};
pub use hooks::HookId;
pub use optim::Optimizer;
pub use tensor::{grad, DType, Element, Init, Tensor};

use error::{c_str, check};

/// The library's version, "MAJOR.MINOR.PATCH".
pub fn version() -> String {
    // SAFETY: ag_version returns a NUL-terminated string of static storage.
    unsafe { c_str(sys::ag_version()) }
}

/// The number of live handles of every kind (tensors, optimizers, ops...), across all
/// threads: for leak checks in tests.
pub fn live_handle_count() -> Result<i64> {
    let mut n = 0i64;
    // SAFETY: `n` is a valid place for the result.
    check(unsafe { sys::ag_live_handle_count(&mut n) })?;
    Ok(n)
}

/// Sets how many threads the library's kernels may use (1 to 256), process-wide.
pub fn set_num_threads(n: i64) -> Result<()> {
    // SAFETY: a number by value.
    check(unsafe { sys::ag_set_num_threads(n) })
}

/// The thread count set by [`set_num_threads`] (or the default).
pub fn num_threads() -> Result<i64> {
    let mut n = 0i64;
    // SAFETY: `n` is a valid place for the result.
    check(unsafe { sys::ag_num_threads(&mut n) })?;
    Ok(n)
}
