"""The CPU backend: Numba kernels for every op, with the `Reference` signature
(attrs, inputs, params, ctx) -> output, NCHW float32 in and out.

`KERNELS` maps each op's canonical name to its kernel; `warm_up(op_names, graph=...)` compiles
what those ops (that graph's layers) need ahead of a run. Every jitted function is compiled with
`cache=True`, into a per-user directory, because site-packages may be read-only: CACHE_FOLDER, a
folder per version of this backend's sources (DIGEST) under $NUMBA_CACHE_DIR if the user set it,
else under $XDG_CACHE_HOME/netspec/numba or ~/.cache/netspec/numba, else in a temporary directory.

Numba's own cache locators key each function by the absolute path of its file, so a second clone
or venv of the same sources would compile everything again. `_Locator` files this folder's
functions by their place in the package instead (CACHE_FOLDER/backends/cpu/…), stamped with the
digest: the same sources anywhere share one cache.
"""
from __future__ import annotations

import hashlib
import os
import sys
import tempfile

_HERE = os.path.dirname(os.path.abspath(__file__))
_PACKAGE = os.path.dirname(os.path.dirname(_HERE))  # the netspec package
# Python only, imported by no kernel: the op registry and the warm-up table (cases and measured
# compile times). Editing it does not change any compiled code, so it does not start a new cache
# (tests/test_compile_progress.py checks that it defines no jitted function).
_NOT_COMPILED = frozenset({"kernels.py"})


def _host_lanes() -> int:
    """float32 lanes of the vectors the hand-written kernels use (`_act.py`, `packed.py`): 16 where
    the CPU has AVX-512 (its registers hold 16), else 8 (AVX2). On an AVX-512 Xeon, 2 threads,
    against ONNX Runtime in the same runs: netspec/ORT 1.3–1.9 with 16 lanes, 2.1–2.5 with 8
    (ResNet-50, MobileNet v1, GoogLeNet at batch 1 and 8). NETSPEC_LANES=8 keeps 8 anywhere."""
    from llvmlite import binding  # (llvmlite only: numba must not be imported yet, see below)
    wide = "+avx512f" in binding.get_host_cpu_features().flatten().split(",")
    return 16 if wide and os.environ.get("NETSPEC_LANES") != "8" else 8


LANES = _host_lanes()


def _sources_digest(folder: str = _HERE) -> str:
    """A digest of the CPU backend's sources and of LANES, naming its cache folder and stamping
    every cached function: Numba checks only each function's own file, so an edited helper that
    other kernels inline (`_act.py`, say) would leave them running the old code from the cache; a
    new digest starts a new cache (and the kernels of 8 and 16 lanes never share one). The kernels
    inline nothing from outside this folder (they import only plain Python from netspec.ops:
    RunError, split_inputs)."""
    digest = hashlib.sha1(f"lanes {LANES}\0".encode())
    for name in sorted(os.listdir(folder)):
        if name.endswith(".py") and name not in _NOT_COMPILED:
            with open(os.path.join(folder, name), "rb") as f:
                digest.update(name.encode() + b"\0" + f.read())
    return digest.hexdigest()[:12]


DIGEST = _sources_digest()


def _writable(path: str) -> bool:
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return False
    return os.access(path, os.W_OK | os.X_OK)


def _cache_folder() -> str:
    """This version's cache folder, <root>/<DIGEST>; $NUMBA_CACHE_DIR may already name it (set by
    netspec in a parent process)."""
    root = os.environ.get("NUMBA_CACHE_DIR")
    if root:
        candidates = [root if os.path.basename(os.path.normpath(root)) == DIGEST else os.path.join(root, DIGEST)]
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        candidates = [os.path.join(base, "netspec", "numba", DIGEST)]
    uid = os.getuid() if hasattr(os, "getuid") else os.getpid()
    candidates.append(os.path.join(tempfile.gettempdir(), f"netspec-numba-{uid}", DIGEST))
    for path in candidates:
        if _writable(path):
            return path
    return tempfile.mkdtemp(prefix="netspec-numba-")


CACHE_FOLDER = _cache_folder()

# Before numba is imported: numba reads NUMBA_CACHE_DIR when it is first imported (it caches other
# code there; netspec's own goes where `_Locator` says).
if not os.environ.get("NUMBA_CACHE_DIR"):
    os.environ["NUMBA_CACHE_DIR"] = CACHE_FOLDER
    if "numba" in sys.modules:  # imported earlier by someone else: tell its config directly
        import numba.core.config as _numba_config
        if not _numba_config.CACHE_DIR:
            _numba_config.CACHE_DIR = os.environ["NUMBA_CACHE_DIR"]

from numba.core import caching as _caching  # noqa: E402


class _Locator(_caching._CacheLocator):
    """Where Numba caches a function of this folder: CACHE_FOLDER/<its folder relative to the
    netspec package>, stamped with DIGEST (not its file's path or contents), so that the same
    sources at another path, or with other file times, load what was compiled once."""

    _checked: set[str] = set()  # folders found writable (Numba checks on every function and save)

    def __init__(self, py_func, py_file):
        self._py_file = py_file  # (Numba's warnings name it)
        self._lineno = py_func.__code__.co_firstlineno
        self._path = os.path.join(CACHE_FOLDER, os.path.relpath(os.path.dirname(py_file), _PACKAGE))

    def ensure_cache_path(self):
        if self._path not in self._checked:
            super().ensure_cache_path()
            self._checked.add(self._path)

    def get_cache_path(self):
        return self._path

    def get_source_stamp(self):
        return DIGEST

    def get_disambiguator(self):
        return str(self._lineno)

    @classmethod
    def from_function(cls, py_func, py_file):
        if os.path.dirname(os.path.abspath(py_file)) != _HERE:  # not ours: Numba's locators decide
            return None
        self = cls(py_func, py_file)
        try:
            self.ensure_cache_path()
        except OSError:
            return None
        return self


_impl = getattr(_caching, "CacheImpl", None) or _caching._CacheImpl  # (named _CacheImpl before numba 0.60)
if not any(c.__name__ == _Locator.__name__ and c.__module__ == __name__ for c in _impl._locator_classes):
    _impl._locator_classes.insert(0, _Locator)  # before the kernel modules below are imported


from ...threads import start_numba_threads  # noqa: E402

start_numba_threads()

from .kernels import KERNELS, TRAINING_KERNELS, Kernel, kernel_for, warm_up  # noqa: E402

__all__ = ["KERNELS", "TRAINING_KERNELS", "Kernel", "kernel_for", "warm_up"]
