"""A network's eval run as one compiled program: a generated Numba function that calls the jitted
kernels back to back, with no Python between layers.

Why: between two kernels the executor's Python loop (backends/executor.py) runs on caches the last
layer's data has filled, 40–240 µs a layer; a network of small layers spent as long there as in
its kernels (LeNet-5 at batch 1: 5× ONNX Runtime's time). The program makes a run one call.

How it is made: by tracing, not by a second implementation of every op. The executor runs the
network once with every jitted function of this backend (the module-level Numba dispatchers)
wrapped in a recorder: each kernel's Python plan takes its decisions as usual and the recorder
notes every call it makes into Numba — the function and its arguments. The trace is then written
out as Python source: the same calls in the same order, their scalars as literals, their arrays
as views of a few flat buffers:

- the inputs, the arena (the memory plan's one allocation) and the run's fresh output buffers:
  passed anew on every call of the program;
- constants: arrays the run read and did not change (weights, packed weights, index tables),
  passed as they are (no copy);
- temporaries: arrays the run changed that are none of the above (scratch buffers, per-run
  work arrays): given a place in the program's own work buffer (zero-filled first where the
  run had them zero).

Numba compiles that source, cached on disk like the kernels (in the cache folder of this
version of the backend's sources: edited kernels make new programs). The source is named by its
own hash, so a network, batch size and thread count compiles once: the next process loads it.

A batch the threads divide may run as parts side by side (`parts`): then the program is one
part's run, traced on one thread, and a generated parallel loop (`split`) calls it on each part's
rows of the inputs, the arena and the output buffers, each part with its own work buffer.

Safety: the program only replays what the trace saw. A kernel whose Python writes into arrays
itself (not through Numba), or returns a value its plan uses, cannot be replayed: a call with
keyword arguments or a result, or an argument that is not an array (C-contiguous), a scalar or a
tuple of these, makes the trace unusable, and the executor keeps its loop. And a newly compiled
program must give the loop's results, bit for bit, on another input before it is used
(`Program.verified`).
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import math
import os
import sys
import threading
import zlib
from dataclasses import dataclass, field

import numpy as np
from llvmlite import binding, ir
from numba import typeof, types
from numba.core import cgutils
from numba.core.dispatcher import Dispatcher
from numba.extending import intrinsic

from ...passes.analysis import analyze
from ...threads import numba_threads, threading_layer
from . import CACHE_FOLDER, _util, gemm
from ._util import thread_count

_ALIGN = 64  # bytes: where each temporary starts in the work buffer
_TRACE_LOCK = threading.Lock()  # one trace at a time (the recorders are module globals)


class Untraceable(Exception):
    """A run the program cannot replay (see the module's docstring); the message says why."""


class _Recording:
    """Mixed into a jitted function's class while a trace runs (`trace`): its calls from the tracing
    thread are noted, wherever the caller found the function (a module's global, or a reference
    a plan keeps)."""

    def __call__(self, *args, **kwargs):
        record = _ACTIVE
        if record is None or threading.get_ident() != record.thread:
            return super().__call__(*args, **kwargs)
        name = self.py_func.__qualname__
        if kwargs:
            record.fail(f"{name} called with keyword arguments")
        record.before(args)
        result = super().__call__(*args, **kwargs)
        if result is not None:
            record.fail(f"{name} returns a value that its caller uses")
        callee = Callee(self.py_func.__module__, name, args)
        record.calls.append(callee)
        record.dispatchers[callee.symbol] = self
        return result


_ACTIVE: "_Trace | None" = None
_RECORDING_CLASSES: dict[type, type] = {}


def _recording_class(cls: type) -> type:
    if cls not in _RECORDING_CLASSES:
        _RECORDING_CLASSES[cls] = type(f"Recording{cls.__name__}", (_Recording, cls), {})
    return _RECORDING_CLASSES[cls]


@dataclass
class _Trace:
    thread: int
    passed: list  # the arrays the run is given (inputs, arena, fresh buffers)
    calls: list = field(default_factory=list)  # Callee, in order
    dispatchers: dict = field(default_factory=dict)  # symbol -> its jitted function
    seen: dict = field(default_factory=dict)  # id(root) -> (root, digest before its first call)
    failure: str | None = None

    def fail(self, why: str) -> None:
        self.failure = self.failure or why

    def before(self, args) -> None:
        for a in _arrays(args):
            if _within(a, self.passed) is None:
                root = _owner(a)
                if id(root) not in self.seen:
                    try:  # (None: a known constant, `_util.constant`, not checksummed)
                        self.seen[id(root)] = (root, None if _util.is_constant(root) else _digest(root))
                    except Untraceable as e:
                        self.fail(str(e))


def _arrays(args):
    for a in args:
        if isinstance(a, np.ndarray):
            yield a
        elif isinstance(a, tuple):
            yield from _arrays(a)


def _owner(a: np.ndarray) -> np.ndarray:
    """The array that owns a's memory (numpy gives a view of a view the owner as its base)."""
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def _within(a: np.ndarray, arrays: list[np.ndarray]) -> int | None:
    """The index of the array whose memory holds all of a's, if one does."""
    start = a.ctypes.data
    for i, b in enumerate(arrays):
        if b.ctypes.data <= start and start + a.nbytes <= b.ctypes.data + b.nbytes:
            return i
    return None


def _digest(a: np.ndarray) -> int:
    """A checksum of a's bytes, telling whether a run wrote to it (crc32: 4× blake2b's speed, and a
    collision only makes a wrong program, which its check against the loop refuses)."""
    return zlib.crc32(_bytes(a))


def _bytes(a: np.ndarray) -> np.ndarray:
    if not a.flags.c_contiguous:
        raise Untraceable("an array the kernels use is not contiguous")
    return a.reshape(-1).view(np.uint8)


def _dispatchers() -> list[Dispatcher]:
    """The jitted functions of this backend's modules (those imported)."""
    prefix = __name__.rsplit(".", 1)[0] + "."
    found = {}
    for name, module in list(sys.modules.items()):
        if name.startswith(prefix) and module is not None:
            for value in vars(module).values():
                if isinstance(value, Dispatcher):
                    found[id(value)] = value
    return list(found.values())


def trace(run, known) -> _Trace:
    """Call run() with every jitted function of the backend recording its calls from this thread.
    known: the arrays the run was given (inputs, arena, fresh buffers)."""
    global _ACTIVE
    with _TRACE_LOCK:
        record = _Trace(threading.get_ident(), list(known))
        patched = []
        try:
            for dispatcher in _dispatchers():
                original = type(dispatcher)
                dispatcher.__class__ = _recording_class(original)
                patched.append((dispatcher, original))
            _ACTIVE = record
            run()
        finally:
            _ACTIVE = None
            for dispatcher, original in patched:
                dispatcher.__class__ = original
    return record


# --- the program's source --------------------------------------------------------------------------

@dataclass(frozen=True)
class _View:
    root: int  # the program's argument number
    offset: int  # bytes
    shape: tuple[int, ...]
    dtype: str


@dataclass
class Layout:
    """Where a traced run's arrays live: in the run's own arguments (inputs, arena, fresh buffers:
    `passed`, program arguments 0, 1, ...), in constants (the next arguments, one per owning
    array) or in the work buffer (the last argument: a place for each temporary)."""
    passed: list[np.ndarray]
    constants: list[np.ndarray] = field(default_factory=list)
    constant_index: dict[int, int] = field(default_factory=dict)  # id(owner) -> argument number
    work: dict[int, tuple[int, int, bool]] = field(default_factory=dict)  # id(owner) -> (offset, bytes, zeroed)
    work_bytes: int = 0

    @property
    def work_arg(self) -> int:
        return len(self.passed) + len(self.constants)

    def view(self, a: np.ndarray) -> _View:
        if not a.flags.c_contiguous or a.dtype.hasobject:
            raise Untraceable("a kernel's argument is not a contiguous array")
        i = _within(a, self.passed)
        if i is not None:
            return _View(i, a.ctypes.data - self.passed[i].ctypes.data, a.shape, a.dtype.str)
        owner = _owner(a)
        offset = a.ctypes.data - owner.ctypes.data
        if not 0 <= offset <= owner.nbytes - a.nbytes:
            raise Untraceable("a kernel's argument lies outside its buffer")
        if id(owner) in self.work:
            return _View(self.work_arg, self.work[id(owner)][0] + offset, a.shape, a.dtype.str)
        return _View(self.constant_index[id(owner)], offset, a.shape, a.dtype.str)


def layout(record: _Trace, passed: list[np.ndarray]) -> Layout:
    """Sort the trace's arrays: in the passed ones, constants (unchanged by the run) and the
    temporaries (changed by it: a place each in the work buffer)."""
    lay = Layout(passed)
    scratch = {id(buffer) for buffer in vars(_util._scratch).values()}  # (this thread's: the tracing one)
    for key, (owner, before) in record.seen.items():
        if not owner.flags.c_contiguous:
            raise Untraceable("a buffer the kernels use is not contiguous")
        if key not in scratch and (before is None or _digest(owner) == before):  # read, never written: a constant
            lay.constant_index[key] = len(passed) + len(lay.constants)
            lay.constants.append(owner)
        else:
            # zero-filled before each run where the loop's run found it zero (an array a plan makes
            # with np.zeros); never a scratch buffer, np.empty's: its contents are garbage to every
            # kernel, zero only by chance (fresh pages)
            zeroed = key not in scratch and before == _digest(np.zeros_like(owner))
            lay.work[key] = (lay.work_bytes, owner.nbytes, zeroed)
            lay.work_bytes += -(-owner.nbytes // _ALIGN) * _ALIGN
    return lay


def _scalar(value):
    """A scalar argument as the Python value the program's call makes a constant of (its type is the
    kernel's, `_SIGNATURES`)."""
    if value is None or isinstance(value, (bool, np.bool_)):
        return None if value is None else bool(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (int, float)):
        return value
    raise Untraceable(f"a kernel argument of type {type(value).__name__}")


def _render(item) -> str:
    """A call's argument spec (`call`) as Python source: tuples, ints, bools, None and floats
    (non-finite ones too)."""
    if isinstance(item, tuple):
        return "(" + "".join(f"{_render(x)}, " for x in item) + ")"
    if isinstance(item, float):
        return repr(item) if math.isfinite(item) else f"float('{item}')"
    return repr(item)


@dataclass
class Table:
    """The program's first argument: every array its calls pass, as Numba's array structure
    (meminfo, parent, size, itemsize, data, shape, strides: 64-bit words), one after another. The
    data word holds the array's address for constants and the work buffer (`Program` fills them
    in), and its offset in its buffer for the run's own buffers (`passed`: the program's next
    arguments, whose addresses change from run to run; `view_in` adds them)."""
    words: list[int] = field(default_factory=list)
    slots: dict[_View, int] = field(default_factory=dict)  # view -> its first word
    data: list[tuple[int, int, int]] = field(default_factory=list)  # (word, argument number, offset)

    def slot(self, v: _View) -> int:
        if v not in self.slots:
            itemsize = np.dtype(v.dtype).itemsize
            strides, step = [], itemsize
            for size in reversed(v.shape):
                strides.insert(0, step)
                step *= size
            self.slots[v] = len(self.words)
            self.data.append((len(self.words) + 4, v.root, v.offset))
            self.words += [0, 0, int(np.prod(v.shape, dtype=np.int64)), itemsize, 0, *v.shape, *strides]
        return self.slots[v]


def source(record: _Trace, lay: Layout, outputs: dict[str, np.ndarray],
           parts: int = 1) -> tuple[str, Table, dict[str, _View]]:
    """The program's source (a module defining `program(table, *buffers)`, and with parts > 1
    `split(tables, *buffers)`: `program` on each part, one a thread, each part's buffers a row of
    the 2-D ones), its table and where each output lies. Each kernel call is one intrinsic (`call`)
    given the spec of its arguments."""
    table = Table()
    calls, body = [], []

    def arg(value):  # ("a", table slot, buffer number or −1) | ("t", items...) | a scalar
        if isinstance(value, np.ndarray):
            v = lay.view(value)
            return ("a", table.slot(v), v.root if v.root < len(lay.passed) else -1)
        if isinstance(value, tuple):
            return ("t",) + tuple(arg(x) for x in value)
        return _scalar(value)

    for i, c in enumerate(record.calls):
        spec = tuple(arg(a) for a in c.args)
        calls.append(f"c{i} = call({c.symbol!r}, {_render(spec)})  # {c.name}")
        body.append(f"    c{i}(t, buffers)")
    roots = "".join(f"r{i}, " for i in range(len(lay.passed)))
    lines = ["from numba import njit", f"from {__name__} import call", ""] + calls
    # nogil: the program touches no Python object, so other threads (`netspec predict`'s image
    # decoders) run while it does
    lines += ["", "", "@njit(cache=True, nogil=True)", f"def program(t, {roots}):", f"    buffers = ({roots})"]
    lines += body
    if parts > 1:
        rows = "".join(f"r{i}[p], " for i in range(len(lay.passed)))
        lines += ["", "", "@njit(cache=True, nogil=True, parallel=True)", f"def split(tables, {roots}):",
                  "    for p in prange(tables.shape[0]):", f"        program(tables[p], {rows})"]
        lines[0] = "from numba import njit, prange"
    where = {name: lay.view(a) for name, a in outputs.items()}
    if any(v.root >= len(lay.passed) for v in where.values()):
        raise Untraceable("an output lies in a buffer the next run reuses")
    return "\n".join(lines) + "\n", table, where


# --- calling the kernels ----------------------------------------------------------------------------
# The program calls each kernel's compiled code by address, as C calls a library, not as Numba calls
# a jitted function: Numba would link every callee's code into the program and optimise and compile
# it all again (LeNet-5's 6 kernels: 56 s). A kernel specialisation (function, argument types) has a
# symbol of its own, `Callee.symbol`, bound in LLVM's table to the address of its native code in this
# process before a program is compiled or loaded (`bind`); the program's call is Numba's native
# calling convention to that symbol, exceptions passed on as Numba's own calls do.

_SIGNATURES: dict[str, tuple] = {}  # symbol -> the kernel's argument types (Numba's)
_BOUND: set[str] = set()


@dataclass
class Callee:
    module: str
    name: str
    args: tuple
    symbol: str = ""

    def __post_init__(self):
        self.types = tuple(typeof(a) for a in self.args)
        digest = hashlib.sha1(f"{self.module}.{self.name}{self.types}".encode()).hexdigest()[:24]
        self.symbol = f"netspec_kernel_{digest}"


def bind(callee: Callee, dispatcher: Dispatcher) -> None:
    """Give a kernel specialisation's native code its symbol (compiling it if the trace's call
    resolved to another specialisation)."""
    if callee.symbol in _BOUND:
        return
    result = dispatcher.overloads.get(callee.types)
    if result is None:
        dispatcher.compile(callee.types)
        result = dispatcher.overloads[callee.types]
    address = result.library.get_pointer_to_function(result.fndesc.llvm_func_name)
    if not address:
        raise Untraceable(f"no native code for {callee.name}")
    binding.add_symbol(callee.symbol, address)
    _SIGNATURES[callee.symbol] = callee.types
    _BOUND.add(callee.symbol)


def _load_array(context, builder, table, at: int, arraytype):
    """The array structure stored from word `at` of `table` (an int64 array value)."""
    words = context.make_array(types.Array(types.int64, 1, "C"))(context, builder, table).data
    where = builder.gep(words, [ir.Constant(ir.IntType(64), at)])
    return builder.load(builder.bitcast(where, context.get_value_type(arraytype).as_pointer()))


def call(symbol: str, spec: tuple):
    """One call of the program: a function (table, buffers) that makes the arguments of the kernel
    bound to `symbol` from `spec` and calls it. In the spec, ("a", slot, b) is the array whose
    structure starts at word `slot` of the table (`Table`): its data word an address, or where b ≥ 0
    an offset in buffers[b]; ("t", ...) a tuple of such items; any other item a scalar, made a
    constant of the kernel's type for it. (One intrinsic per call, each array one load with no
    checks: typing a tuple of view functions per call was most of a program's compile.)"""
    @intrinsic
    def kernel_call(typingctx, table, buffers):
        expected = _SIGNATURES[symbol]

        def codegen(context, builder, signature, llargs):
            roots = cgutils.unpack_tuple(builder, llargs[1], len(signature.args[1]))

            def make(item, ty):
                if isinstance(item, tuple) and item[0] == "a":
                    array = _load_array(context, builder, llargs[0], item[1], ty)
                    if item[2] < 0:
                        return array
                    base = context.make_array(signature.args[1][item[2]])(context, builder, roots[item[2]]).data
                    offset = builder.extract_value(array, 4)  # (the data word: here, the offset)
                    data = builder.gep(base, [builder.ptrtoint(offset, ir.IntType(64))])
                    return builder.insert_value(array, builder.bitcast(data, offset.type), 4)
                if isinstance(item, tuple):
                    return context.make_tuple(builder, ty, [make(x, t) for x, t in zip(item[1:], ty.types)])
                if item is None:
                    return context.get_dummy_value()
                return context.get_constant(ty, item)
            values = [make(item, ty) for item, ty in zip(spec, expected)]
            fnty = context.call_conv.get_function_type(types.none, expected)
            function = cgutils.get_or_insert_function(builder.module, fnty, symbol)
            status, _ = context.call_conv.call_function(builder, function, types.none, expected, values)
            with cgutils.if_unlikely(builder, status.is_error):
                context.call_conv.return_status_propagate(builder, status)
            return context.get_dummy_value()
        return types.none(table, buffers), codegen
    return kernel_call


# --- compiling and running -----------------------------------------------------------------------

PROGRAMS = os.path.join(CACHE_FOLDER, "programs")


def load(text: str, parts: int = 1):
    """The `program` function of this source (`split` where parts > 1), compiled at its first call
    or loaded from Numba's cache, and the path of its source file."""
    name = "netspec_program_" + hashlib.sha1(text.encode()).hexdigest()[:20]
    path = os.path.join(PROGRAMS, name + ".py")
    if not os.path.exists(path):  # (written once, never rewritten: Numba's cache keys on the file's time)
        os.makedirs(PROGRAMS, exist_ok=True)
        temporary = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
        with open(temporary, "w") as f:
            f.write(text)
        os.replace(temporary, path)
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # (Numba imports a cached function's module by name)
        spec.loader.exec_module(module)
    return (module.split if parts > 1 else module.program), path


class Program:
    """A compiled run: `run(values, arena, fresh)` → {output: array}, given the inputs (by name, as
    the executor checked them), the arena's memory and this run's fresh output buffers.

    With parts > 1 the batch runs as that many equal parts side by side, one a thread (the
    executor's `Arena` holds a copy of one part's memory for each): the program is one part's run,
    traced on one thread, and each part has its own work buffer and table (the same but for the
    work buffer's addresses)."""

    def __init__(self, function, lay: Layout, table: Table, inputs: list[str], outputs: dict[str, _View],
                 calls_blas: bool = True, parts: int = 1):
        self.function = function
        self.parts = parts
        self.calls_blas = calls_blas and gemm.AVAILABLE
        self.constants = lay.constants  # (kept alive: the table points into them)
        stride = -(-max(lay.work_bytes, _ALIGN) // _ALIGN) * _ALIGN
        raw = np.zeros(parts * stride + _ALIGN, np.uint8)
        self.work = raw[-raw.ctypes.data % _ALIGN:][:parts * stride].reshape(parts, stride)
        self.zeroed = [(offset, offset + size) for offset, size, zeroed in lay.work.values() if zeroed]
        self.table = np.empty((parts, len(table.words)), np.int64)
        first = len(lay.passed)  # (arguments below this one are the run's own buffers)
        constants = [_address(c) for c in lay.constants]
        for part, words in enumerate(self.table):
            words[:] = table.words
            fixed = constants + [_address(self.work[part])]
            for word, root, offset in table.data:
                words[word] = fixed[root - first] + offset if root >= first else offset
        if parts == 1:
            self.table, self.work = self.table[0], self.work[0]
        self.inputs = inputs
        self.outputs = [(name, v.root, slice(v.offset, v.offset + _nbytes(v)), np.dtype(v.dtype), v.shape)
                        for name, v in outputs.items()]

    def arguments(self, values: dict, arena: np.ndarray, fresh: list[np.ndarray]) -> list[np.ndarray]:
        """The function's arguments for a run: the table(s), then the run's buffers (a row a part)."""
        buffers = [_bytes(values[name]) for name in self.inputs] + [arena] + fresh
        if self.parts > 1:
            buffers = [b.reshape(self.parts, -1) for b in buffers]
        return [self.table] + buffers

    def run(self, values: dict, arena: np.ndarray, fresh: list[np.ndarray]) -> dict[str, np.ndarray]:
        args = self.arguments(values, arena, fresh)
        for start, stop in self.zeroed:
            self.work[..., start:stop] = 0
        if self.calls_blas:  # (as gemm's plans do around their calls: OpenBLAS on the calling thread)
            with gemm._OneBlasThread():
                self.function(*args)
        else:
            self.function(*args)
        buffers = args[1:]
        if self.parts == 1:
            return {name: buffers[root][at].view(dtype).reshape(shape)
                    for name, root, at, dtype, shape in self.outputs}
        results = {}
        for name, root, at, dtype, shape in self.outputs:
            rows = buffers[root]
            if at.start == 0 and at.stop == rows.shape[1]:  # (the parts' outputs one after another already)
                results[name] = rows.view(dtype).reshape((self.parts * shape[0],) + shape[1:])
            else:
                results[name] = np.concatenate([rows[part, at].view(dtype).reshape(shape)
                                                for part in range(self.parts)])
        return results


def _address(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


def _nbytes(v: _View) -> int:
    return int(np.prod(v.shape, dtype=np.int64)) * np.dtype(v.dtype).itemsize


def key(batch: int) -> tuple[int, int]:
    """What a program is compiled for, beside its network: the batch size and the thread count."""
    return batch, thread_count()


# A run whose batch the threads divide runs as that many parts side by side, each part's layers
# on one thread (`parts`): no parallel region a layer (its wake-up, its barrier, the thread left
# waiting on an uneven share), one a run. In-process A/B at batch 8, 2 threads, against the whole
# batch's program: LeNet-5 0.63× the time (its layers are too small to share), Inception v2 0.88×,
# EfficientNet-B0 0.91×, GoogLeNet 0.97×, ResNet-50 0.96×, MobileNet v1, ResNet-18, VGG-16 and
# YOLOv1 0.99×; AlexNet 1.03×. Where it loses: each part streams the fully connected layers'
# weights from memory on its own, where the whole batch's run shares them out. So a run does not
# split where those weights are over DENSE_BYTES and more than DENSE_BYTES_PER_MAC bytes for each
# multiply-add of a part: AlexNet's 234 MB, 0.082 a MAC; VGG-16's 495 MB are 0.008, YOLOv1's 0.010.
DENSE_BYTES = 1 << 20
DENSE_BYTES_PER_MAC = 0.03


def parts(graph, batch: int, threads: int) -> int:
    """How many parts a run of `batch` images on `threads` threads splits into (1: none; see above).
    Not on Numba's workqueue layer (no TBB or OpenMP): a part's parallel kernels (each on one
    thread) would be parallel regions inside the parts' one, which that layer cannot nest."""
    if threads < 2 or batch < threads or batch % threads or threading_layer() not in ("tbb", "omp"):
        return 1
    summary = analyze(graph, batch // threads)
    dense = 4 * sum(row.params for row in summary.rows if row.op == "linear")
    if dense > DENSE_BYTES and dense > DENSE_BYTES_PER_MAC * summary.macs:
        return 1
    return threads


def one_thread():
    """Within the block, kernels called from this thread run on it alone (their thread count is 1):
    how each part of a split batch runs, in the program and in the loop that judges it (a kernel's
    bits may depend on its thread count: gemm's blocks of sgemm)."""
    return numba_threads(1)


def build(run_traced, values: dict, arena: np.ndarray, fresh: list[np.ndarray], check, parts: int = 1) -> Program:
    """The program of one run: run_traced() runs the network on `values` into the arena's memory
    and the `fresh` buffers and returns its outputs; with parts > 1, one part's run (the first
    part's memory and buffers), traced on one thread. An array the kernels write is told from a
    constant by its contents before and after the run, so `values` should differ from the last
    run's inputs (scratch buffers, `_util.scratch`, are temporaries whatever their contents).
    check(program) → whether the program gives the loop's outputs, asked once per program on
    this machine (a marker file beside its source records the answer). Raises Untraceable."""
    outputs = {}
    names = list(values)
    given = [values[name] for name in names] + [arena] + list(fresh)
    with one_thread() if parts > 1 else contextlib.nullcontext():
        record = trace(lambda: outputs.update(run_traced()), given)
    if record.failure:
        raise Untraceable(record.failure)
    lay = layout(record, given)
    text, table, where = source(record, lay, outputs, parts)
    for call in record.calls:
        bind(call, record.dispatchers[call.symbol])
    function, path = load(text, parts)
    # only gemm's kernels call OpenBLAS in an eval run: without them the program skips holding its
    # pool at one thread (two calls into OpenBLAS each way: ~3 µs of LeNet-5's ~60)
    program = Program(function, lay, table, names, where, any(c.module == gemm.__name__ for c in record.calls),
                      parts)
    program.source = path
    marker = path + ".verified"
    if not os.path.exists(marker):
        if not check(program):
            raise Untraceable("the program's outputs differ from the executor's")
        with open(marker, "w"):
            pass
    return program
