"""The op registry and its families; importing this package registers every op."""
from . import activation, conv, fused, linear, norm, pool, tensor  # noqa: F401  (registration side effects)
from .registry import (GLOBAL, Attrs, Factor, OpDef, ParamSpec, RunContext, ShapeError, Window, all_names, all_ops,
                       get)

__all__ = ["GLOBAL", "Attrs", "Factor", "OpDef", "ParamSpec", "RunContext", "ShapeError", "Window", "all_names",
           "all_ops", "get"]
