"""The first run's kernel compilation: its progress on stderr (netspec/progress.py, driven by
backends/cpu/kernels.py's warm_up) and the Numba cache that clones and venvs of the same sources
share (backends/cpu/__init__.py). No timings are asserted: waits are for events, with generous
timeouts."""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from numba.core import event
from numba.core.dispatcher import Dispatcher

import netspec
from netspec.backends import cpu
from netspec.backends.cpu import KERNELS, kernels, warm_up
from netspec.progress import StderrProgress


@pytest.fixture(autouse=True)
def _nothing_warmed_yet(monkeypatch):
    """These tests watch warm_up run its ops: as in a fresh process, none has run yet."""
    monkeypatch.setattr(kernels, "_WARMED", set())

PACKAGE = Path(netspec.__file__).parent


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def wait_for(predicate, timeout: float = 30.0) -> bool:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            return False
        time.sleep(0.01)
    return True


def fake_ops(monkeypatch, stream, slow: str | None, compiles: bool = True) -> list[str]:
    """Replace the warm-up of each op by a stand-in that 'compiles' (a Numba compile event) and, for
    op `slow`, lasts until the progress has drawn that op at least once. Returns the ops warmed, in order."""
    warmed = []

    def warm_one(name, cases):
        warmed.append(name)
        context = event.trigger_event("numba:compile", data={}) if compiles else _nothing()
        with context:
            if name == slow:
                assert wait_for(lambda: f"{name}" in stream.getvalue()), "no progress while the op ran"
    monkeypatch.setattr(kernels, "_warm_one", warm_one)
    monkeypatch.setattr(kernels, "warm_up_plan", lambda names, graph=None: [
        (name, [], {"conv2d": 30.0, "maxpool2d": 5.0, "relu": 2.0}.get(name, 1.0)) for name in names])
    monkeypatch.setenv("COLUMNS", "120")
    return warmed


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# --- the order of the ops ---

def test_a_set_of_ops_is_warmed_in_the_order_of_kernels_whatever_its_iteration_order():
    names = ["relu", "flatten", "conv2d", "maxpool2d", "swish"]  # swish: an alias of silu
    want = [n for n in KERNELS if n in {"relu", "flatten", "conv2d", "maxpool2d", "silu"}]
    assert want == ["conv2d", "maxpool2d", "relu", "silu", "flatten"]
    for order in (names, names[::-1], names[2:] + names[:2]):
        assert kernels.warm_up_order(set(order)) == want
        assert kernels.warm_up_order(iter(order)) == want  # any iterable but a list or tuple
    assert kernels.warm_up_order(["relu", "conv2d", "relu"]) == ["relu", "conv2d"]  # a list keeps its order
    with pytest.raises(KeyError):
        kernels.warm_up_order({"no_such_op"})


def test_progress_calls_follow_the_stable_order(monkeypatch):
    warmed = fake_ops(monkeypatch, io.StringIO(), slow=None)
    calls = []
    warm_up(iter(["relu", "conv2d", "maxpool2d"]), progress=lambda d, t, n: calls.append((d, t, n)))
    assert warmed == ["conv2d", "maxpool2d", "relu"]
    assert calls == [(0, 3, "conv2d"), (1, 3, "maxpool2d"), (2, 3, "relu"), (3, 3, "")]


# --- the progress line ---

def test_terminal_progress_redraws_while_an_op_compiles(monkeypatch):
    stream = Terminal()
    warmed = fake_ops(monkeypatch, stream, slow="conv2d")
    with StderrProgress("compiling CPU kernels", delay=0.0, interval=0.02, stream=stream) as bar:
        warm_up({"relu", "maxpool2d", "conv2d"}, progress=bar)
    out = stream.getvalue()
    assert warmed == ["conv2d", "maxpool2d", "relu"]
    # the first line was drawn while conv2d still ran (fake_ops waited for it), by the thread
    frames = [f for f in out.split("\r\033[K") if f]
    first = frames[0]
    assert first.startswith("netspec: compiling CPU kernels [") and "1/3 conv2d" in first
    assert re.search(r"  \d+:\d\d, about \d+:\d\d left$", first)  # elapsed, and the estimate
    assert frames[-1].startswith("netspec: compiling CPU kernels: done in ") and frames[-1].endswith("\n")
    assert out.count("\n") == 1  # one line, redrawn in place, ended once
    # the ops appear in the stable order
    seen = [name for f in frames for name in ("conv2d", "maxpool2d", "relu") if f"/3 {name}" in f]
    assert seen == sorted(seen, key=["conv2d", "maxpool2d", "relu"].index)


def test_log_progress_prints_a_line_per_op_and_no_flood(monkeypatch):
    stream = io.StringIO()  # not a terminal: a log file, a CI job
    fake_ops(monkeypatch, stream, slow="conv2d")
    with StderrProgress("compiling CPU kernels", delay=0.0, interval=0.02, log_every=3600, stream=stream) as bar:
        warm_up({"relu", "maxpool2d", "conv2d"}, progress=bar)
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert [line.split(": ")[2].split(" (")[0] for line in lines[:3]] == ["1/3 conv2d", "2/3 maxpool2d", "3/3 relu"]
    assert all("about" in line and "left" in line for line in lines[:3])
    assert len(lines) == 4 and lines[3].startswith("netspec: compiling CPU kernels: done in ")


def test_progress_stays_quiet_when_everything_loads_from_the_cache(monkeypatch):
    stream = Terminal()
    fake_ops(monkeypatch, stream, slow=None, compiles=False)  # no Numba compile event
    with StderrProgress("compiling CPU kernels", delay=0.0, interval=0.01, stream=stream) as bar:
        warm_up(["conv2d", "maxpool2d", "relu"], progress=bar)
        time.sleep(0.1)
    assert stream.getvalue() == ""


def test_progress_stays_quiet_when_the_work_ends_before_the_delay(monkeypatch):
    stream = Terminal()
    fake_ops(monkeypatch, stream, slow=None)
    with StderrProgress("compiling CPU kernels", delay=3600.0, interval=0.01, stream=stream) as bar:
        warm_up(["conv2d", "maxpool2d", "relu"], progress=bar)
    assert stream.getvalue() == ""


def test_progress_line_ends_and_its_thread_stops_when_the_work_fails(monkeypatch):
    stream = Terminal()
    fake_ops(monkeypatch, stream, slow="conv2d")
    monkeypatch.setattr(kernels, "_warm_one", _fail_after(kernels._warm_one))
    with pytest.raises(RuntimeError):
        with StderrProgress("compiling CPU kernels", delay=0.0, interval=0.02, stream=stream) as bar:
            warm_up(["conv2d", "relu"], progress=bar)
    assert not bar.thread.is_alive()
    assert re.search(r"\r\033\[Knetspec: compiling CPU kernels: stopped in \d+:\d\d\n$", stream.getvalue())


def _fail_after(warm_one):
    def run(name, cases):
        warm_one(name, cases)
        raise RuntimeError("a kernel failed")
    return run


def test_time_left_scales_the_expected_times_by_the_finished_ops():
    bar = StderrProgress("x", stream=io.StringIO())
    bar.plan({"a": 10.0, "b": 20.0, "c": 4.0})
    now = time.perf_counter()
    bar(0, 3, "a")
    bar.step_start = now - 4.0
    assert bar.left(now) == pytest.approx(6.0 + 24.0)  # a's 10 s less the 4 run, then b and c
    bar.step_start = now - 15.0
    assert bar.left(now) == pytest.approx(24.0)  # a overran: nothing left of it
    bar(1, 3, "b")  # a took ~15 s of its 10: the rest is expected to take 1.5× too
    bar.steps, bar.taken, bar.step_start = [("a", 10.0)], [15.0], now
    assert bar.left(now) == pytest.approx(1.5 * 24.0)
    bar.steps, bar.taken = [("a", 10.0)], [0.1]  # a came from the cache: it tells nothing
    assert bar.left(now) == pytest.approx(24.0)
    bar.close()


# --- the cache: the same sources anywhere share it ---

def test_same_sources_at_two_paths_and_times_share_the_numba_cache(tmp_path):
    """Two copies of the package at different paths (the second with other file times): the
    first compiles a small kernel into the cache, the second loads it from there."""
    copies = []
    for name in ("clone_a", "clone_b"):
        shutil.copytree(PACKAGE, tmp_path / name / "netspec", ignore=shutil.ignore_patterns("__pycache__"))
        copies.append(tmp_path / name)
    for f in (copies[1] / "netspec").rglob("*.py"):
        os.utime(f, (1_000_000_000, 1_000_000_000))
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "PYTHONPATH")}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    probe = ("import json; from netspec.backends.cpu import conv, DIGEST; f = conv._valid_range; f(0, 1, 4, 4); "
             "s = f.stats; print(json.dumps({'file': f.py_func.__code__.co_filename, 'path': s.cache_path, "
             "'hits': sum(s.cache_hits.values()), 'misses': sum(s.cache_misses.values()), 'digest': DIGEST}))")
    results = []
    for copy in copies:
        run = subprocess.run([sys.executable, "-c", probe], env={**env, "PYTHONPATH": str(copy)}, cwd=tmp_path,
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr
        results.append(json.loads(run.stdout.strip().splitlines()[-1]))
    first, second = results
    assert first["file"].startswith(str(copies[0])) and second["file"].startswith(str(copies[1]))
    assert first["digest"] == second["digest"] == cpu.DIGEST
    folder = tmp_path / "cache" / "netspec" / "numba" / cpu.DIGEST / "backends" / "cpu"
    assert first["path"] == second["path"] == str(folder)
    assert (first["hits"], first["misses"]) == (0, 1)   # compiled, then saved
    assert (second["hits"], second["misses"]) == (1, 0)  # loaded: not compiled again
    assert any(p.name.startswith("conv._valid_range-") for p in folder.iterdir())


def test_cache_folder_rules(monkeypatch, tmp_path):
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cpu._cache_folder() == str(tmp_path / "xdg" / "netspec" / "numba" / cpu.DIGEST)
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "mine"))  # the user's choice wins: a folder per version in it
    assert cpu._cache_folder() == str(tmp_path / "mine" / cpu.DIGEST)
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "mine" / cpu.DIGEST))  # as netspec sets it for children
    assert cpu._cache_folder() == str(tmp_path / "mine" / cpu.DIGEST)
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(blocked))  # not writable: a temporary folder
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    folder = cpu._cache_folder()
    assert folder.startswith(str(tmp_path / "tmp")) and folder.endswith(cpu.DIGEST) and os.access(folder, os.W_OK)


def test_the_locator_files_only_the_cpu_backend_by_its_place_in_the_package():
    f = cpu.conv._valid_range
    assert f.stats.cache_path == os.path.join(cpu.CACHE_FOLDER, "backends", "cpu")
    locator = cpu._Locator.from_function(f.py_func, f.py_func.__code__.co_filename)
    assert locator.get_source_stamp() == cpu.DIGEST
    assert cpu._Locator.from_function(f.py_func, os.path.join(os.sep, "elsewhere", "conv.py")) is None
    assert cpu._Locator.from_function(f.py_func, str(PACKAGE / "threads.py")) is None


def test_the_digest_covers_every_jitted_function_the_kernels_can_call():
    """Cached code is trusted while the digest is unchanged: every Numba function a CPU kernel
    module refers to must be defined in a file the digest covers (none in kernels.py, which it
    leaves out, and none outside backends/cpu)."""
    import importlib
    import pkgutil
    covered = {n for n in os.listdir(cpu._HERE) if n.endswith(".py")} - cpu._NOT_COMPILED
    found = 0
    for info in pkgutil.iter_modules(cpu.__path__):
        module = importlib.import_module(f"{cpu.__name__}.{info.name}")
        for value in vars(module).values():
            if isinstance(value, Dispatcher):
                found += 1
                path = value.py_func.__code__.co_filename
                assert os.path.dirname(os.path.abspath(path)) == cpu._HERE, (info.name, value)
                assert os.path.basename(path) in covered, (info.name, value)
    assert found > 20
    assert "kernels.py" in cpu._NOT_COMPILED
    assert not any(isinstance(v, Dispatcher) for v in vars(kernels).values())


def test_every_op_and_path_has_a_measured_compile_time():
    plan = kernels.warm_up_plan(list(KERNELS))  # no graph: every op, every path
    assert [name for name, _, _ in plan] == list(KERNELS)
    assert all(seconds > 0 for _, _, seconds in plan)
    assert set(kernels.COMPILE_SECONDS) | set(kernels._PATHS) == set(KERNELS)
    assert set(kernels._USES) <= set(KERNELS) | {path for table, _ in kernels._PATHS.values() for path in table}


def test_shared_code_is_expected_to_compile_once():
    alone = {name: s for name, _, s in kernels.warm_up_plan(["fused_linear", "silu"])}
    after = {name: s for name, _, s in kernels.warm_up_plan(["linear", "fused_linear", "relu", "silu"])}
    assert after["fused_linear"] < alone["fused_linear"] and after["silu"] < alone["silu"]


def test_a_network_warms_the_paths_its_layers_may_take():
    """LeNet-5's convolutions (few taps) go through the implicit GEMM, not im2col; MobileNet's depthwise ones through the depthwise kernels; each plan's cases are the op's own."""
    from netspec.passes.manager import optimize
    from netspec.weights import init_weights

    def plan_of(spec):
        graph = netspec.load(PACKAGE.parent / "specs" / spec)
        graph, _ = optimize(graph.active("eval"), init_weights(graph, 0), "eval")
        names = kernels.warm_up_order({node.op for node in graph.nodes})
        return {name: cases for name, cases, _ in kernels.warm_up_plan(names, graph)}

    lenet, mobilenet, alexnet = plan_of("lenet5.yaml"), plan_of("mobilenet_v1.yaml"), plan_of("alexnet.yaml")
    # the pools: LeNet-5's 2×2 averages and AlexNet's 3×3 stride-2 maxima (rows of 55, 27, 13) skip
    # the general kernels, the costliest to compile (12 s and 24 s); small linear layers skip BLAS
    assert lenet["avgpool2d"] == kernels._AVGPOOL_PATHS["2×2"][0]
    assert lenet["linear"] == kernels._LINEAR_PATHS["small"][0]  # (400 → 120 and smaller: no BLAS)
    assert plan_of("googlenet.yaml")["concat"] == kernels._CONCAT_PATHS["4 inputs"][0]  # (4 branches, no other)
    assert alexnet["linear"] == kernels._LINEAR_PATHS["blas"][0] + kernels._LINEAR_PATHS["few rows"][0]
    assert alexnet["maxpool2d"] == kernels._MAXPOOL_PATHS["stride 2"][0]

    def has(cases, path):
        return all(({"activation": "relu", **a}, list(shapes)) in [(c[0], list(c[1])) for c in cases]
                   for a, shapes, _ in kernels._CONV_PATHS[path][0])
    # (LeNet-5's convolutions, even at batch 8, are too small for a parallel region: the implicit
    # GEMM on the calling thread, whatever the form, and nothing else)
    assert has(lenet["fused_conv2d"], "implicit serial") and not has(lenet["fused_conv2d"], "im2col")
    assert not has(lenet["fused_conv2d"], "implicit") and not has(lenet["fused_conv2d"], "implicit flat")
    assert not has(mobilenet["fused_conv2d"], "implicit serial") and kernels._COVERS["implicit flat"] == "implicit"
    assert has(alexnet["fused_conv2d"], "implicit") or has(alexnet["fused_conv2d"], "implicit flat")  # (its stem: 55 wide)
    assert not has(lenet["fused_conv2d"], "depthwise")
    # (MobileNet's depthwise outputs are at most 112 wide: never the planes kernel for wider ones)
    assert has(mobilenet["fused_conv2d"], "depthwise") and not has(mobilenet["fused_conv2d"], "wide depthwise")
    assert not has(mobilenet["fused_conv2d"], "winograd")
    for plan in (lenet, mobilenet, alexnet):
        for name, cases in plan.items():
            assert all(case in kernels._WARM_CASES.get(name, [({}, [(1, 2, 4, 4)], ("eval",))]) for case in cases)


def test_warm_up_runs_an_op_once_per_process(monkeypatch):
    """A second compile of the same network (a training run evaluates after every epoch) warms nothing."""
    runs = []
    monkeypatch.setattr(kernels, "_warm_one", lambda name, cases: runs.append(name))
    warm_up(["conv2d", "relu"])
    first = list(runs)
    warm_up(["relu", "conv2d"])
    assert first and runs == first


# --- the second compiling process (kernels._SecondCompiler) ---

def _units_folder(tmp_path, names):
    (tmp_path / "units.json").write_text(json.dumps([[n, {}, [[1, 2, 4, 4]], ["eval"]] for n in names]))
    return str(tmp_path)


def test_the_second_process_takes_the_longest_unclaimed_cases_first(tmp_path, monkeypatch):
    ran = []
    monkeypatch.setattr(kernels, "_warm_one", lambda name, cases: ran.append((name, cases)))
    folder = _units_folder(tmp_path, ["relu", "sigmoid", "maxpool2d", "flatten", "identity"])
    assert kernels._claim(folder, 1)  # the first process has reached case 1
    kernels.serve_warm_up(folder)
    # the pool first (the longest), then from the last case backwards among equals, all but case 1
    assert [name for name, _ in ran] == ["maxpool2d", "identity", "flatten", "relu"]
    assert ran[0][1] == [({}, [(1, 2, 4, 4)], ("eval",))]  # the case as warm_up has it (tuples)
    assert not any(kernels._claim(folder, k) for k in range(5))


def test_expected_seconds_of_a_case_are_its_paths_share():
    implicit = kernels._CONV_PATHS["implicit"]
    fused = ({"activation": "relu", **implicit[0][0][0]},) + implicit[0][0][1:]
    assert kernels._case_seconds("fused_conv2d", fused) == implicit[1] / len(implicit[0])
    im2col = kernels._CONV_PATHS["im2col"]
    assert kernels._case_seconds("conv2d", im2col[0][1]) == im2col[1] / len(im2col[0])
    assert kernels._case_seconds("relu", kernels._WARM_CASES["relu"][0]) == kernels.COMPILE_SECONDS["relu"] / 2


def test_the_second_process_leaves_the_gemms_users_until_the_gemms_are_compiled(tmp_path, monkeypatch):
    ran = []
    monkeypatch.setattr(kernels, "_warm_one", lambda name, cases: ran.append(name))
    folder = _units_folder(tmp_path, ["relu", "conv2d", "linear", "maxpool2d"])
    worker = threading.Thread(target=kernels.serve_warm_up, args=(folder,))
    worker.start()
    assert wait_for(lambda: ran == ["maxpool2d", "relu"])
    time.sleep(0.3)
    assert ran == ["maxpool2d", "relu"]  # linear and conv2d wait: they would compile the GEMM kernels twice
    assert kernels._claim(folder, 1)  # (the first process has taken conv2d meanwhile)
    (tmp_path / "ready").touch()
    worker.join(10)
    assert ran == ["maxpool2d", "relu", "linear"]


def test_a_convolution_path_that_calls_no_gemm_does_not_wait_for_them():
    implicit = kernels._CONV_PATHS["implicit"][0][0]
    fused = ({"activation": "relu", **implicit[0]},) + implicit[1:]
    assert not kernels._waits_for_gemms("conv2d", implicit) and not kernels._waits_for_gemms("fused_conv2d", fused)
    assert kernels._waits_for_gemms("conv2d", kernels._CONV_PATHS["im2col"][0][0])
    assert not kernels._waits_for_gemms("relu", ({}, [(1, 2, 4, 4)], ("eval",)))


def test_the_gemms_users_wait_only_for_the_cases_that_compile_the_gemms():
    """The second process may take the GEMMs' users once the convolutions' "gemm" and "wide gemm"
    cases are done (AlexNet's first 2), not after all the first op's paths; where the first
    op does not start with them, after the first op."""
    from netspec.passes.manager import optimize
    from netspec.weights import init_weights
    graph = netspec.load(PACKAGE.parent / "specs" / "alexnet.yaml")
    graph, _ = optimize(graph.active("eval"), init_weights(graph, 0), "eval")
    plan = kernels.warm_up_plan(kernels.warm_up_order({node.op for node in graph.nodes}), graph)
    units = [(name, case) for name, cases, _ in plan for case in cases]
    gemm_cases = len(kernels._CONV_PATHS["gemm"][0])  # (no "wide gemm": no product over 8 images is wide)
    assert units[0][0] == "fused_conv2d" and kernels._gemm_prefix(units) == gemm_cases
    assert sum(name == "fused_conv2d" for name, _ in units) > gemm_cases
    lenet_like = [("fused_conv2d", kernels._CONV_PATHS["implicit"][0][0]), ("fused_conv2d", ({}, [], ())),
                  ("relu", ({}, [(1, 2, 4, 4)], ("eval",)))]
    assert kernels._gemm_prefix(lenet_like) == 2 and kernels._gemm_prefix([]) == 0


def test_a_second_process_shares_the_cases_and_each_runs_once(monkeypatch):
    """A real second process (the cache is warm here, so it loads): the two cover every case, the
    second a tail of them, and this one then loads the second's cases itself."""
    monkeypatch.setattr(kernels, "PARALLEL", True)
    case = ({}, [(1, 2, 4, 4)], ("eval",))
    units = [(name, case) for name in ("relu", "sigmoid", "tanh", "silu", "flatten", "identity")]
    second = kernels._SecondCompiler(units)
    try:
        second.start()
        assert second.process is not None
        assert wait_for(lambda: second.process.poll() is not None, timeout=120)
        mine = [k for k in range(len(units)) if second.claim(k)]
        theirs = second.finish()
    finally:
        second.close()
    assert second.process.returncode == 0
    assert sorted(mine + theirs) == list(range(len(units))) and theirs
    assert theirs == list(range(len(units) - len(theirs), len(units)))  # from the end
    assert not os.path.exists(second.folder)  # cleaned up


def test_a_hung_second_process_is_stopped_and_its_cases_left_to_this_one(monkeypatch, tmp_path):
    monkeypatch.setattr(kernels, "_WAIT_SECONDS", 0.5)
    case = ({}, [(1, 2, 4, 4)], ("eval",))
    second = kernels._SecondCompiler([("relu", case), ("tanh", case)])
    second.folder = str(tmp_path / "claims")
    os.makedirs(second.folder)
    second.process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    assert second.claim(0)
    started = time.perf_counter()
    assert second.finish() == [1]  # the case it had not given back: this process runs it
    assert time.perf_counter() - started < 10 and second.process.poll() is not None
    second.close()


@pytest.mark.parametrize("path, module, function", [
    ("implicit", "implicit", "_convolve"), ("implicit flat", "implicit", "_copy_out"),
    ("implicit flat", "implicit", "_convolve"), ("implicit serial", "implicit", "_convolve_serial"),
    ("im2col", "conv", "_im2col"), ("winograd", "winograd", "_input_transform"), ("residual", "gemm", "epilogue")])
def test_each_convolution_path_is_warmed_by_a_case_that_takes_it(path, module, function):
    """The warm-up compiles a path by running its cases (`kernels._CONV_PATHS`): each must reach the
    path's kernel (a case the implicit GEMM took instead of im2col would leave im2col to compile
    in the middle of a first run)."""
    import importlib
    from unittest import mock
    target = importlib.import_module(f"netspec.backends.cpu.{module}")
    cases = kernels._CONV_PATHS[path][0]
    op = "fused_conv2d" if path in kernels._FUSED_ONLY else "conv2d"
    for case in cases[:1]:  # (the first case of each: im2col's second is the grouped epilogue)
        with mock.patch.object(target, function, wraps=getattr(target, function)) as spy:
            kernels._warm_one(op, [case])
        assert spy.called, (path, case)


def test_a_covering_path_compiles_every_kernel_of_the_path_it_covers():
    """kernels._COVERS: after the flat implicit GEMM's case, the rows' case runs on kernels already
    compiled, with the same signatures (else a network taking both would compile in its first run).
    In a fresh process, so that nothing else ran first."""
    import subprocess
    import sys
    probe = """
import sys
from numba.core.dispatcher import Dispatcher
from netspec.backends.cpu import kernels
def signatures():  # every jitted function of the backend, and the types it runs on
    return {(module, name): set(f.signatures) for module, m in list(sys.modules.items())
            if module.startswith("netspec.backends.cpu") for name, f in vars(m).items() if isinstance(f, Dispatcher)}
for path, covered in kernels._COVERS.items():
    kernels._warm_one("conv2d", kernels._CONV_PATHS[path][0])
    before = signatures()
    assert before["netspec.backends.cpu.implicit", "_convolve"], before
    kernels._warm_one("conv2d", kernels._CONV_PATHS[covered][0])
    assert signatures() == before, (path, covered)
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


@pytest.mark.parametrize("spec, layers", [("resnet18.yaml", 7), ("googlenet.yaml", 7), ("inception_v2.yaml", 7),
                                          ("lenet5.yaml", 2)])
def test_the_convolution_paths_a_network_warms_cover_those_its_layers_take(spec, layers):
    """conv.paths (what the warm-up compiles for a layer) holds the path `conv._plan` takes at batch
    1, 2 and 8 for every convolution of these networks: a path left out would compile in the middle
    of a first run."""
    from unittest import mock

    from netspec.backends.cpu import conv, implicit, winograd
    from netspec.backends.cpu._act import activation_code
    from netspec.passes.manager import optimize
    from netspec.weights import init_weights
    graph = netspec.load(PACKAGE.parent / "specs" / spec)
    graph, params = optimize(graph.active("eval"), init_weights(graph, 0), "eval")
    spies = {"implicit": (implicit, "plan"), "implicit flat": (implicit, "_plan_flat"),
             "winograd": (winograd, "plan"), "im2col": (conv, "_plan_im2col")}
    serial, answers = implicit.serial, []  # (what `implicit.serial` told each plan)
    checked = 0
    for node in graph.nodes:
        if node.op not in ("conv2d", "fused_conv2d") or node.attrs.groups > 1:
            continue
        dims = graph.type_of(node.inputs[0]).dims
        allowed = conv.paths(node.attrs, dims)
        weight = np.asarray(params[f"{node.name}.weight"], np.float32)
        bias = np.zeros(node.attrs.out, np.float32)
        for batch in (1, 2, 8):
            with contextlib.ExitStack() as stack:
                calls = {path: stack.enter_context(mock.patch.object(module, name, wraps=getattr(module, name)))
                         for path, (module, name) in spies.items()}
                answers.clear()
                stack.enter_context(mock.patch.object(implicit, "serial", lambda macs: answers.append(serial(macs))
                                                      or answers[-1]))
                conv._plan(node.attrs, (batch,) + tuple(dims), 2, weight, bias, True,
                           activation_code(getattr(node.attrs, "activation", None)), 0.0,
                           bool(getattr(node.attrs, "residual", False)))
            taken = {path for path, spy in calls.items() if spy.called}
            if "implicit flat" in taken:  # (`implicit.plan` hands it on)
                taken.discard("implicit")
            if answers == [True]:  # the implicit GEMM, on the calling thread
                taken = (taken - {"implicit", "implicit flat"}) | {"implicit serial"}
            pointwise = tuple(node.attrs.kernel) == (1, 1) and not any(node.attrs.pads)  # (straight to the GEMM)
            assert (taken or pointwise) and taken <= allowed, (node.name, batch, taken, allowed)
            checked += 1
    assert checked >= 3 * layers
