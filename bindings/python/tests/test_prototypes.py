"""Every function of include/autograd.h has an explicit ctypes prototype, handles are 64-bit,
and every operation of the header is reachable from Python."""

import ctypes
import re
import sys
from pathlib import Path

import pytest

import libautograd as ag

_library = sys.modules["libautograd._library"]
HEADER = Path(__file__).resolve().parents[3] / "include" / "autograd.h"


def _header_functions():
    if not HEADER.is_file():
        pytest.skip(f"{HEADER} not found (tests run outside the checkout)")
    text = re.sub(r"/\*.*?\*/", "", HEADER.read_text(), flags=re.S)
    return set(re.findall(r"^\s*(?:const\s+)?\w+\s*\*?\s*(ag_\w+)\s*\(", text, flags=re.M))


def test_every_header_function_has_a_prototype():
    declared = _header_functions()
    assert len(declared) > 100
    assert declared == set(_library.PROTOTYPES)
    for name in declared:
        fn = getattr(_library.lib, name)
        assert fn.argtypes is not None and fn.restype is not None, name


def _header_signatures():
    """{name: [parameter text, ...]} for every function, read from the header."""
    _header_functions()  # skips when the header is not there
    text = re.sub(r"/\*.*?\*/", "", HEADER.read_text(), flags=re.S)
    text = re.sub(r"^\s*typedef[^;]*;", "", text, flags=re.M)
    out = {}
    for match in re.finditer(r"\b(ag_\w+)\s*\(", text):
        name, i, depth = match.group(1), match.end(), 1
        if name not in _library.PROTOTYPES or name in out:
            continue
        params, cur = [], ""
        while depth:
            ch = text[i]
            i += 1
            if ch == "(":
                depth += 1
            elif ch == ")":
                depth -= 1
                if depth == 0:
                    break
            if ch == "," and depth == 1:
                params.append(cur.strip())
                cur = ""
            else:
                cur += ch
        if cur.strip() and cur.strip() != "void":
            params.append(cur.strip())
        out[name] = params
    return out


SCALARS = {
    "ag_tensor": ctypes.c_uint64, "ag_optimizer": ctypes.c_uint64, "uint64_t": ctypes.c_uint64,
    "int64_t": ctypes.c_int64, "double": ctypes.c_double, "bool": ctypes.c_bool,
    "ag_status": ctypes.c_int32, "ag_dtype": ctypes.c_int32, "ag_init": ctypes.c_int32,
    "ag_jacobian_mode": ctypes.c_int32,
    "int32_t": ctypes.c_int32,
    "ag_grad_hook": _library.GRAD_HOOK, "ag_build_fn": _library.BUILD_FN,
    "ag_post_accumulate_grad_hook": _library.POST_ACCUMULATE_GRAD_HOOK,
    "ag_function": ctypes.c_uint64, "ag_capture_fn": _library.CAPTURE_FN,
    "ag_custom_op": ctypes.c_uint64, "ag_custom_ctx": ctypes.c_uint64,
    "ag_generator": ctypes.c_uint64, "ag_safetensors": ctypes.c_uint64,
    "ag_custom_forward_fn": _library.CUSTOM_FORWARD, "ag_custom_backward_fn": _library.CUSTOM_BACKWARD,
    "ag_custom_jvp_fn": _library.CUSTOM_JVP,
}


def test_argument_types_match_the_header():
    # handles (uint64) are never declared narrower, pointers are never plain integers
    signatures = _header_signatures()
    assert set(signatures) == set(_library.PROTOTYPES)
    for name, params in signatures.items():
        argtypes = _library.PROTOTYPES[name][1]
        assert len(argtypes) == len(params), name
        for param, argtype in zip(params, argtypes):
            if "*" in param or "(" in param:
                assert argtype not in set(SCALARS.values()), (name, param)
                assert argtype in (ctypes.c_void_p, ctypes.c_char_p, _library.DESTROY) or \
                    issubclass(argtype, ctypes._Pointer), (name, param)
            else:
                ctype = param.replace("const ", "").split()[0]
                assert argtype is SCALARS[ctype], (name, param, argtype)


def test_every_operation_is_exposed():
    skip = {"version", "last_error", "status_name", "live_handle_count", "set_num_threads",
            "num_threads", "backward", "set_grad_enabled", "is_grad_enabled", "detach",
            "gradcheck", "graph_to_dot", "grad"}
    # reusable graphs: reached through recomputable(), recompute() and compile()
    through = {"set_recomputable": ag.recomputable, "recompute": ag.recompute,
               "capture": ag.compile, "function_call": ag.CompiledFunction.__call__,
               "function_call_into": ag.CompiledFunction.call_into,
               "function_info": ag.CompiledFunction.function_info,
               "function_free": ag.CompiledFunction.clear_cache,
               # user-defined ops: reached through Function and its ctx
               "set_error": ag.Function.apply, "custom_op_new": ag.Function.apply,
               "custom_op_apply": ag.Function.apply, "custom_op_free": ag.Function.apply,
               "custom_ctx_save": ag.FunctionCtx.save_for_backward,
               "custom_ctx_saved_count": ag.FunctionCtx.saved_tensors.fget,
               "custom_ctx_saved": ag.FunctionCtx.saved_tensors.fget,
               "custom_ctx_needs_input_grad": ag.FunctionCtx.needs_input_grad.fget,
               # ctx attributes set in forward, read in backward and jvp (the application's state)
               "custom_ctx_set_state": ag.Function.apply, "custom_ctx_state": ag.Function.apply,
               # generators: the Generator class
               "generator_new": ag.Generator, "generator_free": ag.Generator.__del__,
               "generator_get_state": ag.Generator.get_state,
               "generator_set_state": ag.Generator.set_state,
               # safetensors files and checkpoints: libautograd.files
               "safetensors_save": ag.save_safetensors, "safetensors_open": ag.SafetensorsFile,
               "safetensors_open_memory": ag.SafetensorsFile.from_bytes,
               "safetensors_count": ag.SafetensorsFile.__len__, "safetensors_name": ag.SafetensorsFile.keys,
               "safetensors_info": ag.SafetensorsFile.info, "safetensors_load": ag.SafetensorsFile.get_tensor,
               "safetensors_metadata_count": ag.SafetensorsFile.metadata,
               "safetensors_metadata_entry": ag.SafetensorsFile.metadata,
               "safetensors_metadata": ag.SafetensorsFile.metadata, "safetensors_close": ag.SafetensorsFile.close,
               "checkpoint_save": ag.save_checkpoint, "checkpoint_load": ag.load_checkpoint}
    for name in _header_functions():
        short = name[len("ag_"):]
        if short.startswith(("tensor_", "optimizer_")) or short in skip:
            continue
        if short in through:
            assert callable(through[short]), name
            continue
        if short.endswith("_scalar"):  # reached through the operators / maximum, minimum
            base = short[: -len("_scalar")]
            if base in ("rsub", "rdiv", "rpow"):
                base = base[1:]
            assert hasattr(ag, base), name
            continue
        assert hasattr(ag, short), f"{name} has no Python function ag.{short}"
