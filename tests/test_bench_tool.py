"""tools/bench.py's command line: which specs it takes, and a bad one reported before any timing."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import load_tool

ROOT = Path(__file__).resolve().parent.parent


def _bench():
    return load_tool("bench")


def test_specs_are_zoo_names_or_files(tmp_path):
    bench = _bench()
    assert bench.spec_path("resnet50") == ROOT / "specs" / "resnet50.yaml"
    assert bench.spec_path("specs/resnet50.yaml") == Path("specs/resnet50.yaml")
    own = tmp_path / "mine"
    own.write_text("")
    assert bench.spec_path(str(own)) == own  # an existing file, whatever its name


def test_a_spec_that_does_not_load_is_an_error_not_a_traceback(tmp_path, capsys, monkeypatch):
    bench = _bench()
    timed = []
    monkeypatch.setattr(bench, "gemm_gflops", lambda threads: timed.append(threads) or 1.0)
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\ninput: [3, 8, 8]\nlayers:\n  - {op: conv2d, out: -1, kernel: 3}\n")
    assert bench.main(["lenet5", str(bad)]) == 2
    err = capsys.readouterr().err
    assert re.search(re.escape(str(bad)) + r":\d+:\d+: error: ", err) and "Traceback" not in err
    assert bench.main(["no_such_net"]) == 2
    assert "no_such_net.yaml:1:1: error: cannot read file" in capsys.readouterr().err
    assert timed == []  # nothing was timed


def test_busy_neighbours_run_inside_the_block_and_are_gone_after():
    """--load N: N processes spin while the engines are timed, and none is left behind."""
    import os
    bench = _bench()

    def spinners():
        found = []
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        if f.read().endswith(b"while True: pass\0"):
                            found.append(pid)
                except OSError:
                    pass
        return set(found)
    before = spinners()
    with bench.busy_neighbours(2):
        inside = spinners() - before
    assert len(inside) == 2
    assert not (spinners() & inside)


def test_time_outside_the_program_is_measured_once_a_program_runs(load_spec):
    import numpy as np
    import netspec
    bench = _bench()
    graph = load_spec("input: {shape: [3, 8, 8]}\nlayers:\n  - {op: conv2d, out: 4, kernel: 3}\n")
    exe = netspec.compile(graph, progress=False)
    x = np.zeros((1, 3, 8, 8), np.float32)
    assert bench.time_outside_program(exe, x) is None  # (no program before the second run)
    exe.run(x)
    exe.run(x)
    outside = bench.time_outside_program(exe, x, rounds=5)
    assert outside is not None and 0.0 <= outside < 0.1


def test_first_run_times_a_fresh_process_less_its_inference(tmp_path):
    """tools/first_run.py: one `netspec run` in a new process, its wall time split into inference and
    the rest; a run that fails is an error naming the spec, not a row."""
    first_run = load_tool("first_run")
    row = first_run.first_run(ROOT / "specs" / "lenet5.yaml", None)
    assert row["spec"] == "lenet5"
    assert 0 < row["inference_s"] < row["wall_s"]
    assert abs(row["outside_s"] - (row["wall_s"] - row["inference_s"])) < 0.02
    bad = tmp_path / "bad.yaml"
    bad.write_text("netspec: 1\nname: bad\n")
    with pytest.raises(RuntimeError, match="bad.yaml"):
        first_run.first_run(bad, None)


def test_profile_layers_matches_onnx_runtime_nodes_to_netspec_layers():
    """tools/profile_layers.py: ONNX Runtime's node names (a convolution's fused chain named after
    its last node, `_nchwc`, `fused `, `x/QuickGeluFusion/`) are traced back to the netspec layer
    that absorbed them, and their times summed there; its own reorders stay on their own."""
    import netspec
    profile = load_tool("profile_layers")
    graph = netspec.load(ROOT / "specs" / "resnet18.yaml").active("eval")
    ours = {"conv1": "fused_conv2d", "layer1.0.conv2": "fused_conv2d", "fc": "linear", "maxpool": "maxpool2d"}
    assert {"bn1", "relu"} <= {node.name for node in graph.nodes}  # (absorbed into conv1 by netspec)
    theirs = {"conv1_nchwc": 10.0, "relu_nchwc": 1.0, "bn1": 2.0, "fused fc": 3.0, "maxpool/Foo/": 4.0,
              "ReorderOutput": 5.0}
    got = profile.per_netspec_layer(graph, ours, theirs)
    assert got == {"conv1": 13.0, "fc": 3.0, "maxpool": 4.0, "ReorderOutput": 5.0}
