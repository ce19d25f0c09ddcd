"""The thread policy, owned in one place: how many threads BLAS (the GEMMs) and Numba may use.

netspec calls BLAS and its Numba kernels one after the other, never at the same time, so the two
pools never compete for the cores; `set_threads(n)` caps both at n (`netspec run --threads N`).
"""
from __future__ import annotations

import contextlib
from typing import Iterator


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

    previous = numba.get_num_threads()
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    try:
        with threadpool_limits(limits=n, user_api="blas"):
            yield
    finally:
        numba.set_num_threads(previous)
