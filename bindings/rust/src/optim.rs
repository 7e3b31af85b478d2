//! Optimizers: SGD (momentum, Nesterov, weight decay), Adam and AdamW, as torch.optim.

use crate::error::{check, Result};
use crate::sys;
use crate::tensor::{handles, Tensor};

/// An optimizer over a list of parameters (leaves that require grad). The library holds the
/// parameters itself, so their `Tensor`s may be dropped; `step` updates, in place, every
/// parameter that has a gradient. State (momentum, moments) is per parameter, in float64.
/// Dropping it frees the optimizer and its state.
#[derive(Debug)]
pub struct Optimizer {
    // Invariant: a live optimizer handle owned by this value.
    h: sys::ag_optimizer,
}

impl Drop for Optimizer {
    fn drop(&mut self) {
        // SAFETY: a handle by value, checked by the library.
        unsafe {
            sys::ag_optimizer_free(self.h);
        }
    }
}

fn make(f: impl FnOnce(*mut sys::ag_optimizer) -> sys::ag_status) -> Result<Optimizer> {
    let mut h: sys::ag_optimizer = 0;
    check(f(&mut h))?;
    Ok(Optimizer { h })
}

impl Optimizer {
    /// Plain SGD: p -= lr * grad.
    pub fn sgd(params: &[&Tensor], lr: f64) -> Result<Optimizer> {
        Optimizer::sgd_with(params, lr, 0.0, false, 0.0)
    }

    /// SGD with momentum (Nesterov if asked, which needs momentum > 0) and weight decay:
    /// d = grad + weight_decay * p; buf = momentum * buf + d (d on the first step);
    /// p -= lr * (nesterov ? d + momentum * buf : buf).
    pub fn sgd_with(
        params: &[&Tensor],
        lr: f64,
        momentum: f64,
        nesterov: bool,
        weight_decay: f64,
    ) -> Result<Optimizer> {
        let hs = handles(params);
        // SAFETY: `hs` holds hs.len() handles; `out` is a valid place for one handle.
        make(|out| unsafe {
            sys::ag_optimizer_sgd(out, hs.as_ptr(), hs.len() as i64, lr, momentum, nesterov, weight_decay)
        })
    }

    /// Adam with torch's defaults (betas 0.9, 0.999, eps 1e-8, no weight decay).
    pub fn adam(params: &[&Tensor], lr: f64) -> Result<Optimizer> {
        Optimizer::adam_with(params, lr, 0.9, 0.999, 1e-8, 0.0)
    }

    /// Adam: d = grad + weight_decay * p; m = b1 m + (1 - b1) d; v = b2 v + (1 - b2) d^2;
    /// p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps).
    pub fn adam_with(
        params: &[&Tensor],
        lr: f64,
        beta1: f64,
        beta2: f64,
        eps: f64,
        weight_decay: f64,
    ) -> Result<Optimizer> {
        let hs = handles(params);
        // SAFETY: as sgd_with.
        make(|out| unsafe {
            sys::ag_optimizer_adam(out, hs.as_ptr(), hs.len() as i64, lr, beta1, beta2, eps, weight_decay)
        })
    }

    /// AdamW with torch's defaults (betas 0.9, 0.999, eps 1e-8, weight decay 0.01).
    pub fn adamw(params: &[&Tensor], lr: f64) -> Result<Optimizer> {
        Optimizer::adamw_with(params, lr, 0.9, 0.999, 1e-8, 0.01)
    }

    /// AdamW: p *= 1 - lr * weight_decay, then the Adam step with d = grad.
    pub fn adamw_with(
        params: &[&Tensor],
        lr: f64,
        beta1: f64,
        beta2: f64,
        eps: f64,
        weight_decay: f64,
    ) -> Result<Optimizer> {
        let hs = handles(params);
        // SAFETY: as sgd_with.
        make(|out| unsafe {
            sys::ag_optimizer_adamw(out, hs.as_ptr(), hs.len() as i64, lr, beta1, beta2, eps, weight_decay)
        })
    }

    /// One update of every parameter that has a gradient.
    pub fn step(&self) -> Result<()> {
        // SAFETY: a handle by value.
        check(unsafe { sys::ag_optimizer_step(self.h) })
    }

    /// Clears every parameter's gradient.
    pub fn zero_grad(&self) -> Result<()> {
        // SAFETY: a handle by value.
        check(unsafe { sys::ag_optimizer_zero_grad(self.h) })
    }

    /// The learning rate.
    pub fn lr(&self) -> Result<f64> {
        let mut lr = 0.0;
        // SAFETY: `lr` is a valid place for the result.
        check(unsafe { sys::ag_optimizer_lr(&mut lr, self.h) })?;
        Ok(lr)
    }

    /// Changes the learning rate for the following steps.
    pub fn set_lr(&self, lr: f64) -> Result<()> {
        // SAFETY: a handle and a number by value.
        check(unsafe { sys::ag_optimizer_set_lr(self.h, lr) })
    }

    /// The raw handle, still owned by this value.
    pub fn handle(&self) -> sys::ag_optimizer {
        self.h
    }
}
