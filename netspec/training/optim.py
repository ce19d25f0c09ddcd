"""Optimizers and learning-rate schedules for `netspec train`.

The optimizers are torch.optim's SGD, Adam and AdamW (dampening 0, no amsgrad, not maximizing),
computed in the same float32 arithmetic: each update is one Numba loop per parameter array, over
its flat view, writing the weights in place (the executor reads those same arrays at the next step).
Their state (momentum and moment buffers) is allocated once, when the optimizer is made.

    opt = make_optimizer("sgd", trainable, momentum=0.9, weight_decay=5e-4)
    for step in range(epochs * steps_per_epoch):
        loss, grads = exe.grad(x, y)
        opt.step(grads, learning_rate("cosine", 0.1, step, steps_per_epoch=..., epochs=..., warmup=1))
"""
from __future__ import annotations

import math

import numpy as np

from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "step", "cosine")


@intrinsic
def _fma(typingctx, a, b, c):
    """a·b + c rounded once, in float32. PyTorch's AVX2 kernels compute `x.add(y, alpha=a)`, `lerp`
    and `addcmul` with fused multiply-adds; with these the updates below equal torch's bit for bit (Numba's
    own arithmetic, fastmath off, never fuses)."""
    f32 = ir.FloatType()

    def codegen(context, builder, signature, args):
        fma = builder.module.declare_intrinsic("llvm.fma", [f32], ir.FunctionType(f32, [f32, f32, f32]))
        return builder.call(fma, args)
    return types.float32(types.float32, types.float32, types.float32), codegen


@njit(cache=True)
def _sgd_update(w, g, buf, lr, weight_decay, momentum, nesterov):
    """torch.optim.SGD's update of one flat array; buf is unused without momentum."""
    for i in range(w.size):
        d = g[i]
        if weight_decay != 0:
            d = _fma(w[i], weight_decay, d)  # grad.add(param, alpha=weight_decay)
        if momentum != 0:
            # buf.mul_(momentum).add_(grad): two roundings. On the first step buf is zero, so this is
            # grad exactly, as torch's clone of it.
            b = buf[i] * momentum + d
            buf[i] = b
            d = _fma(b, momentum, d) if nesterov else b
        w[i] = _fma(d, -lr, w[i])  # param.add_(grad, alpha=-lr)


@njit(cache=True)
def _adam_update(w, g, m, v, decay, l2, lerp_coeff, lerp_from_grad, beta2, one_minus_beta2, bias2_sqrt, eps,
                 neg_step_size):
    """torch.optim.Adam's (AdamW's, with `decay`) update of one flat array; the scalars are float32
    and prepared by `Adam._update` as torch rounds them."""
    for i in range(w.size):
        p = w[i]
        if decay != 1:
            p = p * decay  # AdamW: param.mul_(1 - lr·weight_decay)
        d = g[i]
        if l2 != 0:
            d = _fma(p, l2, d)
        # exp_avg.lerp_(grad, 1 - beta1), as torch's kernel: from exp_avg for a weight below 0.5,
        # from grad (with weight - 1) otherwise
        mi = _fma(lerp_coeff, d - m[i], d if lerp_from_grad else m[i])
        vi = _fma(one_minus_beta2 * d, d, v[i] * beta2)  # exp_avg_sq.mul_(beta2).addcmul_(grad, grad, 1 - beta2)
        # (torch's sqrt, MKL's, is off by one unit in the last place for about a sixth of the values:
        # the one step where this update is not torch's bit for bit)
        denom = np.sqrt(vi) / bias2_sqrt + eps
        m[i] = mi
        v[i] = vi
        w[i] = p + neg_step_size * mi / denom  # param.addcdiv_(exp_avg, denom, value=-step_size)


class Optimizer:
    """Updates `params` (key → float32 C-contiguous array) IN PLACE. `slots`: the state kept per
    parameter, named as in torch's state_dict ("momentum_buffer", "exp_avg", ...); `state()` keys
    each array "<slot>/<parameter key>". With `counts_steps`, each parameter also counts its own
    updates, as torch's Adam does for its bias corrections (a parameter without a gradient in a step
    does not advance): "step/<key>" in the state, a float32 number as in torch's state_dict, held in
    a one-element array (netspec's safetensors writer makes scalars so)."""

    name = ""
    slots: tuple[str, ...] = ()
    counts_steps = False

    def __init__(self, params: dict[str, np.ndarray], weight_decay: float):
        for key, array in params.items():
            if not (isinstance(array, np.ndarray) and array.dtype == np.float32 and array.flags.c_contiguous
                    and array.flags.writeable):
                raise ValueError(f"parameter '{key}' must be a writeable C-contiguous float32 array (it is "
                                 "updated in place)")
        self.params = dict(params)
        self.weight_decay = _non_negative("weight_decay", weight_decay)
        self.step_count = 0
        self.buffers = {(slot, key): np.zeros_like(array) for slot in self.slots for key, array in params.items()}
        self.param_steps = {key: 0 for key in params} if self.counts_steps else {}

    def step(self, grads: dict[str, np.ndarray], lr: float) -> None:
        """One update of every parameter in `grads` at learning rate `lr`; the others are left alone."""
        lr = _non_negative("lr", lr)
        for key, grad in grads.items():
            if key not in self.params:
                raise ValueError(f"a gradient for '{key}', which is not one of the optimizer's parameters")
            param = self.params[key]
            grad = np.ascontiguousarray(grad, dtype=np.float32)  # (no copy for exe.grad's own arrays)
            if grad.shape != param.shape:
                raise ValueError(f"the gradient of '{key}' has shape {list(grad.shape)}; the parameter's is "
                                 f"{list(param.shape)}")
            if self.counts_steps:
                self.param_steps[key] += 1
            self._update(key, param.reshape(-1), grad.reshape(-1), lr)
        self.step_count += 1

    def _update(self, key: str, w: np.ndarray, g: np.ndarray, lr: float) -> None:
        raise NotImplementedError

    def _flat(self, slot: str, key: str) -> np.ndarray:
        return self.buffers[slot, key].reshape(-1)

    def state(self) -> dict[str, np.ndarray]:
        """The tensors to checkpoint: the live buffers (read-only views, so write them out before the
        next step), and the step counts."""
        state = {}
        for (slot, key), array in self.buffers.items():
            view = array.view()
            view.flags.writeable = False
            state[f"{slot}/{key}"] = view
        return state | {f"step/{key}": np.array([t], np.float32) for key, t in self.param_steps.items()}

    def load_state(self, tensors: dict[str, np.ndarray], step_count: int) -> None:
        """Restore `state()`'s tensors (copied into the buffers) and the step count; a ValueError,
        changing nothing, for a state that does not fit."""
        if isinstance(step_count, bool) or not isinstance(step_count, (int, np.integer)) or step_count < 0:
            raise ValueError(f"step_count must be a non-negative integer, got {step_count!r}")
        buffers = {f"{slot}/{key}": (slot, key) for slot, key in self.buffers}
        steps = {f"step/{key}": key for key in self.param_steps}
        missing = sorted((buffers.keys() | steps.keys()) - tensors.keys())
        unexpected = sorted(tensors.keys() - buffers.keys() - steps.keys())
        if missing or unexpected:
            parts = ([f"missing {_some(missing)}"] if missing else []) + \
                    ([f"unexpected {_some(unexpected)}"] if unexpected else [])
            raise ValueError(f"the {self.name} optimizer's state does not fit: {'; '.join(parts)}")
        for name, where in buffers.items():
            value = np.asarray(tensors[name])
            if value.shape != self.buffers[where].shape:
                raise ValueError(f"optimizer state '{name}' has shape {list(value.shape)}; expected "
                                 f"{list(self.buffers[where].shape)}")
            if value.dtype.kind != "f":
                raise ValueError(f"optimizer state '{name}' has dtype {value.dtype}; expected float32")
        for name in steps:
            t = np.asarray(tensors[name])
            if t.size != 1 or t.dtype.kind not in "fiu" or not (t >= 0 and t == np.floor(t)):
                raise ValueError(f"optimizer state '{name}' must be a non-negative whole number, got {t.tolist()}")
        for name, where in buffers.items():
            np.copyto(self.buffers[where], tensors[name], casting="same_kind")
        self.param_steps = {key: int(np.asarray(tensors[name]).reshape(())) for name, key in steps.items()}
        self.step_count = int(step_count)


class SGD(Optimizer):
    name = "sgd"

    def __init__(self, params, momentum: float, nesterov: bool, weight_decay: float):
        self.momentum = _non_negative("momentum", momentum)
        if nesterov and self.momentum == 0:
            raise ValueError("nesterov needs a momentum above 0")
        self.nesterov = bool(nesterov)
        self.slots = ("momentum_buffer",) if self.momentum else ()
        super().__init__(params, weight_decay)
        self._unused = np.empty(0, np.float32)  # (the buffer argument without momentum)

    def _update(self, key, w, g, lr):
        buf = self._flat("momentum_buffer", key) if self.momentum else self._unused
        f32 = np.float32
        _sgd_update(w, g, buf, f32(lr), f32(self.weight_decay), f32(self.momentum), self.nesterov)


class Adam(Optimizer):
    """Adam; with `decoupled`, AdamW (weight decay applied to the weights, not added to the gradient)."""

    slots = ("exp_avg", "exp_avg_sq")
    counts_steps = True

    def __init__(self, params, betas: tuple[float, float], eps: float, weight_decay: float, decoupled: bool):
        if len(betas) != 2 or not all(0.0 <= float(b) < 1.0 for b in betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {tuple(betas)}")
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps = _non_negative("eps", eps)
        self.decoupled = decoupled
        self.name = "adamw" if decoupled else "adam"
        super().__init__(params, weight_decay)

    def _update(self, key, w, g, lr):
        t = self.param_steps[key]
        beta1, beta2 = self.betas
        f32 = np.float32
        weight = f32(1 - beta1)  # torch's lerp weight, and its branch (is_lerp_weight_small)
        from_grad = not abs(weight) < 0.5
        # torch's Python floats, rounded to float32 where its kernels take them
        _adam_update(w, g, self._flat("exp_avg", key), self._flat("exp_avg_sq", key),
                     f32(1 - lr * self.weight_decay) if self.decoupled else f32(1),
                     f32(0) if self.decoupled else f32(self.weight_decay),
                     weight - f32(1) if from_grad else weight, from_grad, f32(beta2), f32(1 - beta2),
                     f32((1 - beta2 ** t) ** 0.5), f32(self.eps), f32(-(lr / (1 - beta1 ** t))))


def make_optimizer(name: str, params: dict[str, np.ndarray], *, momentum: float = 0.0, nesterov: bool = False,
                   weight_decay: float = 0.0, betas: tuple[float, float] = (0.9, 0.999),
                   eps: float = 1e-8) -> Optimizer:
    """The optimizer `name` (OPTIMIZERS) over `params`, the trainable weights (updated in place).
    Settings another optimizer takes are ignored (momentum and nesterov by Adam, betas and eps by SGD)."""
    if name == "sgd":
        return SGD(params, momentum, nesterov, weight_decay)
    if name in ("adam", "adamw"):
        return Adam(params, betas, eps, weight_decay, decoupled=name == "adamw")
    raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}")


def learning_rate(schedule: str, base_lr: float, step: int, *, steps_per_epoch: int, epochs: int,
                  warmup: float = 0.0, step_size: int | None = None, gamma: float = 0.1) -> float:
    """The learning rate of step `step` (0-based, the step about to be taken) of a run of `epochs`
    epochs of `steps_per_epoch` steps: a linear warm-up over the first round(warmup·steps_per_epoch)
    steps (base·(step+1)/W), then `schedule`:
      constant  base_lr
      step      base_lr·gamma^(epoch // step_size), the epoch counted from the run's start (StepLR
                stepped once an epoch); step_size defaults to max(1, epochs // 3)
      cosine    base_lr·(1 + cos(π·(step − W)/(T − W)))/2 down to 0 at the run's last step T
                (CosineAnnealingLR with T_max = T − W, stepped every step after the warm-up)"""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; known: {', '.join(SCHEDULES)}")
    base_lr = _non_negative("base_lr", base_lr)
    for label, value in (("steps_per_epoch", steps_per_epoch), ("epochs", epochs)) + \
            ((("step_size", step_size),) if step_size is not None else ()):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{label} must be a positive integer, got {value!r}")
    total = epochs * steps_per_epoch
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or not 0 <= step < total:
        raise ValueError(f"step must be an integer in [0, {total}) ({epochs} epochs of {steps_per_epoch} steps), "
                         f"got {step!r}")
    warm = round(_non_negative("warmup", warmup) * steps_per_epoch)
    if warm >= total:
        raise ValueError(f"the warm-up ({warmup} epochs, {warm} steps) must be shorter than the run "
                         f"({epochs} epochs, {total} steps)")
    if not (math.isfinite(gamma) and gamma > 0):
        raise ValueError(f"gamma must be a positive number, got {gamma!r}")
    if step < warm:
        return base_lr * (step + 1) / warm
    if schedule == "constant":
        return base_lr
    if schedule == "step":
        return base_lr * gamma ** ((step // steps_per_epoch) // (step_size or max(1, epochs // 3)))
    return base_lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / (total - warm)))


def _non_negative(label: str, value: float) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{label} must be a non-negative number, got {value!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{label} must be a non-negative number, got {value!r}")
    return value


def _some(names: list[str], shown: int = 3) -> str:
    """A few of `names` quoted, and how many more."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(f"'{n}'" for n in names[:shown]) + more
