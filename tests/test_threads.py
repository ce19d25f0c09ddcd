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


def test_the_kernels_thread_count_follows_numba_in_every_python_thread():
    """The CPU kernels read Numba's thread count through a lock-free reader (backends/cpu/_util.py);
    it must say what numba.get_num_threads says, under set_threads and in another Python thread
    (Numba's count is per thread)."""
    import threading

    from netspec.backends.cpu._util import thread_count
    seen = {}
    with set_threads(1):
        seen["one"] = (thread_count(), numba.get_num_threads())
        worker = threading.Thread(target=lambda: seen.update(other=(thread_count(), numba.get_num_threads())))
        worker.start()
        worker.join()
    with set_threads(2):
        seen["two"] = (thread_count(), numba.get_num_threads())
    assert seen["one"] == (1, 1) and seen["two"] == (2, 2)
    assert seen["other"][0] == seen["other"][1] >= 1
