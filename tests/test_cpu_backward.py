"""The CPU kernel of the grad op (netspec/backends/cpu/backward.py) against the backward rules.

Every op with a fast gradient kernel, every gradient of it (each differentiable input, each
trainable parameter): on hypothesis-drawn cases (the shapes and attributes of
tests/test_reference.py) and on a few layer-sized ones that take the multi-threaded paths, the
kernel's float32 gradient must agree with the op's numpy rule (OpDef.backward, the judge) to
1e-4 relative: max |kernel − rule| ≤ 1e-4 · max |rule|. The grad node is built as the autodiff
pass builds it: its inputs are dy, then the forward inputs and output where the rule's `uses`
asks for them. The heavy ops (convolutions, pooling, batch normalization, linear) must take
their fast kernel, never the rule.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_reference import draw_case, random_params

import netspec.ops as ops
from netspec.backends.cpu import backward
from netspec.ir.types import TensorType
from netspec.ops import RunContext
from netspec.ops.grad import GradAttrs, grad_args
from netspec.ops.registry import infer_output

TOLERANCE = 1e-4
HEAVY = ("conv2d", "conv_transpose2d", "maxpool2d", "avgpool2d", "global_avgpool", "adaptive_avgpool2d",
         "batchnorm2d", "linear")
ELEMENTWISE = tuple(name for name in backward.FAST_OPS if name not in HEAVY)
EXAMPLES = {"conv2d": 40, "conv_transpose2d": 30, "batchnorm2d": 30}


def _ctx(mode):
    return RunContext(mode=mode, rng=np.random.default_rng(7))


def _targets(op, attrs, inputs, params):
    types = [TensorType(x.shape) for x in inputs]
    trainable = [p for p, spec in op.params(attrs, types).items() if spec.trainable and p in params]
    return [i for i in range(len(inputs)) if op.backward.differentiable(attrs, i)] + trainable


def grad_node(name, attrs, wrt, inputs, y, dy, params):
    """The grad node's attributes and input values for ∂/∂wrt, as the autodiff pass makes them."""
    op = ops.get(name)
    uses = tuple(op.backward.uses(attrs, wrt))
    batched = isinstance(wrt, int)
    dims = tuple(inputs[wrt].shape[1:]) if batched else tuple(params[wrt].shape)
    a = GradAttrs(op=name, node="n", wrt=wrt, forward=attrs, uses=uses, inputs=len(inputs),
                  input_dims=tuple(tuple(x.shape[1:]) for x in inputs), dims=dims, batched=batched,
                  params=tuple(params))
    values = [dy] + (list(inputs) if "inputs" in uses else []) + ([y] if "output" in uses else [])
    return a, values


def reference_gradient(a, values, params, ctx):
    """The judge: the forward op's backward rule (float64 inside), as the grad op's reference gives it:
    in dy's dtype, float32 (a float64 value float32 cannot hold, 1e-300, is 0 there too)."""
    return np.asarray(ops.get(a.op).backward.rule(a.forward, grad_args(a, values, params, ctx)), np.float32)


def relative_error(got, want):
    scale = float(np.abs(want).max()) if want.size else 0.0
    diff = float(np.abs(got.astype(np.float64) - want).max()) if want.size else 0.0
    return diff / scale if scale > 0 else diff


def _check(name, attrs, inputs, params, mode, rng, monkeypatch=None):
    op = ops.get(name)
    y = op.reference(attrs, [x.copy() for x in inputs], {k: v.copy() for k, v in params.items()}, _ctx(mode))
    dy = rng.standard_normal(y.shape).astype(np.float32) * np.isfinite(y)  # (a max-pool window all padding: -inf)
    y = np.where(np.isfinite(y), y, 0.0).astype(np.float32)
    for wrt in _targets(op, attrs, inputs, params):
        a, values = grad_node(name, attrs, wrt, inputs, y, dy, params)
        want = reference_gradient(a, values, {k: v.copy() for k, v in params.items()}, _ctx(mode))
        before = [v.copy() for v in values]
        got = backward.grad_kernel(a, values, {k: v.copy() for k, v in params.items()}, _ctx(mode))
        assert isinstance(got, np.ndarray) and got.dtype == np.float32 and got.flags.c_contiguous
        assert got.shape == want.shape, f"{name} ∂/∂{wrt}: shape {got.shape}, rule {want.shape}"
        err = relative_error(got, want)
        where = f"{name} ∂/∂{wrt} ({mode}) {attrs!r} on {[x.shape for x in inputs]}"
        assert err <= TOLERANCE, f"{where}: error {err:.2e}"
        for v0, v in zip(before, values):  # the kernel never writes into its inputs
            np.testing.assert_array_equal(v0, v)


def _no_rule(*args, **kwargs):
    raise AssertionError("a heavy op's gradient fell back to its numpy rule")


def _needs_rule(name):
    if ops.get(name).backward is None:
        pytest.skip(f"{name} has no backward rule yet")


@pytest.mark.parametrize("name", HEAVY + ELEMENTWISE)
def test_gradient_kernel_matches_rule(name, monkeypatch):
    _needs_rule(name)
    op = ops.get(name)
    if name in HEAVY:  # the fast kernel, not the rule
        monkeypatch.setattr(backward, "rule", _no_rule)

    @settings(max_examples=EXAMPLES.get(name, 20), deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    @given(data=st.data())
    def run(data):
        _, attrs, types, mode = draw_case(data, name)
        rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
        inputs = [rng.standard_normal(t.shape).astype(np.float32) for t in types]
        params = random_params(op, attrs, types, rng)
        _check(name, attrs, inputs, params, mode, rng)

    run()


# Layer-sized cases: the multi-threaded GEMMs (dW's columns shared by the threads, chunks of
# images), the forward kernels (depthwise, large images), 1×1 layers' direct products.
LAYERS = [
    ("conv2d", dict(out=32, kernel=3, padding=1, bias=False), (4, 32, 12, 12)),
    ("conv2d", dict(out=64, kernel=3, stride=2, padding=1), (3, 32, 15, 15)),
    ("conv2d", dict(out=48, kernel=1, stride=2, bias=False), (2, 24, 10, 10)),
    ("conv2d", dict(out=40, kernel=1), (2, 24, 24, 24)),
    ("conv2d", dict(out=8, kernel=7, stride=2, padding=3), (3, 3, 33, 31)),
    ("conv2d", dict(out=32, kernel=3, padding="same", dilation=2, groups=4), (2, 16, 13, 11)),
    ("conv2d", dict(out=16, kernel=3, padding=1), (1, 16, 100, 96)),
    ("conv2d", dict(out=24, kernel=3, padding=1), (2, 16, 17, 19)),
    ("conv2d", dict(out=16, kernel=3, padding=[0, 2], bias=False), (2, 20, 18, 21)),
    ("conv2d", dict(out=24, kernel=3, padding=1, groups=24, bias=False), (3, 24, 20, 18)),
    ("conv2d", dict(out=24, kernel=3, stride=2, padding=1, groups=24), (3, 24, 21, 20)),
    ("conv2d", dict(out=16, kernel=[5, 3], stride=[2, 1], padding=[2, 0], groups=16), (2, 16, 9, 9)),
    ("conv2d", dict(out=24, kernel=3, padding=1, groups=24), (2, 24, 7, 9)),
    ("conv2d", dict(out=8, kernel=3, stride=2, padding=1, groups=8, bias=False), (2, 8, 40, 38)),
    ("conv2d", dict(out=16, kernel=3, padding=1, groups=8), (2, 8, 6, 6)),  # 2 filters a channel: grouped GEMMs
    ("conv_transpose2d", dict(out=16, kernel=2, stride=2), (2, 32, 8, 8)),
    ("conv_transpose2d", dict(out=12, kernel=3, stride=2, padding=1, output_padding=1, groups=3), (2, 12, 7, 6)),
    ("maxpool2d", dict(kernel=3, stride=2, padding=1), (4, 16, 32, 32)),
    ("maxpool2d", dict(kernel=2, ceil_mode=True), (2, 8, 15, 17)),
    ("avgpool2d", dict(kernel=3, stride=2, padding=1, count_include_pad=False, ceil_mode=True), (3, 8, 14, 15)),
    ("batchnorm2d", dict(), (8, 32, 16, 16)),
    ("batchnorm2d", dict(affine=False), (16, 12)),
    ("linear", dict(out=100), (32, 300)),
]


@pytest.mark.parametrize("name, attr_values, shape", LAYERS, ids=lambda v: str(v))
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_gradient_kernel_on_layer_sized_inputs(name, attr_values, shape, mode, monkeypatch):
    _needs_rule(name)
    monkeypatch.setattr(backward, "rule", _no_rule)
    op = ops.get(name)
    attrs = op.attrs(**attr_values)
    types = [TensorType(shape)]
    infer_output(op, attrs, types)
    rng = np.random.default_rng(0)
    inputs = [(rng.standard_normal(shape) * 2 + 0.5).astype(np.float32)]
    _check(name, attrs, inputs, random_params(op, attrs, types, rng), mode, rng)


def test_gradient_kernel_writes_into_out():
    """Given the executor's array, the kernel writes the gradient there and returns it."""
    name = "conv2d"
    _needs_rule(name)
    op = ops.get(name)
    attrs = op.attrs(out=8, kernel=3, stride=2, padding=1)
    x = np.random.default_rng(1).standard_normal((2, 4, 9, 9)).astype(np.float32)
    params = random_params(op, attrs, [TensorType(x.shape)], np.random.default_rng(2))
    y = op.reference(attrs, [x], params, _ctx("train"))
    dy = np.ones_like(y)
    for wrt in (0, "weight", "bias"):
        a, values = grad_node(name, attrs, wrt, [x], y, dy, params)
        want = backward.grad_kernel(a, values, params, _ctx("train"))
        out = np.full(want.shape, np.nan, np.float32)
        got = backward.grad_kernel(a, values, params, _ctx("train"), out=out)
        assert got is out
        np.testing.assert_array_equal(out, want)


def test_ops_without_a_fast_kernel_run_their_rule():
    """An op with no fast gradient (softmax here) gets its rule's gradient, as float32."""
    name = "softmax"
    _needs_rule(name)
    op = ops.get(name)
    attrs = op.attrs(axis=1)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 5)).astype(np.float32)
    y = op.reference(attrs, [x], {}, _ctx("eval"))
    a, values = grad_node(name, attrs, 0, [x], y, rng.standard_normal(y.shape).astype(np.float32), {})
    got = backward.grad_kernel(a, values, {}, _ctx("eval"))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, reference_gradient(a, values, {}, _ctx("eval")), rtol=1e-5, atol=1e-6)


def test_batchnorm_reuses_its_sums_only_for_the_same_arrays():
    """∂γ, ∂β and ∂x of one batch norm share one pass over dy and x (kept with weak references to
    them); a different dy, even of the same shape, is summed afresh."""
    name = "batchnorm2d"
    _needs_rule(name)
    op = ops.get(name)
    attrs = op.attrs()
    rng = np.random.default_rng(4)
    x = rng.standard_normal((4, 3, 5, 5)).astype(np.float32)
    params = random_params(op, attrs, [TensorType(x.shape)], rng)
    y = op.reference(attrs, [x], dict(params), _ctx("train")).astype(np.float32)
    dy1, dy2 = (rng.standard_normal(y.shape).astype(np.float32) for _ in range(2))
    for wrt, dy in (("weight", dy1), ("bias", dy2), (0, dy1), ("weight", dy2), (0, dy2), ("bias", dy1)):
        a, values = grad_node(name, attrs, wrt, [x], y, dy, params)
        got = backward.grad_kernel(a, values, dict(params), _ctx("train"))
        want = reference_gradient(a, values, dict(params), _ctx("train"))
        assert relative_error(got, want) <= TOLERANCE, wrt


@pytest.mark.parametrize("attr_values, shape", [(dict(out=6, kernel=3, stride=2, padding=1), (2, 4, 9, 9)),
                                                (dict(out=6, kernel=3, padding=1, groups=2), (2, 4, 7, 7))])
def test_convolution_gradients_without_a_callable_sgemm(attr_values, shape, monkeypatch):
    """A numpy built on another BLAS (gemm.AVAILABLE false): numpy's matmul in place of the sgemm calls."""
    _needs_rule("conv2d")
    monkeypatch.setattr(backward.gemm, "AVAILABLE", False)
    monkeypatch.setattr(backward, "rule", _no_rule)
    op = ops.get("conv2d")
    attrs = op.attrs(**attr_values)
    rng = np.random.default_rng(5)
    inputs = [rng.standard_normal(shape).astype(np.float32)]
    _check("conv2d", attrs, inputs, random_params(op, attrs, [TensorType(shape)], rng), "train", rng)


def test_warm_up_runs_every_fast_kernel(monkeypatch):
    """warm_up's cases are valid for every op with a fast gradient (they compile its kernels), and each
    runs once per process."""
    monkeypatch.setattr(backward, "_WARMED", set())
    backward.warm_up()
    assert len(backward._WARMED) == sum(len(backward.WARM_CASES.get(name, [])) for name in backward.FAST_OPS)
    calls = []
    monkeypatch.setattr(backward, "grad_kernel", lambda *args: calls.append(args))
    backward.warm_up(["conv2d", "relu"])
    assert not calls


def test_a_network_warms_the_gradient_kernels_of_its_kinds_of_convolution(monkeypatch):
    """LeNet-5 (5×5 convolutions) needs neither the Winograd nor the depthwise gradients, whose compiles
    took 23 and 35 s of a first run; ResNet-18 needs Winograd's, MobileNet the depthwise ones."""
    import netspec
    from netspec.backends.cpu.backward import conv_kinds
    specs = Path(__file__).resolve().parent.parent / "specs"
    assert conv_kinds(netspec.load(specs / "lenet5.yaml")) == {"gemm"}
    assert conv_kinds(netspec.load(specs / "resnet18.yaml")) == {"gemm", "winograd"}
    assert conv_kinds(netspec.load(specs / "mobilenet_v1.yaml")) == {"gemm", "depthwise"}
    monkeypatch.setattr(backward, "_WARMED", set())
    ran = []
    monkeypatch.setattr(backward, "grad_kernel", lambda a, *rest: ran.append((a.forward, a.input_dims)))
    backward.warm_up(["conv2d"], graph=netspec.load(specs / "lenet5.yaml"))
    assert {dims for _, dims in ran} == {(shape[1:],) for _, shape, _ in backward.CONV_WARM_CASES["gemm"]}


def test_winograd_input_gradient_in_chunks_of_images(monkeypatch):
    """Images beyond what one chunk's transformed buffers hold run chunk by chunk (here one a chunk)."""
    from netspec.backends.cpu import backward_winograd
    _needs_rule("conv2d")
    monkeypatch.setattr(backward_winograd, "CHUNK_BYTES", 200 << 10)
    monkeypatch.setattr(backward, "rule", _no_rule)
    op = ops.get("conv2d")
    attrs = op.attrs(out=16, kernel=3, padding=1)
    shape = (3, 16, 16, 17)
    rng = np.random.default_rng(6)
    _check("conv2d", attrs, [rng.standard_normal(shape).astype(np.float32)],
           random_params(op, attrs, [TensorType(shape)], rng), "train", rng)
