"""The compiled program (backends/cpu/program.py): every zoo spec's eval run compiles into one
program that gives the executor's loop the same bits; runs that cannot be replayed keep the loop,
with a warning; programs are per batch size and thread count, rebuilt for new weights, cached on
disk, and safe to run from several threads."""
from __future__ import annotations

import contextlib
import os
import threading
import warnings

import numpy as np
import pytest

import netspec
from netspec.backends.cpu import program as programs
from netspec.threads import set_threads
from netspec.weights import init_weights

from test_run import SPECS, ZOO, _random_weights

SMALL = """
input: {shape: [3, 12, 12]}
layers:
  - {op: conv2d, name: c1, out: 8, kernel: 3, padding: 1}
  - {op: relu, name: r1}
  - {op: conv2d, name: c2, out: 8, kernel: 1, stride: 2}
  - {op: center_crop, name: crop, size: [4, 4]}
  - {op: flatten}
  - {op: linear, name: fc, out: 5}
"""


def _loop(graph, weights, batch_x):
    """The executor's loop alone (no program), as the judge: over the parts a program splits the
    batch into (`programs.parts`), one after another on one thread, as one batch where it does not
    split it."""
    exe = netspec.compile(graph, weights=weights, progress=False)
    parts = programs.parts(exe.graph, *programs.key(len(batch_x)))
    exe._programs = None
    with set_threads(1) if parts > 1 else contextlib.nullcontext():  # (each part runs on one thread)
        outs = [exe.run(x) for x in np.split(batch_x, parts)]
    return {name: np.concatenate([out[name] for out in outs]) for name in outs[0]}


def _runs(exe, x, times=3):
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # (a program that fails to build warns)
        return [exe.run(x) for _ in range(times)]


@pytest.mark.parametrize("name,variant,params", ZOO, ids=[f"{s}{'-' + v if v else ''}" for s, v, _ in ZOO])
def test_every_zoo_spec_compiles_into_a_program_that_gives_the_same_bits(name, variant, params):
    graph = netspec.load(SPECS / f"{name}.yaml", variant=variant, params=params)
    weights = _random_weights(graph)
    dims = graph.inputs[next(iter(graph.inputs))].dims
    for batch in (1, 2):
        x = np.random.default_rng(batch).standard_normal((batch,) + dims, dtype=np.float32)
        exe = netspec.compile(graph, weights=weights, progress=False)
        first, second, third = _runs(exe, x)  # the loop, the loop while it compiles, the program
        program = exe.compiled[programs.key(batch)]
        assert isinstance(program, programs.Program)
        expected = _loop(graph, weights, x)
        for out in (first, second, third):
            assert out.keys() == expected.keys()
            for key in expected:
                np.testing.assert_array_equal(out[key], expected[key])
        # the arrays a run returns stay the caller's
        again = exe.run(-x)
        for key in expected:
            np.testing.assert_array_equal(third[key], expected[key])
            assert not np.shares_memory(again[key], third[key])


def test_a_kernel_whose_python_computes_is_caught_and_the_loop_kept(monkeypatch, load_spec):
    """A kernel that does its work in Python (here center_crop's copy, in numpy) is invisible to the
    trace: the new program's outputs differ from the loop's, so it is not used, with a warning;
    every run's outputs stay right."""
    from netspec.backends.cpu import tensor

    def crop_in_numpy(x, top, left, y):
        y[...] = x[:, :, top:top + y.shape[2], left:left + y.shape[3]]
    monkeypatch.setattr(tensor, "_crop", crop_in_numpy)
    graph = load_spec(SMALL)
    weights = init_weights(graph, 0)
    x = np.random.default_rng(0).standard_normal((2, 3, 12, 12), dtype=np.float32)
    exe = netspec.compile(graph, weights=weights, progress=False)
    expected = netspec.compile(graph, backend="reference", weights=weights).run(x)
    exe.run(x)
    with pytest.warns(RuntimeWarning, match="kernel by kernel.*differ"):
        exe.run(x)
    assert exe.compiled[programs.key(2)] is False
    for out in (exe.run(x), exe.run(x)):
        np.testing.assert_allclose(out["fc"], expected["fc"], rtol=1e-5, atol=1e-5)


def test_a_kernel_returning_a_value_cannot_be_replayed(monkeypatch, load_spec):
    from numba import njit
    from netspec.backends.cpu import tensor

    original = tensor._crop

    @njit
    def crop_and_count(x, top, left, y):
        original(x, top, left, y)
        return 1
    monkeypatch.setattr(tensor, "_crop", crop_and_count)
    graph = load_spec(SMALL)
    exe = netspec.compile(graph, progress=False)
    x = np.ones((1, 3, 12, 12), np.float32)
    exe.run(x)
    with pytest.warns(RuntimeWarning, match="returns a value"):
        exe.run(x)
    assert exe.compiled[programs.key(1)] is False


def test_programs_per_batch_and_thread_count_and_rebuilt_for_new_weights(load_spec):
    graph = load_spec(SMALL)
    weights = init_weights(graph, 0)
    exe = netspec.compile(graph, weights=dict(weights), progress=False)
    x = np.random.default_rng(0).standard_normal((3, 3, 12, 12), dtype=np.float32)
    for batch in (1, 3, 1):
        _runs(exe, x[:batch])
    with set_threads(1):
        _runs(exe, x)
        one_thread = exe.run(x)
    assert {key for key, p in exe.compiled.items() if p} == {(1, programs.key(1)[1]), (3, programs.key(3)[1]), (3, 1)}
    np.testing.assert_array_equal(one_thread["fc"], _loop(graph, weights, x)["fc"])
    # new weights: the programs (which hold the old ones) go; the next runs use the new weights
    exe.weights["fc.weight"] = exe.weights["fc.weight"] * 2
    runs = _runs(exe, x)
    expected = _loop(graph, exe.weights, x)
    for out in runs:
        np.testing.assert_array_equal(out["fc"], expected["fc"])
    assert isinstance(exe.compiled[programs.key(3)], programs.Program)


def test_a_program_is_written_once_and_marked_checked(load_spec):
    """A program's source is written once, named by its hash, and marked as checked against the
    loop; another executable of the same network finds it and rewrites nothing."""
    graph = load_spec(SMALL)
    exe = netspec.compile(graph, progress=False)
    x = np.zeros((1, 3, 12, 12), np.float32)
    _runs(exe, x)
    path = exe.compiled[programs.key(1)].source
    assert os.path.dirname(path) == programs.PROGRAMS and os.path.exists(path + ".verified")
    stamp = os.stat(path).st_mtime_ns
    again = netspec.compile(graph, progress=False)
    _runs(again, x)
    assert again.compiled[programs.key(1)].source == path
    assert os.stat(path).st_mtime_ns == stamp


def test_runs_from_several_threads_at_once_stay_right(load_spec):
    """One arena and one program per executable: concurrent runs take turns (a lock), each right."""
    graph = load_spec(SMALL)
    weights = init_weights(graph, 0)
    exe = netspec.compile(graph, weights=weights, progress=False)
    inputs = [np.random.default_rng(i).standard_normal((2, 3, 12, 12), dtype=np.float32) for i in range(4)]
    expected = [_loop(graph, weights, x)["fc"] for x in inputs]
    _runs(exe, inputs[0])
    failures = []

    def work(i):
        for _ in range(20):
            if not np.array_equal(exe.run(inputs[i])["fc"], expected[i]):
                failures.append(i)
    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures


def test_weights_and_what_layers_make_of_them_are_constants_without_checksums(load_spec, monkeypatch):
    """A layer's weights, and its packed or transformed copies, are noted as constants
    (`_util.constant`): the trace takes them as such without checksumming them (a 1 GB layer's
    checksums were 0.7 s of a first run), and the program still gives the loop's bits. A noted
    array forgets its note when it dies, so a new array at the same address is checksummed."""
    from netspec.backends.cpu import _util
    graph = load_spec(SMALL)
    weights = init_weights(graph, 0)
    exe = netspec.compile(graph, weights=dict(weights), progress=False)
    summed = []
    real = programs._digest
    monkeypatch.setattr(programs, "_digest", lambda a: summed.append(a) or real(a))
    x = np.random.default_rng(1).standard_normal((2, 3, 12, 12), dtype=np.float32)
    outs = _runs(exe, x)
    program = exe.compiled[programs.key(2)]
    assert isinstance(program, programs.Program)
    conv = next(k for k in exe.weights if k.endswith(".weight") and exe.weights[k].ndim == 4)
    assert _util.is_constant(exe.weights[conv])
    noted = [c for c in program.constants if _util.is_constant(c)]  # (packed weights: what kernels read)
    assert len(noted) >= 3 and not any(a is c for a in summed for c in noted)  # never checksummed
    expected = _loop(graph, exe.weights, x)
    for out in outs:
        np.testing.assert_array_equal(out["fc"], expected["fc"])
    a = _util.constant(np.ones(3, np.float32))
    key = id(a)
    assert _util.is_constant(a) and not _util.is_constant(a[1:])  # (the trace asks of owners, not views)
    del a
    assert key not in _util._CONSTANTS


def test_a_program_holds_openblas_at_one_thread_only_when_it_calls_it(load_spec, monkeypatch):
    """Only gemm's kernels call OpenBLAS in an eval run; a program without them skips holding
    OpenBLAS's pool at one thread around its call (~3 µs: LeNet-5's linear layers are Numba loops)."""
    from netspec.backends.cpu import gemm
    if not gemm.AVAILABLE:
        pytest.skip("numpy's OpenBLAS is not callable here: no program calls it")
    large = SMALL.replace("{op: linear, name: fc, out: 5}", "{op: linear, name: fc, out: 600}")  # 128 × 600 weights
    held = []
    real = gemm._OneBlasThread.__enter__
    monkeypatch.setattr(gemm._OneBlasThread, "__enter__", lambda self: held.append(1) or real(self))
    for text, blas in ((SMALL, False), (large, True)):
        exe = netspec.compile(load_spec(text), progress=False)
        x = np.random.default_rng(0).standard_normal((1, 3, 12, 12), dtype=np.float32)
        _runs(exe, x)
        program = exe.compiled[programs.key(1)]
        assert program.calls_blas is blas
        held.clear()
        program.run({exe.input_names[0]: x}, exe._arena.memory, exe._arena.fresh_buffers())
        assert bool(held) is blas


def test_a_batch_the_threads_divide_runs_as_parts_side_by_side(load_spec):
    """On 2 threads a batch of 4 runs as 2 parts of 2, one a thread: the arena holds a copy of a
    part's planned memory for each, the program gives the loop's bits part by part, and each image's
    result is its own (close to its run alone). One thread, or a batch the threads do not divide:
    one part."""
    from netspec.passes.memory import plan_memory
    graph = load_spec(SMALL)
    weights = init_weights(graph, 0)
    x = np.random.default_rng(5).standard_normal((4, 3, 12, 12), dtype=np.float32)
    with set_threads(2):
        threads = programs.key(4)[1]
        exe = netspec.compile(graph, weights=weights, progress=False)
        runs = _runs(exe, x)
        parts = 2 if threads == 2 else 1  # (a machine of one core: one part)
        assert exe._parts[programs.key(4)] == parts and exe.compiled[programs.key(4)].parts == parts
        part_plan = plan_memory(exe.graph, batch=4 // parts).arena
        assert exe._arena.memory.nbytes == (parts * -(-part_plan // 64) * 64 if parts > 1 else part_plan)
        expected = _loop(graph, weights, x)
        for out in runs:
            np.testing.assert_array_equal(out["fc"], expected["fc"])
        alone = [_loop(graph, weights, x[i:i + 1])["fc"] for i in range(4)]
        np.testing.assert_allclose(runs[-1]["fc"], np.concatenate(alone), rtol=1e-5, atol=1e-6)
        _runs(exe, x[:3])
        assert exe._parts[programs.key(3)] == 1
    with set_threads(1):
        _runs(exe, x)
        assert exe._parts[programs.key(4)] == 1


def test_networks_with_large_fully_connected_layers_keep_the_batch_whole():
    """Each part would stream the fully connected layers' weights on its own: AlexNet (234 MB of
    them, 0.72 GMAC an image) runs its batch whole; LeNet-5, VGG-16 (495 MB, but 15.5 GMAC an
    image) and the convolutional networks split it."""
    def parts(name, batch=8, threads=2):
        return programs.parts(netspec.load(SPECS / f"{name}.yaml").active("eval"), batch, threads)
    assert parts("alexnet") == 1
    assert parts("lenet5") == parts("vgg16") == parts("mobilenet_v1") == 2
    assert parts("lenet5", threads=1) == parts("lenet5", batch=1) == parts("lenet5", batch=7) == 1
    assert parts("lenet5", batch=12, threads=3) == 3


def test_no_parts_on_a_threading_layer_that_cannot_nest_parallel_regions(monkeypatch):
    """Numba's workqueue layer (no TBB or OpenMP) aborts on a parallel region inside another: there
    the batch stays whole."""
    graph = netspec.load(SPECS / "lenet5.yaml").active("eval")
    monkeypatch.setattr(programs, "threading_layer", lambda: "workqueue")
    assert programs.parts(graph, 8, 2) == 1


def test_a_split_batch_returns_every_output_whole_and_the_callers(load_spec):
    """Several outputs (a conv's, an activation's, a concat's whose inputs were planned into it, a
    linear layer's) from a batch run as parts: each comes back as one batch, right, the same on
    every run, and not shared with the next run's."""
    graph = load_spec("""
input: {shape: [3, 12, 12]}
layers:
  - {op: conv2d, name: c1, out: 8, kernel: 3, padding: 1}
  - {op: relu, name: r1}
  - {op: conv2d, name: a, out: 4, kernel: 1}
  - {op: conv2d, name: b, in: r1, out: 4, kernel: 1}
  - {op: concat, name: cat, in: [a, b]}
  - {op: flatten, name: flat}
  - {op: linear, name: fc, out: 5}
outputs: [c1, cat, fc, r1]
""")
    weights = init_weights(graph, 0)
    x = np.random.default_rng(8).standard_normal((4, 3, 12, 12), dtype=np.float32)
    with set_threads(2):
        exe = netspec.compile(graph, weights=weights, progress=False)
        runs = _runs(exe, x)
        expected = _loop(graph, weights, x)
        reference = netspec.compile(graph, backend="reference", weights=weights).run(x)
        again = exe.run(-x)
    for name in ("c1", "cat", "fc", "r1"):
        assert runs[-1][name].shape == reference[name].shape
        np.testing.assert_allclose(runs[-1][name], reference[name], rtol=1e-5, atol=1e-5)
        for out in runs:
            np.testing.assert_array_equal(out[name], expected[name])
        assert not np.shares_memory(again[name], runs[-1][name])
