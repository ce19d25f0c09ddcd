"""The op registry and its families; importing this package registers every op."""
from . import activation, conv, fused, grad, linear, loss, norm, pool, tensor  # noqa: F401  (registration side effects)
from .registry import (GLOBAL, Attrs, Backward, Factor, GradArgs, OpDef, ParamSpec, RunContext, ShapeError, Window,
                       all_names, all_ops, get)

__all__ = ["GLOBAL", "Attrs", "Backward", "Factor", "GradArgs", "OpDef", "ParamSpec", "RunContext", "ShapeError",
           "Window", "all_names", "all_ops", "get"]
