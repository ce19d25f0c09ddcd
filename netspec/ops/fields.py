"""Attribute field types shared by the op families.

YAML is typed, so these are strict where pydantic would be lax: an integer field refuses "3"
and true, but accepts 64.0 (an expression like `${c * 0.5}` yields a float).
"""
from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, PlainValidator, WithJsonSchema

from .registry import MAX_SIZE, ShapeError


def _int_like(v: Any) -> Any:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"expected an integer, got {_describe(v)}")
    if isinstance(v, float):
        if not v.is_integer():
            raise ValueError(f"expected an integer, got {v}")
        v = int(v)
    if abs(v) > MAX_SIZE:
        raise ValueError(f"{v:,} is absurdly large (the limit is {MAX_SIZE:,})")
    return v


def _float_like(v: Any) -> Any:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"expected a number, got {_describe(v)}")
    if not math.isfinite(v):
        raise ValueError(f"expected a finite number, got {v}")
    return float(v)


def _bool_only(v: Any) -> Any:
    if not isinstance(v, bool):
        raise ValueError(f"expected true or false, got {_describe(v)}")
    return v


def _describe(v: Any) -> str:
    if isinstance(v, str):
        return f"the string '{v}'"
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "nothing (null)"
    if isinstance(v, list):
        return "a list"
    if isinstance(v, dict):
        return "a mapping"
    return repr(v)


def _positive(v: int) -> int:
    if v <= 0:
        raise ValueError(f"must be positive, got {v}")
    return v


def _non_negative(v: int) -> int:
    if v < 0:
        raise ValueError(f"must not be negative, got {v}")
    return v


def _pair(v: Any) -> Any:
    """An int means the same value along H and W; a list gives [h, w]."""
    if isinstance(v, list):
        if len(v) != 2:
            raise ValueError(f"expected one integer or a list [h, w], got a list of {len(v)}")
        return tuple(v)
    return (v, v)


Int = Annotated[int, BeforeValidator(_int_like)]
PosInt = Annotated[int, BeforeValidator(_int_like), AfterValidator(_positive)]
NonNegInt = Annotated[int, BeforeValidator(_int_like), AfterValidator(_non_negative)]
Float = Annotated[float, BeforeValidator(_float_like)]
Bool = Annotated[bool, BeforeValidator(_bool_only)]
PosPair = Annotated[tuple[PosInt, PosInt], BeforeValidator(_pair)]
NonNegPair = Annotated[tuple[NonNegInt, NonNegInt], BeforeValidator(_pair)]
PaddingMode = Literal["same", "valid"]


def _padding(v: Any) -> Any:
    """'same', 'valid', an integer or [h, w]: one clear message whichever way it is wrong."""
    if isinstance(v, str):
        if v in ("same", "valid"):
            return v
        raise ValueError(f"padding is an integer, [h, w], 'same' or 'valid', got the string '{v}'")
    return tuple(_non_negative(_int_like(x)) for x in _pair(v))


Padding = Annotated[PaddingMode | tuple[int, int], PlainValidator(_padding), WithJsonSchema(
    {"anyOf": [{"enum": ["same", "valid"]}, {"type": "integer", "minimum": 0},
               {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 2, "maxItems": 2}]})]


def resolve_padding(padding: PaddingMode | tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int],
                    dilation: tuple[int, int]) -> tuple[int, int, int, int]:
    """Padding as (top, left, bottom, right). 'same' pads like PyTorch: the extra pixel goes bottom/right."""
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "same":
        if stride != (1, 1):
            raise ShapeError("padding 'same' needs stride 1 (as in PyTorch); give the padding explicitly", "padding")
        th, tw = (dilation[0] * (kernel[0] - 1), dilation[1] * (kernel[1] - 1))
        return (th // 2, tw // 2, th - th // 2, tw - tw // 2)
    return (padding[0], padding[1], padding[0], padding[1])
