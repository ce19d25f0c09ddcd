"""Shared helpers for the front-end tests: write a spec into a temporary directory and load it,
find diagnostics by position, and run the CLI in-process."""
from __future__ import annotations

import contextlib
import io
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

import netspec
from netspec.spec.errors import SpecError


# a tiny classifier with a declared input normalization: what the CLI tests of run and predict feed
TINY_SPEC = """
name: tiny
input: {shape: [3, 12, 12], mean: [0.5, 0.4, 0.3], std: [0.2, 0.25, 0.5]}
layers:
  - {op: conv2d, name: conv, out: 4, kernel: 3, padding: 1}
  - {op: relu}
  - {op: global_avgpool}
  - {op: flatten}
  - {op: linear, name: fc, out: 7}
"""


def dedent(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A temporary working directory, so that file names in diagnostics are short and relative."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def write_spec(workdir):
    """write_spec(text, name="spec.yaml") -> Path: write a (dedented) spec into the working directory."""
    def write(text: str, name: str = "spec.yaml") -> Path:
        path = workdir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dedent(text), encoding="utf-8")
        return path
    return write


@pytest.fixture
def load_spec(write_spec):
    """load_spec(text, name="spec.yaml", variant=None, params=None) -> Graph."""
    def load(text: str, name: str = "spec.yaml", variant=None, params=None):
        path = write_spec(text, name)
        return netspec.load(path, variant=variant, params=params)
    return load


@pytest.fixture
def spec_error(write_spec):
    """spec_error(text, ...) -> SpecError: loading the spec must fail with a SpecError."""
    def fail(text: str, name: str = "spec.yaml", variant=None, params=None) -> SpecError:
        path = write_spec(text, name)
        with pytest.raises(SpecError) as info:
            netspec.load(path, variant=variant, params=params)
        return info.value
    return fail


def errors_at(err: SpecError, line: int, col: int | None = None) -> list:
    """The diagnostics of `err` located at line (and column)."""
    return [d for d in err.diagnostics
            if d.location.line == line and (col is None or d.location.col == col)]


def one_error_at(err: SpecError, line: int, col: int, *words: str, file: str = "spec.yaml"):
    """Assert that exactly one diagnostic sits at file:line:col, that its formatted form is
    `file:line:col: error: ...`, and that its message contains every word; return it."""
    found = errors_at(err, line, col)
    assert len(found) == 1, f"expected one error at {line}:{col}, got:\n{err.format()}"
    d = found[0]
    assert d.location.file == file, d.format()
    first_line = d.format().splitlines()[0]
    assert first_line.startswith(f"{file}:{line}:{col}: error: "), first_line
    for w in words:
        assert w in d.message, f"{w!r} not in {d.message!r}"
    return d


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(workdir):
    """cli(*args) -> CliResult: run `netspec` in-process, capturing output and the exit code."""
    from netspec.cli import main

    def run(*args: str) -> CliResult:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([str(a) for a in args])
            except SystemExit as e:  # argparse usage errors and --help
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
        return CliResult(code, out.getvalue(), err.getvalue())
    return run


def locate(text: str, needle: str, occurrence: int = 1) -> tuple[int, int]:
    """(line, col), both 1-based, of the `occurrence`-th appearance of `needle` in the dedented text:
    where a diagnostic about that piece of YAML must point."""
    text = dedent(text)
    start = -1
    for _ in range(occurrence):
        start = text.index(needle, start + 1)
    line = text.count("\n", 0, start) + 1
    col = start - (text.rfind("\n", 0, start) + 1) + 1
    return line, col


def load_tool(name: str):
    """tools/<name>.py as a module, loaded once (the tools are scripts, not a package)."""
    import importlib.util
    import sys
    key = f"netspec_tools_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, Path(__file__).resolve().parents[1] / "tools" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module  # dataclasses look their module up by name
        spec.loader.exec_module(module)
    return sys.modules[key]


def load_fuzz():
    """tools/fuzz.py (the command-line fuzzer; its base specs serve test_mutations too)."""
    return load_tool("fuzz")


# A ResNet basic block with its projection shortcut, shared by the tests' inline specs (indented to
# sit in their dedented text): the one the command-line fuzzer (tools/fuzz.py) mutates.
BASIC_BLOCK = textwrap.indent(load_fuzz().BASIC_BLOCK, "    ")
