"""`netspec run` and `netspec weights init` as a user meets them: images and .npy batches in, and for
every mistake (wrong input, missing or mismatched weights, unwritable output) one clear line and a
non-zero exit, never a traceback, and nothing of the user's overwritten."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from netspec.inputs import load_input
from netspec.weights import init_weights, save_weights

from conftest import TINY_SPEC

SPEC = TINY_SPEC


def assert_clean_failure(result, *words):
    assert result.code != 0, result
    assert "Traceback" not in result.err and "internal error" not in result.err, result.err
    for w in words:
        assert w in result.err, result.err


def test_run_random_batch_prints_shape_topk_and_time(cli, write_spec):
    write_spec(SPEC)
    r = cli("run", "spec.yaml", "--batch", "3", "--backend", "cpu", "--repeat", "2")
    assert r.code == 0, r.err
    assert "input 3×3×12×12 (random, seed 0)" in r.out
    assert "output fc: 3×7" in r.out
    assert "top-5 classes (first of 3 samples):" in r.out
    assert "time per batch:" in r.out and "median of 2 runs" in r.out


def test_run_npy_and_output(cli, write_spec, workdir):
    write_spec(SPEC)
    x = np.random.default_rng(0).standard_normal((2, 3, 12, 12)).astype(np.float32)
    np.save(workdir / "x.npy", x)
    r = cli("run", "spec.yaml", "--input", "x.npy", "--output", "y.npy")
    assert r.code == 0, r.err
    y = np.load(workdir / "y.npy")
    assert y.shape == (2, 7)
    again = cli("run", "spec.yaml", "--input", "x.npy", "--output", "y2.npy", "--backend", "reference")
    assert again.code == 0
    np.testing.assert_allclose(np.load(workdir / "y2.npy"), y, rtol=1e-4, atol=1e-4)


def test_single_sample_npy_is_a_batch_of_one(cli, write_spec, workdir):
    write_spec(SPEC)
    np.save(workdir / "x.npy", np.zeros((3, 12, 12), np.float32))
    r = cli("run", "spec.yaml", "--input", "x.npy")
    assert r.code == 0 and "input 1×3×12×12" in r.out


def test_image_is_resized_and_normalized_as_the_spec_declares(load_spec, workdir):
    graph = load_spec(SPEC)
    pixels = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(workdir / "cat.png")
    x = load_input(str(workdir / "cat.png"), graph, batch=2, seed=0)
    assert x.shape == (2, 3, 12, 12) and x.dtype == np.float32
    # aspect kept: 40×30 → 16×12 (covering 12×12), then the centre 12 columns
    resized = np.asarray(Image.fromarray(pixels).resize((16, 12), Image.BILINEAR), np.float32)[:, 2:14] / 255
    expected = (resized.transpose(2, 0, 1) - np.array([0.5, 0.4, 0.3])[:, None, None]) \
        / np.array([0.2, 0.25, 0.5])[:, None, None]
    np.testing.assert_allclose(x[0], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(x[0], x[1])


def test_run_on_an_image(cli, write_spec, workdir):
    write_spec(SPEC)
    Image.fromarray(np.full((20, 20, 3), 128, np.uint8)).save(workdir / "grey.jpg")
    r = cli("run", "spec.yaml", "--input", "grey.jpg")
    assert r.code == 0, r.err
    assert "output fc: 1×7" in r.out


@pytest.mark.parametrize("array,words", [
    (np.zeros((2, 3, 10, 12), np.float32), ["shape 2×3×10×12", "expected N×3×12×12"]),
    (np.zeros((2, 3, 12, 12), np.int32), ["dtype int32"]),
    (np.zeros((12, 12), np.float32), ["rank 2"]),
    (np.full((1, 3, 12, 12), np.inf, np.float32), ["NaN or Inf"]),
])
def test_bad_input_arrays(cli, write_spec, workdir, array, words):
    write_spec(SPEC)
    np.save(workdir / "x.npy", array)
    assert_clean_failure(cli("run", "spec.yaml", "--input", "x.npy"), *words)


@pytest.mark.parametrize("content,words", [(b"garbage", ["is not a .npy array file"]), (None, ["no such file"])])
def test_unreadable_inputs(cli, write_spec, workdir, content, words):
    write_spec(SPEC)
    if content is not None:
        (workdir / "x.npy").write_bytes(content)
    assert_clean_failure(cli("run", "spec.yaml", "--input", "x.npy"), *words)


def test_not_an_image(cli, write_spec, workdir):
    write_spec(SPEC)
    (workdir / "fake.png").write_bytes(b"this is no png")
    assert_clean_failure(cli("run", "spec.yaml", "--input", "fake.png"), "cannot read image")


def test_weights_init_then_run(cli, write_spec, workdir):
    write_spec(SPEC)
    r = cli("weights", "init", "spec.yaml", "-o", "w.safetensors", "--seed", "4")
    assert r.code == 0 and "4 tensors" in r.out
    assert cli("run", "spec.yaml", "--weights", "w.safetensors").code == 0
    # never overwrite the user's file without --force
    before = (workdir / "w.safetensors").read_bytes()
    assert_clean_failure(cli("weights", "init", "spec.yaml", "-o", "w.safetensors", "--seed", "5"), "--force")
    assert (workdir / "w.safetensors").read_bytes() == before
    assert cli("weights", "init", "spec.yaml", "-o", "w.safetensors", "--seed", "5", "--force").code == 0
    assert (workdir / "w.safetensors").read_bytes() != before


def test_missing_and_mismatched_weights(cli, write_spec, load_spec, workdir):
    graph = load_spec(SPEC)
    assert_clean_failure(cli("run", "spec.yaml", "--weights", "nope.safetensors"), "cannot read weights")
    w = init_weights(graph)
    del w["fc.bias"]
    w["conv.weight"] = np.zeros((4, 3, 5, 5), np.float32)
    save_weights(w, workdir / "bad.safetensors")
    assert_clean_failure(cli("run", "spec.yaml", "--weights", "bad.safetensors"),
                         "missing 1 key(s): fc.bias", "conv.weight: shape [4, 3, 5, 5]")


def test_unwritable_output(cli, write_spec, workdir):
    write_spec(SPEC)
    assert_clean_failure(cli("run", "spec.yaml", "--output", "no/such/dir/y.npy"), "cannot write")
    (workdir / "y.npy").write_bytes(b"mine")
    assert_clean_failure(cli("run", "spec.yaml", "--output", "y.npy"), "already exists")
    assert (workdir / "y.npy").read_bytes() == b"mine"


def test_train_mode_batchnorm_on_one_value_is_a_clear_error(cli, write_spec):
    write_spec("""
        input: {shape: [3, 4, 4]}
        layers:
          - {op: global_avgpool}
          - {op: batchnorm2d}
        """)
    for backend in ("cpu", "reference"):
        assert_clean_failure(cli("run", "spec.yaml", "--mode", "train", "--backend", backend),
                             "more than one value per channel")


def test_written_files_get_ordinary_permissions(cli, write_spec, workdir):
    import os
    write_spec(SPEC)
    assert cli("run", "spec.yaml", "--output", "y.npy").code == 0
    assert cli("weights", "init", "spec.yaml", "-o", "w.safetensors").code == 0
    umask = os.umask(0)
    os.umask(umask)
    for name in ("y.npy", "w.safetensors"):
        assert (workdir / name).stat().st_mode & 0o777 == 0o666 & ~umask
