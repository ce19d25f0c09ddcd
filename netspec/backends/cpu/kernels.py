"""The CPU kernel registry (op name → kernel) and `warm_up`, which compiles (or loads from Numba's
on-disk cache) the jitted functions behind a set of ops by running each kernel on tiny inputs."""
from __future__ import annotations

from typing import Callable

import numpy as np

from ... import ops
from ...ir.types import TensorType
from ...ops.registry import RunContext, infer_output
from . import conv, elementwise, excitation, linear, norm, pool, tensor

# kernel(attrs, inputs, params, ctx) -> output: the `Reference` signature (NCHW float32 in and out)
Kernel = Callable[[ops.Attrs, list[np.ndarray], dict[str, np.ndarray], RunContext], np.ndarray]

KERNELS: dict[str, Kernel] = {
    # convolution
    "conv2d": conv.conv2d,                       # im2col + GEMM; 1×1 → GEMM; depthwise direct
    "conv_transpose2d": conv.conv_transpose2d,   # GEMM (Wᵀ·X) + col2im
    "fused_conv2d": conv.fused_conv2d,           # conv2d + gate, residual, activation (passes/fuse.py)
    # pooling
    "maxpool2d": pool.maxpool2d,
    "avgpool2d": pool.avgpool2d,
    "global_avgpool": pool.global_avgpool,
    "adaptive_avgpool2d": pool.adaptive_avgpool2d,
    "squeeze_excitation": excitation.squeeze_excitation,  # avgpool + 1×1 conv ×2 (passes/fuse.py)
    # normalization
    "batchnorm2d": norm.batchnorm2d,
    "lrn": norm.lrn,
    # activations and dropout
    "identity": elementwise.identity,
    "relu": elementwise.relu,
    "relu6": elementwise.relu6,
    "sigmoid": elementwise.sigmoid,
    "tanh": elementwise.tanh,
    "leaky_relu": elementwise.leaky_relu,
    "elu": elementwise.elu,
    "silu": elementwise.silu,
    "hardswish": elementwise.hardswish,
    "softmax": elementwise.softmax,
    "maxout": elementwise.maxout,
    "dropout": elementwise.dropout,
    # merges
    "add": elementwise.add,
    "mul": elementwise.mul,
    "concat": tensor.concat,
    # linear and reshapes
    "linear": linear.linear,
    "fused_linear": linear.fused_linear,
    "flatten": tensor.flatten,
    "reshape": tensor.reshape,
    "center_crop": tensor.center_crop,
}


def kernel_for(name: str) -> Kernel:
    """The kernel of an op by name or alias; KeyError when the CPU backend has none."""
    canonical = ops.registry.canonical_name(name)
    try:
        return KERNELS[canonical]
    except KeyError:
        raise KeyError(f"the CPU backend has no kernel for op '{name}'") from None


# Tiny cases per op — (attributes, input shapes, modes) — chosen so that every jitted code path
# of the op's kernel runs once. Ops missing here are warmed with no attributes on one 1×2×4×4 input.
_IMG = (1, 2, 4, 4)
_WARM_CASES: dict[str, list[tuple[dict, list[tuple[int, ...]], tuple[str, ...]]]] = {
    "conv2d": [({"out": 2, "kernel": 3, "padding": 1}, [_IMG], ("eval",)),            # im2col + GEMM
               ({"out": 2, "kernel": 1}, [_IMG], ("eval",)),                          # pointwise GEMM
               ({"out": 2, "kernel": 3, "groups": 2, "padding": 1}, [_IMG], ("eval",)),   # depthwise
               ({"out": 2, "kernel": 3, "groups": 2, "stride": 2}, [_IMG], ("eval",)),    # depthwise, strided
               ({"out": 2, "kernel": 3, "groups": 2, "padding": 1}, [(1, 2, 32, 32)], ("eval",)),  # wide depthwise
               ({"out": 2, "kernel": 3, "groups": 2, "stride": 2}, [(1, 2, 66, 66)], ("eval",)),   # wide, strided
               ({"out": 16, "kernel": 3, "padding": 1}, [(1, 16, 16, 16)], ("eval",)),    # Winograd
               ({"out": 4, "kernel": 1}, [(1, 4, 128, 128)], ("eval",))],   # GEMM in parallel blocks
    "conv_transpose2d": [({"out": 2, "kernel": 2, "stride": 2}, [_IMG], ("eval",))],
    "maxpool2d": [({"kernel": 2}, [_IMG], ("eval",))],
    "avgpool2d": [({"kernel": 2}, [_IMG], ("eval",))],
    "adaptive_avgpool2d": [({"size": 2}, [_IMG], ("eval",))],
    "batchnorm2d": [({}, [_IMG], ("eval", "train"))],
    "lrn": [({"size": 3}, [_IMG], ("eval",))],
    "dropout": [({"p": 0.5}, [_IMG], ("train",))],
    "maxout": [({"pieces": 2}, [_IMG], ("eval",))],
    "add": [({}, [_IMG, _IMG, _IMG], ("eval",))],
    "mul": [({}, [_IMG, (1, 2, 1, 1)], ("eval",))],
    "concat": [({}, [_IMG] * k, ("eval",)) for k in (1, 2, 3, 4)],  # one compilation per count of inputs
    "linear": [({"out": 3}, [(1, 4)], ("eval",))],
    "fused_linear": [({"out": 3, "residual": True, "activation": "relu"}, [(1, 4), (1, 3)], ("eval",))],
    "reshape": [({"shape": [-1]}, [_IMG], ("eval",))],
    "squeeze_excitation": [({"hidden": 3, "activation": "silu", "gate_activation": "sigmoid"}, [shape], ("eval",))
                           for shape in (_IMG, (1, 2, 128, 128))],  # the mean on one thread, then on all
    "center_crop": [({"size": 2}, [_IMG], ("eval",))],
}


# A fused conv2d runs every path of conv2d, with an activation and (one pass) a residual or gate.
_WARM_CASES["fused_conv2d"] = [({**attrs, "activation": "relu"}, shapes, modes)
                               for attrs, shapes, modes in _WARM_CASES["conv2d"]] + [
    ({"out": 2, "kernel": 3, "padding": 1, "residual": True, "activation": "relu"}, [_IMG, _IMG], ("eval",)),
    ({"out": 2, "kernel": 1, "gate": True, "residual": True}, [_IMG, (1, 2, 1, 1), _IMG], ("eval",)),
    ({"out": 32, "kernel": 1, "gate": True}, [(1, 2, 2, 2), (1, 2, 1, 1)], ("eval",))]

# Pointwise activations switch to a parallel kernel on large inputs: warm that path too.
_BIG = (1, 2, 128, 128)
for _name in ("relu", "relu6", "sigmoid", "tanh", "silu", "hardswish"):
    _WARM_CASES[_name] = [({}, [_IMG], ("eval",)), ({}, [_BIG], ("eval",))]
_WARM_CASES["leaky_relu"] = [({"slope": 0.1}, [_IMG], ("eval",)), ({"slope": 0.1}, [_BIG], ("eval",))]
_WARM_CASES["elu"] = [({}, [_IMG], ("eval",)), ({}, [_BIG], ("eval",))]


def _warm_one(name: str) -> None:
    op = ops.get(name)
    kernel = KERNELS[name]
    rng = np.random.default_rng(0)
    for attrs_dict, shapes, modes in _WARM_CASES.get(name, [({}, [_IMG], ("eval",))]):
        attrs = op.attrs.model_validate(attrs_dict)
        types = [TensorType(s) for s in shapes]
        infer_output(op, attrs, types)
        inputs = [rng.standard_normal(s).astype(np.float32) for s in shapes]
        for mode in modes:
            params = {p: (np.ones(spec.shape, np.float32) if p == "running_var"
                          else rng.standard_normal(spec.shape).astype(np.float32))
                      for p, spec in op.params(attrs, types).items()}
            kernel(attrs, inputs, params, RunContext(mode, np.random.default_rng(0)))


def warm_up(op_names, progress: Callable[[int, int, str], None] | None = None) -> None:
    """Compile (or load from the on-disk cache) the kernels of `op_names` by running each on tiny
    inputs. Names may be aliases; duplicates are warmed once; an op without a CPU kernel is a KeyError.

    `progress(done, total, name)` is called before each op is warmed (done = ops finished so far)
    and once more at the end with done == total and name "", so a caller can report on stderr.
    """
    names = list(dict.fromkeys(ops.registry.canonical_name(n) for n in op_names))
    for n in names:
        kernel_for(n)
    for i, name in enumerate(names):
        if progress is not None:
            progress(i, len(names), name)
        _warm_one(name)
    if progress is not None:
        progress(len(names), len(names), "")
