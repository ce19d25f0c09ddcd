"""The training loop behind `netspec train` and `netspec.train`: a spec taught from data.

    settings (defaults ← the spec's `train:` ← the command line)
    → data (training/data.py: opened and checked before anything trains)
    → compile(mode="train", loss=...) → per epoch: batches (prepared in a background thread)
      → exe.forward_backward → optimizer step (training/optim.py) at the schedule's learning rate
    → evaluation in eval mode on the validation split → the run folder (training/run_folder.py)

A run is reproducible from its seed: the weights' initialization, each epoch's order of the
samples (seed, epoch) and dropout's masks (seed, node, step) are all drawn from it, so a run
resumed after its last finished epoch ends with the weights an uninterrupted run would have.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from pydantic import ValidationError

from .. import ops
from ..ir.graph import Graph
from ..passes.autodiff import TrainingError, default_loss, parse_losses
from ..spec.schema import TrainSpec
from ..threads import set_threads
from ..weights import check_weights, init_weights, load_weights, param_specs
from .augment import max_shift, shift
from .data import batches, open_data
from .optim import learning_rate, make_optimizer
from .progress import EpochProgress, percent
from .run_folder import Curves, RunFolder, RunFolderError, warn

DEFAULTS: dict[str, Any] = dict(epochs=10, batch=32, loss=None, optimizer="sgd", lr=None, momentum=0.9,
                                nesterov=False, weight_decay=0.0, betas=(0.9, 0.999), eps=1e-8, schedule="cosine",
                                warmup=0.0, step_size=None, gamma=0.1, label_smoothing=0.0, val_split=0.2, seed=0,
                                augment="none")
DEFAULT_LR = {"sgd": 0.01, "adam": 1e-3, "adamw": 1e-3}
# what an existing run's settings may be changed to on --resume: only its length (a longer cosine
# schedule is another schedule, so the run then no longer equals an uninterrupted one of that length)
RESUMABLE_CHANGES = {"epochs"}


class TrainingStopped(RuntimeError):
    """The run stopped itself: the loss became NaN or infinite. The last good checkpoint is kept."""


@dataclass
class History:
    """What a run did: one row per epoch (the columns of metrics.csv), the best epoch and its score."""
    rows: list[dict] = field(default_factory=list)
    best_epoch: int | None = None
    seconds: float = 0.0
    folder: Path | None = None

    @property
    def best(self) -> dict | None:
        return next((row for row in self.rows if row["epoch"] == self.best_epoch), None)


def resolve_settings(graph: Graph, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The run's settings: netspec's defaults, then the spec's `train:`, then `overrides` (those not None),
    checked like the spec's section (TrainingError naming the setting)."""
    given = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        raise TrainingError(f"unknown training setting(s) {', '.join(unknown)}; known: {', '.join(DEFAULTS)}")
    try:
        TrainSpec.model_validate(given)
    except ValidationError as e:
        first = e.errors()[0]
        raise TrainingError(f"{'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    settings = DEFAULTS | graph.train | given
    if settings["lr"] is None:
        settings["lr"] = DEFAULT_LR[settings["optimizer"]]
    settings["betas"] = tuple(settings["betas"])
    return settings


def _losses(graph: Graph, settings: dict):
    """The losses as compile() takes them, with label_smoothing applied to the cross-entropy losses
    that do not set their own."""
    active = graph.active("train")
    named = settings["loss"] or default_loss(active)
    losses = parse_losses(active, named)  # (checks it)
    spec = {}
    for loss in losses:
        attrs = loss.attrs.model_dump()
        if loss.op == "cross_entropy" and settings["label_smoothing"] and \
                "label_smoothing" not in _written(named, loss.output, len(losses)):
            attrs["label_smoothing"] = settings["label_smoothing"]
        spec[loss.output] = {"op": loss.op, **attrs}
    return parse_losses(active, spec), spec


def _written(named, output: str, count: int) -> dict:
    """The attributes written for one output's loss."""
    entry = named.get(output, named) if isinstance(named, Mapping) and "op" not in named else named
    return dict(entry) if isinstance(entry, Mapping) else {}


def _check_task(task: str, losses, graph: Graph) -> None:
    """The data's kind of target must be what every loss scores."""
    wanted = {"classify": ("cross_entropy", 2), "segment": ("cross_entropy", 4), "regress": ("mse", None)}[task]
    for loss in losses:
        rank = graph.type_of(loss.output).rank
        if loss.op != wanted[0] or (wanted[1] is not None and rank != wanted[1]):
            what = {"classify": "class labels", "segment": "segmentation masks", "regress": "target values"}[task]
            raise TrainingError(f"the data hold {what}, but output '{loss.output}' (shape "
                                f"{graph.type_of(loss.output)}) is trained with {loss.op}: "
                                + ("class labels need N×K logits and cross_entropy" if task == "classify" else
                                   "masks need N×K×H×W logits and cross_entropy" if task == "segment" else
                                   "target values need mse"))


class _Meter:
    """A running mean loss and accuracy over an epoch's batches."""

    def __init__(self):
        self.loss = self.samples = self.correct = self.counted = 0.0

    def add(self, loss: float, n: int, scores: np.ndarray | None, labels: np.ndarray | None, ignore: int) -> None:
        self.loss += loss * n
        self.samples += n
        if scores is not None:
            counted = labels != ignore
            self.correct += int(((scores.argmax(axis=1) == labels) & counted).sum())
            self.counted += int(counted.sum())

    @property
    def mean_loss(self) -> float:
        return self.loss / max(self.samples, 1)

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.counted if self.counted else None


def _score(row: dict) -> float:
    """Higher is better: the validation accuracy, else the training accuracy, else minus a loss."""
    for key in ("val_accuracy", "train_accuracy"):
        if row.get(key) is not None:
            return row[key]
    return -(row["val_loss"] if row.get("val_loss") is not None else row["train_loss"])


def train(graph: Graph, data, out=None, *, backend: str = "cpu", weights=None, resume: bool = False,
          force: bool = False, threads: int | None = None, progress: bool = True, **settings) -> History:
    """Train `graph` on `data` and return the run's History; see the module doc and README "Training".

    data: "digits", an ImageFolder or segmentation folder, a .npz file, or (x, y) arrays (training/data.py).
    out: the run folder (None: nothing is written). weights: initial weights (a .safetensors path or a
    dict; default: initialized from the seed). resume: continue the run in `out`. settings: epochs,
    batch, loss, optimizer, lr, momentum, nesterov, weight_decay, betas, eps, schedule, warmup,
    step_size, gamma, label_smoothing, val_split, seed, augment — over the spec's `train:` section."""
    started = time.perf_counter()
    folder = RunFolder(out) if out is not None else None
    if resume and folder is None:
        raise RunFolderError("resume needs the run folder (out=...)")
    if folder is not None:
        folder.check(resume, force)
    state = folder.read_state() if resume else None
    if state is not None:
        settings = _resumed_settings(state[2], settings)
        data = state[2]["data"] if data is None else data
    if data is None:
        raise TrainingError("no data to train on: pass --data (digits, a folder of images, or a .npz file)")
    config = resolve_settings(graph, settings)
    losses, loss_spec = _losses(graph, config)
    train_set, val_set = open_data(data, graph, val_split=config["val_split"])
    _check_task(train_set.task, losses, graph)
    if config["augment"] != "none" and train_set.task != "classify":
        raise TrainingError(f"augment: {config['augment']} moves images, not their masks or targets: it is for "
                            "classification; use augment: none")
    if weights is not None and state is None:
        weights = load_weights(weights, graph) if not isinstance(weights, Mapping) else \
            {k: np.array(v, np.float32) for k, v in check_weights(graph, dict(weights)).items()}  # (the caller's stay)
    elif state is not None:
        weights = check_weights(graph, state[0], origin=f"the weights in '{folder.file('state.safetensors')}'")
    else:
        weights = init_weights(graph, config["seed"])
    if folder is not None:
        folder.create(resume)
        folder.write_classes(train_set.classes)

    from .. import compile
    with set_threads(threads):
        exe = compile(graph, backend=backend, mode="train", weights=weights, seed=config["seed"], loss=loss_spec,
                      progress=progress)
        if val_set is not None:  # and validation's eval-mode kernels (fused convolutions): now, not silently after epoch 1
            compile(graph, backend=backend, mode="eval", weights={k: v.copy() for k, v in weights.items()},
                    progress=progress)
        trainable = {k: exe.weights[k] for k, spec in param_specs(graph).items() if spec.trainable and k in exe.weights}
        optimizer = make_optimizer(config["optimizer"], trainable, momentum=config["momentum"],
                                   nesterov=config["nesterov"], weight_decay=config["weight_decay"],
                                   betas=config["betas"], eps=config["eps"])
        history = History(folder=folder.path if folder else None)
        first_epoch = 1
        if state is not None:
            meta = state[2]
            try:
                optimizer.load_state(state[1], meta["optimizer_steps"])
            except ValueError as e:
                raise RunFolderError(f"cannot resume from '{folder.path}': {e}") from None
            exe.steps = meta["executor_steps"]
            history.rows, history.best_epoch = meta["history"], meta["best_epoch"]
            first_epoch = meta["epoch"] + 1
            if first_epoch > config["epochs"]:
                if progress:
                    print(f"the run in '{folder.path}' already finished its {meta['epoch']} epochs; pass --epochs "
                          "with more to train further")
                return history
        run = _Run(graph, exe, optimizer, losses, config, train_set, val_set, folder, history, weights, data,
                   backend, progress)
        try:
            for epoch in range(first_epoch, config["epochs"] + 1):
                run.epoch(epoch)
        finally:
            if run.curves is not None:
                run.curves.close()
    history.seconds = time.perf_counter() - started
    if progress:
        _summary(history, folder, val_set is not None, config["epochs"] - first_epoch + 1)
    return history


def _resumed_settings(meta: dict, given: Mapping[str, Any]) -> dict[str, Any]:
    """A resumed run keeps the settings it was started with; changing any but `epochs` is refused."""
    saved = dict(meta["settings"])
    for key, value in given.items():
        if value is None or key not in saved:
            continue
        same = list(value) == list(saved[key]) if isinstance(value, (list, tuple)) else value == saved[key]
        if not same and key not in RESUMABLE_CHANGES:
            raise RunFolderError(f"this run was started with {key} = {saved[key]!r}; --resume continues it as it "
                                 f"was (only --epochs may change); start a new run for {key} = {value!r}")
    return saved | {k: v for k, v in given.items() if k in RESUMABLE_CHANGES and v is not None}


class _Run:
    """One run's moving parts, and an epoch of it."""

    def __init__(self, graph, exe, optimizer, losses, config, train_set, val_set, folder, history, weights, data,
                 backend, progress):
        self.graph, self.exe, self.optimizer, self.losses, self.config = graph, exe, optimizer, losses, config
        self.train_set, self.val_set, self.folder, self.history = train_set, val_set, folder, history
        self.weights = weights  # every parameter of the spec (both modes): what the checkpoints hold
        self.data, self.backend, self.progress = data, backend, progress
        self.curves = Curves(folder, f"{graph.name}: {train_set.name}") if folder is not None else None
        if self.curves is not None and not self.curves.available:
            warn("curves.png needs matplotlib (.venv/bin/pip install matplotlib); metrics.csv has the figures")
        self.batch = config["batch"]
        self.drop_last = train_set.count >= self.batch  # (a last batch of one would break batch norm's statistics)
        self.steps_per_epoch = max(1, train_set.count // self.batch if self.drop_last else 1)
        eval_outputs = graph.active("eval").outputs
        # the loss whose output accuracy is measured on: the first that remains in eval mode
        self.scored = next((loss for loss in losses if loss.output in eval_outputs and loss.op == "cross_entropy"),
                           None)

    def targets(self, y: np.ndarray) -> np.ndarray | dict[str, np.ndarray]:
        return y if len(self.losses) == 1 else {loss.output: y for loss in self.losses}

    def epoch(self, epoch: int) -> None:
        config, exe = self.config, self.exe
        started = time.perf_counter()
        meter = _Meter()
        ignore = self.scored.attrs.ignore_index if self.scored else -100
        step = (epoch - 1) * self.steps_per_epoch
        lr = config["lr"]
        # (overflow in a diverging step is reported once, as a non-finite loss, not as numpy's warnings)
        with batches(self.train_set, self.batch, seed=config["seed"], epoch=epoch, drop_last=self.drop_last) as loader, \
                np.errstate(over="ignore", invalid="ignore"):
            bar = EpochProgress(epoch, config["epochs"], len(loader), self.train_set.count, enabled=self.progress)
            try:
                for index, (x, y) in enumerate(loader):
                    lr = learning_rate(config["schedule"], config["lr"], step, steps_per_epoch=self.steps_per_epoch,
                                       epochs=config["epochs"], warmup=config["warmup"],
                                       step_size=config["step_size"], gamma=config["gamma"])
                    if config["augment"] == "shift":
                        rng = np.random.default_rng([config["seed"], epoch, index, 1])
                        x = shift(x, rng, max_shift(x.shape[2], x.shape[3]))
                    loss, outputs, grads = exe.forward_backward(x, self.targets(y))
                    if not math.isfinite(loss):
                        kept = (f"the last good checkpoint (epoch {epoch - 1}) is kept in "
                                f"'{self.folder.file('checkpoint.safetensors')}'" if self.folder and epoch > 1
                                else "no checkpoint was written yet")
                        raise TrainingStopped(f"the loss became {loss} at epoch {epoch}, step {index + 1} of "
                                              f"{len(loader)} (step {step + 1} of the run); {kept}. Try a lower "
                                              f"learning rate (--lr, now {config['lr']:g}) or a warm-up (--warmup 1)")
                    self.optimizer.step(grads, lr)
                    step += 1
                    scores = outputs[self.scored.output] if self.scored else None
                    meter.add(loss, len(x), scores, y if self.scored else None, ignore)
                    bar.update(index + 1, int(meter.samples), meter.mean_loss, meter.accuracy)
            finally:
                bar.close()
        self.weights.update(exe.weights)  # (batch norm's running statistics are new arrays each step)
        row = {"epoch": epoch, "train_loss": meter.mean_loss, "train_accuracy": meter.accuracy}
        row |= self.evaluate()
        row |= {"lr": lr, "seconds": round(time.perf_counter() - started, 3)}
        history = self.history
        history.rows.append(row)
        improved = history.best_epoch is None or _score(row) > _score(history.best)
        if improved:
            history.best_epoch = epoch
        if self.folder is not None:
            self.save(epoch, improved)
        if self.progress:
            print(_epoch_line(row, config["epochs"], improved and len(history.rows) > 1), flush=True)

    def evaluate(self) -> dict:
        """Validation loss and accuracy in eval mode (running statistics, no dropout)."""
        if self.val_set is None:
            return {"val_loss": None, "val_accuracy": None}
        from .. import compile
        weights = {k: v.copy() for k, v in self.weights.items()}  # (a fold or prepare never touches the run's)
        model = compile(self.graph, backend=self.backend, mode="eval", weights=weights, progress=False)
        meter = _Meter()
        scored = [loss for loss in self.losses if loss.output in model.graph.outputs]
        ignore = self.scored.attrs.ignore_index if self.scored else -100
        with batches(self.val_set, self.batch, seed=0, epoch=0, shuffle=False) as loader:
            for x, y in loader:
                outputs = model.run(x)
                loss = sum(float(ops.get(l.op).reference(l.attrs, [outputs[l.output].astype(np.float64), y], {},
                                                         None)[0]) for l in scored)
                scores = outputs[self.scored.output] if self.scored else None
                meter.add(loss, len(x), scores, y if self.scored else None, ignore)
        return {"val_loss": meter.mean_loss, "val_accuracy": meter.accuracy}

    def save(self, epoch: int, improved: bool) -> None:
        folder, history = self.folder, self.history
        metadata = {"spec": str(self.graph.source), "epoch": str(epoch)}
        if self.graph.variant:
            metadata["variant"] = self.graph.variant
        folder.write_weights("checkpoint.safetensors", self.weights, metadata)
        if improved:
            folder.write_weights("best.safetensors", self.weights, metadata | {"best_epoch": str(epoch)})
        folder.write_metrics(history.rows)
        self.curves.update(history.rows)
        config = {k: list(v) if isinstance(v, tuple) else v for k, v in self.config.items()}
        meta = {"epoch": epoch, "optimizer_steps": self.optimizer.step_count, "executor_steps": self.exe.steps,
                "history": history.rows, "best_epoch": history.best_epoch, "settings": config,
                "data": _where(self.data)}
        folder.write_state(self.weights, self.optimizer.state(), json.loads(json.dumps(meta)))


def _where(data) -> str | None:
    """The data as --resume finds it again from any folder: "digits", or the absolute path (arrays: None)."""
    if not isinstance(data, (str, Path)):
        return None
    return str(data) if str(data) == "digits" else str(Path(data).absolute())


def _epoch_line(row: dict, epochs: int, best: bool) -> str:
    width = len(str(epochs))
    line = f"epoch {row['epoch']:>{width}}/{epochs}  train loss {row['train_loss']:.4f}"
    if row["train_accuracy"] is not None:
        line += f" acc {percent(row['train_accuracy'])}"
    if row["val_loss"] is not None:
        line += f"  |  val loss {row['val_loss']:.4f}"
        if row["val_accuracy"] is not None:
            line += f" acc {percent(row['val_accuracy'])}"
    return line + f"  |  lr {row['lr']:.3g}  {row['seconds']:.1f} s" + ("  (best)" if best else "")


def _summary(history: History, folder: RunFolder | None, validated: bool, ran: int) -> None:
    best = history.best
    if best is None:
        return
    what = "validation" if validated else "training"
    accuracy = best.get("val_accuracy" if validated else "train_accuracy")
    score = f"{what} accuracy {percent(accuracy)}" if accuracy is not None else \
        f"{what} loss {best['val_loss' if validated else 'train_loss']:.4f}"
    resumed = f" (resumed after epoch {len(history.rows) - ran})" if ran < len(history.rows) else ""
    print(f"best epoch {best['epoch']} of {len(history.rows)}: {score}; {ran} epoch{'s' * (ran != 1)} in "
          f"{history.seconds:.1f} s{resumed}")
    if folder is not None:
        print(f"weights: {folder.file('best.safetensors')} (best epoch), {folder.file('checkpoint.safetensors')} "
              f"(last); metrics: {folder.file('metrics.csv')}; curves: {folder.file('curves.png')}")
