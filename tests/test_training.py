"""Training graphs and `exe.grad` (passes/autodiff.py, backends/executor.py): the graph's shape,
the gradients against finite differences through the whole network, the memory plan, and bad input
refused before anything runs. Whole zoo networks against PyTorch: tests/test_zoo_gradients.py."""
from __future__ import annotations

import numpy as np
import pytest

import netspec
from netspec.backends.executor import InputError
from netspec.passes.autodiff import TrainingError
from netspec.passes.memory import plan_memory
from netspec.weights import init_weights

# every kind of node a gradient has to get through: a residual add, a squeeze-excitation mul with its
# broadcast, concat, batch norm in train mode, pooling, dropout, a reshape, two layers reading one tensor
SMALL = """
netspec: 1
name: small
input: {shape: [3, 8, 8]}
layers:
  - {op: conv2d, name: stem, out: 4, kernel: 3, padding: 1, bias: false}  # (batch norm cancels a bias)
  - {op: batchnorm2d, name: bn}
  - {op: relu, name: act}
  - {op: conv2d, name: branch, out: 4, kernel: 3, padding: 1, bias: false}
  - {op: add, name: res, in: [branch, act]}
  - {op: global_avgpool, name: squeeze}
  - {op: conv2d, name: excite, out: 4, kernel: 1}
  - {op: sigmoid, name: gate}
  - {op: mul, name: scaled, in: [res, gate]}
  - {op: maxpool2d, name: pool, in: scaled, kernel: 2, ceil_mode: true}
  - {op: avgpool2d, name: avg, in: res, kernel: 2}
  - {op: concat, name: cat, in: [pool, avg]}
  - {op: dropout, name: drop, p: $p}
  - {op: flatten, name: flat}
  - {op: linear, name: fc, out: 5}
params: {p: 0.0}
"""


def _compile(load_spec, backend="reference", p=0.0, loss="cross_entropy", seed=0, text=SMALL):
    graph = load_spec(text, params={"p": p}) if "$p" in text else load_spec(text)
    weights = init_weights(graph, seed)
    return netspec.compile(graph, backend=backend, mode="train", weights=weights, loss=loss, seed=seed), weights


def _batch(n=3, classes=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 3, 8, 8)).astype(np.float32), rng.integers(0, classes, n)


def test_grad_gives_a_gradient_per_trainable_parameter_keyed_like_the_weights(load_spec):
    exe, weights = _compile(load_spec)
    x, y = _batch()
    loss, grads = exe.grad(x, y)
    assert isinstance(loss, float) and np.isfinite(loss)
    trainable = {k for k in weights if not k.endswith(("running_mean", "running_var"))}
    assert set(grads) == trainable
    for key, g in grads.items():
        assert g.shape == weights[key].shape and g.dtype == np.float32, key
        assert np.abs(g).max() > 0, f"{key}: no gradient reached it"


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_gradients_equal_pytorch_autograd(load_spec, backend):
    """Every parameter's gradient, the input's and the running statistics after the step, against
    PyTorch's autograd on the same weights and batch (tests/torch_twin.py, in float64)."""
    torch = pytest.importorskip("torch")
    from torch_twin import torch_forward, torch_weights
    graph = load_spec(SMALL, params={"p": 0.0})
    weights = init_weights(graph, 0)
    x, y = _batch(4)
    tw = torch_weights(graph, weights)
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    logits = torch_forward(graph, tw, xt, train=True)["fc"]
    expected = torch.nn.functional.cross_entropy(logits, torch.tensor(y))
    expected.backward()
    exe = netspec.compile(graph, backend=backend, mode="train", weights=dict(weights), loss="cross_entropy")
    loss, grads = exe.grad(x, y, wrt_input=True)
    assert loss == pytest.approx(expected.item(), rel=1e-5)
    for key, g in grads.items():
        want = (xt if key == "input" else tw[key]).grad.numpy()
        assert np.abs(g - want).max() <= 1e-4 * np.abs(want).max(), key
    for key in ("bn.running_mean", "bn.running_var"):
        np.testing.assert_allclose(exe.weights[key], tw[key].numpy(), rtol=1e-5, atol=1e-6)


def test_wrt_input_adds_the_input_gradient(load_spec):
    exe, _ = _compile(load_spec)
    x, y = _batch()
    _, grads = exe.grad(x, y, wrt_input=True)
    assert grads["input"].shape == x.shape
    _, without = exe.grad(x, y)
    assert "input" not in without


def test_dropout_backward_uses_the_forward_mask(load_spec):
    """With p = 0.5 the loss and gradients change from step to step (a fresh mask), and each step's
    gradient is that of its own mask: the same seed and step give the same numbers again."""
    exe, weights = _compile(load_spec, p=0.5)
    again, _ = _compile(load_spec, p=0.5)
    x, y = _batch()
    first, g1 = exe.grad(x, y)
    second, g2 = exe.grad(x, y)
    assert first != second
    assert not np.allclose(g1["fc.weight"], g2["fc.weight"])
    replay, g3 = again.grad(x, y)
    assert replay == first
    np.testing.assert_array_equal(g1["fc.weight"], g3["fc.weight"])
    # a dropped feature gets no gradient into fc's weights: its column is zero for every sample's mask
    assert (np.abs(g1["fc.weight"]).sum(axis=0) == 0).any()


def test_batchnorm_running_statistics_update_once_per_step(load_spec):
    exe, weights = _compile(load_spec)
    before = weights["bn.running_mean"].copy()
    x, y = _batch()
    exe.grad(x, y)
    after = exe.weights["bn.running_mean"]
    assert not np.allclose(before, after)
    momentum = 0.1  # the default: after one step the running mean moved a tenth of the way to the batch mean
    conv = netspec.compile(netspec.Graph(exe.graph.name, exe.graph.inputs, exe.graph.nodes[:1], ["stem"]),
                           backend="reference", weights={k: v for k, v in weights.items() if k.startswith("stem.")})
    batch_mean = conv.run(x)["stem"].astype(np.float64).mean(axis=(0, 2, 3))
    np.testing.assert_allclose(after, (1 - momentum) * before + momentum * batch_mean, rtol=1e-5, atol=1e-6)


def test_training_graph_is_planned_and_releases_activations(load_spec):
    exe, _ = _compile(load_spec)
    graph = exe.training_graph()
    names = [n.name for n in graph.nodes]
    assert graph.outputs[0] == "loss" and "∇fc.weight" in graph.outputs and "∇stem.weight" in graph.outputs
    assert "∇res" in names and any(n.startswith("∇res#") for n in names)  # res is read twice: two parts, summed
    plan = plan_memory(graph, 32)
    assert plan.arena < plan.unplanned  # buffers reused in the backward half as in the forward
    # a conv's input gradient reads only dy and the weights: the forward values it does not need are not inputs
    node = graph.node("∇act#1") if "∇act#1" in names else graph.node("∇act")
    assert node.op in ("grad", "add")


def test_segmentation_cross_entropy_and_ignore_index(load_spec):
    text = """
    netspec: 1
    name: seg
    input: {shape: [3, 6, 6]}
    layers:
      - {op: conv2d, name: c1, out: 4, kernel: 3, padding: 1}
      - {op: relu}
      - {op: conv2d, name: head, out: 3, kernel: 1}
    """
    graph = load_spec(text)
    weights = init_weights(graph, 0)
    exe = netspec.compile(graph, backend="reference", mode="train", weights=weights,
                          loss={"op": "cross_entropy", "ignore_index": 255})
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    labels = rng.integers(0, 3, (2, 6, 6))
    loss, grads = exe.grad(x, labels, wrt_input=True)
    ignored = labels.copy()
    ignored[:, :3] = 255  # the top half ignored: the loss is over the bottom half only
    loss_half, grads_half = exe.grad(x, ignored, wrt_input=True)
    assert loss_half != loss
    # a pixel's input gradient comes only from outputs whose receptive field reaches a counted label
    assert np.abs(grads_half["input"][:, :, 0]).max() == 0
    assert np.abs(grads_half["input"][:, :, 5]).max() > 0


def test_mse_on_any_output(load_spec):
    exe, _ = _compile(load_spec, loss="mse")
    x, _ = _batch()
    target = np.zeros((3, 5), np.float32)
    loss, grads = exe.grad(x, target)
    out = netspec.compile(exe.graph, backend="reference", mode="train", weights=exe.weights).run(x)["fc"]
    assert loss == pytest.approx(float((out.astype(np.float64) ** 2).mean()), rel=1e-5)


@pytest.mark.parametrize("labels,words", [
    (np.zeros((3, 1), np.int64), "labels have shape 3×1; expected 3"),
    (np.zeros(4, np.int64), "labels have shape 4; expected 3"),
    (np.zeros(3, np.float32), "labels must be integers"),
    (np.array([0, 5, 1]), "1 label(s) outside [0, 5)"),
    (np.array([0, -1, 1]), "outside [0, 5)"),
    ([0, 1, 2], "labels must be a numpy array"),
])
def test_bad_labels_are_refused_before_anything_runs(load_spec, labels, words):
    exe, weights = _compile(load_spec)
    before = {k: v.copy() for k, v in exe.weights.items()}
    x, _ = _batch()
    with pytest.raises(InputError, match=None) as e:
        exe.grad(x, labels)
    assert words in str(e.value)
    for k, v in before.items():  # nothing ran: the running statistics are untouched
        np.testing.assert_array_equal(exe.weights[k], v)
    assert exe.steps == 0


def test_losses_that_do_not_fit_are_refused_at_compile(load_spec):
    text = """
    netspec: 1
    name: convhead
    input: {shape: [3, 8, 8]}
    layers:
      - {op: conv2d, name: c, out: 10, kernel: 3, padding: 1}
      - {op: global_avgpool, name: pooled}
    """
    graph = load_spec(text)
    with pytest.raises(TrainingError, match="a 1×1 map is not a segmentation; add {op: flatten}"):
        netspec.compile(graph, backend="reference", mode="train", loss="cross_entropy")
    with pytest.raises(TrainingError, match="unknown loss 'hinge'; available: cross_entropy, mse"):
        netspec.compile(graph, backend="reference", mode="train", loss="hinge")
    with pytest.raises(TrainingError, match="label_smoothing"):
        netspec.compile(graph, backend="reference", mode="train", loss={"op": "cross_entropy", "label_smoothing": 2})
    with pytest.raises(ValueError, match="compile with mode='train'"):
        netspec.compile(graph, backend="reference", loss="mse")


def test_several_outputs_need_a_loss_each(load_spec):
    text = """
    netspec: 1
    name: two_heads
    input: {shape: [3, 8, 8]}
    layers:
      - {op: conv2d, name: c, out: 4, kernel: 3, padding: 1}
      - {op: flatten, name: flat}
      - {op: linear, name: cls, in: flat, out: 3}
      - {op: linear, name: box, in: flat, out: 4}
    outputs: [cls, box]
    """
    graph = load_spec(text)
    with pytest.raises(TrainingError, match="2 outputs \\(cls, box\\): name a loss for each"):
        netspec.compile(graph, backend="reference", mode="train", loss="cross_entropy")
    with pytest.raises(TrainingError, match="no loss named for output 'box'"):
        netspec.compile(graph, backend="reference", mode="train", loss={"cls": "cross_entropy"})
    exe = netspec.compile(graph, backend="reference", mode="train", loss={"cls": "cross_entropy", "box": "mse"})
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    targets = {"cls": np.array([0, 2]), "box": np.zeros((2, 4), np.float32)}
    loss, grads = exe.grad(x, targets)

    def head(keep):
        nodes = [n for n in graph.nodes if n.name in ("c", "flat", keep)]
        return netspec.compile(netspec.Graph(graph.name, graph.inputs, nodes, [keep]), backend="reference",
                               mode="train", weights={k: v for k, v in exe.weights.items() if k.split(".")[0] in
                                                      ("c", keep)}, loss="cross_entropy" if keep == "cls" else "mse")
    cls_only, box_only = head("cls"), head("box")
    l1, g1 = cls_only.grad(x, targets["cls"])
    l2, g2 = box_only.grad(x, targets["box"])
    assert loss == pytest.approx(l1 + l2, rel=1e-6)  # the total is the sum, and so are the shared gradients
    np.testing.assert_allclose(grads["c.weight"], g1["c.weight"] + g2["c.weight"], rtol=1e-4, atol=1e-6)
    with pytest.raises(InputError, match="pass the targets as a dict"):
        exe.grad(x, targets["cls"])


def test_cli_compile_train_dumps_the_backward(cli, write_spec):
    write_spec(SMALL)
    r = cli("compile", "spec.yaml", "--mode", "train", "--dump-passes")
    assert r.code == 0, r.err
    assert "autodiff: 0 removed" in r.err
    assert "∇stem.weight = grad(∇stem, input) {∂conv2d/∂weight of stem}" in r.out
    assert "loss = cross_entropy(fc, target)" in r.out
    r = cli("compile", "spec.yaml", "--loss", "mse")
    assert r.code == 2 and "--loss is for --mode train" in r.err


def test_cli_summary_train_reports_the_training_step(cli, write_spec):
    write_spec(SMALL)
    r = cli("summary", "spec.yaml", "--mode", "train", "--batch", "32")
    assert r.code == 0, r.err
    assert "Training:    planned step peak" in r.out and "for the forward pass alone" in r.out
    r = cli("summary", "spec.yaml", "--mode", "train", "--batch", "32", "--json")
    import json
    totals = json.loads(r.out)["totals"]
    assert totals["training_step_bytes"] > totals["planned_peak_bytes"] > 0
