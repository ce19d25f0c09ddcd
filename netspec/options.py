"""What the `netspec` command and its subcommand modules share: option types, --set values, the
spec a command names, and output files written safely. Its own module, so that the subcommands
(diagrams/command.py, interop/command.py, training/command.py) need not import cli.py, which
imports them."""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, Sequence

import yaml

from .files import atomic_write, printable, temporary_name


class UsageError(Exception):
    pass


def parse_value(text: str):
    """A --set value: a decimal integer, a number (1e-3 too), true/false, a YAML list, or else the text."""
    text = text.strip()
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    if text in ("true", "false"):
        return text == "true"
    if text.startswith("["):
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            return text
        return [parse_value(str(v)) if isinstance(v, (int, float, str)) and not isinstance(v, bool) else v
                for v in value] if isinstance(value, list) else text
    return text


def parse_sets(items: Sequence[str] | None) -> dict[str, Any]:
    """`--set k=v` values, typed: 10 → int, 0.5 and 1e-3 → float, true → bool, [1, 2] → list."""
    values: dict[str, Any] = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set expects name=value, got '{item}'")
        values[key.strip()] = parse_value(text)
    return values


def check_writable(path: str, force: bool) -> Path:
    """Refuse, before any work is done, to write where it would fail or replace the user's file."""
    target = Path(path)
    try:
        if "\0" in path:
            raise ValueError("a file name cannot contain a NUL character")
        exists, linked = target.exists(), os.path.lexists(target)
        if target.is_dir():
            raise UsageError(f"cannot write '{path}': it is a directory")
        if exists and not target.is_file():  # a device, a FIFO: --force must not swap it for a file
            raise UsageError(f"cannot write '{path}': it is not a regular file")
        if linked and not force:  # (a dangling link too: the user's, to a file to come)
            what = "already exists" if exists else "is a symbolic link to nothing"
            raise UsageError(f"'{path}' {what}; pass --force to replace it")
        parent = target.parent
        if not parent.is_dir():
            raise UsageError(f"cannot write '{path}': no directory '{parent}'")
        if not os.access(parent, os.W_OK):
            raise UsageError(f"cannot write '{path}': directory '{parent}' is not writable")
        if len(os.fsencode(temporary_name(target))) > os.pathconf(parent, "PC_NAME_MAX"):  # (written through it)
            raise UsageError(f"cannot write '{path}': the file name is too long")
    except (OSError, ValueError) as e:  # a name too long, a NUL in it
        raise UsageError(f"cannot write '{path}': {getattr(e, 'strerror', None) or e}") from None
    return target


def write_output(path: str, data: str | bytes, force: bool = False) -> None:
    """Write atomically, so a failure never leaves a half-written or emptied file behind."""
    target = check_writable(path, force)
    try:
        atomic_write(target, printable(data).encode("utf-8") if isinstance(data, str) else data)
    except OSError as e:
        raise UsageError(f"cannot write '{path}': {e.strerror or e}") from None


def load_spec(args):
    """The spec a command names, with its --variant, --set and --include."""
    from . import load
    return load(args.spec, variant=args.variant, params=parse_sets(args.set), include=args.include or ())


def int_in(low: int, high: int, *words: str):
    """An argparse type: an integer from `low` to `high`, or one of `words` (e.g. 'auto', 'dynamic')."""
    kind = "a positive integer" if low == 1 else "a non-negative integer" if low == 0 else f"an integer ≥ {low}"
    expected = kind + "".join(f" or '{w}'" for w in words)

    def parse(text: str) -> int | str:
        if text in words:
            return text
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got '{text}'") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected {expected}, got '{text}'")
        if value > high:
            raise argparse.ArgumentTypeError(f"{value:,} is too large (at most {high:,})")
        return value
    return parse


def positive_int_or(*words: str):
    """An argparse type: a positive integer (up to 2**24, netspec's limit on any one size), or one of
    `words`."""
    return int_in(1, MAX_COUNT, *words)


def memory_size(text: str) -> int:
    from .resources import parse_size
    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


MAX_COUNT = 1 << 24  # the largest batch, repeat count or depth (ops/fields.MAX_SIZE, for any size)
positive_int = positive_int_or()
seed_int = int_in(0, 2**63 - 1)


def include_option(p) -> None:
    p.add_argument("--include", "-I", action="append", metavar="DIR",
                   help="a folder the spec's imports and extends may also read (repeatable; also $NETSPEC_PATH)")
