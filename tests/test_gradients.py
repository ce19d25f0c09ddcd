"""Backward rules (OpDef.backward) against finite differences, in float64, on the references.

For every op a spec can name and every loss: hypothesis draws shapes and attributes (the cases of
tests/test_reference.py), inputs and parameters; with loss = Σ w · op(x) for a random w (so dy = w),
each gradient g the rule gives must predict the loss's change along a random direction v:
⟨g, v⟩ = (loss(x + εv) - loss(x - εv)) / 2ε, to float64's central-difference accuracy.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_reference import draw_case, random_params

import netspec.ops as ops
from netspec.ir.types import TensorType
from netspec.ops import GradArgs, RunContext
from netspec.ops.loss import target_type
from netspec.ops.registry import infer_output

EPS = 1e-7  # float64: truncation ~ε², rounding ~1e-16/ε; a kink (relu at 0) within ε of a value is unlikely
DIFFERENTIABLE = [op.name for op in ops.all_ops()] + ["cross_entropy", "mse"]


def _rng_ctx(mode):
    return RunContext(mode=mode, rng=np.random.default_rng(7))  # the same dropout mask on every call


def _loss_case(name, draw):
    """A loss's case: an output shape, its target (labels or values), mode."""
    classification = draw(st.booleans())
    n, k = draw(st.integers(1, 3)), draw(st.integers(2, 5))
    shape = (n, k) if classification or name == "mse" else (n, k, draw(st.integers(1, 3)), draw(st.integers(2, 3)))
    attrs = dict(weight=draw(st.sampled_from([1.0, 0.3])))
    if name == "cross_entropy":
        attrs |= dict(label_smoothing=draw(st.sampled_from([0.0, 0.1, 0.5])), ignore_index=draw(st.sampled_from([-100, 1])))
    return attrs, shape


def _check_rule(op, attrs, inputs, params, mode, rng, differentiable_inputs):
    def loss(xs, ps):
        y = op.reference(attrs, xs, {k: v.copy() for k, v in ps.items()}, _rng_ctx(mode))
        assert y.dtype == np.float64, f"{op.name}'s reference turned float64 into {y.dtype}"
        return float((np.where(np.isfinite(y), y, 0.0) * w).sum())

    y = op.reference(attrs, inputs, {k: v.copy() for k, v in params.items()}, _rng_ctx(mode))
    w = rng.standard_normal(y.shape) * np.isfinite(y)  # (a max-pool window wholly in the padding is -inf)
    types = [TensorType(x.shape) for x in inputs]
    trainable = [p for p, spec in op.params(attrs, types).items() if spec.trainable]
    targets = [i for i in range(len(inputs)) if differentiable_inputs and op.backward.differentiable(attrs, i)]
    for wrt in targets + trainable:
        shape = inputs[wrt].shape if isinstance(wrt, int) else params[wrt].shape
        uses = op.backward.uses(attrs, wrt)
        args = GradArgs(wrt, w, inputs if "inputs" in uses else None, y if "output" in uses else None,
                        {k: v.copy() for k, v in params.items()}, shape, _rng_ctx(mode), tuple(x.shape for x in inputs))
        g = np.asarray(op.backward.rule(attrs, args))
        assert g.shape == shape, f"{op.name} ∂/∂{wrt}: shape {g.shape}, expected {shape}"
        v = rng.standard_normal(shape)

        def moved(step):
            xs = [x + step * v if i == wrt else x for i, x in enumerate(inputs)]
            ps = {k: (p + step * v if k == wrt else p) for k, p in params.items()}
            return loss(xs, ps)

        predicted = float((g * v).sum())
        measured = (moved(EPS) - moved(-EPS)) / (2 * EPS)
        scale = max(1.0, abs(measured), float(np.abs(g).sum() * np.abs(v).max()) * 1e-3)
        assert abs(predicted - measured) <= 1e-5 * scale, \
            f"{op.name} ∂/∂{wrt} with {attrs}: ⟨g, v⟩ = {predicted}, finite differences {measured}"


def test_every_op_has_a_backward():
    missing = [name for name in DIFFERENTIABLE if ops.get(name).backward is None]
    assert not missing, f"ops without a backward rule: {missing}"


@pytest.mark.parametrize("name", [n for n in DIFFERENTIABLE if n not in ("cross_entropy", "mse")])
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(data=st.data())
def test_backward_matches_finite_differences(name, data):
    assert ops.get(name).backward is not None, f"{name} has no backward rule"
    op, attrs, types, mode = draw_case(data, name)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    inputs = [rng.standard_normal(t.shape) for t in types]
    params = {k: v.astype(np.float64) for k, v in random_params(op, attrs, types, rng).items()}
    _check_rule(op, attrs, inputs, params, mode, rng, differentiable_inputs=True)


@pytest.mark.parametrize("name", ["cross_entropy", "mse"])
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_loss_backward_matches_finite_differences(name, data):
    op = ops.get(name)
    attr_values, shape = _loss_case(name, data.draw)
    attrs = op.attrs(**attr_values)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    logits = rng.standard_normal(shape) * 3
    want = target_type(name, TensorType(shape))
    if name == "mse":
        target = rng.standard_normal(shape)
    else:
        target = rng.integers(0, shape[1], want.shape)
    infer_output(op, attrs, [TensorType(shape), want])
    _check_rule(op, attrs, [logits, target], {}, "train", rng, differentiable_inputs=True)
