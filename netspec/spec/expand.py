"""Expansion: blocks, groups, repeats, `when` and expressions resolved into a flat, typed graph.

Expressions may use the shapes of earlier nodes (`${input.c * 4}`), so shapes are inferred as
nodes are made, with the same registry rules `passes.infer` uses. The result is a Graph whose
nodes carry hierarchical names (`layer3.1.conv2`) and the trace of where they were written.

Naming: a layer's name is its `name:`, or else its position among the present entries of its
list (like torch.nn.Sequential). A repeat adds `.0`, `.1`, ...; a block or group adds a level.
A computed name (`name: "denselayer${i + 1}"`) names each iteration of a repeat itself, with no
added level, and each iteration then counts as an entry of the list.
A layer whose `when:` is false, or a repeat of 0, is absent: it passes its input through, and its
name refers to that input, except in a list of several inputs (a merge), where naming it is an
error unless the reference says what to do (`b if present`: left out; `b or c`: c stands in).
An `assert:` entry is checked where it stands and makes nothing.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

from pydantic import ValidationError

from .. import ops
from ..ir.graph import Node, ScopeInfo
from ..ir.types import BATCH, TensorType
from ..ops.registry import ShapeError, infer_output
from .errors import Collector, Diagnostic, Location, SpecError, Trace, diagnostic_at, did_you_mean
from .expr import ExprError, Namespace, ShapeRef, Unavailable, UnknownName, evaluate, interpolate, names_in
from .loader import SourceFile
from .schema import (IDENT_RE, RESERVED_KEYS, BlockDef, LayerEntry, check_name, check_param_type, is_template,
                     parse_ref)
from .validation import friendly_message

MAX_NODES = 50_000
MAX_REPEAT = 10_000
MAX_BLOCK_DEPTH = 32
FAILED = None  # what a name maps to when its node could not be made (its users stay quiet)
INVALID_OP = "<invalid>"  # stands in for a layer entry whose structure was already reported as wrong


@dataclass
class BlockRef:
    name: str
    block: BlockDef
    source: SourceFile


@dataclass
class Scope:
    """Names visible while expanding one list of layers."""

    prefix: str  # "layer1.0." for nodes made inside layer1.0
    env: dict[str, Any]  # parameter values (and the repeat index `i`)
    parent: "Scope | None"  # the enclosing scope for groups; None at a block's boundary
    used_at: tuple[tuple[Location, str], ...] = ()  # where the enclosing blocks were used
    mode: str | None = None
    local: dict[str, str | None] = field(default_factory=dict)  # local name -> full tensor name
    absent: dict[str, str] = field(default_factory=dict)  # names of absent entries -> why ("its `when:` ...")

    def lookup(self, ref: str) -> tuple[bool, str | None]:
        scope: Scope | None = self
        while scope is not None:
            if ref in scope.local:
                return True, scope.local[ref]
            scope = scope.parent
        return False, None

    def why_absent(self, ref: str) -> str | None:
        """Why the entry `ref` names is absent (None when it is present, or not found)."""
        scope: Scope | None = self
        while scope is not None:
            if ref in scope.local:
                return scope.absent.get(ref)
            scope = scope.parent
        return None

    def visible(self) -> list[str]:
        names, scope = [], self
        while scope is not None:
            names += list(scope.local)
            scope = scope.parent
        return names


class _Env(Mapping):
    """What an expression can see: parameters, then the shapes of earlier nodes by local name."""

    def __init__(self, scope: Scope, types: dict[str, TensorType], extra: dict[str, Any]):
        self.scope, self.types, self.extra = scope, types, extra

    def __getitem__(self, key: str) -> Any:
        if key in self.extra:
            return self.extra[key]
        if key in self.scope.env:
            return self.scope.env[key]
        found, full = self.scope.lookup(key)
        if found and full is not None:
            return ShapeRef(self.types[full].dims)
        if found:  # its node failed, with an error of its own: this one would only echo it
            raise Unavailable(f"'{key}' has no shape")
        raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        try:
            self[key]  # type: ignore[index]
            return True
        except KeyError:
            return False

    def __iter__(self) -> Iterator[str]:
        return iter([*self.extra, *self.scope.env, *(n for n in self.scope.visible() if IDENT_RE.match(n))])

    def __len__(self) -> int:
        return len(list(iter(self)))


class Expander:
    def __init__(self, blocks: dict[str, BlockRef], errors: Collector, params: dict[str, Any]):
        self.blocks = blocks
        self.params = params  # the spec's, which a block parameter's default may read as spec.NAME
        self.errors = errors
        self.nodes: list[Node] = []
        self.by_name: dict[str, Node] = {}
        self.types: dict[str, TensorType] = {}
        self.scopes: dict[str, ScopeInfo] = {}
        self.block_stack: list[str] = []

    # --- locations -----------------------------------------------------------------------------
    @staticmethod
    def loc(entry: LayerEntry, *keys, key: bool = False) -> Location:
        """Where the value at `keys` inside the entry was written (or its key, with key=True)."""
        if entry._source is None:
            return Location("<unknown>", 0, 0)
        return entry._source.loc(entry._path + keys, key=key)

    def trace(self, scope: Scope, location: Location) -> Trace:
        return Trace(location, scope.used_at)

    def error(self, scope: Scope, location: Location, message: str) -> None:
        self.errors.error(self.trace(scope, location), message)

    # --- lists ---------------------------------------------------------------------------------
    def expand_list(self, entries: list[LayerEntry], scope: Scope, first_input: str | None) -> str | None:
        prev = first_input
        index = 0
        position = {e.name: i for i, e in enumerate(entries) if e.name and not is_template(e.name)}
        for here, entry in enumerate(entries):
            if entry.check is not None:
                self.check_assert(entry, scope)
                continue
            inputs = self.resolve_inputs(entry, scope, prev, entries, position, here)
            if entry.when is not None:
                cond = self.evaluate(entry.when, scope, {}, entry, ("when",))
                if cond is not None and not isinstance(cond, bool):
                    self.error(scope, self.loc(entry, "when"), f"`when` must be true or false, got {cond!r}")
                    cond = None
                if cond is False:  # absent: passes its input through
                    through = inputs[0] if inputs else FAILED
                    for name in self.absent_names(entry, scope):
                        scope.local[name] = through
                        scope.absent[name] = f"its `when:` at line {self.loc(entry, 'when').line} is false"
                    prev = through
                    continue
                if cond is None:
                    inputs = None
            if is_template(entry.name) and entry.repeat is not None:
                prev, count = self.repeated_by_name(entry, scope, inputs)
                index += count  # each iteration is an entry of this list
                continue
            local = self.computed_name(entry, scope, {}) if is_template(entry.name) else entry.name or str(index)
            index += 1
            if local is None:
                prev = FAILED
                continue
            self.claim(entry, scope, local)
            out = self.repeated(entry, scope, local, inputs)
            scope.local[local] = out
            prev = out
        return prev

    def computed_name(self, entry: LayerEntry, scope: Scope, extra: dict[str, Any]) -> str | None:
        """The value of a `name:` template (`c${i + 1}`), checked to be a name; None after an error."""
        try:
            value = interpolate(entry.name, _Env(scope, self.types, extra))
            return check_name(value, template=False)
        except ExprError as e:
            self.report(scope, self.loc(entry, "name"), e)
        except ValueError as e:
            self.error(scope, self.loc(entry, "name"), f"the name computed from '{entry.name}': {e}")
        return None

    def absent_names(self, entry: LayerEntry, scope: Scope) -> list[str]:
        """The names an absent entry would have had (each iteration's, for a computed name), so that
        a reference to one says it is absent. Quiet: an absent entry's expressions are not errors."""
        if not is_template(entry.name):
            return [entry.name] if entry.name else []
        try:
            count = 1 if entry.repeat is None else evaluate(entry.repeat, _Env(scope, self.types, {}))
            if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= MAX_REPEAT:
                return []
            extra = [{} if entry.repeat is None else {"i": i} for i in range(count)]
            return [check_name(interpolate(entry.name, _Env(scope, self.types, e)), template=False) for e in extra]
        except (ExprError, ValueError):
            return []

    def claim(self, entry: LayerEntry, scope: Scope, local: str) -> None:
        """Refuse a name already used in this list, and the reserved ones."""
        computed = f" (computed from '{entry.name}')" if is_template(entry.name) else ""
        if local in scope.local:
            self.error(scope, self.loc(entry, "name"), f"the name '{local}'{computed} is already used in this scope")
        elif local in ("input", "i") and entry.name:
            self.error(scope, self.loc(entry, "name"), f"'{local}'{computed} is reserved; choose another name")

    def check_assert(self, entry: LayerEntry, scope: Scope) -> None:
        """`- {assert: ${n <= 24}, message: ...}`: an error at the entry when the condition is false."""
        env = _Env(scope, self.types, {})
        try:
            holds = evaluate(entry.check, env)
        except ExprError as e:
            self.report(scope, self.loc(entry, "assert"), e)
            return
        if not isinstance(holds, bool):
            self.error(scope, self.loc(entry, "assert"), f"`assert` must be true or false, got {holds!r}")
            return
        if holds:
            return
        if entry.message is not None:
            try:
                message = str(interpolate(entry.message, env, any_value=True))
            except ExprError as e:
                self.report(scope, self.loc(entry, "message"), e)
                return
        else:
            message = str(entry.check).strip()
            message = message[2:-1].strip() if message.startswith("${") else message.lstrip("$")
            shown = [f"{name} = {scope.env[name]!r}" for name in names_in(message) if name in scope.env]  # parameters
            message += f" ({', '.join(shown)})" if shown else ""
        self.error(scope, self.loc(entry), f"assertion failed: {message}")

    def resolve_inputs(self, entry: LayerEntry, scope: Scope, prev: str | None, siblings: list[LayerEntry],
                       position: dict[str, int], here: int) -> list[str] | None:
        """Full names of the entry's inputs, or None when one is missing (already reported or reported now)."""
        if entry.inputs is None:
            return None if prev is None else [prev]
        merge = len(entry.inputs) > 1  # in a list of several, an absent entry cannot silently stand for its input
        resolved: list[str] | None = []
        for k, raw in enumerate(entry.inputs):
            where = self.loc(entry, "in", k) if merge else self.loc(entry, "in")
            try:
                text = interpolate(raw, _Env(scope, self.types, {}))
                if isinstance(text, int) and not isinstance(text, bool):
                    text = str(text)  # `${k + 1}` names an entry called 3
                if not isinstance(text, str):
                    raise ValueError(f"'{raw}' gives {text!r}, not a node name")
                names, optional = parse_ref(text)
            except ExprError as e:
                self.report(scope, where, e)
                resolved = None
                continue
            except (ValueError, TypeError) as e:
                self.error(scope, where, str(e))
                resolved = None
                continue
            chosen, found, full, reasons = None, False, None, []
            for ref in names:
                found, full = scope.lookup(ref)
                if not found and "." in ref and scope.prefix + ref in self.types:
                    found, full = True, scope.prefix + ref
                if not found:
                    if ref in position and position[ref] >= here:
                        self.error(scope, where, self.forward_message(ref, siblings, position, here))
                    else:
                        self.error(scope, where, f"no earlier node named '{ref}'{did_you_mean(ref, scope.visible())}")
                    break
                why = scope.why_absent(ref)
                if why is None or (not merge and not optional and ref == names[-1]):
                    chosen = ref
                    break
                reasons.append((ref, why))
            if not found:
                resolved = None
            elif chosen is None and not optional:
                ref, why = reasons[0]
                also = f"; '{names[-1]}' is absent too" if len(names) > 1 else ""
                twice = (f", and '{full}' is already in this list" if resolved and full in resolved
                         else f" ('{full}')" if full else "")
                self.error(scope, where, f"'{ref}' is absent ({why}){also}, so here it would stand for its own "
                           f"input{twice}; write '{raw} if present' to leave it out when absent, or "
                           f"'{raw} or NAME' for NAME to stand in")
                resolved = None
            elif chosen is None:
                continue  # optional and absent: left out
            elif full is None:
                resolved = None  # its node failed; that error is already reported
            elif resolved is not None:
                resolved.append(full)
        if resolved == []:
            self.error(scope, self.loc(entry, "in"), "every input of this entry is absent and left out, so it has "
                       "no input")
            return None
        return resolved

    @staticmethod
    def forward_message(ref: str, siblings: list[LayerEntry], position: dict[str, int], here: int) -> str:
        there = position[ref]
        if there == here:
            return f"'{ref}' takes its own output as input (a cycle)"
        # Walk back from the later node through its inputs: reaching this node means a cycle.
        todo, seen = [there], set()
        while todo:
            j = todo.pop()
            if j in seen or j < here:
                continue
            seen.add(j)
            if j == here:
                return f"cycle: this node takes input from '{ref}', which depends on this node"
            refs = [name for ref in siblings[j].inputs or () if not is_template(ref) for name in parse_ref(ref)[0]]
            todo += [position[r] for r in refs if r in position] if siblings[j].inputs else [j - 1]
        return f"'{ref}' is defined later; a node can only take input from earlier nodes"

    # --- repeat, groups, blocks, ops -----------------------------------------------------------
    def repeated(self, entry: LayerEntry, scope: Scope, local: str, inputs: list[str] | None) -> str | None:
        full = scope.prefix + local
        if entry.repeat is None:
            return self.instantiate(entry, scope, full, inputs, {}, {})
        count = self.repeat_count(entry, scope)
        if count is None:
            return FAILED
        label = "group" if entry.op is None else self.evaluate(entry.op, scope, {}, entry, ("op",))
        self.scopes[full] = ScopeInfo("repeat", str(label), count)
        if count == 0:
            scope.absent[local] = f"its `repeat:` at line {self.loc(entry, 'repeat').line} is 0"
            return inputs[0] if inputs else FAILED
        current, out = inputs, FAILED
        before = len(self.nodes)
        for i in range(count):
            if i == 1:  # refuse a runaway repeat from the size of its first iteration, before building it
                self.check_budget(entry, scope, (len(self.nodes) - before) * (count - 1))
            out = self.instantiate(entry, scope, f"{full}.{i}", current, {"i": i}, self.overrides(entry, i, count))
            current = None if out is None else [out]
        return out

    def repeated_by_name(self, entry: LayerEntry, scope: Scope, inputs: list[str] | None) -> tuple[str | None, int]:
        """A repeat whose `name:` is computed: each iteration is named by it, in this list (no level
        of its own). Returns the last output and the number of iterations."""
        count = self.repeat_count(entry, scope)
        if count is None:
            return FAILED, 1
        current, out = inputs, (inputs[0] if inputs else FAILED)
        before = len(self.nodes)
        for i in range(count):
            if i == 1:
                self.check_budget(entry, scope, (len(self.nodes) - before) * (count - 1))
            local = self.computed_name(entry, scope, {"i": i})
            if local is None:
                return FAILED, count
            self.claim(entry, scope, local)
            out = self.instantiate(entry, scope, scope.prefix + local, current, {"i": i},
                                   self.overrides(entry, i, count))
            scope.local[local] = out
            current = None if out is None else [out]
        return out, count

    def repeat_count(self, entry: LayerEntry, scope: Scope) -> int | None:
        count = self.evaluate(entry.repeat, scope, {}, entry, ("repeat",))
        if count is None:
            return None
        if isinstance(count, float) and count.is_integer():
            count = int(count)
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= MAX_REPEAT:
            self.error(scope, self.loc(entry, "repeat"),
                       f"`repeat` must be an integer from 0 to {MAX_REPEAT:,}, got {count!r}")
            return None
        return count

    @staticmethod
    def overrides(entry: LayerEntry, i: int, count: int) -> dict[str, tuple[Any, tuple]]:
        """The `first:` / `last:` attribute overrides of iteration i, each with its path in the entry."""
        found: dict[str, tuple[Any, tuple]] = {}
        for key in ("first",) * (i == 0) + ("last",) * (i == count - 1):
            for k, v in (getattr(entry, key) or {}).items():
                found[k] = (v, (key, k))
        return found

    def instantiate(self, entry: LayerEntry, scope: Scope, full: str, inputs: list[str] | None,
                    extra: dict[str, Any], overrides: dict[str, tuple[Any, tuple]]) -> str | None:
        args = {k: (v, (k,)) for k, v in entry.args.items()} | overrides
        mode = entry.mode or scope.mode
        if entry.layers is not None:
            if inputs is not None and len(inputs) != 1:
                self.error(scope, self.loc(entry, "in"), f"a group takes one input, got {len(inputs)}")
                return FAILED
            self.scopes.setdefault(full, ScopeInfo("group", "group"))
            child = Scope(full + ".", scope.env | extra, scope, scope.used_at, mode)
            return self.expand_list(entry.layers, child, inputs[0] if inputs else None)
        if entry.op == INVALID_OP:
            return FAILED
        op_name = self.evaluate(entry.op, scope, extra, entry, ("op",))  # may be ${'basic' if ... else ...}
        if op_name is None:
            return FAILED
        if not isinstance(op_name, str):
            self.error(scope, self.loc(entry, "op"), f"`op` must name an op or block, got {op_name!r}")
            return FAILED
        if op_name in self.blocks:
            if entry.init:
                self.error(scope, self.loc(entry, "init", key=True), "`init` sets an op's parameters; inside a "
                           "block, put it on the block's layers")
            return self.instantiate_block(entry, op_name, scope, full, inputs, extra, args, mode)
        op = ops.registry.spec_op(op_name)
        if op is None:
            known = ops.all_names() + list(self.blocks)
            self.error(scope, self.loc(entry, "op"), f"unknown op '{op_name}'{did_you_mean(op_name, known)}")
            return FAILED
        values, ok = self.evaluate_args(entry, scope, extra, args)
        fields = list(op.attrs.model_fields)
        # already reported: attributes whose expression failed, and those a typo was probably meant for
        quiet = set(args) - set(values)
        for key in list(values):
            if key not in fields:
                hint = did_you_mean(key, fields + RESERVED_KEYS)
                quiet.add(hint.split("'")[1] if hint else None)
                listing = f"; {op.name} takes {', '.join(fields)}" if fields and not hint else ""
                self.error(scope, self.loc(entry, *args[key][1], key=True),
                           f"unknown attribute '{key}' for {op.name}{hint}"
                           f"{listing if fields else f'; {op.name} takes no attributes'}")
                values.pop(key)
                ok = False
        try:
            attrs = op.attrs.model_validate(values)
        except ValidationError as e:
            for err in e.errors():
                key = err["loc"][0] if err["loc"] else None
                if err["type"] == "missing" and key in quiet:
                    continue
                where = self.loc(entry, *args[key][1]) if key in args else self.loc(entry, "op")
                message = friendly_message(err)
                label = f"{op.name}: " if key is None else f"{op.name} {key}: "
                if err["type"] == "missing":
                    message, label = f"{op.name} needs `{key}`", ""
                self.error(scope, where, label + message)
            return FAILED
        if not ok or inputs is None:
            return FAILED
        in_types = [self.types[name] for name in inputs]
        try:
            out_type = infer_output(op, attrs, in_types)
        except ShapeError as e:
            where = self.loc(entry, *args[e.attr][1]) if e.attr in args else self.loc(entry)
            shapes = ", ".join(t.dims_str() for t in in_types)
            self.error(scope, where, f"{op.name} '{full}' (input {shapes}): {e}")
            return FAILED
        self.check_mode_inputs(scope, entry, full, mode, inputs)
        init = self.check_init(scope, entry, op, attrs, in_types)
        self.add(Node(full, op.name, attrs, tuple(inputs), out_type, mode, init, self.trace(scope, self.loc(entry))))
        return full

    def instantiate_block(self, entry, block_name, scope, full, inputs, extra, args, mode) -> str | None:
        ref = self.blocks[block_name]
        block = ref.block
        use = self.loc(entry)
        if block_name in self.block_stack:
            self.error(scope, self.loc(entry, "op"), f"block '{block_name}' uses itself (through "
                       f"{' → '.join(self.block_stack)}); blocks cannot be recursive")
            return FAILED
        if len(self.block_stack) >= MAX_BLOCK_DEPTH:
            self.error(scope, self.loc(entry, "op"), f"blocks are nested more than {MAX_BLOCK_DEPTH} deep")
            return FAILED
        values, ok = self.evaluate_args(entry, scope, extra, args)
        for key in list(values):
            if key not in block.params:
                hint = did_you_mean(key, list(block.params) + RESERVED_KEYS)
                takes = f"; it takes {', '.join(block.params)}" if block.params and not hint else ""
                self.error(scope, self.loc(entry, *args[key][1], key=True),
                           f"block '{block_name}' has no parameter '{key}'{hint}{takes}")
                ok = False
        if inputs is not None and len(inputs) != len(block.inputs):
            self.error(scope, self.loc(entry, "in") if entry.inputs else use,
                       f"block '{block_name}' takes {len(block.inputs)} input(s) ({', '.join(block.inputs)}), "
                       f"got {len(inputs)}")
            ok = False
        child = Scope(full + ".", {}, None, ((use, block_name),) + scope.used_at, mode)  # innermost use first
        if inputs is not None:
            child.local.update(zip(block.inputs, inputs))
        for pname, decl in block.params.items():
            where = self.loc(entry, *args[pname][1]) if pname in args else use
            if pname in values:
                try:
                    child.env[pname] = check_param_type(decl, values[pname])
                except ValueError as e:
                    self.error(scope, where, f"block '{block_name}' parameter '{pname}': {e}")
                    ok = False
            elif pname in args:
                ok = False  # its expression failed, already reported
            elif decl.required:
                self.error(scope, use, f"block '{block_name}' needs parameter '{pname}' ({decl.type})")
                ok = False
            elif ok and inputs is not None:
                where = Trace(ref.source.loc(("blocks", block_name, "params", pname, "default")), child.used_at)
                try:
                    default = evaluate(decl.default, _Env(child, self.types, {"spec": Namespace(self.params)}))
                    child.env[pname] = check_param_type(decl, default)
                except ExprError as e:
                    self.report(child, where, e, f"default of parameter '{pname}': ")
                    ok = False
                except ValueError as e:
                    self.errors.error(where, f"default of parameter '{pname}': {e}")
                    ok = False
        if not ok or inputs is None:
            return FAILED
        self.scopes[full] = ScopeInfo("block", block_name)
        self.block_stack.append(block_name)
        try:
            out = self.expand_list(block.layers, child, inputs[0])
            if block.output is not None:
                found, out = child.lookup(block.output)
                if not found:
                    self.errors.error(Trace(ref.source.loc(("blocks", block_name, "output")), child.used_at),
                                      f"block output '{block.output}' is not a layer of the block"
                                      f"{did_you_mean(block.output, child.local)}")
                    out = FAILED
        finally:
            self.block_stack.pop()
        return out

    # --- helpers -------------------------------------------------------------------------------
    def evaluate(self, raw: Any, scope: Scope, extra: dict[str, Any], entry: LayerEntry, path: tuple) -> Any:
        try:
            return evaluate(raw, _Env(scope, self.types, extra))
        except ExprError as e:
            self.report(scope, self.loc(entry, *path), e)
            return None

    def evaluate_args(self, entry, scope, extra, args) -> tuple[dict[str, Any], bool]:
        values, ok = {}, True
        for key, (raw, path) in args.items():
            try:
                values[key] = evaluate(raw, _Env(scope, self.types, extra))
            except ExprError as e:
                self.report(scope, self.loc(entry, *path), e, f"{key}: ")
                ok = False
        return values, ok

    def report(self, scope: Scope, where: Location | Trace, e: ExprError, label: str = "") -> None:
        """An expression's error, unless it only follows from one already reported; an unknown name
        says what is visible where it was written (a block sees only its own parameters)."""
        if isinstance(e, Unavailable):
            return
        message = str(e)
        if isinstance(e, UnknownName) and e.name == "spec":
            message += ("; spec.NAME reads a spec parameter only in the default of a block parameter "
                        "(`params: {g: {type: int, default: \"${spec.g}\"}}`); elsewhere write the name itself"
                        if not scope.used_at else
                        "; spec.NAME reads a spec parameter only in the default of a block parameter")
        elif isinstance(e, UnknownName) and scope.used_at and e.name in self.params:
            block, value = scope.used_at[0][1], self.params[e.name]
            kind = {bool: "bool", int: "int", float: "float", str: "str", list: "list"}.get(type(value), "int")
            message += (f": '{e.name}' is a spec parameter, and block '{block}' sees only its own parameters; pass "
                        f"it in ({e.name}: ${e.name} where the block is used), or declare it with the spec's value "
                        f"as its default: `{e.name}: {{type: {kind}, default: \"${{spec.{e.name}}}\"}}`")
        trace = where if isinstance(where, Trace) else self.trace(scope, where)
        self.errors.error(trace, label + message)

    def check_init(self, scope, entry, op, attrs, in_types) -> tuple:
        if not entry.init:
            return ()
        params = op.params(attrs, in_types)
        for key in entry.init:
            if key not in params:
                have = ", ".join(params) or "no parameters"
                self.error(scope, self.loc(entry, "init", key, key=True),
                           f"{op.name} has no parameter '{key}' to initialize{did_you_mean(key, params)}; it has {have}")
        return tuple((k, v) for k, v in entry.init.items() if k in params)

    def check_mode_inputs(self, scope, entry, full, mode, inputs) -> None:
        """A node of one mode is bypassed in the other, so a user outside it must see the same shape."""
        for name in inputs:
            node = self.by_name.get(name)
            if node is None or node.mode is None or node.mode == mode:
                continue
            if node.type != self.type_of(node.inputs[0]):
                self.error(scope, self.loc(entry), f"'{full}' uses '{name}', which exists only in {node.mode} "
                           f"mode and changes the shape ({self.type_of(node.inputs[0]).dims_str()} → "
                           f"{node.type.dims_str()}), so it cannot be bypassed in the other mode")

    def type_of(self, name: str) -> TensorType:
        return self.types[name]

    def check_budget(self, entry: LayerEntry, scope: Scope, more: int) -> None:
        if len(self.nodes) + more > MAX_NODES:
            raise SpecError(self.errors.diagnostics + [diagnostic_at(self.trace(scope, self.loc(entry, "repeat")),
                f"the network would expand to more than {MAX_NODES:,} nodes; is a repeat running away?")])

    def add(self, node: Node) -> None:
        if len(self.nodes) >= MAX_NODES:
            raise SpecError(self.errors.diagnostics + [Diagnostic(
                node.trace.at if node.trace else Location("<unknown>", 0, 0),
                f"the network expands to more than {MAX_NODES:,} nodes; is a repeat running away?")])
        self.nodes.append(node)
        self.by_name[node.name] = node
        self.types[node.name] = node.type


def expand(layers: list[LayerEntry], input_name: str, input_dims: tuple[int, ...], params: dict[str, Any],
           blocks: dict[str, BlockRef], outputs: list[str] | None, outputs_loc: Location,
           errors: Collector) -> tuple[list[Node], dict[str, TensorType], list[str], dict[str, ScopeInfo]]:
    """Expand a network's layers; returns (nodes, graph inputs, outputs, scopes). Errors go to `errors`."""
    expander = Expander(blocks, errors, params)
    input_type = TensorType((BATCH,) + tuple(input_dims))
    expander.types[input_name] = input_type
    top = Scope("", dict(params), None)
    top.local[input_name] = input_name
    last = expander.expand_list(layers, top, input_name)
    result: list[str] = []
    for ref in outputs or [last]:
        if ref is None:
            continue
        found, full = top.lookup(ref) if outputs else (True, ref)
        if not found and ref in expander.types:
            found, full = True, ref
        if not found:
            errors.error(outputs_loc, f"output '{ref}' is not a layer{did_you_mean(ref, top.visible())}")
        elif full is not None:
            result.append(full)
    return expander.nodes, {input_name: input_type}, result, expander.scopes

