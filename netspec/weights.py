"""Weights: deterministic initialization, and safetensors files checked key by key.

Keys are the node's full name plus the parameter name (`layer1.0.conv1.weight`), so specs that
mirror a torchvision model use torchvision's names. A file is checked completely before anything
is used: every missing, unexpected or mismatched key is named, and a bad file never half-loads.
"""
from __future__ import annotations

import json
import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from math import prod, sqrt
from pathlib import Path

import numpy as np

from . import ops
from .files import atomic_write, printable
from .ir.graph import Graph
from .ops.registry import ParamSpec
from .resources import BYTES, Needs, check_fits, read_within_memory


class WeightsError(ValueError):
    """A weights file or dict that does not fit the graph; the message lists every problem."""


def param_specs(graph: Graph) -> dict[str, ParamSpec]:
    """Every parameter of the graph (all modes), keyed `node.param`."""
    specs: dict[str, ParamSpec] = {}
    for node in graph.nodes:
        op = ops.get(node.op)
        for pname, spec in op.params(node.attrs, [graph.type_of(i) for i in node.inputs]).items():
            specs[f"{node.name}.{pname}"] = spec
    return specs


def _default_rule(op_name: str, pname: str) -> tuple[str, float | None]:
    if pname == "weight" and op_name in ("conv2d", "conv_transpose2d", "linear"):
        return ("kaiming_normal", None)  # He et al.: std = sqrt(2 / fan_in), suits ReLU networks
    if pname in ("weight", "running_var"):
        return ("ones", None)  # batch norm scale and variance
    return ("zeros", None)  # biases, batch norm shift and mean


def _fans(shape: tuple[int, ...]) -> tuple[int, int]:
    receptive = prod(shape[2:]) if len(shape) > 2 else 1
    fan_in = shape[1] * receptive if len(shape) > 1 else shape[0]
    return fan_in, shape[0] * receptive


# Parameters larger than this draw in chunks of this many values, each chunk its own stream
# (seed, name, chunk), on a thread each: numpy's generators release the GIL, and a 1 GB layer
# (YOLOv1's first linear) took 4.5 s on one core, half of it page faults of the fresh array.
# Chunks are fixed, not per thread, so the values do not depend on the machine.
CHUNK = 1 << 22


def initialize(rule: tuple[str, float | None], shape: tuple[int, ...], seed: list[int]) -> np.ndarray:
    """A parameter of this shape by its rule, drawn from the stream(s) of `seed`."""
    kind, value = rule
    fan_in, fan_out = _fans(shape)
    if kind in ("zeros", "ones", "constant"):
        return np.full(shape, {"zeros": 0.0, "ones": 1.0}.get(kind, value), np.float32)
    std = {"normal": value, "kaiming_normal": sqrt(2.0 / fan_in), "xavier_normal": sqrt(2.0 / (fan_in + fan_out))}
    bound = {"uniform": value, "kaiming_uniform": sqrt(6.0 / fan_in), "xavier_uniform": sqrt(6.0 / (fan_in + fan_out))}
    if kind not in std and kind not in bound:
        raise ValueError(f"unknown initializer '{kind}'")

    def draw(rng: np.random.Generator, w: np.ndarray) -> None:  # in place: no second array of the model's size
        if kind in std:
            rng.standard_normal(out=w, dtype=np.float32)
            w *= np.float32(std[kind])
        else:
            rng.random(out=w, dtype=np.float32)
            w *= 2
            w -= 1
            w *= np.float32(bound[kind])

    w = np.empty(shape, np.float32)
    flat = w.reshape(-1)
    if flat.size <= CHUNK:
        draw(np.random.default_rng(seed), flat)
        return w
    starts = range(0, flat.size, CHUNK)
    with ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="netspec-init") as pool:
        list(pool.map(lambda i: draw(np.random.default_rng(seed + [i]), flat[starts[i]:starts[i] + CHUNK]),
                      range(len(starts))))
    return w


def init_weights(graph: Graph, seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic weights: each parameter draws from its own stream (seed, name), so adding a
    layer does not change the others; rules come from the spec's `init:` or the op's defaults.
    Weights that cannot fit in memory are refused first (resources.ResourceError)."""
    specs = param_specs(graph)
    check_fits(Needs({"weights": BYTES * sum(spec.size for spec in specs.values())}),
               hint="the layers are too large", subject="the weights")
    weights = {}
    for node in graph.nodes:
        op = ops.get(node.op)
        overrides = dict(node.init)
        for pname, spec in op.params(node.attrs, [graph.type_of(i) for i in node.inputs]).items():
            key = f"{node.name}.{pname}"
            weights[key] = initialize(overrides.get(pname, _default_rule(node.op, pname)), spec.shape,
                                      [seed, zlib.crc32(key.encode())])
    return weights


def check_weights(graph: Graph, weights: dict[str, np.ndarray], origin: str = "weights") -> dict[str, np.ndarray]:
    """The weights as C-contiguous float32 arrays, after checking every key, shape and dtype."""
    expected = param_specs(graph)
    problems = []
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    if missing:
        problems.append(f"missing {len(missing)} key(s): {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} key(s): {_listing(unexpected)}")
    checked = {}
    for key, spec in expected.items():
        if key not in weights:
            continue
        value = weights[key]
        if not isinstance(value, np.ndarray):
            problems.append(f"{key}: not an array ({type(value).__name__})")
            continue
        if tuple(value.shape) != spec.shape:
            problems.append(f"{key}: shape {list(value.shape)}, the spec needs {list(spec.shape)}")
            continue
        if value.dtype not in (np.float32, np.float16, np.float64):
            problems.append(f"{key}: dtype {value.dtype}, expected a floating-point type (float32)")
            continue
        array = np.ascontiguousarray(value, dtype=np.float32)
        if not np.isfinite(array).all():
            problems.append(f"{key}: contains NaN or Inf")
            continue
        if spec.non_negative and (array < 0).any():
            problems.append(f"{key}: has negative values (a variance cannot be negative)")
            continue
        checked[key] = array
    if problems:
        raise WeightsError(f"{origin} do not fit {graph.name}:\n  " + "\n  ".join(problems))
    return checked


def _listing(keys: list[str], limit: int = 8, groups: int = 16) -> str:
    """The keys, in their order; a long list grouped by common prefix with counts
    (`features.denseblock1.* (144)`), at the finest level that keeps to `groups` groups."""
    if len(keys) <= limit:
        return ", ".join(keys)
    chosen = _by_prefix(keys, 1)
    for depth in range(2, max(k.count(".") for k in keys) + 1):
        finer = _by_prefix(keys, depth)
        if len(finer) > groups:
            break
        chosen = finer
    parts = [members[0] if len(members) == 1 else f"{prefix}.* ({len(members)})" for prefix, members in chosen.items()]
    rest = sum(len(members) for members in list(chosen.values())[groups:])
    return ", ".join(parts[:groups]) + (f", ... ({rest} more)" if rest else "")


def _by_prefix(keys: list[str], depth: int) -> dict[str, list[str]]:
    """Keys grouped by their first `depth` dotted parts, in order of first appearance."""
    found: dict[str, list[str]] = {}
    for key in keys:
        parts = key.split(".")
        found.setdefault(".".join(parts[:min(depth, len(parts) - 1)]) or key, []).append(key)
    return found


def save_weights(weights: dict[str, np.ndarray], path: str | os.PathLike, metadata: dict[str, str] | None = None):
    """Write a safetensors file atomically (a failure leaves any existing file untouched)."""
    from safetensors.numpy import save

    metadata = {k: printable(v) for k, v in (metadata or {}).items()} or None
    data = save({k: np.ascontiguousarray(v) for k, v in weights.items()}, metadata=metadata)
    try:
        atomic_write(path, data)
    except OSError as e:
        raise WeightsError(f"cannot write '{path}': {e.strerror or e}") from None


def read_weights(path: str | os.PathLike, metadata: bool = False):
    """Read a safetensors file into numpy arrays; a clear WeightsError for anything unreadable. With
    `metadata`, (arrays, the header's metadata {str: str}) from the same single read."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    if Path(path).suffix.lower() in (".pt", ".pth", ".bin", ".ckpt"):
        raise WeightsError(f"'{path}' looks like a PyTorch checkpoint; convert it first: "
                           f"netspec weights import {path} -o weights.safetensors --spec SPEC")
    try:
        data = read_within_memory(path, "the weights file")
    except OSError as e:
        raise WeightsError(f"cannot read weights '{path}': {e.strerror or e}") from None
    try:
        arrays = load(data)
    except (SafetensorError, ValueError, TypeError, OSError) as e:
        raise WeightsError(f"'{path}' is not a valid safetensors file ({e})") from None
    # (the header, valid since load() read it: 8 bytes of its length, then JSON)
    header = json.loads(data[8:8 + int.from_bytes(data[:8], "little")])
    # in the file's order (load() gives them in no fixed order), so that listings follow the file
    arrays = {k: arrays[k] for k in sorted(arrays, key=lambda k: (header[k]["data_offsets"][0], k))}
    if not metadata:
        return arrays
    return arrays, dict(header.get("__metadata__") or {})


def load_weights(path: str | os.PathLike, graph: Graph) -> dict[str, np.ndarray]:
    return check_weights(graph, read_weights(path), origin=f"weights in '{path}'")
