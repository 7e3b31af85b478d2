"""Convolution and pooling (the header's section "Convolution and pooling"), as
torch.nn.functional spells them: sizes are an int or a pair (height, width); inputs are
batched, (N, C, H, W), or (N, C, L) for conv1d.

    y = conv2d(x, w, b, stride=1, padding=1)
    z = max_pool2d(y.relu(), 2)
"""

from ._library import lib
from .tensor import Tensor, as_int, handle_of, new_tensor

__all__ = ["conv1d", "conv2d", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d"]


def _pair(value, what):
    """(h, w) from an int or a sequence of two ints."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{what} must be an int or a pair of ints, got {value!r}")
        return as_int(value[0], what), as_int(value[1], what)
    v = as_int(value, what)
    return v, v


def _single(value, what):
    """An int from an int or a one-element sequence (torch's conv1d takes both)."""
    if isinstance(value, (tuple, list)):
        if len(value) != 1:
            raise ValueError(f"{what} must be an int or a 1-tuple, got {value!r}")
        value = value[0]
    return as_int(value, what)


def _bias(bias):
    return 0 if bias is None else handle_of(bias, "bias")


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D convolution: input (N, C, H, W), weight (O, C/groups, kH, kW), bias (O) or None."""
    sh, sw = _pair(stride, "stride")
    ph, pw = _pair(padding, "padding")
    dh, dw = _pair(dilation, "dilation")
    return new_tensor(lib.ag_conv2d, handle_of(input, "input"), handle_of(weight, "weight"), _bias(bias),
                      sh, sw, ph, pw, dh, dw, as_int(groups, "groups"))


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """1-D convolution: input (N, C, L), weight (O, C/groups, k), bias (O) or None."""
    return new_tensor(lib.ag_conv1d, handle_of(input, "input"), handle_of(weight, "weight"), _bias(bias),
                      _single(stride, "stride"), _single(padding, "padding"), _single(dilation, "dilation"),
                      as_int(groups, "groups"))


def _pool_args(kernel_size, stride, padding):
    kh, kw = _pair(kernel_size, "kernel_size")
    # None (or torch's empty default) means stride = kernel: 0, 0 in C.
    sh, sw = (0, 0) if stride is None or stride == () or stride == [] else _pair(stride, "stride")
    if (sh, sw) != (0, 0) and (sh <= 0 or sw <= 0):
        raise ValueError(f"stride must be positive, got {stride!r}")
    ph, pw = _pair(padding, "padding")
    return kh, kw, sh, sw, ph, pw


def max_pool2d(input, kernel_size, stride=None, padding=0):
    """Max pooling over (N, C, H, W); stride None means kernel_size; padding counts as -inf.
    The gradient goes to each window's first maximum."""
    return new_tensor(lib.ag_max_pool2d, handle_of(input, "input"), *_pool_args(kernel_size, stride, padding))


def avg_pool2d(input, kernel_size, stride=None, padding=0, count_include_pad=True):
    """Average pooling over (N, C, H, W); padding counts as zeros (and in the divisor unless
    count_include_pad is False)."""
    return new_tensor(lib.ag_avg_pool2d, handle_of(input, "input"), *_pool_args(kernel_size, stride, padding),
                      bool(count_include_pad))


def adaptive_avg_pool2d(input, output_size):
    """Adaptive average pooling of (N, C, H, W) to (N, C, *output_size); an int means square;
    None in a pair keeps that input extent (as torch)."""
    if isinstance(input, Tensor) and isinstance(output_size, (tuple, list)) and len(output_size) == 2:
        shape = input.shape
        output_size = tuple(shape[-2 + i] if s is None and len(shape) == 4 else s for i, s in enumerate(output_size))
    oh, ow = _pair(output_size, "output_size")
    return new_tensor(lib.ag_adaptive_avg_pool2d, handle_of(input, "input"), oh, ow)
