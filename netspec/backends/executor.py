"""The executor: runs a graph node by node with one backend's kernels.

Inputs are checked before anything runs (shape, rank, dtype, NaN/Inf) and every intermediate
tensor is released after its last use. The same loop runs the numpy references (`backend=
"reference"`, the judge in tests) and the Numba CPU kernels (`backend="cpu"`). In eval mode the
CPU kernels write into one arena laid out by the memory plan (passes/memory.py): see `Arena`.
"""
from __future__ import annotations

import threading
import warnings
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
from numba import njit

from .. import ops
from ..ir.graph import Graph, Node
from ..ops.loss import TargetError, check_target
from ..ops.registry import RunContext
from ..passes.autodiff import GRAD, LOSS, differentiate, parse_losses
from ..passes.memory import ALIGN, is_view, plan_memory
from ..resources import Needs, check_fits

Kernel = Callable[..., np.ndarray]


class InputError(ValueError):
    """Inputs that do not fit the network: wrong shape, rank or dtype, or NaN/Inf values."""


def reference_kernels() -> dict[str, Kernel]:
    return {op.name: op.reference for op in ops.all_ops(internal=True, training=True) if op.reference is not None}


def check_input(name: str, value, expected_dims: tuple[int, ...]) -> np.ndarray:
    """The input as a C-contiguous float32 N×C×H×W array, or an InputError saying what is wrong.
    (A network of small layers runs in ~50 µs: this check is kept to a few µs.)"""
    if not isinstance(value, np.ndarray):
        raise InputError(f"input '{name}' must be a numpy array, got {type(value).__name__}")
    if value.dtype.kind != "f":
        raise InputError(f"input '{name}' has dtype {value.dtype}; expected floating point (float32) — "
                         "convert with .astype(np.float32)")
    if value.ndim != len(expected_dims) + 1 or value.shape[1:] != expected_dims or value.shape[0] < 1:
        want = "N×" + "×".join(map(str, expected_dims))
        if value.ndim == len(expected_dims) + 1:
            raise InputError(f"input '{name}' has shape {'×'.join(map(str, value.shape))}; expected {want}")
        hint = " (add the batch dimension: x[None])" if value.shape == expected_dims else ""
        raise InputError(f"input '{name}' has rank {value.ndim} (shape {list(value.shape)}); expected rank "
                         f"{len(expected_dims) + 1}, {want}{hint}")
    array = np.ascontiguousarray(value, dtype=np.float32)
    if not _finite(array.reshape(-1)):  # (the count only then)
        bad = array.size - int(np.isfinite(array).sum())
        raise InputError(f"input '{name}' contains {bad:,} NaN or Inf value(s)")
    return array


@njit(cache=True)
def _finite(values):
    """Whether no value is NaN or ±Inf (all exponent bits set): one vectorised pass over the bits,
    0.5 µs on LeNet-5's input against 3.3 for numpy's float sum and the np.errstate its overflow
    needs (Python runs on cold caches between two runs: 8.8 µs there)."""
    bits = values.view(np.uint32)
    top = np.uint32(0)
    for i in range(bits.shape[0]):
        top = max(top, bits[i] & np.uint32(0x7F800000))
    return top != np.uint32(0x7F800000)


def check_inputs(graph: Graph, inputs) -> dict[str, np.ndarray]:
    """The run's inputs by name, each checked (`check_input`), all of one batch size: what every
    backend's `run` starts with. A single array stands for a single-input network's input."""
    if not isinstance(inputs, Mapping):
        if len(graph.inputs) != 1:
            raise InputError(f"this network has inputs {list(graph.inputs)}; pass a dict")
        (name, type_), = graph.inputs.items()  # (the common case, kept short: see check_input)
        return {name: check_input(name, inputs, type_.dims)}
    unknown = [k for k in inputs if k not in graph.inputs]
    if unknown:
        raise InputError(f"unknown input(s) {unknown}; this network's inputs are {list(graph.inputs)}")
    values: dict[str, np.ndarray] = {}
    for name, type_ in graph.inputs.items():
        if name not in inputs:
            raise InputError(f"missing input '{name}' ({type_})")
        values[name] = check_input(name, inputs[name], type_.dims)
    batches = {v.shape[0] for v in values.values()}
    if len(batches) > 1:
        raise InputError(f"inputs have different batch sizes: {sorted(batches)}")
    return values


def node_rng(seed: int, node_name: str, step: int) -> np.random.Generator:
    """A train-mode node's randomness (dropout): its own stream per seed, node and run."""
    return np.random.default_rng([seed, zlib.crc32(node_name.encode()), step])


_EVAL = RunContext("eval", None)


def _bind(kernel: Kernel, attrs, params: dict[str, np.ndarray], writes_into: bool):
    """An eval-mode kernel call with its node's attributes and weights bound: (inputs, out) → output,
    passing `out` on to kernels that take one (`writes_into`)."""
    if writes_into:
        return lambda inputs, out: kernel(attrs, inputs, params, _EVAL, out=out)
    return lambda inputs, out: kernel(attrs, inputs, params, _EVAL)


class Arena:
    """The memory plan (passes/memory.py) made real for one batch size: one allocation, and for each
    step of the graph the array its kernel writes (`out`), a view at the tensor's planned offset —
    or None for a view op (flatten, reshape: its output is its input's memory, as planned). So a
    run allocates nothing for its activations, and the memory it touches was touched by the last
    run (fresh allocations cost a page fault per 4 KiB on every run: 1,550 a run in MobileNet v1).

    A concat's inputs the plan placed in its output get their slots there; a concat with every
    input so placed has nothing to do, and its step is skipped (`done`).

    A buffer that holds a graph output is the exception: it is allocated anew each run
    (`outs()`), with the concat inputs placed in it, so the arrays a run returns stay the
    caller's when the next run comes.

    With `parts` > 1 the batch runs as that many equal parts (a compiled program runs them side
    by side, one a thread: backends/cpu/program.py): the plan is made for one part, and the
    memory holds `parts` copies of it one after another (`part_bytes` apart), as each fresh
    buffer does; `outs(fresh, part)` gives that part's arrays."""

    def __init__(self, graph: Graph, batch: int, max_memory: int | None = None, parts: int = 1):
        self.batch, self.parts = batch, parts
        plan = plan_memory(graph, batch // parts)
        self.part_bytes = -(-plan.arena // ALIGN) * ALIGN
        check_fits(Needs({"activations": parts * self.part_bytes}), max_memory, hint="run a smaller batch",
                   subject=f"a batch of {batch}")
        raw = np.empty(parts * self.part_bytes + ALIGN, np.uint8)
        start = -raw.ctypes.data % ALIGN  # (on a cache line, as planned)
        self.memory = raw[start:start + (plan.arena if parts == 1 else parts * self.part_bytes)]
        step_of = {node.name: i for i, node in enumerate(graph.nodes)}
        self.shapes = [(batch // parts,) + graph.type_of(node.name).dims for node in graph.nodes]
        self.views = [is_view(node.op) for node in graph.nodes]
        # steps with nothing to do: concats whose inputs their producers wrote in place (as planned)
        self.done = [node.name in plan.concats_in_place for node in graph.nodes]
        # per part, for each step the array it writes (fresh buffers' steps: None, see `outs`)
        self.fixed: list[list[np.ndarray | None]] = [[None] * len(graph.nodes) for _ in range(parts)]
        self.fresh: list[tuple[int, list[tuple[int, int]]]] = []  # per buffer made each run: its bytes (one
        # part's), its steps with the byte offsets where they write in it
        outputs = set(graph.outputs)
        placed: dict[int, list] = {}  # a top-level buffer's id -> it and the concat inputs placed in it
        for buffer in plan.buffers:
            placed.setdefault(id(buffer.root()), []).append(buffer)
        for buffer in plan.buffers:
            if buffer.parent is not None:
                continue
            # each step writing into this buffer (or a part of it), with where it writes, from its start
            steps = [(step_of[t], piece.offset - buffer.offset) for piece in placed[id(buffer)] for t in piece.tensors
                     if t in step_of]
            if buffer.start < 0 or not steps:  # a graph input's (the caller's array; views of it)
                continue
            if any(outputs.intersection(piece.tensors) for piece in placed[id(buffer)]):
                self.fresh.append((buffer.size, steps))
                continue
            for part, fixed in enumerate(self.fixed):
                start = part * self.part_bytes + buffer.offset
                for i, at in steps:
                    fixed[i] = self._slot(self.memory[start:start + buffer.size], at, i)

    def _slot(self, memory: np.ndarray, at: int, i: int) -> np.ndarray | None:
        if self.views[i]:
            return None
        count = int(np.prod(self.shapes[i], dtype=np.int64))
        return memory[at:at + 4 * count].view(np.float32).reshape(self.shapes[i])

    def fresh_buffers(self) -> list[np.ndarray]:
        """This run's own memory for the buffers holding graph outputs (see above), every part's."""
        return [np.empty(self.parts * size, np.uint8) for size, _ in self.fresh]

    def outs(self, fresh: list[np.ndarray] | None = None, part: int = 0) -> list[np.ndarray | None]:
        """For each step of a part's run, the array its kernel writes (None: the kernel returns its
        own); `fresh`: the run's `fresh_buffers()` (None: new ones)."""
        if not self.fresh:
            return self.fixed[part]
        outs = list(self.fixed[part])
        for memory, (size, steps) in zip(self.fresh_buffers() if fresh is None else fresh, self.fresh):
            for i, at in steps:
                outs[i] = self._slot(memory[part * size:(part + 1) * size], at, i)
        return outs


@dataclass
class Step:
    """One kernel call of the plan: `kernel(node.attrs, [values[i] for i in node.inputs], params, ctx)`,
    params read from the weights under `keys` ({param: "node.param"}). In eval mode the call is
    `prepared(inputs, out)`, bound to the node once: a kernel with a `prepare(attrs, params)` (a CPU
    convolution, say) is made ready for this node and its weights, the work that does not depend
    on the inputs done then, not every run. `out`: the array to write (`Arena`), or None."""
    node: Node
    kernel: Kernel
    keys: dict[str, str]
    prepared: Callable[[list[np.ndarray], np.ndarray | None], np.ndarray] | None = None


class Executable:
    """A graph bound to weights and kernels for one mode; `run(inputs)` → {output name: array}.
    `arena`: the kernels take `out=` (the CPU backend's), so eval mode runs in an `Arena`; a run
    then holds a lock, the arena being one per executable."""

    def __init__(self, graph: Graph, weights: dict[str, np.ndarray], kernels: Mapping[str, Kernel],
                 mode: str = "eval", seed: int = 0, backend: str = "cpu", arena: bool = False, loss=None,
                 programs=None):
        if mode not in ("eval", "train"):
            raise ValueError(f"mode must be 'eval' or 'train', got {mode!r}")
        if loss is not None and mode != "train":
            raise ValueError("a loss is for training: compile with mode='train'")
        self.graph = graph.active(mode)
        self.weights = weights
        self.kernels = kernels
        self.mode, self.seed, self.backend = mode, seed, backend
        self.max_memory: int | None = None  # bytes a run's arena may take (None: what is available)
        self.steps = 0  # runs so far: train-mode dropout draws a fresh mask each run
        self.plan, self.release = self._lower(self.graph)
        self._bound: list[tuple[str, np.ndarray]] = []  # the weights the prepared steps hold
        self._writes_into = arena and mode == "eval"
        self._arena: Arena | None = None  # the last batch size's
        self._lock = threading.Lock()
        # eval runs compiled whole (backends/cpu/program.py): the backend's compiler, and per
        # (batch, threads) the program (False: the run could not be compiled; keep the loop)
        self._programs = programs if self._writes_into else None
        self.compiled: dict[tuple[int, int], object] = {}
        self._seen: set[tuple[int, int]] = set()  # run shapes the loop ran once: the next run compiles
        self._parts: dict[tuple[int, int], int] = {}  # per (batch, threads): the parts a run splits into
        self._prepare()
        # training: the losses, and the training graph (passes/autodiff.py) lowered, per wrt_input
        self.losses = parse_losses(self.graph, loss) if loss is not None else None
        self._training: dict[bool, tuple[Graph, list[Step], list[list[str]]]] = {}
        self._step_bytes: dict[tuple[bool, int], int] = {}  # a training step's planned bytes
        if self.losses is not None:
            self.training_graph(False)  # (an op without a backward rule is an error now, not at the first step)

    def _lower(self, graph: Graph) -> tuple[list[Step], list[list[str]]]:
        """The steps running `graph`, and after each the values to release (those it read last)."""
        missing = sorted({n.op for n in graph.nodes if n.op not in self.kernels})
        if missing:
            raise NotImplementedError(f"backend '{self.backend}' has no kernel for: {', '.join(missing)}")
        plan = [Step(node, self.kernels[node.op], parameter_keys(graph, node)) for node in graph.nodes]
        keep = set(graph.outputs)
        last_use: dict[str, int] = {}
        for index, node in enumerate(graph.nodes):
            for name in node.inputs:
                last_use[name] = index
        release = [[name for name in dict.fromkeys(node.inputs) if last_use[name] == index and name not in keep]
                   for index, node in enumerate(graph.nodes)]
        return plan, release

    @property
    def input_names(self) -> list[str]:
        return list(self.graph.inputs)

    def _prepare(self) -> None:
        """Eval mode: bind every step to its node's weights as they are now, through the kernel's
        `prepare` where it has one (see Step), so that a run reads no weights and builds no context."""
        if self.mode != "eval":
            return
        self.compiled = {}  # (programs hold the weights as they were)
        self._bound = []
        for step in self.plan:
            params = {p: self.weights[k] for p, k in step.keys.items()}
            prepare = getattr(step.kernel, "prepare", None)
            step.prepared = (prepare(step.node.attrs, params) if prepare is not None
                             else _bind(step.kernel, step.node.attrs, params, self._writes_into))
            self._bound += [(k, params[p]) for p, k in step.keys.items()]

    def run(self, inputs: np.ndarray | Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = check_inputs(self.graph, inputs)
        if not self._writes_into:
            return self._run(values, [None] * len(self.plan), [False] * len(self.plan))
        with self._lock:
            batch = next(iter(values.values())).shape[0]
            if self._programs is None:
                arena = self._arena_for(batch, 1)
                return self._run(values, arena.outs(), arena.done)
            self._rebind()
            key = self._programs.key(batch)
            if key not in self._parts:
                self._parts[key] = self._programs.parts(self.graph, *key)
            arena = self._arena_for(batch, self._parts[key])
            program = self.compiled.get(key)
            if program:
                return program.run(values, arena.memory, arena.fresh_buffers())
            if program is None and key in self._seen:  # a second run of this shape: compile it
                return self._compile_run(key, values, arena)
            self._seen.add(key)
            return self._run_parts(values, arena)

    def _arena_for(self, batch: int, parts: int) -> Arena:
        if self._arena is None or (self._arena.batch, self._arena.parts) != (batch, parts):
            self._arena = None  # (the old one freed before the new one is made)
            self._arena = Arena(self.graph, batch, self.max_memory, parts)
        return self._arena

    def _run_parts(self, values: dict[str, np.ndarray], arena: Arena,
                   fresh: list[np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """The loop over the arena's parts of the batch in turn, each on one thread, as a compiled
        program runs them side by side (`Arena`): its bits."""
        if arena.parts == 1:
            return self._run(values, arena.outs(fresh), arena.done)
        fresh = arena.fresh_buffers() if fresh is None else fresh
        size = arena.batch // arena.parts
        with self._programs.one_thread():
            outputs = [self._run({name: v[part * size:(part + 1) * size] for name, v in values.items()},
                                 arena.outs(fresh, part), arena.done) for part in range(arena.parts)]
        return {name: np.concatenate([out[name] for out in outputs]) for name in outputs[0]}

    def _compile_run(self, key, values: dict[str, np.ndarray], arena: Arena) -> dict[str, np.ndarray]:
        """Run once by the loop; then trace a run on other inputs (a probe: arrays the kernels
        write then differ from the last run's) and compile it into a program for the next runs
        (`self._programs.build`), checked against this run's outputs where it is new. A run that
        cannot be compiled keeps the loop, with a warning. (Where the arena has parts, the run
        traced is the first part's.)"""
        self.compiled[key] = False
        outputs = self._run_parts(dict(values), arena)
        rng = np.random.default_rng(12345)
        size = arena.batch // arena.parts
        probe = {name: rng.standard_normal((size,) + v.shape[1:], dtype=np.float32) for name, v in values.items()}
        fresh = arena.fresh_buffers()
        memory = arena.memory[:arena.part_bytes] if arena.parts > 1 else arena.memory
        first = [buffer[:len(buffer) // arena.parts] for buffer in fresh]

        def agrees(program) -> bool:
            got = program.run(values, arena.memory, arena.fresh_buffers())
            return all(np.array_equal(outputs[name], got[name]) for name in outputs)
        try:
            self.compiled[key] = self._programs.build(lambda: self._run(dict(probe), arena.outs(fresh), arena.done),
                                                      probe, memory, first, agrees, arena.parts)
        except Exception as error:  # noqa: BLE001 (the loop still runs the network right)
            warnings.warn(f"netspec: this network runs kernel by kernel, not compiled whole: {error}",
                          RuntimeWarning, stacklevel=3)
        return outputs

    def _rebind(self) -> None:
        """Eval mode: bind the steps again if weights were replaced since (see `_prepare`)."""
        if any(self.weights[k] is not array for k, array in self._bound):
            self._prepare()

    def _run(self, values: dict[str, np.ndarray], outs: list[np.ndarray | None], done: list[bool],
             plan: list[Step] | None = None, release: list[list[str]] | None = None,
             outputs: list[str] | None = None) -> dict[str, np.ndarray]:
        self.steps += 1
        self._rebind()
        for step, dead, out, nothing_to_do in zip(plan or self.plan, release or self.release, outs, done):
            node = step.node
            args = [values[i] for i in node.inputs]
            if nothing_to_do:  # (a call would cost ~200 µs in a network: Python there runs on cold caches)
                values[node.name] = out
            elif step.prepared is not None:
                values[node.name] = step.prepared(args, out)
            else:
                params = {p: self.weights[k] for p, k in step.keys.items()}
                # only dropout draws (a generator costs ~30 µs: LeNet-5's step has 35 nodes); its gradient
                # node draws from the forward node's stream, so its backward redraws the same mask
                forward = node.attrs.op if node.op == "grad" else node.op
                stream = node.attrs.node if node.op == "grad" else node.name
                ctx = RunContext(self.mode, self._rng(stream) if self.mode == "train" and forward == "dropout"
                                 else None)
                values[node.name] = step.kernel(node.attrs, args, params, ctx)
                if self.mode == "train" and node.op != "grad":  # batch norm hands back updated running statistics
                    for p, k in step.keys.items():
                        self.weights[k] = params[p]
            for name in dead:
                del values[name]
        return {name: values[name] for name in (outputs or self.graph.outputs)}

    def _rng(self, node_name: str) -> np.random.Generator:
        return node_rng(self.seed, node_name, self.steps)

    # --- training ---------------------------------------------------------------------------------

    def training_graph(self, wrt_input: bool = False) -> Graph:
        """The graph a training step runs: forward, losses and backward (passes/autodiff.py)."""
        if wrt_input not in self._training:
            graph = differentiate(self.graph, self.losses, wrt_input)
            self._training[wrt_input] = (graph,) + self._lower(graph)
        return self._training[wrt_input][0]

    def grad(self, x, y, wrt_input: bool = False) -> tuple[float, dict[str, np.ndarray]]:
        """One training step's loss and gradients: `(loss, grads)`; see `forward_backward`."""
        loss, _, grads = self.forward_backward(x, y, wrt_input)
        return loss, grads

    def forward_backward(self, x, y, wrt_input: bool = False) -> tuple[float, dict[str, np.ndarray],
                                                                          dict[str, np.ndarray]]:
        """One training step's loss, outputs and gradients: `(loss, outputs, grads)`, the batch's mean
        loss, the network's outputs ({name: array}, for the batch's accuracy) and for each
        trainable parameter its gradient, keyed like the weights ("layer1.0.conv1.weight"). With
        `wrt_input`, also the gradient with respect to the input, under "input" (under each input's
        name for a network of several). `y`: the target of the loss (integer labels for
        cross_entropy, values of the output's shape for mse), or {output name: target} for a
        network with several outputs. Batch norm uses the batch's statistics and updates its running
        statistics in `weights`, as one training forward pass in PyTorch does."""
        if self.losses is None:
            raise ValueError("grad needs a loss: compile(graph, mode='train', loss='cross_entropy') (or 'mse')")
        values = check_inputs(self.graph, x)
        batch = next(iter(values.values())).shape[0]
        if len(self.losses) > 1 and not isinstance(y, Mapping):
            raise InputError(f"this network has outputs {[loss.output for loss in self.losses]}: pass the targets as "
                             "a dict {output name: target}")
        targets = y if len(self.losses) > 1 else {self.losses[0].output: y}
        for loss in self.losses:
            if loss.output not in targets:
                raise InputError(f"no target for output '{loss.output}'")
            shape = (batch,) + self.graph.type_of(loss.output).dims
            try:
                values[loss.target] = check_target(loss.op, loss.attrs, shape, targets[loss.output])
            except TargetError as e:
                raise InputError(str(e)) from None
        wrt_input = bool(wrt_input)
        self.training_graph(wrt_input)
        graph, plan, release = self._training[wrt_input]
        planned = (bool(wrt_input), batch)
        if planned not in self._step_bytes:  # (planning ResNet-50's step takes ~30 ms: once per batch size)
            self._step_bytes[planned] = plan_memory(graph, batch).arena
        check_fits(Needs({"a training step": self._step_bytes[planned]}), self.max_memory,
                   hint="lower the batch size", subject=f"a batch of {batch}")
        out = self._run(values, [None] * len(plan), [False] * len(plan), plan, release, graph.outputs)
        grads = {}
        for name in graph.outputs[1 + len(self.graph.outputs):]:
            key = name[len(GRAD):]
            grads["input" if key in self.graph.inputs and len(self.graph.inputs) == 1 else key] = out[name]
        return float(out[LOSS][0]), {name: out[name] for name in self.graph.outputs}, grads


def parameter_keys(graph: Graph, node: Node) -> dict[str, str]:
    """{parameter: weights key} for a node: its own parameters, or for a gradient node its forward node's."""
    if node.op == "grad":
        return {p: f"{node.attrs.node}.{p}" for p in node.attrs.params}
    names = ops.get(node.op).params(node.attrs, [graph.type_of(i) for i in node.inputs])
    return {p: f"{node.name}.{p}" for p in names}
