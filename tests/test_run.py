"""Running networks: every zoo spec end to end in the Numba kernels and in the pure-reference
executor, with the same weights and input (outputs agree to rtol = atol = 1e-3 end to end), plus
the executor's behaviour in train and eval mode."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import netspec
from netspec.backends.executor import InputError
from netspec.weights import init_weights

SPECS = Path(__file__).resolve().parent.parent / "specs"

# (spec, variant, params): full size for LeNet-5, ResNet-18 and MobileNet v1; reduced input sizes or
# widths elsewhere to keep CI fast (the shapes and ops exercised are the same).
ZOO = [
    ("lenet5", None, {}),
    ("resnet18", None, {}),
    ("mobilenet_v1", None, {}),
    ("alexnet", None, {"resolution": 64}),
    ("alexnet", "original", {"resolution": 67}),
    ("vgg16", None, {"resolution": 32}),
    ("googlenet", None, {"resolution": 64}),
    ("googlenet", "paper", {"resolution": 64}),
    ("inception_v2", None, {}),
    ("resnet50", None, {"resolution": 64}),
    ("efficientnet", None, {"resolution": 64}),
    ("yolov1", None, {"resolution": 64, "grid": 1}),
    ("unet", None, {"resolution": 64, "base": 8}),
    ("unet", "original", {"resolution": 188, "base": 8}),
]


def _random_weights(graph, seed=0):
    """Initialized weights with random biases and batch-norm statistics, so every term is exercised."""
    rng = np.random.default_rng(seed)
    weights = init_weights(graph, seed)
    for key, value in weights.items():
        if key.endswith((".bias", ".running_mean")):
            weights[key] = rng.normal(0, 0.1, value.shape).astype(np.float32)
        elif key.endswith((".running_var", "bn.weight")) or (key.endswith(".weight") and value.ndim == 1):
            weights[key] = rng.uniform(0.5, 1.5, value.shape).astype(np.float32)
    return weights


@pytest.mark.parametrize("name,variant,params", ZOO, ids=[f"{s}{'-' + v if v else ''}" for s, v, _ in ZOO])
def test_zoo_spec_runs_and_kernels_agree_with_reference(name, variant, params):
    graph = netspec.load(SPECS / f"{name}.yaml", variant=variant, params=params)
    weights = _random_weights(graph)
    x = np.random.default_rng(1).standard_normal((2,) + graph.inputs[next(iter(graph.inputs))].dims,
                                                 dtype=np.float32)
    slow = netspec.compile(graph, backend="reference", weights=weights, optimize=False).run(x)
    # the optimized graph (folded batch norms, ...) and the graph as written; batch 1 too, where
    # the memory plan differs (a concat's inputs are written in their places in its output)
    for optimize, batch in ((True, 2), (True, 1), (False, 2)):
        fast = netspec.compile(graph, backend="cpu", weights=weights, optimize=optimize).run(x[:batch])
        assert fast.keys() == slow.keys() == set(graph.outputs)
        for key in fast:
            expected_shape = (batch,) + graph.type_of(key).dims
            assert fast[key].shape == slow[key][:batch].shape == expected_shape
            assert np.isfinite(fast[key]).all()
            # end to end through up to ~150 layers: 1e-3 relative to the output's scale (DESIGN.md)
            scale = max(1.0, float(np.abs(slow[key]).max()))
            np.testing.assert_allclose(fast[key], slow[key][:batch], rtol=1e-3, atol=1e-3 * scale)


TRAIN_SPEC = """
input: {shape: [3, 8, 8]}
layers:
  - {op: conv2d, name: conv, out: 4, kernel: 3, padding: 1}
  - {op: batchnorm2d, name: bn, momentum: 0.5}
  - {op: dropout, name: drop, p: 0.5}
  - {op: identity, name: noise, mode: train}
"""


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_train_mode_updates_running_stats_and_drops(load_spec, backend):
    graph = load_spec(TRAIN_SPEC)
    x = np.random.default_rng(0).standard_normal((4, 3, 8, 8), dtype=np.float32)
    train = netspec.compile(graph, backend=backend, mode="train", seed=7)
    first = train.run(x)["noise"]
    assert not np.allclose(train.weights["bn.running_mean"], 0)  # updated from the batch
    assert 0.3 < (first == 0).mean() < 0.7  # dropout p = 0.5
    second = train.run(x)["noise"]
    assert not np.array_equal(first == 0, second == 0)  # a fresh mask every run
    again = netspec.compile(graph, backend=backend, mode="train", seed=7).run(x)["noise"]
    np.testing.assert_array_equal(first, again)  # seeded
    evaluation = netspec.compile(graph, backend=backend, mode="eval", seed=7)
    assert evaluation.graph.outputs == ["drop"]  # the train-only node is bypassed
    out = evaluation.run(x)["drop"]
    assert (out != 0).mean() > 0.95  # no dropout in eval


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_train_mode_agrees_between_backends(load_spec, backend):
    graph = load_spec(TRAIN_SPEC)
    x = np.random.default_rng(0).standard_normal((4, 3, 8, 8), dtype=np.float32)
    a = netspec.compile(graph, backend=backend, mode="train", seed=3)
    b = netspec.compile(graph, backend="reference", mode="train", seed=3)
    np.testing.assert_allclose(a.run(x)["noise"], b.run(x)["noise"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(a.weights["bn.running_var"], b.weights["bn.running_var"], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("bad,message", [
    (np.zeros((2, 3, 9, 8), np.float32), "shape 2×3×9×8; expected N×3×8×8"),
    (np.zeros((3, 8, 8), np.float32), "rank 3"),
    (np.zeros((1, 3, 8, 8), np.int64), "dtype int64"),
    (np.full((1, 3, 8, 8), np.nan, np.float32), "NaN or Inf"),
    ([[1.0]], "numpy array"),
])
def test_bad_inputs_are_refused_clearly(load_spec, bad, message):
    exe = netspec.compile(load_spec(TRAIN_SPEC), backend="reference")
    with pytest.raises(InputError, match=message.replace("×", "×")):
        exe.run(bad)


def test_float64_input_is_accepted(load_spec):
    exe = netspec.compile(load_spec(TRAIN_SPEC), backend="reference")
    out = exe.run(np.ones((1, 3, 8, 8)))["drop"]
    assert out.dtype == np.float32 and out.shape == (1, 4, 8, 8)


PREPARED_SPEC = """
input: {shape: [8, 12, 12]}
layers:
  - {op: conv2d, name: pw, out: 24, kernel: 1}
  - {op: relu}
  - {op: conv2d, name: wino, out: 24, kernel: 3, padding: 1}
  - {op: conv2d, name: strided, out: 16, kernel: 3, stride: 2, padding: 1}
  - {op: conv2d, name: dw, out: 16, kernel: 3, groups: 16, padding: 1}
"""


def test_prepared_steps_follow_batch_threads_and_replaced_weights(load_spec):
    """Eval mode runs each node as prepared once (its weights bound, conv layers planned per input
    shape and thread count): a new batch size or thread count gets its own plan, and a weight
    array replaced in `weights` after compiling is used, not the one the plan was made with."""
    from netspec.backends.cpu import conv, winograd
    from netspec.threads import set_threads

    graph = load_spec(PREPARED_SPEC)
    weights = _random_weights(graph)
    exe = netspec.compile(graph, backend="cpu", weights=dict(weights), optimize=False)
    assert all(step.prepared is not None for step in exe.plan)
    assert sum(isinstance(step.prepared, conv._Layer) for step in exe.plan) == 4
    assert winograd.applies(graph.node("wino").attrs, 24, 24, winograd.tiles(1, 12, 12))  # each conv path runs
    rng = np.random.default_rng(2)

    def check(batch, threads):
        x = rng.standard_normal((batch, 8, 12, 12), dtype=np.float32)
        with set_threads(threads):
            got = exe.run(x)["dw"]
        want = netspec.compile(graph, backend="reference", weights=exe.weights, optimize=False).run(x)["dw"]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)

    for batch, threads in [(1, 2), (3, 2), (1, 1), (3, 1), (1, 2)]:
        check(batch, threads)
    layer = next(step.prepared for step in exe.plan if step.node.name == "wino")
    assert len(layer.plans) == 4  # (batch, threads): planned once each, reused on the fifth run
    exe.weights["wino.weight"] = -exe.weights["wino.weight"]  # a new array: the next run rebinds
    check(2, 2)


def test_eval_runs_in_the_planned_arena(load_spec):
    """In eval mode the CPU kernels write every intermediate tensor into one arena laid out by the
    memory plan: a run allocates (about) nothing but its outputs, results stay right across runs
    and batch sizes, and the arrays a run returned are not overwritten by the next run."""
    import tracemalloc

    from netspec.passes.memory import plan_memory

    graph = netspec.load(SPECS / "mobilenet_v1.yaml", params={"resolution": 128})
    weights = _random_weights(graph)
    exe = netspec.compile(graph, backend="cpu", weights=weights, progress=False)
    reference = netspec.compile(graph, backend="reference", weights=weights)
    rng = np.random.default_rng(3)
    for batch in (1, 2, 2, 1):
        x = rng.standard_normal((batch, 3, 128, 128), dtype=np.float32)
        first = exe.run(x)["fc"]
        kept = first.copy()
        exe.run(-x)
        np.testing.assert_array_equal(first, kept)  # the next run wrote elsewhere
        np.testing.assert_allclose(first, reference.run(x)["fc"], rtol=1e-3, atol=1e-4)
    plan = plan_memory(exe.graph, batch=1)
    assert exe._arena.memory.nbytes == plan.arena
    tracemalloc.start()
    try:
        exe.run(x)
        allocated = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # (what remains: the input check's temporaries; every tensor allocated anew was about plan.arena)
    assert allocated < plan.arena / 5, (allocated, plan.arena)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=40))
def test_the_nan_check_refuses_exactly_the_non_finite_bit_patterns(words):
    """The check reads the exponent bits: any float32 (subnormals, −0, NaNs of either sign and any
    payload, ±Inf) is refused exactly when numpy calls it not finite."""
    from netspec.backends.executor import check_input
    x = np.array(words, np.uint32).view(np.float32).reshape(1, 1, 1, -1)
    if np.isfinite(x).all():
        assert check_input("input", x, x.shape[1:]) is x
    else:
        with pytest.raises(InputError, match="NaN or Inf"):
            check_input("input", x, x.shape[1:])


def test_large_finite_inputs_pass_the_nan_check(load_spec):
    """Finite values whose sum would overflow are accepted, and one NaN or Inf among them is found
    and counted."""
    from netspec.backends.executor import check_input
    x = np.full((2, 3, 4, 4), 3e38, np.float32)
    assert check_input("input", x, (3, 4, 4)) is x
    for bad in (np.nan, np.inf, -np.inf):
        y = x.copy()
        y[1, 2, 3, 0] = bad
        with pytest.raises(InputError, match="contains 1 NaN or Inf value"):
            check_input("input", y, (3, 4, 4))
