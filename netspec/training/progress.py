"""What `netspec train` shows while it works: a bar per epoch on stderr (images/s, running loss and
accuracy, time left), a line per finished epoch on stdout, and a summary at the end.

On a terminal the bar is one line redrawn at most every `interval` seconds; in a log (stderr not a
terminal) a bar line is written at most every `log_every` seconds, so a long epoch still shows
that it moves."""
from __future__ import annotations

import sys
import time

from ..progress import clock, columns

_WIDTH = 20


def percent(fraction: float | None) -> str:
    return "-" if fraction is None else f"{100 * fraction:.1f}%"


class EpochProgress:
    def __init__(self, epoch: int, epochs: int, batches: int, samples: int, enabled: bool = True,
                 stream=None, interval: float = 0.2, log_every: float = 10.0):
        self.epoch, self.epochs, self.batches, self.samples = epoch, epochs, batches, samples
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = getattr(self.stream, "isatty", lambda: False)()
        self.interval = interval if self.tty else log_every
        self.start = time.perf_counter()
        self.last = self.start if not self.tty else 0.0
        self.shown = False

    def update(self, done_batches: int, seen: int, loss: float, accuracy: float | None) -> None:
        now = time.perf_counter()
        if not self.enabled or now - self.last < self.interval:
            return
        self.last = now
        elapsed = now - self.start
        rate = seen / elapsed if elapsed > 0 else 0.0
        left = (self.batches - done_batches) * elapsed / max(done_batches, 1)
        head = f"epoch {self.epoch}/{self.epochs}"
        tail = (f"{done_batches}/{self.batches}  {rate:,.0f} img/s  loss {loss:.4f}"
                + (f"  acc {percent(accuracy)}" if accuracy is not None else "")
                + f"  {clock(elapsed)}, about {clock(left)} left")
        if self.tty:
            filled = int(_WIDTH * done_batches / max(self.batches, 1))
            bar = ("=" * filled + (">" if filled < _WIDTH else "")).ljust(_WIDTH)
            line = f"{head} [{bar}] {tail}"
            width = columns(self.stream) - 1
            if len(line) > width:
                line = f"{head} {tail}"
            self.stream.write("\r\033[K" + line[:width])
        else:
            self.stream.write(f"{head}: {tail}\n")
        self.stream.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown and self.tty:
            self.stream.write("\r\033[K")
            self.stream.flush()
