//! User-defined differentiable ops written as Rust closures (PyTorch's autograd.Function).

use std::ffi::{c_void, CString};
use std::marker::PhantomData;

use crate::callback::{guard, no_unwind};
use crate::error::{check, Error, Result, Status};
use crate::sys;
use crate::tensor::{handles, Tensor};

/// The context of one application of a custom op, in its forward closure: save tensors for
/// the backward. Valid during the closure only (the library refuses it afterwards).
pub struct ForwardCtx<'a> {
    h: sys::ag_custom_ctx,
    _callback: PhantomData<&'a ()>,
}

/// The context of one application of a custom op, in its backward closure: the tensors the
/// forward saved. Valid during the closure only.
pub struct BackwardCtx<'a> {
    h: sys::ag_custom_ctx,
    _callback: PhantomData<&'a ()>,
}

fn needs_input_grad(ctx: sys::ag_custom_ctx, index: usize) -> Result<bool> {
    let mut b = false;
    // SAFETY: `b` is a valid place for the result; the context and index are checked.
    check(unsafe { sys::ag_custom_ctx_needs_input_grad(&mut b, ctx, index as i64) })?;
    Ok(b)
}

impl ForwardCtx<'_> {
    /// Saves tensors for the backward (the library keeps its own references). Save inputs
    /// and outputs rather than intermediates when second derivatives matter.
    pub fn save(&self, tensors: &[&Tensor]) -> Result<()> {
        let hs = handles(tensors);
        // SAFETY: `hs` holds hs.len() handles, read during the call only.
        check(unsafe { sys::ag_custom_ctx_save(self.h, hs.as_ptr(), hs.len() as i64) })
    }

    /// Whether input `index` requires grad and the op is recorded.
    pub fn needs_input_grad(&self, index: usize) -> Result<bool> {
        needs_input_grad(self.h, index)
    }
}

impl BackwardCtx<'_> {
    /// The number of tensors the forward saved.
    pub fn saved_count(&self) -> Result<usize> {
        let mut n = 0i64;
        // SAFETY: `n` is a valid place for the result.
        check(unsafe { sys::ag_custom_ctx_saved_count(&mut n, self.h) })?;
        Ok(n as usize)
    }

    /// A new handle to saved tensor `index` (in the order saved).
    pub fn saved(&self, index: usize) -> Result<Tensor> {
        let mut t = sys::AG_NULL_TENSOR;
        // SAFETY: `t` is a valid place for one handle, which becomes ours on success.
        check(unsafe { sys::ag_custom_ctx_saved(&mut t, self.h, index as i64) })?;
        Ok(Tensor::from_raw(t))
    }

    /// Whether this pass wants a gradient for input `index`.
    pub fn needs_input_grad(&self, index: usize) -> Result<bool> {
        needs_input_grad(self.h, index)
    }
}

/// What the library holds for an op: its closures.
struct Payload<F, B> {
    name: String,
    forward: F,
    backward: Option<B>,
}

/// The backward type of an op made without one (never called).
type NoBackward = fn(&BackwardCtx<'_>, &[&Tensor]) -> Result<Vec<Option<Tensor>>>;

/// Borrowed handles as Tensors that are never freed here.
fn borrow_all(hs: *const sys::ag_tensor, n: i64) -> Vec<std::mem::ManuallyDrop<Tensor>> {
    if hs.is_null() || n <= 0 {
        return Vec::new();
    }
    // SAFETY: the library passes `n` valid handles at `hs` for the duration of the callback.
    unsafe { std::slice::from_raw_parts(hs, n as usize) }.iter().map(|&h| Tensor::borrowed(h)).collect()
}

/// # Safety
/// Called by the library only, as the forward of an op made by `CustomOp::create::<F, B>`:
/// `payload` is its live `Box<Payload<F, B>>`; `outputs` has room for `noutputs` handles;
/// `inputs` holds `ninputs` borrowed handles.
unsafe extern "C" fn forward_trampoline<F, B>(
    outputs: *mut sys::ag_tensor,
    noutputs: i64,
    inputs: *const sys::ag_tensor,
    ninputs: i64,
    ctx: sys::ag_custom_ctx,
    payload: *mut c_void,
) -> i32
where
    F: Fn(&ForwardCtx<'_>, &[&Tensor]) -> Result<Vec<Tensor>> + Send + Sync + 'static,
    B: Fn(&BackwardCtx<'_>, &[&Tensor]) -> Result<Vec<Option<Tensor>>> + Send + Sync + 'static,
{
    guard("a custom op's forward", || {
        // SAFETY: payload is the op's live Payload (see above), shared (F: Sync).
        let p = unsafe { &*(payload as *const Payload<F, B>) };
        let borrowed = borrow_all(inputs, ninputs);
        let refs: Vec<&Tensor> = borrowed.iter().map(|t| &**t).collect();
        let ctx = ForwardCtx { h: ctx, _callback: PhantomData };
        let outs = (p.forward)(&ctx, &refs)?;
        if outs.len() as i64 != noutputs {
            return Err(Error::new(
                Status::Argument,
                format!("custom op '{}': the forward returned {} tensors for {} outputs", p.name, outs.len(), noutputs),
            ));
        }
        for (i, t) in outs.into_iter().enumerate() {
            // SAFETY: outputs has room for noutputs handles; the library takes each over.
            unsafe { *outputs.add(i) = t.into_raw() };
        }
        Ok(())
    })
}

/// # Safety
/// Called by the library only, as the backward of an op made by `CustomOp::create::<F, B>`
/// with a backward: `payload` is its live `Box<Payload<F, B>>`; `input_grads` has room for
/// `ninputs` handles; `output_grads` holds `noutputs` borrowed handles.
unsafe extern "C" fn backward_trampoline<F, B>(
    input_grads: *mut sys::ag_tensor,
    ninputs: i64,
    output_grads: *const sys::ag_tensor,
    noutputs: i64,
    ctx: sys::ag_custom_ctx,
    payload: *mut c_void,
) -> i32
where
    F: Fn(&ForwardCtx<'_>, &[&Tensor]) -> Result<Vec<Tensor>> + Send + Sync + 'static,
    B: Fn(&BackwardCtx<'_>, &[&Tensor]) -> Result<Vec<Option<Tensor>>> + Send + Sync + 'static,
{
    guard("a custom op's backward", || {
        // SAFETY: payload is the op's live Payload (see above), shared (B: Sync).
        let p = unsafe { &*(payload as *const Payload<F, B>) };
        let backward = p
            .backward
            .as_ref()
            .ok_or_else(|| Error::new(Status::State, format!("custom op '{}' has no backward", p.name)))?;
        let borrowed = borrow_all(output_grads, noutputs);
        let refs: Vec<&Tensor> = borrowed.iter().map(|t| &**t).collect();
        let ctx = BackwardCtx { h: ctx, _callback: PhantomData };
        let grads = backward(&ctx, &refs)?;
        if grads.len() as i64 != ninputs {
            return Err(Error::new(
                Status::Argument,
                format!(
                    "custom op '{}': the backward returned {} gradients for {} inputs",
                    p.name,
                    grads.len(),
                    ninputs
                ),
            ));
        }
        for (i, g) in grads.into_iter().enumerate() {
            // SAFETY: input_grads has room for ninputs handles; the library takes each over
            // (0 means no gradient for that input).
            unsafe { *input_grads.add(i) = g.map_or(sys::AG_NULL_TENSOR, Tensor::into_raw) };
        }
        Ok(())
    })
}

/// # Safety
/// Called by the library once, with the pointer of the `Box<Payload<F, B>>` given to a
/// successful `ag_custom_op_new`.
unsafe extern "C" fn drop_payload<F, B>(payload: *mut c_void) {
    // SAFETY: payload came from Box::into_raw and is dropped exactly once, here.
    no_unwind(|| drop(unsafe { Box::from_raw(payload as *mut Payload<F, B>) }));
}

/// A user-defined op of `ninputs` inputs and `noutputs` outputs, differentiated like the
/// library's own: a forward closure computes the outputs (with grad mode off; with library ops
/// or on values read out), a backward closure maps output gradients to input gradients.
///
/// The closures may run on other threads than the one that made the op (a backward runs on
/// the thread of the backward pass, several at once), hence `Send + Sync`. An `Err` or a panic
/// in either fails the library call that ran it (`apply` for the forward, the backward pass for
/// the backward) with `Status::Callback`, quoting its message; nothing unwinds into the
/// library. Dropping the `CustomOp` frees its handle; the closures live until the last graph
/// that uses the op is gone.
///
/// ```
/// use autograd::{CustomOp, Tensor};
/// # fn main() -> autograd::Result<()> {
/// // cube(x) = x^3, with d/dx = 3 x^2.
/// let cube = CustomOp::with_backward(
///     "cube",
///     1,
///     1,
///     |ctx, x| {
///         ctx.save(&[x[0]])?;
///         Ok(vec![x[0].pow_scalar(3.0)?])
///     },
///     |ctx, grads| {
///         let x = ctx.saved(0)?;
///         Ok(vec![Some(grads[0].mul(&x.pow_scalar(2.0)?.mul_scalar(3.0)?)?)])
///     },
/// )?;
/// let x = Tensor::from_slice(&[2.0], &[])?.requiring_grad()?;
/// let y = cube.apply(&[&x])?.remove(0);
/// y.backward()?;
/// assert_eq!(x.grad()?.unwrap().item()?, 12.0);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct CustomOp {
    // Invariant: a live custom op handle owned by this value.
    h: sys::ag_custom_op,
    noutputs: usize,
}

impl Drop for CustomOp {
    fn drop(&mut self) {
        // SAFETY: a handle by value, checked by the library; graphs using the op keep it.
        unsafe {
            sys::ag_custom_op_free(self.h);
        }
    }
}

impl CustomOp {
    /// An op with a forward only: a backward pass through it fails with `Status::State`.
    pub fn new<F>(name: &str, ninputs: usize, noutputs: usize, forward: F) -> Result<CustomOp>
    where
        F: Fn(&ForwardCtx<'_>, &[&Tensor]) -> Result<Vec<Tensor>> + Send + Sync + 'static,
    {
        CustomOp::create::<F, NoBackward>(name, ninputs, noutputs, forward, None)
    }

    /// An op with a forward and a backward. `forward(ctx, inputs)` returns `noutputs` new
    /// tensors and may `ctx.save` tensors; `backward(ctx, output_grads)` returns one gradient
    /// per input (`None` for none), of the input's shape (or one that broadcasts to it).
    pub fn with_backward<F, B>(name: &str, ninputs: usize, noutputs: usize, forward: F, backward: B) -> Result<CustomOp>
    where
        F: Fn(&ForwardCtx<'_>, &[&Tensor]) -> Result<Vec<Tensor>> + Send + Sync + 'static,
        B: Fn(&BackwardCtx<'_>, &[&Tensor]) -> Result<Vec<Option<Tensor>>> + Send + Sync + 'static,
    {
        CustomOp::create(name, ninputs, noutputs, forward, Some(backward))
    }

    fn create<F, B>(name: &str, ninputs: usize, noutputs: usize, forward: F, backward: Option<B>) -> Result<CustomOp>
    where
        F: Fn(&ForwardCtx<'_>, &[&Tensor]) -> Result<Vec<Tensor>> + Send + Sync + 'static,
        B: Fn(&BackwardCtx<'_>, &[&Tensor]) -> Result<Vec<Option<Tensor>>> + Send + Sync + 'static,
    {
        let c_name = CString::new(name)
            .map_err(|_| Error::new(Status::Argument, format!("custom op name {name:?} contains a NUL character")))?;
        let has_backward = backward.is_some();
        let payload = Box::into_raw(Box::new(Payload { name: name.to_string(), forward, backward }));
        let mut h: sys::ag_custom_op = 0;
        let backward_fn: sys::ag_custom_backward_fn =
            if has_backward { Some(backward_trampoline::<F, B>) } else { None };
        // SAFETY: the trampolines and destructor are instantiated for Payload<F, B>, the type
        // `payload` points to; `c_name` is NUL-terminated and copied by the library; on success
        // the library owns `payload` until it calls drop_payload::<F, B> once.
        let status = unsafe {
            sys::ag_custom_op_new(
                &mut h,
                c_name.as_ptr(),
                ninputs as i64,
                noutputs as i64,
                Some(forward_trampoline::<F, B>),
                backward_fn,
                None,
                payload.cast(),
                Some(drop_payload::<F, B>),
            )
        };
        if let Err(e) = check(status) {
            // SAFETY: on failure the caller keeps the payload (destroy is never called).
            drop(unsafe { Box::from_raw(payload) });
            return Err(e);
        }
        Ok(CustomOp { h, noutputs })
    }

    /// Applies the op to `inputs` and returns its outputs (they require grad when an input
    /// does and grad mode is on).
    pub fn apply(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        let hs = handles(inputs);
        let mut outs = vec![sys::AG_NULL_TENSOR; self.noutputs];
        // SAFETY: `outs` has room for noutputs handles and `hs` holds hs.len() handles; the
        // library checks the counts against the op's.
        check(unsafe {
            sys::ag_custom_op_apply(outs.as_mut_ptr(), outs.len() as i64, self.h, hs.as_ptr(), hs.len() as i64)
        })?;
        Ok(outs.into_iter().map(Tensor::from_raw).collect())
    }

    /// The raw handle, still owned by this value.
    pub fn handle(&self) -> sys::ag_custom_op {
        self.h
    }
}
