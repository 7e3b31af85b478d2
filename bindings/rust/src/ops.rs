//! Operations on tensors: methods returning `Result`, and the operator traits over them.
//!
//! Each method is one C call of the header (its semantics and errors are documented there):
//! binary operations broadcast with NumPy's rules, and every result records a graph node when
//! an input requires grad and grad mode is on.

use std::ops::{Add, Div, Mul, Neg, Sub};

use crate::error::Result;
use crate::sys::{self, ag_status, ag_tensor};
use crate::tensor::{handles, make, ptr_or_null, Tensor};

type Unary = unsafe extern "C" fn(*mut ag_tensor, ag_tensor) -> ag_status;
type Binary = unsafe extern "C" fn(*mut ag_tensor, ag_tensor, ag_tensor) -> ag_status;
type WithScalar = unsafe extern "C" fn(*mut ag_tensor, ag_tensor, f64) -> ag_status;
type Reduce = unsafe extern "C" fn(*mut ag_tensor, ag_tensor, *const i64, i64, bool) -> ag_status;
type AlongAxis = unsafe extern "C" fn(*mut ag_tensor, ag_tensor, i64) -> ag_status;

impl Tensor {
    fn unary(&self, f: Unary) -> Result<Tensor> {
        // SAFETY: f is one of the header's `op(out, a)` functions: it writes one new handle to
        // `out` (a valid place) or nothing on failure; the handle is checked by the library.
        make(|out| unsafe { f(out, self.handle()) })
    }

    fn binary(&self, other: &Tensor, f: Binary) -> Result<Tensor> {
        // SAFETY: as `unary`, for the header's `op(out, a, b)` functions.
        make(|out| unsafe { f(out, self.handle(), other.handle()) })
    }

    fn with_scalar(&self, s: f64, f: WithScalar) -> Result<Tensor> {
        // SAFETY: as `unary`, for the header's `op(out, a, double)` functions.
        make(|out| unsafe { f(out, self.handle(), s) })
    }

    fn reduce(&self, axes: &[i64], keepdims: bool, f: Reduce) -> Result<Tensor> {
        // SAFETY: as `unary`; `axes` holds axes.len() entries (NULL with 0: every axis).
        make(|out| unsafe { f(out, self.handle(), ptr_or_null(axes), axes.len() as i64, keepdims) })
    }

    fn along_axis(&self, axis: i64, f: AlongAxis) -> Result<Tensor> {
        // SAFETY: as `unary`, for the header's `op(out, a, int64_t)` functions.
        make(|out| unsafe { f(out, self.handle(), axis) })
    }
}

macro_rules! unary_ops {
    ($($(#[$doc:meta])* $name:ident => $c:ident;)*) => {
        impl Tensor {$(
            $(#[$doc])*
            pub fn $name(&self) -> Result<Tensor> {
                self.unary(sys::$c)
            }
        )*}
    };
}

macro_rules! binary_ops {
    ($($(#[$doc:meta])* $name:ident => $c:ident;)*) => {
        impl Tensor {$(
            $(#[$doc])*
            pub fn $name(&self, other: &Tensor) -> Result<Tensor> {
                self.binary(other, sys::$c)
            }
        )*}
    };
}

macro_rules! scalar_ops {
    ($($(#[$doc:meta])* $name:ident => $c:ident;)*) => {
        impl Tensor {$(
            $(#[$doc])*
            pub fn $name(&self, s: f64) -> Result<Tensor> {
                self.with_scalar(s, sys::$c)
            }
        )*}
    };
}

macro_rules! reductions {
    ($($(#[$doc:meta])* $name:ident => $c:ident;)*) => {
        impl Tensor {$(
            $(#[$doc])*
            pub fn $name(&self, axes: &[i64], keepdims: bool) -> Result<Tensor> {
                self.reduce(axes, keepdims, sys::$c)
            }
        )*}
    };
}

macro_rules! axis_ops {
    ($($(#[$doc:meta])* $name:ident => $c:ident;)*) => {
        impl Tensor {$(
            $(#[$doc])*
            pub fn $name(&self, axis: i64) -> Result<Tensor> {
                self.along_axis(axis, sys::$c)
            }
        )*}
    };
}

unary_ops! {
    /// -a
    neg => ag_neg;
    /// e^a
    exp => ag_exp;
    /// The natural logarithm.
    log => ag_log;
    /// log(1 + a), accurate near 0.
    log1p => ag_log1p;
    /// e^a - 1, accurate near 0.
    expm1 => ag_expm1;
    /// The error function.
    erf => ag_erf;
    /// max(a, 0) (its derivative at 0 is taken to be 0).
    relu => ag_relu;
    /// The square root.
    sqrt => ag_sqrt;
    /// |a|
    abs => ag_abs;
    /// sin(a)
    sin => ag_sin;
    /// cos(a)
    cos => ag_cos;
    /// tanh(a)
    tanh => ag_tanh;
    /// 1 / (1 + e^-a)
    sigmoid => ag_sigmoid;
    /// x * Phi(x), the exact GELU.
    gelu => ag_gelu;
    /// log(1 + e^a)
    softplus => ag_softplus;
    /// Whether each element is zero, as bool (any dtype: non-zero is true).
    logical_not => ag_logical_not;
}

binary_ops! {
    /// a + b
    add => ag_add;
    /// a - b
    sub => ag_sub;
    /// a * b, elementwise.
    mul => ag_mul;
    /// a / b, elementwise (IEEE: x/0 is inf or nan).
    div => ag_div;
    /// a ** b, elementwise.
    pow => ag_pow;
    /// The larger of a and b, elementwise.
    maximum => ag_maximum;
    /// The smaller of a and b, elementwise.
    minimum => ag_minimum;
    /// atan2(a, b), elementwise.
    atan2 => ag_atan2;
    /// The matrix product with NumPy's matmul rules (batched, broadcasting).
    matmul => ag_matmul;
    /// The inner product of two 1-D tensors (0-d).
    dot => ag_dot;
    /// The outer product of two 1-D tensors.
    outer => ag_outer;
    /// mean((self - target)^2) over every element (0-d).
    mse_loss => ag_mse_loss;
    /// a == b (0/1 in a's dtype for floats; bool for int64 and bool). No gradient.
    eq => ag_eq;
    /// a != b
    ne => ag_ne;
    /// a < b
    lt => ag_lt;
    /// a <= b
    le => ag_le;
    /// a > b
    gt => ag_gt;
    /// a >= b
    ge => ag_ge;
    /// Elementwise and of masks, as bool.
    logical_and => ag_logical_and;
    /// Elementwise or of masks, as bool.
    logical_or => ag_logical_or;
}

scalar_ops! {
    /// a + s
    add_scalar => ag_add_scalar;
    /// a - s
    sub_scalar => ag_sub_scalar;
    /// s - a
    rsub_scalar => ag_rsub_scalar;
    /// a * s
    mul_scalar => ag_mul_scalar;
    /// a / s
    div_scalar => ag_div_scalar;
    /// s / a
    rdiv_scalar => ag_rdiv_scalar;
    /// a ** s
    pow_scalar => ag_pow_scalar;
    /// s ** a
    rpow_scalar => ag_rpow_scalar;
    /// max(a, s)
    maximum_scalar => ag_maximum_scalar;
    /// min(a, s)
    minimum_scalar => ag_minimum_scalar;
    /// max(a, 0) + slope * min(a, 0).
    leaky_relu => ag_leaky_relu;
}

reductions! {
    /// The sum over `axes` (empty: every axis); with keepdims the reduced axes stay as 1.
    sum_axes => ag_sum;
    /// The mean over `axes` (empty: every axis).
    mean_axes => ag_mean;
    /// The maximum over `axes` (empty: every axis); ties share the gradient.
    max_axes => ag_max;
    /// The minimum over `axes` (empty: every axis).
    min_axes => ag_min;
    /// log(sum(exp(a))) over `axes`, without overflow.
    logsumexp_axes => ag_logsumexp;
}

axis_ops! {
    /// softmax along `axis`.
    softmax => ag_softmax;
    /// log(softmax(a)) along `axis`.
    log_softmax => ag_log_softmax;
    /// The cumulative sum along `axis`.
    cumsum => ag_cumsum;
    /// A new extent-1 axis at `axis` of the result.
    unsqueeze => ag_unsqueeze;
}

impl Tensor {
    /// The sum of every element (0-d).
    pub fn sum(&self) -> Result<Tensor> {
        self.sum_axes(&[], false)
    }

    /// The mean of every element (0-d).
    pub fn mean(&self) -> Result<Tensor> {
        self.mean_axes(&[], false)
    }

    /// The variance over `axes` with `correction` subtracted from the count (1: sample).
    pub fn var_axes(&self, axes: &[i64], correction: i64, keepdims: bool) -> Result<Tensor> {
        // SAFETY: `out` is a valid place for one handle; `axes` holds axes.len() entries.
        make(|out| unsafe {
            sys::ag_var(out, self.handle(), ptr_or_null(axes), axes.len() as i64, correction, keepdims)
        })
    }

    /// Limits to [min, max] (pass f64::NEG_INFINITY / f64::INFINITY for no bound).
    pub fn clamp(&self, min: f64, max: f64) -> Result<Tensor> {
        // SAFETY: `out` is a valid place for one handle.
        make(|out| unsafe { sys::ag_clamp(out, self.handle(), min, max) })
    }

    /// The same elements with another shape (one extent may be -1).
    pub fn reshape(&self, shape: &[i64]) -> Result<Tensor> {
        // SAFETY: `out` is a valid place for one handle; `shape` holds shape.len() extents.
        make(|out| unsafe { sys::ag_reshape(out, self.handle(), ptr_or_null(shape), shape.len() as i64) })
    }

    /// Axes dim0 and dim1 swapped (negative axes count from the end).
    pub fn transpose(&self, dim0: i64, dim1: i64) -> Result<Tensor> {
        // SAFETY: `out` is a valid place for one handle.
        make(|out| unsafe { sys::ag_transpose(out, self.handle(), dim0, dim1) })
    }

    /// The last two axes swapped (a matrix transposed).
    pub fn t(&self) -> Result<Tensor> {
        self.transpose(-2, -1)
    }

    /// The axes reordered: result axis `i` is axis `perm[i]`.
    pub fn permute(&self, perm: &[i64]) -> Result<Tensor> {
        // SAFETY: `out` is a valid place for one handle; `perm` holds perm.len() entries.
        make(|out| unsafe { sys::ag_permute(out, self.handle(), ptr_or_null(perm), perm.len() as i64) })
    }

    /// Broadcast to `shape` (-1 keeps an extent).
    pub fn expand(&self, shape: &[i64]) -> Result<Tensor> {
        // SAFETY: `out` is a valid place for one handle; `shape` holds shape.len() extents.
        make(|out| unsafe { sys::ag_expand(out, self.handle(), ptr_or_null(shape), shape.len() as i64) })
    }

    /// Without the given extent-1 axes (empty: every extent-1 axis).
    pub fn squeeze(&self, axes: &[i64]) -> Result<Tensor> {
        // SAFETY: `out` is a valid place for one handle; `axes` holds axes.len() entries.
        make(|out| unsafe { sys::ag_squeeze(out, self.handle(), ptr_or_null(axes), axes.len() as i64) })
    }

    /// Elements start, start + step, ... before stop along `axis` (Python's `a[start:stop:step]`).
    pub fn slice(&self, axis: i64, start: i64, stop: i64, step: i64) -> Result<Tensor> {
        // SAFETY: `out` is a valid place for one handle.
        make(|out| unsafe { sys::ag_slice(out, self.handle(), axis, start, stop, step) })
    }

    /// The entries `indices` along `axis`.
    pub fn index_select(&self, axis: i64, indices: &[i64]) -> Result<Tensor> {
        // SAFETY: `out` is a valid place for one handle; `indices` holds indices.len() entries.
        make(|out| unsafe {
            sys::ag_index_select(out, self.handle(), axis, ptr_or_null(indices), indices.len() as i64)
        })
    }

    /// The values converted to `dtype` (differentiable between float32 and float64).
    pub fn to_dtype(&self, dtype: crate::DType) -> Result<Tensor> {
        // SAFETY: `out` is a valid place for one handle.
        make(|out| unsafe { sys::ag_to_dtype(out, self.handle(), dtype.code()) })
    }

    /// The index (int64) of the largest element along `axis`.
    pub fn argmax(&self, axis: i64, keepdims: bool) -> Result<Tensor> {
        // SAFETY: `out` is a valid place for one handle.
        make(|out| unsafe { sys::ag_argmax(out, self.handle(), axis, keepdims) })
    }

    /// The mean cross-entropy of these (N, C) logits against N class labels.
    pub fn cross_entropy(&self, labels: &[i64]) -> Result<Tensor> {
        // SAFETY: `out` is a valid place for one handle; `labels` holds labels.len() entries.
        make(|out| unsafe { sys::ag_cross_entropy(out, self.handle(), ptr_or_null(labels), labels.len() as i64) })
    }

    /// self @ weight^T + bias (PyTorch's linear): weight (out, in), bias (out) or none.
    pub fn linear(&self, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        let bias = bias.map_or(sys::AG_NULL_TENSOR, Tensor::handle);
        // SAFETY: `out` is a valid place for one handle; handles are checked.
        make(|out| unsafe { sys::ag_linear(out, self.handle(), weight.handle(), bias) })
    }

    /// `cond ? a : b` elementwise (cond non-zero is true), all three broadcast together.
    pub fn where_(cond: &Tensor, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        // SAFETY: `out` is a valid place for one handle; handles are checked.
        make(|out| unsafe { sys::ag_where(out, cond.handle(), a.handle(), b.handle()) })
    }

    /// The tensors joined along an existing axis.
    pub fn concat(tensors: &[&Tensor], axis: i64) -> Result<Tensor> {
        let hs = handles(tensors);
        // SAFETY: `hs` holds hs.len() handles; `out` is a valid place for one handle.
        make(|out| unsafe { sys::ag_concat(out, hs.as_ptr(), hs.len() as i64, axis) })
    }

    /// The tensors (of one shape) stacked along a new axis.
    pub fn stack(tensors: &[&Tensor], axis: i64) -> Result<Tensor> {
        let hs = handles(tensors);
        // SAFETY: as concat.
        make(|out| unsafe { sys::ag_stack(out, hs.as_ptr(), hs.len() as i64, axis) })
    }
}

// ---- operator traits ----
//
// Operators cannot return a Result, so they panic, with the library's status and message, when
// the operation fails: a failure there is a programming error (shapes that do not broadcast,
// mixed dtypes), as an out-of-bounds index is for slices. Use the methods (`a.add(&b)?`) to
// handle such errors instead.

#[track_caller]
fn or_panic(r: Result<Tensor>, op: &str) -> Tensor {
    match r {
        Ok(t) => t,
        Err(e) => panic!("autograd: operator {op} failed: {e}"),
    }
}

macro_rules! operator {
    ($Trait:ident, $method:ident, $sym:literal, $tensor_op:ident, $scalar_op:ident, $rscalar_op:ident) => {
        impl $Trait<&Tensor> for &Tensor {
            type Output = Tensor;
            #[track_caller]
            fn $method(self, rhs: &Tensor) -> Tensor {
                or_panic(Tensor::$tensor_op(self, rhs), $sym)
            }
        }
        impl $Trait<Tensor> for &Tensor {
            type Output = Tensor;
            #[track_caller]
            fn $method(self, rhs: Tensor) -> Tensor {
                or_panic(Tensor::$tensor_op(self, &rhs), $sym)
            }
        }
        impl $Trait<&Tensor> for Tensor {
            type Output = Tensor;
            #[track_caller]
            fn $method(self, rhs: &Tensor) -> Tensor {
                or_panic(Tensor::$tensor_op(&self, rhs), $sym)
            }
        }
        impl $Trait<Tensor> for Tensor {
            type Output = Tensor;
            #[track_caller]
            fn $method(self, rhs: Tensor) -> Tensor {
                or_panic(Tensor::$tensor_op(&self, &rhs), $sym)
            }
        }
        impl $Trait<f64> for &Tensor {
            type Output = Tensor;
            #[track_caller]
            fn $method(self, rhs: f64) -> Tensor {
                or_panic(Tensor::$scalar_op(self, rhs), $sym)
            }
        }
        impl $Trait<f64> for Tensor {
            type Output = Tensor;
            #[track_caller]
            fn $method(self, rhs: f64) -> Tensor {
                or_panic(Tensor::$scalar_op(&self, rhs), $sym)
            }
        }
        impl $Trait<&Tensor> for f64 {
            type Output = Tensor;
            #[track_caller]
            fn $method(self, rhs: &Tensor) -> Tensor {
                or_panic(Tensor::$rscalar_op(rhs, self), $sym)
            }
        }
        impl $Trait<Tensor> for f64 {
            type Output = Tensor;
            #[track_caller]
            fn $method(self, rhs: Tensor) -> Tensor {
                or_panic(Tensor::$rscalar_op(&rhs, self), $sym)
            }
        }
    };
}

operator!(Add, add, "+", add, add_scalar, add_scalar);
operator!(Sub, sub, "-", sub, sub_scalar, rsub_scalar);
operator!(Mul, mul, "*", mul, mul_scalar, mul_scalar);
operator!(Div, div, "/", div, div_scalar, rdiv_scalar);

impl Neg for &Tensor {
    type Output = Tensor;
    #[track_caller]
    fn neg(self) -> Tensor {
        or_panic(Tensor::neg(self), "unary -")
    }
}

impl Neg for Tensor {
    type Output = Tensor;
    #[track_caller]
    fn neg(self) -> Tensor {
        or_panic(Tensor::neg(&self), "unary -")
    }
}
