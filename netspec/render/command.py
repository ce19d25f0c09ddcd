"""The `netspec render` command (registered by netspec.cli)."""
from __future__ import annotations


def add_commands(sub, spec_options) -> None:
    """Add this package's subcommands to the `netspec` parser's subparsers."""
