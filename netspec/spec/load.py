"""From a spec file on disk to a typed Graph: read, validate, import blocks, resolve parameters,
expand. This is the front half of the pipeline; `netspec.load` is its public face."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Sequence

from pydantic import ValidationError

from ..ir.graph import Graph
from ..ir.verify import verify
from .errors import COMMAND_LINE, Collector, Location, SpecError, did_you_mean
from .expand import INVALID_OP, BlockRef, expand
from .expr import ExprError, evaluate
from ..files import FileReadError, is_regular, is_within, resolve
from .loader import SourceFile, read_source
from .schema import IDENT_RE, SpecFile, attach_sources, check_param_type
from .validation import validation_diagnostics
from ..ops import registry
from ..ops.fields import MAX_SIZE

MAX_IMPORTS = 100
SPEC_FIELDS = set(SpecFile.model_fields)


def display_path(path: Path) -> str:
    """The path as the user would type it: relative to the working directory when inside it."""
    try:
        absolute = resolve(path)
    except FileReadError:  # a loop of links: show it as written
        absolute = Path(os.path.abspath(path))
    try:
        return str(absolute.relative_to(Path.cwd()))
    except ValueError:
        return str(absolute)


class Folders:
    """Where a spec may read the files it names (`imports:`, `extends:`): the folder of the spec the
    user named and below, and the folders allowed with `--include DIR` or $NETSPEC_PATH (searched, in
    that order, for a relative name not found beside the file that names it). Links are resolved
    first and held to the same rule, so no name reaches a file elsewhere, and such a file is never read."""

    def __init__(self, spec: Path, include: Sequence[str | os.PathLike] = ()):
        env = [p for p in os.environ.get("NETSPEC_PATH", "").split(os.pathsep) if p]
        self.include: list[Path] = []
        for folder in list(include) + env:
            try:
                self.include.append(resolve(folder))
            except FileReadError:
                continue
        try:
            home = resolve(Path(spec).parent)
        except FileReadError:
            home = Path(os.path.abspath(Path(spec).parent))
        self.roots = [home] + self.include

    def locate(self, name: str, naming_file: Path) -> Path:
        """The resolved file `name` stands for, written in `naming_file`; FileReadError with the reason
        when there is no such file or it lies outside the allowed folders."""
        candidates = [naming_file.parent / name]
        if not Path(name).is_absolute():
            candidates += [folder / name for folder in self.include]
        found = None
        for candidate in candidates:
            target = resolve(candidate)  # (a loop of links raises)
            if not any(is_within(target, root) for root in self.roots):
                found = found or FileReadError(
                    0, f"it lies outside {' and '.join(map(display_path, self.roots))} (a spec reads files only "
                       "from its own folder and below); allow another folder with --include DIR or NETSPEC_PATH")
                continue
            if is_regular(target):
                return target
            found = found or FileReadError(0, f"no such file (looked for {display_path(target)})")
        raise found


def parse_file(path: Path, errors: Collector) -> tuple[SpecFile | None, SourceFile | None]:
    try:
        source = read_source(path, display_path(path))
    except SpecError as e:
        errors.diagnostics += e.diagnostics
        return None, None
    if not isinstance(source.data, dict) or not SPEC_FIELDS.intersection(source.data):
        # (nothing of a spec in it: say so without echoing what it holds, which may be another's secret)
        errors.error(source.loc(()), "not a netspec spec: a spec is a mapping with `layers:` "
                     "(or `blocks:` for a block library)")
        return None, source
    data = source.data
    try:
        spec = SpecFile.model_validate(data)
    except ValidationError as e:
        errors.diagnostics += validation_diagnostics(e, source, SpecFile)
        data = _recover(data, [tuple(err["loc"]) for err in e.errors()],
                        [err["type"] for err in e.errors()])
        if data is None:
            return None, source
        try:
            spec = SpecFile.model_validate(data)
        except ValidationError:
            return None, source
    attach_sources(spec, source)
    return spec, source


def _recover(data: Any, locs: list[tuple], kinds: list[str]) -> Any:
    """The document with its reported structural mistakes taken out, so that expansion can still find
    the mistakes further on: unknown fields are dropped, and a broken layer entry becomes a placeholder
    whose users stay quiet. None when a mistake is elsewhere (then there is nothing sound to expand)."""
    import copy
    data = copy.deepcopy(data)
    replaced: list[tuple] = []
    for loc, kind in sorted(zip(locs, kinds), key=lambda pair: len(pair[0])):
        if any(loc[:len(r)] == r for r in replaced):
            continue  # inside an entry already replaced
        if kind == "extra_forbidden":
            parent = _at(data, loc[:-1])
            if isinstance(parent, dict):
                parent.pop(loc[-1], None)
            continue
        entry = _entry_path(loc)
        if entry is None:
            return None
        parent, original = _at(data, entry[:-1]), _at(data, entry)
        name = original.get("name") if isinstance(original, dict) else None
        parent[entry[-1]] = {"op": INVALID_OP} | ({"name": name} if isinstance(name, str) else {})
        replaced.append(entry)
    return data


def _at(data: Any, path: tuple) -> Any:
    for key in path:
        data = data[key]
    return data


def _entry_path(loc: tuple) -> tuple | None:
    """The path of the innermost layer entry containing `loc` (…, 'layers', i), if any."""
    for k in range(len(loc) - 2, -1, -1):
        if loc[k] == "layers" and isinstance(loc[k + 1], int):
            return loc[:k + 2]
    return None


def collect_blocks(spec: SpecFile, source: SourceFile, path: Path, folders: Folders,
                   errors: Collector) -> dict[str, BlockRef]:
    """The blocks the spec defines and imports (transitively), checked for clashes."""
    blocks: dict[str, BlockRef] = {}
    defined_at: dict[str, Location] = {}
    seen: set[Path] = {resolve(path)}
    todo = [(spec, source, path)]
    while todo:
        file_spec, file_source, file_path = todo.pop(0)
        for name, block in file_spec.blocks.items():
            where = file_source.loc(("blocks", name), key=True)
            if registry.spec_op(name) is not None:
                errors.error(where, f"block '{name}' has the name of a built-in op; choose another name")
            elif name in blocks:
                errors.error(where, f"block '{name}' is defined twice (also at {defined_at[name]})")
            elif not IDENT_RE.match(name):
                errors.error(where, f"block name '{name}' must be a word (letters, digits, _)")
            else:
                blocks[name], defined_at[name] = BlockRef(name, block, file_source), where
                check_block(name, block, file_source, errors)
        for k, imported in enumerate(file_spec.imports):
            where = file_source.loc(("imports", k))
            try:
                target = folders.locate(imported, file_path)
            except FileReadError as e:
                errors.error(where, f"cannot import '{imported}': {e.strerror}")
                continue
            if target in seen:
                continue
            if len(seen) >= MAX_IMPORTS:
                errors.error(where, f"more than {MAX_IMPORTS} imported files")
                return blocks
            seen.add(target)
            lib, lib_source = parse_file(target, errors)
            if lib is None:
                continue
            if lib.layers is not None or lib.input is not None:
                errors.error(lib_source.loc(("layers",), key=True) if lib.layers is not None else
                             lib_source.loc(("input",), key=True),
                             "an imported file is a block library: it defines `blocks:` only")
            todo.append((lib, lib_source, target))
    return blocks


def check_block(name: str, block, source: SourceFile, errors: Collector) -> None:
    for p in list(block.params) + block.inputs:
        if not IDENT_RE.match(p) or p in ("i", "spec"):  # (the repeat index; the spec's parameters)
            errors.error(source.loc(("blocks", name, "params", p), key=True),
                         f"'{p}' cannot be a parameter or input name: use a word (and not 'i' or 'spec')")
    if len(set(block.inputs)) != len(block.inputs):
        errors.error(source.loc(("blocks", name, "inputs")), "block input names must be distinct")
    clash = set(block.params) & set(block.inputs)
    for p in clash:
        errors.error(source.loc(("blocks", name, "params", p), key=True), f"'{p}' is both a parameter and an input")


def follow_extends(spec: SpecFile, source: SourceFile, path: Path, folders: Folders, errors: Collector):
    """For a spec that `extends:` another: the base spec, plus the parameter values and `train:`
    settings the extension sets (each with where it is written).

    An extension only names the base and changes parameter defaults (`params: {depth: 50}`) and
    training settings, so a family of networks stays one spec (resnet50.yaml extends resnet.yaml)."""
    values: dict[str, tuple[Any, Location]] = {}
    train: dict[str, tuple[Any, Location]] = {}
    seen = [resolve(path)]
    while spec is not None and spec.extends is not None:
        extra = [k for k in ("layers", "input", "blocks", "imports", "variants", "outputs") if getattr(spec, k)]
        for key in extra:
            errors.error(source.loc((key,), key=True), f"a spec that extends another sets only name, doc, params "
                         f"and train; `{key}` belongs in {spec.extends}")
        for key, decl in spec.params.items():
            values.setdefault(key, (decl.default, source.loc(("params", key))))
        train = train_settings(spec, source) | train  # (the extension's settings win over its base's)
        where = source.loc(("extends",))
        try:
            target = folders.locate(spec.extends, path)
        except FileReadError as e:
            errors.error(where, f"cannot extend '{spec.extends}': {e.strerror}")
            return None, None, path, values, train
        if target in seen:
            chain = " → ".join(display_path(p) for p in seen[seen.index(target):] + [target])
            errors.error(where, f"a cycle of extends: {chain}")
            return None, None, path, values, train
        seen.append(target)
        path = target
        spec, source = parse_file(target, errors)
    if spec is not None:
        train = train_settings(spec, source) | train
    return spec, source, path, values, train


def train_settings(spec: SpecFile, source: SourceFile) -> dict[str, tuple[Any, Location]]:
    """The `train:` settings a spec file sets, each with its location."""
    settings = spec.train.settings() if spec.train is not None else {}
    return {key: (value, source.loc(("train", key))) for key, value in settings.items()}


def check_train_loss(graph: Graph, train: dict[str, tuple[Any, Location]], errors: Collector) -> None:
    """A `train: {loss: ...}` that does not fit the network is an error of the spec, where it is written."""
    if "loss" not in train:
        return
    from ..passes.autodiff import TrainingError, parse_losses
    loss, where = train["loss"]
    try:
        parse_losses(graph.active("train"), loss)
    except TrainingError as e:
        errors.error(where, str(e))


def resolve_params(spec: SpecFile, source: SourceFile, variant: str | None, overrides: dict[str, Any],
                   errors: Collector, extended: dict[str, tuple[Any, Location]] | None = None) -> dict[str, Any]:
    """Parameter values: command-line overrides, else the variant's, else an extension's, else the
    declared defaults (evaluated in order, so defaults may use earlier parameters)."""
    chosen: dict[str, tuple[Any, Location]] = dict(extended or {})
    if variant is not None:
        if variant not in spec.variants:
            declared = ", ".join(spec.variants) or "none"
            errors.error(COMMAND_LINE, f"unknown variant '{variant}'{did_you_mean(variant, spec.variants)}; "
                         f"this spec declares: {declared}")
        else:
            for key, value in spec.variants[variant].params.items():
                chosen[key] = (value, source.loc(("variants", variant, "params", key)))
    for key, value in overrides.items():
        chosen[key] = (value, COMMAND_LINE)
    for key, (_, where) in chosen.items():
        if key not in spec.params:
            declared = ", ".join(spec.params) or "none"
            errors.error(where, f"unknown parameter '{key}'{did_you_mean(key, spec.params)}; declared: {declared}")
    values: dict[str, Any] = {}
    failed: set[str] = set()  # parameters already reported: defaults that use them stay quiet
    for key, decl in spec.params.items():
        if not IDENT_RE.match(key):
            errors.error(source.loc(("params", key), key=True), f"parameter name '{key}' must be a word")
            continue
        if key in chosen:
            raw, where = chosen[key]
        elif decl.required:
            errors.error(source.loc(("params", key)), f"parameter '{key}' has no default; set it with --set {key}=...")
            continue
        else:
            raw, where = decl.default, source.loc(("params", key))
        try:
            values[key] = check_param_type(decl, evaluate(raw, values))
        except (ExprError, ValueError) as e:
            failed.add(key)
            if not (isinstance(raw, str) and any(re.search(rf"\b{name}\b", raw) for name in failed - {key})):
                errors.error(where, f"parameter '{key}': {e}")
    return values


def input_dims(spec: SpecFile, source: SourceFile, params: dict[str, Any], errors: Collector) -> tuple[int, ...] | None:
    dims = []
    for k, raw in enumerate(spec.input.shape):
        where = source.loc(("input", "shape", k))
        try:
            value = evaluate(raw, params)
        except ExprError as e:
            errors.error(where, str(e))
            return None
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_SIZE:
            errors.error(where, f"input sizes must be integers from 1 to {MAX_SIZE:,}, got {value!r}")
            return None
        dims.append(value)
    if not dims:
        errors.error(source.loc(("input", "shape")), "the input shape lists no dimensions (write [C, H, W])")
        return None
    return tuple(dims)


def load_graph(path: str | os.PathLike, variant: str | None = None, params: dict[str, Any] | None = None,
               include: Sequence[str | os.PathLike] = ()) -> Graph:
    """Read a spec and build its typed graph; raises SpecError with every problem found. The files
    it names are read from its own folder and below, and from the `include` folders (see Folders)."""
    errors = Collector()
    path = Path(path)
    folders = Folders(path, include)
    spec, source = parse_file(path, errors)
    if spec is None:
        errors.check()
    name = spec.name or path.stem
    spec, source, base_path, extended, train = follow_extends(spec, source, path, folders, errors)
    if spec is None:
        errors.check()
    if base_path is not path and variant is not None:  # the extension pins parameters a variant could undo
        where = (f"use --variant with {display_path(base_path)}" if spec.variants else
                 "neither declares variants; set parameters with --set")
        errors.error(COMMAND_LINE, f"{display_path(path)} extends {display_path(base_path)} and has no variants of "
                     f"its own; {where}")
        errors.check()
    blocks = collect_blocks(spec, source, base_path, folders, errors)
    if spec.layers is None or spec.input is None:
        missing = "`layers:`" if spec.layers is None else "`input:`"
        errors.error(source.loc(()), f"this file has no {missing}, so it defines no network"
                     + (" (a block library is imported by specs, not loaded)" if spec.blocks else ""))
        errors.check()
    before = len(errors.diagnostics)
    values = resolve_params(spec, source, variant, dict(params or {}), errors, extended)
    dims = input_dims(spec, source, values, errors) if len(errors.diagnostics) == before else None
    if dims is None:  # without parameters or an input shape, expanding would only echo these errors
        errors.check()
    nodes, inputs, outputs, scopes = expand(spec.layers, spec.input.name, dims, values, blocks, spec.outputs,
                                            source.loc(("outputs",)), errors)
    errors.check()
    preprocess = {k: v for k, v in (("mean", spec.input.mean), ("std", spec.input.std)) if v is not None}
    for key, value in preprocess.items():
        if len(value) != dims[0]:
            errors.error(source.loc(("input", key)), f"input {key} needs one value per channel ({dims[0]}), "
                         f"got {len(value)}")
    if any(v == 0 for v in preprocess.get("std", [])):
        errors.error(source.loc(("input", "std")), "input std values must not be 0")
    errors.check()
    graph = Graph(name, inputs, nodes, outputs, scopes, values, variant, display_path(path), preprocess,
                  {key: value for key, (value, _) in train.items()})
    verify(graph)
    check_train_loss(graph, train, errors)
    errors.check()
    return graph


def library_blocks(path: str | os.PathLike, include: Sequence[str | os.PathLike] = ()) -> list[str] | None:
    """For a block library (a file with `blocks:` and no `layers:` or `input:`): the names of the
    blocks it defines, after checking it on its own (its fields, its imports, each block's
    parameters); SpecError with every problem found. None for any other file."""
    errors = Collector()
    path = Path(path)
    spec, source = parse_file(path, errors)
    if spec is None or spec.layers is not None or spec.input is not None or spec.extends is not None \
            or not spec.blocks:
        return None
    collect_blocks(spec, source, path, Folders(path, include), errors)
    errors.check()
    return list(spec.blocks)


def variants_of(path: str | os.PathLike) -> list[str]:
    """The declared variant names of a spec (empty when it declares none or cannot be read)."""
    errors = Collector()
    spec, source = parse_file(Path(path), errors)
    return list(spec.variants) if spec is not None and spec.extends is None else []
