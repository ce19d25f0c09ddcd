"""The `netspec export`, `netspec import` and `netspec weights import` commands (registered by netspec.cli)."""
from __future__ import annotations


def add_commands(sub, spec_options, weights_sub) -> None:
    """Add this package's subcommands: to the `netspec` subparsers, and `import` under `netspec weights`."""
