"""PyTorch checkpoints: a state_dict (.safetensors, or .pt/.pth with torch installed) mapped onto a spec.

Specs that mirror a torchvision model use torchvision's parameter names, so its checkpoints map as
they are. `num_batches_tracked` buffers (which netspec does not keep) are dropped and counted. For
other names, a mapping file (YAML) renames keys: `rename: {old: new}` exact renames first, then
`regex: [[pattern, replacement], ...]` applied in order to every key (Python `re.sub` syntax). The
result is checked key by key against the spec (netspec.weights.check_weights) before anything is
written.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import regex  # like re, but with a time bound: a user's pattern may backtrack for ever (`^(a+)+$`)

from ..files import open_regular, read_limited
from ..ir.graph import Graph
from ..weights import WeightsError, check_weights, read_weights


MAX_MAPPING_BYTES = 1 << 20
REGEX_SECONDS = 5.0  # for all of a mapping's regular expressions on all of a checkpoint's keys


class CheckpointError(ValueError):
    """A checkpoint or mapping file that cannot be read or used; the message says why."""


@dataclass
class Mapping:
    rename: dict[str, str]
    regex: list[tuple[regex.Pattern, str]]


@dataclass
class ImportReport:
    weights: dict[str, np.ndarray]
    ignored: list[str]  # num_batches_tracked keys dropped
    renamed: int  # keys the mapping changed


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """The tensors of a checkpoint as numpy arrays: .safetensors always; .pt/.pth/.bin/.ckpt with torch."""
    p = Path(path)
    try:
        open_regular(p).close()  # (torch.load would wait on a FIFO and read a device for ever)
    except OSError as e:
        raise CheckpointError(f"cannot read '{path}': {e.strerror}") from None
    if p.suffix == ".safetensors":
        try:
            return read_weights(p)
        except WeightsError as e:
            raise CheckpointError(str(e)) from None
    if p.suffix not in (".pt", ".pth", ".bin", ".ckpt", ".tar"):
        raise CheckpointError(f"'{path}': unknown checkpoint format '{p.suffix}' (expected .safetensors, .pt or .pth)")
    try:
        import torch
    except ImportError:
        raise CheckpointError(f"reading '{path}' needs PyTorch (pip install torch), or convert it to .safetensors "
                              "(safetensors.torch.save_file(state_dict, 'model.safetensors'))") from None
    try:
        data = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as e:  # pickle and zip errors, or objects weights_only refuses
        raise CheckpointError(f"'{path}' is not a readable PyTorch checkpoint (torch.load, weights_only=True: "
                              f"{_torch_reason(e)})") from None
    if isinstance(data, dict):
        for key in ("state_dict", "model_state_dict", "model"):  # training checkpoints nest it
            if isinstance(data.get(key), dict) and not any(isinstance(v, torch.Tensor) for v in data.values()):
                data = data[key]
                break
    if not isinstance(data, dict):
        raise CheckpointError(f"'{path}' holds a {type(data).__name__}, not a state_dict (a mapping of names to "
                              "tensors); save model.state_dict()")
    tensors, other = {}, []
    for key, value in data.items():
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu()
            if t.dtype == torch.bfloat16:
                t = t.float()
            tensors[str(key)] = t.numpy()
        else:
            other.append(str(key))
    if other:
        raise CheckpointError(f"'{path}' is not a plain state_dict: {len(other)} entr{'y is' if len(other) == 1 else 'ies are'}"
                              f" not tensors ({', '.join(other[:5])}{', ...' if len(other) > 5 else ''})")
    return tensors


def _torch_reason(e: Exception) -> str:
    """The useful line of torch.load's message (its first lines are generic advice)."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if "WeightsUnpickler error:" in line:
            rest = line.split("WeightsUnpickler error:", 1)[1].strip()
            return rest or (lines[i + 1] if i + 1 < len(lines) else "refused")
    return lines[0] if lines else type(e).__name__


def read_mapping(path: str | Path) -> Mapping:
    """A mapping file: `rename: {old: new}` and `regex: [[pattern, replacement], ...]`, both optional."""
    import yaml
    try:
        text = read_limited(path, MAX_MAPPING_BYTES, "the mapping file").decode("utf-8")
    except UnicodeDecodeError:
        raise CheckpointError(f"mapping '{path}' is not UTF-8 text") from None
    except OSError as e:
        raise CheckpointError(f"cannot read mapping '{path}': {e.strerror or e}") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise CheckpointError(f"mapping '{path}' is not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"mapping '{path}' must be a mapping with `rename:` and/or `regex:`")
    unknown = [k for k in data if k not in ("rename", "regex")]
    if unknown:
        raise CheckpointError(f"mapping '{path}': unknown key(s) {', '.join(map(str, unknown))} (expected rename, regex)")
    rename = data.get("rename") or {}
    if not isinstance(rename, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in rename.items()):
        raise CheckpointError(f"mapping '{path}': `rename` must map old names to new names ({{old: new}})")
    if not isinstance(data.get("regex") or [], list):
        raise CheckpointError(f"mapping '{path}': `regex` must be a list of [pattern, replacement]")
    rules = []
    for i, rule in enumerate(data.get("regex") or []):
        if not (isinstance(rule, list) and len(rule) == 2 and all(isinstance(x, str) for x in rule)):
            raise CheckpointError(f"mapping '{path}': regex rule {i + 1} must be [pattern, replacement]")
        try:
            rules.append((regex.compile(rule[0]), rule[1]))
        except regex.error as e:
            raise CheckpointError(f"mapping '{path}': regex rule {i + 1} ('{rule[0]}'): {e}") from None
    return Mapping(rename, rules)


def map_state_dict(state: dict[str, np.ndarray], graph: Graph, mapping: Mapping | None = None,
                   origin: str = "weights in the checkpoint") -> ImportReport:
    """Rename, drop num_batches_tracked, and check against the graph (WeightsError lists every problem)."""
    ignored = [k for k in state if k == "num_batches_tracked" or k.endswith(".num_batches_tracked")]
    deadline = time.monotonic() + REGEX_SECONDS
    mapped: dict[str, np.ndarray] = {}
    sources: dict[str, str] = {}
    problems, renamed = [], 0
    for key, value in state.items():
        if key in ignored:
            continue
        new = key
        if mapping is not None:
            new = mapping.rename.get(new, new)
            for pattern, replacement in mapping.regex:
                try:
                    new = pattern.sub(replacement, new, timeout=max(0.001, deadline - time.monotonic()))
                except (regex.error, IndexError) as e:
                    raise CheckpointError(f"regex '{pattern.pattern}' → '{replacement}': {e}") from None
                except TimeoutError:
                    raise CheckpointError(f"regex '{pattern.pattern}' took too long: the mapping's regular "
                                          f"expressions may take {REGEX_SECONDS:g} s in all (at key '{key}'); "
                                          "simplify the pattern") from None
        renamed += new != key
        if new in mapped:
            problems.append(f"{key} and {sources[new]} both map to {new}")
            continue
        mapped[new], sources[new] = value, key
    if problems:
        raise WeightsError(f"{origin} do not fit {graph.name}:\n  " + "\n  ".join(problems))
    weights = check_weights(graph, mapped, origin=origin)
    return ImportReport(weights, ignored, renamed)


def import_checkpoint(path: str | Path, graph: Graph, mapping: str | Path | Mapping | None = None) -> ImportReport:
    """Read a checkpoint and map it onto `graph` (see the module's doc)."""
    if mapping is not None and not isinstance(mapping, Mapping):
        mapping = read_mapping(mapping)
    state = read_state_dict(path)
    return map_state_dict(state, graph, mapping, origin=f"weights in checkpoint '{path}'")
