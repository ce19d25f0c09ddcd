"""Read YAML safely into plain Python data, remembering where every value was written.

Only plain YAML types are accepted (mappings, lists, strings, numbers, booleans, null): no
object-constructing tags. Aliases are allowed but expanded under a node budget, so an alias bomb
is refused quickly instead of eating memory.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..files import read_limited
from .errors import Diagnostic, Location, SpecError

MAX_FILE_BYTES = 2 * 1024 * 1024
MAX_NODES = 100_000  # values after alias expansion
MAX_DEPTH = 64

# What YAML 1.1 does not allow in a stream (PyYAML's Reader.NON_PRINTABLE): C0 controls other than
# tab, newline and carriage return, DEL and C1 controls other than NEL, surrogates, U+FFFE and U+FFFF.
_NON_PRINTABLE = re.compile("[^\x09\x0A\x0D\x20-\x7E\x85\xA0-\uD7FF\uE000-\uFFFD\U00010000-\U0010FFFF]")

_COLLECTION_TAGS = {"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"}
_PLAIN_TAGS = {
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
}

# what PyYAML's constructors raise for a value that is not what its tag says (`!!int doc`, `!!bool maybe`)
_CONSTRUCT_ERRORS = (yaml.YAMLError, ValueError, OverflowError, KeyError, TypeError, IndexError)

Path_ = tuple  # a path into the document: ('layers', 3, 'kernel')


@dataclass
class SourceFile:
    """One YAML file: its data and the location of every value (and of every mapping key)."""

    name: str
    data: Any
    values: dict[Path_, Location] = field(default_factory=dict)
    keys: dict[Path_, Location] = field(default_factory=dict)

    def loc(self, path: Path_, key: bool = False) -> Location:
        """Location of the value at `path` (or of its key), falling back to the nearest parent."""
        table = self.keys if key else self.values
        while path:
            if path in table:
                return table[path]
            path = path[:-1]
        return self.values.get((), Location(self.name, 1, 1))


def read_source(path: str | Path, display_name: str | None = None) -> SourceFile:
    """Read and parse a YAML file; raise SpecError with a located message on any problem."""
    name = display_name or str(path)
    try:
        raw = read_limited(path, MAX_FILE_BYTES, "the file")
    except OSError as e:
        raise SpecError([Diagnostic(Location(name, 1, 1), f"cannot read file: {e.strerror or e}")])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SpecError([Diagnostic(Location(name, 1, 1), f"file is not UTF-8 text ({e.reason} at byte {e.start})")])
    return parse_source(text, name)


def parse_source(text: str, name: str) -> SourceFile:
    bad = _NON_PRINTABLE.search(text)
    if bad:  # (PyYAML's reader would refuse it with no line or column)
        line = text.count("\n", 0, bad.start()) + 1
        column = bad.start() - (text.rfind("\n", 0, bad.start()) + 1) + 1
        raise SpecError([Diagnostic(Location(name, line, column), f"invalid character U+{ord(bad.group()):04X}: "
                                    "YAML files may not contain control characters (except tab and newline)")])
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        loc = Location(name, mark.line + 1, mark.column + 1) if mark else Location(name, 1, 1)
        problem = e.problem or e.context or "invalid YAML"
        raise SpecError([Diagnostic(loc, f"invalid YAML: {problem}")])
    except yaml.YAMLError as e:
        raise SpecError([Diagnostic(Location(name, 1, 1), f"invalid YAML: {e}")])
    except RecursionError:
        raise SpecError([Diagnostic(Location(name, 1, 1), "invalid YAML: nested too deeply")])
    finally:
        loader.dispose()
    source = SourceFile(name, None)
    if root is None:
        source.data = {}
        return source
    converter = _Converter(source, yaml.SafeLoader(""))
    source.data = converter.convert(root, (), 0)
    if converter.errors:
        raise SpecError(converter.errors)
    return source


class _Converter:
    def __init__(self, source: SourceFile, constructor: yaml.SafeLoader):
        self.source = source
        self.constructor = constructor
        self.count = 0
        self.errors: list[Diagnostic] = []

    def where(self, node) -> Location:
        return Location(self.source.name, node.start_mark.line + 1, node.start_mark.column + 1)

    def convert(self, node, path: Path_, depth: int) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise SpecError([Diagnostic(self.where(node),
                                        f"document expands to more than {MAX_NODES:,} values "
                                        "(too many aliases or too large); refusing to read it")])
        if depth > MAX_DEPTH:
            raise SpecError([Diagnostic(self.where(node), f"nested more than {MAX_DEPTH} levels deep")])
        self.source.values[path] = self.where(node)
        if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) and node.tag not in _COLLECTION_TAGS:
            self.errors.append(Diagnostic(self.where(node), f"unsupported YAML tag '{node.tag}'; only plain "
                                          "values (strings, numbers, booleans, lists, mappings) are allowed"))
            return None
        if isinstance(node, yaml.MappingNode):
            return self.mapping(node, path, depth)
        if isinstance(node, yaml.SequenceNode):
            return [self.convert(item, path + (i,), depth + 1) for i, item in enumerate(node.value)]
        if node.tag not in _PLAIN_TAGS:
            self.errors.append(Diagnostic(self.where(node), f"unsupported YAML tag '{node.tag}'; "
                                          "only plain values (strings, numbers, booleans, lists, mappings) are allowed"))
            return None
        try:
            return self.constructor.construct_object(node, deep=True)
        except _CONSTRUCT_ERRORS as e:
            self.errors.append(Diagnostic(self.where(node), f"invalid value: {e}"))
            return None

    def key(self, node) -> str | None:
        """A mapping key as text, or None when it is not a plain scalar (a list, a mapping, or a
        tagged value that is not what its tag says: `!!int doc`)."""
        if not isinstance(node, yaml.ScalarNode) or node.tag not in _PLAIN_TAGS:
            return None
        try:
            return str(self.constructor.construct_object(node))
        except _CONSTRUCT_ERRORS:
            return None

    def mapping(self, node, path: Path_, depth: int) -> dict:
        own: set[str] = set()  # keys written in this mapping; merged-in keys (<<) may be overridden
        for key_node, _ in node.value:
            key = self.key(key_node)
            if key is not None:
                if key in own:
                    self.errors.append(Diagnostic(self.where(key_node), f"duplicate key '{key}'"))
                own.add(key)
        try:
            self.constructor.flatten_mapping(node)  # resolves YAML merge keys (<<): merged first, own keys last
        except yaml.YAMLError as e:
            self.errors.append(Diagnostic(self.where(node), f"invalid merge: {getattr(e, 'problem', e)}"))
            return {}
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = self.key(key_node)
            if key is None:
                self.errors.append(Diagnostic(self.where(key_node), "mapping keys must be plain words"))
                continue
            self.source.keys[path + (key,)] = self.where(key_node)
            result[key] = self.convert(value_node, path + (key,), depth + 1)
        return result
