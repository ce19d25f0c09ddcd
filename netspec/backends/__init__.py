"""Backends: the executor and the per-target kernels (`cpu`: Numba)."""
