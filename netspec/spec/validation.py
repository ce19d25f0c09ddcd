"""Turning pydantic's validation errors into located, readable diagnostics."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from .errors import Diagnostic, did_you_mean
from .loader import SourceFile

_TYPE_WORDS = {
    "dict_type": "expected a mapping (key: value)",
    "model_type": "expected a mapping (key: value)",
    "model_attributes_type": "expected a mapping (key: value)",
    "list_type": "expected a list",
    "string_type": "expected a string",
    "int_type": "expected an integer",
    "int_parsing": "expected an integer",
    "float_type": "expected a number",
    "bool_type": "expected true or false",
}


def friendly_message(err: dict[str, Any]) -> str:
    kind = err["type"]
    if kind in _TYPE_WORDS:
        return _TYPE_WORDS[kind] + _got(err.get("input"))
    if kind == "missing":
        return f"missing required field '{err['loc'][-1]}'"
    message = err["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            message = message[len(prefix):]
    if kind == "literal_error":
        message = message.replace("Input should be", "expected")
    return message


def _got(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return f", got a {'mapping' if isinstance(value, dict) else 'list'}"
    if value is None:
        return ", got nothing (null)"
    return f", got {value!r}"


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """The field names allowed at `loc` (for "did you mean"), walking nested models by annotation."""
    from .schema import RESERVED_KEYS, BlockDef, InputSpec, ParamDecl, SpecFile, Variant

    if model is SpecFile:
        if len(loc) == 1:
            return list(SpecFile.model_fields)
        head = loc[0]
        if head == "input":
            return list(InputSpec.model_fields)
        if head == "variants":
            return list(Variant.model_fields)
        if head == "params":
            return list(ParamDecl.model_fields)
        if head == "blocks":
            inner = loc[2:]
            if len(inner) == 1:
                return list(BlockDef.model_fields)
            if inner and inner[0] == "params":
                return list(ParamDecl.model_fields)
    return RESERVED_KEYS


def validation_diagnostics(error: ValidationError, source: SourceFile, model: type[BaseModel]) -> list[Diagnostic]:
    found = []
    for err in error.errors():
        loc = tuple(err["loc"])
        # pydantic adds a union member's name to the location; keep only the document's path.
        path = tuple(p for p in loc if isinstance(p, int) or not str(p).startswith(("function-", "list[", "dict[")))
        if err["type"] == "extra_forbidden":
            key = path[-1]
            hint = did_you_mean(key, _fields_at(model, path))
            found.append(Diagnostic(source.loc(path, key=True), f"unknown field '{key}'{hint}"))
        elif err["type"] == "missing":
            found.append(Diagnostic(source.loc(path[:-1]), f"missing required field '{path[-1]}'"))
        else:
            found.append(Diagnostic(source.loc(path), friendly_message(err)))
    return found
