"""The CUDA executable: weights on the device once, activations in planned device buffers.

Buffer planning (per batch size, cached): every tensor of the run is a flat float32 region. Views
(flatten, reshape, identity, dropout in inference) share their input's storage. Walking the nodes in
order, each node's output takes the best-fitting free buffer (or the largest free one, grown, or a
new one), and a storage goes back to the free list after the last node that reads it — so a
buffer is never the output of a node that reads it. Graph outputs stay live to the end. Only the
inputs are copied to the device and only the outputs back (plus, in training, dropout masks drawn
on the host, exactly as the references draw them).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from math import prod
from typing import Mapping

import numpy as np
from numba import cuda

from ... import ops as opdefs
from ...ir.graph import Graph
from ...ops.registry import RunContext
from ..executor import check_inputs, node_rng
from . import ops as cops


@dataclass
class BufferPlan:
    """Which device buffer holds each tensor, for one batch size."""

    batch: int
    shapes: dict[str, tuple[int, ...]]
    storage: dict[str, int]  # tensor → buffer index
    capacity: list[int] = field(default_factory=list)  # floats per buffer

    @property
    def planned_bytes(self) -> int:
        return 4 * sum(self.capacity)

    @property
    def naive_bytes(self) -> int:
        """What one buffer per (non-view) tensor would take."""
        return 4 * sum(prod(self.shapes[t]) for t in set(self._roots.values()))

    _roots: dict[str, str] = field(default_factory=dict)


def plan_buffers(graph: Graph, batch: int, views: set[str]) -> BufferPlan:
    """Liveness-based reuse: see the module's doc. `views` are the nodes that alias their input."""
    shapes = {name: (batch,) + t.dims for name, t in graph.inputs.items()}
    for node in graph.nodes:
        shapes[node.name] = (batch,) + graph.type_of(node.name).dims
    root: dict[str, str] = {name: name for name in graph.inputs}
    for node in graph.nodes:
        root[node.name] = root[node.inputs[0]] if node.name in views else node.name
    end = len(graph.nodes)
    last: dict[str, int] = {}
    for index, node in enumerate(graph.nodes):
        for name in node.inputs:
            last[root[name]] = index
    for name in graph.outputs:
        last[root[name]] = end  # never freed
    for name in graph.inputs:
        last.setdefault(root[name], -1)

    capacity: list[int] = []
    free: list[int] = []
    storage: dict[str, int] = {}

    def take(size: int) -> int:
        fits = [b for b in free if capacity[b] >= size]
        if fits:
            b = min(fits, key=lambda b: capacity[b])
        elif free:
            b = max(free, key=lambda b: capacity[b])
            capacity[b] = size
        else:
            capacity.append(size)
            return len(capacity) - 1
        free.remove(b)
        return b

    for name in graph.inputs:
        storage[name] = take(prod(shapes[name]))
    for name in graph.inputs:  # an input nobody reads (odd, but legal)
        if last[root[name]] < 0:
            free.append(storage[name])
    for index, node in enumerate(graph.nodes):
        if node.name in views:
            storage[node.name] = storage[root[node.name]]
        else:
            storage[node.name] = take(prod(shapes[node.name]))
            if last.get(node.name, -1) < index:  # computed but never read (and not an output)
                last[node.name] = index
        for name in dict.fromkeys(list(node.inputs) + [node.name]):
            r = root[name]
            if last.get(r) == index and storage[r] not in free:
                free.append(storage[r])
    return BufferPlan(batch, shapes, storage, capacity, root)


@dataclass
class _Prepared:
    plan: BufferPlan
    views: dict[str, object]  # tensor → flat device view of its buffer
    steps: list


class CudaExecutable:
    """A graph bound to device weights for one mode; `run(inputs)` → {output name: array}, as `Executable`."""

    def __init__(self, graph: Graph, weights: dict[str, np.ndarray], mode: str = "eval", seed: int = 0):
        if mode not in ("eval", "train"):
            raise ValueError(f"mode must be 'eval' or 'train', got {mode!r}")
        self.graph = graph.active(mode)
        self._weights = weights
        self.mode, self.seed, self.backend = mode, seed, "cuda"
        self.steps = 0
        missing = sorted({n.op for n in self.graph.nodes if n.op not in cops.STEPS})
        if missing:
            raise NotImplementedError(f"backend 'cuda' has no kernel for: {', '.join(missing)}")
        self._dparams: dict[str, dict] = {}
        self._keys: dict[str, dict[str, str]] = {}
        for node in self.graph.nodes:  # weights go to the device once, here
            op = opdefs.get(node.op)
            names = list(op.params(node.attrs, [self.graph.type_of(i) for i in node.inputs]))
            keys = {p: f"{node.name}.{p}" for p in names}
            self._keys[node.name] = keys
            self._dparams[node.name] = cops.upload(node.op, node.attrs, {p: weights[k] for p, k in keys.items()}, mode)
        self._views = {n.name for n in self.graph.nodes if cops.is_view(n.op, n.attrs, mode)}
        self._prepared: dict[int, _Prepared] = {}
        self._stale = False  # device running statistics newer than self._weights

    @property
    def input_names(self) -> list[str]:
        return list(self.graph.inputs)

    @property
    def weights(self) -> dict[str, np.ndarray]:
        """The weights; in training, with batch norm's running statistics as updated on the device."""
        if self._stale:
            for node in self.graph.nodes:
                for p, value in cops.download_state(node.op, self._dparams[node.name], self.mode).items():
                    self._weights[self._keys[node.name][p]] = value
            self._stale = False
        return self._weights

    def buffer_plan(self, batch: int = 1) -> BufferPlan:
        return self._prepare(batch).plan

    def _prepare(self, batch: int) -> _Prepared:
        if batch in self._prepared:
            return self._prepared[batch]
        plan = plan_buffers(self.graph, batch, self._views)
        buffers = [cuda.device_array(max(1, c), np.float32) for c in plan.capacity]
        views = {name: buffers[b][:prod(plan.shapes[name])] for name, b in plan.storage.items()}
        steps = []
        for node in self.graph.nodes:
            if node.name in self._views:
                continue
            run = cops.STEPS[node.op](node.attrs, [plan.shapes[i] for i in node.inputs], plan.shapes[node.name],
                                      self._dparams[node.name], self.mode)
            steps.append((node, run, [views[i] for i in node.inputs], views[node.name]))
        prepared = _Prepared(plan, views, steps)
        self._prepared = {batch: prepared}  # one batch size's buffers held at a time
        return prepared

    def run(self, inputs: np.ndarray | Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = check_inputs(self.graph, inputs)
        batches = {v.shape[0] for v in values.values()}
        prepared = self._prepare(batches.pop())
        self.steps += 1
        for name, value in values.items():  # the only host → device copies (besides dropout masks)
            prepared.views[name].copy_to_device(value.reshape(-1))
        for node, run, ins, out in prepared.steps:
            ctx = RunContext(self.mode, self._rng(node.name) if self.mode == "train" else None)
            run(ins, out, ctx)
        if self.mode == "train":
            self._stale = True
        shapes = prepared.plan.shapes
        return {name: prepared.views[name].copy_to_host().reshape(shapes[name]) for name in self.graph.outputs}

    def _rng(self, node_name: str) -> np.random.Generator:
        return node_rng(self.seed, node_name, self.steps)


def run_op(name: str, attrs, inputs: list[np.ndarray], params: dict[str, np.ndarray], ctx: RunContext) -> np.ndarray:
    """One op's CUDA kernel(s) with the `Reference` signature: upload, launch, download (for tests).
    Views copy here. In training, batch norm's updated running statistics are written back to `params`."""
    from ...ir.types import TensorType
    from ...ops.registry import infer_output

    op = opdefs.get(name)
    xs = [np.ascontiguousarray(x, dtype=np.float32) for x in inputs]
    out_shape = infer_output(op, attrs, [TensorType(x.shape) for x in xs]).shape
    dp = cops.upload(op.name, attrs, params, ctx.mode)
    run = cops.STEPS[op.name](attrs, [x.shape for x in xs], out_shape, dp, ctx.mode)
    dins = [cuda.to_device(x.reshape(-1)) for x in xs]
    out = cuda.device_array(prod(out_shape), np.float32)
    run(dins, out, ctx)
    params.update(cops.download_state(op.name, dp, ctx.mode))
    return out.copy_to_host().reshape(out_shape)
