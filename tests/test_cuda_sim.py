"""Runs the CUDA backend's tests (tests/cuda) under Numba's CUDA simulator, in a pytest process of its
own: NUMBA_ENABLE_CUDASIM must be set before numba is imported, and this process has imported it
already. So `python -m pytest` checks every numba.cuda kernel on machines without a GPU too."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_cuda_kernels_pass_under_the_simulator():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", PYTHONDONTWRITEBYTECODE="1")
    result = subprocess.run([sys.executable, "-m", "pytest", "tests/cuda", "-p", "no:cacheprovider"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"the CUDA tests failed under the simulator:\n{output}"
    assert " passed" in output and " skipped" not in output, output
