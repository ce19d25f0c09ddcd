"""The README's generated parts are up to date."""
from __future__ import annotations

from pathlib import Path

from conftest import load_tool

ROOT = Path(__file__).resolve().parent.parent


def _tool(name: str):
    return load_tool(name)


def test_readme_zoo_table_is_generated_from_the_specs():
    zoo = _tool("zoo_table")
    assert zoo.main(["--check"]) == 0, "run: python tools/zoo_table.py"
    table = zoo.table()
    assert "| `specs/resnet50.yaml` | 3×224×224 |  | 25,557,032 | 4,089,184,256 |" in table
    assert table.count("\n") >= 20  # every spec and variant has a row
