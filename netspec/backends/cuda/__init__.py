"""The CUDA backend: numba.cuda kernels for every op (kernels.py), their host-side launchers
(ops.py) and an executable that keeps weights and activations on the device (executor.py).

`compile(graph, weights, mode, seed)` checks for a usable GPU first and raises `BackendUnavailable`
(a one-line, user-facing error) when there is none. Under the CUDA simulator
(NUMBA_ENABLE_CUDASIM=1, set before numba is imported) everything runs on the CPU, slowly: that is
how the tests check the kernels on machines without a GPU.
"""
from __future__ import annotations

import numpy as _np

# numba-cuda (0.30.4 and earlier) registers an overload for np.row_stack, which numpy 2.5 removed, and
# fails on its first kernel compile without it: put back the alias (it always was np.vstack).
if not hasattr(_np, "row_stack"):
    _np.row_stack = _np.vstack


class BackendUnavailable(NotImplementedError):
    """The CUDA backend cannot run here (no numba.cuda, no driver or no GPU). A RuntimeError
    (through NotImplementedError), reported by the CLI as a user error in one line."""


_HINT = "use --backend cpu instead (backend=\"cpu\" from Python)"


def check_available() -> None:
    """Raise BackendUnavailable, with the reason and the CPU fallback, unless a CUDA GPU is usable."""
    import contextlib
    import io

    try:
        from numba import cuda
    except Exception as e:  # numba without its CUDA target, or a broken numba-cuda install
        raise BackendUnavailable(f"the CUDA backend needs numba.cuda, which failed to import "
                                 f"({type(e).__name__}: {e}); {_HINT}") from None
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            ok = cuda.is_available()
    except Exception:
        ok = False
    if not ok:
        raise BackendUnavailable(f"no CUDA GPU is available here (numba.cuda found no NVIDIA driver or device); "
                                 f"{_HINT}")


def available() -> bool:
    try:
        check_available()
    except BackendUnavailable:
        return False
    return True


def compile(graph, weights, mode: str = "eval", seed: int = 0):
    check_available()
    from numba import config
    config.CUDA_LOW_OCCUPANCY_WARNINGS = False  # small layers (batch 1, 7×7 maps) launch few blocks, by design
    from .executor import CudaExecutable
    return CudaExecutable(graph, weights, mode=mode, seed=seed)


def kernel_for(name: str):
    """The op's CUDA kernel with the `Reference` signature (attrs, inputs, params, ctx) → output, run on
    host arrays (upload, launch, download): what the tests compare against the references."""
    import functools

    from ...ops import registry
    from .executor import run_op
    from .ops import STEPS

    canonical = registry.canonical_name(name)
    if canonical not in STEPS:
        raise KeyError(f"the CUDA backend has no kernel for op '{name}'")
    return functools.partial(run_op, canonical)


__all__ = ["BackendUnavailable", "available", "check_available", "compile", "kernel_for"]
