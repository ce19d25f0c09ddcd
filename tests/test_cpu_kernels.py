"""The Numba CPU kernels (netspec.backends.cpu) against the ops' numpy references.

Every registered op must have a CPU kernel, and every kernel must agree with its op's reference
(`netspec.ops.get(name).reference`) on hypothesis-generated shapes and attributes, in both modes.
Tolerance: fp32 kernels agree with the (float64-internal) numpy references to rtol = atol = 1e-4,
as DESIGN.md asks of every kernel.

Shapes are kept tiny and example counts modest: after Numba's first compilation (cached on disk),
the whole file runs in seconds.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from netspec import ops
from netspec.backends.cpu import KERNELS, kernel_for, pool, warm_up
from netspec.ir.types import TensorType
from netspec.ops.registry import RunContext, ShapeError, infer_output

RTOL = ATOL = 1e-4  # fp32 kernel vs numpy reference, as DESIGN.md requires

OP_NAMES = [op.name for op in ops.all_ops(internal=True)]  # with the fused ops passes make

# --- shape and attribute strategies, one per op -----------------------------------------------

batch = st.integers(1, 3)
small = st.integers(1, 4)


def pair(lo: int, hi: int):
    """An [h, w] attribute (a list, as YAML gives it)."""
    return st.lists(st.integers(lo, hi), min_size=2, max_size=2)


@st.composite
def image(draw, c=None, hw=(1, 7)):
    channels = c if c is not None else draw(small)
    return (draw(batch), channels, draw(st.integers(*hw)), draw(st.integers(*hw)))


@st.composite
def any_shape(draw, min_rank=2, max_rank=4):
    rank = draw(st.integers(min_rank, max_rank))
    return (draw(batch),) + tuple(draw(st.integers(1, 5)) for _ in range(rank - 1))


@st.composite
def conv2d_case(draw):
    kind = draw(st.sampled_from(["general", "general", "depthwise", "pointwise"]))
    if kind == "depthwise":  # groups == C_in == out: the direct kernel
        c = draw(st.integers(2, 5))
        g, out = c, c
    else:
        g = draw(st.integers(1, 3))
        c, out = g * draw(st.integers(1, 3)), g * draw(st.integers(1, 3))
    attrs = {"out": out, "groups": g, "bias": draw(st.booleans())}
    if kind == "pointwise":  # 1×1, stride 1, unpadded: straight to GEMM
        attrs.update(kernel=1, padding=draw(st.sampled_from([0, "valid", "same"])))
    else:  # (depthwise up to 5 wide: its kernel has its own loops for rows of 3 and 5 taps)
        attrs.update(kernel=draw(pair(1, 5 if kind == "depthwise" else 3)), stride=draw(pair(1, 3)),
                     dilation=draw(pair(1, 2)), padding=draw(st.one_of(st.sampled_from(["same", "valid"]), pair(0, 2))))
        if attrs["padding"] == "same":
            attrs["stride"] = 1  # 'same' needs stride 1, as in PyTorch
    return attrs, [draw(image(c=c, hw=(1, 8)))]


@st.composite
def conv_transpose2d_case(draw):
    g = draw(st.integers(1, 3))
    c, out = g * draw(st.integers(1, 3)), g * draw(st.integers(1, 3))
    stride, dilation = draw(pair(1, 3)), draw(pair(1, 2))
    output_padding = tuple(draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation))
    attrs = {"out": out, "groups": g, "kernel": draw(pair(1, 3)), "stride": list(stride),
             "dilation": list(dilation), "padding": draw(pair(0, 2)), "output_padding": list(output_padding),
             "bias": draw(st.booleans())}
    return attrs, [draw(image(c=c, hw=(1, 5)))]


@st.composite
def pool_case(draw, kind):
    kernel = draw(pair(1, 3))
    attrs = {"kernel": list(kernel), "padding": [draw(st.integers(0, k // 2)) for k in kernel],
             "ceil_mode": draw(st.booleans())}
    if draw(st.booleans()):
        attrs["stride"] = draw(pair(1, 3))
    if kind == "max":
        attrs["dilation"] = draw(pair(1, 2))
    else:
        attrs["count_include_pad"] = draw(st.booleans())
    return attrs, [draw(image(hw=(1, 8)))]


@st.composite
def batchnorm_case(draw):
    shape = draw(st.one_of(image(hw=(1, 4)), st.tuples(st.integers(1, 4), small)))
    attrs = {"eps": draw(st.sampled_from([1e-5, 1e-3, 0.1])), "momentum": draw(st.sampled_from([0.1, 0.01, 0.5, 1.0])),
             "affine": draw(st.booleans())}
    return attrs, [shape]


@st.composite
def lrn_case(draw):
    attrs = {"size": draw(st.integers(1, 5)), "alpha": draw(st.sampled_from([1e-4, 0.01, 0.5])),
             "beta": draw(st.sampled_from([0.75, 0.5, 1.0])), "k": draw(st.sampled_from([1.0, 2.0]))}
    return attrs, [draw(image(c=draw(st.integers(1, 6)), hw=(1, 4)))]


def unary(attrs=st.just({})):
    return st.tuples(attrs, any_shape().map(lambda s: [s]))


@st.composite
def softmax_case(draw):
    shape = draw(any_shape())
    return {"axis": draw(st.integers(-len(shape), len(shape) - 1))}, [shape]


@st.composite
def maxout_case(draw):
    pieces = draw(st.integers(1, 3))
    shape = draw(any_shape())
    return {"pieces": pieces}, [(shape[0], shape[1] * pieces) + shape[2:]]


@st.composite
def add_case(draw):
    shape = draw(any_shape())
    return {}, [shape] * draw(st.integers(2, 4))


@st.composite
def mul_case(draw):
    shape = draw(any_shape())  # the second input broadcasts along any of its size-1 dimensions
    other = tuple(d if draw(st.booleans()) else 1 for d in shape)
    return {}, [shape, (shape[0],) + other[1:] if draw(st.booleans()) else other]


@st.composite
def concat_case(draw):
    shape = draw(any_shape())
    axis = draw(st.integers(1, len(shape) - 1))
    shapes = [shape[:axis] + (draw(st.integers(1, 4)),) + shape[axis + 1:] for _ in range(draw(st.integers(1, 3)))]
    return {"axis": axis}, shapes


@st.composite
def reshape_case(draw):
    shape = draw(image(hw=(1, 4)))
    dims = list(draw(st.permutations(shape[1:])))
    if len(dims) > 1 and draw(st.booleans()):
        i = draw(st.integers(0, len(dims) - 2))
        dims[i:i + 2] = [dims[i] * dims[i + 1]]
    if draw(st.booleans()):
        dims[draw(st.integers(0, len(dims) - 1))] = -1
    return {"shape": dims}, [shape]


@st.composite
def center_crop_case(draw):
    shape = draw(image())
    return {"size": [draw(st.integers(1, shape[2])), draw(st.integers(1, shape[3]))]}, [shape]


@st.composite
def linear_case(draw):
    return {"out": draw(st.integers(1, 6)), "bias": draw(st.booleans())}, [(draw(batch), draw(st.integers(1, 8)))]


@st.composite
def fused_case(draw, base: str, base_case):
    """A fused op (ops/fused.py) over a case of its base op: a random activation, a residual, and for
    a pointwise conv2d with groups 1 a squeeze-excitation gate."""
    attrs, shapes = draw(base_case)
    op = ops.get(base)
    try:
        out = infer_output(op, op.attrs.model_validate(attrs), [TensorType(s) for s in shapes])
    except ShapeError:
        assume(False)
    act = draw(st.sampled_from([None, "identity", "relu", "relu6", "leaky_relu", "elu", "silu", "hardswish",
                                "sigmoid", "tanh"]))
    attrs = dict(attrs, activation=act, alpha=draw(st.floats(0.1, 1.0)), residual=draw(st.booleans()))
    if base == "conv2d" and attrs["kernel"] == 1 and attrs["groups"] == 1 and draw(st.booleans()):
        attrs["gate"] = True
        shapes = shapes + [shapes[0][:2] + (1, 1)]
    if attrs["residual"]:
        shapes = shapes + [tuple(out.shape)]
    return attrs, shapes


@st.composite
def squeeze_excitation_case(draw):
    """Small maps, and one of 32,768 values: the kernel takes the means on all threads from there."""
    acts = st.sampled_from([None, "relu", "leaky_relu", "elu", "silu", "hardswish", "sigmoid", "tanh"])
    attrs = {"hidden": draw(st.integers(1, 6)), "squeeze_bias": draw(st.booleans()), "excite_bias": draw(st.booleans()),
             "activation": draw(acts), "alpha": draw(st.floats(0.1, 1.0)), "gate_activation": draw(acts),
             "gate_alpha": draw(st.floats(0.1, 1.0))}
    return attrs, [draw(st.one_of(image(hw=(1, 9)), st.just((1, 8, 64, 64))))]


CASES = {
    "conv2d": conv2d_case(),
    "squeeze_excitation": squeeze_excitation_case(),
    "fused_conv2d": fused_case("conv2d", conv2d_case()),
    "fused_linear": fused_case("linear", linear_case()),
    "conv_transpose2d": conv_transpose2d_case(),
    "maxpool2d": pool_case("max"),
    "avgpool2d": pool_case("avg"),
    "global_avgpool": st.tuples(st.just({}), image().map(lambda s: [s])),
    "adaptive_avgpool2d": st.tuples(st.fixed_dictionaries({"size": pair(1, 4)}), image(hw=(1, 9)).map(lambda s: [s])),
    "batchnorm2d": batchnorm_case(),
    "lrn": lrn_case(),
    "identity": unary(),
    "relu": unary(),
    "relu6": unary(),
    "sigmoid": unary(),
    "tanh": unary(),
    "leaky_relu": unary(st.fixed_dictionaries({"slope": st.floats(0.0, 1.0)})),
    "elu": unary(st.fixed_dictionaries({"alpha": st.floats(0.1, 2.0)})),
    "silu": unary(),
    "hardswish": unary(),
    "dropout": unary(st.fixed_dictionaries({"p": st.sampled_from([0.0, 0.1, 0.5, 0.9])})),
    "softmax": softmax_case(),
    "maxout": maxout_case(),
    "add": add_case(),
    "mul": mul_case(),
    "concat": concat_case(),
    "flatten": unary(),
    "reshape": reshape_case(),
    "center_crop": center_crop_case(),
    "linear": linear_case(),
}
EXAMPLES = {"conv2d": 80, "fused_conv2d": 80, "conv_transpose2d": 60, "maxpool2d": 60, "avgpool2d": 60}

# --- helpers ------------------------------------------------------------------------------------


def make_params(op, attrs, types, rng) -> dict[str, np.ndarray]:
    params = {}
    for name, spec in op.params(attrs, types).items():
        if name == "running_var":
            params[name] = rng.uniform(0.5, 2.0, spec.shape).astype(np.float32)
        else:
            params[name] = rng.standard_normal(spec.shape).astype(np.float32)
    return params


def check_against_reference(name: str, attrs_dict: dict, shapes: list[tuple[int, ...]], seed: int, scale: float):
    op = ops.get(name)
    if op.reference is None:
        pytest.skip(f"op '{name}' has no numpy reference yet")
    attrs = op.attrs.model_validate(attrs_dict)  # the strategies only generate valid attributes
    types = [TensorType(s) for s in shapes]
    try:
        expected_type = infer_output(op, attrs, types)
    except ShapeError:
        assume(False)
    rng = np.random.default_rng(seed)
    inputs = [(scale * rng.standard_normal(s)).astype(np.float32) for s in shapes]
    params = make_params(op, attrs, types, rng)
    kernel = KERNELS[name]
    for mode in ("eval", "train"):
        ref_params, cpu_params = dict(params), dict(params)
        originals = [x.copy() for x in inputs] + [p.copy() for p in params.values()]
        try:  # identically seeded generators: dropout draws the same mask in both
            want = op.reference(attrs, [x.copy() for x in inputs], ref_params, RunContext(mode, np.random.default_rng(seed)))
        except ValueError:  # e.g. batch norm training on one value per channel: the kernel must refuse too
            with pytest.raises(ValueError):
                kernel(attrs, inputs, cpu_params, RunContext(mode, np.random.default_rng(seed)))
            continue
        got = kernel(attrs, inputs, cpu_params, RunContext(mode, np.random.default_rng(seed)))
        assert isinstance(got, np.ndarray) and got.dtype == np.float32, (mode, type(got), getattr(got, "dtype", None))
        assert got.flags.c_contiguous
        assert got.shape == want.shape == tuple(expected_type.shape), (mode, got.shape, want.shape, expected_type)
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=f"{name} {mode} {attrs!r} {shapes}")
        # parameters: batch norm training replaces the running statistics, exactly as the reference
        assert ref_params.keys() == cpu_params.keys()
        for key in ref_params:
            np.testing.assert_allclose(cpu_params[key], ref_params[key], rtol=RTOL, atol=ATOL,
                                       err_msg=f"{name} {mode} parameter {key}")
            assert cpu_params[key].dtype == np.float32
        # the kernel never writes into its inputs or into the parameter arrays it was given
        for before, after in zip(originals, inputs + list(params.values())):
            np.testing.assert_array_equal(before, after)


# --- the tests ----------------------------------------------------------------------------------


def test_every_op_has_a_cpu_kernel():
    missing = sorted(set(OP_NAMES) - set(KERNELS))
    assert not missing, f"ops without a CPU kernel (add one in netspec/backends/cpu): {missing}"
    assert set(KERNELS) <= set(OP_NAMES), f"kernels for unknown ops: {sorted(set(KERNELS) - set(OP_NAMES))}"


def test_every_op_has_a_test_case():
    missing = sorted(set(OP_NAMES) - set(CASES))
    assert not missing, f"add a hypothesis strategy to CASES in this file for: {missing}"


@pytest.mark.parametrize("name", OP_NAMES)
def test_kernel_matches_reference(name):
    if name not in CASES:
        pytest.skip("no strategy (see test_every_op_has_a_test_case)")

    @settings(max_examples=EXAMPLES.get(name, 40), deadline=None, derandomize=False,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    @given(case=CASES[name], seed=st.integers(0, 2**32 - 1), scale=st.sampled_from([1.0, 4.0]))
    def run(case, seed, scale):
        attrs, shapes = case
        check_against_reference(name, attrs, shapes, seed, scale)

    run()


def test_batchnorm_train_updates_running_statistics_like_pytorch():
    op = ops.get("batchnorm2d")
    attrs = op.attrs.model_validate({"momentum": 0.25})
    x = np.random.default_rng(1).standard_normal((3, 2, 4, 5)).astype(np.float32)
    params = {"weight": np.ones(2, np.float32), "bias": np.zeros(2, np.float32),
              "running_mean": np.full(2, 0.5, np.float32), "running_var": np.full(2, 2.0, np.float32)}
    given_mean, given_var = params["running_mean"], params["running_var"]
    y = KERNELS["batchnorm2d"](attrs, [x], params, RunContext("train"))
    mean = x.astype(np.float64).mean(axis=(0, 2, 3))
    unbiased = x.astype(np.float64).var(axis=(0, 2, 3), ddof=1)
    np.testing.assert_allclose(params["running_mean"], 0.75 * 0.5 + 0.25 * mean, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(params["running_var"], 0.75 * 2.0 + 0.25 * unbiased, rtol=RTOL, atol=ATOL)
    assert params["running_mean"] is not given_mean and params["running_var"] is not given_var  # replaced
    np.testing.assert_array_equal(given_mean, 0.5)  # not mutated
    # the output is normalized with the batch statistics (biased variance)
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0.0, atol=ATOL)
    np.testing.assert_allclose(y.var(axis=(0, 2, 3)), 1.0, rtol=1e-3)


def test_dropout_train_uses_the_context_rng_and_eval_is_identity():
    attrs = ops.get("dropout").attrs.model_validate({"p": 0.5})
    x = np.ones((2, 3, 4, 4), np.float32)
    y = KERNELS["dropout"](attrs, [x], {}, RunContext("train", np.random.default_rng(7)))
    keep = np.random.default_rng(7).random(x.shape, dtype=np.float32) >= 0.5
    np.testing.assert_array_equal(y, np.where(keep, 2.0, 0.0))
    np.testing.assert_array_equal(KERNELS["dropout"](attrs, [x], {}, RunContext("eval")), x)


def test_kernels_accept_non_contiguous_read_only_and_float64_inputs():
    op = ops.get("conv2d")
    attrs = op.attrs.model_validate({"out": 3, "kernel": 3, "padding": 1})
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 5, 6, 2)).transpose(0, 3, 1, 2)  # float64, not contiguous: 1×2×5×6
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    w.flags.writeable = False
    params = {"weight": w, "bias": np.zeros(3, np.float32)}
    got = KERNELS["conv2d"](attrs, [x], params, RunContext())
    want = op.reference(attrs, [x.astype(np.float32)], params, RunContext())
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_warm_up_reports_progress_and_resolves_aliases(monkeypatch):
    from netspec.backends.cpu import kernels
    monkeypatch.setattr(kernels, "_WARMED", set())  # (as in a fresh process: earlier tests warmed these ops)
    calls = []
    warm_up(["relu", "swish", "silu", "conv2d"], progress=lambda done, total, name: calls.append((done, total, name)))
    assert calls == [(0, 3, "relu"), (1, 3, "silu"), (2, 3, "conv2d"), (3, 3, "")]
    assert kernel_for("swish") is KERNELS["silu"]
    with pytest.raises(KeyError):
        warm_up(["no_such_op"])


def test_numba_cache_directory_is_set_and_writable():
    path = os.environ.get("NUMBA_CACHE_DIR")
    assert path and os.path.isdir(path) and os.access(path, os.W_OK)


@pytest.mark.parametrize("name, attrs", [("maxpool2d", {"kernel": 2}), ("maxpool2d", {"kernel": 3, "stride": 1, "padding": 1}),
                                         ("maxout", {"pieces": 2}), ("relu", {}), ("relu6", {})])
def test_nan_propagates_like_the_reference(name, attrs):
    op = ops.get(name)
    a = op.attrs.model_validate(attrs)
    x = np.random.default_rng(3).standard_normal((1, 4, 4, 4)).astype(np.float32)
    x[0, 1, 2, 1] = np.nan
    x[0, 3, 0, 0] = np.nan
    got = KERNELS[name](a, [x], {}, RunContext())
    want = op.reference(a, [x], {}, RunContext())
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)  # NaNs compare equal here


def test_numba_cache_directory_follows_xdg_cache_home(tmp_path):
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["XDG_CACHE_HOME"] = str(tmp_path)
    out = subprocess.run([sys.executable, "-c", "import os, netspec.backends.cpu, numba.core.config as c; "
                          "print(os.environ['NUMBA_CACHE_DIR']); print(c.CACHE_DIR)"],
                         env=env, capture_output=True, text=True, check=True).stdout.split("\n")
    from netspec.backends.cpu import _sources_digest
    expected = str(tmp_path / "netspec" / "numba" / _sources_digest())
    assert out[:2] == [expected, expected]
    assert os.path.isdir(expected)


def test_numba_cache_folder_changes_with_any_backend_source(tmp_path):
    """Numba checks only a cached function's own file: an edit to a helper other kernels inline
    must still start a new cache, so the folder is named by a digest of every source."""
    import shutil

    from netspec.backends.cpu import _sources_digest
    folder = os.path.dirname(KERNELS["relu"].__code__.co_filename)
    copy = tmp_path / "cpu"
    shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert _sources_digest(str(copy)) == _sources_digest(folder)
    with open(copy / "_act.py", "a") as f:
        f.write("# an edit\n")
    assert _sources_digest(str(copy)) != _sources_digest(folder)


def test_concat_of_many_large_inputs_is_exact():
    """concat copies every input in one parallel pass (tensor._concat_columns): four inputs of
    different widths whose rows span several work blocks, two images, against np.concatenate."""
    rng = np.random.default_rng(3)
    xs = [rng.standard_normal((2, c, 100, 100)).astype(np.float32) for c in (1, 7, 3, 4)]
    a = ops.get("concat").attrs.model_validate({})
    np.testing.assert_array_equal(KERNELS["concat"](a, xs, {}, RunContext()), np.concatenate(xs, axis=1))
    rows = [rng.standard_normal((2, 3, 4, w)).astype(np.float32) for w in (5, 40_000, 1)]  # along the last axis
    a = ops.get("concat").attrs.model_validate({"axis": 3})
    np.testing.assert_array_equal(KERNELS["concat"](a, rows, {}, RunContext()), np.concatenate(rows, axis=3))


def test_concat_copies_only_the_inputs_not_already_in_their_place():
    """At batch 1 the memory plan may have an input written in its place in the output: concat
    leaves it there and copies the others."""
    rng = np.random.default_rng(4)
    a = ops.get("concat").attrs.model_validate({})
    xs = [rng.standard_normal((1, c, 5, 5)).astype(np.float32) for c in (2, 3, 1)]
    out = np.full((1, 6, 5, 5), np.nan, np.float32)
    out[:, 2:5] = xs[1]
    in_place = out[:, 2:5]
    y = KERNELS["concat"](a, [xs[0], in_place, xs[2]], {}, RunContext(), out=out)
    assert y is out
    np.testing.assert_array_equal(out, np.concatenate(xs, axis=1))
    other = np.full((1, 6, 5, 5), np.nan, np.float32)  # the same values elsewhere: copied
    y = KERNELS["concat"](a, [xs[0], in_place.copy(), xs[2]], {}, RunContext(), out=other)
    np.testing.assert_array_equal(y, np.concatenate(xs, axis=1))


@pytest.mark.parametrize("name, attrs", [
    ("conv2d", {"out": 4, "kernel": 3, "padding": 1, "stride": 2, "groups": 2}),
    ("conv_transpose2d", {"out": 4, "kernel": 3, "stride": 2, "padding": 1, "output_padding": 1, "groups": 2})])
def test_large_batches_are_processed_in_chunks(name, attrs, monkeypatch):
    from netspec.backends.cpu import conv
    monkeypatch.setattr(conv, "_CHUNK_BYTES", 6000)  # 1–2 images per patch matrix, a partial last chunk
    op = ops.get(name)
    a = op.attrs.model_validate(attrs)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((5, 4, 7, 7)).astype(np.float32)
    params = make_params(op, a, [TensorType(x.shape)], rng)
    np.testing.assert_allclose(KERNELS[name](a, [x], params, RunContext()), op.reference(a, [x], params, RunContext()),
                               rtol=RTOL, atol=ATOL)


# --- the vectorised activations and merges on large arrays (the parallel paths) and special values ---

ACT_SPECIALS = np.array([0.0, -0.0, 1e-30, -1e-30, 1e-8, -1e-8, 0.3, -0.35, 0.7, -0.7, 9.0, -9.5, 20.0, -20.0,
                         88.5, 88.8, -87.5, -104.0, 100.0, -100.0, 1e30, -1e30, np.inf, -np.inf, np.nan],
                        np.float32)


@pytest.mark.parametrize("name, attrs", [("sigmoid", {}), ("silu", {}), ("tanh", {}), ("elu", {"alpha": 1.3}),
                                         ("relu", {}), ("relu6", {}), ("leaky_relu", {"slope": 0.2}),
                                         ("hardswish", {})])
@pytest.mark.parametrize("size", [ACT_SPECIALS.size, 300_001])
def test_activations_large_and_special_values(name, attrs, size):
    op = ops.get(name)
    a = op.attrs.model_validate(attrs)
    rng = np.random.default_rng(11)
    x = (rng.standard_normal(size) * 10.0 ** rng.uniform(-6, 2, size)).astype(np.float32)
    x[:ACT_SPECIALS.size] = ACT_SPECIALS
    with np.errstate(all="ignore"):
        want = op.reference(a, [x], {}, RunContext())
    got = KERNELS[name](a, [x], {}, RunContext())
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-30, err_msg=name)  # a few ulp, far inside 1e-4


@pytest.mark.parametrize("shapes", [[(1, 64, 100, 100)] * 2, [(2, 3, 50, 50)] * 3, [(1, 300_000)] * 4])
def test_add_large(shapes):
    rng = np.random.default_rng(12)
    xs = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    a = ops.get("add").attrs.model_validate({})
    want = ops.get("add").reference(a, xs, {}, RunContext())  # (summed in float64: rounds once)
    np.testing.assert_allclose(KERNELS["add"](a, xs, {}, RunContext()), want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("x_shape, b_shape", [((1, 96, 60, 60), (1, 96, 1, 1)), ((2, 8, 130, 130), (1, 8, 130, 1)),
                                              ((1, 1152, 7, 7), (1, 1152, 1, 1)), ((1, 40, 80, 80), (1, 40, 80, 80)),
                                              ((3, 2, 100, 200), (3, 1, 100, 200))])
def test_mul_large_broadcast(x_shape, b_shape):
    rng = np.random.default_rng(13)
    x, b = rng.standard_normal(x_shape).astype(np.float32), rng.standard_normal(b_shape).astype(np.float32)
    a = ops.get("mul").attrs.model_validate({})
    np.testing.assert_array_equal(KERNELS["mul"](a, [x, b], {}, RunContext()), x * b)


@pytest.mark.parametrize("name, attrs, hw", [
    ("maxpool2d", {"kernel": 3, "stride": 2, "ceil_mode": True}, (9, 97)),  # wide rows: pooled row by row
    ("maxpool2d", {"kernel": 2, "stride": 2}, (8, 96)),  # no padding needed: pooled in place
    ("maxpool2d", {"kernel": [5, 7], "stride": [1, 3], "padding": [2, 3], "dilation": [2, 1]}, (11, 45)),  # >3 taps
    ("maxpool2d", {"kernel": [7, 4], "stride": 1, "padding": [3, 1], "ceil_mode": True}, (9, 10)),
    ("avgpool2d", {"kernel": 3, "stride": 1, "padding": 1, "ceil_mode": True}, (5, 90)),
    ("avgpool2d", {"kernel": [5, 4], "stride": [2, 3], "padding": [2, 1], "ceil_mode": True,
                   "count_include_pad": False}, (12, 130)),
    ("avgpool2d", {"kernel": 2, "stride": 2}, (6, 84))])
def test_pools_on_wide_planes_and_large_windows(name, attrs, hw):
    """The pooling kernels' paths that the small hypothesis shapes miss: rows wide enough to be
    pooled one by one, planes pooled without a padded copy, windows of more than three taps."""
    op = ops.get(name)
    a = op.attrs.model_validate(attrs)
    x = np.random.default_rng(11).standard_normal((2, 3) + hw).astype(np.float32)
    x[0, 1, 2, 5] = np.nan
    got = KERNELS[name](a, [x], {}, RunContext())
    want = op.reference(a, [x], {}, RunContext())
    assert got.shape == want.shape
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(planes=st.sampled_from([1, 3, 7, 120]), h=st.integers(1, 30), half_w=st.integers(1, 15),
       kernel=st.tuples(st.integers(1, 3), st.integers(2, 3)), pad=st.tuples(st.booleans(), st.booleans()),
       ceil=st.booleans(), odd=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_maxpool_stride_2_matches_reference_exactly(planes, h, half_w, kernel, pad, ceil, odd, seed):
    """Stride-2 max pooling on inputs twice the output's width (pool.py `_maxpool_s2`: the columns
    pooled flat over many rows, the windows clipped by a row's edges redone, the rows row by row;
    rows first for windows 3 high, else columns first), or one more without padding (AlexNet's 55:
    columns row by row): equal to the reference with padding, the ceil-mode overhang, NaN and −inf."""
    pads = [kernel[0] // 2 if pad[0] else 0, kernel[1] // 2 if pad[1] else 0]
    op = ops.get("maxpool2d")
    a = op.attrs.model_validate({"kernel": list(kernel), "stride": 2, "padding": pads, "ceil_mode": ceil})
    w = 2 * half_w + (odd and not pads[1])
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((1, planes, h, w)).astype(np.float32)
    x.flat[rng.integers(0, x.size, 3)] = np.nan
    x.flat[rng.integers(0, x.size, 3)] = -np.inf
    try:
        want = op.reference(a, [x], {}, RunContext())
    except ShapeError:
        assume(False)
    got = KERNELS["maxpool2d"](a, [x], {}, RunContext())
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    wo = got.shape[3]  # (the odd widths must take this kernel, not the general one)
    assert (pool.maxpool_path(a, h, w) == "stride 2") == (w == 2 * wo or (w == 2 * wo + 1 and not pads[1]))


@pytest.mark.parametrize("x_shape, out", [((2, 512, 16, 16), 40),  # O < H·W: the weights scaled per image
                                           ((2, 400, 7, 7), 64)])  # else the input scaled per channel
def test_gated_pointwise_conv_on_layer_sized_inputs(x_shape, out):
    """A fused squeeze-excitation gate on inputs large enough for the parallel path, each side of the
    choice between scaling the packed weights (packed.py `Packed.gated`) and scaling the input
    (conv.py `_scale`)."""
    rng = np.random.default_rng(21)
    op = ops.get("fused_conv2d")
    a = op.attrs.model_validate({"out": out, "kernel": 1, "gate": True, "activation": "silu"})
    x = rng.standard_normal(x_shape).astype(np.float32)
    gate = rng.uniform(0, 1, x_shape[:2] + (1, 1)).astype(np.float32)
    params = {"weight": rng.standard_normal((out, x_shape[1], 1, 1)).astype(np.float32),
              "bias": rng.standard_normal(out).astype(np.float32)}
    got = KERNELS["fused_conv2d"](a, [x, gate], params, RunContext())
    want = op.reference(a, [x, gate], params, RunContext())
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(planes=st.sampled_from([1, 3, 7, 120]), h=st.integers(1, 30), w=st.integers(1, 30),
       pads=st.tuples(st.integers(0, 3), st.integers(0, 3)), seed=st.integers(0, 2**32 - 1))
def test_maxpool_same_size_matches_reference_exactly(planes, h, w, pads, seed):
    """Stride-1 max pooling with a centred window (pool.py `_maxpool_same`: flat passes over runs
    of planes, then each plane's border rows and columns redone): equal to the reference, NaN and
    −inf included, with planes smaller than the window, and runs of many planes (120 planes of
    up to 30² span several runs per thread)."""
    op = ops.get("maxpool2d")
    a = op.attrs.model_validate({"kernel": [2 * pads[0] + 1, 2 * pads[1] + 1], "stride": 1, "padding": list(pads)})
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((1, planes, h, w)).astype(np.float32)
    x.flat[rng.integers(0, x.size, 3)] = np.nan
    x.flat[rng.integers(0, x.size, 3)] = -np.inf
    got = KERNELS["maxpool2d"](a, [x], {}, RunContext())
    want = op.reference(a, [x], {}, RunContext())
    assert got.shape == want.shape == x.shape
    np.testing.assert_array_equal(got, want)  # (NaNs compare equal here)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(c=st.integers(1, 11), h=st.integers(1, 24), w=st.integers(1, 24), kernel=st.sampled_from([1, 2, 3, 5]),
       stride=st.tuples(st.integers(1, 3), st.integers(1, 3)), dilation=st.integers(1, 2),
       pads=st.tuples(st.integers(0, 4), st.integers(0, 4)), seed=st.integers(0, 2**32 - 1))
def test_depthwise_matches_reference_on_wider_planes_and_strides(c, h, w, kernel, stride, dilation, pads, seed):
    """The direct depthwise kernel on planes wider than the generic property test's, padding 0–4 per
    axis: odd and even widths and paddings at stride 2 exercise how a row's even and odd columns are
    split between the phases (depthwise.py `_deinterleave`), and the columns no window reaches."""
    op = ops.get("conv2d")
    a = op.attrs.model_validate({"out": c, "groups": c, "kernel": kernel, "stride": list(stride),
                                 "dilation": dilation, "padding": list(pads)})
    ho = (h + 2 * pads[0] - dilation * (kernel - 1) - 1) // stride[0] + 1
    wo = (w + 2 * pads[1] - dilation * (kernel - 1) - 1) // stride[1] + 1
    assume(ho >= 1 and wo >= 1)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, c, h, w)).astype(np.float32)
    params = {"weight": rng.standard_normal((c, 1, kernel, kernel)).astype(np.float32),
              "bias": rng.standard_normal(c).astype(np.float32)}
    got = KERNELS["conv2d"](a, [x], params, RunContext())
    want = op.reference(a, [x], params, RunContext())
    assert got.shape == want.shape == (2, c, ho, wo)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(n=st.integers(1, 2), c=st.integers(1, 19), h=st.integers(1, 30), w=st.integers(1, 30),
       kernel=st.tuples(st.sampled_from([1, 2, 3, 5]), st.sampled_from([1, 3, 5])),
       stride=st.tuples(st.integers(1, 3), st.integers(1, 3)), dilation=st.tuples(st.integers(1, 2), st.integers(1, 2)),
       pads=st.tuples(st.integers(0, 4), st.integers(0, 4), st.integers(0, 4), st.integers(0, 4)),
       act=st.sampled_from(["relu", "silu", None]), has_bias=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_depthwise_kernels_give_the_same_bits(n, c, h, w, kernel, stride, dilation, pads, act, has_bias, seed):
    """The two direct depthwise kernels (backends/cpu/depthwise.py) — by planes, and 8 channels at a
    time for small maps — do the same float32 operations in the same order: identical outputs on any
    shape, channel counts not a multiple of 8, asymmetric padding, strides, dilations (rows of 8 or
    more positions of 8 channels go in and out of the interleaved buffer by 8×8 transposes, over
    whole planes where rows are not multiples of 8)."""
    from netspec.backends.cpu import depthwise
    from netspec.backends.cpu._act import activation_code
    (kh, kw), (sh, sw), (dh, dw), (pt, pl, pb, pr) = kernel, stride, dilation, pads
    ho = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    wo = (w + pl + pr - dw * (kw - 1) - 1) // sw + 1
    assume(ho >= 1 and wo >= 1)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = rng.standard_normal((c, 1, kh, kw)).astype(np.float32)
    bias = rng.standard_normal(c).astype(np.float32)
    planes, blocks = np.empty((n, c, ho, wo), np.float32), np.full((n, c, ho, wo), np.nan, np.float32)
    args = (x, wt, bias, has_bias, kh, kw, sh, sw, pt, pl, dh, dw, activation_code(act), 0.0)
    depthwise.by_planes(*args, planes, 2)
    depthwise.by_channel_blocks(*args, blocks, 2)
    np.testing.assert_array_equal(blocks, planes)
    # planes that are not one run each (views one column short of their rows), in and out: row by row
    wider_x, wider_y = np.zeros((n, c, h, w + 1), np.float32), np.full((n, c, ho, wo + 1), np.nan, np.float32)
    wider_x[..., :w] = x
    depthwise.by_channel_blocks(wider_x[..., :w], *args[1:], wider_y[..., :wo], 2,
                                depthwise.interleave(wt, bias, has_bias))
    np.testing.assert_array_equal(wider_y[..., :wo], planes)


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(c=st.integers(16, 40), o=st.integers(16, 40), h=st.integers(17, 40), w=st.integers(17, 40),
       batch=st.integers(1, 2), pads=st.tuples(st.integers(0, 2), st.integers(0, 2)), bias=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
def test_winograd_3x3_matches_reference(c, o, h, w, batch, pads, bias, seed):
    """3×3 stride-1 convolutions with channels and tiles enough go through Winograd F(2×2, 3×3)
    (backends/cpu/winograd.py): odd and even sizes, padding 0–2 per axis, batches, with and without
    bias. The transforms round differently from a direct sum: agreement to RTOL, not bit for bit.
    (The implicit GEMM, which takes the smaller of these, switched off.)"""
    from unittest import mock

    from netspec.backends.cpu import implicit, winograd
    op = ops.get("conv2d")
    a = op.attrs.model_validate({"out": o, "kernel": 3, "padding": list(pads), "bias": bias})
    ho, wo = h + 2 * pads[0] - 2, w + 2 * pads[1] - 2
    assert winograd.applies(a, c, o, winograd.tiles(batch, ho, wo))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, c, h, w)).astype(np.float32)
    params = {"weight": (rng.standard_normal((o, c, 3, 3)) / np.sqrt(9 * c)).astype(np.float32)}
    if bias:
        params["bias"] = rng.standard_normal(o).astype(np.float32)
    with mock.patch.object(implicit, "MAX_TAPS", 0), mock.patch.object(implicit, "WIDE_ROWS", 10**6), \
            mock.patch.object(winograd, "plan", wraps=winograd.plan) as spy:
        got = KERNELS["conv2d"](a, [x], params, RunContext())
    assert spy.called
    want = op.reference(a, [x], params, RunContext())
    assert got.shape == want.shape == (batch, o, ho, wo)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


@st.composite
def implicit_gemm_case(draw):
    """A fused conv2d the implicit GEMM takes (backends/cpu/implicit.py): groups 1, not a plain 1×1,
    an activation of the micro-kernel's or one act_row applies after it; maps up to 40 wide (several tiles a row, a last one of
    8 lanes or fewer), outputs up to 26 channels (4 or 5 row blocks: split between 2 threads),
    'same' padding of even kernels (more at the bottom and right)."""
    c, out = draw(st.integers(1, 12)), draw(st.integers(1, 26))
    kernel = draw(pair(1, 7))
    attrs = {"out": out, "kernel": kernel, "stride": draw(pair(1, 3)), "dilation": draw(pair(1, 2)),
             "padding": draw(st.one_of(pair(0, 3), st.just("same"))), "bias": draw(st.booleans()),
             "activation": draw(st.sampled_from([None, "relu", "relu6", "leaky_relu", "silu", "tanh", "elu"])),
             "alpha": draw(st.floats(0.1, 1.0)), "residual": draw(st.booleans())}
    if attrs["padding"] == "same":  # (stride 1; asymmetric for an even kernel)
        attrs["stride"] = [1, 1]
    assume(kernel != [1, 1] or attrs["padding"] not in ("same", [0, 0]))
    x = (draw(st.integers(1, 3)), c, draw(st.integers(1, 20)), draw(st.integers(1, 40)))
    op = ops.get("conv2d")
    try:
        y = infer_output(op, op.attrs.model_validate({k: attrs[k] for k in ("out", "kernel", "stride", "dilation",
                                                                             "padding", "bias")}), [TensorType(x)])
    except ShapeError:
        assume(False)
    return attrs, [x] + ([tuple(y.shape)] if attrs["residual"] else [])


@pytest.mark.parametrize("path", ["implicit", "im2col"])
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=implicit_gemm_case(), threads=st.sampled_from([1, 2]), k_slice=st.sampled_from([256, 7]),
       serial=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_implicit_gemm_and_im2col_match_reference(path, case, threads, k_slice, serial, seed):
    """The same convolutions through the implicit GEMM (its taps read from the padded input through
    offsets) and, with it switched off, through im2col + the packed GEMM: strides, dilations,
    padding (asymmetric too), batches, residuals, the in-register activations and others (act_row
    on each output row, after the residual), one and two threads, in parallel or on the calling
    thread (`implicit.SERIAL_MACS`), the taps in one slice or in slices of 7 (`packed._K_SLICE`:
    the sums carried through C between them)."""
    from unittest import mock

    from netspec.backends.cpu import conv, implicit, packed
    from netspec.threads import set_threads
    attrs, shapes = case
    op = ops.get("fused_conv2d")
    a = op.attrs.model_validate(attrs)
    out = infer_output(op, a, [TensorType(s) for s in shapes])
    # (a kernel with taps only on the padding runs as a smaller one: `_live_taps`, tested on its own)
    assume(conv._live_taps(a, shapes[0][2], shapes[0][3], out.h, out.w) is None)
    module, name = (implicit, "plan") if path == "implicit" else (conv, "_plan_im2col")
    with mock.patch.object(implicit, "MAX_TAPS", 10**6 if path == "implicit" else 0), \
            mock.patch.object(implicit, "WIDE_ROWS", 0 if path == "implicit" else 10**6), \
            mock.patch.object(implicit, "flat", implicit.flat if path == "implicit" else lambda stride, wo: False), \
            mock.patch.object(module, name, wraps=getattr(module, name)) as spy, set_threads(threads), \
            mock.patch.object(packed, "_K_SLICE", k_slice), \
            mock.patch.object(implicit, "SERIAL_MACS", 2**62 if serial else 0):
        check_against_reference("fused_conv2d", attrs, shapes, seed, 1.0)
    assert spy.called


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(c=st.integers(1, 40), o=st.integers(1, 40), h=st.integers(1, 18), w=st.integers(1, 18),
       kernel=st.tuples(st.integers(1, 5), st.integers(1, 5)), dilation=st.tuples(st.integers(1, 2), st.integers(1, 2)),
       batch=st.integers(1, 3), residual=st.booleans(), act=st.sampled_from([None, "relu", "silu", "tanh"]),
       threads=st.sampled_from([1, 2]), k_slice=st.sampled_from([256, 7]), serial=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
def test_flat_implicit_gemm_gives_im2col_bits(c, o, h, w, kernel, dilation, batch, residual, act, threads, k_slice,
                                              serial, seed):
    """Stride 1 on output rows narrower than a tile: the implicit GEMM runs each plane's outputs as
    one run of tiles (`implicit._plan_flat`), with the positions past each row computed and
    dropped. Its sums are im2col + packed GEMM's, in the same order: the same bits, with residuals,
    activations (in registers, or after the residual), batches, any K (in slices), 'same'
    padding, in parallel or on the calling thread."""
    from unittest import mock

    from netspec.backends.cpu import conv, implicit, packed
    from netspec.backends.cpu._act import activation_code
    kh, kw = kernel
    attrs = ops.get("fused_conv2d").attrs.model_validate(
        {"out": o, "kernel": [kh, kw], "dilation": list(dilation), "padding": "same", "activation": act,
         "residual": residual})
    assume((kh, kw) != (1, 1))
    wo = w
    assume(wo < packed.NR and conv._live_taps(attrs, h, w, h, w) is None)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, c, h, w)).astype(np.float32)
    weight = (rng.standard_normal((o, c, kh, kw)) / np.sqrt(c * kh * kw)).astype(np.float32)
    bias = rng.standard_normal(o).astype(np.float32)
    res = rng.standard_normal((batch, o, h, w)).astype(np.float32) if residual else None
    code = activation_code(act)
    with mock.patch.object(packed, "_K_SLICE", k_slice):
        with mock.patch.object(implicit, "_plan_flat", wraps=implicit._plan_flat) as spy, \
                mock.patch.object(implicit, "SERIAL_MACS", 2**62 if serial else 0):
            flat = conv._plan(attrs, x.shape, threads, weight, bias, True, code, 0.0, residual)(x, None, res, None)
        assert spy.called
        with mock.patch.object(implicit, "MAX_TAPS", 0), mock.patch.object(implicit, "WIDE_ROWS", 10**6), \
                mock.patch.object(implicit, "flat", lambda stride, wo: False), \
                mock.patch("netspec.backends.cpu.winograd.applies", lambda *args: False):
            im2col = conv._plan(attrs, x.shape, threads, weight, bias, True, code, 0.0, residual)(x, None, res, None)
    np.testing.assert_array_equal(flat, im2col)


def test_implicit_gemm_takes_stems_and_small_layers():
    from netspec.backends.cpu import implicit, winograd
    from netspec.backends.cpu._act import ELU, RELU
    attrs = ops.get("conv2d").attrs.model_validate
    assert implicit.applies(attrs({"out": 64, "kernel": 7, "stride": 2, "padding": 3}), 3, RELU, None, 112)  # ResNet's stem
    assert implicit.applies(attrs({"out": 64, "kernel": 11, "stride": 4, "padding": 2}), 3, RELU, None, 55)  # AlexNet's
    assert not implicit.applies(attrs({"out": 64, "kernel": 3, "stride": 2}), 64, RELU, None, 14)  # K = 576 on 14-wide rows
    assert implicit.applies(attrs({"out": 128, "kernel": 3, "stride": 2}), 64, RELU, None, 28)  # ... on 28-wide rows
    assert implicit.applies(attrs({"out": 8, "kernel": 3}), 3, ELU, None, 8)  # act_row after the micro-kernel
    assert not implicit.applies(attrs({"out": 8, "kernel": 3, "groups": 3}), 3, RELU, None, 8)
    small = attrs({"out": 48, "kernel": 3, "padding": 1})  # GoogLeNet's 16 → 48 on 14²: Winograd gives it up
    assert implicit.applies(small, 16, RELU, winograd.tiles(1, 14, 14), 14)
    wide = attrs({"out": 96, "kernel": 3, "padding": 1})  # its 32 → 96 on 28²: Winograd keeps it
    assert not implicit.applies(wide, 32, RELU, winograd.tiles(1, 28, 28), 28)
    big = attrs({"out": 384, "kernel": 3, "padding": 1})  # GoogLeNet's 192 → 384 on 7²: one run of tiles a plane
    assert implicit.applies(big, 192, RELU, None, 7) and not implicit.applies(big, 192, RELU, winograd.tiles(2, 7, 7), 7)
    assert not implicit.applies(attrs({"out": 384, "kernel": 3, "stride": 2, "padding": 1}), 192, RELU, None, 7)


def test_winograd_keeps_small_maps_and_other_convolutions_on_im2col():
    from netspec.backends.cpu import winograd
    attrs = ops.get("conv2d").attrs.model_validate
    assert not winograd.applies(attrs({"out": 512, "kernel": 3, "padding": 1}), 512, 512, winograd.tiles(1, 7, 7))
    assert winograd.applies(attrs({"out": 256, "kernel": 3, "padding": 1}), 256, 256, winograd.tiles(1, 14, 14))
    assert winograd.applies(attrs({"out": 512, "kernel": 3, "padding": 1}), 512, 512, winograd.tiles(8, 7, 7))
    for other in ({"kernel": 3, "stride": 2}, {"kernel": 3, "dilation": 2}, {"kernel": 3, "groups": 2}, {"kernel": 5}):
        assert not winograd.applies(attrs({"out": 64, **other}), 64, 64, winograd.tiles(1, 56, 56))
    assert not winograd.applies(attrs({"out": 64, "kernel": 3}), 3, 64, winograd.tiles(1, 56, 56))  # RGB input


def test_winograd_weight_transform_is_g_times_filter_times_g_transposed():
    """U = G g Gᵀ per (output, input) filter, as the textbook writes it (the kernel computes it as
    one product by G ⊗ G): to within float32 rounding of the float64 result."""
    from netspec.backends.cpu import winograd
    g = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])
    w = np.random.default_rng(3).standard_normal((5, 4, 3, 3)).astype(np.float32)
    want = np.einsum("ai,ocij,bj->aboc", g, w.astype(np.float64), g).reshape(16, 5, 4)
    got = winograd.transform_weights(w)
    assert got.dtype == np.float32 and got.shape == (16, 5, 4) and got.flags.c_contiguous
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-30)


def test_winograd_weight_transform_is_made_once_per_layer_not_per_array():
    """A layer's plans share its transform; a new layer (a training step's, after the optimizer changed
    the same array in place) makes its own: the transform is never looked up by the array's identity."""
    from netspec.backends.cpu import winograd
    w = np.random.default_rng(0).standard_normal((16, 16, 3, 3)).astype(np.float32)
    packs = {}
    u = winograd._transformed(w, packs)
    assert winograd._transformed(w, packs) is u and u.wp.shape[0] == 16 and (u.m, u.k) == (16, 16)
    w *= 2  # in place, as an optimizer step does
    again = winograd._transformed(w, {})
    assert not np.array_equal(again.wp, u.wp)
    np.testing.assert_allclose(again.wp, 2 * u.wp, rtol=1e-6)


def test_a_weight_changed_in_place_changes_the_next_train_mode_convolution():
    """The train-mode conv2d (no prepared layer) reads the weights as they are at each call, on its
    Winograd path too."""
    from unittest import mock

    from netspec.backends.cpu import implicit, winograd
    rng = np.random.default_rng(1)
    attrs = ops.get("conv2d").attrs.model_validate({"out": 16, "kernel": 3, "padding": 1, "bias": False})
    x = rng.standard_normal((4, 16, 16, 16)).astype(np.float32)
    params = {"weight": rng.standard_normal((16, 16, 3, 3)).astype(np.float32)}
    with mock.patch.object(implicit, "MAX_TAPS", 0), mock.patch.object(implicit, "WIDE_ROWS", 10**6), \
            mock.patch.object(winograd, "plan", wraps=winograd.plan) as spy:
        first = KERNELS["conv2d"](attrs, [x], params, RunContext())
        params["weight"] *= -1
        second = KERNELS["conv2d"](attrs, [x], params, RunContext())
    assert spy.call_count == 2
    np.testing.assert_allclose(second, -first, rtol=1e-4, atol=1e-4)


def test_every_kernel_writes_into_the_array_it_is_given():
    """The executor hands each CPU kernel its output's place in the arena (`out=`): every kernel, on
    each of its warm-up cases, writes the same values there as into an array of its own, and
    returns that array."""
    from netspec.backends.cpu.kernels import _WARM_CASES
    from netspec.ir.types import TensorType
    rng = np.random.default_rng(8)
    for name, kernel in KERNELS.items():
        op = ops.get(name)
        for attrs_dict, shapes, modes in _WARM_CASES.get(name, [({}, [(1, 2, 4, 4)], ("eval",))]):
            if "eval" not in modes:
                continue
            attrs = op.attrs.model_validate(attrs_dict)
            inputs = [rng.standard_normal(s).astype(np.float32) for s in shapes]
            params = {p: np.abs(rng.standard_normal(spec.shape)).astype(np.float32) + 0.5
                      for p, spec in op.params(attrs, [TensorType(s) for s in shapes]).items()}
            own = kernel(attrs, inputs, params, RunContext())
            out = np.full(own.shape, np.nan, np.float32)
            got = kernel(attrs, inputs, params, RunContext(), out=out)
            assert np.shares_memory(got, out) and got.shape == out.shape, name
            np.testing.assert_array_equal(out, own, err_msg=name)


@settings(max_examples=60, deadline=None)
@given(k=st.integers(1, 5), stride=st.integers(1, 3), pad=st.integers(0, 4), h=st.integers(1, 5), w=st.integers(1, 5),
       groups=st.sampled_from([1, 2]), seed=st.integers(0, 2**31 - 1))
def test_a_kernel_with_taps_only_on_padding_convolves_as_the_reference(k, stride, pad, h, w, groups, seed):
    """Small maps with wide padding leave taps that never meet data (a 3×3 with padding 1 on a 1×1 map
    has one live tap): the CPU kernel runs the live ones only, and must give the same result."""
    from netspec.backends.cpu import conv
    assume(h + 2 * pad >= k and w + 2 * pad >= k)
    op = ops.get("conv2d")
    attrs = op.attrs.model_validate({"out": 4, "kernel": k, "stride": stride, "padding": pad, "groups": groups})
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 4, h, w)).astype(np.float32)
    params = {"weight": rng.standard_normal((4, 4 // groups, k, k)).astype(np.float32),
              "bias": rng.standard_normal(4).astype(np.float32)}
    want = op.reference(attrs, [x], params, RunContext())
    np.testing.assert_allclose(KERNELS["conv2d"](attrs, [x], params, RunContext()), want, rtol=1e-5, atol=1e-5)
    live = conv._live_taps(attrs, h, w, want.shape[2], want.shape[3])
    if live is not None:  # its taps: each kept tap meets data, and the kernel shrank
        (r0, r1), (c0, c1), _ = live
        assert (r1 - r0, c1 - c0) != (k, k) and 0 <= r0 < r1 <= k and 0 <= c0 < c1 <= k


def test_live_taps_of_a_3x3_on_a_1x1_map_are_its_centre():
    from netspec.backends.cpu import conv
    attrs = ops.get("conv2d").attrs.model_validate({"out": 8, "kernel": 3, "padding": 1})
    assert conv._live_taps(attrs, 1, 1, 1, 1) == ((1, 2), (1, 2), (0, 0, 0, 0))
    assert conv._live_taps(attrs, 7, 7, 7, 7) is None


@pytest.mark.parametrize("batch, inputs, out", [(1, 400, 120), (8, 400, 120), (2, 600, 120), (16, 400, 120)])
def test_linear_small_and_blas_paths_match_reference(batch, inputs, out):
    """fused_linear runs small layers in one Numba loop (`linear._small`: the first two shapes) and
    the others through BLAS or `linear._few_rows` (more weights than SMALL_WEIGHTS, or a batch past
    SMALL): all agree
    with the reference, bias, residual and activation included, and a prepared layer (its Wᵀ made
    once) gives the same bits as the kernel called plainly."""
    from netspec.backends.cpu import linear
    small = inputs * out <= linear.SMALL_WEIGHTS and batch * inputs * out <= linear.SMALL
    assert small == (inputs == 400 and batch <= 8)
    op = ops.get("fused_linear")
    a = op.attrs.model_validate({"out": out, "residual": True, "activation": "relu"})
    rng = np.random.default_rng(batch)
    args = [rng.standard_normal((batch, inputs)).astype(np.float32), rng.standard_normal((batch, out)).astype(np.float32)]
    params = {"weight": rng.standard_normal((out, inputs)).astype(np.float32),
              "bias": rng.standard_normal(out).astype(np.float32)}
    got = KERNELS["fused_linear"](a, args, params, RunContext())
    np.testing.assert_allclose(got, op.reference(a, args, params, RunContext()), rtol=RTOL, atol=ATOL)
    np.testing.assert_array_equal(linear.prepare(a, params)(args), got)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(batch=st.integers(1, 12), inputs=st.integers(1, 300), out=st.integers(1, 70), residual=st.booleans(),
       act=st.sampled_from([None, "relu", "tanh"]), threads=st.sampled_from([1, 2]), small=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
def test_linear_at_a_few_rows_matches_reference(batch, inputs, out, residual, act, threads, small, seed):
    """At batches of 2 to FEW_ROWS, layers run in `linear._few_rows` (pairs of weight rows against 4
    input rows at a time; an odd last row, a last group of fewer than 4), small ones in its twin on
    the calling thread; other batches through BLAS or `_small`: every way the reference's values,
    bias, residual and activation included, on one thread or two."""
    from unittest import mock

    from netspec.backends.cpu import linear
    from netspec.threads import set_threads
    op = ops.get("fused_linear")
    a = op.attrs.model_validate({"out": out, "residual": residual, "activation": act})
    rng = np.random.default_rng(seed)
    args = [rng.standard_normal((batch, inputs)).astype(np.float32)]
    args += [rng.standard_normal((batch, out)).astype(np.float32)] if residual else []
    params = {"weight": rng.standard_normal((out, inputs)).astype(np.float32),
              "bias": rng.standard_normal(out).astype(np.float32)}
    with mock.patch.object(linear, "SMALL_WEIGHTS", 2**40 if small else 0), mock.patch.object(linear, "SMALL", 2**40), \
            set_threads(threads), mock.patch.object(linear, "_few_rows", wraps=linear._few_rows) as parallel, \
            mock.patch.object(linear, "_few_rows_serial", wraps=linear._few_rows_serial) as serial:
        got = KERNELS["fused_linear"](a, args, params, RunContext())
    assert (serial if small else parallel).called == (2 <= batch <= linear.FEW_ROWS)
    assert not (parallel if small else serial).called
    np.testing.assert_allclose(got, op.reference(a, args, params, RunContext()), rtol=RTOL, atol=ATOL)


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(n=st.integers(1, 3), c=st.integers(1, 9), h=st.integers(2, 40), w=st.integers(2, 40),
       seed=st.integers(0, 2**32 - 1))
def test_avgpool_2x2_gives_the_general_kernels_bits(n, c, h, w, seed):
    """2×2, stride-2, unpadded average pools (LeNet-5's) take their own kernel, on one thread or on
    all: the same bits as the general one, odd sizes (the last row or column dropped) included."""
    from netspec.backends.cpu import pool
    x = np.random.default_rng(seed).standard_normal((n, c, h, w)).astype(np.float32) * 100
    ho, wo = h // 2, w // 2
    hp, wp, flat = pool._plane_layout(h, w, ho, wo, (2, 2), (2, 2), (0, 0), (1, 1))
    want = np.empty((n, c, ho, wo), np.float32)
    pool._avgpool(x, 2, 2, 2, 2, 0, 0, hp, wp, flat, True, want, 2)
    got = KERNELS["avgpool2d"](ops.get("avgpool2d").attrs.model_validate({"kernel": 2}), [x], {}, RunContext())
    np.testing.assert_array_equal(got, want)
    parallel = np.full_like(want, np.nan)
    pool._avgpool_2x2(x, parallel, 2)
    np.testing.assert_array_equal(parallel, want)
