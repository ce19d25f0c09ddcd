"""`netspec train` and `netspec.train`: the loop, the run folder, resume, faults, the spec's `train:`
section and the command line. (Data sources: test_train_data.py; optimizers: test_optim.py; whether
real networks learn: test_train_learns.py.)"""
from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import netspec
from netspec.passes.autodiff import TrainingError
from netspec.spec.errors import SpecError
from netspec.training import loop
from netspec.training.augment import max_shift, shift
from netspec.training.loop import TrainingStopped
from netspec.training.run_folder import COLUMNS, RunFolder, RunFolderError
from netspec.weights import init_weights, load_weights, read_weights

ROOT = Path(__file__).resolve().parent.parent

# batch norm (running statistics to keep), dropout (randomness to replay on resume), a max pool
TINY = """\
netspec: 1
name: tiny
input: {shape: [1, 8, 8]}
layers:
  - {op: conv2d, name: conv, out: 4, kernel: 3, padding: 1}
  - {op: batchnorm2d, name: bn}
  - {op: relu, name: act}
  - {op: maxpool2d, name: pool, kernel: 2}
  - {op: flatten, name: flat}
  - {op: dropout, name: drop, p: 0.2}
  - {op: linear, name: fc, out: 3}
"""


def quadrants(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A 3-class problem a tiny network learns in a few epochs: the class is the bright quadrant."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.standard_normal((n, 1, 8, 8)).astype(np.float32) * 0.5
    for i, label in enumerate(y):
        r, c = divmod(int(label), 2)
        x[i, 0, 4 * r:4 * r + 4, 4 * c:4 * c + 4] += 2.0
    return x, y


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return path


def test_a_run_learns_and_leaves_its_folder(tiny, tmp_path):
    graph = netspec.load(tiny)
    run = tmp_path / "run"
    history = netspec.train(graph, quadrants(240), run, epochs=4, backend="reference", lr=0.05, progress=False)
    assert [row["epoch"] for row in history.rows] == [1, 2, 3, 4]
    assert history.best["val_accuracy"] >= 0.9 and history.rows[-1]["train_loss"] < history.rows[0]["train_loss"]
    assert history.best_epoch == max(history.rows, key=lambda r: (r["val_accuracy"], -r["epoch"]))["epoch"]
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == COLUMNS and len(rows) == 4
    assert float(rows[-1]["val_accuracy"]) == pytest.approx(history.rows[-1]["val_accuracy"], rel=1e-5)
    assert (run / "classes.txt").read_text().split() == ["0", "1", "2"]
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the weights files are what the rest of netspec reads: every key of the spec (both modes)
    best = load_weights(run / "best.safetensors", graph)
    last = load_weights(run / "checkpoint.safetensors", graph)
    assert set(best) == set(last) == set(init_weights(graph))
    assert not np.array_equal(last["bn.running_mean"], np.zeros(4))  # the running statistics were kept


def _interrupted_then_resumed(graph, data, folder, at_epoch: int, settings: dict, monkeypatch):
    """A run stopped (Ctrl-C) as epoch `at_epoch` begins, then resumed to its end: its History."""
    real_epoch = loop._Run.epoch

    def interrupted(self, epoch):
        if epoch == at_epoch:
            raise KeyboardInterrupt
        real_epoch(self, epoch)
    monkeypatch.setattr(loop._Run, "epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        netspec.train(graph, data, folder, **settings)
    monkeypatch.setattr(loop._Run, "epoch", real_epoch)
    return netspec.train(graph, data, folder, resume=True, **settings)


def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(tiny, tmp_path, monkeypatch):
    """Bit for bit on the reference backend: the data order, dropout's masks, the optimizer's state,
    batch norm's running statistics and the schedule all continue where they were."""
    graph = netspec.load(tiny)
    data = quadrants(96)
    settings = dict(epochs=3, batch=16, backend="reference", optimizer="adam", lr=0.01, progress=False)
    whole = netspec.train(graph, data, tmp_path / "whole", **settings)
    resumed = _interrupted_then_resumed(graph, data, tmp_path / "split", 3, settings, monkeypatch)
    a, b = read_weights(tmp_path / "whole/checkpoint.safetensors"), read_weights(tmp_path / "split/checkpoint.safetensors")
    assert all(np.array_equal(a[k], b[k]) for k in a)
    strip = [{k: v for k, v in row.items() if k != "seconds"} for row in whole.rows]
    assert [{k: v for k, v in row.items() if k != "seconds"} for row in resumed.rows] == strip


def test_resume_on_the_cpu_matches_to_1e_6(tiny, tmp_path, monkeypatch):
    graph = netspec.load(tiny)
    data = quadrants(96)
    settings = dict(epochs=2, batch=16, lr=0.05, progress=False)
    netspec.train(graph, data, tmp_path / "whole", **settings)
    _interrupted_then_resumed(graph, data, tmp_path / "split", 2, settings, monkeypatch)
    a, b = read_weights(tmp_path / "whole/checkpoint.safetensors"), read_weights(tmp_path / "split/checkpoint.safetensors")
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=1e-6, atol=1e-7, err_msg=k)


def _cli(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "netspec", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=600)


def test_sigkill_mid_epoch_leaves_the_last_checkpoint_whole_and_resumable(tiny, tmp_path):
    x, y = quadrants(3000)
    np.savez(tmp_path / "data.npz", x=x, y=y)
    run = tmp_path / "run"
    args = ["train", tiny, "--data", tmp_path / "data.npz", "-o", run, "--epochs", 4, "--batch", 8,
            "--backend", "reference", "--lr", 0.02]
    process = subprocess.Popen([sys.executable, "-m", "netspec", *map(str, args)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while not (run / "state.safetensors").exists() and time.time() < deadline and process.poll() is None:
            time.sleep(0.02)
        time.sleep(0.3)  # into the next epoch
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL, process.stderr.read()  # killed before it finished
    weights, _, meta = RunFolder(run).read_state()
    assert 1 <= meta["epoch"] < 4
    checkpoint = load_weights(run / "checkpoint.safetensors", netspec.load(tiny))  # whole: it loads
    assert all(np.array_equal(checkpoint[k], weights[k]) for k in checkpoint)
    resumed = _cli(*args[:-2], "--resume")  # (--lr as the run had it: a resumed run keeps its settings)
    assert resumed.returncode == 0, resumed.stderr
    assert f"epoch {meta['epoch'] + 1}/4" in resumed.stdout and "epoch 1/4" not in resumed.stdout
    whole = tmp_path / "whole"
    assert _cli(*[a if a != run else whole for a in args]).returncode == 0
    a, b = read_weights(whole / "checkpoint.safetensors"), read_weights(run / "checkpoint.safetensors")
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not [p for p in os.listdir(run) if p.endswith(".tmp")]


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tiny, tmp_path):
    graph = netspec.load(tiny)
    run = tmp_path / "run"
    # epoch 2's learning rate is 1e299: the weights overflow at its first step, the loss at its second
    with pytest.raises(TrainingStopped, match=r"the loss became (nan|inf) at epoch 2, step \d+ of \d+ \(step \d+ of "
                                              r"the run\); the last good checkpoint \(epoch 1\) is kept"):
        netspec.train(graph, quadrants(96), run, epochs=3, batch=16, backend="reference", schedule="step",
                      step_size=1, gamma=1e300, lr=0.1, progress=False)
    _, _, meta = RunFolder(run).read_state()
    assert meta["epoch"] == 1
    weights = load_weights(run / "checkpoint.safetensors", graph)  # (finite: check_weights refuses NaN)
    assert all(np.isfinite(w).all() for w in weights.values())


def test_an_existing_run_folder_is_never_overwritten_without_force_or_resume(tiny, tmp_path):
    np.savez(tmp_path / "d.npz", *(), **dict(zip("xy", quadrants(48))))
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    base = ["train", tiny, "--data", tmp_path / "d.npz", "-o", run, "--epochs", 1, "--backend", "reference"]
    refused = _cli(*base)
    assert refused.returncode == 1 and "already exists and is not empty; pass --resume" in refused.stderr
    assert os.listdir(run) == ["notes.txt"]
    nothing = _cli(*base, "--resume")
    assert nothing.returncode == 1 and "holds no run to resume" in nothing.stderr
    forced = _cli(*base, "--force")
    assert forced.returncode == 0, forced.stderr
    assert (run / "notes.txt").read_text() == "mine" and (run / "checkpoint.safetensors").exists()
    changed = _cli(*base, "--resume", "--lr", 0.5)
    assert changed.returncode == 1 and "started with lr = 0.01" in changed.stderr
    finished = _cli(*base, "--resume")
    assert finished.returncode == 0 and "already finished its 1 epochs" in finished.stdout
    longer = _cli(*base[:-4], "--epochs", 2, "--backend", "reference", "--resume")
    assert longer.returncode == 0 and "epoch 2/2" in longer.stdout and "epoch 1/2" not in longer.stdout
    assert len((run / "metrics.csv").read_text().splitlines()) == 3


def test_command_line_errors_are_clear(tiny, tmp_path):
    no_folder = _cli("train", tiny, "--data", "digits")
    assert no_folder.returncode == 2 and "-o RUN_DIR" in no_folder.stderr
    no_data = _cli("train", tiny, "-o", tmp_path / "r")
    assert no_data.returncode == 1 and "no data to train on" in no_data.stderr
    missing = _cli("train", tiny, "--data", tmp_path / "nowhere", "-o", tmp_path / "r")
    assert missing.returncode == 1 and "nowhere" in missing.stderr and "internal error" not in missing.stderr
    assert not (tmp_path / "r").exists()  # (checked before the run folder is made)
    betas = _cli("train", tiny, "--data", "digits", "-o", tmp_path / "r", "--betas", "0.9")
    assert betas.returncode == 2 and "--betas expects two numbers" in betas.stderr
    np.savez(tmp_path / "values.npz", x=quadrants(20)[0], y=np.zeros((20, 3), np.float32))
    task = _cli("train", tiny, "--data", tmp_path / "values.npz", "-o", tmp_path / "r2", "--backend", "reference")
    assert task.returncode == 1 and "the data hold target values, but output 'fc'" in task.stderr


def test_settings_come_from_the_spec_then_the_command_line(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(TINY + "train: {epochs: 2, batch: 16, optimizer: adam, lr: 0.02, label_smoothing: 0.1}\n")
    graph = netspec.load(spec)
    assert graph.train == {"epochs": 2, "batch": 16, "optimizer": "adam", "lr": 0.02, "label_smoothing": 0.1}
    settings = loop.resolve_settings(graph, {"lr": 0.5, "epochs": None})
    assert (settings["epochs"], settings["optimizer"], settings["lr"], settings["momentum"]) == (2, "adam", 0.5, 0.9)
    losses, spec_of = loop._losses(graph, settings)
    assert spec_of["fc"]["label_smoothing"] == 0.1
    history = netspec.train(graph, quadrants(64), backend="reference", progress=False, epochs=1)
    assert len(history.rows) == 1
    with pytest.raises(TrainingError, match="lr: Input should be greater than 0"):
        loop.resolve_settings(graph, {"lr": -1})
    with pytest.raises(TrainingError, match="unknown training setting"):
        loop.resolve_settings(graph, {"learning_rate": 0.1})


def test_a_bad_train_section_is_an_error_where_it_is_written(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(TINY + "train:\n  epochs: 0\n  optimizer: adagrad\n")
    with pytest.raises(SpecError) as e:
        netspec.load(spec)
    text = e.value.format()
    assert f"{spec}:13:11: error" in text and f"{spec}:14:14: error: expected 'sgd', 'adam' or 'adamw'" in text
    spec.write_text(TINY + "train:\n  loss: {head: mse}\n")
    with pytest.raises(SpecError, match=r"s\.yaml:13:9: error: loss named for 'head', which is not an output"):
        netspec.load(spec)


def test_an_extension_may_set_train_and_wins_over_its_base(tmp_path):
    (tmp_path / "base.yaml").write_text(TINY + "train: {epochs: 3, lr: 0.5}\n")
    (tmp_path / "ext.yaml").write_text("netspec: 1\nextends: base.yaml\ntrain: {epochs: 7}\n")
    assert netspec.load(tmp_path / "ext.yaml").train == {"epochs": 7, "lr": 0.5}


def test_the_json_schema_describes_train():
    from netspec.spec.jsonschema import spec_json_schema
    schema = spec_json_schema()
    text = str(schema)
    assert "train" in schema["properties"] and "label_smoothing" in text and "adamw" in text


def test_auxiliary_heads_train_with_their_weight_and_leave_eval_mode(tmp_path):
    spec = tmp_path / "two.yaml"
    spec.write_text("""\
netspec: 1
input: {shape: [1, 8, 8]}
layers:
  - {op: conv2d, name: conv, out: 4, kernel: 3, padding: 1}
  - {op: relu, name: act}
  - {op: flatten, name: flat}
  - {op: linear, name: main, out: 3}
  - {op: linear, name: aux, in: flat, out: 3, mode: train}
outputs: [main, aux]
train:
  loss: {main: cross_entropy, aux: {op: cross_entropy, weight: 0.3}}
""")
    graph = netspec.load(spec)
    x, y = quadrants(32)
    weights = init_weights(graph)
    exe = netspec.compile(graph, backend="reference", mode="train", weights=dict(weights), loss=graph.train["loss"])
    loss, outputs, _ = exe.forward_backward(x, {"main": y, "aux": y})
    from netspec.ops import get
    ce = get("cross_entropy")
    parts = [float(ce.reference(ce.attrs.model_validate({}), [outputs[o].astype(np.float64), y], {}, None)[0])
             for o in ("main", "aux")]
    assert loss == pytest.approx(parts[0] + 0.3 * parts[1], rel=1e-6)
    history = netspec.train(graph, (x, y), tmp_path / "run", epochs=2, backend="reference", progress=False)
    assert history.rows[-1]["val_accuracy"] is not None
    assert "aux.weight" in read_weights(tmp_path / "run/best.safetensors")


def test_trained_weights_go_everywhere_run_and_onnx_runtime(tmp_path):
    """LeNet-5 on the digits: `netspec run` takes the weights, and the ONNX export run by ONNX Runtime
    scores the validation split as the run did."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("sklearn")
    from netspec.training.data import open_data
    spec = ROOT / "specs/lenet5.yaml"
    graph = netspec.load(spec)
    run = tmp_path / "run"
    history = netspec.train(graph, "digits", run, epochs=2, progress=False)
    best = run / "best.safetensors"
    ran = _cli("run", spec, "--weights", best)
    assert ran.returncode == 0 and "top-5 classes" in ran.stdout
    model = tmp_path / "lenet5.onnx"
    exported = _cli("export", spec, "--onnx", model, "--weights", best, "--batch", "dynamic")
    assert exported.returncode == 0, exported.stderr
    _, val = open_data("digits", graph, val_split=graph.train.get("val_split", 0.2))
    x, y = val.take(np.arange(val.count))
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    logits = session.run(None, {session.get_inputs()[0].name: x})[0]
    assert (logits.argmax(1) == y).mean() == pytest.approx(history.best["val_accuracy"], abs=1e-12)


def test_run_folder_refuses_a_file_and_a_damaged_state(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(RunFolderError, match="is a file, not a run folder"):
        RunFolder(tmp_path / "f").check(resume=False, force=False)
    (tmp_path / "r").mkdir()
    (tmp_path / "r/state.safetensors").write_bytes(b"garbage")
    with pytest.raises(RunFolderError, match="cannot resume"):
        RunFolder(tmp_path / "r").read_state()


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 4), c=st.integers(1, 3), h=st.integers(2, 12), w=st.integers(2, 12),
       seed=st.integers(0, 2**32 - 1))
def test_shift_moves_each_image_within_its_limit(n, c, h, w, seed):
    """Sample i is its original moved by the i-th (dy, dx) drawn from the generator, within the limit,
    the uncovered border filled with the sample's mean."""
    x = np.random.default_rng(seed).standard_normal((n, c, h, w)).astype(np.float32)
    limit = max_shift(h, w)
    assert 1 <= limit <= max(1, min(h, w) // 16)
    moved = shift(x, np.random.default_rng(seed), limit)
    moves = np.random.default_rng(seed).integers(-limit, limit + 1, size=(n, 2))
    assert moved.shape == x.shape and moved.dtype == x.dtype
    for i, (dy, dx) in enumerate(moves):
        want = np.full_like(x[i], x[i].mean())
        want[:, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
            x[i][:, max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
        np.testing.assert_array_equal(moved[i], want)


def test_augment_is_for_classification_and_on_the_command_line(tiny, tmp_path):
    masks = np.zeros((8, 8, 8), np.int64)
    seg = tmp_path / "seg.yaml"
    seg.write_text("netspec: 1\ninput: {shape: [1, 8, 8]}\nlayers:\n  - {op: conv2d, out: 2, kernel: 3, padding: 1}\n")
    with pytest.raises(TrainingError, match="augment: shift moves images, not their masks"):
        netspec.train(netspec.load(seg), (quadrants(8)[0], masks), augment="shift", backend="reference", progress=False)
    np.savez(tmp_path / "d.npz", x=quadrants(48)[0], y=quadrants(48)[1])
    ran = _cli("train", tiny, "--data", tmp_path / "d.npz", "-o", tmp_path / "run", "--epochs", 1, "--augment", "shift",
               "--backend", "reference")
    assert ran.returncode == 0, ran.stderr
    _, _, meta = RunFolder(tmp_path / "run").read_state()
    assert meta["settings"]["augment"] == "shift"
