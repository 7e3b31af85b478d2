"""libautograd: Python bindings (ctypes) for libautograd.so, the Autograd engine.

    import libautograd as ag
    x = ag.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = (x * x).sum()
    y.backward()
    x.grad.numpy()          # array([2., 4., 6.])

Finding the library, in this order (the first that loads wins; ``library_path()`` tells which):

1. the environment variable ``AUTOGRAD_LIBRARY``: the path of libautograd.so, or a directory
   holding it; when set, nothing else is tried;
2. the installed prefix: ``pkg-config --variable=libdir autograd``, then ``sys.prefix/lib``,
   ``/usr/local/lib``, ``/usr/lib``, then ``ctypes.util.find_library("autograd")``;
3. a build folder: ``.build/release/libautograd.so`` above this package's source file, then
   above the current directory (so running from a checkout after ``bash scripts/build.sh``
   works without installing).

In a directory, ``libautograd.so.0`` (the soname) is tried before ``libautograd.so``. If none
is found, importing raises ``LibraryNotFoundError`` (an ImportError) listing every place tried.

Function transforms (JAX's and torch.func's): ``jvp``, ``vjp``, ``jacobian`` (mode "rev" or
"fwd"), ``hvp`` and ``hessian`` of a Python function of Tensors; see ``libautograd.transforms``.

Reusable graphs: ``Tensor.set_data`` writes new values into a leaf, ``recompute(root)``
re-evaluates a graph recorded inside ``recomputable()``, and ``compile(fn)`` captures a function
once per input signature and replays it (as ``jax.jit``); see ``libautograd.reusable``.

User-defined ops: subclass ``Function`` with static ``forward(ctx, ...)``, ``backward(ctx, ...)``
and optionally ``jvp(ctx, ...)``, apply with ``MyOp.apply(...)``, as ``torch.autograd.Function``;
see ``libautograd.function``.

Integer tensors, masks and random generators: ``int64`` and ``bool_`` tensors for indices,
labels and masks (``to``, ``argmax``, ``topk``, ``one_hot``, ``embedding``, ``masked_fill``,
``logical_*``, ``cross_entropy`` with an int64 tensor), and a seeded ``Generator`` for
``random_uniform``, ``random_normal``, ``randint``, ``randperm``, ``dropout`` and
``multinomial``; see ``libautograd.indexing_ops``.

Files and shared memory: ``save_safetensors`` / ``load_safetensors`` / ``safe_open`` read and
write the safetensors format (PyTorch's, JAX's, MLX's), ``save_checkpoint`` / ``load_checkpoint``
add an optimizer's state, and ``from_dlpack`` / ``Tensor.__dlpack__`` share memory with NumPy,
PyTorch and JAX without copying; see ``libautograd.files`` and ``libautograd.dlpack``.

The per-op path (Tensor's operators, the unary functions such as ``tanh`` and full reductions
such as ``sum``) runs in a small C extension, ``libautograd._native``, which ``pip install``
compiles when a C compiler is present; ``native_enabled()`` tells whether it is in use,
``native_status()`` why not, and ``LIBAUTOGRAD_PURE_PYTHON=1`` (read at import) turns it off.
Without it the package is pure Python over ctypes, with the same results; see ``_accel``.

Errors: every failing C call raises an ``AutogradError`` subclass carrying ``ag_last_error()``'s
message, ``.status`` and ``.status_name``; see ``libautograd.errors``.
"""

from ._library import LibraryNotFoundError
from .creation import (
    arange,
    eye,
    from_numpy,
    full,
    init,
    kaiming_normal,
    kaiming_uniform,
    ones,
    ones_like,
    rand,
    randn,
    tensor,
    xavier_normal,
    xavier_uniform,
    zeros,
    zeros_like,
)
from .dtypes import DType, bool_, float32, float64, int64
from .errors import (
    ArgumentError,
    AutogradError,
    CallbackError,
    DTypeError,
    FileError,
    FormatError,
    InternalError,
    InvalidHandleError,
    OutOfMemoryError,
    ShapeError,
    StateError,
)
from .function import Function, FunctionCtx
from .grad_mode import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from .graph import GradcheckResult, grad, gradcheck, graph_to_dot
from . import ops as _ops
from .conv import adaptive_avg_pool2d, avg_pool2d, conv1d, conv2d, max_pool2d
from .ops import *  # noqa: F401,F403 -- the operation catalogue, ops.__all__
from .optim import SGD, Adam, AdamW, Optimizer
from .nn import *  # noqa: F401,F403 -- normalisation, attention, clip_grad_norm_, LR schedules (also as ag.nn)
from . import indexing_ops as _indexing_ops
from .indexing_ops import *  # noqa: F401,F403 -- int64/bool ops, generators: indexing_ops.__all__
from .transforms import hessian, hvp, jacobian, jvp, vjp
from .reusable import CacheInfo, CompiledFunction, compile, recomputable, recompute
from .runtime import (
    get_num_threads,
    library_path,
    live_handle_count,
    native_enabled,
    native_status,
    num_threads,
    set_num_threads,
    version,
)
from .tensor import Tensor
from .dlpack import from_dlpack
from .files import (
    SafetensorsFile,
    load_checkpoint,
    load_safetensors,
    safe_open,
    save_checkpoint,
    save_safetensors,
)

__version__ = "0.1.0"

__all__ = [
    "Tensor", "DType", "float32", "float64", "int64", "bool_",
    "tensor", "from_numpy", "zeros", "ones", "full", "zeros_like", "ones_like", "arange", "eye",
    "rand", "randn", "init", "kaiming_uniform", "kaiming_normal", "xavier_uniform",
    "xavier_normal",
    "no_grad", "enable_grad", "is_grad_enabled", "set_grad_enabled",
    "grad", "gradcheck", "graph_to_dot", "GradcheckResult",
    "jvp", "vjp", "jacobian", "hvp", "hessian",
    "compile", "CompiledFunction", "CacheInfo", "recomputable", "recompute",
    "Function", "FunctionCtx",
    "SGD", "Adam", "AdamW", "Optimizer",
    "version", "library_path", "set_num_threads", "num_threads", "get_num_threads",
    "live_handle_count", "native_enabled", "native_status",
    "from_dlpack", "save_safetensors", "load_safetensors", "safe_open", "SafetensorsFile",
    "save_checkpoint", "load_checkpoint",
    "AutogradError", "InvalidHandleError", "ArgumentError", "ShapeError", "DTypeError",
    "StateError", "OutOfMemoryError", "CallbackError", "InternalError", "FileError", "FormatError",
    "LibraryNotFoundError",
] + _ops.__all__ + _indexing_ops.__all__  # the operation catalogue (ops.py, indexing_ops.py)
