"""Small helpers shared by the CPU kernels."""
from __future__ import annotations

import threading
import weakref

import numpy as np
from numba import get_num_threads, njit


def f32(a) -> np.ndarray:
    """`a` as a writeable, C-contiguous float32 array, so every jitted function sees one signature.

    Read-only arrays (memory-mapped weights, broadcast views) are copied: Numba types them
    differently and would compile a second specialisation.
    """
    a = np.ascontiguousarray(a, dtype=np.float32)
    if not a.flags.writeable:
        a = a.copy()
    return a


def output(out: np.ndarray | None, shape) -> np.ndarray:
    """A kernel's output array: `out` where the caller hands one (the executor's slot in its arena,
    already of this shape), else a new one."""
    return np.empty(shape, np.float32) if out is None else out


def into(out: np.ndarray | None, y: np.ndarray) -> np.ndarray:
    """y (a view, say), or y copied into `out` where the caller hands one that is not y's memory
    (by Numba where both are contiguous, so that a compiled program replays the copy: program.py)."""
    if out is None:
        return y
    if out.ctypes.data != y.ctypes.data:
        if out.flags.c_contiguous and y.flags.c_contiguous and out.dtype == y.dtype == np.float32:
            _copy(y.reshape(-1), out.reshape(-1))
        else:
            out[...] = y
    return out


@njit(cache=True)
def _copy(src, dst):
    for i in range(dst.shape[0]):
        dst[i] = src[i]


_scratch = threading.local()

# Arrays no kernel writes (a layer's weights and what its plan derives from them once: packed,
# transformed, interleaved), by id, each with a weak reference to tell a reused id apart.
_CONSTANTS: dict[int, weakref.ref] = {}


def constant(a: np.ndarray) -> np.ndarray:
    """`a`, noted as read-only to every kernel: a program's trace (program.py) takes it as a constant
    without checksumming it before and after the run (YOLOv1's 1 GB of weights: 0.7 s of its first
    run). A kernel that wrote into it anyway would give a program whose check against the loop fails."""
    owner = a  # (the array owning the memory: a trace sees views by their owner)
    while isinstance(owner.base, np.ndarray):
        owner = owner.base
    key = id(owner)
    if key not in _CONSTANTS or _CONSTANTS[key]() is not owner:
        _CONSTANTS[key] = weakref.ref(owner, lambda ref, key=key: _CONSTANTS.get(key) is ref and _CONSTANTS.pop(key))
    return a


def is_constant(a: np.ndarray) -> bool:
    ref = _CONSTANTS.get(id(a))
    return ref is not None and ref() is a


def scratch(name: str, size: int) -> np.ndarray:
    """A per-thread scratch float32 buffer of at least `size` elements, reused across calls and
    layers (fresh large allocations cost page faults on every call). It starts on a 64-byte cache
    line, as the arena's tensors do: the micro-kernel's 16-lane loads from a packed panel then
    never straddle two lines (0.88× the time, hot, in L1)."""
    buf = getattr(_scratch, name, None)
    if buf is None or buf.size < size:
        raw = np.empty(max(size, 1) + 16, np.float32)
        first = (-raw.ctypes.data % 64) // 4
        buf = raw[first:first + max(size, 1)]
        setattr(_scratch, name, buf)
    return buf[:size]


def bias_or_zeros(params: dict, n: int, enabled: bool = True, key: str = "bias") -> tuple[np.ndarray, bool]:
    """The bias vector params[key] (float32, contiguous) and whether there is one; zeros stand in
    when absent."""
    b = params.get(key) if enabled else None
    if b is None:
        return np.zeros(n, np.float32), False
    return f32(b).reshape(n), True


def window_out(size: int, kernel_eff: int, stride: int, pad_before: int, pad_after: int,
               ceil_mode: bool = False) -> int:
    """Output length of a sliding window, PyTorch's rule (ceil mode: the last window must start
    inside the input or the left padding)."""
    span = size + pad_before + pad_after - kernel_eff
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + pad_before:
        out -= 1
    return out


def _thread_count_reader():
    """numba.get_num_threads without its two locks, where this Numba allows: its threading layer's
    own C function, once the layer is up (threads.start_numba_threads brings it up first)."""
    try:
        from numba.np.ufunc import parallel
        parallel._launch_threads()
        read = parallel._get_num_threads
        if read() == get_num_threads():
            return read
    except Exception:  # another Numba: the public function
        pass
    return get_num_threads


# Numba's thread count for the calling thread, as `numba.get_num_threads()` gives it: 0.14 µs, not
# 1.0 (the public function takes two locks on every call; a convolution asks on every run, and in a
# network Python runs on cold caches: MobileNet v1 0.97–0.98 in-process A/B)
thread_count = _thread_count_reader()
