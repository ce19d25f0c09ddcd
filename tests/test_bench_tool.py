"""tools/bench.py's command line: which specs it takes, and a bad one reported before any timing."""
from __future__ import annotations

import re
from pathlib import Path

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
