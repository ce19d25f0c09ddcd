"""The CPU backend: Numba kernels for every op, with the `Reference` signature
(attrs, inputs, params, ctx) -> output, NCHW float32 in and out.

`KERNELS` maps each op's canonical name to its kernel; `warm_up(op_names)` compiles what those
ops need ahead of a run. Every jitted function is compiled with `cache=True`; the cache lives in a
per-user directory ($NUMBA_CACHE_DIR, else a folder per version of this backend's sources in
$XDG_CACHE_HOME/netspec/numba or ~/.cache/netspec/numba, else in a private temporary directory),
because site-packages may be read-only.
"""
from __future__ import annotations

import hashlib
import os
import sys
import tempfile


def _sources_digest(folder: str = os.path.dirname(os.path.abspath(__file__))) -> str:
    """A digest of the CPU backend's sources, naming its cache folder: Numba checks only each cached
    function's own file, so an edited helper that other kernels inline (`_act.py`, say) would
    leave them running the old code from the cache; a new digest starts a new cache."""
    digest = hashlib.sha1()
    for name in sorted(os.listdir(folder)):
        if name.endswith(".py"):
            with open(os.path.join(folder, name), "rb") as f:
                digest.update(name.encode() + b"\0" + f.read())
    return digest.hexdigest()[:12]


def _cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    version = _sources_digest()
    candidates = [os.path.join(base, "netspec", "numba", version)]
    uid = os.getuid() if hasattr(os, "getuid") else os.getpid()
    candidates.append(os.path.join(tempfile.gettempdir(), f"netspec-numba-{uid}", version))
    for path in candidates:
        try:
            os.makedirs(path, exist_ok=True)
        except OSError:
            continue
        if os.access(path, os.W_OK | os.X_OK):
            return path
    return tempfile.mkdtemp(prefix="netspec-numba-")


# Before numba is imported: numba reads NUMBA_CACHE_DIR when it is first imported.
if not os.environ.get("NUMBA_CACHE_DIR"):
    os.environ["NUMBA_CACHE_DIR"] = _cache_dir()
    if "numba" in sys.modules:  # imported earlier by someone else: tell its config directly
        import numba.core.config as _numba_config
        if not _numba_config.CACHE_DIR:
            _numba_config.CACHE_DIR = os.environ["NUMBA_CACHE_DIR"]


from ...threads import start_numba_threads  # noqa: E402

start_numba_threads()

from .kernels import KERNELS, Kernel, kernel_for, warm_up  # noqa: E402

__all__ = ["KERNELS", "Kernel", "kernel_for", "warm_up"]
