"""Optimizers over ag_optimizer_*: SGD, Adam and AdamW with torch.optim's formulas.

Each holds an ag_optimizer handle, freed by close() or when the object is collected. The
parameters must be leaf tensors that require grad; the library updates them in place, so the
Python Tensors you hold see the new values.
"""

import sys
from ctypes import byref, c_double, c_uint64

from ._library import lib
from .errors import check
from .tensor import handle_of


def _hyper(value, what):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            return float(value)  # numpy numbers
        except (TypeError, ValueError):
            raise TypeError(f"{what} must be a number, not {type(value).__name__}") from None
    return float(value)


class Optimizer:
    """Base class: step(), zero_grad(), the lr property, close()."""

    _handle = 0

    def __init__(self, params, create, *hyper):
        params = list(params)
        handles = [handle_of(p, f"params[{i}]") for i, p in enumerate(params)]
        if not handles:
            raise ValueError("an optimizer needs at least one parameter")
        out = c_uint64(0)
        check(create(byref(out), (c_uint64 * len(handles))(*handles), len(handles), *hyper))
        self._handle = out.value
        self.params = params

    def step(self):
        """Updates every parameter that has a gradient, in place."""
        check(lib.ag_optimizer_step(self._handle))

    def zero_grad(self):
        """Clears the gradient of every parameter."""
        check(lib.ag_optimizer_zero_grad(self._handle))

    @property
    def lr(self):
        """The learning rate (settable: applies to the following steps)."""
        out = c_double(0.0)
        check(lib.ag_optimizer_lr(byref(out), self._handle))
        return out.value

    @lr.setter
    def lr(self, value):
        check(lib.ag_optimizer_set_lr(self._handle, _hyper(value, "lr")))

    def close(self):
        """Frees the optimizer's handle and state now (the parameters live on)."""
        handle, self._handle = self._handle, 0
        if handle:
            check(lib.ag_optimizer_free(handle))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __del__(self, _is_finalizing=sys.is_finalizing):
        if not self._handle or _is_finalizing():
            return
        free = _free
        if free is not None:
            handle, self._handle = self._handle, 0
            free(handle)

    # An optimizer owns a C handle (and the state behind it): a copy would share it (and free
    # it twice), a pickle would carry a number that names nothing in another process.
    def __copy__(self):
        raise TypeError(f"{type(self).__name__} holds a C handle and cannot be copied or "
                        "pickled: make a new optimizer over the parameters")

    def __deepcopy__(self, memo):
        self.__copy__()

    def __reduce_ex__(self, protocol):
        self.__copy__()

    def __repr__(self):
        state = "closed" if not self._handle else f"lr={self.lr}"
        return f"{type(self).__name__}({len(self.params)} parameters, {state})"


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum and weight decay."""

    def __init__(self, params, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(params, lib.ag_optimizer_sgd, _hyper(lr, "lr"),
                         _hyper(momentum, "momentum"), bool(nesterov),
                         _hyper(weight_decay, "weight_decay"))


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction; weight_decay is added to the gradient."""

    _create = staticmethod(lambda *a: lib.ag_optimizer_adam(*a))

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        beta1, beta2 = betas
        super().__init__(params, self._create, _hyper(lr, "lr"), _hyper(beta1, "beta1"),
                         _hyper(beta2, "beta2"), _hyper(eps, "eps"),
                         _hyper(weight_decay, "weight_decay"))


class AdamW(Adam):
    """Adam with decoupled weight decay (p *= 1 - lr * weight_decay before the Adam step)."""

    _create = staticmethod(lambda *a: lib.ag_optimizer_adamw(*a))

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, lr, betas, eps, weight_decay)


_free = lib.ag_optimizer_free
