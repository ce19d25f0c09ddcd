"""Progress on stderr for slow one-off work: compiling the CPU kernels on a first run.

`StderrProgress` reports named steps run one after another (the ops whose kernels `warm_up`
compiles, in a fixed order). It stays quiet unless the work is slow: it shows `delay` seconds after
the start, and only once it was told that slow work began (`working()`: Numba compiling, not
loading from its cache). From then on a terminal sees one line redrawn every `interval` seconds by
a background thread, also while a step runs:

    netspec: compiling CPU kernels [=======>            ] 3/6 fused_conv2d  0:42, about 1:05 left

and a log (stderr not a terminal) gets a line when each step starts and at most one every
`log_every` seconds in between. The time left comes from each step's expected seconds (`plan`),
scaled by how the finished steps compared with theirs.
"""
from __future__ import annotations

import os
import shutil
import sys
import threading
import time

_WIDTH = 20  # the bar's width in characters


def columns(stream) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns or 80
    except (AttributeError, OSError, ValueError):  # not a file: $COLUMNS, else 80
        return shutil.get_terminal_size((80, 24)).columns


def clock(seconds: float) -> str:
    s = max(0, int(seconds + 0.5))
    return f"{s // 60}:{s % 60:02d}"


class StderrProgress:
    """A `progress(done, total, name)` callback (called before each step, and with done == total at
    the end), with `plan(expected)` and `working()`; use it as a context manager around the work,
    so that its thread stops (and its line ends) however the work ends."""

    def __init__(self, what: str, note: str = "", delay: float = 1.0, stream=None, interval: float = 0.5,
                 log_every: float = 10.0):
        self.what, self.note, self.delay, self.interval, self.log_every = what, note, delay, interval, log_every
        self.stream = stream or sys.stderr
        self.tty = getattr(self.stream, "isatty", lambda: False)()
        self.expected: dict[str, float] = {}
        self.steps: list[tuple[str, float]] = []  # (name, expected seconds) of the finished steps
        self.taken: list[float] = []              # ... and the seconds each took
        self.name, self.done, self.total = "", 0, 0
        self.start = self.step_start = time.perf_counter()
        self.shown = self.busy = False
        self.last_log = 0.0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    # --- what the work reports ---
    def plan(self, expected: dict[str, float]) -> None:
        """The steps to come, each with the seconds it is expected to take when it compiles."""
        self.expected = dict(expected)

    def working(self) -> None:
        """Slow work began (something compiles): from now on, the progress may show."""
        self.busy = True

    def __call__(self, done: int, total: int, name: str) -> None:
        now = time.perf_counter()
        with self.lock:
            if self.name:
                self.steps.append((self.name, self.expected.get(self.name, 1.0)))
                self.taken.append(now - self.step_start)
            self.done, self.total, self.name, self.step_start = done, total, name, now
            if done >= total:
                self.name = ""
            elif self.shown and not self.tty:
                self._draw(now)
        if done >= total:
            self.close()
        elif self.thread is None:
            self.thread = threading.Thread(target=self._run, name="netspec-progress", daemon=True)
            self.thread.start()

    # --- the display ---
    def _run(self) -> None:
        while not self.stop.wait(self.interval):
            now = time.perf_counter()
            with self.lock:
                if not self.shown and self.busy and now - self.start >= self.delay:
                    self.shown = True
                    self._draw(now)
                elif self.shown and (self.tty or now - self.last_log >= self.log_every):
                    self._draw(now)

    def left(self, now: float) -> float:
        """Seconds left, estimated: the current step's expected seconds less those it ran, and the
        later steps', all scaled by the ratio of taken to expected seconds over the finished steps that
        compiled (a step that loaded from the cache in under a quarter of its time does not count)."""
        compiled = [(e, t) for (_, e), t in zip(self.steps, self.taken) if t >= e / 4]
        scale = sum(t for _, t in compiled) / sum(e for e, _ in compiled) if compiled else 1.0
        scale = min(max(scale, 0.5), 4.0)
        later = sum(self.expected.values()) - sum(e for _, e in self.steps) - self.expected.get(self.name, 1.0)
        current = max(self.expected.get(self.name, 1.0) * scale - (now - self.step_start), 0.0)
        return current + max(later, 0.0) * scale

    def _line(self, now: float, bar: bool) -> str:
        elapsed = now - self.start
        left = self.left(now) if self.expected else 0.0
        step = f"{self.done + 1}/{self.total} {self.name}"
        times = clock(elapsed) + (f", about {clock(left)} left" if self.expected else "")
        if not bar:
            return f"netspec: {self.what}: {step} ({times})"
        part = elapsed / max(elapsed + left, 1e-9) if self.expected else self.done / max(self.total, 1)
        filled = int(_WIDTH * part)
        drawn = ("=" * filled + (">" if filled < _WIDTH else "")).ljust(_WIDTH)
        return f"netspec: {self.what} [{drawn}] {step}  {times}"

    def _draw(self, now: float) -> None:
        if self.tty:  # one line, redrawn, never wider than the terminal (a wrapped line would not be)
            width = columns(self.stream) - 1
            line = self._line(now, bar=True)
            if len(line) > width:
                line = self._line(now, bar=False)
            self.stream.write("\r\033[K" + line[:width])
        else:
            self.stream.write(self._line(now, bar=False) + "\n")
            self.last_log = now
        self.stream.flush()

    def close(self, failed: bool = False) -> None:
        """Stop the thread; if the progress showed, end it with a last line."""
        self.stop.set()
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join()
        with self.lock:
            if self.shown:
                end = "stopped" if failed else "done"
                note = f" ({self.note})" if self.note and not failed else ""
                line = f"netspec: {self.what}: {end} in {clock(time.perf_counter() - self.start)}{note}"
                self.stream.write(("\r\033[K" if self.tty else "") + line + "\n")
                self.stream.flush()
                self.shown = False

    def __enter__(self) -> StderrProgress:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        self.close(failed=kind is not None)
