"""Diagnostics: every mistake in a spec becomes a `file:line:col: error: message`.

Errors are collected, not raised one by one, so a user sees all the problems of a file at once.
A node made inside a block carries the chain of places where that block was used; each link
is printed as a note under the error.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Iterable


@dataclass(frozen=True)
class Location:
    file: str
    line: int  # 1-based
    col: int  # 1-based

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}" if self.line else self.file


COMMAND_LINE = Location("netspec", 0, 0)  # for mistakes in options, not in a file


@dataclass(frozen=True)
class Trace:
    """Where a node was written, plus where each enclosing block was used (innermost first)."""

    at: Location
    used_at: tuple[tuple[Location, str], ...] = ()  # (location of the use, block name)

    def inside(self, use: Location, block: str) -> "Trace":
        return Trace(self.at, self.used_at + ((use, block),))


@dataclass(frozen=True)
class Diagnostic:
    location: Location
    message: str
    notes: tuple[tuple[Location, str], ...] = ()

    def format(self) -> str:
        lines = [f"{self.location}: error: {self.message}"]
        lines += [f"{loc}: note: {msg}" for loc, msg in self.notes]
        return "\n".join(lines)


def diagnostic_at(trace: Trace, message: str) -> Diagnostic:
    notes = tuple((use, f"in block '{block}' used here") for use, block in trace.used_at)
    return Diagnostic(trace.at, message, notes)


class SpecError(Exception):
    """Raised at the end of a stage that found mistakes in the spec; carries all of them."""

    def __init__(self, diagnostics: Iterable[Diagnostic]):
        self.diagnostics = sorted(set(diagnostics), key=_order)
        super().__init__(self.format())

    def format(self) -> str:
        return "\n".join(d.format() for d in self.diagnostics)


def _order(d: Diagnostic):
    return (d.location.file, d.location.line, d.location.col, d.message)


@dataclass
class Collector:
    """Gathers diagnostics during a stage; `check()` raises them all together."""

    diagnostics: list[Diagnostic] = field(default_factory=list)

    def error(self, trace_or_loc: Trace | Location, message: str) -> None:
        if isinstance(trace_or_loc, Trace):
            self.diagnostics.append(diagnostic_at(trace_or_loc, message))
        else:
            self.diagnostics.append(Diagnostic(trace_or_loc, message))

    def check(self) -> None:
        if self.diagnostics:
            raise SpecError(self.diagnostics)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' when a close match exists, else ''. Never the word itself: where the
    word is among the choices, its lookup failed for another reason, which the caller must say."""
    matches = difflib.get_close_matches(str(word), sorted(set(choices) - {str(word)}), n=1, cutoff=0.6)
    return f" (did you mean '{matches[0]}'?)" if matches else ""
