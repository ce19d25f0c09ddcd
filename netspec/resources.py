"""Memory a run will need, weighed against what this machine can give, before anything is allocated.

A network that passes `check` may still be far too big to run here (a 16384² input, a batch of a
million): `netspec run` and `Executable.run` work out what they will hold — the weights (and the
kernels' packed copies of them), the memory plan's arena at this batch, the input and outputs, the
kernels' largest workspace — and refuse with the figures when it does not fit, instead of failing
half way with MemoryError (or making the machine swap)."""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass

from .files import open_regular, read_limited

BYTES = 4  # float32


class ResourceError(ValueError):
    """A run that needs more memory than it may have; the message gives the figures."""


def format_bytes(n: int | float) -> str:
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{int(n)} bytes"


_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1000, "kib": 1 << 10, "m": 1 << 20, "mb": 1000 ** 2, "mib": 1 << 20,
          "g": 1 << 30, "gb": 1000 ** 3, "gib": 1 << 30, "t": 1 << 40, "tb": 1000 ** 4, "tib": 1 << 40}


def parse_size(text: str) -> int:
    """'8G', '512MiB', '1.5GB', '1000000' → bytes (K, M, G, T and KiB… are powers of 1024; KB… of 1000)."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in _UNITS:
        raise ValueError(f"expected a size such as 8G, 512M or 1.5GiB, got '{text}'")
    value = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if not 0 < value < 1 << 60:
        raise ValueError(f"expected a size above 0, got '{text}'")
    return int(value)


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def available_memory() -> tuple[int, str]:
    """(bytes this process may still allocate, where the figure comes from): the least of the
    system's available memory, the room left under this process's cgroup limit, and under its
    address-space limit (ulimit -v)."""
    figures: list[tuple[int, str]] = []
    meminfo = _read("/proc/meminfo") or ""
    match = re.search(r"^MemAvailable:\s+(\d+) kB", meminfo, re.M)
    if match:
        figures.append((int(match.group(1)) * 1024, "available"))
    limit, usage = _read("/sys/fs/cgroup/memory.max"), _read("/sys/fs/cgroup/memory.current")
    if limit and usage and limit.strip().isdigit() and usage.strip().isdigit():
        figures.append((max(0, int(limit) - int(usage)), "left under this container's memory limit"))
    try:
        import resource
        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft != resource.RLIM_INFINITY:
            status = _read("/proc/self/status") or ""
            used = re.search(r"^VmSize:\s+(\d+) kB", status, re.M)
            figures.append((max(0, soft - (int(used.group(1)) * 1024 if used else 0)),
                            "left under this process's address-space limit (ulimit -v)"))
    except (ImportError, OSError, ValueError):
        pass
    if not figures:  # (no /proc: not Linux) assume the physical memory
        try:
            figures.append((os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "physical memory"))
        except (ValueError, OSError, AttributeError):
            return 1 << 62, "unknown"
    return min(figures)


@dataclass
class Needs:
    """What a run will hold at its peak, by part (bytes)."""
    parts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    def describe(self) -> str:
        """The parts, largest first."""
        parts = sorted(((size, name) for name, size in self.parts.items() if size), reverse=True)
        return ", ".join(f"{name} {format_bytes(size)}" for size, name in parts)


def check_fits(needs: Needs, max_memory: int | None = None, hint: str = "lower --batch or the input size",
               subject: str = "this run") -> None:
    """ResourceError when `needs` exceeds `max_memory` (or, without it, the memory available now)."""
    if max_memory is not None:
        room, source = max_memory, "allowed by --max-memory"
    else:
        room, source = available_memory()
    if needs.total > room:
        raise ResourceError(f"not enough memory for {subject}: {format_bytes(needs.total)} needed, "
                            f"{format_bytes(room)} {source}; {hint} ({needs.describe()})")


def run_needs(graph, batch: int, backend: str = "cpu") -> Needs:
    """What running `graph` (the graph as it runs: one mode's active nodes) at `batch` will hold.

    The arena is the memory plan's peak (passes/memory.py); the CPU kernels add a packed copy of
    the weights and the largest convolution's scratch (its algorithm's buffers: backends/cpu/conv.py
    workspace_bytes) — generous bounds, since the point is to refuse what cannot fit, not to plan to
    the byte."""
    from . import ops
    from .passes.infer import infer
    from .passes.memory import plan_memory

    typed = infer(graph, batch)
    if backend == "cpu":
        from .backends.cpu.conv import workspace_bytes
    else:  # numpy's sliding windows, copied out in float64 at worst
        def workspace_bytes(op, attrs, shape):
            kh, kw = attrs.kernel
            return 2 * math.prod(shape) * kh * kw * BYTES
    weights = workspace = 0
    for node in typed.nodes:
        op = ops.get(node.op)
        inputs = [typed.type_of(i) for i in node.inputs]
        weights += sum(p.size for p in op.params(node.attrs, inputs).values()) * BYTES
        if node.op in ("conv2d", "fused_conv2d", "conv_transpose2d"):
            workspace = max(workspace, workspace_bytes(node.op, node.attrs, inputs[0].shape))
    parts = {
        "weights": weights,
        "the kernels' copies of them": weights if backend == "cpu" else 0,
        "input": sum(t.numel(batch) * BYTES for t in typed.inputs.values()),
        "activations": plan_memory(typed, batch).arena,
        "outputs": sum(typed.type_of(name).numel(batch) * BYTES for name in typed.outputs),
        "kernel workspace": workspace,
    }
    if backend == "reference":  # numpy's temporaries: float64 and a copy or two per op
        parts["activations"] *= 3
    # what the parts above do not count (transformed weights, fresh outputs, allocator slack):
    # measured peak RSS of CPU runs came to 0.9–1.2× their sum plus the process's own 180 MiB
    parts["margin"] = sum(parts.values()) // 4
    parts["netspec itself"] = 256 << 20
    return Needs(parts)


def read_within_memory(path: str | os.PathLike, what: str = "the file") -> bytes:
    """The bytes of a regular file, its size checked against the memory available before it is read."""
    def limit(size: int) -> int:
        check_fits(Needs({what: size}), hint="the file is too large to read here", subject=what)
        return size
    return read_limited(path, limit, what)


def npy_header(path: str):
    """(shape, dtype) of the array a .npy file holds, from its header alone; None when it is not one."""
    import numpy as np
    try:
        with open_regular(path) as f:
            major, _ = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(f)
    except (OSError, ValueError, EOFError, SyntaxError, TypeError):
        return None
    return shape, dtype
