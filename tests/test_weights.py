"""Weights: deterministic initialization, spec overrides, safetensors round trips, and files that
do not fit the spec (every problem named, nothing half-loaded)."""
from __future__ import annotations

import numpy as np
import pytest

import netspec
import netspec.weights as weights_module
from netspec.weights import (WeightsError, check_weights, init_weights, load_weights, param_specs, read_weights,
                             save_weights)

SPEC = """
input: {shape: [3, 16, 16]}
layers:
  - {op: conv2d, name: conv, out: 8, kernel: 3, padding: 1}
  - {op: batchnorm2d, name: bn}
  - {op: relu}
  - {op: global_avgpool}
  - {op: flatten}
  - {op: linear, name: fc, out: 5, init: {weight: {normal: 0.01}, bias: 0.5}}
"""


@pytest.fixture
def graph(load_spec):
    return load_spec(SPEC)


def test_keys_follow_node_paths_and_defaults(graph):
    w = init_weights(graph, seed=0)
    assert set(w) == {"conv.weight", "conv.bias", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var",
                      "fc.weight", "fc.bias"}
    assert w["conv.weight"].shape == (8, 3, 3, 3) and w["conv.weight"].dtype == np.float32
    # Kaiming/He normal: std = sqrt(2 / fan_in), fan_in = 3·3·3 (loose: 216 samples)
    assert abs(w["conv.weight"].std() - np.sqrt(2 / 27)) < 0.25 * np.sqrt(2 / 27)
    assert not w["conv.bias"].any()
    assert (w["bn.weight"] == 1).all() and not w["bn.bias"].any()
    assert not w["bn.running_mean"].any() and (w["bn.running_var"] == 1).all()


def test_spec_init_overrides(graph):
    w = init_weights(graph, seed=0)
    assert (w["fc.bias"] == 0.5).all()
    assert 0.003 < w["fc.weight"].std() < 0.03


def test_initialization_is_deterministic_and_per_key(graph, load_spec):
    a, b, c = init_weights(graph, 0), init_weights(graph, 0), init_weights(graph, 1)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["conv.weight"], c["conv.weight"])
    # Each parameter has its own stream: adding a layer before fc leaves fc's weights unchanged.
    bigger = load_spec(SPEC.replace("  - {op: global_avgpool}", "  - {op: conv2d, name: extra, out: 8, kernel: 1}\n"
                                    "  - {op: global_avgpool}"), name="bigger.yaml")
    assert np.array_equal(init_weights(bigger, 0)["conv.weight"], a["conv.weight"])


def test_safetensors_round_trip(graph, tmp_path):
    w = init_weights(graph, 3)
    path = tmp_path / "w.safetensors"
    save_weights(w, path)
    loaded = load_weights(path, graph)
    assert set(loaded) == set(w) and all(np.array_equal(loaded[k], w[k]) for k in w)


def test_mismatches_are_named_key_by_key(graph, tmp_path):
    w = init_weights(graph, 0)
    del w["bn.bias"]
    w["conv.weight"] = np.zeros((8, 3, 5, 5), np.float32)
    w["fc.bias"] = np.zeros(5, np.int32)
    w["stray.weight"] = np.zeros(1, np.float32)
    with pytest.raises(WeightsError) as info:
        check_weights(graph, w)
    text = str(info.value)
    for expected in ("missing 1 key(s): bn.bias", "unexpected 1 key(s): stray.weight",
                     "conv.weight: shape [8, 3, 5, 5], the spec needs [8, 3, 3, 3]", "fc.bias: dtype int32"):
        assert expected in text, text


def test_nan_weights_are_refused(graph):
    w = init_weights(graph, 0)
    w["fc.weight"][0, 0] = np.nan
    with pytest.raises(WeightsError, match="fc.weight: contains NaN"):
        check_weights(graph, w)


@pytest.mark.parametrize("content", [b"", b"not a safetensors file at all", b"\xff" * 64])
def test_corrupt_file_gives_a_clear_error(tmp_path, content):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(WeightsError, match="not a valid safetensors file"):
        read_weights(path)


def test_missing_file(tmp_path):
    with pytest.raises(WeightsError, match="cannot read weights"):
        read_weights(tmp_path / "nope.safetensors")


def test_a_bad_file_never_half_loads(graph, tmp_path):
    """compile() with a mismatched file fails as a whole: no executable with partial weights."""
    w = init_weights(graph, 0)
    w["fc.weight"] = w["fc.weight"][:2]
    path = tmp_path / "w.safetensors"
    save_weights(w, path)
    with pytest.raises(WeightsError):
        netspec.compile(graph, backend="reference", weights=str(path))


def test_failed_save_keeps_the_existing_file(graph, tmp_path):
    path = tmp_path / "w.safetensors"
    path.write_bytes(b"precious")
    with pytest.raises(Exception):
        save_weights({"x": object()}, path)  # not an array: serialization fails before writing
    assert path.read_bytes() == b"precious"


def test_param_specs_cover_every_mode(load_spec):
    g = load_spec("""
        input: {shape: [3, 8, 8]}
        layers:
          - {op: conv2d, name: a, out: 4, kernel: 1}
          - {op: batchnorm2d, name: train_bn, mode: train}
        """)
    assert "train_bn.running_var" in param_specs(g)


def test_negative_variance_is_refused(graph):
    w = init_weights(graph, 0)
    w["bn.running_var"][1] = -1.0
    with pytest.raises(WeightsError, match="bn.running_var: has negative values"):
        check_weights(graph, w)


def test_a_pytorch_checkpoint_given_as_weights_gets_a_hint(tmp_path):
    path = tmp_path / "model.pth"
    path.write_bytes(b"PK\x03\x04")
    with pytest.raises(WeightsError, match="netspec weights import"):
        read_weights(path)


# --- long key listings (issue #29, 7) ---------------------------------------------------------------

def _write_in_order(path, arrays: dict[str, np.ndarray]) -> None:
    """A safetensors file whose tensors lie in the dict's order (safetensors' own writer sorts them)."""
    import json
    header, blobs, offset = {}, [], 0
    for key, value in arrays.items():
        data = np.ascontiguousarray(value, np.float32).tobytes()
        header[key] = {"dtype": "F32", "shape": list(value.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(len(text).to_bytes(8, "little") + text + b"".join(blobs))


def test_unexpected_keys_follow_the_file_and_missing_ones_the_spec(graph, tmp_path):
    stray = ["z.weight", "a.weight", "m.bias"]
    w = {k: v for k, v in init_weights(graph, 0).items() if k.startswith("fc.")}
    path = tmp_path / "w.safetensors"
    _write_in_order(path, {stray[0]: np.zeros(1)} | w | {stray[1]: np.zeros(1), stray[2]: np.zeros(1)})
    assert list(read_weights(path)) == [stray[0], "fc.weight", "fc.bias", stray[1], stray[2]]
    with pytest.raises(WeightsError) as info:
        load_weights(path, graph)
    text = str(info.value)
    assert "unexpected 3 key(s): z.weight, a.weight, m.bias" in text
    assert "missing 6 key(s): conv.weight, conv.bias, bn.weight, bn.bias, bn.running_mean, bn.running_var" in text


def test_long_key_lists_are_grouped_by_prefix_with_counts(graph):
    """A DenseNet-sized mismatch reads as a dozen groups, not 580 names."""
    from netspec.weights import _listing
    keys = ["features.conv0.weight"] + [f"features.norm0.{p}" for p in ("weight", "bias", "running_mean", "running_var")]
    for b, n in enumerate([6, 12, 24, 16], 1):
        keys += [f"features.denseblock{b}.denselayer{k}.{m}.weight" for k in range(1, n + 1) for m in ("norm1", "conv1")]
    keys += ["classifier.weight", "classifier.bias"]
    assert _listing(keys) == ("features.conv0.weight, features.norm0.* (4), features.denseblock1.* (12), "
                              "features.denseblock2.* (24), features.denseblock3.* (48), features.denseblock4.* (32), "
                              "classifier.* (2)")
    assert _listing(keys[:3]) == "features.conv0.weight, features.norm0.weight, features.norm0.bias"
    many = [f"layer{k}.weight" for k in range(40)]  # no common prefix: the first groups and a count
    assert _listing(many).endswith(", ... (24 more)") and _listing(many).startswith("layer0.weight, layer1.weight")
    w = init_weights(graph, 0)
    w.update({key: np.zeros(1, np.float32) for key in keys})
    with pytest.raises(WeightsError) as info:
        check_weights(graph, w)
    assert f"unexpected {len(keys)} key(s): features.conv0.weight, features.norm0.* (4), " in str(info.value)


def test_large_parameters_draw_in_fixed_chunks_that_do_not_depend_on_threads(monkeypatch):
    """A parameter over CHUNK values draws chunk by chunk on threads; the values are those of the
    chunks' own streams, whatever the thread count, and each chunk has the rule's spread."""
    monkeypatch.setattr(weights_module, "CHUNK", 1000)
    w = weights_module.initialize(("kaiming_normal", None), (10, 350), [0, 7])
    flat = w.reshape(-1)
    for i, start in enumerate(range(0, flat.size, 1000)):
        expected = np.random.default_rng([0, 7, i]).standard_normal(len(flat[start:start + 1000]), dtype=np.float32)
        np.testing.assert_array_equal(flat[start:start + 1000], expected * np.float32(np.sqrt(2.0 / 350)))
    monkeypatch.setattr(weights_module.os, "cpu_count", lambda: 1)
    np.testing.assert_array_equal(weights_module.initialize(("kaiming_normal", None), (10, 350), [0, 7]), w)
    u = weights_module.initialize(("xavier_uniform", None), (10, 350), [0, 7])
    assert np.abs(u).max() <= np.sqrt(6.0 / 360) and u.std() > 0.5 * np.sqrt(6.0 / 360) / np.sqrt(3)
