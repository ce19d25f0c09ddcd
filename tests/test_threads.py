"""The thread policy: one place caps both BLAS and Numba."""
from __future__ import annotations

import numba
import pytest
from threadpoolctl import threadpool_info

from netspec.threads import set_threads


def blas_threads() -> set[int]:
    return {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}


def test_set_threads_caps_blas_and_numba_and_restores_them():
    before_blas, before_numba = blas_threads(), numba.get_num_threads()
    with set_threads(1):
        assert blas_threads() == {1}
        assert numba.get_num_threads() == 1
    assert blas_threads() == before_blas and numba.get_num_threads() == before_numba


def test_none_leaves_the_defaults_and_zero_is_refused():
    before = blas_threads()
    with set_threads(None):
        assert blas_threads() == before
    with pytest.raises(ValueError):
        with set_threads(0):
            pass


@pytest.mark.parametrize("preset, numpy_first, expected", [
    (None, False, "4"),       # imported before numpy: OpenBLAS's workers stop spinning at once
    ("30", False, "30"),      # the user's own setting wins
    (None, True, None),       # numpy already loaded OpenBLAS: too late, so nothing is changed
])
def test_openblas_spin_time_is_set_only_where_it_can_take_effect(preset, numpy_first, expected):
    import os
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    if preset is not None:
        env["OPENBLAS_THREAD_TIMEOUT"] = preset
    code = ("import numpy\n" if numpy_first else "") + \
        "import os, netspec; print(os.environ.get('OPENBLAS_THREAD_TIMEOUT'))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == str(expected)
