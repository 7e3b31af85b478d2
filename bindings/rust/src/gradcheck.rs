//! `gradcheck`: a function's analytic gradient against central finite differences.

use std::ffi::c_void;

use crate::callback::guard;
use crate::error::{check, Result};
use crate::sys;
use crate::tensor::{handles, Tensor};

/// What [`gradcheck`] found: whether it passed, and the worst element.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GradcheckReport {
    /// Whether |analytic - numeric| <= atol + rtol * |numeric| held for every element.
    pub passed: bool,
    /// The input holding the worst element.
    pub worst_input: i64,
    /// Its flat (row-major) index.
    pub worst_index: i64,
    /// The analytic derivative there.
    pub worst_analytic: f64,
    /// The numeric (finite-difference) derivative there.
    pub worst_numeric: f64,
}

/// # Safety
/// Called by the library only, during the `ag_gradcheck` of `gradcheck::<F>`: `user_data` is
/// the `&F` passed there; `inputs` holds `ninputs` borrowed handles; `out` is a handle slot.
unsafe extern "C" fn build_trampoline<F>(
    out: *mut sys::ag_tensor,
    inputs: *const sys::ag_tensor,
    ninputs: i64,
    user_data: *mut c_void,
) -> i32
where
    F: Fn(&[&Tensor]) -> Result<Tensor>,
{
    guard("a gradcheck function", || {
        // SAFETY: user_data is the &F that outlives the ag_gradcheck call running this.
        let f = unsafe { &*(user_data as *const F) };
        let borrowed: Vec<_> = if inputs.is_null() || ninputs <= 0 {
            Vec::new()
        } else {
            // SAFETY: the library passes ninputs valid handles for the duration of the call.
            unsafe { std::slice::from_raw_parts(inputs, ninputs as usize) }
                .iter()
                .map(|&h| Tensor::borrowed(h))
                .collect()
        };
        let refs: Vec<&Tensor> = borrowed.iter().map(|t| &**t).collect();
        let y = f(&refs)?;
        // SAFETY: `out` is the library's valid slot; it takes the new handle over.
        unsafe { *out = y.into_raw() };
        Ok(())
    })
}

/// Checks the analytic gradient of `f` at `inputs` (float64 tensors; those that require grad
/// are checked) against central finite differences with step `eps`: the library calls `f` on
/// copies of the inputs, on this thread, as often as it needs. An `Err` or a panic in `f`
/// makes this return `Status::Callback` quoting it.
pub fn gradcheck<F>(f: F, inputs: &[&Tensor], eps: f64, atol: f64, rtol: f64) -> Result<GradcheckReport>
where
    F: Fn(&[&Tensor]) -> Result<Tensor>,
{
    let hs = handles(inputs);
    let mut r =
        GradcheckReport { passed: false, worst_input: 0, worst_index: 0, worst_analytic: 0.0, worst_numeric: 0.0 };
    // SAFETY: every output pointer is a valid place; `hs` holds hs.len() handles; `&f` outlives
    // the call, which is the only time the library uses it (it never frees user_data).
    check(unsafe {
        sys::ag_gradcheck(
            &mut r.passed,
            &mut r.worst_input,
            &mut r.worst_index,
            &mut r.worst_analytic,
            &mut r.worst_numeric,
            Some(build_trampoline::<F>),
            &f as *const F as *mut c_void,
            hs.as_ptr(),
            hs.len() as i64,
            eps,
            atol,
            rtol,
        )
    })?;
    Ok(r)
}
