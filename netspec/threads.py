"""The thread policy, owned in one place: how many threads netspec's CPU kernels use.

Every CPU kernel runs on Numba's thread pool, the GEMMs included (backends/cpu/gemm.py calls
OpenBLAS single-threaded from Numba's threads), so one pool owns the cores and its workers can
spin between kernels instead of sleeping. `set_threads(n)` caps it at n (`netspec run --threads N`),
and BLAS too, for GEMMs numpy runs itself (gemm.py's fallback, other code in the process).
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

_started = False

# How long Numba's idle workers spin before they sleep, in GNU OpenMP's spin iterations (~30 ns
# each here: about 3 ms). An inference's kernels follow each other within microseconds, so the
# workers stay awake through one; waking a sleeping worker costs 35–90 µs on this class of machine,
# once per kernel. After the last kernel the spinning ends within milliseconds. (OpenMP's default,
# 300,000, would keep a core busy about 10 ms after every call; passive waiting, 0, pays the
# wake-up every kernel.)
SPIN_COUNT = 100_000


def start_numba_threads() -> None:
    """Start Numba's thread pool with the spin count above (unless the user chose a wait policy).

    libgomp reads the policy once, when it is loaded, so the variable is set just for that moment
    (other OpenMP users, e.g. PyTorch's own libgomp, keep theirs). Call before anything else
    starts Numba's threads (numba.get_num_threads does).
    """
    global _started
    if _started:
        return
    _started = True
    if "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ:
        return
    os.environ["GOMP_SPINCOUNT"] = str(SPIN_COUNT)
    try:
        from numba.np.ufunc import parallel
        parallel._launch_threads()
    except Exception:  # a Numba without this hook: the threads start on first use, default policy
        pass
    finally:
        os.environ.pop("GOMP_SPINCOUNT", None)


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
