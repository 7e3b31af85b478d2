#!/usr/bin/env python3
"""Optimizer reference test: libautograd.so's SGD, Adam and AdamW against optax, in float64.

Through ctypes on the C API (include/autograd.h) this script runs each optimizer configuration
for 5 steps on two float64 parameters (shapes (3,) and (2, 2)). The gradient of step t is that of
the loss
    L_t(p) = sum(c_t * p) + 0.5 * sum(p * p),    so    grad_t = c_t + p,
built and backpropagated through the library (ag_mul, ag_sum, ag_add, ag_backward), with fixed
random coefficients c_t; ag_optimizer_zero_grad clears the gradients between steps. The same 5
steps run in optax (optax.sgd / optax.adam / optax.adamw; Adam's L2 weight decay as
optax.add_decayed_weights before optax.adam, which is torch.optim.Adam's weight_decay) with
grad_t = c_t + p computed in NumPy, and the parameters must agree after every step to
max |ours - optax| < 1e-10.

Each configuration runs twice: with a constant learning rate, and with the learning rate changed
between steps by ag_optimizer_set_lr (optax: optax.inject_hyperparams, the new rate written into
the state before the step), which also checks that the change takes effect.

Besides, for every optimizer, one or two steps on a one-element parameter are computed by hand
in Python floats from the formulas in the header and compared (to 1e-15 relative), and
ag_optimizer_lr / set_lr are checked directly (lr 0 freezes plain SGD; the next step uses the
new rate). At the end no handle may be left live.

Usage: AUTOGRAD_LIB=path/to/libautograd.so python3 Tests/reference/optimizers.py [--verbose]
Prints one line per check that fails (all with --verbose), then "N passed, M failed"; exits
non-zero on any failure. Installs optax with pip if it is missing.
"""

import ctypes
import math
import os
import subprocess
import sys
from ctypes import POINTER, byref, c_bool, c_char_p, c_double, c_int32, c_int64, c_uint64, c_void_p

import numpy as np

try:
    import optax
except ImportError:  # the reference needs optax: install it once
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "optax"], check=True)
    import optax

import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_platforms", "cpu")
import jax.numpy as jnp  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LIB_PATH = os.environ.get("AUTOGRAD_LIB") or os.path.join(REPO, ".build", "release", "libautograd.so")
AG_FLOAT64 = 2
TOLERANCE = 1e-10
STEPS = 5

VERBOSE = "--verbose" in sys.argv[1:]

# ------------------------------------------------------------------------------------------------
# The C API through ctypes
# ------------------------------------------------------------------------------------------------

lib = ctypes.CDLL(LIB_PATH)
T = c_uint64  # ag_tensor and ag_optimizer handles
PT = POINTER(c_uint64)
for name, args in {
    "ag_tensor_from_data": [PT, c_void_p, POINTER(c_int64), c_int64, c_int32],
    "ag_tensor_set_requires_grad": [T, c_bool],
    "ag_tensor_copy_data": [c_void_p, c_int64, c_int32, T],
    "ag_tensor_free": [T],
    "ag_tensor_grad": [PT, T],
    "ag_mul": [PT, T, T],
    "ag_add": [PT, T, T],
    "ag_mul_scalar": [PT, T, c_double],
    "ag_sum": [PT, T, POINTER(c_int64), c_int64, c_bool],
    "ag_backward": [T, T, c_bool, c_bool],
    "ag_optimizer_sgd": [PT, PT, c_int64, c_double, c_double, c_bool, c_double],
    "ag_optimizer_adam": [PT, PT, c_int64, c_double, c_double, c_double, c_double, c_double],
    "ag_optimizer_adamw": [PT, PT, c_int64, c_double, c_double, c_double, c_double, c_double],
    "ag_optimizer_step": [T],
    "ag_optimizer_zero_grad": [T],
    "ag_optimizer_set_lr": [T, c_double],
    "ag_optimizer_lr": [POINTER(c_double), T],
    "ag_optimizer_free": [T],
    "ag_live_handle_count": [POINTER(c_int64)],
}.items():
    fn = getattr(lib, name)
    fn.argtypes = args
    fn.restype = c_int32
lib.ag_last_error.restype = c_char_p
lib.ag_last_error.argtypes = []


class LibraryError(RuntimeError):
    pass


def call(name, *args):
    status = getattr(lib, name)(*args)
    if status != 0:
        raise LibraryError(f"{name} failed with status {status}: {lib.ag_last_error().decode()}")


def tensor(values, requires_grad=False):
    a = np.ascontiguousarray(values, dtype=np.float64)
    shape = (c_int64 * max(a.ndim, 1))(*a.shape)
    out = T()
    call("ag_tensor_from_data", byref(out), a.ctypes.data, shape, a.ndim, AG_FLOAT64)
    if requires_grad:
        call("ag_tensor_set_requires_grad", out, True)
    return out.value


def values(t, shape):
    out = np.empty(shape, dtype=np.float64)
    call("ag_tensor_copy_data", out.ctypes.data, max(out.size, 1), AG_FLOAT64, t)
    return out


def free(*handles):
    for h in handles:
        call("ag_tensor_free", h)


def op(name, *args):
    out = T()
    call(name, byref(out), *args)
    return out.value


def total(t):
    return op("ag_sum", t, None, 0, False)


def make_optimizer(kind, params, hp):
    arr = (c_uint64 * len(params))(*params)
    out = T()
    if kind == "sgd":
        call("ag_optimizer_sgd", byref(out), arr, len(params), hp["lr"], hp.get("momentum", 0.0),
             hp.get("nesterov", False), hp.get("weight_decay", 0.0))
    else:
        call(f"ag_optimizer_{kind}", byref(out), arr, len(params), hp["lr"], hp.get("b1", 0.9), hp.get("b2", 0.999),
             hp.get("eps", 1e-8), hp.get("weight_decay", 0.0))
    return out.value


def live_handles():
    n = c_int64()
    call("ag_live_handle_count", byref(n))
    return n.value


def backward_loss(params, coefficients):
    """Accumulates the gradient of sum(c * p) + 0.5 * sum(p * p) over the parameters."""
    terms = []
    for p, c in zip(params, coefficients):
        ct = tensor(c)
        linear = op("ag_mul", ct, p)
        square = op("ag_mul", p, p)
        half = op("ag_mul_scalar", square, 0.5)
        both = op("ag_add", linear, half)
        terms.append(total(both))
        free(ct, linear, square, half, both)
    loss = terms[0]
    for extra in terms[1:]:
        s = op("ag_add", loss, extra)
        free(loss, extra)
        loss = s
    call("ag_backward", loss, 0, False, False)
    free(loss)


# ------------------------------------------------------------------------------------------------
# Checks
# ------------------------------------------------------------------------------------------------

passed = failed = 0


def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
    if not ok or VERBOSE:
        print(f"{'ok  ' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}")


# ------------------------------------------------------------------------------------------------
# 1. Five steps against optax
# ------------------------------------------------------------------------------------------------

SHAPES = [(3,), (2, 2)]
rng = np.random.default_rng(20240611)
INITIAL = [rng.normal(size=s) for s in SHAPES]
COEFFICIENTS = [[rng.normal(scale=2.0, size=s) for s in SHAPES] for _ in range(STEPS)]
CHANGED_LRS = [1.0, 1.0, 0.5, 2.0, 0.1]  # multipliers of the base rate, step by step


def optax_transform(kind, hp):
    """The optax optimizer for a configuration, with an injectable learning rate."""
    if kind == "sgd":
        momentum = hp.get("momentum", 0.0)
        inner = optax.inject_hyperparams(optax.sgd)(learning_rate=hp["lr"], momentum=momentum if momentum > 0 else None,
                                                    nesterov=hp.get("nesterov", False))
        wd = hp.get("weight_decay", 0.0)
        return optax.chain(optax.add_decayed_weights(wd), inner) if wd else inner
    if kind == "adam":
        inner = optax.inject_hyperparams(optax.adam)(learning_rate=hp["lr"], b1=hp.get("b1", 0.9), b2=hp.get("b2", 0.999),
                                                     eps=hp.get("eps", 1e-8))
        wd = hp.get("weight_decay", 0.0)
        return optax.chain(optax.add_decayed_weights(wd), inner) if wd else inner
    return optax.inject_hyperparams(optax.adamw)(learning_rate=hp["lr"], b1=hp.get("b1", 0.9), b2=hp.get("b2", 0.999),
                                                 eps=hp.get("eps", 1e-8), weight_decay=hp.get("weight_decay", 0.0))


def set_optax_lr(state, lr):
    """Writes lr into the hyperparameters of every optax.inject_hyperparams state inside an
    optax state (InjectHyperparamsState or, in newer optax, InjectStatefulHyperparamsState)."""
    hyperparams = getattr(state, "hyperparams", None)
    if isinstance(hyperparams, dict) and "learning_rate" in hyperparams:
        hyperparams["learning_rate"] = jnp.asarray(lr, dtype=jnp.float64)
    elif isinstance(state, tuple):
        for s in state:
            set_optax_lr(s, lr)


def optax_trajectory(kind, hp, lrs):
    tx = optax_transform(kind, hp)
    params = [jnp.asarray(p) for p in INITIAL]
    state = tx.init(params)
    out = []
    for t in range(STEPS):
        set_optax_lr(state, lrs[t])
        grads = [jnp.asarray(c) + p for c, p in zip(COEFFICIENTS[t], params)]
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        out.append([np.asarray(p) for p in params])
    return out


def library_trajectory(kind, hp, lrs):
    params = [tensor(p, requires_grad=True) for p in INITIAL]
    opt = make_optimizer(kind, params, hp)
    out, lr_seen = [], []
    for t in range(STEPS):
        if t > 0:  # lrs[0] is the rate the optimizer was made with
            call("ag_optimizer_set_lr", opt, lrs[t])
        lr = c_double()
        call("ag_optimizer_lr", byref(lr), opt)
        lr_seen.append(lr.value)
        call("ag_optimizer_zero_grad", opt)
        backward_loss(params, COEFFICIENTS[t])
        call("ag_optimizer_step", opt)
        out.append([values(p, s) for p, s in zip(params, SHAPES)])
    call("ag_optimizer_free", opt)
    free(*params)
    return out, lr_seen


CONFIGS = [
    ("sgd", {"lr": 0.1}),
    ("sgd", {"lr": 0.1, "weight_decay": 0.05}),
    ("sgd", {"lr": 0.05, "momentum": 0.9}),
    ("sgd", {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.05}),
    ("sgd", {"lr": 0.05, "momentum": 0.8, "nesterov": True}),
    ("sgd", {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01}),
    ("adam", {"lr": 0.01}),
    ("adam", {"lr": 0.05, "b1": 0.8, "b2": 0.99, "eps": 1e-6}),
    ("adam", {"lr": 0.01, "weight_decay": 0.1}),
    ("adamw", {"lr": 0.01, "weight_decay": 0.01}),
    ("adamw", {"lr": 0.05, "b1": 0.85, "b2": 0.995, "eps": 1e-7, "weight_decay": 0.2}),
]

worst_by_kind = {}
for kind, hp in CONFIGS:
    for schedule in ("constant lr", "lr changed by set_lr"):
        lrs = [hp["lr"]] * STEPS if schedule == "constant lr" else [hp["lr"] * k for k in CHANGED_LRS]
        label = f"{kind} {hp} ({schedule})"
        try:
            ours, lr_seen = library_trajectory(kind, hp, lrs)
        except LibraryError as e:
            check(label, False, str(e))
            continue
        ref = optax_trajectory(kind, hp, lrs)
        err = max(float(np.max(np.abs(a - b))) for step_o, step_r in zip(ours, ref) for a, b in zip(step_o, step_r))
        worst_by_kind[kind] = max(worst_by_kind.get(kind, 0.0), err)
        check(label + " vs optax, 5 steps", err < TOLERANCE, f"max error {err:.3e}")
        check(label + ": ag_optimizer_lr reports the rate of each step", lr_seen == lrs, f"{lr_seen} vs {lrs}")
        if schedule != "constant lr":
            # The changed rate must matter: the trajectory differs from the constant-rate one.
            const = optax_trajectory(kind, hp, [hp["lr"]] * STEPS)
            moved = max(float(np.max(np.abs(a - b))) for a, b in zip(ours[-1], const[-1]))
            check(label + ": the changed learning rate takes effect", moved > 1e-6, f"difference {moved:.3e}")

# ------------------------------------------------------------------------------------------------
# 2. Steps computed by hand from the header's formulas (one-element parameter, grad = g_t)
# ------------------------------------------------------------------------------------------------


def library_steps(kind, hp, p0, grads, lrs=None):
    """Runs len(grads) steps on a one-element parameter whose gradient at step t is grads[t]
    (as the gradient of g_t * p), returning p after each step."""
    p = tensor([p0], requires_grad=True)
    opt = make_optimizer(kind, [p], hp)
    out = []
    for t, g in enumerate(grads):
        if lrs is not None:
            call("ag_optimizer_set_lr", opt, lrs[t])
        call("ag_optimizer_zero_grad", opt)
        gt = tensor([g])
        prod = op("ag_mul", gt, p)
        loss = total(prod)
        call("ag_backward", loss, 0, False, False)
        free(gt, prod, loss)
        call("ag_optimizer_step", opt)
        out.append(float(values(p, (1,))[0]))
    call("ag_optimizer_free", opt)
    free(p)
    return out


def close(a, b):
    return abs(a - b) <= 1e-15 * max(1.0, abs(b))


def hand(name, got, expected):
    check(f"hand-computed {name}", all(close(a, b) for a, b in zip(got, expected)) and len(got) == len(expected),
          f"got {got}, expected {expected}")


# SGD, plain: p -= lr * g.  p0 = 2, g = 0.5, lr = 0.1  ->  2 - 0.05 = 1.95
hand("SGD step", library_steps("sgd", {"lr": 0.1}, 2.0, [0.5]), [2.0 - 0.1 * 0.5])
# SGD, weight decay 0.1: d = 0.5 + 0.1 * 2 = 0.7; p = 2 - 0.1 * 0.7 = 1.93
hand("SGD step with weight decay", library_steps("sgd", {"lr": 0.1, "weight_decay": 0.1}, 2.0, [0.5]),
     [2.0 - 0.1 * (0.5 + 0.1 * 2.0)])
# SGD, momentum 0.9, two steps (g = 0.5, then -1):
#   step 1: buf = 0.5;                      p = 2 - 0.1 * 0.5 = 1.95
#   step 2: buf = 0.9 * 0.5 + (-1) = -0.55; p = 1.95 - 0.1 * (-0.55) = 2.005
p1 = 2.0 - 0.1 * 0.5
buf = 0.9 * 0.5 + (-1.0)
hand("SGD momentum, 2 steps", library_steps("sgd", {"lr": 0.1, "momentum": 0.9}, 2.0, [0.5, -1.0]),
     [p1, p1 - 0.1 * buf])
# SGD, Nesterov 0.9, two steps: the update is d + momentum * buf.
#   step 1: buf = 0.5;   p = 2 - 0.1 * (0.5 + 0.9 * 0.5) = 1.905
#   step 2: buf = -0.55; p = 1.905 - 0.1 * (-1 + 0.9 * -0.55) = 2.0545
p1 = 2.0 - 0.1 * (0.5 + 0.9 * 0.5)
buf = 0.9 * 0.5 + (-1.0)
hand("SGD Nesterov, 2 steps", library_steps("sgd", {"lr": 0.1, "momentum": 0.9, "nesterov": True}, 2.0, [0.5, -1.0]),
     [p1, p1 - 0.1 * (-1.0 + 0.9 * buf)])
# SGD momentum + weight decay 0.01, two steps, with the rate changed to 0.2 before step 2.
d1 = 0.5 + 0.01 * 2.0
p1 = 2.0 - 0.1 * d1
d2 = -1.0 + 0.01 * p1
hand("SGD momentum + weight decay, lr changed",
     library_steps("sgd", {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.01}, 2.0, [0.5, -1.0], lrs=[0.1, 0.2]),
     [p1, p1 - 0.2 * (0.9 * d1 + d2)])


def adam_by_hand(p, grads, lrs, b1=0.9, b2=0.999, eps=1e-8, wd=0.0, decoupled=False):
    """The header's Adam / AdamW formulas, step by step, in Python floats (lrs: one rate for
    every step, or a list with the rate of each step)."""
    m = v = 0.0
    out = []
    for t, g in enumerate(grads, start=1):
        lr = lrs[t - 1] if isinstance(lrs, list) else lrs
        if decoupled:
            p = p * (1 - lr * wd)
            d = g
        else:
            d = g + wd * p
        m = b1 * m + (1 - b1) * d
        v = b2 * v + (1 - b2) * d * d
        p = p - lr * (m / (1 - b1**t)) / (math.sqrt(v / (1 - b2**t)) + eps)
        out.append(p)
    return out


# Adam, step 1 (g = 0.5): m = 0.05, v = 0.00025, m^ = 0.5, v^ = 0.25 -> p = 2 - 0.01 * 0.5 / (0.5 + 1e-8)
hand("Adam first step (literal)", library_steps("adam", {"lr": 0.01}, 2.0, [0.5]), [2.0 - 0.01 * 0.5 / (0.5 + 1e-8)])
hand("Adam, 2 steps", library_steps("adam", {"lr": 0.01}, 2.0, [0.5, -1.0]), adam_by_hand(2.0, [0.5, -1.0], 0.01))
hand("Adam with weight decay, 2 steps", library_steps("adam", {"lr": 0.01, "weight_decay": 0.1}, 2.0, [0.5, -1.0]),
     adam_by_hand(2.0, [0.5, -1.0], 0.01, wd=0.1))
# AdamW, step 1: p = 2 * (1 - 0.01 * 0.1) = 1.998, then the Adam step with d = g.
hand("AdamW first step (literal)", library_steps("adamw", {"lr": 0.01, "weight_decay": 0.1}, 2.0, [0.5]),
     [2.0 * (1 - 0.01 * 0.1) - 0.01 * 0.5 / (0.5 + 1e-8)])
hand("AdamW, 2 steps", library_steps("adamw", {"lr": 0.01, "weight_decay": 0.1}, 2.0, [0.5, -1.0]),
     adam_by_hand(2.0, [0.5, -1.0], 0.01, wd=0.1, decoupled=True))

# ------------------------------------------------------------------------------------------------
# 3. set_lr and lr directly
# ------------------------------------------------------------------------------------------------

for kind in ("sgd", "adam", "adamw"):
    p = tensor([1.0, -2.0], requires_grad=True)
    opt = make_optimizer(kind, [p], {"lr": 0.1})
    lr = c_double()
    call("ag_optimizer_lr", byref(lr), opt)
    check(f"{kind}: ag_optimizer_lr gives the initial rate", lr.value == 0.1, str(lr.value))
    call("ag_optimizer_set_lr", opt, 0.0)
    call("ag_optimizer_lr", byref(lr), opt)
    check(f"{kind}: ag_optimizer_lr gives the new rate", lr.value == 0.0, str(lr.value))
    gt = tensor([3.0, 4.0])
    prod = op("ag_mul", gt, p)
    loss = total(prod)
    call("ag_backward", loss, 0, False, False)
    free(gt, prod, loss)
    call("ag_optimizer_step", opt)
    after = values(p, (2,))
    check(f"{kind}: a step at lr 0 leaves the parameter unchanged", list(after) == [1.0, -2.0], str(after))
    call("ag_optimizer_set_lr", opt, 0.5)
    call("ag_optimizer_step", opt)  # the same gradient, still accumulated
    after = values(p, (2,))
    if kind == "sgd":
        expected = [1.0 - 0.5 * 3.0, -2.0 - 0.5 * 4.0]
    else:  # the step at lr 0 still advanced the moments and the step count (as torch.optim)
        expected = [adam_by_hand(x, [g, g], [0.0, 0.5], decoupled=kind == "adamw")[1] for x, g in ((1.0, 3.0), (-2.0, 4.0))]
    check(f"{kind}: the step after set_lr(0.5) uses 0.5",
          all(close(a, b) for a, b in zip(after, expected)), f"{list(after)} vs {expected}")
    call("ag_optimizer_free", opt)
    free(p)

check("no handle is left live", live_handles() == 0, f"{live_handles()} live")

print("largest error against optax per optimizer: " + ", ".join(f"{k} {v:.2e}" for k, v in worst_by_kind.items()))
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
