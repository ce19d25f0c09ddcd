"""Progress on stderr for slow one-off work (the first compile of the kernels), shown only once the
work has taken more than a moment, so fast (cached) runs stay quiet."""
from __future__ import annotations

import sys
import time


class StderrProgress:
    """A `progress(done, total, name)` callback that starts printing after `delay` seconds."""

    def __init__(self, what: str, delay: float = 3.0, stream=None):
        self.what, self.delay = what, delay
        self.stream = stream or sys.stderr
        self.start = time.perf_counter()
        self.shown = False

    def __call__(self, done: int, total: int, name: str) -> None:
        elapsed = time.perf_counter() - self.start
        if not self.shown and elapsed < self.delay:
            return
        self.shown = True
        interactive = getattr(self.stream, "isatty", lambda: False)()
        if done < total:
            line = f"netspec: {self.what} [{done + 1}/{total}] {name} ({elapsed:.0f} s)"
            self.stream.write(("\r\033[K" + line) if interactive else line + "\n")
        else:
            line = f"netspec: {self.what}: done in {elapsed:.1f} s"
            self.stream.write(("\r\033[K" + line + "\n") if interactive else line + "\n")
        self.stream.flush()
