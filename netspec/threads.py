"""The thread policy, owned in one place: how many threads BLAS (the GEMMs) and Numba may use.

netspec calls BLAS and its Numba kernels one after the other, never at the same time, so the two
pools never compete for the cores; `set_threads(n)` caps both at n (`netspec run --threads N`).
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

_started = False


def start_numba_threads() -> None:
    """Start Numba's thread pool with OpenMP's passive wait policy (unless the user chose one).

    GNU OpenMP's default active wait keeps Numba's workers spinning after every parallel region,
    taking the cores from the BLAS threads of the GEMM that follows: 4–40× slower alternation
    between the two on a busy machine. libgomp reads the policy once, when it is loaded, so the
    variable is set just for that moment (other OpenMP users, e.g. PyTorch's own libgomp, keep theirs).
    Call before anything else starts Numba's threads (numba.get_num_threads does).
    """
    global _started
    if _started:
        return
    _started = True
    if "OMP_WAIT_POLICY" in os.environ:
        return
    os.environ["OMP_WAIT_POLICY"] = "passive"
    try:
        from numba.np.ufunc import parallel
        parallel._launch_threads()
    except Exception:  # a Numba without this hook: the threads start on first use, default policy
        pass
    finally:
        os.environ.pop("OMP_WAIT_POLICY", None)


@contextlib.contextmanager
def set_threads(n: int | None) -> Iterator[None]:
    """Within the block, BLAS and Numba use at most `n` threads (None: leave the defaults)."""
    if n is None:
        yield
        return
    if n < 1:
        raise ValueError(f"threads must be at least 1, got {n}")
    import numba
    from threadpoolctl import threadpool_limits

    start_numba_threads()
    previous = numba.get_num_threads()
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    try:
        with threadpool_limits(limits=n, user_api="blas"):
            yield
    finally:
        numba.set_num_threads(previous)
