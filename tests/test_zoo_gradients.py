"""Whole zoo networks against PyTorch: one training step's loss, every parameter's gradient, the input's
gradient and the batch-norm running statistics from `exe.grad`, against autograd through the same network
rebuilt with torch.nn.functional (tests/torch_twin.py) in float64, the judge of netspec's float32.

The bar: per tensor, max|netspec - torch| / max|torch| ≤ 1e-4 (the worst seen is ~4e-5, GoogLeNet's, about
what torch's own float32 gets). Three things keep that bar about float32 rounding and nothing else:
- ReLU branches and max-pool winners are netspec's own (its forward values from a probe run): where float32
  and float64 decide otherwise within rounding of a kink, a whole term of a gradient moves (up to 6e-2 here
  otherwise; tests/torch_twin.py's doc);
- batch norm's parameters are drawn (init_weights leaves scale 1, shift 0, statistics 0 and 1): a shift of
  0 makes some gradients vanish but for eps, and a BN-ReLU stack at initialization with half its ReLUs shut
  amplifies rounding several times more than one with a positive shift;
- a gradient that is exactly zero in exact arithmetic (a bias followed by batch norm, through a
  convolution) is judged against the largest gradient of its node: only rounding is left there.
Resolutions, batches and class counts are reduced to keep this file to about a minute on 2 cores (kernels
compiled); every architecture is kept. Dropout runs with p = 0 (torch cannot draw netspec's masks).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import netspec  # noqa: E402
from netspec.weights import init_weights, param_specs  # noqa: E402
from torch_twin import RULES, kink_inputs, torch_forward, torch_loss, torch_weights  # noqa: E402

SPECS = Path(__file__).resolve().parent.parent / "specs"
TOLERANCE = 1e-4
ZERO = 1e-9  # a float64 gradient this far below its node's largest is zero but for rounding


@dataclass(frozen=True)
class Case:
    spec: str
    params: dict = field(default_factory=dict)
    batch: int = 2
    variant: str | None = None
    loss: str = "cross_entropy"


CASES = {
    "lenet5": Case("lenet5.yaml", batch=4),
    "alexnet": Case("alexnet.yaml", {"resolution": 63, "num_classes": 10, "dropout": 0}),  # its smallest input
    "vgg11": Case("vgg16.yaml", {"resolution": 32, "num_classes": 10, "dropout": 0}, variant="vgg11"),
    "googlenet": Case("googlenet.yaml", {"resolution": 64, "num_classes": 10, "dropout": 0}, batch=8),
    "resnet18": Case("resnet18.yaml", {"resolution": 64, "num_classes": 10}, batch=4),
    "resnet50": Case("resnet50.yaml", {"resolution": 64, "num_classes": 10}, batch=4),
    "mobilenet_v1": Case("mobilenet_v1.yaml", {"resolution": 64, "num_classes": 10}, batch=4),
    "efficientnet_b0": Case("efficientnet.yaml", {"resolution": 64, "num_classes": 10, "dropout": 0}, batch=4),
    "unet": Case("unet.yaml", {"resolution": 64}),  # per-pixel cross-entropy, N×H×W labels
    "yolov1": Case("yolov1.yaml", {"resolution": 64, "dropout": 0}, loss="mse"),  # 64: a 1×1 map before the fc
}


def load(case: Case):
    graph = netspec.load(SPECS / case.spec, variant=case.variant, params=case.params)
    for node in graph.active("train").nodes:  # torch cannot draw netspec's dropout masks
        assert node.op != "dropout" or node.attrs.p == 0, f"{node.name}: dropout p = {node.attrs.p}, not 0"
    return graph


def draw_weights(graph, seed: int = 0) -> dict[str, np.ndarray]:
    """init_weights, with batch norm's scale and running variance in [0.5, 1.5], running mean N(0, 0.1²) and
    shift N(0.5, 0.1²): nothing the step or the running update could get right by accident, and a shift that
    keeps most ReLUs open (see the module's doc)."""
    weights = init_weights(graph, seed)
    rng = np.random.default_rng(seed + 1)
    draw = {"weight": lambda shape: rng.uniform(0.5, 1.5, shape),
            "running_var": lambda shape: rng.uniform(0.5, 1.5, shape),
            "bias": lambda shape: 0.5 + 0.1 * rng.standard_normal(shape),
            "running_mean": lambda shape: 0.1 * rng.standard_normal(shape)}
    for node in graph.nodes:
        if node.op != "batchnorm2d":
            continue
        for p, sample in draw.items():
            key = f"{node.name}.{p}"
            if key in weights:
                weights[key] = sample(weights[key].shape).astype(np.float32)
    return weights


def batch(graph, n: int, loss: str, seed: int = 0):
    """x ~ N(0, 1), and the loss's target: labels (per pixel for a segmentation), or N(0, 1) values."""
    rng = np.random.default_rng(seed)
    (dims,) = [t.dims for t in graph.inputs.values()]
    x = rng.standard_normal((n,) + dims, dtype=np.float32)
    out = graph.active("train").type_of(graph.active("train").outputs[0]).dims
    if loss == "mse":
        return x, rng.standard_normal((n,) + out).astype(np.float32)
    return x, rng.integers(0, out[0], (n,) + out[1:])


def netspec_values(graph, weights, x, backend: str, names) -> dict[str, np.ndarray]:
    """netspec's train-mode forward values of `names` (a probe run of the same graph with them as outputs)."""
    names = list(dict.fromkeys(names))
    inputs = [n for n in names if n in graph.inputs]
    outputs = list(dict.fromkeys(graph.outputs + [n for n in names if n not in inputs]))
    probe = graph.replace_nodes(graph.nodes, outputs=outputs)
    exe = netspec.compile(probe, backend=backend, mode="train", weights=copy(weights), progress=False)
    values = exe.run(x)
    values.update({n: x for n in inputs})
    return values


def copy(weights):
    return {k: v.copy() for k, v in weights.items()}


@dataclass
class Judge:
    """torch's float64 step on the same network, weights and batch."""

    loss: float
    grads: dict[str, np.ndarray]
    input_grad: np.ndarray
    weights: dict[str, np.ndarray]  # after the step: the running statistics updated


def torch_step(graph, weights, x, y, loss: str, pinned=None, dtype=torch.float64) -> Judge:
    tw = torch_weights(graph, weights, dtype=dtype)
    xt = torch.tensor(x, dtype=dtype, requires_grad=True)
    out = torch_forward(graph, tw, xt, train=True, pinned=pinned)
    value = torch_loss(loss, out[graph.active("train").outputs[0]], torch.from_numpy(y))
    value.backward()
    grads = {k: t.grad.double().numpy() for k, t in tw.items() if t.requires_grad}
    return Judge(value.item(), grads, xt.grad.double().numpy(), {k: t.detach().double().numpy() for k, t in tw.items()})


def gradient_errors(grads: dict[str, np.ndarray], judge: dict[str, np.ndarray]) -> dict[str, float]:
    """Per tensor, max|grad - judge| / max|judge|; for a gradient that is zero but for rounding, over the
    largest gradient of its node instead."""
    largest = {key: float(np.abs(g).max()) for key, g in judge.items()}
    node_scale: dict[str, float] = {}
    for key, m in largest.items():
        node = key.rsplit(".", 1)[0]
        node_scale[node] = max(node_scale.get(node, 0.0), m)
    errors = {}
    for key, g in judge.items():
        node = key.rsplit(".", 1)[0]
        scale = largest[key] if largest[key] > ZERO * node_scale[node] else node_scale[node]
        diff = grads[key].astype(np.float64)
        diff -= g  # in place: VGG's first fully connected layer alone is 100M values
        errors[key] = float(np.abs(diff, out=diff).max()) / max(scale, 1e-300)
    return errors


def statistics_errors(weights: dict[str, np.ndarray], judge: dict[str, np.ndarray]) -> dict[str, float]:
    """Per running statistic after the step: the variance relative to its largest; the mean relative to the
    larger of its largest and the spread (√variance) it is an average of: a mean can be 0 but for rounding."""
    errors = {}
    for key, ref in judge.items():
        if key.endswith(".running_var"):
            errors[key] = float(np.abs(weights[key] - ref).max() / np.abs(ref).max())
        elif key.endswith(".running_mean"):
            spread = np.sqrt(judge[key[:-len("mean")] + "var"].max())
            errors[key] = float(np.abs(weights[key] - ref).max() / max(np.abs(ref).max(), spread))
    return errors


def worst(errors: dict[str, float], n: int = 5) -> str:
    return ", ".join(f"{k} {e:.2e}" for k, e in sorted(errors.items(), key=lambda kv: -kv[1])[:n])


def check_step(graph, n: int, loss_name: str = "cross_entropy", backend: str = "cpu", wrt_input: bool = False):
    """One training step of `graph` on a batch of n, netspec's against torch's: pytest.fail naming the worst
    tensors beyond the bar. Returns the errors (per parameter, and "input" with wrt_input)."""
    weights = draw_weights(graph)
    x, y = batch(graph, n, loss_name)
    exe = netspec.compile(graph, backend=backend, mode="train", weights=copy(weights), loss=loss_name, progress=False)
    loss, grads = exe.grad(x, y, wrt_input=wrt_input)
    pinned = netspec_values(graph, weights, x, backend, kink_inputs(graph, train=True).values())
    judge = torch_step(graph, weights, x, y, loss_name, pinned)

    trainable = {k for k, spec in param_specs(graph).items() if spec.trainable}
    assert set(grads) == trainable | ({"input"} if wrt_input else set())
    for key in trainable:
        assert grads[key].shape == weights[key].shape and grads[key].dtype == np.float32, key
    assert abs(loss - judge.loss) <= TOLERANCE * abs(judge.loss), (loss, judge.loss)

    errors = gradient_errors({k: grads[k] for k in trainable}, judge.grads)
    if wrt_input:
        errors["input"] = float(np.abs(grads["input"] - judge.input_grad).max() / np.abs(judge.input_grad).max())
    stats = statistics_errors(exe.weights, judge.weights)
    bad = {k: e for k, e in {**errors, **stats}.items() if not e <= TOLERANCE}
    if bad:
        # torch's own float32 with the same branches: near it, the network (not netspec) is what loses digits
        own = torch_step(graph, weights, x, y, loss_name, pinned, dtype=torch.float32)
        own_errors = gradient_errors(own.grads, judge.grads)
        pytest.fail(f"{len(bad)} of {len(errors) + len(stats)} tensors beyond {TOLERANCE:g}: {worst(bad)}\n"
                    f"(torch float32 against the same judge: {worst(own_errors, 3)})")
    return errors


def check_case(name: str, backend: str = "cpu", wrt_input: bool = False) -> dict[str, float]:
    case = CASES[name]
    return check_step(load(case), case.batch, case.loss, backend, wrt_input)


@pytest.mark.parametrize("name", list(CASES))
def test_training_step_matches_pytorch(name):
    check_case(name)


@pytest.mark.parametrize("name", ["lenet5", "resnet18"])
def test_reference_backend_matches_pytorch(name):
    # batch 2: the numpy convolutions are slow, and float64 inside every op keeps ResNet-18 at ~1e-6 even so
    case = CASES[name]
    check_step(load(case), 2, case.loss, backend="reference")


@pytest.mark.parametrize("name", ["lenet5", "mobilenet_v1"])
def test_input_gradient_matches_pytorch(name):
    assert "input" in check_case(name, wrt_input=True)


# every op the twin knows, in the forms the zoo does not use: an asymmetric 'same' padding, a dilated grouped
# conv, a depthwise conv with a channel multiplier, a grouped transposed conv with output_padding, ceil-mode
# pools with padding, count_include_pad off, LRN, maxout, center_crop, a 3-way add, softmax on axis 2
EVERY_OP = """
netspec: 1
name: every_op
input: {shape: [4, 12, 12]}
layers:
  - {op: conv2d, name: same, out: 8, kernel: 4, padding: same}
  - {op: relu6, name: r6}
  - {op: conv2d, name: dil, out: 8, kernel: 3, padding: 2, dilation: 2, groups: 2, bias: false}
  - {op: elu, name: elu, alpha: 0.7}
  - {op: conv2d, name: dw, out: 16, kernel: 3, stride: 2, padding: 1, groups: 8}
  - {op: hardswish, name: hs}
  - {op: maxout, name: mo, pieces: 2}
  - {op: conv_transpose2d, name: up, out: 8, kernel: 3, stride: 2, padding: 1, output_padding: 1, groups: 2}
  - {op: leaky_relu, name: lk, slope: 0.2}
  - {op: lrn, name: lrn, size: 3, alpha: 0.01, beta: 0.75, k: 2.0}
  - {op: maxpool2d, name: mp, kernel: 3, stride: 2, padding: 1, ceil_mode: true}
  - {op: avgpool2d, name: ap, in: lrn, kernel: 3, stride: 2, padding: 1, ceil_mode: true, count_include_pad: false}
  - {op: center_crop, name: crop, in: lrn, size: 7}
  - {op: add, name: sum, in: [mp, ap, crop]}
  - {op: batchnorm2d, name: bn}
  - {op: relu, name: act}
  - {op: global_avgpool, name: squeeze}
  - {op: conv2d, name: excite, out: 8, kernel: 1}
  - {op: sigmoid, name: gate}
  - {op: mul, name: scaled, in: [act, gate]}
  - {op: adaptive_avgpool2d, name: bins, size: 3}
  - {op: avgpool2d, name: ap2, in: act, kernel: 3, stride: 2}
  - {op: concat, name: cat, in: [bins, ap2]}
  - {op: identity, name: same_again}
  - {op: dropout, name: drop, p: 0.0}
  - {op: reshape, name: rows, shape: [16, 9]}
  - {op: softmax, name: soft, axis: 2}
  - {op: flatten, name: flat}
  - {op: linear, name: fc1, out: 10}
  - {op: tanh, name: t}
  - {op: silu, name: s}
  - {op: linear, name: fc2, out: 5}
"""


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_every_op_matches_pytorch(load_spec, backend):
    graph = load_spec(EVERY_OP)
    assert {n.op for n in graph.nodes} == set(RULES)  # every rule of the twin
    check_step(graph, 3, backend=backend, wrt_input=True)


# the zoo's variants, forward only: their ops (LRN, center_crop, ...) are in the every-op test's training step
VARIANTS = {
    "alexnet_original": Case("alexnet.yaml", {"resolution": 67, "num_classes": 10}, variant="original"),
    "googlenet_paper": Case("googlenet.yaml", {"resolution": 64, "num_classes": 10}, variant="paper"),
    "inception_v2": Case("inception_v2.yaml", {"resolution": 64, "num_classes": 10}),
    "unet_original": Case("unet.yaml", {"resolution": 188}, batch=1, variant="original"),
}


@pytest.mark.parametrize("name", list(CASES) + list(VARIANTS))
def test_eval_forward_matches_pytorch(name):
    """The twin's own check: inference (running statistics, dropout off) agrees with netspec's."""
    case = CASES.get(name) or VARIANTS[name]
    graph = netspec.load(SPECS / case.spec, variant=case.variant, params=case.params)
    weights = draw_weights(graph)
    x, _ = batch(graph, case.batch, case.loss)
    out = netspec.compile(graph, backend="cpu", weights=copy(weights), progress=False).run(x)
    with torch.no_grad():
        ref = torch_forward(graph, torch_weights(graph, weights, requires_grad=False), torch.from_numpy(x).double(),
                            train=False)
    for output, value in ref.items():
        value = value.numpy()
        assert np.abs(out[output] - value).max() <= TOLERANCE * np.abs(value).max(), output
