"""The numba.cuda kernels (netspec.backends.cuda) against the ops' numpy references, and whole networks
on the CUDA backend against the reference executor.

Runs only under the CUDA simulator (NUMBA_ENABLE_CUDASIM=1, set before numba is imported, so in a
pytest process of its own: tests/test_cuda_sim.py launches one) or on a machine with a usable NVIDIA
GPU (tools/gpu_check.sh); anywhere else the whole module is skipped at collection:

    NUMBA_ENABLE_CUDASIM=1 .venv/bin/python -m pytest tests/cuda -q

(No conftest.py here: pytest would import it as the module `conftest`, in place of tests/conftest.py,
whose helpers the other tests import by that name.)
Tolerances as DESIGN.md: rtol = atol = 1e-4 per op, 1e-3 end to end. The simulator runs every GPU
thread as a Python thread, so shapes are tiny and hypothesis draws few (deterministic) examples.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest

SIMULATED = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"


def _gpu_usable() -> bool:
    if SIMULATED:
        return True
    try:
        from netspec.backends.cuda import available
        return available()
    except Exception:
        return False


if not _gpu_usable():
    pytest.skip("no GPU and NUMBA_ENABLE_CUDASIM is not 1: run NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/cuda "
                "(tests/test_cuda_sim.py does)", allow_module_level=True)
if SIMULATED:
    # The simulator runs each GPU thread as a Python thread and polls them for syncthreads(): a short
    # switch interval makes its barriers several times faster.
    sys.setswitchinterval(5e-4)
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st

import netspec
from conftest import BASIC_BLOCK, dedent  # tests/conftest.py: the residual block shared with the main tests
from netspec import ops
from netspec.backends.cuda import kernel_for
from netspec.backends.cuda import kernels as K
from netspec.backends.cuda.ops import STEPS
from netspec.ir.types import TensorType
from netspec.ops.registry import RunContext, ShapeError, infer_output

RTOL = ATOL = 1e-4  # per op
RTOL_NET = ATOL_NET = 1e-3  # end to end
ROOT = Path(__file__).resolve().parents[2]
OP_NAMES = [op.name for op in ops.all_ops(internal=True)]  # with the fused ops passes make


def _cpu_cases():
    """The hypothesis strategies of the CPU kernel tests (one per op), reused here."""
    spec = importlib.util.spec_from_file_location("_netspec_cpu_kernel_cases", ROOT / "tests" / "test_cpu_kernels.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.CASES, module.make_params


CASES, make_params = _cpu_cases()
# few examples: the simulator is slow (a real GPU takes more: NETSPEC_CUDA_EXAMPLES)
SCALE = int(os.environ.get("NETSPEC_CUDA_EXAMPLES", "3" if SIMULATED else "10"))
EXAMPLES = {"conv2d": 8, "conv_transpose2d": 8, "maxpool2d": 4, "avgpool2d": 4, "batchnorm2d": 4, "linear": 4}
# On a lent GPU time is scarce: a failing example is reported as found, not shrunk.
PHASES = tuple(Phase) if SIMULATED else (Phase.explicit, Phase.reuse, Phase.generate)
TRAIN_MATTERS = {"batchnorm2d", "dropout"}  # the other ops are the same in both modes


def check_against_reference(name: str, attrs_dict: dict, shapes, seed: int, scale: float = 1.0):
    op = ops.get(name)
    attrs = op.attrs.model_validate(attrs_dict)
    types = [TensorType(tuple(s)) for s in shapes]
    try:
        expected_type = infer_output(op, attrs, types)
    except ShapeError:
        assume(False)
    rng = np.random.default_rng(seed)
    inputs = [(scale * rng.standard_normal(s)).astype(np.float32) for s in shapes]
    params = make_params(op, attrs, types, rng)
    kernel = kernel_for(name)
    for mode in ("eval", "train") if name in TRAIN_MATTERS else ("eval",):
        ref_params, gpu_params = dict(params), dict(params)
        originals = [x.copy() for x in inputs] + [p.copy() for p in params.values()]
        try:  # identically seeded generators: dropout draws the same mask in both
            want = op.reference(attrs, [x.copy() for x in inputs], ref_params, RunContext(mode, np.random.default_rng(seed)))
        except ValueError:  # batch norm training on one value per channel: the CUDA kernel refuses too
            with pytest.raises(ValueError):
                kernel(attrs, inputs, gpu_params, RunContext(mode, np.random.default_rng(seed)))
            continue
        got = kernel(attrs, inputs, gpu_params, RunContext(mode, np.random.default_rng(seed)))
        assert got.dtype == np.float32 and got.shape == want.shape == tuple(expected_type.shape)
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=f"{name} {mode} {attrs!r} {shapes}")
        assert ref_params.keys() == gpu_params.keys()
        for key in ref_params:  # batch norm training: the running statistics as the reference updates them
            np.testing.assert_allclose(gpu_params[key], ref_params[key], rtol=RTOL, atol=ATOL,
                                       err_msg=f"{name} {mode} parameter {key}")
        for before, after in zip(originals, inputs + list(params.values())):
            np.testing.assert_array_equal(before, after)


# --- every op ------------------------------------------------------------------------------------


def test_every_op_has_a_cuda_kernel():
    missing = sorted(set(OP_NAMES) - set(STEPS))
    assert not missing, f"ops without a CUDA kernel (add one in netspec/backends/cuda): {missing}"
    assert set(STEPS) <= set(OP_NAMES)
    assert kernel_for("swish") is not None  # aliases resolve


@pytest.mark.parametrize("name", OP_NAMES)
def test_kernel_matches_reference(name):
    assert name in CASES, f"no strategy for {name} in tests/test_cpu_kernels.py"

    @settings(max_examples=EXAMPLES.get(name, 2) * SCALE, deadline=None, derandomize=True, database=None,
              phases=PHASES, suppress_health_check=list(HealthCheck))
    @given(case=CASES[name], seed=st.integers(0, 2**32 - 1))
    def run(case, seed):
        attrs, shapes = case
        check_against_reference(name, attrs, shapes, seed)

    run()


# --- the GEMM's paths, explicitly -----------------------------------------------------------------


@pytest.mark.parametrize("name, attrs, shape", [
    ("conv2d", {"out": 5, "kernel": 3, "padding": 1}, (2, 3, 6, 5)),                      # wide tiles, partial
    ("conv2d", {"out": 4, "kernel": [3, 2], "stride": 2, "dilation": [1, 2], "padding": [2, 1]}, (1, 2, 7, 7)),
    ("conv2d", {"out": 20, "kernel": 1, "bias": False}, (1, 3, 2, 2)),                    # narrow tiles, rows > TM
    ("conv2d", {"out": 4, "kernel": 3, "groups": 4, "padding": "same"}, (2, 4, 5, 5)),     # depthwise
    ("conv2d", {"out": 6, "kernel": 3, "groups": 2}, (1, 4, 5, 6)),                        # grouped
    ("conv_transpose2d", {"out": 3, "kernel": 2, "stride": 2}, (1, 4, 3, 3)),              # U-Net's up-sampling
    ("conv_transpose2d", {"out": 4, "kernel": 3, "stride": 2, "padding": 1, "output_padding": 1, "groups": 2},
     (2, 2, 3, 4)),
    ("linear", {"out": 21}, (1, 37)),                                                      # narrow, K > TK
    ("linear", {"out": 7, "bias": False}, (19, 9)),                                        # wide (batch > 2·TN)
])
def test_gemm_paths(name, attrs, shape):
    check_against_reference(name, attrs, [shape], seed=1)


@pytest.mark.parametrize("attrs, shape", [
    ({"hidden": 2, "activation": "silu", "gate_activation": "sigmoid"}, (2, 5, 3, 4)),         # EfficientNet's
    ({"hidden": 3, "squeeze_bias": False, "excite_bias": False, "activation": "leaky_relu", "alpha": 0.2},
     (1, 4, 2, 2)),                                                                              # no bias, no gate act
    ({"hidden": 6, "excite_bias": False, "gate_activation": "elu", "gate_alpha": 0.5}, (3, 2, 1, 1)),
])
def test_squeeze_excitation_paths(attrs, shape):
    """Its own cases besides the drawn ones: each bias and activation on and off, alpha reaching both."""
    check_against_reference("squeeze_excitation", attrs, [shape], seed=2)


def test_tilings_cover_both_paths():
    assert K.tiles_for(1) is K.NARROW
    assert K.tiles_for(10_000) is K.WIDE
    for t in (K.WIDE, K.NARROW):
        assert t.tm % t.rm == 0 and t.tn % t.rn == 0


def test_train_mode_batchnorm_refuses_one_value_per_channel():
    with pytest.raises(ValueError, match="more than one value"):
        kernel_for("batchnorm2d")(ops.get("batchnorm2d").attrs(), [np.ones((1, 2, 1, 1), np.float32)],
                                  {"weight": np.ones(2, np.float32), "bias": np.zeros(2, np.float32),
                                   "running_mean": np.zeros(2, np.float32), "running_var": np.ones(2, np.float32)},
                                  RunContext("train", np.random.default_rng(0)))


# --- whole networks -------------------------------------------------------------------------------

TINY_RESNET = dedent("""
    netspec: 1
    name: tiny_resnet
    input: {shape: [3, 8, 8]}
""" + BASIC_BLOCK) + """layers:
  - {op: conv2d, name: stem, out: 4, kernel: 3, padding: 1, bias: false}
  - {op: batchnorm2d, name: bn}
  - {op: relu}
  - {op: maxpool2d, kernel: 2}
  - {op: basic, name: layer1, c: 4}
  - {op: basic, name: layer2, c: 8, stride: 2}
  - {op: global_avgpool}
  - {op: flatten}
  - {op: dropout, p: 0.5}
  - {op: linear, name: fc, out: 5}
"""


def _tiny_resnet(tmp_path):
    path = tmp_path / "tiny_resnet.yaml"
    path.write_text(TINY_RESNET)
    return netspec.load(path)


def _compare(graph, x, mode="eval", runs=1, optimize=True):
    gpu = netspec.compile(graph, backend="cuda", mode=mode, seed=3, optimize=optimize)
    ref = netspec.compile(graph, backend="reference", mode=mode, seed=3, optimize=optimize)
    for _ in range(runs):
        a, b = gpu.run(x), ref.run(x)
        assert a.keys() == b.keys()
        for k in a:
            assert a[k].shape == b[k].shape and a[k].dtype == np.float32
            np.testing.assert_allclose(a[k], b[k], rtol=RTOL_NET, atol=ATOL_NET, err_msg=k)
    return gpu, ref


def test_lenet5_matches_the_reference_executor():
    graph = netspec.load(ROOT / "specs" / "lenet5.yaml")
    x = np.random.default_rng(0).standard_normal((1, 1, 32, 32), dtype=np.float32)
    gpu, _ = _compare(graph, x)
    plan = gpu.buffer_plan(1)
    assert plan.planned_bytes < plan.naive_bytes  # liveness-based reuse


@pytest.mark.parametrize("mode, optimize", [("eval", True), ("eval", False), ("train", True)])
def test_tiny_resnet_matches_the_reference_executor(tmp_path, mode, optimize):
    graph = _tiny_resnet(tmp_path)
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8), dtype=np.float32)
    gpu, ref = _compare(graph, x, mode, runs=2 if mode == "train" else 1, optimize=optimize)
    if mode == "train":  # running statistics updated on the device, twice, as the reference did
        for key, value in ref.weights.items():
            np.testing.assert_allclose(gpu.weights[key], value, rtol=RTOL_NET, atol=ATOL_NET, err_msg=key)
        assert not np.allclose(gpu.weights["bn.running_mean"], 0)


SE_NET = """
netspec: 1
name: se_net
input: {shape: [6, 5, 5]}
layers:
  - {op: conv2d, name: expand, out: 8, kernel: 1}
  - {op: silu, name: act}
  - {op: global_avgpool, name: squeeze}
  - {op: conv2d, name: reduce, out: 2, kernel: 1}
  - {op: relu}
  - {op: conv2d, name: excite, out: 8, kernel: 1}
  - {op: sigmoid, name: gate}
  - {op: mul, name: scaled, in: [act, gate]}
  - {op: conv2d, name: project, out: 6, kernel: 1}
  - {op: add, name: sum, in: [project, input]}
  - {op: flatten}
  - {op: linear, name: fc, out: 4}
  - {op: leaky_relu, name: out, slope: 0.2}
  - {op: linear, name: head, out: 3}
"""


def test_fused_gate_residual_and_linear_activation_match_the_reference(tmp_path):
    path = tmp_path / "se_net.yaml"
    path.write_text(SE_NET)
    graph = netspec.load(path)
    x = np.random.default_rng(4).standard_normal((2, 6, 5, 5), dtype=np.float32)
    gpu, _ = _compare(graph, x)
    fused = {n.name: n.attrs for n in gpu.graph.nodes if n.op.startswith("fused_")}
    assert fused["project"].gate and fused["project"].residual and fused["fc"].activation == "leaky_relu"
    # the SE gate (squeeze, reduce, relu, excite, sigmoid) is one node, named as its last conv
    assert [(n.op, n.attrs.activation, n.attrs.gate_activation) for n in gpu.graph.nodes if n.name == "excite"] == \
        [("squeeze_excitation", "relu", "sigmoid")]


def test_buffer_plan_never_overwrites_a_live_tensor(tmp_path):
    exe = netspec.compile(_tiny_resnet(tmp_path), backend="cuda", optimize=False)
    graph = exe.graph
    plan = exe.buffer_plan(4)
    order = list(graph.inputs) + [n.name for n in graph.nodes]
    born = {name: i - len(graph.inputs) for i, name in enumerate(order)}
    last = {name: born[name] for name in order}
    for i, node in enumerate(graph.nodes):
        for name in node.inputs:
            last[name] = max(last[name], i)
    for name in graph.outputs:
        last[name] = len(graph.nodes)
    roots = plan._roots
    live_until = {}
    for name in order:
        r = roots[name]
        live_until[r] = max(live_until.get(r, -10), last[name])
    for a in set(roots.values()):
        for b in set(roots.values()):
            if a < b and plan.storage[a] == plan.storage[b]:  # one buffer: lifetimes must not overlap
                assert live_until[a] < born[b] or live_until[b] < born[a], (a, b)
    for name, shape in plan.shapes.items():
        assert plan.capacity[plan.storage[name]] >= int(np.prod(shape))
    assert len(plan.capacity) < len(set(roots.values()))


def test_inputs_are_checked_like_the_cpu_executor(tmp_path):
    exe = netspec.compile(_tiny_resnet(tmp_path), backend="cuda")
    with pytest.raises(netspec.backends.executor.InputError, match="shape"):
        exe.run(np.zeros((1, 3, 9, 8), np.float32))
    with pytest.raises(netspec.backends.executor.InputError, match="NaN"):
        exe.run(np.full((1, 3, 8, 8), np.nan, np.float32))
