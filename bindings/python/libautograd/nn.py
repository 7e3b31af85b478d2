"""Normalisation, attention and training helpers (the header's section of that name):
layer_norm, batch_norm, group_norm, scaled_dot_product_attention (torch.nn.functional's),
clip_grad_norm_ (torch.nn.utils'), the warm-up + cosine learning rate and a scheduler that
drives an optimizer with it.
"""

from ctypes import byref, c_double, c_uint64

from ._library import lib
from .errors import check
from .tensor import as_int, handle_of, new_tensor


def _optional(t, what):
    return 0 if t is None else handle_of(t, what)


def _float(value, what):
    if isinstance(value, bool):
        raise TypeError(f"{what} must be a number, not bool")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{what} must be a number, not {type(value).__name__}") from None


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """torch.nn.functional.layer_norm: normalised over the last len(normalized_shape) axes
    (an int means one axis), which must be x's last extents; weight and bias of that shape."""
    dims = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    x_shape = tuple(x.shape)
    if not dims or len(dims) > len(x_shape) or x_shape[len(x_shape) - len(dims):] != dims:
        raise ValueError(f"layer_norm: normalized_shape {dims} is not the trailing extents of {x_shape}")
    return new_tensor(lib.ag_layer_norm, handle_of(x, "x"), len(dims), _optional(weight, "weight"),
                      _optional(bias, "bias"), _float(eps, "eps"))


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
    """torch.nn.functional.batch_norm for x (N, C, *); in training, given running statistics are
    updated in place (momentum, unbiased variance)."""
    return new_tensor(lib.ag_batch_norm, handle_of(x, "x"), _optional(running_mean, "running_mean"),
                      _optional(running_var, "running_var"), _optional(weight, "weight"),
                      _optional(bias, "bias"), bool(training), _float(momentum, "momentum"), _float(eps, "eps"))


def group_norm(x, num_groups, weight=None, bias=None, eps=1e-5):
    """torch.nn.functional.group_norm for x (N, C, *)."""
    return new_tensor(lib.ag_group_norm, handle_of(x, "x"), as_int(num_groups, "num_groups"),
                      _optional(weight, "weight"), _optional(bias, "bias"), _float(eps, "eps"))


def scaled_dot_product_attention(query, key, value, attn_mask=None, is_causal=False, scale=None):
    """torch.nn.functional.scaled_dot_product_attention (additive float attn_mask; scale None:
    1/sqrt(E)). A fully masked row gives zeros, as torch 2.5+."""
    s = 0.0 if scale is None else _float(scale, "scale")
    if scale is not None and s == 0.0:
        raise ValueError("scale 0 would zero every score; use scale=None for 1/sqrt(E)")
    return new_tensor(lib.ag_scaled_dot_product_attention, handle_of(query, "query"), handle_of(key, "key"),
                      handle_of(value, "value"), _optional(attn_mask, "attn_mask"), bool(is_causal), s)


def clip_grad_norm_(parameters, max_norm, norm_type=2.0):
    """torch.nn.utils.clip_grad_norm_: the total gradient norm (a float); every .grad is scaled
    by max_norm / (total + 1e-6) when that is below 1. Parameters without a grad are skipped."""
    params = [parameters] if hasattr(parameters, "_handle") else list(parameters)
    handles = [handle_of(p, f"parameters[{i}]") for i, p in enumerate(params)]
    out = c_double(0.0)
    array = (c_uint64 * len(handles))(*handles) if handles else None
    check(lib.ag_clip_grad_norm(byref(out), array, len(handles), _float(max_norm, "max_norm"),
                                _float(norm_type, "norm_type")))
    return out.value


clip_grad_norm = clip_grad_norm_


def lr_warmup_cosine(step, warmup_steps, total_steps, base_lr, min_lr=0.0):
    """The learning rate at `step` of linear warm-up then cosine decay to min_lr (the GPT
    recipe; see ag_lr_warmup_cosine)."""
    out = c_double(0.0)
    check(lib.ag_lr_warmup_cosine(byref(out), as_int(step, "step"), as_int(warmup_steps, "warmup_steps"),
                                  as_int(total_steps, "total_steps"), _float(base_lr, "base_lr"),
                                  _float(min_lr, "min_lr")))
    return out.value


class WarmupCosineLR:
    """Drives an optimizer's lr with lr_warmup_cosine, as a torch LR scheduler: the optimizer
    gets the rate of step 0 at construction; call step() after each optimizer.step().
    base_lr defaults to the optimizer's current lr."""

    def __init__(self, optimizer, warmup_steps, total_steps, min_lr=0.0, base_lr=None):
        self.optimizer = optimizer
        self.warmup_steps, self.total_steps = warmup_steps, total_steps
        self.base_lr = optimizer.lr if base_lr is None else _float(base_lr, "base_lr")
        self.min_lr = _float(min_lr, "min_lr")
        self.last_step = 0
        self._apply()

    def _apply(self):
        self.optimizer.lr = lr_warmup_cosine(self.last_step, self.warmup_steps, self.total_steps,
                                             self.base_lr, self.min_lr)

    def step(self):
        """Moves to the next step and sets the optimizer's lr to its rate."""
        self.last_step += 1
        self._apply()

    def get_last_lr(self):
        return [self.optimizer.lr]


__all__ = [
    "layer_norm", "batch_norm", "group_norm", "scaled_dot_product_attention",
    "clip_grad_norm_", "clip_grad_norm", "lr_warmup_cosine", "WarmupCosineLR",
]
