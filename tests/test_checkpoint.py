"""PyTorch checkpoints: `netspec weights import` maps a state_dict (.safetensors, or .pt/.pth with torch)
onto a spec: torchvision names as they are, other names through a mapping file; mismatches are listed
key by key and nothing is written."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import netspec
from netspec.weights import init_weights, param_specs, read_weights

SPECS = Path(__file__).resolve().parent.parent / "specs"

# The netspec twin of the small PyTorch network below, with torchvision-style names.
SMALL_SPEC = """
name: small
input: {shape: [3, 12, 12]}
layers:
  - {op: conv2d, name: conv1, out: 8, kernel: 3, padding: 1, bias: false}
  - {op: batchnorm2d, name: bn1}
  - {op: relu, name: relu}
  - name: features
    layers:
      - {op: conv2d, out: 8, kernel: 3, stride: 2, padding: 1, groups: 2}
      - {op: batchnorm2d}
      - {op: relu6}
  - {op: global_avgpool, name: avgpool}
  - {op: flatten, name: flatten}
  - {op: linear, name: fc, out: 5}
"""


def _torch_model(torch):
    nn = torch.nn

    class Small(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(8)
            self.relu = nn.ReLU()
            self.features = nn.Sequential(nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=2), nn.BatchNorm2d(8),
                                          nn.ReLU6())
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(8, 5)

        def forward(self, x):
            x = self.features(self.relu(self.bn1(self.conv1(x))))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    torch.manual_seed(0)
    model = Small()
    with torch.no_grad():  # non-trivial batch-norm statistics and affine parameters
        for bn in (model.bn1, model.features[1]):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 1.5)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
    return model.eval()


@pytest.fixture
def torch_case(write_spec, workdir):
    torch = pytest.importorskip("torch")
    model = _torch_model(torch)
    torch.save(model.state_dict(), workdir / "small.pt")
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(workdir / "small.safetensors"))
    write_spec(SMALL_SPEC, "small.yaml")
    x = np.random.default_rng(0).standard_normal((2, 3, 12, 12), dtype=np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    return model, x, expected


@pytest.mark.parametrize("checkpoint", ["small.pt", "small.safetensors"])
def test_pytorch_checkpoint_runs_like_pytorch(cli, torch_case, checkpoint, workdir):
    model, x, expected = torch_case
    r = cli("weights", "import", checkpoint, "-o", "w.safetensors", "--spec", "small.yaml")
    assert r.code == 0, r.err
    assert "ignored 2 num_batches_tracked" in r.out
    graph = netspec.load("small.yaml")
    out = netspec.compile(graph, backend="cpu", weights="w.safetensors", progress=False).run(x)["fc"]
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


def test_mapping_file(cli, torch_case, workdir):
    torch = pytest.importorskip("torch")
    model, x, expected = torch_case
    renamed = {}
    for key, value in model.state_dict().items():  # another naming scheme: a `net.` prefix, `head` for fc
        key = key.replace("features.", "body.").replace("fc.", "head.")
        renamed["net." + key] = value
    torch.save(renamed, workdir / "other.pth")
    (workdir / "map.yaml").write_text(
        "rename: {net.head.weight: fc.weight, net.head.bias: fc.bias}\n"
        "regex:\n  - ['^net\\.', '']\n  - ['^body\\.', 'features.']\n")
    r = cli("weights", "import", "other.pth", "-o", "w.safetensors", "--spec", "small.yaml", "--map", "map.yaml")
    assert r.code == 0, r.err
    graph = netspec.load("small.yaml")
    out = netspec.compile(graph, backend="cpu", weights="w.safetensors", progress=False).run(x)["fc"]
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
    # without the mapping, every key is named and nothing is written
    r = cli("weights", "import", "other.pth", "-o", "w2.safetensors", "--spec", "small.yaml")
    assert r.code == 1 and "Traceback" not in r.err
    assert "missing 13 key(s): conv1.weight" in r.err and "unexpected 13 key(s): net.conv1.weight" in r.err
    assert not (workdir / "w2.safetensors").exists()


def _fake_checkpoint(graph, seed=1):
    """A state_dict as torchvision would save it: netspec's parameters plus num_batches_tracked buffers."""
    weights = init_weights(graph, seed)
    state = dict(weights)
    for key in weights:
        if key.endswith(".running_mean"):
            state[key[: -len("running_mean")] + "num_batches_tracked"] = np.array(100, np.int64)
    return weights, state


def test_mismatches_are_reported_key_by_key(write_spec, cli, workdir):
    from safetensors.numpy import save_file
    graph = netspec.load(write_spec(SMALL_SPEC, "small.yaml"))
    weights, state = _fake_checkpoint(graph)
    del state["bn1.bias"]
    state["fc.weight"] = np.zeros((7, 8), np.float32)
    state["classifier.weight"] = np.zeros((5, 8), np.float32)
    save_file(state, str(workdir / "bad.safetensors"))
    r = cli("weights", "import", "bad.safetensors", "-o", "w.safetensors", "--spec", "small.yaml")
    assert r.code == 1 and "Traceback" not in r.err
    assert "missing 1 key(s): bn1.bias" in r.err
    assert "unexpected 1 key(s): classifier.weight" in r.err
    assert "fc.weight: shape [7, 8], the spec needs [5, 8]" in r.err
    assert not (workdir / "w.safetensors").exists()


def test_torchvision_resnet18_names_map_without_a_mapping(cli, workdir):
    """resnet18's keys and shapes (as torchvision names them, num_batches_tracked included), without torch."""
    from safetensors.numpy import save_file
    graph = netspec.load(SPECS / "resnet18.yaml")
    weights, state = _fake_checkpoint(graph)
    assert len(state) == 122  # torchvision resnet18's state_dict: 102 tensors + 20 num_batches_tracked
    for key in ("conv1.weight", "bn1.running_var", "layer1.0.conv1.weight", "layer2.0.downsample.0.weight",
                "layer2.0.downsample.1.num_batches_tracked", "layer4.1.bn2.bias", "fc.weight", "fc.bias"):
        assert key in state
    assert state["layer3.0.downsample.0.weight"].shape == (256, 128, 1, 1)
    assert state["fc.weight"].shape == (1000, 512)
    save_file(state, str(workdir / "resnet18.safetensors"))
    r = cli("weights", "import", "resnet18.safetensors", "-o", "r18.safetensors", "--spec", SPECS / "resnet18.yaml")
    assert r.code == 0, r.err
    assert "102 tensors" in r.out and "ignored 20 num_batches_tracked" in r.out
    loaded = read_weights(workdir / "r18.safetensors")
    assert loaded.keys() == param_specs(graph).keys()
    for key, value in weights.items():
        np.testing.assert_array_equal(loaded[key], value)


def test_bad_checkpoints_are_one_line_errors(write_spec, cli, workdir, monkeypatch):
    write_spec(SMALL_SPEC, "small.yaml")

    def fails(*words, args=()):
        r = cli("weights", "import", *args, "-o", "w.safetensors", "--spec", "small.yaml")
        assert r.code != 0 and "Traceback" not in r.err and len(r.err.strip().splitlines()) == 1, r.err
        for w in words:
            assert w in r.err, r.err
        assert not (workdir / "w.safetensors").exists()

    fails("no such file", args=["missing.pt"])
    (workdir / "junk.safetensors").write_bytes(b"junk")
    fails("not a valid safetensors file", args=["junk.safetensors"])
    (workdir / "ckpt.npz").write_bytes(b"")
    fails("unknown checkpoint format", args=["ckpt.npz"])
    (workdir / "map.yaml").write_text("renames: {a: b}\n")
    (workdir / "ok.safetensors").write_bytes(b"")
    fails("unknown key(s) renames", args=["ok.safetensors", "--map", "map.yaml"])
    (workdir / "map.yaml").write_text("regex: [['(', 'x']]\n")
    fails("regex rule 1", args=["ok.safetensors", "--map", "map.yaml"])
    (workdir / "junk.pt").write_bytes(b"not a checkpoint")
    import builtins
    real_import = builtins.__import__

    def no_torch(name, *a, **k):  # as if torch were not installed
        if name == "torch" or name.startswith("torch."):
            raise ImportError("No module named 'torch'")
        return real_import(name, *a, **k)

    with monkeypatch.context() as patch:
        patch.setattr(builtins, "__import__", no_torch)
        fails("needs PyTorch", ".safetensors", args=["junk.pt"])
    (workdir / "exists.safetensors").write_bytes(b"")
    r = cli("weights", "import", "missing.pt", "-o", "exists.safetensors", "--spec", "small.yaml")
    assert r.code == 2 and "already exists" in r.err
