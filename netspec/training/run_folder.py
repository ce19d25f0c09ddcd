"""The run folder of `netspec train`: what a run leaves behind, written so that a run killed at
any moment leaves every file whole and the run resumable.

    checkpoint.safetensors   the weights after the last finished epoch (netspec's weights format)
    best.safetensors         the weights of the epoch with the best validation accuracy
    state.safetensors        weights, optimizer state, step, history and settings: what --resume reads
    metrics.csv              one row per epoch
    curves.png               loss and accuracy, train and validation, per epoch (needs matplotlib)
    classes.txt              the class names, one per line, in label order

Every file is replaced atomically (files.atomic_write). `state.safetensors` is written last at the
end of an epoch: it is the commit point. A run killed before it resumes from the previous epoch,
and redoes this one exactly (the data order and dropout come from the seed, epoch and step).
"""
from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
import sys
import threading
from pathlib import Path

import numpy as np

from ..files import atomic_write
from ..weights import WeightsError, read_weights, save_weights

STATE_FORMAT = "netspec-train-state 1"
COLUMNS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds")
_WEIGHTS, _OPTIMIZER = "weights/", "optimizer/"


class RunFolderError(ValueError):
    """A run folder that cannot be used as asked: it exists (without --force or --resume), it holds
    no run to resume, or its state file is damaged."""


class RunFolder:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def file(self, name: str) -> Path:
        return self.path / name

    def check(self, resume: bool, force: bool) -> None:
        """Before any work: a new run needs a folder that does not exist or is empty (or --force: the old
        run's files are replaced as the new run writes them); --resume needs a run in it."""
        if self.path.exists() and not self.path.is_dir():
            raise RunFolderError(f"'{self.path}' is a file, not a run folder")
        if resume:
            if not self.file("state.safetensors").is_file():
                raise RunFolderError(f"'{self.path}' holds no run to resume (no state.safetensors); start one "
                                     "without --resume")
        elif self.path.is_dir() and any(self.path.iterdir()) and not force:
            raise RunFolderError(f"the run folder '{self.path}' already exists and is not empty; pass --resume to "
                                 "continue its run, --force to start a new run over it, or choose another folder")
        parent = self.path if self.path.exists() else self.path.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not os.access(parent, os.W_OK):
            raise RunFolderError(f"cannot write the run folder '{self.path}': '{parent}' is not writable")

    def create(self, resume: bool) -> None:
        """Make the folder (a new run: without the files an old run there would resume or keep)."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RunFolderError(f"cannot create the run folder '{self.path}': {e.strerror or e}") from None
        if not resume:
            for name in ("state.safetensors", "checkpoint.safetensors", "best.safetensors"):
                self.file(name).unlink(missing_ok=True)

    # --- writing ---

    def write_weights(self, name: str, weights: dict[str, np.ndarray], metadata: dict[str, str]) -> None:
        save_weights(weights, self.file(name), metadata)

    def write_state(self, weights: dict[str, np.ndarray], optimizer: dict[str, np.ndarray],
                    meta: dict) -> None:
        tensors = {_WEIGHTS + k: v for k, v in weights.items()} | {_OPTIMIZER + k: v for k, v in optimizer.items()}
        save_weights(tensors, self.file("state.safetensors"), {"format": STATE_FORMAT, "state": json.dumps(meta)})

    def write_classes(self, classes: list[str]) -> None:
        atomic_write(self.file("classes.txt"), "".join(f"{c}\n" for c in classes).encode())

    def write_metrics(self, history: list[dict]) -> None:
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(COLUMNS)
        for row in history:
            writer.writerow(["" if row.get(c) is None else _cell(row[c]) for c in COLUMNS])
        atomic_write(self.file("metrics.csv"), text.getvalue().encode())

    def draw_curves(self, history: list[dict], title: str) -> None:
        """curves.png: loss and accuracy per epoch, train and validation (matplotlib's object API, not
        pyplot: it may run in the Curves thread)."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        epochs = [row["epoch"] for row in history]
        figure = Figure(figsize=(10, 4), dpi=80)
        FigureCanvasAgg(figure)
        loss_axes, accuracy_axes = figure.subplots(1, 2)
        for axes, metric in ((loss_axes, "loss"), (accuracy_axes, "accuracy")):
            for split, style, label in (("train", "-o", "train"), ("val", "-s", "validation")):
                values = [row.get(f"{split}_{metric}") for row in history]
                if any(v is not None for v in values):
                    axes.plot(epochs, [np.nan if v is None else v for v in values], style, markersize=3, label=label)
            axes.set_xlabel("epoch")
            axes.set_ylabel(metric)
            axes.grid(alpha=0.3)
            if axes.lines:
                axes.legend()
        accuracy_axes.set_ylim(top=1.0)
        figure.suptitle(title)
        figure.subplots_adjust(left=0.07, right=0.98, bottom=0.13, top=0.88, wspace=0.22)  # (tight_layout: 2× the time)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        atomic_write(self.file("curves.png"), buffer.getvalue())

    # --- reading ---

    def read_state(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict]:
        """(weights, optimizer tensors, metadata) of the last finished epoch."""
        path = self.file("state.safetensors")
        try:
            tensors, header = read_weights(path, metadata=True)
        except (WeightsError, OSError) as e:
            raise RunFolderError(f"cannot resume from '{self.path}': {e}") from None
        if header.get("format") != STATE_FORMAT:
            raise RunFolderError(f"'{path}' is not a netspec training state (no '{STATE_FORMAT}' header)")
        try:
            meta = json.loads(header["state"])
        except (KeyError, ValueError):
            raise RunFolderError(f"'{path}' has a damaged header; the run cannot be resumed") from None
        weights = {k[len(_WEIGHTS):]: v for k, v in tensors.items() if k.startswith(_WEIGHTS)}
        optimizer = {k[len(_OPTIMIZER):]: v for k, v in tensors.items() if k.startswith(_OPTIMIZER)}
        return weights, optimizer, meta


class Curves:
    """Draws curves.png after every epoch in a thread of its own (a drawing takes ~0.2 s, a LeNet-5
    epoch on the digits ~0.7 s): `update(history)` asks for a drawing of the history so far; one
    asked for while another is drawn replaces any still waiting; `close()` waits for the last one.
    Without matplotlib there is no picture (`available` is False) and metrics.csv has the figures."""

    def __init__(self, folder: RunFolder, title: str):
        self.folder, self.title = folder, title
        self.available = importlib.util.find_spec("matplotlib") is not None
        self.waiting: list[dict] | None = None
        self.failed: Exception | None = None
        self.wake = threading.Condition()
        self.closing = False
        self.thread = threading.Thread(target=self._run, name="netspec-curves", daemon=True)
        if self.available:
            self.thread.start()

    def update(self, history: list[dict]) -> None:
        with self.wake:
            self.waiting = [dict(row) for row in history]
            self.wake.notify()

    def _run(self) -> None:
        while True:
            with self.wake:
                while self.waiting is None and not self.closing:
                    self.wake.wait()
                rows, self.waiting = self.waiting, None
            if rows is None:
                return
            try:
                self.folder.draw_curves(rows, self.title)
            except Exception as e:  # (a full disk: the run goes on; close() reports it)
                self.failed = e

    def close(self) -> None:
        if not self.available:
            return
        with self.wake:
            self.closing = True
            self.wake.notify()
        self.thread.join()
        if self.failed is not None:
            warn(f"could not draw {self.folder.file('curves.png')}: {self.failed}")


def _cell(value) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def warn(message: str) -> None:
    print(f"netspec: warning: {message}", file=sys.stderr)
