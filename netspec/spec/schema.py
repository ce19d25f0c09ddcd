"""The spec file, as pydantic models.

A file is validated here for its *structure* (known top-level keys, layer entry fields, parameter
declarations). Op attributes are validated later, during expansion, once expressions have been
evaluated, by the op's own attribute model.
"""
from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, model_validator

from .loader import Path_, SourceFile

NAME_RE = re.compile(r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$")
IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
PARAM_TYPES = ("int", "float", "bool", "str", "list")
REQUIRED = object()  # marks a parameter without a default


def _expr_or(kind: str, *types: type):
    def check(v: Any) -> Any:
        if isinstance(v, str) and v.startswith("$"):
            return v
        if isinstance(v, types) and not (isinstance(v, bool) and bool not in types):
            return v
        raise ValueError(f"expected {kind} or an expression like ${{ ... }}")
    return BeforeValidator(check)


def is_template(v: Any) -> bool:
    """A name or reference computed at expansion: `denselayer${i + 1}`, `${...}`, `$k`."""
    return isinstance(v, str) and "$" in v


def check_name(v: Any, template: bool = True) -> str:
    """A node name as text; ValueError when it is not one (a template is checked once computed)."""
    if isinstance(v, bool) or not isinstance(v, (str, int)):
        raise ValueError("a name must be a word like conv1")
    v = str(v)
    if template and is_template(v):
        return v
    if is_template(v):
        raise ValueError(f"'{v}': only a layer's `name:` (and `in:`) may be computed; write the name itself here")
    if not NAME_RE.match(v):
        raise ValueError(f"'{v}' is not a valid name: use letters, digits and _ (dots separate levels)"
                         + ("; a name may be computed from parameters and the repeat index, as in \"conv${i + 1}\""
                            if template else ""))
    return v


OPTIONAL = " if present"  # `in: [a, b if present]`: b is left out of the list when it is absent
FALLBACK = " or "  # `in: [a, b or input]`: input stands in for b when b is absent


def parse_ref(text: str) -> tuple[tuple[str, ...], bool]:
    """A reference in `in:` as (the names to try in order, whether it may be left out); ValueError
    when it is not one."""
    optional = text.endswith(OPTIONAL)
    names = tuple((text[:-len(OPTIONAL)] if optional else text).split(FALLBACK))
    if not all(NAME_RE.match(n) for n in names):
        raise ValueError(f"'{text}' is not a node reference: write a name, 'NAME if present' (left out when "
                         "NAME is absent) or 'NAME or OTHER' (OTHER stands in when NAME is absent)")
    return names, optional


def _refs(v: Any, plain: bool = False) -> Any:
    """`in:` (references, which may be computed or say what an absent entry means) or, `plain`,
    `outputs:` (names)."""
    items = v if isinstance(v, list) else [v]
    if not items:
        raise ValueError("'in' lists no inputs" if not plain else "`outputs` lists no names")
    for item in items:
        if isinstance(item, bool) or isinstance(item, (int, float)):
            raise ValueError(f"refer to earlier nodes by name, not by index ({item}); give the node a `name:`")
        if not isinstance(item, str):
            raise ValueError(f"'{item}' is not a node name")
        if plain:
            check_name(item, template=False)
        elif not is_template(item):
            parse_ref(item)
    return items


Name = Annotated[str, BeforeValidator(lambda v: check_name(v, template=False))]  # never computed
LayerName = Annotated[str, BeforeValidator(check_name)]
Refs = Annotated[list[str], BeforeValidator(_refs)]
Names = Annotated[list[str], BeforeValidator(lambda v: _refs(v, plain=True))]
IntOrExpr = Annotated[int | str, _expr_or("an integer", int)]
BoolOrExpr = Annotated[bool | str, _expr_or("true or false", bool)]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=False)


class ParamDecl(Model):
    """A typed parameter: `name: int` (required), `name: 64` (default, type from it), or
    `name: {type: int, default: 64, doc: ...}`. Defaults may be expressions over earlier parameters."""

    type: Literal["int", "float", "bool", "str", "list"]
    default: Any = REQUIRED
    doc: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        if isinstance(v, str) and v in PARAM_TYPES:
            return {"type": v}
        if isinstance(v, str) and v.startswith("$"):
            raise ValueError("a default given as an expression needs its type: {type: int, default: ${...}}")
        if isinstance(v, (bool, int, float, list)) or isinstance(v, str):
            if isinstance(v, str):
                raise ValueError(f"'{v}' is not a type ({', '.join(PARAM_TYPES)}); for a string default "
                                 "write {type: str, default: ...}")
            kind = ("bool" if isinstance(v, bool) else "int" if isinstance(v, int)
                    else "float" if isinstance(v, float) else "list")
            return {"type": kind, "default": v}
        return v

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


def check_param_type(decl: ParamDecl, value: Any) -> Any:
    """The value, converted where harmless (an int where a float is declared); ValueError otherwise."""
    kind = decl.type
    if kind == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if kind == "int" and isinstance(value, float) and value.is_integer():
        return int(value)
    ok = {"int": int, "bool": bool, "str": str, "list": list, "float": float}[kind]
    if isinstance(value, ok) and not (kind == "int" and isinstance(value, bool)):
        return value
    raise ValueError(f"expected {kind}, got {type(value).__name__} {value!r}")


class InputSpec(Model):
    shape: list[IntOrExpr]  # without the batch dimension: [C, H, W]
    name: Name = "input"
    # How `netspec run` turns an image into this input: pixels scaled to [0, 1], then (x - mean) / std.
    mean: list[float] | None = None
    std: list[float] | None = None


INITIALIZERS = ("zeros", "ones", "kaiming_normal", "kaiming_uniform", "xavier_normal", "xavier_uniform")


def _init_rule(v: Any) -> Any:
    """`0.5` (a constant), a name (kaiming_normal, ...), or {normal: std} / {uniform: bound} / {constant: v}."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return ("constant", float(v))
    if isinstance(v, str) and v in INITIALIZERS:
        return (v, None)
    if isinstance(v, dict) and len(v) == 1:
        (kind, value), = v.items()
        if kind in ("normal", "uniform", "constant") and isinstance(value, (int, float)) \
                and not isinstance(value, bool) and (kind == "constant" or value > 0):
            return (kind, float(value))
    raise ValueError("an initializer is a number, one of " + ", ".join(INITIALIZERS)
                     + ", or {normal: std}, {uniform: bound}, {constant: value}")


InitRule = Annotated[tuple[str, float | None], BeforeValidator(_init_rule)]


class LayerEntry(BaseModel):
    """One entry of a `layers:` list. Keys other than these are the op's attributes or block's arguments.
    An entry with `assert:` (and an optional `message:`) is a check, not a layer."""

    model_config = ConfigDict(extra="allow", frozen=True)

    op: str | None = None
    name: LayerName | None = None
    inputs: Refs | None = Field(None, alias="in")
    repeat: IntOrExpr | None = None
    first: dict[str, Any] | None = None
    last: dict[str, Any] | None = None
    when: BoolOrExpr | None = None
    mode: Literal["train", "eval"] | None = None
    init: dict[str, InitRule] | None = None  # per-parameter initializers: {weight: {normal: 0.01}, bias: 0}
    layers: list["LayerEntry"] | None = None
    check: BoolOrExpr | None = Field(None, alias="assert")
    message: str | None = None  # what a failed `assert:` says; may hold ${...} pieces
    _source: SourceFile | None = PrivateAttr(None)
    _path: Path_ = PrivateAttr(())

    @property
    def args(self) -> dict[str, Any]:
        """The op's attributes (or the block's arguments) as written."""
        return dict(self.model_extra or {})

    @model_validator(mode="after")
    def _op_or_layers(self):
        if self.check is not None:
            others = [_key(k) for k in type(self).model_fields
                      if k not in ("check", "message") and getattr(self, k) is not None]
            if others or self.model_extra:
                raise ValueError(f"an `assert:` entry has only `assert:` and `message:`, not "
                                 f"{', '.join(others + list(self.model_extra or {}))}")
            return self
        if self.message is not None:
            raise ValueError("`message:` goes with `assert:` (what a failed assertion says)")
        if self.op is None and self.layers is None:
            raise ValueError("a layer needs `op:` (an op or block name) or `layers:` (a group)")
        if self.op is not None and self.layers is not None:
            raise ValueError("a layer has either `op:` or `layers:`, not both")
        if self.layers is not None and self.model_extra:
            raise ValueError(f"a group (`layers:`) takes no attributes, got {', '.join(self.model_extra)}")
        if (self.first is not None or self.last is not None) and self.repeat is None:
            raise ValueError("`first:` and `last:` override iterations of a `repeat:`; this layer has none")
        return self


def _key(field: str) -> str:
    """A LayerEntry field as written in a spec (`in`, `assert`)."""
    return LayerEntry.model_fields[field].alias or field


RESERVED_KEYS = sorted(_key(f) for f in LayerEntry.model_fields)


class BlockDef(Model):
    """A reusable block: typed parameters, named inputs, and a body of layers."""

    doc: str | None = None
    inputs: list[Name] = ["input"]
    params: dict[str, ParamDecl] = {}
    layers: list[LayerEntry]
    output: Name | None = None  # defaults to the last layer


class Variant(Model):
    doc: str | None = None
    params: dict[str, Any] = {}


Fraction = Annotated[float, Field(ge=0.0, lt=1.0)]


class TrainSpec(Model):
    """`train:`, how `netspec train` teaches this network by default; each key is also a command-line
    option of the same name (`--weight-decay` for weight_decay), which wins over the spec."""

    epochs: int | None = Field(None, ge=1)
    batch: int | None = Field(None, ge=1)
    # a loss name, {op: cross_entropy, label_smoothing: 0.1}, or {output: loss} with an optional
    # weight each (GoogLeNet's auxiliary heads: {aux1: {op: cross_entropy, weight: 0.3}, ...})
    loss: str | dict[str, Any] | None = None
    optimizer: Literal["sgd", "adam", "adamw"] | None = None
    lr: float | None = Field(None, gt=0.0)
    momentum: Fraction | None = None
    nesterov: bool | None = None
    weight_decay: float | None = Field(None, ge=0.0)
    betas: tuple[Fraction, Fraction] | None = None
    eps: float | None = Field(None, gt=0.0)
    schedule: Literal["constant", "step", "cosine"] | None = None
    warmup: float | None = Field(None, ge=0.0)  # epochs of linear warm-up
    step_size: int | None = Field(None, ge=1)  # epochs between the step schedule's decays
    gamma: float | None = Field(None, gt=0.0)  # the step schedule's factor
    label_smoothing: Fraction | None = None
    val_split: Fraction | None = None
    seed: int | None = Field(None, ge=0)
    augment: Literal["none", "shift"] | None = None  # shift: random translations, up to 1/8 of the side

    def settings(self) -> dict[str, Any]:
        """The keys the spec sets."""
        return {k: v for k, v in self.model_dump().items() if v is not None}


class SpecFile(Model):
    netspec: Literal[1] = 1
    name: str | None = None
    doc: str | None = None
    extends: str | None = None  # another spec file, whose parameter defaults this one changes
    params: dict[str, ParamDecl] = {}
    input: InputSpec | None = None
    imports: list[str] = []
    blocks: dict[str, BlockDef] = {}
    variants: dict[str, Variant] = {}
    layers: list[LayerEntry] | None = None
    outputs: Names | None = None
    train: TrainSpec | None = None


def attach_sources(spec: SpecFile, source: SourceFile) -> None:
    """Let every layer entry know its file and path, for error locations."""
    def walk(entries, path):
        for i, entry in enumerate(entries or []):
            entry._source, entry._path = source, path + (i,)
            walk(entry.layers, path + (i, "layers"))
    walk(spec.layers, ("layers",))
    for name, block in spec.blocks.items():
        walk(block.layers, ("blocks", name, "layers"))
