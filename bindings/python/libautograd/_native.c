/*
 * _native.c - the per-op path of the Python package libautograd in compiled code.
 *
 * Without this extension every operator of a Tensor runs Python code that converts the
 * arguments for ctypes, calls libautograd.so through ctypes (which releases and re-takes the
 * GIL and builds a ctypes object per argument) and wraps the new handle in a Tensor: about
 * 2.5 to 3.5 microseconds per scalar op, of which the library itself takes about 0.2. This file
 * does the same work in C:
 *
 *   - TensorBase, the base of the Python class libautograd.Tensor (tensor.py), holds the handle
 *     in a C field and frees it when the object is deallocated (tp_dealloc), instead of a
 *     Python __del__;
 *   - its number protocol (+ - * / ** @, unary - + abs) and comparisons call the ag_* function
 *     directly when the operands are Tensors or plain Python numbers (float, int, bool), and
 *     allocate the result as an instance of the Python Tensor class without running __init__;
 *   - Op, a callable that the package puts in place of the unary functions and full reductions
 *     of ops.py (ag.tanh(x), x.relu(), x.sum(), ag.add(a, b), ...), with the same fast path.
 *
 * Everything else (NumPy scalars, arrays and lists, keyword arguments, axes, operands of other
 * types) calls the Python implementation it replaces, which is kept (tensor.py's _PythonBase,
 * ops.py's functions), so results, dtype rules, errors and messages are the same on both paths.
 * A failing call raises through the package's own errors.check, so the exception type and
 * message are those of the Python path.
 *
 * The library is not linked at build time: libautograd/_accel.py passes the addresses of the
 * functions that _library.py loaded (init()), after checking that their ctypes prototypes,
 * generated from include/autograd.h, match SIGNATURES below; so library discovery stays in one
 * place and the extension works with whichever libautograd.so the package found.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if PY_VERSION_HEX < 0x03090000
#error "libautograd._native needs Python 3.9 or later (3.8 uses the pure-Python path)"
#endif

/* Bumped whenever the interface between this file and _accel.py / tensor.py changes; _accel.py
 * uses the extension only when it finds the number it expects (a stale build is ignored). */
#define NATIVE_ABI 1

/* ---- the library's types, restated from include/autograd.h -------------------------------- */

typedef int32_t ag_status;
typedef uint64_t ag_tensor;
typedef ag_status (*fn_binary)(ag_tensor *out, ag_tensor a, ag_tensor b);
typedef ag_status (*fn_scalar)(ag_tensor *out, ag_tensor a, double s);
typedef ag_status (*fn_unary)(ag_tensor *out, ag_tensor a);
typedef ag_status (*fn_reduce)(ag_tensor *out, ag_tensor a, const int64_t *axes, int64_t naxes,
                               bool keepdims);
typedef ag_status (*fn_free)(ag_tensor t);
typedef ag_status (*fn_full)(ag_tensor *out, const int64_t *shape, int64_t ndim, double value,
                             int32_t dtype);
typedef ag_status (*fn_dtype)(int32_t *out, ag_tensor t);

/* The functions the Tensor slots call, with their signatures as _accel.py checks them against
 * the ctypes prototypes: one letter per parameter, o = ag_tensor *, t = ag_tensor, d = double,
 * a = const int64_t *, n = int64_t, b = bool, i = int32_t (ag_dtype), I = int32_t *; every one
 * returns ag_status (int32_t). */
enum {
    F_ADD, F_SUB, F_MUL, F_DIV, F_POW, F_MATMUL,
    F_EQ, F_NE, F_LT, F_LE, F_GT, F_GE,
    F_ADD_S, F_SUB_S, F_RSUB_S, F_MUL_S, F_DIV_S, F_RDIV_S, F_POW_S, F_RPOW_S,
    F_NEG, F_ABS, F_FREE, F_FULL, F_DTYPE,
    F_COUNT
};

static const struct {
    const char *name;
    const char *signature;
} FUNCTIONS[F_COUNT] = {
    [F_ADD] = {"ag_add", "ott"},           [F_SUB] = {"ag_sub", "ott"},
    [F_MUL] = {"ag_mul", "ott"},           [F_DIV] = {"ag_div", "ott"},
    [F_POW] = {"ag_pow", "ott"},           [F_MATMUL] = {"ag_matmul", "ott"},
    [F_EQ] = {"ag_eq", "ott"},             [F_NE] = {"ag_ne", "ott"},
    [F_LT] = {"ag_lt", "ott"},             [F_LE] = {"ag_le", "ott"},
    [F_GT] = {"ag_gt", "ott"},             [F_GE] = {"ag_ge", "ott"},
    [F_ADD_S] = {"ag_add_scalar", "otd"},  [F_SUB_S] = {"ag_sub_scalar", "otd"},
    [F_RSUB_S] = {"ag_rsub_scalar", "otd"}, [F_MUL_S] = {"ag_mul_scalar", "otd"},
    [F_DIV_S] = {"ag_div_scalar", "otd"},  [F_RDIV_S] = {"ag_rdiv_scalar", "otd"},
    [F_POW_S] = {"ag_pow_scalar", "otd"},  [F_RPOW_S] = {"ag_rpow_scalar", "otd"},
    [F_NEG] = {"ag_neg", "ot"},            [F_ABS] = {"ag_abs", "ot"},
    [F_FREE] = {"ag_tensor_free", "t"},    [F_FULL] = {"ag_tensor_full", "oandi"},
    [F_DTYPE] = {"ag_tensor_dtype", "It"},
};

/* Op kinds that call a library function given when the Op is made, with its signature. */
#define UNARY_SIGNATURE "ot"
#define REDUCE_SIGNATURE "otanb"

/* The addresses given to init(); all NULL until then. */
static void *fn[F_COUNT];

/* The Python implementations the slots fall back to, by the name they have on tensor.py's
 * _PythonBase: called as fallback(self, other) for every case the fast path leaves. */
enum {
    FB_ADD, FB_RADD, FB_SUB, FB_RSUB, FB_MUL, FB_RMUL, FB_TRUEDIV, FB_RTRUEDIV,
    FB_POW, FB_RPOW, FB_MATMUL, FB_RMATMUL,
    FB_LT, FB_LE, FB_EQ, FB_NE, FB_GT, FB_GE, /* in the order of Py_LT .. Py_GE */
    FB_COUNT
};
static const char *const FALLBACK_NAMES[FB_COUNT] = {
    "__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__", "__truediv__",
    "__rtruediv__", "__pow__", "__rpow__", "__matmul__", "__rmatmul__",
    "__lt__", "__le__", "__eq__", "__ne__", "__gt__", "__ge__",
};

/* Set once by bind() and kept for the life of the process (strong references, never
 * released: the module is never unloaded). tensor_type is the Python class Tensor, the type of
 * every result; check is errors.check. */
static PyTypeObject *tensor_type;
static PyObject *check_fn;
static PyObject *fallback[FB_COUNT];

/* ---- calling the library ----------------------------------------------------------------- */

/* Whether a library call should let other Python threads run meanwhile. ctypes releases the GIL
 * around every call; doing so here costs a noticeable share of a scalar op. So it is released
 * only when this interpreter has another thread state, i.e. when another Python thread could
 * want to run (during a large kernel, as it would with the pure path). Thread states of Python
 * threads are made while their creator holds the GIL, so this read (under the GIL) sees them; a
 * foreign thread entering Python through a callback (PyGILState_Ensure) may be missed for one
 * call, and then only waits for the GIL until that call returns: none of the functions called
 * here run Python code on another thread, and the library runs hooks with its locks released.
 * Callbacks these calls run on this thread (ag_tensor_free running a hook's destroy function)
 * re-enter Python through ctypes' PyGILState_Ensure, which works whether or not the GIL is held. */
static int other_threads(void)
{
    PyThreadState *me = PyThreadState_Get();
    PyThreadState *head = PyInterpreterState_ThreadHead(PyThreadState_GetInterpreter(me));
    return head != me || PyThreadState_Next(head) != NULL;
}

#define AG_CALL(status, call)                    \
    do {                                         \
        if (other_threads()) {                   \
            Py_BEGIN_ALLOW_THREADS               \
            (status) = (call);                   \
            Py_END_ALLOW_THREADS                 \
        } else {                                 \
            (status) = (call);                   \
        }                                        \
    } while (0)

/* Raises the exception of a failed call exactly as the Python path does: through
 * errors.check(status), which reads this thread's ag_last_error() (no library call has been
 * made on this thread since the failing one) and attaches a pending callback exception.
 * Always returns NULL. */
static PyObject *raise_status(ag_status status)
{
    PyObject *done = PyObject_CallFunction(check_fn, "i", (int)status);
    if (done != NULL) { /* check() returned: it did not consider status a failure */
        Py_DECREF(done);
        PyErr_Format(PyExc_SystemError, "libautograd: status %d was not raised by check()",
                     (int)status);
    }
    return NULL;
}

static int is_finalizing(void)
{
#if PY_VERSION_HEX >= 0x030D0000
    return Py_IsFinalizing();
#else
    return _Py_IsFinalizing();
#endif
}

/* Frees a handle this module owns, keeping any exception that is being raised: it may run while
 * an exception propagates (a deallocation during unwinding, a result dropped after an error),
 * and ag_tensor_free can run Python callbacks (the destroy function of a hook's state), which
 * must not start with an exception set. Not at interpreter shutdown, where those callbacks
 * would meet a half-torn-down interpreter (the process is ending; the pure path skips it too). */
static void free_handle(ag_tensor handle)
{
    if (handle == 0 || is_finalizing())
        return;
#if PY_VERSION_HEX >= 0x030C0000
    PyObject *pending = PyErr_GetRaisedException();
#else
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
#endif
    ag_status status;
    AG_CALL(status, ((fn_free)fn[F_FREE])(handle));
    (void)status; /* as Tensor.__del__: a failed free has no one to report to */
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(pending);
#else
    PyErr_Restore(type, value, traceback);
#endif
}

/* ---- TensorBase ---------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    ag_tensor handle; /* the ag_tensor handle, 0 until set (Tensor.__init__, a result) */
    char owned;       /* whether this object frees handle when it goes (Tensor._owned) */
    char mask;        /* whether the values are a mask (Tensor._mask, tensor.py) */
} TensorBase;

#define TB(o) ((TensorBase *)(o))

/* Whether o is a libautograd.Tensor (isinstance(o, Tensor): Tensor's metaclass is type, so
 * this is the same test). False before bind(), when no Tensor exists yet. */
static inline int is_tensor(PyObject *o)
{
    return tensor_type != NULL &&
           (Py_TYPE(o) == tensor_type || PyType_IsSubtype(Py_TYPE(o), tensor_type));
}

/* A new Tensor owning handle (a result just returned by the library: this function takes it
 * over). Allocated by the Python class's tp_alloc, as object.__new__(Tensor) would, without
 * running __init__; its __dict__ is made only when an attribute is set. If the object cannot be
 * allocated the handle is freed, so it is not lost. */
static PyObject *wrap_handle(ag_tensor handle, int mask)
{
    PyObject *obj = tensor_type->tp_alloc(tensor_type, 0);
    if (obj == NULL) {
        free_handle(handle);
        return NULL;
    }
    TB(obj)->handle = handle;
    TB(obj)->owned = 1;
    TB(obj)->mask = (char)mask;
    return obj;
}

/* The Tensor for a call's result, or its exception. */
static inline PyObject *result(ag_status status, ag_tensor out, int mask)
{
    if (status != 0)
        return raise_status(status);
    return wrap_handle(out, mask);
}

static PyObject *tb_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    (void)args;
    (void)kwds;
    if (tensor_type == NULL || !PyType_IsSubtype(type, tensor_type)) {
        PyErr_SetString(PyExc_TypeError, "TensorBase is the base of libautograd.Tensor: "
                                         "make Tensors (libautograd.tensor(...)) instead");
        return NULL;
    }
    return type->tp_alloc(type, 0); /* zeroed: handle 0, not owned, not a mask */
}

static void tb_dealloc(PyObject *self)
{
    /* Reached through the Python subclass's dealloc, which has already untracked the object
     * from the GC and cleared its __dict__ and weak references; the object is ours alone. */
    TensorBase *t = TB(self);
    if (t->owned) {
        t->owned = 0;
        free_handle(t->handle);
    }
    Py_TYPE(self)->tp_free(self);
}

/* _handle, _owned and _mask, read and written by the Python code as the plain attributes they
 * are on the pure path (tensor.py: _wrap, free(), adopt_if_kept, the mask rules). */
static PyObject *tb_get_handle(PyObject *self, void *closure)
{
    (void)closure;
    return PyLong_FromUnsignedLongLong(TB(self)->handle);
}

static int tb_set_handle(PyObject *self, PyObject *value, void *closure)
{
    (void)closure;
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "a Tensor's _handle cannot be deleted");
        return -1;
    }
    PyObject *index = PyNumber_Index(value);
    if (index == NULL)
        return -1;
    unsigned long long handle = PyLong_AsUnsignedLongLong(index);
    Py_DECREF(index);
    if (handle == (unsigned long long)-1 && PyErr_Occurred())
        return -1;
    TB(self)->handle = handle;
    return 0;
}

static PyObject *tb_get_flag(PyObject *self, void *closure)
{
    char flag = closure == NULL ? TB(self)->owned : TB(self)->mask;
    return PyBool_FromLong(flag);
}

static int tb_set_flag(PyObject *self, PyObject *value, void *closure)
{
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "this Tensor attribute cannot be deleted");
        return -1;
    }
    int truth = PyObject_IsTrue(value);
    if (truth < 0)
        return -1;
    if (closure == NULL)
        TB(self)->owned = (char)truth;
    else
        TB(self)->mask = (char)truth;
    return 0;
}

static PyGetSetDef tb_getset[] = {
    {"_handle", tb_get_handle, tb_set_handle, "the ag_tensor handle (uint64)", NULL},
    {"_owned", tb_get_flag, tb_set_flag, "whether this object must free the handle", NULL},
    {"_mask", tb_get_flag, tb_set_flag, "whether this tensor is a mask", (void *)1},
    {NULL, NULL, NULL, NULL, NULL},
};

/* Tensor._wrap(handle, owned=True) and Tensor._wrap_mask(handle): a new object of class cls for
 * a handle the caller gives (tensor.py's _PythonBase documents them). */
static PyObject *make_wrapped(PyObject *cls, PyObject *handle_obj, int owned, int mask)
{
    if (!PyType_Check(cls) || tensor_type == NULL ||
        !PyType_IsSubtype((PyTypeObject *)cls, tensor_type)) {
        PyErr_SetString(PyExc_TypeError, "_wrap makes libautograd.Tensor objects only");
        return NULL;
    }
    PyObject *index = PyNumber_Index(handle_obj);
    if (index == NULL)
        return NULL;
    unsigned long long handle = PyLong_AsUnsignedLongLong(index);
    Py_DECREF(index);
    if (handle == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    PyTypeObject *type = (PyTypeObject *)cls;
    PyObject *obj = type->tp_alloc(type, 0);
    if (obj == NULL) {
        if (owned) /* the caller handed the handle over: nobody else will free it */
            free_handle(handle);
        return NULL;
    }
    TB(obj)->handle = handle;
    TB(obj)->owned = (char)owned;
    TB(obj)->mask = (char)mask;
    return obj;
}

static PyObject *tb_wrap(PyObject *cls, PyObject *const *args, Py_ssize_t nargs,
                         PyObject *kwnames)
{
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    PyObject *owned_obj = NULL;
    if (nargs == 2 && nkw == 0) {
        owned_obj = args[1];
    } else if (nargs == 1 && nkw == 1 &&
               PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, 0), "owned") == 0) {
        owned_obj = args[1]; /* borrowed, as all of args: the keyword values follow the positional */
    } else if (!(nargs == 1 && nkw == 0)) {
        PyErr_SetString(PyExc_TypeError, "_wrap(handle, owned=True) takes a handle and an "
                                         "optional owned flag");
        return NULL;
    }
    int owned = 1;
    if (owned_obj != NULL && (owned = PyObject_IsTrue(owned_obj)) < 0)
        return NULL;
    return make_wrapped(cls, args[0], owned, 0);
}

static PyObject *tb_wrap_mask(PyObject *cls, PyObject *handle)
{
    return make_wrapped(cls, handle, 1, 1);
}

static PyMethodDef tb_methods[] = {
    {"_wrap", (PyCFunction)(void (*)(void))tb_wrap, METH_FASTCALL | METH_KEYWORDS | METH_CLASS,
     "_wrap(handle, owned=True): a Tensor for a handle the caller gives (owned: freed when the "
     "Tensor is collected)."},
    {"_wrap_mask", (PyCFunction)tb_wrap_mask, METH_O | METH_CLASS,
     "_wrap_mask(handle): an owned Tensor for a handle holding 0/1 values, marked as a mask."},
    {NULL, NULL, 0, NULL},
};

/* ---- the number protocol -------------------------------------------------------------------- */

/* 1 when o is a plain Python number (exactly float, int or bool: NumPy scalars and other number
 * types take the Python path) and *value is float(o); 0 for anything else; -1 with the error
 * float(o) raises (OverflowError for an int beyond a double's range). */
static inline int plain_number_kind(PyObject *o)
{
    return PyFloat_CheckExact(o) || PyLong_CheckExact(o) || PyBool_Check(o);
}

static int plain_number(PyObject *o, double *value)
{
    if (PyFloat_CheckExact(o)) {
        *value = PyFloat_AS_DOUBLE(o);
        return 1;
    }
    if (PyLong_CheckExact(o) || PyBool_Check(o)) {
        double d = PyLong_AsDouble(o); /* what float(o) computes for an int */
        if (d == -1.0 && PyErr_Occurred())
            return -1;
        *value = d;
        return 1;
    }
    return 0;
}

static PyObject *call_fallback(int which, PyObject *self, PyObject *other)
{
    /* borrowed references: the caller holds self and other for the call; fallback[] holds its
     * own (bind) for the life of the process */
    PyObject *args[2] = {self, other};
    return PyObject_Vectorcall(fallback[which], args, 2, NULL);
}

/* A binary operator: a op b, where a or b is a Tensor (the slot of one of them was called). */
typedef struct {
    int both;         /* F_*: two tensors */
    int scalar;       /* F_*: tensor op number; -1 none (the Python path returns NotImplemented) */
    int rscalar;      /* F_*: number op tensor */
    int forward;      /* FB_*: self.__op__(other) */
    int reflected;    /* FB_*: self.__rop__(other) */
} BinaryOp;

static const BinaryOp OP_ADD = {F_ADD, F_ADD_S, F_ADD_S, FB_ADD, FB_RADD};
static const BinaryOp OP_SUB = {F_SUB, F_SUB_S, F_RSUB_S, FB_SUB, FB_RSUB};
static const BinaryOp OP_MUL = {F_MUL, F_MUL_S, F_MUL_S, FB_MUL, FB_RMUL};
static const BinaryOp OP_DIV = {F_DIV, F_DIV_S, F_RDIV_S, FB_TRUEDIV, FB_RTRUEDIV};
static const BinaryOp OP_POW = {F_POW, F_POW_S, F_RPOW_S, FB_POW, FB_RPOW};
static const BinaryOp OP_MATMUL = {F_MATMUL, -1, -1, FB_MATMUL, FB_RMATMUL};

/* The handles read from a and b are borrowed for the call: the caller holds a and b, and so their
 * handles, until the slot returns. Should another thread free one meanwhile (Tensor.free() while
 * the GIL is released), the library answers AG_ERR_INVALID_HANDLE or finishes with its own
 * reference, never a use after free: a freed handle never becomes valid again. */
static PyObject *binary(PyObject *a, PyObject *b, const BinaryOp *op)
{
    int a_tensor = is_tensor(a), b_tensor = is_tensor(b);
    ag_tensor out = 0;
    ag_status status;
    if (a_tensor && b_tensor) {
        AG_CALL(status, ((fn_binary)fn[op->both])(&out, TB(a)->handle, TB(b)->handle));
        return result(status, out, 0);
    }
    if (!a_tensor && !b_tensor)
        Py_RETURN_NOTIMPLEMENTED;
    /* As the Python path: self is the Tensor, other the other operand; reflected when the
     * Tensor is on the right (Python calls the right operand's slot with the operands in
     * their written order). */
    PyObject *self = a_tensor ? a : b, *other = a_tensor ? b : a;
    int scalar = a_tensor ? op->scalar : op->rscalar;
    if (scalar >= 0) {
        double value = 0.0;
        int kind = plain_number(other, &value);
        if (kind < 0)
            return NULL;
        if (kind > 0) {
            AG_CALL(status, ((fn_scalar)fn[scalar])(&out, TB(self)->handle, value));
            return result(status, out, 0);
        }
    }
    return call_fallback(a_tensor ? op->forward : op->reflected, self, other);
}

static PyObject *tb_add(PyObject *a, PyObject *b) { return binary(a, b, &OP_ADD); }
static PyObject *tb_sub(PyObject *a, PyObject *b) { return binary(a, b, &OP_SUB); }
static PyObject *tb_mul(PyObject *a, PyObject *b) { return binary(a, b, &OP_MUL); }
static PyObject *tb_truediv(PyObject *a, PyObject *b) { return binary(a, b, &OP_DIV); }
static PyObject *tb_matmul(PyObject *a, PyObject *b) { return binary(a, b, &OP_MATMUL); }

static PyObject *tb_pow(PyObject *a, PyObject *b, PyObject *modulo)
{
    if (modulo != Py_None) /* pow(a, b, m): the Python path has no three-argument form either */
        Py_RETURN_NOTIMPLEMENTED;
    return binary(a, b, &OP_POW);
}

static PyObject *unary_slot(PyObject *self, int which)
{
    /* self is a Tensor: Python calls a unary slot only on an object whose type has it */
    ag_tensor out = 0;
    ag_status status;
    AG_CALL(status, ((fn_unary)fn[which])(&out, TB(self)->handle));
    return result(status, out, 0);
}

static PyObject *tb_negative(PyObject *self) { return unary_slot(self, F_NEG); }
static PyObject *tb_absolute(PyObject *self) { return unary_slot(self, F_ABS); }

static PyObject *tb_positive(PyObject *self)
{
    Py_INCREF(self); /* +t is t itself, as on the Python path */
    return self;
}

static PyNumberMethods tb_as_number = {
    .nb_add = tb_add,
    .nb_subtract = tb_sub,
    .nb_multiply = tb_mul,
    .nb_true_divide = tb_truediv,
    .nb_power = tb_pow,
    .nb_matrix_multiply = tb_matmul,
    .nb_negative = tb_negative,
    .nb_positive = tb_positive,
    .nb_absolute = tb_absolute,
};

/* Comparisons: elementwise, 0/1 in self's dtype, marked as a mask (tensor.py's _compare). A
 * number on the other side becomes a 0-d tensor of self's dtype first, as coerce() makes it. */
static PyObject *tb_richcompare(PyObject *self, PyObject *other, int op)
{
    static const int functions[6] = {F_LT, F_LE, F_EQ, F_NE, F_GT, F_GE}; /* by Py_LT .. Py_GE */
    if (!is_tensor(self) || op < Py_LT || op > Py_GE)
        Py_RETURN_NOTIMPLEMENTED;
    fn_binary compare = (fn_binary)fn[functions[op]];
    ag_tensor out = 0;
    ag_status status;
    if (is_tensor(other)) {
        AG_CALL(status, compare(&out, TB(self)->handle, TB(other)->handle));
        return result(status, out, 1);
    }
    if (plain_number_kind(other)) {
        int32_t dtype = 0;
        AG_CALL(status, ((fn_dtype)fn[F_DTYPE])(&dtype, TB(self)->handle)); /* self.dtype */
        if (status != 0)
            return raise_status(status);
        double value = 0.0;
        if (plain_number(other, &value) < 0)
            return NULL;
        ag_tensor scalar = 0;
        AG_CALL(status, ((fn_full)fn[F_FULL])(&scalar, NULL, 0, value, dtype));
        if (status != 0)
            return raise_status(status);
        AG_CALL(status, compare(&out, TB(self)->handle, scalar));
        PyObject *res = result(status, out, 1); /* raised (reading ag_last_error) first ... */
        free_handle(scalar);                    /* ... then the temporary 0-d tensor goes */
        return res;
    }
    return call_fallback(FB_LT + op, self, other);
}

static PyTypeObject TensorBaseType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "libautograd._native.TensorBase",
    .tp_basicsize = sizeof(TensorBase),
    .tp_dealloc = tb_dealloc,
    .tp_as_number = &tb_as_number,
    .tp_richcompare = tb_richcompare,
    /* .tp_hash is set to object's (identity) in the module's init: defining tp_richcompare
     * alone would make the type unhashable. */
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "The compiled base of libautograd.Tensor: the handle, its release, the operators.",
    .tp_methods = tb_methods,
    .tp_getset = tb_getset,
    .tp_new = tb_new,
};

/* ---- Op: the fast path of the functions of ops.py ------------------------------------------ */

enum { OP_UNARY, OP_REDUCE, OP_PY_ADD, OP_PY_SUB, OP_PY_MUL, OP_PY_TRUEDIV, OP_PY_POW };

static const char *const OP_KINDS[] = {"unary", "reduce", "add", "sub", "mul", "truediv",
                                       "pow", NULL};

typedef struct {
    PyObject_HEAD
    int kind;
    void *function;       /* OP_UNARY: fn_unary, OP_REDUCE: fn_reduce; else NULL */
    PyObject *fallback;   /* the Python function: every call the fast path does not take */
    vectorcallfunc vectorcall;
} OpObject;

static PyObject *op_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf,
                               PyObject *kwnames)
{
    OpObject *op = (OpObject *)callable;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (kwnames == NULL || PyTuple_GET_SIZE(kwnames) == 0) {
        ag_tensor out = 0;
        ag_status status;
        switch (op->kind) {
        case OP_UNARY: /* f(x): as ops._unary */
            if (nargs == 1 && is_tensor(args[0])) {
                AG_CALL(status, ((fn_unary)op->function)(&out, TB(args[0])->handle));
                return result(status, out, 0);
            }
            break;
        case OP_REDUCE: /* f(x): over every axis, keepdim False, as ops._reduce(fn, x, None, False) */
            if (nargs == 1 && is_tensor(args[0])) {
                AG_CALL(status, ((fn_reduce)op->function)(&out, TB(args[0])->handle, NULL, 0, false));
                return result(status, out, 0);
            }
            break;
        default: /* add(a, b) ...: as ops._operator, the operator when either is a Tensor */
            if (nargs == 2 && (is_tensor(args[0]) || is_tensor(args[1]))) {
                switch (op->kind) {
                case OP_PY_ADD: return PyNumber_Add(args[0], args[1]);
                case OP_PY_SUB: return PyNumber_Subtract(args[0], args[1]);
                case OP_PY_MUL: return PyNumber_Multiply(args[0], args[1]);
                case OP_PY_TRUEDIV: return PyNumber_TrueDivide(args[0], args[1]);
                case OP_PY_POW: return PyNumber_Power(args[0], args[1], Py_None);
                }
            }
            break;
        }
    }
    /* The same arguments, flags included: PY_VECTORCALL_ARGUMENTS_OFFSET, when set, was granted
     * by our caller for args[-1], which the callee may then borrow in turn. */
    return PyObject_Vectorcall(op->fallback, args, nargsf, kwnames);
}

static PyObject *op_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *keywords[] = {"kind", "address", "fallback", NULL};
    const char *kind_name;
    unsigned long long address;
    PyObject *fallback_fn;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "sKO:Op", keywords, &kind_name, &address,
                                     &fallback_fn))
        return NULL;
    int kind = -1;
    for (int k = 0; OP_KINDS[k] != NULL; k++)
        if (strcmp(kind_name, OP_KINDS[k]) == 0)
            kind = k;
    if (kind < 0) {
        PyErr_Format(PyExc_ValueError, "unknown Op kind %s", kind_name);
        return NULL;
    }
    if ((kind == OP_UNARY || kind == OP_REDUCE) != (address != 0)) {
        PyErr_SetString(PyExc_ValueError,
                        "Op: unary and reduce need a function's address, the operators none");
        return NULL;
    }
    if (!PyCallable_Check(fallback_fn)) {
        PyErr_SetString(PyExc_TypeError, "Op: fallback must be callable");
        return NULL;
    }
    OpObject *op = (OpObject *)type->tp_alloc(type, 0);
    if (op == NULL)
        return NULL;
    op->kind = kind;
    /* The address is that of a library function whose ctypes prototype _accel.py checked
     * against UNARY_SIGNATURE / REDUCE_SIGNATURE before making this Op. */
    op->function = (void *)(uintptr_t)address;
    Py_INCREF(fallback_fn);
    op->fallback = fallback_fn;
    op->vectorcall = op_vectorcall;
    return (PyObject *)op;
}

static int op_traverse(PyObject *self, visitproc visit, void *arg)
{
    Py_VISIT(((OpObject *)self)->fallback);
    return 0;
}

static int op_clear(PyObject *self)
{
    Py_CLEAR(((OpObject *)self)->fallback);
    return 0;
}

static void op_dealloc(PyObject *self)
{
    PyObject_GC_UnTrack(self);
    op_clear(self);
    Py_TYPE(self)->tp_free(self);
}

/* As a function stored on a class, an Op becomes a method: t.tanh() calls tanh(t). The
 * Py_TPFLAGS_METHOD_DESCRIPTOR flag lets the interpreter call it with self as the first argument
 * without making a bound method. */
static PyObject *op_descr_get(PyObject *self, PyObject *obj, PyObject *type)
{
    (void)type;
    if (obj == NULL || obj == Py_None) {
        Py_INCREF(self);
        return self;
    }
    return PyMethod_New(self, obj);
}

/* __name__, __qualname__, __module__, __doc__ are the Python function's, and __wrapped__ is that
 * function (inspect.signature and help() follow it). */
static PyObject *op_get_attr(PyObject *self, void *name)
{
    PyObject *fallback_fn = ((OpObject *)self)->fallback;
    if (fallback_fn == NULL) {
        PyErr_SetString(PyExc_AttributeError, (const char *)name);
        return NULL;
    }
    return PyObject_GetAttrString(fallback_fn, (const char *)name);
}

static PyObject *op_get_wrapped(PyObject *self, void *closure)
{
    (void)closure;
    PyObject *fallback_fn = ((OpObject *)self)->fallback;
    if (fallback_fn == NULL)
        Py_RETURN_NONE;
    Py_INCREF(fallback_fn);
    return fallback_fn;
}

static PyGetSetDef op_getset[] = {
    {"__name__", op_get_attr, NULL, NULL, "__name__"},
    {"__qualname__", op_get_attr, NULL, NULL, "__qualname__"},
    {"__module__", op_get_attr, NULL, NULL, "__module__"},
    {"__doc__", op_get_attr, NULL, NULL, "__doc__"},
    {"__wrapped__", op_get_wrapped, NULL, "the Python function this Op runs when its fast path "
                                          "does not apply", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyObject *op_repr(PyObject *self)
{
    PyObject *name = op_get_attr(self, "__qualname__");
    if (name == NULL)
        return NULL;
    PyObject *text = PyUnicode_FromFormat("<compiled libautograd op %S>", name);
    Py_DECREF(name);
    return text;
}

/* Pickled by name, as the function it stands for (pickle finds it again in its module). */
static PyObject *op_reduce(PyObject *self, PyObject *unused)
{
    (void)unused;
    return op_get_attr(self, "__qualname__");
}

static PyMethodDef op_methods[] = {
    {"__reduce__", op_reduce, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject OpType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "libautograd._native.Op",
    .tp_basicsize = sizeof(OpObject),
    .tp_dealloc = op_dealloc,
    .tp_vectorcall_offset = offsetof(OpObject, vectorcall),
    .tp_repr = op_repr,
    .tp_call = PyVectorcall_Call,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL |
                Py_TPFLAGS_METHOD_DESCRIPTOR,
    .tp_doc = "Op(kind, address, fallback): a function of ops.py with a compiled fast path.",
    .tp_traverse = op_traverse,
    .tp_clear = op_clear,
    .tp_methods = op_methods,
    .tp_getset = op_getset,
    .tp_descr_get = op_descr_get,
    .tp_new = op_new,
};

/* ---- module functions ------------------------------------------------------------------------ */

/* init(addresses, check): addresses maps each name of SIGNATURES to the address of that library
 * function (checked by _accel.py); check is errors.check. Once, before any Tensor exists. */
static PyObject *native_init(PyObject *module, PyObject *args)
{
    (void)module;
    PyObject *addresses, *check;
    if (!PyArg_ParseTuple(args, "O!O:init", &PyDict_Type, &addresses, &check))
        return NULL;
    if (check_fn != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "libautograd._native.init was already called");
        return NULL;
    }
    void *found[F_COUNT];
    for (int i = 0; i < F_COUNT; i++) {
        PyObject *address = PyDict_GetItemString(addresses, FUNCTIONS[i].name); /* borrowed */
        if (address == NULL) {
            PyErr_Format(PyExc_KeyError, "init: no address for %s", FUNCTIONS[i].name);
            return NULL;
        }
        unsigned long long value = PyLong_AsUnsignedLongLong(address);
        if (value == (unsigned long long)-1 && PyErr_Occurred())
            return NULL;
        if (value == 0) {
            PyErr_Format(PyExc_ValueError, "init: %s has address 0", FUNCTIONS[i].name);
            return NULL;
        }
        found[i] = (void *)(uintptr_t)value;
    }
    memcpy(fn, found, sizeof fn);
    Py_INCREF(check);
    check_fn = check; /* kept for the life of the process */
    Py_RETURN_NONE;
}

/* bind(Tensor, python_base): Tensor, the Python class deriving from TensorBase, is the type of
 * every result; python_base (tensor.py's _PythonBase) holds the Python operators the slots fall
 * back to. Once, right after the class is made. */
static PyObject *native_bind(PyObject *module, PyObject *args)
{
    (void)module;
    PyObject *type, *python_base;
    if (!PyArg_ParseTuple(args, "O!O:bind", &PyType_Type, &type, &python_base))
        return NULL;
    if (check_fn == NULL || tensor_type != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "bind needs init() first, and runs once");
        return NULL;
    }
    if (!PyType_IsSubtype((PyTypeObject *)type, &TensorBaseType)) {
        PyErr_SetString(PyExc_TypeError, "bind: the class must derive from TensorBase");
        return NULL;
    }
    PyObject *found[FB_COUNT];
    for (int i = 0; i < FB_COUNT; i++) {
        found[i] = PyObject_GetAttrString(python_base, FALLBACK_NAMES[i]);
        if (found[i] == NULL) {
            for (int j = 0; j < i; j++)
                Py_DECREF(found[j]);
            return NULL;
        }
    }
    memcpy(fallback, found, sizeof fallback); /* the new references are kept for good */
    Py_INCREF(type);
    tensor_type = (PyTypeObject *)type;
    Py_RETURN_NONE;
}

static PyMethodDef native_functions[] = {
    {"init", native_init, METH_VARARGS,
     "init(addresses, check): the library's functions (name: address) and errors.check."},
    {"bind", native_bind, METH_VARARGS,
     "bind(Tensor, python_base): the Tensor class and the Python operators to fall back to."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "libautograd._native",
    .m_doc = "The compiled per-op path of libautograd (see _native.c and _accel.py).",
    .m_size = -1, /* one instance per process: its state is this file's statics */
    .m_methods = native_functions,
};

PyMODINIT_FUNC PyInit__native(void)
{
    TensorBaseType.tp_hash = PyBaseObject_Type.tp_hash; /* identity, as object.__hash__ */
    if (PyType_Ready(&TensorBaseType) < 0 || PyType_Ready(&OpType) < 0)
        return NULL;
    PyObject *module = PyModule_Create(&native_module);
    if (module == NULL)
        return NULL;
    PyObject *signatures = PyDict_New();
    if (signatures == NULL)
        goto fail;
    for (int i = 0; i < F_COUNT; i++) {
        PyObject *sig = PyUnicode_FromString(FUNCTIONS[i].signature);
        if (sig == NULL || PyDict_SetItemString(signatures, FUNCTIONS[i].name, sig) < 0) {
            Py_XDECREF(sig);
            Py_DECREF(signatures);
            goto fail;
        }
        Py_DECREF(sig);
    }
    if (PyModule_AddObject(module, "SIGNATURES", signatures) < 0) { /* steals on success */
        Py_DECREF(signatures);
        goto fail;
    }
    Py_INCREF(&TensorBaseType);
    if (PyModule_AddObject(module, "TensorBase", (PyObject *)&TensorBaseType) < 0) {
        Py_DECREF(&TensorBaseType);
        goto fail;
    }
    Py_INCREF(&OpType);
    if (PyModule_AddObject(module, "Op", (PyObject *)&OpType) < 0) {
        Py_DECREF(&OpType);
        goto fail;
    }
    if (PyModule_AddIntConstant(module, "ABI", NATIVE_ABI) < 0 ||
        PyModule_AddStringConstant(module, "UNARY_SIGNATURE", UNARY_SIGNATURE) < 0 ||
        PyModule_AddStringConstant(module, "REDUCE_SIGNATURE", REDUCE_SIGNATURE) < 0)
        goto fail;
    return module;
fail:
    Py_DECREF(module);
    return NULL;
}
