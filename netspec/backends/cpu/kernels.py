"""The CPU kernel registry (op name → kernel) and `warm_up`, which compiles (or loads from Numba's
on-disk cache) the jitted functions behind a set of ops by running each kernel on tiny inputs, with
the measured time each takes to compile (for the progress bar's estimate)."""
from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Callable

import numpy as np

from ... import ops
from ...ir.types import TensorType
from ...ops.registry import RunContext, infer_output
from . import backward, conv, elementwise, excitation, linear, norm, pool, tensor

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

# The ops only training graphs hold (passes/autodiff.py); they run outside the arena, without `out=`.
TRAINING_KERNELS: dict[str, Kernel] = {
    "cross_entropy": ops.get("cross_entropy").reference,  # N×K values: the numpy definition is cheap enough
    "mse": ops.get("mse").reference,
    "grad": backward.grad_kernel,  # fast kernels for the heavy gradients, the op's rule for the rest
}


def kernel_for(name: str) -> Kernel:
    """The kernel of an op by name or alias; KeyError when the CPU backend has none."""
    canonical = ops.registry.canonical_name(name)
    try:
        return KERNELS[canonical]
    except KeyError:
        raise KeyError(f"the CPU backend has no kernel for op '{name}'") from None


# --- warm-up -------------------------------------------------------------------------------------
# `warm_up` runs each op's kernel on tiny cases — (attributes, input shapes, modes) — chosen so that
# every jitted function a network's run may call is compiled (or loaded from the cache) then, with
# the argument types the run gives it, not in the middle of the network's first run. Checked on the
# zoo (batch 1 and 8, and train mode at batch 2): after `warm_up(ops, graph=...)`, a first run
# compiles nothing.
#
# Each op, or path of an op, has its measured cold seconds: its warm-up from an empty cache
# (NUMBA_CACHE_DIR a fresh temporary folder, after Numba's own start; Numba 0.68.1, on this 2-core
# machine while other work ran on it: ±30% from run to run). The progress bar's estimate comes from
# them; re-measure after a change to the cases or to the kernels' code paths.
Case = tuple[dict, list[tuple[int, ...]], tuple[str, ...]]
_E = ("eval",)
_IMG = (1, 2, 4, 4)
_BIG = (1, 4, 256, 256)  # large enough for the parallel kernels of the cheapest pointwise ops (elementwise.py)

# conv2d's code paths (conv._plan), fused_conv2d's too (its activation is a run-time code: same
# compiled code): the cases that compile each, and their seconds. A network warms only the paths its
# convolutions may take (`conv.paths`), not all (LeNet-5's take 2 of the 10, 40 of the ~130 s).
_CONV_PATHS: dict[str, tuple[list[Case], float]] = {
    "gemm": ([({"out": 2, "kernel": 1}, [_IMG], _E),                    # the packed GEMM of every path,
              ({"out": 8, "kernel": 1}, [(1, 8, 64, 64)], _E)], 25.0),  # on one thread and in parallel
    "wide gemm": ([({"out": 4, "kernel": 1}, [(1, 4, 128, 128)], _E)], 0.5),  # sgemm in parallel blocks
    "grouped gemm": ([({"out": 4, "kernel": 1, "groups": 2}, [(1, 4, 4, 4)], _E)], 0.5),
    "strided pointwise": ([({"out": 2, "kernel": 1, "stride": 2}, [_IMG], _E)], 3.0),  # its input subsampled
    # the implicit GEMM in parallel (at least implicit.SERIAL_MACS): rows of tiles, or a plane's run of
    # tiles copied out; and on the calling thread (either form: the same kernel)
    "implicit": ([({"out": 16, "kernel": 3, "padding": 1}, [(1, 16, 32, 40)], _E)], 0.5),
    "implicit flat": ([({"out": 64, "kernel": 3, "padding": 1}, [(1, 32, 14, 14)], _E)], 1.0),
    "implicit serial": ([({"out": 2, "kernel": 3, "padding": 1}, [_IMG], _E)], 2.4),
    # (K > implicit.MAX_TAPS, stride 2, rows under implicit.WIDE_ROWS: what the implicit GEMM leaves)
    "im2col": ([({"out": 8, "kernel": 3, "stride": 2, "padding": 1}, [(1, 64, 6, 6)], _E),  # column phases
                ({"out": 4, "kernel": 3, "groups": 2, "padding": 1}, [(1, 4, 4, 4)], _E)], 15.0),  # own epilogue
    "winograd": ([({"out": 16, "kernel": 3, "padding": 1}, [(1, 32, 28, 28)], _E)], 15.0),
    "depthwise": ([({"out": 2, "kernel": 3, "groups": 2, "padding": 1}, [_IMG], _E),
                   ({"out": 2, "kernel": 3, "groups": 2, "stride": 2}, [_IMG], _E)], 14.0),
    "wide depthwise": ([({"out": 2, "kernel": 3, "groups": 2, "padding": 1}, [(1, 2, 120, 120)], _E)], 16.0),
    # fused_conv2d only: the residual added in a pass of its own (where the GEMM does not add it), the gate
    "residual": ([({"out": 8, "kernel": 3, "stride": 2, "padding": 1, "residual": True},
                   [(1, 64, 6, 6), (1, 8, 3, 3)], _E)], 18.0),
    "gate": ([({"out": 2, "kernel": 1, "gate": True, "residual": True}, [_IMG, (1, 2, 1, 1), _IMG], _E),  # weights
              ({"out": 32, "kernel": 1, "gate": True}, [(1, 2, 2, 2), (1, 2, 1, 1)], _E),  # input, one thread
              ({"out": 64, "kernel": 1, "gate": True}, [(1, 512, 8, 8), (1, 512, 1, 1)], _E)], 2.0),  # in parallel
}
_FUSED_ONLY = frozenset({"residual", "gate"})


# maxpool2d's code paths (pool.maxpool2d), likewise
_MAXPOOL_PATHS: dict[str, tuple[list[Case], float]] = {
    "stride 2": ([({"kernel": 2}, [_IMG], _E)], 15.0),
    "centred": ([({"kernel": 3, "stride": 1, "padding": 1}, [_IMG], _E)], 11.0),
    "other": ([({"kernel": 3, "stride": 2}, [(1, 2, 5, 5)], _E)], 30.0),
}


def _maxpool_paths(attrs, dims: tuple[int, ...]) -> set[str]:
    return {pool.maxpool_path(attrs, dims[1], dims[2])}


# avgpool2d's, likewise
_AVGPOOL_PATHS: dict[str, tuple[list[Case], float]] = {
    "2×2": ([({"kernel": 2}, [_IMG], _E)], 0.5),
    "2×2 parallel": ([({"kernel": 2}, [_BIG], _E)], 1.5),
    "other": ([({"kernel": 3, "stride": 1, "padding": 1}, [_IMG], _E)], 12.0),
}


def _avgpool_paths(attrs, dims: tuple[int, ...]) -> set[str]:
    path = pool.avgpool_path(attrs, dims[1], dims[2])
    if path == "2×2" and 8 * math.prod(dims) >= pool.POOL_PARALLEL:  # (batch 8 may run it in parallel)
        return {path, "2×2 parallel"}
    return {path}


# linear's and fused_linear's: a small layer (linear._small, or at batches of 2 to linear.FEW_ROWS
# linear._few_rows_serial), else BLAS's path on all threads (batch 1, or more than FEW_ROWS) and
# linear._few_rows (batches of 2 to FEW_ROWS)
_LINEAR_PATHS: dict[str, tuple[list[Case], float]] = {
    "small": ([({"out": 3}, [(1, 4)], _E), ({"out": 3}, [(2, 4)], _E)], 1.5),  # (batch 2: linear._few_rows_serial)
    "blas": ([({"out": 64}, [(1, 2048)], _E), ({"out": 64}, [(16, 2048)], _E)], 0.5),
    "few rows": ([({"out": 64}, [(2, 2048)], _E)], 1.5),
}
_FUSED_LINEAR_PATHS: dict[str, tuple[list[Case], float]] = {
    "small": ([({"out": 3, "residual": True, "activation": "relu"}, [(1, 4), (1, 3)], _E),
               ({"out": 3, "residual": True, "activation": "relu"}, [(2, 4), (2, 3)], _E)], 2.0),
    "blas": ([({"out": 64, "activation": "relu"}, [(1, 2048)], _E),
              ({"out": 64, "activation": "relu"}, [(16, 2048)], _E)], 1.5),
    "few rows": ([({"out": 64, "activation": "relu"}, [(2, 2048)], _E)], 1.5),
}


def _linear_paths(attrs, dims: tuple[int, ...]) -> set[str]:
    return {"small"} if dims[-1] * attrs.out <= linear.SMALL_WEIGHTS else {"blas", "few rows"}


# concat's: one compilation per count of inputs (a tuple of arrays, `tensor.concat`), up to 4 warmed
_CONCAT_PATHS: dict[str, tuple[list[Case], float]] = {
    f"{k} inputs": ([({}, [_IMG] * k, _E)], 0.9) for k in (1, 2, 3, 4)}


def _concat_paths(attrs, dims: tuple[int, ...], count: int) -> set[str]:
    return {f"{count} inputs"} & set(_CONCAT_PATHS)


def _first_input(rule):
    return lambda attrs, dims, count: rule(attrs, dims)


# the ops with paths: their paths, and the paths a node may take (its attributes, the dims of its
# first input, its count of inputs)
_PATHS = {"conv2d": (_CONV_PATHS, _first_input(conv.paths)), "fused_conv2d": (_CONV_PATHS, _first_input(conv.paths)),
          "maxpool2d": (_MAXPOOL_PATHS, _first_input(_maxpool_paths)),
          "avgpool2d": (_AVGPOOL_PATHS, _first_input(_avgpool_paths)),
          "linear": (_LINEAR_PATHS, _first_input(_linear_paths)),
          "fused_linear": (_FUSED_LINEAR_PATHS, _first_input(_linear_paths)), "concat": (_CONCAT_PATHS, _concat_paths)}

# the other ops' cases (an op missing here: no attributes, one 1×2×4×4 input)
_WARM_CASES: dict[str, list[Case]] = {
    "conv_transpose2d": [({"out": 2, "kernel": 2, "stride": 2}, [_IMG], _E)],
    "adaptive_avgpool2d": [({"size": 2}, [_IMG], _E)],
    "batchnorm2d": [({}, [_IMG], ("eval", "train"))],
    "lrn": [({"size": 3}, [_IMG], _E)],
    "dropout": [({"p": 0.5}, [_IMG], ("train",))],
    "maxout": [({"pieces": 2}, [_IMG], _E)],
    "add": [({}, [_IMG, _IMG, _IMG], _E), ({}, [_BIG, _BIG], _E)],
    "mul": [({}, [_IMG, (1, 2, 1, 1)], _E), ({}, [_BIG, (1, 4, 1, 1)], _E)],
    "reshape": [({"shape": [-1]}, [_IMG], _E)],
    "squeeze_excitation": [({"hidden": 3, "activation": "silu", "gate_activation": "sigmoid"}, [shape], _E)
                           for shape in (_IMG, (1, 2, 128, 128))],  # the mean on one thread, then on all
    "center_crop": [({"size": 2}, [_IMG], _E)],
}
_ACTIVATIONS = ("relu", "relu6", "sigmoid", "tanh", "leaky_relu", "elu", "silu", "hardswish")
for _name in _ACTIVATIONS:  # on large inputs, a parallel kernel: warm that path too
    _attrs = {"slope": 0.1} if _name == "leaky_relu" else {}
    _WARM_CASES[_name] = [(_attrs, [_IMG], _E), (_attrs, [_BIG], _E)]
_WARM_CASES["conv2d"] = [case for path, (cases, _) in _CONV_PATHS.items() if path not in _FUSED_ONLY
                         for case in cases]
_WARM_CASES["fused_conv2d"] = [({"activation": "relu", **attrs}, shapes, modes)
                               for cases, _ in _CONV_PATHS.values() for attrs, shapes, modes in cases]
for _name, (_table, _) in _PATHS.items():
    if _name not in ("conv2d", "fused_conv2d"):
        _WARM_CASES[_name] = [case for cases, _ in _table.values() for case in cases]

# The other ops' cold seconds (alone, one op a process), less those of the code they share with
# others (`_USES`): that is compiled once, for the first op or path that runs it.
COMPILE_SECONDS: dict[str, float] = {
    "conv_transpose2d": 3.0, "global_avgpool": 0.8, "adaptive_avgpool2d": 1.2,
    "squeeze_excitation": 9.0, "batchnorm2d": 2.6, "lrn": 0.6, "identity": 0.1,
    **{name: 0.1 for name in _ACTIVATIONS}, "softmax": 0.7, "maxout": 0.3, "dropout": 0.2,
    "add": 0.9, "mul": 1.4,
    "flatten": 0.1, "reshape": 0.1, "center_crop": 0.6,
}
_SHARED_SECONDS = {"sgemm": 14.0,      # gemm.py's sgemm in blocks (on one thread and in parallel), its epilogue
                   "activate": 7.0,    # elementwise.activate: every activation, in one kernel
                   "implicit gemm": 3.0,  # implicit._convolve_share: the product of every form
                   "implicit parallel": 7.5}  # implicit._convolve: the padding and the product in parallel
# Paths whose cases compile all another path compiles: the flat implicit GEMM runs the rows' kernel
# (`implicit._convolve`) and copies out. Run in two processes, the two cases compiled it twice.
_COVERS = {"implicit flat": "implicit"}
_USES: dict[str, tuple[str, ...]] = {
    "wide gemm": ("sgemm",), "grouped gemm": ("sgemm",), "conv_transpose2d": ("sgemm",),
    "blas": ("sgemm",), **{name: ("activate",) for name in _ACTIVATIONS},
    "implicit": ("implicit gemm", "implicit parallel"), "implicit flat": ("implicit gemm", "implicit parallel"),
    "implicit serial": ("implicit gemm",),
}


def warm_up_order(op_names) -> list[str]:
    """The canonical names of `op_names`, each once: a list or tuple keeps its order; any other
    collection (a set) is put in the order of KERNELS, so that warm-up runs the same way every time.
    An op without a CPU kernel is a KeyError."""
    names = list(dict.fromkeys(ops.registry.canonical_name(n) for n in op_names))
    for n in names:
        kernel_for(n)
    if not isinstance(op_names, (list, tuple)):
        rank = {name: i for i, name in enumerate(KERNELS)}
        names.sort(key=rank.__getitem__)
    return names


def warm_up_plan(names: list[str], graph=None) -> list[tuple[str, list[Case], float]]:
    """For each op of `names` in order: the cases to run and their expected cold seconds. With a
    graph, an op with paths runs only those its nodes may take; a path already warmed (conv2d's,
    for fused_conv2d) is not run again."""
    needed: dict[str, set[str]] = {}
    if graph is not None:
        for node in graph.nodes:
            if node.op in _PATHS:
                dims = graph.type_of(node.inputs[0]).dims
                needed.setdefault(node.op, set()).update(_PATHS[node.op][1](node.attrs, dims, len(node.inputs)))
    for paths in needed.values():  # (a path whose cases compile another's code too: that one's cases not run)
        paths -= {covered for path, covered in _COVERS.items() if path in paths}
    plan, warmed = [], set()

    def seconds(part, own):  # its own seconds, and those of the shared code it is the first to run
        shared = [u for u in _USES.get(part, ()) if u not in warmed]
        warmed.update(shared)
        return own + sum(_SHARED_SECONDS[u] for u in shared)
    for name in names:
        if name in _PATHS:
            table = _PATHS[name][0]
            paths = [p for p in table if (graph is None or p in needed.get(name, ()))
                     and (id(table), p) not in warmed and not (name == "conv2d" and p in _FUSED_ONLY)]
            warmed.update((id(table), p) for p in paths)
            fused = name == "fused_conv2d"
            cases = [({"activation": "relu", **attrs} if fused else attrs, shapes, modes)
                     for p in paths for attrs, shapes, modes in table[p][0]]
            plan.append((name, cases, sum(seconds(p, table[p][1]) for p in paths)))
        else:
            cases = _WARM_CASES.get(name, [({}, [_IMG], _E)])
            plan.append((name, cases, seconds(name, COMPILE_SECONDS.get(name, 1.0))))
    return plan


def _warm_one(name: str, cases: list[Case]) -> None:
    op = ops.get(name)
    kernel = KERNELS[name]
    rng = np.random.default_rng(0)
    for attrs_dict, shapes, modes in cases:
        attrs = op.attrs.model_validate(attrs_dict)
        types = [TensorType(s) for s in shapes]
        infer_output(op, attrs, types)
        inputs = [rng.standard_normal(s).astype(np.float32) for s in shapes]
        for mode in modes:
            params = {p: (np.ones(spec.shape, np.float32) if p == "running_var"
                          else rng.standard_normal(spec.shape).astype(np.float32))
                      for p, spec in op.params(attrs, types).items()}
            kernel(attrs, inputs, params, RunContext(mode, np.random.default_rng(0)))


def reporting_compiles(working: Callable[[], None] | None):
    """A context in which `working()` is called whenever Numba starts compiling a function (a load
    from the on-disk cache is no such event)."""
    if working is None:
        return contextlib.nullcontext()
    from numba.core import event

    class Compiling(event.Listener):
        def on_start(self, e):
            working()

        def on_end(self, e):
            pass
    return event.install_listener("numba:compile", Compiling())


# Whether a cold warm-up may compile in a second process (`_SecondCompiler`); the second process
# itself runs with it off. NETSPEC_COMPILE_JOBS=1 turns it off.
PARALLEL = os.environ.get("NETSPEC_COMPILE_JOBS", "") != "1"
_MIN_UNITS = 4  # cases left to warm below which a second process is not worth its start (~2 s)
_WAIT_SECONDS = 900  # after this one is done, the longest it waits for the other (a hung one is stopped)
# The ops whose kernels call the GEMMs (packed.py, gemm.py): the second process leaves their cases
# until this one has compiled the GEMMs (else both would compile them), in the convolutions' first
# cases (their "gemm" and "wide gemm" paths), or in the first op where those are not warmed; it
# takes the other cases meanwhile, the convolutions' paths that call no GEMM among them.
_GEMM_USERS = frozenset({"conv2d", "fused_conv2d", "conv_transpose2d", "linear", "fused_linear",
                         "squeeze_excitation"})


def _path_of(name: str, case: Case) -> str | None:
    """The path of an op with paths (`_PATHS`) that a warm-up case belongs to; None for other ops."""
    if name not in _PATHS:
        return None
    attrs = {k: v for k, v in case[0].items() if not (name == "fused_conv2d" and k == "activation")}
    for path, (cases, _) in _PATHS[name][0].items():
        if (attrs, *case[1:]) in cases or case in cases:
            return path
    return None


def _case_seconds(name: str, case: Case) -> float:
    """A case's expected cold seconds: its path's (or op's) share, the shared code not counted."""
    path = _path_of(name, case)
    if path is not None:
        cases, seconds = _PATHS[name][0][path]
        return seconds / len(cases)
    if name in _PATHS:
        return 1.0
    return COMPILE_SECONDS.get(name, 1.0) / len(_WARM_CASES.get(name, [None]))


_CONVOLUTIONS = ("conv2d", "fused_conv2d")
_GEMM_PATHS = ("gemm", "wide gemm")  # the convolutions' paths that compile the GEMMs
_NO_GEMM_PATHS = ("implicit", "implicit flat", "depthwise", "wide depthwise")  # (the micro-kernel inlined, no call)


def _waits_for_gemms(name: str, case: Case) -> bool:
    return name in _GEMM_USERS and not (name in _CONVOLUTIONS and _path_of(name, case) in _NO_GEMM_PATHS)


def _gemm_prefix(units: list[tuple[str, tuple]]) -> int:
    """How many of the first units compile the GEMMs (the convolutions' `_GEMM_PATHS`): none where
    the first op's cases do not start with them, then the first op's count."""
    count = 0
    while count < len(units) and units[count][0] in _CONVOLUTIONS and _path_of(*units[count]) in _GEMM_PATHS:
        count += 1
    if count or not units:
        return count
    return sum(1 for name, _ in units if name == units[0][0])


class _SecondCompiler:
    """A second process compiling the same warm-up, the longest cases first (`serve_warm_up`), while
    this one goes forwards: Numba compiles on one core, and the kernels' first compile is most of a
    cold first run (ResNet-50: ~60 s on one process). Each case is claimed before it runs, by
    creating a file named after it (O_EXCL: one process wins), so each runs once; the cases the
    other process ran are then run here too, loading what it compiled from the shared on-disk
    cache. Started at the first compile (a warm cache needs no help). If the other process fails,
    this one compiles its cases itself."""

    def __init__(self, units: list[tuple[str, tuple]]):
        self.units = units  # (op, case), in this process's order
        self.mine: set[int] = set()
        self.folder: str | None = None
        self.process: subprocess.Popen | None = None
        self.gemms_compiled = False

    def gemms_done(self) -> None:
        """The GEMMs are compiled (`_gemm_prefix`): the other process may take their users now."""
        if not self.gemms_compiled:
            self.gemms_compiled = True
            self._ready()

    def _ready(self) -> None:
        if self.gemms_compiled and self.folder is not None:
            open(os.path.join(self.folder, "ready"), "w").close()

    def start(self) -> None:
        if self.process is not None or not PARALLEL or (os.cpu_count() or 1) < 2:
            return
        if len(self.units) - len(self.mine) < _MIN_UNITS:
            return
        from . import CACHE_FOLDER
        self.folder = tempfile.mkdtemp(prefix="netspec-warm-")
        with open(os.path.join(self.folder, "units.json"), "w") as f:
            json.dump([[name, attrs, [list(s) for s in shapes], list(modes)]
                       for name, (attrs, shapes, modes) in self.units], f)
        for k in self.mine:
            _claim(self.folder, k)
        self._ready()
        root = os.path.dirname(os.path.dirname(os.path.abspath(ops.__file__)))  # (this netspec's sources)
        env = {**os.environ, "NUMBA_CACHE_DIR": CACHE_FOLDER, "NETSPEC_COMPILE_JOBS": "1",
               "PYTHONPATH": os.pathsep.join([root] + [p for p in [os.environ.get("PYTHONPATH")] if p])}
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-c", "import sys; from netspec.backends.cpu.kernels import serve_warm_up; "
                 "serve_warm_up(sys.argv[1])", self.folder],
                env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except OSError:  # (no second process: this one does it all)
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    def claim(self, k: int) -> bool:
        """Whether this process runs case k (else the other one has)."""
        if self.process is None or _claim(self.folder, k):
            self.mine.add(k)
            return True
        return False

    def finish(self) -> list[int]:
        """Wait for the other process; the cases it took (to be loaded here, or compiled here if it
        failed or hung)."""
        if self.process is None:
            return []
        try:
            self.process.wait(timeout=_WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            self.close()
        return [k for k in range(len(self.units)) if k not in self.mine]

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:  # (interrupted: stop it)
            self.process.kill()
            self.process.wait()
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


def _claim(folder: str, k: int) -> bool:
    """Whether this process is the first to claim case k (creating folder/k)."""
    try:
        os.close(os.open(os.path.join(folder, str(k)), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        return True
    except FileExistsError:
        return False


def serve_warm_up(folder: str) -> None:
    """The second process of `_SecondCompiler`: the cases of folder/units.json that no process has
    claimed yet, the longest to compile first (`_case_seconds`; ties from the last one backwards),
    each claimed before it runs, until every case is claimed; the first process goes forwards in
    order, so the two finish close together. The GEMMs' users (`_waits_for_gemms`) only once
    folder/ready exists."""
    import time
    with open(os.path.join(folder, "units.json")) as f:
        units = [(name, (attrs, [tuple(s) for s in shapes], tuple(modes))) for name, attrs, shapes, modes in json.load(f)]
    parent = os.getppid()
    order = sorted(range(len(units)), key=lambda k: (-_case_seconds(*units[k]), -k))
    while True:
        free = [k for k in order if not os.path.exists(os.path.join(folder, str(k)))]
        if not free:
            return
        ready = os.path.exists(os.path.join(folder, "ready"))
        k = next((k for k in free if ready or not _waits_for_gemms(*units[k])), None)
        if k is None:  # (only the GEMMs' users are left: wait until they may run)
            if os.getppid() != parent:  # (the first process is gone)
                return
            time.sleep(0.05)
        elif _claim(folder, k):
            name, case = units[k]
            try:
                _warm_one(name, [case])
            except Exception:  # noqa: BLE001 (the first process runs it again, and reports what fails)
                pass


def warm_up(op_names, progress: Callable[[int, int, str], None] | None = None, graph=None) -> None:
    """Compile (or load from the on-disk cache) the kernels of `op_names` by running each on tiny
    inputs, in the order of `warm_up_order`. Names may be aliases; duplicates are warmed once; an op
    without a CPU kernel is a KeyError. With `graph` (typed), the ops with several code paths
    (convolutions, max pooling) warm only the paths its nodes may take; without, all of them.
    Where the cases compile (a cold cache), a second process compiles some of them
    (`_SecondCompiler`).

    `progress(done, total, name)` is called before each op is warmed (done = ops finished so far)
    and once more at the end with done == total and name "", so a caller can report on stderr. If
    it has them, `progress.plan({op: seconds})` is called first with the ops' expected cold compile
    times (`warm_up_plan`), and `progress.working()` whenever Numba starts compiling something.
    """
    # (what this process already ran needs no second run: a training run compiles its network
    # for evaluation after every epoch)
    plan = [(name, cases, seconds) for name, cases, seconds in warm_up_plan(warm_up_order(op_names), graph)
            if (name, repr(cases)) not in _WARMED]
    if progress is not None and hasattr(progress, "plan"):
        progress.plan({name: seconds for name, _, seconds in plan})
    units = [(name, case) for name, cases, _ in plan for case in cases]
    second = _SecondCompiler(units)
    working = getattr(progress, "working", None)

    def compiling():
        second.start()
        if working is not None:
            working()
    try:
        with reporting_compiles(compiling):
            k, gemms = 0, _gemm_prefix(units)
            for i, (name, cases, _) in enumerate(plan):
                if progress is not None:
                    progress(i, len(plan), name)
                if not cases:
                    _warm_one(name, cases)
                for case in cases:  # (each claimed as it comes: the other process may take the last)
                    if k >= gemms:
                        second.gemms_done()
                    if second.claim(k):
                        _warm_one(name, [case])
                    k += 1
            second.gemms_done()
            for k in second.finish():  # loaded from the cache the other process filled
                name, case = units[k]
                _warm_one(name, [case])
    finally:
        second.close()
    _WARMED.update((name, repr(cases)) for name, cases, _ in plan)
    if progress is not None:
        progress(len(plan), len(plan), "")


_WARMED: set[tuple[str, str]] = set()  # (op, its cases) warmed in this process
