"""The thread policy, owned in one place: which pool runs netspec's CPU kernels, and how many threads.

Every CPU kernel runs on Numba's thread pool, the GEMMs included (backends/cpu/gemm.py calls
OpenBLAS single-threaded from Numba's threads), so one pool owns the cores and its workers can
spin between kernels instead of sleeping. `set_threads(n)` caps it at n (`netspec run --threads N`),
and BLAS too, for GEMMs numpy runs itself (gemm.py's fallback, other code in the process).

The pool is Numba's TBB threading layer where the `tbb` package is installed (a dependency on
Linux x86-64), else its OpenMP one. Why TBB: OpenMP's parallel loops end at a barrier that every
thread of the team must reach, so a worker the OS has descheduled — one busy process beside
netspec on 2 cores is enough — stalls every layer until it runs again; TBB's calling thread takes
the tasks no worker has started and returns when they are done. Measured with `tools/bench.py
--load 1` (batch 1, 2 threads; slowdown = time beside a busy process / time alone): MobileNet v1
9.5× on OpenMP, 1.9× on TBB (ONNX Runtime 2.2–2.9×); ResNet-50 5.0× → 2.2× (2.3–2.5×);
GoogLeNet 7.0× → 1.45× (1.8–2.1×); alone, no slower (ResNet-50 0.86×, GoogLeNet 0.93× the time).
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


def _load_tbb() -> None:
    """Load the `tbb` package's libtbb, so that Numba's TBB layer finds it: pip puts it in the
    environment's lib/ folder, which the dynamic linker does not search (a loaded library of the
    same soname is used by name). Without the package, nothing: Numba takes OpenMP."""
    import ctypes
    from importlib import metadata
    try:
        files = metadata.files("tbb") or []
    except metadata.PackageNotFoundError:
        return
    for file in files:
        if file.name == "libtbb.so.12":
            try:
                ctypes.CDLL(str(file.locate()), mode=ctypes.RTLD_GLOBAL)
            except OSError:
                pass
            return


def threading_layer() -> str:
    """The threading layer Numba's pool runs on ('tbb', 'omp' or 'workqueue'), starting it if need be."""
    start_numba_threads()
    import numba
    return numba.threading_layer()


def start_numba_threads() -> None:
    """Start Numba's thread pool: TBB's where the `tbb` package is installed (see above; a user's
    NUMBA_THREADING_LAYER decides otherwise), else OpenMP's with the spin count above (unless the
    user chose a wait policy).

    libgomp reads the policy once, when it is loaded, so the variable is set just for that moment
    (other OpenMP users, e.g. PyTorch's own libgomp, keep theirs). Call before anything else
    starts Numba's threads (numba.get_num_threads does).
    """
    global _started
    if _started:
        return
    _started = True
    _load_tbb()
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
    from threadpoolctl import threadpool_limits

    with numba_threads(n), threadpool_limits(limits=n, user_api="blas"):
        yield


@contextlib.contextmanager
def numba_threads(n: int) -> Iterator[None]:
    """Within the block, Numba's kernels called from this thread use at most `n` threads (BLAS left
    as it is: `set_threads` caps both; a compiled program's batch parts take only this, each run)."""
    import numba

    start_numba_threads()
    previous = numba.get_num_threads()
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    try:
        yield
    finally:
        numba.set_num_threads(previous)
