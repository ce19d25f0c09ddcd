"""JSON Schema of spec files, for editor completion and validation (`netspec schema`).

Built from the same models that validate specs: the file structure from schema.py and, for each
built-in op, its attribute model from the registry. Every value may also be an expression
(`${...}` or `$name`), and an integer pair may be written as one integer.
"""
from __future__ import annotations

from typing import Any

from .. import ops
from .schema import INITIALIZERS, PARAM_TYPES, RESERVED_KEYS, TrainSpec

EXPR = {"type": "string", "pattern": r"^\$", "description": "an expression: ${ ... } or $name"}
NAME = {"type": "string", "pattern": r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$"}
TEMPLATE = {"type": "string", "pattern": r"\$", "description": "a computed name: conv${i + 1}"}
_WORD = r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*"
REF = {"anyOf": [{"type": "string", "pattern": rf"^{_WORD}( or {_WORD})*( if present)?$",
                  "description": "NAME, 'NAME if present' (left out when absent) or 'NAME or OTHER'"}, TEMPLATE]}
REFS = {"anyOf": [REF, {"type": "array", "items": REF, "minItems": 1}]}


def _loosen(schema: Any) -> Any:
    """Accept what the attribute models accept: an expression for any value (inside lists too), and
    one integer wherever a pair [h, w] is expected."""
    if isinstance(schema, dict):
        schema = {k: _loosen(v) for k, v in schema.items() if k != "title"}
        if len(schema.get("prefixItems", [])) == 2:
            return {"anyOf": [{"type": "integer"}, EXPR, schema]}
        if schema.get("type") in ("integer", "number", "boolean") or "enum" in schema:
            return {"anyOf": [schema, EXPR]}
        return schema
    if isinstance(schema, list):
        return [_loosen(v) for v in schema]
    return schema


def _untitled(schema: Any) -> Any:
    """A pydantic model's schema without the titles it adds to every property."""
    if isinstance(schema, dict):
        return {k: _untitled(v) for k, v in schema.items() if k != "title"}
    if isinstance(schema, list):
        return [_untitled(v) for v in schema]
    return schema


def _reserved_properties() -> dict[str, Any]:
    return {
        "op": {"type": "string", "description": "a built-in op (see `netspec ops`) or a block name",
               "examples": [op.name for op in ops.all_ops()]},
        "name": {"anyOf": [NAME, {"type": "integer"}, TEMPLATE]},
        "in": REFS,
        "repeat": {"anyOf": [{"type": "integer", "minimum": 0}, EXPR]},
        "first": {"type": "object"},
        "last": {"type": "object"},
        "when": {"anyOf": [{"type": "boolean"}, EXPR]},
        "mode": {"enum": ["train", "eval"]},
        "init": {"type": "object", "description": "per-parameter initializers", "additionalProperties": {
            "anyOf": [{"type": "number"}, {"enum": list(INITIALIZERS)},
                      {"type": "object", "minProperties": 1, "maxProperties": 1,
                       "properties": {k: {"type": "number"} for k in ("normal", "uniform", "constant")},
                       "additionalProperties": False}]}},
        "layers": {"type": "array", "items": {"$ref": "#/$defs/layer"}},
        "assert": {"anyOf": [{"type": "boolean"}, EXPR], "description": "a condition checked at expansion"},
        "message": {"type": "string", "description": "what a failed `assert:` says"},
    }


def _op_rule(op) -> dict[str, Any]:
    model = op.attrs.model_json_schema()
    props = {name: {"anyOf": [_loosen(s), EXPR], "description": s.get("description", s.get("title", name))}
             for name, s in model.get("properties", {}).items()}
    names = [op.name, *op.aliases]
    return {
        "if": {"properties": {"op": {"enum": names}}, "required": ["op"]},
        "then": {
            "description": op.doc,
            "properties": _reserved_properties() | props,
            "required": model.get("required", []),
            "additionalProperties": False,
        },
    }


def spec_json_schema() -> dict[str, Any]:
    assert set(RESERVED_KEYS) == set(_reserved_properties()), "keep the schema's layer keys in step"
    param = {
        "anyOf": [
            {"enum": list(PARAM_TYPES), "description": "a required parameter of this type"},
            {"type": ["number", "boolean", "array", "string"], "description": "a default value"},
            {"type": "object", "additionalProperties": False, "required": ["type"],
             "properties": {"type": {"enum": list(PARAM_TYPES)}, "default": {}, "doc": {"type": "string"}}},
        ]
    }
    layer = {
        "type": "object",
        "description": "a layer: `op:` with its attributes, `layers:` (a group), or an `assert:` check",
        "properties": _reserved_properties(),
        "anyOf": [{"required": ["op"]}, {"required": ["layers"]}, {"required": ["assert"]}],
        "allOf": [_op_rule(op) for op in ops.all_ops()] + [
            {"if": {"required": ["assert"]}, "then": {"propertyNames": {"enum": ["assert", "message"]}}}],
    }
    block = {
        "type": "object", "additionalProperties": False, "required": ["layers"],
        "properties": {
            "doc": {"type": "string"},
            "inputs": {"type": "array", "items": NAME},
            "params": {"type": "object", "additionalProperties": {"$ref": "#/$defs/param"}},
            "layers": {"type": "array", "items": {"$ref": "#/$defs/layer"}},
            "output": NAME,
        },
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://netspec.dev/schema/netspec-1.json",
        "title": "netspec spec file",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "netspec": {"const": 1},
            "name": {"type": "string"},
            "doc": {"type": "string"},
            "extends": {"type": "string", "description": "a spec file whose parameter defaults this one changes"},
            "params": {"type": "object", "additionalProperties": {"$ref": "#/$defs/param"}},
            "input": {"type": "object", "additionalProperties": False, "required": ["shape"],
                      "properties": {"shape": {"type": "array", "items": {"anyOf": [{"type": "integer"}, EXPR]}},
                                     "name": NAME,
                                     "mean": {"type": "array", "items": {"type": "number"}},
                                     "std": {"type": "array", "items": {"type": "number"}}}},
            "imports": {"type": "array", "items": {"type": "string"}},
            "blocks": {"type": "object", "additionalProperties": {"$ref": "#/$defs/block"}},
            "variants": {"type": "object", "additionalProperties": {
                "type": "object", "additionalProperties": False,
                "properties": {"doc": {"type": "string"}, "params": {"type": "object"}}}},
            "layers": {"type": "array", "items": {"$ref": "#/$defs/layer"}},
            "outputs": {"anyOf": [NAME, {"type": "array", "items": NAME, "minItems": 1}]},
            "train": _untitled(TrainSpec.model_json_schema()) | {
                "description": "how `netspec train` teaches this network (its options override these)"},
        },
        "$defs": {"param": param, "layer": layer, "block": block},
    }
