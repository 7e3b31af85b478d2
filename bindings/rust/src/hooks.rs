//! Gradient hooks: closures the library calls with the gradient flowing into a tensor, and
//! gradient-ready hooks, called with a leaf once its gradient is accumulated.

use std::ffi::c_void;

use crate::callback::{guard, no_unwind};
use crate::error::{check, Result};
use crate::sys;
use crate::tensor::Tensor;

/// The id of a registered hook, for [`Tensor::remove_hook`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HookId(pub i64);

/// The trampoline of a hook closure of type F.
///
/// # Safety
/// Called by the library only: `user_data` is the `Box<F>` given to a successful
/// `ag_tensor_register_hook`, which the library keeps until `drop_hook::<F>` runs; `grad` is a
/// handle borrowed for the call; `replacement` points to a handle slot holding 0.
unsafe extern "C" fn hook_trampoline<F>(
    replacement: *mut sys::ag_tensor,
    grad: sys::ag_tensor,
    user_data: *mut c_void,
) -> i32
where
    F: Fn(&Tensor) -> Result<Option<Tensor>> + Send + Sync + 'static,
{
    guard("a gradient hook", || {
        // SAFETY: user_data is the live Box<F> (see above); shared access only (F: Fn + Sync,
        // so calls from several threads at once are allowed).
        let f = unsafe { &*(user_data as *const F) };
        // The gradient is borrowed: wrapped so that it is never freed here.
        let g = Tensor::borrowed(grad);
        if let Some(r) = f(&g)? {
            // SAFETY: `replacement` is the library's valid slot for one handle; it takes this
            // new handle over (and frees it).
            unsafe { *replacement = r.into_raw() };
        }
        Ok(())
    })
}

/// The trampoline of a gradient-ready hook closure of type F.
///
/// # Safety
/// Called by the library only: `user_data` is the `Box<F>` given to a successful
/// `ag_tensor_register_post_accumulate_grad_hook`, kept until `drop_hook::<F>` runs; `leaf` is a
/// handle borrowed for the call.
unsafe extern "C" fn ready_trampoline<F>(leaf: sys::ag_tensor, user_data: *mut c_void) -> i32
where
    F: Fn(&Tensor) -> Result<()> + Send + Sync + 'static,
{
    guard("a gradient-ready hook", || {
        // SAFETY: user_data is the live Box<F> (see above); shared access only (F: Fn + Sync).
        let f = unsafe { &*(user_data as *const F) };
        // The leaf is borrowed: wrapped so that it is never freed here.
        f(&Tensor::borrowed(leaf))
    })
}

/// Frees a hook's closure once the library no longer calls it.
///
/// # Safety
/// Called by the library once, with the pointer of a `Box<F>` made by `register_hook` or
/// `register_post_accumulate_grad_hook`.
unsafe extern "C" fn drop_hook<F>(user_data: *mut c_void) {
    // SAFETY: user_data came from Box::into_raw(Box<F>) and is dropped exactly once, here.
    no_unwind(|| drop(unsafe { Box::from_raw(user_data as *mut F) }));
}

/// Boxes `hook` and registers it with `register(out_id, user_data)`, a C registration call whose
/// trampoline and destructor are instantiated for F: on success the library owns the box until
/// it calls drop_hook::<F> once; on failure the caller keeps it, so it is dropped here.
fn register_boxed<F>(hook: F, register: impl FnOnce(*mut i64, *mut c_void) -> sys::ag_status) -> Result<HookId> {
    let data = Box::into_raw(Box::new(hook));
    let mut id = 0i64;
    if let Err(e) = check(register(&mut id, data.cast())) {
        // SAFETY: `data` came from Box::into_raw above and the library did not take it.
        drop(unsafe { Box::from_raw(data) });
        return Err(e);
    }
    Ok(HookId(id))
}

impl Tensor {
    /// Registers a gradient hook on this tensor (which must require grad): during every
    /// backward pass through it, `hook` gets the gradient flowing into the tensor (for a leaf,
    /// the pass's total before it is accumulated) and returns `Ok(None)` to keep it, or
    /// `Ok(Some(t))` to replace it with `t` (of the same shape and dtype).
    ///
    /// An `Err` or a panic in the hook aborts the backward pass, which then returns an error
    /// with `Status::Callback` whose message quotes the hook's error or panic message; no
    /// panic unwinds into the library. The hook runs on the thread that runs the backward, with
    /// grad mode off unless that pass has `create_graph` (hence `Send + Sync`). The closure is
    /// dropped when the hook is removed or the tensor is gone.
    pub fn register_hook<F>(&self, hook: F) -> Result<HookId>
    where
        F: Fn(&Tensor) -> Result<Option<Tensor>> + Send + Sync + 'static,
    {
        // SAFETY: the trampoline and destructor are instantiated for F, the type of the boxed
        // closure register_boxed passes as user data.
        register_boxed(hook, |id, data| unsafe {
            sys::ag_tensor_register_hook(id, self.handle(), Some(hook_trampoline::<F>), data, Some(drop_hook::<F>))
        })
    }

    /// Registers a gradient-ready hook on this leaf (PyTorch's post-accumulate-grad hook):
    /// during every `backward`, `hook` gets the leaf right after the pass added its gradient
    /// into `.grad`, as soon as that gradient is complete and before the pass goes on to the
    /// layers nearer the input (what data parallelism overlaps its all-reduce with). Read the
    /// gradient with [`Tensor::grad`]. Errors and panics abort the backward as for
    /// [`Tensor::register_hook`]; `grad()`-style passes never run it. Fails with
    /// `Status::State` unless the tensor is a leaf that requires grad.
    pub fn register_post_accumulate_grad_hook<F>(&self, hook: F) -> Result<HookId>
    where
        F: Fn(&Tensor) -> Result<()> + Send + Sync + 'static,
    {
        // SAFETY: as in register_hook (the trampoline and destructor are instantiated for F).
        register_boxed(hook, |id, data| unsafe {
            sys::ag_tensor_register_post_accumulate_grad_hook(
                id,
                self.handle(),
                Some(ready_trampoline::<F>),
                data,
                Some(drop_hook::<F>),
            )
        })
    }

    /// Removes a hook registered on this tensor (its closure is dropped now).
    pub fn remove_hook(&self, id: HookId) -> Result<()> {
        // SAFETY: a handle and an id by value.
        check(unsafe { sys::ag_tensor_remove_hook(self.handle(), id.0) })
    }
}
