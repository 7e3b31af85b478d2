//! `Tensor`: one owned handle, its constructors, accessors and the graph calls.

use std::fmt;
use std::mem::ManuallyDrop;

use crate::error::{check, expect_ok, Error, Result, Status};
use crate::sys;

/// Element types. Operands of one operation must have the same dtype (no implicit promotion);
/// only `F32` and `F64` values are computed with and have gradients.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// `AG_FLOAT32`
    F32,
    /// `AG_FLOAT64`
    F64,
    /// `AG_INT64`: indices, labels, counts.
    I64,
    /// `AG_BOOL`: masks, one byte each.
    Bool,
}

impl DType {
    /// The C code (`sys::AG_FLOAT64`, ...).
    pub fn code(self) -> sys::ag_dtype {
        match self {
            DType::F32 => sys::AG_FLOAT32,
            DType::F64 => sys::AG_FLOAT64,
            DType::I64 => sys::AG_INT64,
            DType::Bool => sys::AG_BOOL,
        }
    }

    /// The dtype of a C code, `None` for one the header does not define.
    pub fn from_code(code: sys::ag_dtype) -> Option<DType> {
        match code {
            sys::AG_FLOAT32 => Some(DType::F32),
            sys::AG_FLOAT64 => Some(DType::F64),
            sys::AG_INT64 => Some(DType::I64),
            sys::AG_BOOL => Some(DType::Bool),
            _ => None,
        }
    }
}

/// Weight initialisers for [`Tensor::init`] (torch.nn.init conventions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Init {
    /// `AG_INIT_KAIMING_UNIFORM`: U(-b, b), b = sqrt(6 / fan_in).
    KaimingUniform,
    /// `AG_INIT_KAIMING_NORMAL`: N(0, 2 / fan_in).
    KaimingNormal,
    /// `AG_INIT_XAVIER_UNIFORM`: U(-b, b), b = sqrt(6 / (fan_in + fan_out)).
    XavierUniform,
    /// `AG_INIT_XAVIER_NORMAL`: N(0, 2 / (fan_in + fan_out)).
    XavierNormal,
}

impl Init {
    fn code(self) -> sys::ag_init {
        match self {
            Init::KaimingUniform => sys::AG_INIT_KAIMING_UNIFORM,
            Init::KaimingNormal => sys::AG_INIT_KAIMING_NORMAL,
            Init::XavierUniform => sys::AG_INIT_XAVIER_UNIFORM,
            Init::XavierNormal => sys::AG_INIT_XAVIER_NORMAL,
        }
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
    impl Sealed for i64 {}
    impl Sealed for bool {}
}

/// A Rust element type a tensor can be made from and read into: `f32`, `f64`, `i64`, `bool`.
pub trait Element: sealed::Sealed + Copy + Default + 'static {
    /// The dtype whose C representation this type shares.
    const DTYPE: DType;
    /// The tensor's elements converted to this type (see [`Tensor::to_vec`]).
    #[doc(hidden)]
    fn read(t: &Tensor) -> Result<Vec<Self>>;
}

macro_rules! plain_element {
    ($($t:ty => $d:ident),*) => {$(
        impl Element for $t {
            const DTYPE: DType = DType::$d;
            fn read(t: &Tensor) -> Result<Vec<$t>> {
                let mut out = vec![<$t>::default(); t.numel() as usize];
                // SAFETY: `out` holds numel elements of the type the dtype code names (the C
                // float, double or int64_t), and `capacity` says so: the library writes at most
                // that many, or nothing on failure.
                check(unsafe {
                    sys::ag_tensor_copy_data(out.as_mut_ptr().cast(), out.len() as i64, DType::$d.code(), t.handle())
                })?;
                Ok(out)
            }
        }
    )*};
}
plain_element!(f32 => F32, f64 => F64, i64 => I64);

impl Element for bool {
    const DTYPE: DType = DType::Bool;
    fn read(t: &Tensor) -> Result<Vec<bool>> {
        // Read as bytes and compare, rather than letting C write into `bool`s.
        let mut bytes = vec![0u8; t.numel() as usize];
        // SAFETY: `bytes` holds numel one-byte elements, the size of AG_BOOL's elements, and
        // `capacity` says so.
        check(unsafe {
            sys::ag_tensor_copy_data(bytes.as_mut_ptr().cast(), bytes.len() as i64, sys::AG_BOOL, t.handle())
        })?;
        Ok(bytes.into_iter().map(|b| b != 0).collect())
    }
}

/// A tensor: the owner of one library handle (`ag_tensor`).
///
/// - Dropping it frees the handle (`ag_tensor_free`); the tensor itself lives on while a graph
///   or another handle needs it. Errors on free are ignored (there are none for a live handle).
/// - `clone()` takes a new handle to the *same* tensor (its values, graph, `requires_grad` and
///   gradient), not a copy of the values: a library call, which fails only when the library
///   cannot make a handle (out of memory, or the table of 1,048,575 live handles full), and then
///   `clone()` panics; [`Tensor::try_clone`] returns that error instead.
/// - Operations are methods returning [`Result`]; the operators `+ - * /` and unary `-` are the
///   same methods and panic on error (see the crate's documentation).
///
/// Handles are plain numbers the library checks on every call, so no handle can cause
/// undefined behaviour; `Tensor` is `Send` and `Sync` because the header allows using tensors
/// from several threads at once (see the crate's documentation on threads).
pub struct Tensor {
    // Invariant: a live tensor handle owned by this value (never 0).
    h: sys::ag_tensor,
}

impl Drop for Tensor {
    fn drop(&mut self) {
        // SAFETY: ag_tensor_free takes a handle by value; the library checks it. Its status is
        // ignored: a Drop cannot report it, and a live owned handle always frees.
        unsafe {
            sys::ag_tensor_free(self.h);
        }
    }
}

impl Clone for Tensor {
    /// A new handle to the same tensor; panics if the library cannot make one (see the type).
    #[track_caller]
    fn clone(&self) -> Tensor {
        match self.try_clone() {
            Ok(t) => t,
            Err(e) => panic!("autograd: Tensor::clone could not take a new handle: {e}"),
        }
    }
}

impl fmt::Debug for Tensor {
    /// `Tensor(F64 [2, 3] [values...], requires_grad)`, values shown up to 16 elements. Never
    /// panics: a handle the library does not know shows as such.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut n = 0i64;
        // SAFETY: `n` is a valid place for the result; the handle is checked.
        if unsafe { sys::ag_tensor_numel(&mut n, self.h) } != sys::AG_OK {
            return write!(f, "Tensor(not a live handle: {:#x})", self.h);
        }
        write!(f, "Tensor({:?} {:?}", self.dtype(), self.shape())?;
        if n <= 16 {
            if let Ok(v) = self.to_vec::<f64>() {
                write!(f, " {v:?}")?;
            }
        }
        if self.requires_grad() {
            write!(f, ", requires_grad")?;
        }
        write!(f, ")")
    }
}

/// The pointer to pass for a shape or axis list: NULL when empty (the C API allows it then).
pub(crate) fn ptr_or_null(v: &[i64]) -> *const i64 {
    if v.is_empty() {
        std::ptr::null()
    } else {
        v.as_ptr()
    }
}

/// Calls a C function of the form `f(&out, ...)` that writes one new tensor handle, and owns it.
pub(crate) fn make(f: impl FnOnce(*mut sys::ag_tensor) -> sys::ag_status) -> Result<Tensor> {
    let mut out: sys::ag_tensor = sys::AG_NULL_TENSOR;
    check(f(&mut out))?;
    Ok(Tensor { h: out })
}

/// The raw handles of `tensors`, for the C functions that take arrays.
pub(crate) fn handles(tensors: &[&Tensor]) -> Vec<sys::ag_tensor> {
    tensors.iter().map(|t| t.h).collect()
}

/// The element count of a shape, if every extent is >= 0 and the product fits.
fn numel_of(shape: &[i64]) -> Option<i64> {
    shape.iter().try_fold(1i64, |n, &e| if e < 0 { None } else { n.checked_mul(e) })
}

impl Tensor {
    // ---- handles ----

    /// Takes over `handle`, a tensor handle the caller owns: the returned `Tensor` frees it.
    /// Safe because the library checks every handle (a dead or made-up one makes each call
    /// fail with `InvalidHandle`, and the accessors that cannot fail on a live handle panic).
    pub fn from_raw(handle: sys::ag_tensor) -> Tensor {
        Tensor { h: handle }
    }

    /// Gives up ownership: the caller must free the returned handle (`ag_tensor_free`).
    pub fn into_raw(self) -> sys::ag_tensor {
        ManuallyDrop::new(self).h
    }

    /// The raw handle, still owned by this `Tensor` (for calling `sys` functions directly).
    pub fn handle(&self) -> sys::ag_tensor {
        self.h
    }

    /// A `Tensor` over a handle the library lends to a callback: it must never be dropped.
    pub(crate) fn borrowed(handle: sys::ag_tensor) -> ManuallyDrop<Tensor> {
        ManuallyDrop::new(Tensor { h: handle })
    }

    /// A new handle to this very tensor (same values, graph, `requires_grad` and gradient).
    /// For float tensors it is `ag_dropout` in eval mode, which the header defines as "a new
    /// handle to a itself" (its generator is never drawn from); for int64 and bool tensors,
    /// which have no graph or gradient, `ag_to_dtype` to their own dtype.
    pub fn try_clone(&self) -> Result<Tensor> {
        match self.dtype() {
            DType::F32 | DType::F64 => {
                let mut g: sys::ag_generator = 0;
                // SAFETY: `g` is a valid place for the new generator handle.
                check(unsafe { sys::ag_generator_new(&mut g, 0) })?;
                // SAFETY: `out` is a valid place for one handle; the handles are checked.
                let t = make(|out| unsafe { sys::ag_dropout(out, self.h, 0.0, false, g) });
                // SAFETY: frees the generator made above (after the error message was read).
                unsafe {
                    sys::ag_generator_free(g);
                }
                t
            }
            // SAFETY: `out` is a valid place for one handle; the handle is checked.
            d => make(|out| unsafe { sys::ag_to_dtype(out, self.h, d.code()) }),
        }
    }

    // ---- constructors ----

    /// A new leaf holding a copy of `data` (row-major) with `shape`; `data.len()` must be the
    /// shape's element count (else `Status::Shape`). `&[]` as shape makes a scalar (0-d).
    pub fn from_slice<T: Element>(data: &[T], shape: &[i64]) -> Result<Tensor> {
        match numel_of(shape) {
            Some(n) if n as u128 != data.len() as u128 => {
                return Err(Error::new(
                    Status::Shape,
                    format!("Tensor::from_slice: {} values for shape {:?} of {} elements", data.len(), shape, n),
                ))
            }
            _ => {} // a negative extent or an overflow: the library reports it
        }
        let ptr = if data.is_empty() { std::ptr::null() } else { data.as_ptr().cast() };
        // SAFETY: `data` holds numel(shape) elements of T, whose layout is the dtype's C element
        // (f32 = float, f64 = double, i64 = int64_t, bool = one byte 0/1), checked just above
        // when the shape is valid (the library rejects other shapes before reading data);
        // `shape` holds `shape.len()` extents.
        make(|out| unsafe {
            sys::ag_tensor_from_data(out, ptr, ptr_or_null(shape), shape.len() as i64, T::DTYPE.code())
        })
    }

    /// A 0-d float64 leaf holding `value`.
    pub fn scalar(value: f64) -> Result<Tensor> {
        Tensor::full(&[], value, DType::F64)
    }

    /// A leaf of zeros.
    pub fn zeros(shape: &[i64], dtype: DType) -> Result<Tensor> {
        // SAFETY: `out` is a valid place for one handle; `shape` holds shape.len() extents.
        make(|out| unsafe { sys::ag_tensor_zeros(out, ptr_or_null(shape), shape.len() as i64, dtype.code()) })
    }

    /// A leaf of ones.
    pub fn ones(shape: &[i64], dtype: DType) -> Result<Tensor> {
        // SAFETY: as for zeros.
        make(|out| unsafe { sys::ag_tensor_ones(out, ptr_or_null(shape), shape.len() as i64, dtype.code()) })
    }

    /// A leaf filled with `value` (converted to `dtype`).
    pub fn full(shape: &[i64], value: f64, dtype: DType) -> Result<Tensor> {
        // SAFETY: as for zeros.
        make(|out| unsafe { sys::ag_tensor_full(out, ptr_or_null(shape), shape.len() as i64, value, dtype.code()) })
    }

    /// A 1-D leaf start, start + step, ... before stop (numpy.arange).
    pub fn arange(start: f64, stop: f64, step: f64, dtype: DType) -> Result<Tensor> {
        // SAFETY: `out` is a valid place for one handle.
        make(|out| unsafe { sys::ag_tensor_arange(out, start, stop, step, dtype.code()) })
    }

    /// An (n, m) leaf with ones on the main diagonal.
    pub fn eye(n: i64, m: i64, dtype: DType) -> Result<Tensor> {
        // SAFETY: `out` is a valid place for one handle.
        make(|out| unsafe { sys::ag_tensor_eye(out, n, m, dtype.code()) })
    }

    /// A leaf of uniform values in [low, high); the same seed gives the same values everywhere.
    pub fn rand_uniform(shape: &[i64], low: f64, high: f64, seed: u64, dtype: DType) -> Result<Tensor> {
        // SAFETY: as for zeros.
        make(|out| unsafe {
            sys::ag_tensor_rand_uniform(out, ptr_or_null(shape), shape.len() as i64, low, high, seed, dtype.code())
        })
    }

    /// A leaf of normal values (mean, std), seeded like [`Tensor::rand_uniform`].
    pub fn rand_normal(shape: &[i64], mean: f64, std: f64, seed: u64, dtype: DType) -> Result<Tensor> {
        // SAFETY: as for zeros.
        make(|out| unsafe {
            sys::ag_tensor_rand_normal(out, ptr_or_null(shape), shape.len() as i64, mean, std, seed, dtype.code())
        })
    }

    /// A leaf initialised by `kind` (Kaiming or Xavier) from a generator seeded with `seed`.
    pub fn init(shape: &[i64], kind: Init, seed: u64, dtype: DType) -> Result<Tensor> {
        // SAFETY: as for zeros.
        make(|out| unsafe {
            sys::ag_tensor_init(out, ptr_or_null(shape), shape.len() as i64, kind.code(), seed, dtype.code())
        })
    }

    // ---- accessors (infallible on a live handle) ----

    /// The rank (0 for a scalar).
    pub fn ndim(&self) -> usize {
        let mut n = 0i64;
        // SAFETY: `n` is a valid place for the result.
        expect_ok(unsafe { sys::ag_tensor_ndim(&mut n, self.h) }, "ag_tensor_ndim");
        n as usize
    }

    /// The extents.
    pub fn shape(&self) -> Vec<i64> {
        let mut buf = [0i64; sys::AG_MAX_NDIM as usize];
        // SAFETY: `buf` holds AG_MAX_NDIM extents, the most any tensor has, and capacity says so.
        expect_ok(unsafe { sys::ag_tensor_shape(buf.as_mut_ptr(), buf.len() as i64, self.h) }, "ag_tensor_shape");
        buf[..self.ndim()].to_vec()
    }

    /// The number of elements (1 for a scalar).
    pub fn numel(&self) -> i64 {
        let mut n = 0i64;
        // SAFETY: `n` is a valid place for the result.
        expect_ok(unsafe { sys::ag_tensor_numel(&mut n, self.h) }, "ag_tensor_numel");
        n
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        let mut d: sys::ag_dtype = 0;
        // SAFETY: `d` is a valid place for the result.
        expect_ok(unsafe { sys::ag_tensor_dtype(&mut d, self.h) }, "ag_tensor_dtype");
        DType::from_code(d).unwrap_or_else(|| panic!("autograd: the library gave an unknown dtype {d}"))
    }

    /// Whether this tensor requires grad (a marked leaf, or a recorded result).
    pub fn requires_grad(&self) -> bool {
        let mut b = false;
        // SAFETY: `b` is a valid place for the result.
        expect_ok(unsafe { sys::ag_tensor_requires_grad(&mut b, self.h) }, "ag_tensor_requires_grad");
        b
    }

    // ---- values ----

    /// The single element of a one-element tensor, as f64 (`Status::Shape` otherwise).
    pub fn item(&self) -> Result<f64> {
        let mut v = 0f64;
        // SAFETY: `v` is a valid place for the result.
        check(unsafe { sys::ag_tensor_item(&mut v, self.h) })?;
        Ok(v)
    }

    /// A copy of the elements, row-major, converted to `T`: float32 <-> float64 both ways;
    /// int64 and bool also to a float type, bool to int64; others are `Status::DType`.
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        T::read(self)
    }

    /// The elements as f64 (`to_vec::<f64>()`).
    pub fn to_vec_f64(&self) -> Result<Vec<f64>> {
        self.to_vec()
    }

    /// The elements as f32 (`to_vec::<f32>()`).
    pub fn to_vec_f32(&self) -> Result<Vec<f32>> {
        self.to_vec()
    }

    /// Writes `src`'s values into this tensor in place (broadcast to its shape; PyTorch's
    /// `copy_`). For parameters, do it under [`crate::no_grad`].
    pub fn copy_from(&self, src: &Tensor) -> Result<()> {
        // SAFETY: both arguments are handles, checked by the library.
        check(unsafe { sys::ag_tensor_copy_(self.h, src.h) })
    }

    // ---- the graph ----

    /// Marks a leaf as one whose gradient is wanted (or not). `Status::State` for a result with
    /// recorded history; `Status::DType` for int64 and bool tensors.
    pub fn set_requires_grad(&self, requires_grad: bool) -> Result<()> {
        // SAFETY: a handle and a flag by value.
        check(unsafe { sys::ag_tensor_set_requires_grad(self.h, requires_grad) })
    }

    /// This tensor marked as requiring grad (`set_requires_grad(true)`), for chaining:
    /// `Tensor::from_slice(&[1.0, 2.0], &[2])?.requiring_grad()?`.
    pub fn requiring_grad(self) -> Result<Tensor> {
        self.set_requires_grad(true)?;
        Ok(self)
    }

    /// Backpropagates from this scalar (numel 1) tensor into the gradients of the leaves it
    /// depends on (read them with [`Tensor::grad`]). The graph is released afterwards.
    pub fn backward(&self) -> Result<()> {
        self.backward_with(None, false, false)
    }

    /// Backpropagates with a seed (`None` means 1, for a scalar; else a tensor of this shape
    /// and dtype), optionally keeping the graph (`retain_graph`) or recording the backward
    /// itself for higher derivatives (`create_graph`).
    pub fn backward_with(&self, seed: Option<&Tensor>, retain_graph: bool, create_graph: bool) -> Result<()> {
        let seed = seed.map_or(sys::AG_NULL_TENSOR, |s| s.h);
        // SAFETY: handles and flags by value.
        check(unsafe { sys::ag_backward(self.h, seed, retain_graph, create_graph) })
    }

    /// The gradient accumulated in this leaf by backward passes (a snapshot), or `None` if
    /// there is none (never reached, cleared, or not a leaf).
    pub fn grad(&self) -> Result<Option<Tensor>> {
        let mut g = sys::AG_NULL_TENSOR;
        // SAFETY: `g` is a valid place for one handle.
        check(unsafe { sys::ag_tensor_grad(&mut g, self.h) })?;
        Ok(if g == sys::AG_NULL_TENSOR { None } else { Some(Tensor { h: g }) })
    }

    /// Clears the accumulated gradient.
    pub fn zero_grad(&self) -> Result<()> {
        // SAFETY: a handle by value.
        check(unsafe { sys::ag_tensor_zero_grad(self.h) })
    }

    /// A new tensor sharing these values, with no history and not requiring grad.
    pub fn detach(&self) -> Result<Tensor> {
        // SAFETY: `out` is a valid place for one handle.
        make(|out| unsafe { sys::ag_detach(out, self.h) })
    }

    /// The graph that produced this tensor, as Graphviz DOT text.
    pub fn graph_to_dot(&self) -> Result<String> {
        let mut len = 0i64;
        // SAFETY: out NULL with capacity 0 asks for the length only, written to `len`.
        check(unsafe { sys::ag_graph_to_dot(std::ptr::null_mut(), 0, &mut len, self.h) })?;
        let mut buf = vec![0u8; len as usize + 1];
        // SAFETY: `buf` holds len + 1 bytes and capacity says so; the library writes at most
        // capacity - 1 characters and a NUL.
        check(unsafe { sys::ag_graph_to_dot(buf.as_mut_ptr().cast(), buf.len() as i64, &mut len, self.h) })?;
        buf.truncate(len as usize);
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }
}

/// The gradients of the sum of `outputs` (each a scalar) with respect to `inputs`, returned
/// without touching any tensor's accumulated gradient (`torch.autograd.grad`). With
/// `create_graph` the gradients are differentiable (and the graph is kept).
pub fn grad(outputs: &[&Tensor], inputs: &[&Tensor], create_graph: bool) -> Result<Vec<Tensor>> {
    let outs = handles(outputs);
    let ins = handles(inputs);
    let mut grads = vec![sys::AG_NULL_TENSOR; ins.len()];
    // SAFETY: `outs` and `ins` hold the counts passed; `grads` has room for one handle per
    // input; seeds NULL means 1 for each (scalar) output.
    check(unsafe {
        sys::ag_grad(
            grads.as_mut_ptr(),
            outs.as_ptr(),
            outs.len() as i64,
            std::ptr::null(),
            ins.as_ptr(),
            ins.len() as i64,
            create_graph,
            create_graph,
            false,
        )
    })?;
    Ok(grads.into_iter().map(Tensor::from_raw).collect())
}
