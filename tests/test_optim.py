"""netspec/training/optim.py: the optimizers against torch.optim, their state, and the schedules.

The optimizers judge: torch.optim's SGD, Adam and AdamW on the same float32 weights and gradients,
one step and several (with changing gradients and learning rates), to 1e-6 relative: max |ours −
torch's| ≤ 1e-6 · max |torch's| per tensor. (SGD is equal bit for bit where torch runs its AVX2
kernels; Adam differs where torch's sqrt, MKL's, is off by a unit in the last place.) Only the tests
that compare with torch skip without it.
"""
from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from netspec.training.optim import OPTIMIZERS, SCHEDULES, learning_rate, make_optimizer

TOLERANCE = 1e-6
SHAPES = {"conv.weight": (8, 3, 3, 3), "conv.bias": (8,), "fc.weight": (10, 72), "odd": (7,)}


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


def _weights(seed: int, shapes=SHAPES) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s, dtype=np.float32) for k, s in shapes.items()}


def _gradient_steps(seed: int, weights, steps: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed + 1000)
    return [{k: rng.standard_normal(a.shape, dtype=np.float32) * (1 + i) for k, a in weights.items()}
            for i in range(steps)]


def _torch_optimizer(torch, name, params, settings):
    """torch.optim's optimizer for make_optimizer's `name` and settings (on the CPU: its single-tensor
    path; AdamW's weight_decay given, its own default being 0.01)."""
    s = dict(settings)
    if name == "sgd":
        return torch.optim.SGD(params, lr=0.0, momentum=s.get("momentum", 0.0), nesterov=s.get("nesterov", False),
                               weight_decay=s.get("weight_decay", 0.0))
    cls = torch.optim.AdamW if name == "adamw" else torch.optim.Adam
    return cls(params, lr=0.0, betas=s.get("betas", (0.9, 0.999)), eps=s.get("eps", 1e-8),
               weight_decay=s.get("weight_decay", 0.0))


def _run_both(torch, name, settings, weights, grads, lrs):
    """(ours, torch's): the weights after one step per (gradients, lr), and the optimizers."""
    ours = {k: a.copy() for k, a in weights.items()}
    opt = make_optimizer(name, ours, **settings)
    leaves = {k: torch.tensor(a.copy(), requires_grad=True) for k, a in weights.items()}
    theirs = _torch_optimizer(torch, name, list(leaves.values()), settings)
    for step, lr in zip(grads, lrs):
        opt.step(step, lr)
        for group in theirs.param_groups:
            group["lr"] = lr
        for k, t in leaves.items():
            t.grad = torch.from_numpy(step[k]) if k in step else None
        theirs.step()
    return (ours, opt), ({k: t.detach().numpy() for k, t in leaves.items()}, theirs, leaves)


def _assert_close(ours: np.ndarray, theirs: np.ndarray, what: str) -> None:
    scale = float(np.abs(theirs).max(initial=0.0))
    error = float(np.abs(ours.astype(np.float64) - theirs).max(initial=0.0))
    assert error <= TOLERANCE * scale, f"{what}: max |ours − torch| = {error:.3g}, scale {scale:.3g}"


CASES = [
    ("sgd", {}),
    ("sgd", {"weight_decay": 0.01}),
    ("sgd", {"momentum": 0.9}),
    ("sgd", {"momentum": 0.9, "weight_decay": 0.01}),
    ("sgd", {"momentum": 0.9, "nesterov": True, "weight_decay": 0.01}),
    ("adam", {}),
    ("adam", {"weight_decay": 0.01}),
    ("adam", {"betas": (0.5, 0.9), "eps": 1e-6}),
    ("adam", {"betas": (0.0, 0.99)}),  # torch's lerp takes its other branch (weight 1 − β1 ≥ 0.5)
    ("adamw", {}),
    ("adamw", {"weight_decay": 0.01}),
    ("adamw", {"betas": (0.4, 0.95), "weight_decay": 0.1}),
]


@pytest.mark.parametrize("steps", [1, 5])
@pytest.mark.parametrize("name,settings", CASES, ids=[f"{n}-{s}" for n, s in CASES])
def test_steps_equal_torch_optim(torch, name, settings, steps):
    weights = _weights(steps)
    grads = _gradient_steps(steps, weights, steps)
    lrs = [0.05 * 0.8 ** i for i in range(steps)]  # (a schedule's changing rates)
    (ours, opt), (theirs, torch_opt, leaves) = _run_both(torch, name, settings, weights, grads, lrs)
    assert opt.step_count == steps
    for k in weights:
        _assert_close(ours[k], theirs[k], f"{name} {k}")
    # the state too, under torch's names
    state = opt.state()
    for k, leaf in leaves.items():
        for slot, value in torch_opt.state[leaf].items():
            if slot == "step":
                assert state[f"step/{k}"].tolist() == [float(value)]
            else:
                _assert_close(state[f"{slot}/{k}"], value.numpy(), f"{name} {slot}/{k}")


@pytest.mark.parametrize("settings", [{}, {"momentum": 0.9, "weight_decay": 0.01},
                                      {"momentum": 0.9, "nesterov": True, "weight_decay": 5e-4}])
def test_sgd_is_torch_bit_for_bit_on_avx2(torch, settings):
    if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        pytest.skip("torch's SGD fuses its multiply-adds in its AVX2 and AVX-512 kernels only")
    weights = _weights(3, {"a": (1003,), "b": (64, 3, 3, 3)})
    grads = _gradient_steps(3, weights, 4)
    (ours, _), (theirs, _, _) = _run_both(torch, "sgd", settings, weights, grads, [0.1, 0.05, 0.02, 0.01])
    for k in weights:
        assert np.array_equal(ours[k], theirs[k]), k


def test_a_parameter_without_a_gradient_is_left_alone(torch):
    """...its weights and (for Adam's bias correction) its step count, as in torch."""
    weights = _weights(4)
    grads = _gradient_steps(4, weights, 4)
    del grads[1]["fc.weight"], grads[2]["fc.weight"], grads[2]["odd"]
    for name, config in (("sgd", {"momentum": 0.9}), ("adam", {}), ("adamw", {"weight_decay": 0.01})):
        (ours, opt), (theirs, _, _) = _run_both(torch, name, config, weights, grads, [0.01] * 4)
        for k in weights:
            _assert_close(ours[k], theirs[k], f"{name} {k}")
        if name != "sgd":
            assert opt.state()["step/fc.weight"].tolist() == [2] and opt.state()["step/conv.bias"].tolist() == [4]


def _settings_strategy(name):
    if name == "sgd":
        return st.fixed_dictionaries({"momentum": st.sampled_from([0.0, 0.5, 0.9, 0.99]),
                                      "weight_decay": st.sampled_from([0.0, 1e-4, 0.01, 0.5])}).flatmap(
            lambda s: st.fixed_dictionaries({**{k: st.just(v) for k, v in s.items()},
                                             "nesterov": st.booleans() if s["momentum"] else st.just(False)}))
    return st.fixed_dictionaries({
        "betas": st.tuples(st.sampled_from([0.0, 0.5, 0.9, 0.95]), st.sampled_from([0.0, 0.9, 0.999, 0.9999])),
        "eps": st.sampled_from([1e-8, 1e-6, 1e-3]), "weight_decay": st.sampled_from([0.0, 0.01, 0.1])})


_arrays = hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=9).flatmap(
    lambda shape: st.tuples(*[hnp.arrays(np.float32, shape, elements=st.floats(-100, 100, width=32))
                              for _ in range(4)]))


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_property_optimizers_equal_torch(torch, name):
    @settings(max_examples=40, deadline=None)
    @given(arrays=_arrays, config=_settings_strategy(name),
           lrs=st.lists(st.sampled_from([0.0, 1e-3, 0.01, 0.1, 1.0]), min_size=1, max_size=3))
    def check(arrays, config, lrs):
        weights = {"w": arrays[0]}
        grads = [{"w": g} for g in arrays[1:1 + len(lrs)]]
        (ours, _), (theirs, _, _) = _run_both(torch, name, config, weights, grads, lrs)
        _assert_close(ours["w"], theirs["w"], f"{name} {config} lrs {lrs}")
    check()


@pytest.mark.parametrize("name,settings", [("sgd", {"momentum": 0.9, "nesterov": True, "weight_decay": 5e-4}),
                                           ("adam", {"weight_decay": 0.01}), ("adamw", {"weight_decay": 0.01})])
def test_a_restored_optimizer_continues_exactly(name, settings, tmp_path):
    """Stopped after 3 of 6 steps, its state written to a safetensors file and read into a new
    optimizer over the saved weights: the next 3 steps give the uninterrupted run's weights bit for bit."""
    from netspec.weights import read_weights, save_weights
    weights = _weights(5)
    grads = _gradient_steps(5, weights, 6)
    lrs = [0.1, 0.08, 0.06, 0.04, 0.02, 0.01]
    straight = {k: a.copy() for k, a in weights.items()}
    uninterrupted = make_optimizer(name, straight, **settings)
    for g, lr in zip(grads, lrs):
        uninterrupted.step(g, lr)

    first = {k: a.copy() for k, a in weights.items()}
    stopped = make_optimizer(name, first, **settings)
    for g, lr in zip(grads[:3], lrs[:3]):
        stopped.step(g, lr)
    save_weights(stopped.state(), tmp_path / "state.safetensors")
    resumed_weights = {k: a.copy() for k, a in first.items()}
    resumed = make_optimizer(name, resumed_weights, **settings)
    resumed.load_state(read_weights(tmp_path / "state.safetensors"), stopped.step_count)
    assert resumed.step_count == 3
    for g, lr in zip(grads[3:], lrs[3:]):
        resumed.step(g, lr)
    assert resumed.step_count == uninterrupted.step_count == 6
    for k in weights:
        assert np.array_equal(resumed_weights[k], straight[k]), k
    for k, value in uninterrupted.state().items():
        assert np.array_equal(resumed.state()[k], value), k


def test_state_names_follow_torch():
    weights = _weights(0, {"a": (3,)})
    assert set(make_optimizer("sgd", weights).state()) == set()
    assert set(make_optimizer("sgd", weights, momentum=0.9).state()) == {"momentum_buffer/a"}
    assert set(make_optimizer("adamw", weights).state()) == {"exp_avg/a", "exp_avg_sq/a", "step/a"}
    state = make_optimizer("sgd", weights, momentum=0.9).state()
    with pytest.raises(ValueError):  # the live buffers, read-only
        state["momentum_buffer/a"][0] = 1


def test_load_state_refuses_what_does_not_fit():
    weights = _weights(0)
    sgd = make_optimizer("sgd", weights, momentum=0.9)
    sgd.step(_gradient_steps(0, weights, 1)[0], 0.1)
    adam = make_optimizer("adam", _weights(0))
    state = {k: v.copy() for k, v in adam.state().items()}

    with pytest.raises(ValueError, match=r"missing 'exp_avg/conv\.bias'.*and \d+ more; unexpected 'momentum_buffer/"):
        adam.load_state(sgd.state(), 1)
    wrong = dict(state, **{"exp_avg/odd": np.zeros(8, np.float32)})
    with pytest.raises(ValueError, match=r"'exp_avg/odd' has shape \[8\]; expected \[7\]"):
        adam.load_state(wrong, 1)
    with pytest.raises(ValueError, match="missing 'step/odd'"):
        adam.load_state({k: v for k, v in state.items() if k != "step/odd"}, 1)
    with pytest.raises(ValueError, match="'step/odd' must be a non-negative whole number"):
        adam.load_state(dict(state, **{"step/odd": np.array([1.5], np.float32)}), 1)
    with pytest.raises(ValueError, match="step_count must be a non-negative integer"):
        adam.load_state(state, -1)
    with pytest.raises(ValueError, match="dtype int64"):
        adam.load_state(dict(state, **{"exp_avg/odd": np.zeros(7, np.int64)}), 1)
    # a refused state changed nothing
    before = {k: v.copy() for k, v in sgd.state().items()}
    bad = {k: v.copy() + 1 for k, v in before.items()} | {"momentum_buffer/odd": np.zeros(3, np.float32)}
    with pytest.raises(ValueError):
        sgd.load_state(bad, 5)
    assert sgd.step_count == 1 and all(np.array_equal(sgd.state()[k], v) for k, v in before.items())


@pytest.mark.parametrize("name,settings,message", [
    ("rmsprop", {}, "unknown optimizer 'rmsprop'; known: sgd, adam, adamw"),
    ("sgd", {"nesterov": True}, "nesterov needs a momentum above 0"),
    ("sgd", {"momentum": -0.1}, "momentum must be a non-negative number"),
    ("sgd", {"weight_decay": float("nan")}, "weight_decay must be a non-negative number"),
    ("adam", {"weight_decay": -1}, "weight_decay must be a non-negative number"),
    ("adam", {"betas": (0.9, 1.0)}, r"betas must be two numbers in \[0, 1\)"),
    ("adamw", {"betas": (-0.1, 0.9)}, r"betas must be two numbers in \[0, 1\)"),
    ("adam", {"betas": (0.9,)}, r"betas must be two numbers in \[0, 1\)"),
    ("adam", {"eps": -1e-8}, "eps must be a non-negative number"),
])
def test_bad_settings_are_refused(name, settings, message):
    with pytest.raises(ValueError, match=message):
        make_optimizer(name, _weights(0), **settings)


def test_settings_another_optimizer_takes_are_ignored():
    """(the command line passes one set of settings whichever optimizer it picks)"""
    make_optimizer("adam", _weights(0), momentum=0.9, nesterov=True)
    make_optimizer("sgd", _weights(0), betas=(0.5, 0.5), eps=1.0)


def test_parameters_and_gradients_are_checked():
    with pytest.raises(ValueError, match="'a' must be a writeable C-contiguous float32 array"):
        make_optimizer("sgd", {"a": np.zeros(3)})
    with pytest.raises(ValueError, match="'a' must be a writeable C-contiguous float32 array"):
        make_optimizer("sgd", {"a": np.zeros((3, 4), np.float32).T})
    opt = make_optimizer("sgd", _weights(0))
    with pytest.raises(ValueError, match="a gradient for 'nope', which is not one of the optimizer's parameters"):
        opt.step({"nope": np.zeros(3, np.float32)}, 0.1)
    with pytest.raises(ValueError, match=r"the gradient of 'odd' has shape \[8\]; the parameter's is \[7\]"):
        opt.step({"odd": np.zeros(8, np.float32)}, 0.1)
    with pytest.raises(ValueError, match="lr must be a non-negative number"):
        opt.step({}, -0.1)
    assert opt.step_count == 0


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_a_step_allocates_nothing(name):
    """The buffers are made once; a step updates the weights in place (the executor's own arrays)."""
    weights = _weights(0, {"big": (256, 1024), "small": (7,)})
    originals = dict(weights)
    opt = make_optimizer(name, weights, momentum=0.9 if name == "sgd" else 0.0, weight_decay=0.01)
    grads = _gradient_steps(0, weights, 1)[0]
    opt.step(grads, 0.1)  # (compiles)
    before = weights["big"].copy()
    tracemalloc.start()
    try:
        opt.step(grads, 0.1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024, f"a step held {peak} bytes at its peak"  # (the weights are 1 MiB)
    assert all(weights[k] is originals[k] for k in weights) and not np.array_equal(weights["big"], before)


# --- learning rates -------------------------------------------------------------------------------

def _torch_rates(torch, make_scheduler, base, total, warm, per_epoch=None):
    """The learning rate of each step after a warm-up of `warm` steps, read from a torch scheduler
    stepped every step (or, with per_epoch, at the end of each epoch of that many steps)."""
    param = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([param], lr=base)
    scheduler = make_scheduler(opt)
    rates = []
    for step in range(total):
        if per_epoch is None and step >= warm or per_epoch is not None:
            rates.append(opt.param_groups[0]["lr"])
        if per_epoch is None and step >= warm or per_epoch is not None and (step + 1) % per_epoch == 0:
            opt.step()
            scheduler.step()
    return rates


def test_step_schedule_equals_steplr_per_epoch(torch):
    per_epoch, epochs = 7, 10
    total = per_epoch * epochs
    for step_size, gamma in ((None, 0.1), (4, 0.5)):
        expected = _torch_rates(torch, lambda o: torch.optim.lr_scheduler.StepLR(
            o, step_size=step_size or max(1, epochs // 3), gamma=gamma), 0.1, total, 0, per_epoch)
        ours = [learning_rate("step", 0.1, s, steps_per_epoch=per_epoch, epochs=epochs, step_size=step_size,
                              gamma=gamma) for s in range(total)]
        assert ours == pytest.approx(expected, rel=1e-12)
        if step_size is None:
            without_warm_up = expected
    # with a warm-up of round(1.6 · 7) = 11 steps: its rates, then StepLR's (epochs counted from the start)
    ours = [learning_rate("step", 0.1, s, steps_per_epoch=per_epoch, epochs=epochs, warmup=1.6) for s in range(total)]
    assert ours[:11] == pytest.approx([0.1 * (s + 1) / 11 for s in range(11)], rel=1e-12)
    assert ours[11:] == pytest.approx(without_warm_up[11:], rel=1e-12)


def test_cosine_schedule_equals_cosineannealinglr_after_the_warm_up(torch):
    per_epoch, epochs, base = 5, 6, 0.3
    total = per_epoch * epochs
    for warmup in (0.0, 1.2):
        warm = round(warmup * per_epoch)
        expected = _torch_rates(torch, lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=total - warm),
                                base, total, warm)
        ours = [learning_rate("cosine", base, s, steps_per_epoch=per_epoch, epochs=epochs, warmup=warmup)
                for s in range(total)]
        assert ours[:warm] == pytest.approx([base * (s + 1) / warm for s in range(warm)], rel=1e-12)
        assert ours[warm:] == pytest.approx(expected, rel=1e-9, abs=1e-12 * base)
        assert ours[warm] == base and ours[-1] < base * 0.01


def test_constant_schedule_and_its_warm_up():
    rates = [learning_rate("constant", 0.01, s, steps_per_epoch=4, epochs=3, warmup=1) for s in range(12)]
    assert rates == pytest.approx([0.0025, 0.005, 0.0075] + [0.01] * 9, rel=1e-12)
    assert all(learning_rate(s, 0.01, 0, steps_per_epoch=4, epochs=3) == 0.01 for s in SCHEDULES)


@pytest.mark.parametrize("args,kwargs,message", [
    (("linear", 0.1, 0), {}, "unknown schedule 'linear'; known: constant, step, cosine"),
    (("cosine", -0.1, 0), {}, "base_lr must be a non-negative number"),
    (("cosine", 0.1, 12), {}, r"step must be an integer in \[0, 12\) \(3 epochs of 4 steps\), got 12"),
    (("cosine", 0.1, -1), {}, r"step must be an integer in \[0, 12\)"),
    (("cosine", 0.1, 1.0), {}, r"step must be an integer in \[0, 12\)"),
    (("cosine", 0.1, 0), {"steps_per_epoch": 0}, "steps_per_epoch must be a positive integer, got 0"),
    (("cosine", 0.1, 0), {"epochs": 0}, "epochs must be a positive integer, got 0"),
    (("step", 0.1, 0), {"step_size": 0}, "step_size must be a positive integer, got 0"),
    (("step", 0.1, 0), {"gamma": 0.0}, "gamma must be a positive number, got 0.0"),
    (("cosine", 0.1, 0), {"warmup": 3}, r"the warm-up \(3 epochs, 12 steps\) must be shorter than the run"),
    (("cosine", 0.1, 0), {"warmup": -1}, "warmup must be a non-negative number"),
    (("cosine", 0.1, 0), {"warmup": math.inf}, "warmup must be a non-negative number"),
])
def test_bad_schedules_are_refused(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        learning_rate(*args, **({"steps_per_epoch": 4, "epochs": 3} | kwargs))
