#!/usr/bin/env python3
"""Interop against the real thing (issue 19): the PyPI safetensors package and PyTorch.

1. Files written by safetensors from NumPy and from PyTorch load in libautograd with equal names,
   dtypes, shapes, values (bit for bit) and metadata; a bfloat16 tensor is listed and refused.
2. Files libautograd writes load in safetensors (NumPy and PyTorch), equal; so does a checkpoint,
   whose Adam moments equal torch.optim.Adam's after the same steps (float64, 1e-12).
3. DLPack with PyTorch: torch.from_dlpack(t) and libautograd.from_dlpack(torch_tensor) share
   memory (equal data pointers; a write on one side is seen on the other); layouts that cannot be
   shared are refused clearly.

Expected values come from NumPy and PyTorch. Exits non-zero on the first failure.
Usage: AUTOGRAD_LIBRARY=.build/release python3 Tests/reference/interop.py
"""

import os
import sys
import tempfile

import numpy as np
import safetensors
import safetensors.numpy
import safetensors.torch
import torch
from safetensors import safe_open

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bindings", "python"))
import libautograd as ag  # noqa: E402

checks = 0


def check(cond, what):
    global checks
    if not cond:
        print(f"interop: FAILED: {what}")
        sys.exit(1)
    checks += 1


def same(t, expected, what):
    """t (an ag.Tensor) equals the NumPy array `expected` bit for bit, in dtype and shape."""
    got = t.numpy()
    check(got.dtype == expected.dtype, f"{what}: dtype {got.dtype}, want {expected.dtype}")
    check(got.shape == expected.shape, f"{what}: shape {got.shape}, want {expected.shape}")
    check(got.tobytes() == expected.tobytes(), f"{what}: values differ\n{got}\nwant\n{expected}")


def main():
    rng = np.random.default_rng(19)
    tmp = tempfile.mkdtemp(prefix="ag-interop-")
    print(f"safetensors {safetensors.__version__}, torch {torch.__version__}, numpy {np.__version__}, "
          f"libautograd {ag.version()}")

    # 1a. written by safetensors from NumPy
    arrays = {
        "weight": rng.standard_normal((4, 3)).astype(np.float32),
        "bias": rng.standard_normal(3),
        "labels": rng.integers(-2**40, 2**40, size=(2, 5)),
        "mask": rng.random(6) < 0.5,
        "scalar": np.array(3.25),
        "empty": np.zeros((0, 4), np.float32),
        "nan_inf": np.array([np.nan, np.inf, -np.inf, -0.0, 5e-324], dtype=np.float64),
    }
    meta = {"framework": "numpy", "note": "unicode é ✓, \"quotes\", back\\slash"}
    path = os.path.join(tmp, "from_numpy.safetensors")
    safetensors.numpy.save_file(arrays, path, metadata=meta)
    with ag.safe_open(path) as f:
        check(sorted(f.keys()) == sorted(arrays), f"names {f.keys()}")
        check(f.metadata() == meta, f"metadata {f.metadata()}")
        for name, a in arrays.items():
            dtype, shape = f.info(name)
            check(shape == a.shape, f"info({name}) shape {shape}")
            same(f.get_tensor(name), a, f"numpy-written {name}")
    print(f"safetensors.numpy -> libautograd: {len(arrays)} tensors and metadata equal")

    # 1b. written by safetensors from PyTorch, with a bfloat16 tensor libautograd does not hold
    tensors = {
        "conv.weight": torch.randn(8, 3, 3, 3, dtype=torch.float32, generator=torch.Generator().manual_seed(1)),
        "head.bias": torch.randn(10, dtype=torch.float64, generator=torch.Generator().manual_seed(2)),
        "steps": torch.tensor([[1, 2], [3, -4]], dtype=torch.int64),
        "flags": torch.tensor([True, False, True]),
        "half": torch.ones(2, 2, dtype=torch.bfloat16),
    }
    path = os.path.join(tmp, "from_torch.safetensors")
    safetensors.torch.save_file(tensors, path, metadata={"framework": "pt"})
    with ag.safe_open(path) as f:
        check(sorted(f.keys()) == sorted(tensors), f"names {f.keys()}")
        check(f.metadata() == {"framework": "pt"}, f"metadata {f.metadata()}")
        for name, t in tensors.items():
            if t.dtype == torch.bfloat16:
                check(f.info(name) == (None, (2, 2)), f"info of a bf16 tensor: {f.info(name)}")
                try:
                    f.get_tensor(name)
                    check(False, "loading a bf16 tensor must fail")
                except ag.DTypeError as e:
                    check("BF16" in str(e), f"the bf16 refusal names the dtype: {e}")
                continue
            same(f.get_tensor(name), t.numpy(), f"torch-written {name}")
    print(f"safetensors.torch -> libautograd: {len(tensors) - 1} tensors equal, bf16 listed and refused")

    # 2a. written by libautograd, read by safetensors (NumPy and PyTorch)
    ours = {"w": ag.tensor(arrays["weight"]), "b": ag.tensor(arrays["bias"]), "y": ag.tensor(arrays["labels"]),
            "m": ag.tensor(arrays["mask"]), "s": ag.tensor(arrays["scalar"]), "e": ag.tensor(arrays["empty"])}
    path = os.path.join(tmp, "from_autograd.safetensors")
    ag.save_safetensors(ours, path, metadata=meta)
    loaded = safetensors.numpy.load_file(path)
    check(sorted(loaded) == sorted(ours), f"names read by safetensors: {sorted(loaded)}")
    for name, t in ours.items():
        a = t.numpy()
        check(loaded[name].dtype == a.dtype and loaded[name].shape == a.shape and loaded[name].tobytes() == a.tobytes(),
              f"safetensors.numpy reads {name} equal")
    with safe_open(path, framework="np") as f:
        check(f.metadata() == meta, f"metadata read by safetensors: {f.metadata()}")
    loaded = safetensors.torch.load_file(path)
    for name, t in ours.items():
        check(np.array_equal(loaded[name].numpy(), t.numpy()), f"safetensors.torch reads {name} equal")
    print(f"libautograd -> safetensors.numpy and safetensors.torch: {len(ours)} tensors and metadata equal")

    # 2b. a checkpoint: Adam's moments against torch.optim.Adam after the same 5 steps (float64)
    x = rng.standard_normal((16, 3))
    y = rng.standard_normal((16, 2))
    w0 = rng.standard_normal((3, 2))
    w = ag.tensor(w0, requires_grad=True)
    opt = ag.Adam([w], lr=0.01)
    tw = torch.tensor(w0, requires_grad=True)
    topt = torch.optim.Adam([tw], lr=0.01)
    for _ in range(5):
        opt.zero_grad()
        ((ag.tensor(x) @ w - ag.tensor(y)) ** 2).mean().backward()
        opt.step()
        topt.zero_grad()
        ((torch.tensor(x) @ tw - torch.tensor(y)) ** 2).mean().backward()
        topt.step()
    path = os.path.join(tmp, "checkpoint.safetensors")
    ag.save_checkpoint(path, {"w": w}, opt, metadata={"epoch": "1"})
    saved = safetensors.numpy.load_file(path)
    state = topt.state_dict()["state"][0]
    check(np.array_equal(saved["w"], w.numpy()), "the checkpoint's w")
    check(np.allclose(saved["w"], tw.detach().numpy(), rtol=0, atol=1e-12), "w against torch.optim.Adam")
    check(np.allclose(saved["optimizer.w.exp_avg"], state["exp_avg"].numpy(), rtol=0, atol=1e-12), "exp_avg against torch")
    check(np.allclose(saved["optimizer.w.exp_avg_sq"], state["exp_avg_sq"].numpy(), rtol=0, atol=1e-12),
          "exp_avg_sq against torch")
    check(int(saved["optimizer.w.step"]) == int(state["step"]) == 5, f"step {saved['optimizer.w.step']}")
    with safe_open(path, framework="np") as f:
        m = f.metadata()
    check(m["epoch"] == "1" and m["autograd.optimizer"] == "adam" and float(m["autograd.optimizer.lr"]) == 0.01,
          f"checkpoint metadata {m}")
    print("checkpoint: read by safetensors; Adam's moments and step equal torch.optim.Adam's (float64, 1e-12)")

    # 3. DLPack with PyTorch
    t = ag.tensor(np.arange(6.0).reshape(2, 3))
    u = torch.from_dlpack(t)
    check(u.data_ptr() == t.data_ptr(), "torch.from_dlpack shares the tensor's memory")
    check(u.dtype == torch.float64 and tuple(u.shape) == (2, 3), f"torch sees {u.dtype} {tuple(u.shape)}")
    u[0, 1] = 100.0
    check(t.numpy()[0, 1] == 100.0, "a torch write is seen by libautograd")
    t.copy_(ag.tensor(np.full((2, 3), -1.0)))
    check(bool((u == -1.0).all()), "a libautograd write is seen by torch")
    for dtype in (torch.float32, torch.float64, torch.int64, torch.bool):
        src = (torch.arange(12).reshape(3, 4) % 2).to(dtype)
        v = ag.from_dlpack(src)
        check(v.data_ptr() == src.data_ptr(), f"libautograd.from_dlpack shares a torch {dtype}")
        check(np.array_equal(v.numpy(), src.numpy()), f"values of a torch {dtype}")
    src = torch.zeros(4)
    v = ag.from_dlpack(src)
    src[3] = 7.0
    check(v.tolist() == [0.0, 0.0, 0.0, 7.0], "a torch write is seen through from_dlpack")
    del src
    check(v.tolist() == [0.0, 0.0, 0.0, 7.0], "the imported tensor keeps torch's memory alive")
    try:
        ag.from_dlpack(torch.arange(12.0).reshape(3, 4).t())
        check(False, "a transposed torch tensor must be refused")
    except ag.ArgumentError as e:
        check("contiguous" in str(e), f"the refusal says why: {e}")
    w = ag.tensor([1.0, 2.0], requires_grad=True)
    wt = torch.from_dlpack(w)
    check(wt.data_ptr() == w.data_ptr() and not wt.requires_grad, "a parameter's values, shared with torch")
    print("DLPack with torch: pointers equal both ways, writes seen both ways, strided layouts refused")

    print(f"interop: OK ({checks} checks)")


if __name__ == "__main__":
    main()
