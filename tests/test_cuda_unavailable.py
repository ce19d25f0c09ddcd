"""Without a GPU (and without the CUDA simulator), the CUDA backend says so in one line and points to
the CPU backend: a user error, no traceback, a non-zero exit; the API raises BackendUnavailable."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import netspec
from netspec.backends.cuda import BackendUnavailable, available

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(os.environ.get("NUMBA_ENABLE_CUDASIM") == "1" or available(),
                                reason="a GPU (or the simulator) is present")


def test_cli_says_so_in_one_line_and_exits_non_zero():
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    result = subprocess.run([sys.executable, "-m", "netspec", "run", "specs/lenet5.yaml", "--backend", "cuda"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "GPU" in lines[0] and "--backend cpu" in lines[0]


def test_api_raises_backend_unavailable():
    graph = netspec.load(ROOT / "specs" / "lenet5.yaml")
    with pytest.raises(BackendUnavailable, match="--backend cpu") as info:
        netspec.compile(graph, backend="cuda")
    assert isinstance(info.value, RuntimeError)
