"""`netspec predict`: a network over many inputs, streamed, with results written as they come.

    source (folder, glob, list file, .npy/.npz)  ──read_batch (a background thread)──▶  fixed-size batches
        ──Runner (one Executable, one batch size: compiled once)──▶  per-input results
        ──Writer──▶  OUT (.csv, .jsonl, .parquet), masks or arrays beside it, OUT's errors file

Memory stays bounded: a few batches are decoded ahead, rows go to the file as they come, and an .npy
source is read through a memory map. The file is written under a temporary name and put in place
when the job ends, however it ends (done, an error, Ctrl-C), so OUT holds every finished row and
`--resume` skips them. With `cluster=`, the batches run on Dask workers instead (netspec/cluster.py).
"""
from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import math
import os
import queue
import re
import sys
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from glob import glob
from operator import itemgetter
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from .backends.executor import InputError
from .files import FileReadError, _remove_stale_temporaries, atomic_write, open_regular, read_limited, temporary_name
from .inputs import UnreadableImage, image_pixels, normalize_pixels, open_image
from .ir.graph import Graph
from .progress import clock, columns

FORMATS = (".csv", ".jsonl", ".parquet")
DEFAULT_BATCH = 16


class PredictError(Exception):
    """A job that cannot run as asked: a missing optional package, a disk that fills up."""


# --- the inputs ----------------------------------------------------------------------------------

@dataclass
class Source:
    """The inputs of a job, in a fixed order: `names[i]` names input i in OUT's `path` column (an
    image's path, or `FILE[i]` for sample i of an array file). `rows` picks a part (for a worker)."""
    kind: str  # "images" or "array"
    names: list[str]
    file: str | None = None  # an array source's .npy/.npz file, and the array's name in an .npz
    member: str | None = None
    base: str = field(default_factory=os.getcwd)  # what relative names are relative to (for a worker elsewhere)
    indices: Sequence[int] | None = None  # an array source's: the sample of the file each name is (`FILE[i]`: i)

    def part(self, rows: list[int]) -> "Source":
        return Source(self.kind, [self.names[i] for i in rows], self.file, self.member, self.base,
                      None if self.indices is None else [self.indices[i] for i in rows])

    def path(self, name: str) -> str:
        return os.path.join(self.base, name)


def _input_type(graph: Graph):
    if len(graph.inputs) != 1:
        raise InputError(f"predict feeds a network of one input; this one has {len(graph.inputs)}: "
                         f"{', '.join(graph.inputs)}")
    return next(iter(graph.inputs.values()))


def _walk(folder: Path) -> list[str]:
    """Every file below `folder` (hidden files and folders left out), in a fixed order."""
    found = []
    for root, dirs, files in os.walk(folder, onerror=None):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.join(root, f) for f in sorted(files) if not f.startswith(".")]
    return found


def open_source(source: str, graph: Graph) -> Source:
    """The inputs SOURCE names, checked against the network's input before anything runs: a folder
    (every file below it), a glob, a .txt file listing paths (relative to its folder), a .npy or .npz
    array (N×C×H×W), or one image."""
    type_ = _input_type(graph)
    path = Path(source)
    suffix = path.suffix.lower()
    if suffix in (".npy", ".npz") and path.exists():
        return _array_source(source, type_)
    if path.is_dir():
        names = _walk(path)
    elif suffix == ".txt" and path.exists():
        try:
            text = read_limited(path, 256 << 20, "the list").decode("utf-8", "surrogateescape")
        except FileReadError as e:
            raise InputError(f"cannot read '{source}': {e.strerror}") from None
        lines = [line.strip() for line in text.splitlines()]
        names = [line if os.path.isabs(line) else os.path.join(path.parent, line)
                 for line in lines if line and not line.startswith("#")]
    elif path.exists():
        names = [source]
    elif any(c in source for c in "*?["):
        names = sorted(p for p in glob(source, recursive=True) if not os.path.isdir(p))
    else:
        raise InputError(f"no such file or folder: '{source}'")
    if not names:
        raise InputError(f"'{source}' holds no inputs")
    if type_.rank != 4 or type_.c not in (1, 3):
        raise InputError(f"this network's input is {type_}; images need an input of 1 or 3 channels (C×H×W)")
    return Source("images", names)


def _array_source(source: str, type_) -> Source:
    from .resources import npy_header
    dims = type_.dims
    if source.lower().endswith(".npy"):
        header = npy_header(source)
        if header is None:
            raise InputError(f"'{source}' is not a .npy array file (write one with numpy.save)")
        shape, dtype, member = header[0], header[1], None
    else:
        try:
            with open_regular(source) as file, np.load(file, allow_pickle=False) as archive:
                members = list(archive.files)
                member = "x" if "x" in members else members[0] if len(members) == 1 else None
                if member is None:
                    raise InputError(f"'{source}' holds {', '.join(members) or 'no arrays'}: name the inputs 'x' "
                                     "(numpy.savez(file, x=...))")
                with archive.zip.open(member + ".npy") as f:  # (the shape from the member's header, unread)
                    major, _ = np.lib.format.read_magic(f)
                    read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
                    shape, _, dtype = read(f)
        except (OSError, ValueError, KeyError, EOFError) as e:
            raise InputError(f"cannot read '{source}' as an .npz archive: {e}") from None
        from .resources import Needs, check_fits
        check_fits(Needs({"the array in the file": math.prod(shape) * dtype.itemsize}),  # (read whole, once)
                   hint="the archive's array is too large to read here; save it as a .npy", subject=f"'{source}'")
    shape = tuple(shape)
    if shape == dims:
        shape = (1,) + dims
    want = "N×" + "×".join(map(str, dims))
    if dtype.kind != "f":
        raise InputError(f"'{source}' has dtype {dtype}; expected floating point (float32), {want}")
    if shape[1:] != dims or shape[0] < 1:
        raise InputError(f"'{source}' holds an array of shape {'×'.join(map(str, shape))}; this network takes {want}")
    return Source("array", [f"{source}[{i}]" for i in range(shape[0])], source, member,
                  indices=range(shape[0]))


_ARRAYS: dict[tuple, np.ndarray] = {}  # per process: the array file an array source reads


def _array(source: Source) -> np.ndarray:
    """The array of an array source: a .npy memory-mapped (read as batches need it), an .npz member
    read once per process."""
    try:
        stat = os.stat(source.path(source.file))
    except OSError as e:
        raise InputError(f"cannot read '{source.file}': {e.strerror}") from None
    file = os.path.realpath(source.path(source.file))
    key = (file, stat.st_ino, stat.st_mtime_ns, source.member)  # (the file, not its name)
    if key not in _ARRAYS:
        try:
            with open_regular(file) as f:  # (a regular file: a FIFO would block np.load)
                if source.member is None:
                    array = np.load(file, mmap_mode="r", allow_pickle=False)
                else:
                    with np.load(f, allow_pickle=False) as archive:
                        array = archive[source.member]
        except (OSError, ValueError, EOFError) as e:  # (truncated since its header was read, say)
            raise InputError(f"cannot read '{source.file}': {getattr(e, 'strerror', None) or e}") from None
        _ARRAYS.clear()
        _ARRAYS[key] = array
    return _ARRAYS[key]


def read_batch(source: Source, rows: list[int], graph: Graph, array: np.ndarray | None = None
               ) -> tuple[np.ndarray, list[int], list[tuple[str, str]]]:
    """The inputs `rows` of `source` as the network takes them: (x, the rows read, [(name, reason)] of
    those that could not be). `array`: an array source's array, `_array(source)` (looked up once per job)."""
    type_ = _input_type(graph)
    good, errors = [], []
    if source.kind == "array":
        array = (_array(source) if array is None else array).reshape((-1,) + type_.dims)
        indices = [source.indices[r] for r in rows]
        x = np.empty((len(rows),) + type_.dims, np.float32)  # (copyto: np.array's copy of a memmap is 7× slower)
        if indices == list(range(indices[0], indices[-1] + 1)):
            np.copyto(x, array[indices[0]:indices[-1] + 1])  # (a run of samples: a slice, no gather)
        else:
            np.copyto(x, array[indices])
        finite = np.isfinite(x.reshape(len(rows), -1)).all(axis=1)
        if finite.all():
            return x, list(rows), errors
        for r, ok in zip(rows, finite.tolist()):
            (good if ok else errors).append(r if ok else (source.names[r], "contains NaN or Inf values"))
        return np.ascontiguousarray(x[finite]), good, errors
    pixels = np.empty((len(rows),) + type_.dims, np.uint8)
    paths = [source.path(source.names[r]) for r in rows]
    from .pngs import read_pngs  # (not at the top: Numba's import is for the jobs that read images)
    done = read_pngs(paths, type_, pixels)  # (the small PNGs the fast path takes; the rest are Pillow's)
    for i, (r, path, fast) in enumerate(zip(rows, paths, done.tolist())):
        if not fast:
            try:
                with open_image(path) as image:
                    pixels[i] = image_pixels(image, type_)
            except UnreadableImage as e:
                errors.append((source.names[r], e.reason))
                continue
        if len(good) != i:
            pixels[len(good)] = pixels[i]  # (the rows read, in order)
        good.append(r)
    return normalize_pixels(pixels[:len(good)], graph), good, errors


# --- running the network -----------------------------------------------------------------------

def output_kind(graph: Graph) -> str:
    """"classes" (one N×K output, K ≥ 2), "mask" (one N×K×H×W map, K ≥ 2: argmax per pixel) or "arrays"."""
    if len(graph.outputs) == 1:
        dims = graph.type_of(graph.outputs[0]).dims
        if len(dims) == 1 and dims[0] >= 2:
            return "classes"
        if len(dims) == 3 and dims[0] >= 2:
            return "mask"
    return "arrays"


@dataclass
class Job:
    """What a process needs to run a job's batches (picklable: sent to cluster workers)."""
    graph: Graph
    weights: object  # None (initialized from seed), a path, or a dict of arrays
    seed: int
    batch: int
    top: int
    threads: int | None
    # threads decoding images ahead of the network: one, since decoding holds the GIL for most of an
    # image (against two, in turns: LeNet-5 from PNGs 1.10× the images/s, ResNet-18 from JPEGs 1.02–1.06×)
    decoders: int = 1
    ahead: int = 4  # batches decoded ahead


@dataclass
class Classes:
    """A classifier's results for a batch: its top classes per row, best first (N×top), and their
    softmax probabilities rounded to 6 significant digits (N×top, float64)."""
    classes: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.classes)


_POW10 = np.array([float(10 ** i) for i in range(23)])  # (exact: every power of ten a float holds exactly)


def significant(values: np.ndarray, digits: int = 6) -> np.ndarray:
    """`float(f"{v:.6g}")` of every value (6 significant digits, as the rows hold scores), vectorized.
    A value v = ±k × 10^-m with k of `digits` digits is k / 10^m, which IEEE division rounds as
    float() rounds the decimal k·10^-m: the same float. The values it cannot do so surely (a product
    v × 10^m within a hair of a half, so that its rounding could go the other way than the exact
    value's; powers of ten past 10^22; zero, NaN, inf) are formatted one by one."""
    v = np.asarray(values, dtype=np.float64)
    a = np.abs(v).ravel()
    with np.errstate(all="ignore"):
        m = (digits - 1) - np.floor(np.log10(a))  # (decimal places that leave `digits` digits)
        fast = np.isfinite(m) & (m >= 0) & (m <= 22)
        scale = _POW10[np.where(fast, m, 0).astype(np.intp)]
        scaled = a * scale
        k = np.rint(scaled)
        fast &= (np.abs(scaled - np.floor(scaled) - 0.5) > 1e-6) & (k >= _POW10[digits - 1]) & (k < _POW10[digits])
        out = np.copysign(k / scale, v.ravel())
    slow = np.flatnonzero(~fast)
    if len(slow):
        flat = v.ravel()
        out[slow] = [float(f"{x:.{digits}g}") for x in flat[slow].tolist()]
    return out.reshape(v.shape)


class Runner:
    """One compiled network at one batch size, in lanes: `run(x)` pads x to the batch (so that the
    network is compiled once, its program included) and gives one result per row of x.

    A lane is a copy of the compiled network with a thread of its own: with T kernel threads, T
    lanes of one thread each run T batches side by side (`submit`), as many as the memory available
    holds (`_lanes`). Why not one network on T threads: a small network's layers are too short to
    share out (LeNet-5 at batch 64 on 2 cores: 52,000 images/s in two lanes, 46,000 on two threads),
    and a thread that decodes images beside them takes a core from one lane for a while, where it
    would stall every layer of a network run on both; large networks lose little or nothing (images/s
    in two lanes against one on two threads, batch 16, rounds in turns: ResNet-18 0.92, 1.03, 1.02;
    MobileNet v1 1.06, 1.06, 1.02). The price is memory: each lane has its own activations."""

    def __init__(self, job: Job, progress: bool = True, threads: int | None = None):
        import numba

        from . import compile
        from .weights import init_weights, load_weights
        self.job, self.kind = job, output_kind(job.graph)
        threads = threads or numba.get_num_threads()
        self.lanes = _lanes(job.graph, job.batch, threads)
        weights = job.weights  # (read once: every lane binds the same arrays)
        if weights is None:
            weights = init_weights(job.graph, job.seed)
        elif not isinstance(weights, dict):
            weights = load_weights(weights, job.graph)
        self.exes = [compile(job.graph, weights=weights, seed=job.seed, progress=progress and lane == 0)
                     for lane in range(self.lanes)]
        self._free: queue.SimpleQueue = queue.SimpleQueue()  # the lanes' networks not running now
        for exe in self.exes:
            self._free.put(exe)
        self._pool = ThreadPoolExecutor(self.lanes, "netspec-lane", initializer=_enter_lane,
                                        initargs=(max(1, threads // self.lanes),))
        zeros = np.zeros((job.batch,) + _input_type(job.graph).dims, np.float32)
        try:
            for exe in self.exes:  # the first run loads the kernels, the second compiles the program: not in the timing
                for _ in range(2):
                    self._pool.submit(exe.run, zeros).result()
        except BaseException:
            self.close()
            raise

    def submit(self, fn, *args) -> Future:
        """fn(*args) in a lane's thread, where `run` takes a lane's network."""
        return self._pool.submit(fn, *args)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def run(self, x: np.ndarray) -> "Classes | list":
        """The results of the rows of x: a classifier's as one `Classes`, a mask or arrays per row."""
        return self.run_group([x])

    def run_group(self, xs: list[np.ndarray]) -> "Classes | list":
        """The results of the rows of several batches, run back to back on one lane, as of one batch
        (a classifier's top classes made once for them all)."""
        if not getattr(_LANE, "inside", False):  # (a lane's thread count is the one its program is compiled for)
            return self.submit(self.run_group, xs).result()
        exe = self._free.get()
        try:
            if self.kind == "classes":
                return self.classes(np.concatenate([self._logits(exe, x) for x in xs]))
            results = []
            for x in xs:
                results += self._results(self._forward(exe, x), len(x))
            return results
        finally:
            self._free.put(exe)

    def _results(self, outputs: dict, n: int) -> list:
        if self.kind == "mask":
            y = next(iter(outputs.values()))[:n]
            dtype = np.uint8 if y.shape[1] <= 256 else np.uint16
            return list(y.argmax(axis=1).astype(dtype))
        return [{name: np.array(y[i]) for name, y in outputs.items()} for i in range(n)]

    def _forward(self, exe, x: np.ndarray) -> dict:
        n = len(x)
        if n < self.job.batch:
            x = np.concatenate([x, np.zeros((self.job.batch - n,) + x.shape[1:], np.float32)])
        return exe.run(x)

    def _logits(self, exe, x: np.ndarray) -> np.ndarray:
        """A classifier's outputs for the rows of x (float64, a copy: the next run reuses its buffers)."""
        return next(iter(self._forward(exe, x).values()))[:len(x)].astype(np.float64)

    def classes(self, logits: np.ndarray) -> "Classes":
        """The top classes of rows of logits (the whole batch at once: no Python per row)."""
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        top = np.argsort(-p, axis=1, kind="stable")[:, :self.job.top]
        return Classes(top, significant(np.take_along_axis(p, top, axis=1)))


_LANE = threading.local()  # .inside: this thread is a lane's


def _enter_lane(threads: int) -> None:
    import numba
    numba.set_num_threads(threads)  # (Numba's count is per thread)
    _LANE.inside = True


def _lanes(graph: Graph, batch: int, threads: int) -> int:
    """Lanes for `threads` kernel threads: one a thread, as many as the memory available holds (each
    lane its own activations, kernel workspace and packed weights; the weights and the inputs held
    are shared)."""
    from .resources import available_memory, run_needs
    parts = run_needs(graph.active("eval"), batch).parts
    shared = parts["weights"] + parts["netspec itself"]
    per_lane = sum(parts.values()) - shared
    room, _ = available_memory()
    return max(1, min(threads, (room - shared - _inputs_held(graph, batch, threads)) // max(1, per_lane)))


def _inputs_held(graph: Graph, batch: int, lanes: int) -> int:
    """Bytes of inputs a job holds beside its network: the batches decoded ahead (Job.ahead), a
    padded copy, and those in the lanes or queued for them (lanes + 1; an array's in groups of up
    to _GROUP batches and _GROUP_BYTES)."""
    one = batch * math.prod(_input_type(graph).dims) * 4
    return (Job.ahead + 1) * one + (lanes + 1) * max(one, min(_GROUP_BYTES, _GROUP * one))


_GROUP, _GROUP_BYTES = 8, 8 << 20  # an array's batches a lane runs back to back: at most 8, and 8 MiB of them


def run_batches(runner: Runner, source: Source, rows: list[int]) -> Iterator[tuple[list[str], list, list]]:
    """(names, results, errors) per batch, in order. The network's lanes run batches side by side,
    a few ahead of the caller, who writes the rows of those done meanwhile; a thread decodes
    images a few batches ahead of the lanes (an array's batches are read in the lane: a copy). The
    compiled program releases the GIL, so all of them overlap."""
    job, graph = runner.job, runner.job.graph
    chunks = (rows[i:i + job.batch] for i in range(0, len(rows), job.batch))
    array = _array(source) if source.kind == "array" else None
    running: deque = deque()
    if array is not None:
        # an array's batches, read in the lane (a copy), several back to back: a batch's rows (the
        # softmax, top-k and rounding of its scores, then making and writing them) cost about as
        # much again for 8 batches as for one (LeNet-5 from an .npy: ~2.5 µs an input a batch of 64 at a time)
        group_size = max(1, min(_GROUP, _GROUP_BYTES // max(1, 4 * job.batch * math.prod(_input_type(graph).dims))))

        def run_group(group):
            reads = [read_batch(source, chunk, graph, array) for chunk in group]
            xs = [x for x, good, _ in reads if good]
            return ([source.names[r] for _, good, _ in reads for r in good], runner.run_group(xs) if xs else [],
                    [e for _, _, errors in reads for e in errors])
        try:
            while group := list(itertools.islice(chunks, group_size)):
                running.append(runner.submit(run_group, group))
                while len(running) > runner.lanes:
                    yield running.popleft().result()
            while running:
                yield running.popleft().result()
        finally:
            _settle(running)
        return

    def run(read):  # (in a lane: the batch decoded, then run)
        x, good, errors = read.result()
        return [source.names[r] for r in good], (runner.run(x) if good else []), errors
    readers = ThreadPoolExecutor(max(1, job.decoders), thread_name_prefix="netspec-decode")
    reading: deque = deque()
    try:
        for chunk in chunks:
            reading.append(readers.submit(read_batch, source, chunk, graph))
            if len(reading) >= job.ahead:
                break
        while reading or running:
            while reading and len(running) <= runner.lanes:
                running.append(runner.submit(run, reading.popleft()))
                chunk = next(chunks, None)
                if chunk is not None:
                    reading.append(readers.submit(read_batch, source, chunk, graph))
            yield running.popleft().result()
    finally:
        _settle(running)
        readers.shutdown(wait=True, cancel_futures=True)


def _settle(running: deque) -> None:
    """The lanes' tasks not taken: cancelled where not started, else waited for (they read the
    source's arrays and files, which close when the job ends)."""
    for future in running:
        future.cancel()
    for future in running:
        if not future.cancelled():
            future.exception()


# --- on a cluster's workers (netspec/cluster.py sends these there) --------------------------------

_RUNNERS: dict[tuple, Runner] = {}  # per worker process: (job key, threads) → its compiled network
_LOCK = threading.Lock()


def _threads(job: Job, slots: dict[str, int]) -> int:
    """Kernel threads per task on this worker: --threads, else the machine's cores shared by the task
    slots of every worker on it (`slots`: per host, from the scheduler)."""
    if job.threads:
        return job.threads
    from distributed import get_worker
    from distributed.comm import get_address_host
    return max(1, (os.cpu_count() or 1) // max(1, slots.get(get_address_host(get_worker().address), 1)))


def _runner(key: str, job: Job, weights, slots) -> tuple[Runner, int]:
    """This worker's compiled network for the job, and its kernel threads. The thread counts are set
    here, once per process for BLAS (threadpoolctl takes milliseconds a call: not once per task)."""
    import numba
    threads = min(_threads(job, slots), numba.config.NUMBA_NUM_THREADS)
    with _LOCK:
        runner = _RUNNERS.get((key, threads))
        if runner is None:
            from threadpoolctl import threadpool_limits

            from .threads import start_numba_threads
            for old in _RUNNERS.values():  # (a new job: the last one's network is not needed any more)
                old.close()
            _RUNNERS.clear()
            job.weights = weights
            start_numba_threads()
            threadpool_limits(limits=threads, user_api="blas")  # (kept: this process works for the job)
            numba.set_num_threads(threads)
            runner = _RUNNERS[key, threads] = Runner(job, progress=False, threads=threads)
        return runner, threads


def warm_worker(key: str, job: Job, weights, slots) -> float:
    """Compile the network on this worker before the clock starts; the seconds a batch takes."""
    runner, _ = _runner(key, job, weights, slots)
    from .pngs import warm_pngs
    warm_pngs(job.graph)
    x = np.zeros((job.batch,) + next(iter(job.graph.inputs.values())).dims, np.float32)
    start = time.perf_counter()
    runner.run(x)
    return time.perf_counter() - start


def run_part(key: str, job: Job, weights, slots, source: Source) -> list:
    """One partition, run on a worker: [(names, results, errors)] per batch."""
    runner, _ = _runner(key, job, weights, slots)
    return list(run_batches(runner, source, list(range(len(source.names)))))


# --- writing the results -----------------------------------------------------------------------

def class_rows(names: list[str], result: Classes, labels: list[str] | None) -> list[dict]:
    """A classifier's rows, a batch at once: path, then class, score (softmax probability, 6 digits)
    and label, best first."""
    if not len(names):
        return []
    top = result.classes.shape[1]
    if top == 1 and not labels:  # (the common case, as one comprehension)
        return [{"path": n, "class": c, "score": s}
                for n, c, s in zip(names, result.classes[:, 0].tolist(), result.scores[:, 0].tolist())]
    values = [names]
    for k in range(top):
        values += [result.classes[:, k].tolist(), result.scores[:, k].tolist()]
        if labels:
            values.append([labels[c] for c in values[-2]])
    keys = _columns("classes", top, labels)
    return [dict(zip(keys, row)) for row in zip(*values)]


def _columns(kind: str, top: int, labels: list[str] | None) -> list[str]:
    if kind == "classes":
        cols = ["path"]
        for k in range(1, top + 1):
            suffix = "" if k == 1 else f"_{k}"
            cols += [f"class{suffix}", f"score{suffix}"] + ([f"label{suffix}"] if labels else [])
        return cols
    return ["path", "mask" if kind == "mask" else "output"]


def beside(out: Path, what: str) -> Path:
    """A file or folder named after OUT: `preds.csv` → `preds.errors.csv`, `preds.masks`."""
    return out.with_name(out.stem + "." + what)


class Writer:
    """Rows into OUT (csv, jsonl or parquet) as they come, through a temporary file that `close()`
    puts in place; masks (PNG) or arrays (.npy/.npz) per input in a folder beside OUT; the inputs
    that could not be read in OUT's errors file (path, reason)."""

    def __init__(self, out: Path, kind: str, top: int, labels: list[str] | None, resume: bool, force: bool):
        self.out, self.kind, self.top, self.labels = out, kind, top, labels
        self.format = out.suffix.lower()
        self.columns = _columns(kind, top, labels)
        self.errors_path = beside(out, "errors.csv")
        self.folder = beside(out, "masks" if kind == "mask" else "outputs")
        try:
            self.done = [row["path"] for row in self._read_out()] if resume and out.exists() else []
        except (OSError, ValueError, KeyError, TypeError) as e:  # (pyarrow's errors are ValueErrors and OSErrors)
            raise InputError(f"cannot resume '{out}': it is not a {self.format} file this command wrote ({e})") from None
        _remove_stale_temporaries(out)  # (a killed job's)
        self.rows = len(self.done)
        self.errors: list[tuple[str, str]] = []
        self.tmp = out.parent / temporary_name(out, 0)
        self._buffer: list[dict] = []
        self._parquet = None
        self.file = open(self.tmp, "w" if self.format != ".parquet" else "wb", **(
            {"newline": "", "encoding": "utf-8", "errors": "surrogateescape"} if self.format != ".parquet" else {}))
        try:
            if self.format == ".csv":
                self._csv = csv.writer(self.file)
                self._csv.writerow(self.columns)
            self._copy_finished()
        except BaseException:
            self.file.close()
            self.tmp.unlink(missing_ok=True)
            raise

    # resume: the rows OUT holds, checked to have this job's columns, copied first into the new file
    def _read_out(self):
        if self.format == ".parquet":
            pq = _parquet()
            table = pq.read_table(self.out)
            self._check_columns(table.column_names)
            return ({"path": p} for p in table.column("path").to_pylist())
        return self._text_rows()

    def _text_rows(self):
        with open(self.out, newline="", encoding="utf-8", errors="surrogateescape") as f:
            if self.format == ".csv":
                reader = csv.reader(f)
                header = next(reader, None)
                self._check_columns(header or [])
                for values in reader:
                    if len(values) == len(self.columns):
                        yield dict(zip(self.columns, values))
            else:
                for line in f:
                    if line.strip():
                        row = json.loads(line)
                        self._check_columns(list(row) if isinstance(row, dict) else [])
                        yield row

    def _check_columns(self, found: list[str]) -> None:
        if found != self.columns:
            from .options import UsageError
            raise UsageError(f"cannot resume '{self.out}': it has the columns {', '.join(found) or 'none'}, this job "
                             f"writes {', '.join(self.columns)} (resume with the same --top and --labels)")

    def _copy_finished(self) -> None:
        if not self.done:
            return
        if self.format == ".parquet":
            pq = _parquet()
            source = pq.ParquetFile(self.out)
            self._parquet = pq.ParquetWriter(self.file, source.schema_arrow)
            for batch in source.iter_batches():
                self._parquet.write_batch(batch)
        elif self.format == ".csv":
            with open(self.out, newline="", encoding="utf-8", errors="surrogateescape") as f:
                reader = csv.reader(f)
                next(reader)
                for values in reader:
                    if len(values) == len(self.columns):
                        self._csv.writerow(values)
        else:
            with open(self.out, encoding="utf-8", errors="surrogateescape") as f:
                for line in f:
                    if line.strip():
                        self.file.write(line if line.endswith("\n") else line + "\n")
        self.file.flush()

    def make_rows(self, names: list[str], results) -> list[dict]:
        """The rows of a batch; masks or arrays are written to their files here."""
        if self.kind == "classes":
            return class_rows(names, results, self.labels)
        return [self._file_row(name, result) for name, result in zip(names, results)]

    def _file_row(self, name: str, result) -> dict:
        digest = hashlib.sha1(name.encode("utf-8", "surrogateescape")).hexdigest()[:10]
        stem = re.sub(r"[^\w.-]", "_", Path(name).stem)[:60]
        self.folder.mkdir(exist_ok=True)
        buffer = io.BytesIO()
        if self.kind == "mask":
            from PIL import Image
            target = self.folder / f"{stem}-{digest}.png"
            Image.fromarray(result).save(buffer, format="PNG")
        elif len(result) == 1:
            target = self.folder / f"{stem}-{digest}.npy"
            np.save(buffer, next(iter(result.values())))
        else:
            target = self.folder / f"{stem}-{digest}.npz"
            np.savez(buffer, **result)
        atomic_write(target, buffer.getvalue())
        return {"path": name, self.columns[1]: str(target)}

    def write(self, rows: list[dict], errors: list[tuple[str, str]]) -> None:
        self.errors += errors
        self.rows += len(rows)
        if self.format == ".csv":
            self._csv.writerows(map(itemgetter(*self.columns), rows))
            self.file.flush()
        elif self.format == ".jsonl":
            self.file.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
            self.file.flush()
        else:  # parquet: row groups of a few thousand rows
            self._buffer += rows
            if len(self._buffer) >= 4096:
                self._flush_parquet()

    def _flush_parquet(self) -> None:
        import pyarrow as pa
        if not self._buffer:
            return
        table = pa.Table.from_pylist(self._buffer, schema=self._parquet.schema if self._parquet else self._schema(pa))
        if self._parquet is None:
            self._parquet = _parquet().ParquetWriter(self.file, table.schema)
        self._parquet.write_table(table)
        self._buffer = []

    def _schema(self, pa):
        types = {"path": pa.string(), "mask": pa.string(), "output": pa.string()}
        return pa.schema([(c, types.get(c) or (pa.int64() if c.startswith("class") else pa.float64()
                                                 if c.startswith("score") else pa.string())) for c in self.columns])

    def close(self, discard: bool = False) -> None:
        """Put OUT in place with every row written so far, and the errors file beside it (or, with
        `discard`, leave OUT as it was)."""
        if discard:
            self.file.close()
            self.tmp.unlink(missing_ok=True)
            return
        try:
            if self.format == ".parquet":
                import pyarrow as pa
                self._flush_parquet()
                if self._parquet is None:  # (no row at all: a file with the columns)
                    self._parquet = _parquet().ParquetWriter(self.file, self._schema(pa))
                self._parquet.close()
            self.file.close()
            os.replace(self.tmp, self.out)
        finally:
            self.tmp.unlink(missing_ok=True)
        if self.errors or self.errors_path.exists():
            text = io.StringIO()
            w = csv.writer(text)
            w.writerow(["path", "reason"])
            w.writerows(self.errors)
            atomic_write(self.errors_path, text.getvalue().encode("utf-8", "surrogateescape"))


def _parquet():
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise PredictError("writing .parquet needs pyarrow: .venv/bin/pip install -e '.[parquet]' "
                           "(or write .csv or .jsonl)") from None
    return pq


def read_labels(path: str, classes: int) -> list[str]:
    try:
        text = read_limited(path, 16 << 20, "the labels file").decode("utf-8", "replace")
    except FileReadError as e:
        raise InputError(f"cannot read labels '{path}': {e.strerror}") from None
    labels = [line.strip() for line in text.splitlines()]
    while labels and not labels[-1]:
        labels.pop()
    if len(labels) != classes:
        raise InputError(f"'{path}' has {len(labels)} labels (one a line); this network has {classes} classes")
    return labels


# --- progress ----------------------------------------------------------------------------------

class Progress:
    """A bar on stderr from the start: inputs done of the total, images/s, time left, errors. A
    terminal sees one line redrawn twice a second (by a thread, so it moves while a batch runs); a
    log gets a line every `log_every` seconds."""

    def __init__(self, total: int, enabled: bool = True, stream=None, log_every: float = 10.0):
        self.total, self.done, self.errors = total, 0, 0
        self.stream = stream or sys.stderr
        self.tty = getattr(self.stream, "isatty", lambda: False)()
        self.interval = 0.5 if self.tty else log_every
        self.start = time.perf_counter()
        self.lock, self.stop = threading.Lock(), threading.Event()
        self.thread = None
        if enabled:
            self.draw()
            self.thread = threading.Thread(target=self._run, name="netspec-predict-progress", daemon=True)
            self.thread.start()

    def add(self, rows: int, errors: int) -> None:
        with self.lock:
            self.done += rows + errors
            self.errors += errors

    def _run(self) -> None:
        while not self.stop.wait(self.interval):
            self.draw()

    def line(self, bar: bool) -> str:
        elapsed = time.perf_counter() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = f", about {clock((self.total - self.done) / rate)} left" if rate > 0 else ""
        errors = f"  {self.errors:,} error{'s' if self.errors != 1 else ''}" if self.errors else ""
        tail = f"{self.done:,}/{self.total:,}  {rate:,.1f} images/s  {clock(elapsed)}{left}{errors}"
        if not bar:
            return f"netspec: predict: {tail}"
        filled = int(20 * self.done / max(self.total, 1))
        return f"netspec: predict [{('=' * filled + ('>' if filled < 20 else '')).ljust(20)}] {tail}"

    def draw(self) -> None:
        with self.lock:
            if self.tty:
                width = columns(self.stream) - 1
                line = self.line(True)
                self.stream.write("\r\033[K" + (line if len(line) <= width else self.line(False))[:width])
            else:
                self.stream.write(self.line(False) + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self.thread is not None:
            self.stop.set()
            self.thread.join()
            self.thread = None
            if self.tty:
                self.stream.write("\r\033[K")
                self.stream.flush()


# --- the job -----------------------------------------------------------------------------------

@dataclass
class Predictions:
    """An iterator of result rows (dicts with OUT's columns); after it ends, `rows` (written), `errors`
    ([(path, reason)]), `seconds` and `rate` (inputs per second). `close()` stops the job early and
    finishes OUT with the rows so far."""
    _rows: Iterator[dict]
    total: int  # inputs to run (those OUT did not have yet)
    batch: int
    skipped: int = 0  # inputs OUT already had (resume)
    rows: int = 0
    errors: list = field(default_factory=list)
    seconds: float = 0.0

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        return next(self._rows)

    def close(self) -> None:
        self._rows.close()

    @property
    def rate(self) -> float:
        return (self.rows + len(self.errors)) / self.seconds if self.seconds > 0 else 0.0


def check_output(out: str, resume: bool, force: bool, kind: str) -> Path:
    """OUT's format and place, before any work: an existing OUT (or the folder of masks beside it) is
    refused without --force or --resume."""
    from .options import UsageError, check_writable
    path = Path(out)
    if path.suffix.lower() not in FORMATS:
        raise UsageError(f"'{out}': write the results to a {', '.join(FORMATS)} file")
    if os.path.lexists(path) and not (force or resume) and not path.is_dir():
        raise UsageError(f"'{out}' already exists; pass --resume to continue it (the inputs it has are skipped) "
                         "or --force to replace it")
    check_writable(out, force or resume)
    for what in ("errors.csv",) + (("masks",) if kind == "mask" else ("outputs",) if kind == "arrays" else ()):
        other = beside(path, what)
        if os.path.lexists(other) and not (force or resume):
            raise UsageError(f"'{other}' already exists; pass --force to replace it or --resume to continue")
        if what != "errors.csv" and os.path.lexists(other) and not other.is_dir():
            raise UsageError(f"cannot write masks or arrays into '{other}': it is not a folder")
    if path.suffix.lower() == ".parquet":
        _parquet()
    return path


def _check_memory(graph: Graph, batch: int) -> None:
    """ResourceError, before any work, when the network at this batch (one lane) and the inputs it
    holds would not fit in the memory available (as `netspec run` checks)."""
    from .resources import Needs, check_fits, run_needs
    needs = run_needs(graph.active("eval"), batch)
    check_fits(Needs({**needs.parts, "inputs held": _inputs_held(graph, batch, 1)}), subject="this job")


def predict(graph, source: str, out: str | os.PathLike | None = None, *, weights=None, seed: int = 0,
            batch: int = DEFAULT_BATCH, top: int = 1, labels: str | list[str] | None = None,
            threads: int | None = None, cluster: str | None = None, resume: bool = False, force: bool = False,
            progress: bool = False, partition: int | None = None) -> Predictions:
    """Run `graph` (a Graph, or a spec's path) over every input of `source` and return an iterator of
    result rows, written to `out` (.csv, .jsonl or .parquet) as they come when it is given. See
    `netspec predict --help` and the README's Predict section. Everything that can be checked
    (the source against the network's input, `out`, the labels) is checked here, before any work;
    the work runs as the iterator is consumed."""
    from .options import UsageError
    if not isinstance(graph, Graph):
        from . import load
        graph = load(graph)
    kind = output_kind(graph)
    if top < 1:
        raise UsageError("--top must be at least 1")
    if kind == "classes":
        classes = graph.type_of(graph.outputs[0]).dims[0]
        if top > classes:
            raise UsageError(f"--top {top}: this network has {classes} classes")
        if isinstance(labels, (str, os.PathLike)):
            labels = read_labels(str(labels), classes)
        elif labels is not None and len(labels) != classes:
            raise InputError(f"{len(labels)} labels given; this network has {classes} classes")
    elif top != 1 or labels:
        raise UsageError("--top and --labels are for classifiers (one N×K output); this network's output is "
                         + ("a map: each row names a mask" if kind == "mask" else "written as arrays"))
    inputs = open_source(str(source), graph)
    _check_memory(graph, max(1, min(batch, len(inputs.names))))
    path = check_output(str(out), resume, force, kind) if out is not None else None
    engine = None
    if cluster is not None:
        from .cluster import connect
        engine = connect(cluster)  # (before the file is opened: an unreachable cluster is refused first)
    writer = None
    try:
        if path is not None:
            writer = Writer(path, kind, top, labels, resume, force)
        done = set(writer.done) if writer else set()
    except BaseException:
        if engine is not None:
            engine.close()
        raise
    rows = [i for i, name in enumerate(inputs.names) if name not in done]
    batch = max(1, min(batch, len(rows)))
    job = Job(graph, weights, seed, batch, top, threads)
    result = Predictions(iter(()), len(rows), batch, skipped=len(inputs.names) - len(rows))
    result._rows = _work(job, inputs, rows, writer, engine, result, progress, partition, labels)
    next(result._rows)  # (into its try: OUT is finished and the cluster closed however the job ends)
    return result


def _work(job, source, rows, writer, engine, result, progress, partition, labels) -> Iterator[dict]:
    from .threads import set_threads
    bar = None
    make_rows = writer.make_rows if writer else _plain_rows(output_kind(job.graph), labels)
    ran = False  # whether a batch came back: a job that fails before (bad weights, Ctrl-C) leaves OUT as it was
    runner = batches = None
    try:
        yield None  # (primed by predict(): from here on, closing the iterator runs `finally`)
        with set_threads(job.threads if engine is None else None):
            if not rows:  # (resumed with nothing left to do)
                batches = iter(())
            elif engine is None:
                runner = Runner(job, progress)
                if source.kind == "images":
                    from .pngs import warm_pngs
                    warm_pngs(job.graph)
                batches = run_batches(runner, source, rows)
            else:
                shipped = Job(job.graph, None, job.seed, job.batch, job.top, job.threads, job.decoders, job.ahead)
                batches = engine.run(shipped, job.weights, source, rows, partition, warm_worker, run_part)
            bar = Progress(len(rows), progress)
            start = time.perf_counter()
            for names, results, errors in batches:
                ran = True
                try:
                    out_rows = make_rows(names, results)
                    if writer:
                        writer.write(out_rows, errors)
                except OSError as e:  # (a full disk: OUT keeps the rows written before)
                    raise PredictError(f"cannot write the results: {e.strerror or e}") from None
                result.rows += len(out_rows)
                result.errors += errors
                result.seconds = time.perf_counter() - start
                bar.add(len(out_rows), len(errors))
                yield from out_rows
    finally:
        if bar is not None:
            bar.close()
        try:
            if hasattr(batches, "close"):  # (a job stopped early: its decoding and lanes wound up now)
                batches.close()
            if runner is not None:
                runner.close()
            if engine is not None:
                engine.close()
        finally:
            if writer is not None:
                try:
                    writer.close(discard=not ran and sys.exc_info()[0] is not None)
                except OSError as e:
                    raise PredictError(f"cannot write '{writer.out}': {e.strerror or e}") from None


def _plain_rows(kind: str, labels):
    """Rows without an OUT file (the Python API's `out=None`): masks and arrays stay arrays."""
    def rows(names, results) -> list[dict]:
        if kind == "classes":
            return class_rows(names, results, labels)
        column = "mask" if kind == "mask" else "output"
        return [{"path": name, column: result} for name, result in zip(names, results)]
    return rows


# --- the command -------------------------------------------------------------------------------

def cmd_predict(args) -> int:
    from .options import load_spec
    graph = load_spec(args)
    job = predict(graph, args.input, args.output, weights=args.weights, seed=args.seed, batch=args.batch,
                  top=args.top, labels=args.labels, threads=args.threads, cluster=args.cluster,
                  resume=args.resume, force=args.force, progress=True)
    where = f" on {args.cluster}" if args.cluster else ""
    skipped = f" ({job.skipped:,} already in {args.output})" if job.skipped else ""
    print(f"netspec: predicting {_count(job.total, 'input')}{skipped} with {graph.name}, batch {job.batch}{where}",
          file=sys.stderr)
    try:
        for _ in job:
            pass
    except KeyboardInterrupt:
        job.close()
        print(f"netspec: interrupted; '{args.output}' keeps the {job.rows + job.skipped:,} rows finished so far: "
              "continue with --resume", file=sys.stderr)
        raise
    errors = beside(Path(args.output), "errors.csv")
    print(f"wrote {args.output}: {_count(job.rows + job.skipped, 'row')}"
          + (f" ({job.rows:,} new)" if job.skipped else "")
          + (f", {_count(len(job.errors), 'input')} that could not be read (listed in {errors})" if job.errors
             else ", no errors")
          + f"; {job.rate:,.1f} images/s ({job.seconds:,.1f} s)")
    return 0


def _count(n: int, word: str) -> str:
    return f"{n:,} {word}{'s' if n != 1 else ''}"


def add_commands(sub, spec_options) -> None:
    from .options import positive_int, seed_int
    p = sub.add_parser("predict", help="run a spec over a folder, glob, list or array of inputs; results to a file",
                       description="Stream inputs through the network and write one row per input as it comes.")
    spec_options(p)
    p.add_argument("--input", required=True, metavar="SOURCE",
                   help="a folder (every file below it), a glob ('imgs/*.png'), a .txt list of paths, or a .npy/.npz "
                        "batch (N×C×H×W)")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="the results: .csv, .jsonl or .parquet (unreadable inputs go to OUT's .errors.csv)")
    p.add_argument("--weights", metavar="FILE.safetensors", help="weights (default: initialized from --seed)")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the initialized weights (default 0)")
    p.add_argument("--batch", type=positive_int, default=DEFAULT_BATCH, help=f"batch size (default {DEFAULT_BATCH})")
    p.add_argument("--top", type=positive_int, default=1, help="classes per row, best first (default 1)")
    p.add_argument("--labels", metavar="FILE", help="class names, one a line: adds label columns")
    p.add_argument("--threads", type=positive_int, help="threads for the kernels (default: all cores)")
    p.add_argument("--cluster", metavar="local:N|ADDRESS",
                   help="run on Dask: local:N starts N local workers; tcp://HOST:PORT joins a scheduler")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true", help="skip the inputs OUT already has, keep its rows")
    group.add_argument("--force", action="store_true", help="replace OUT (and its errors file, masks) if there")
    p.set_defaults(func=cmd_predict)
