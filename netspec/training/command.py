"""`netspec train`: the command over training/loop.py."""
from __future__ import annotations

import argparse
import sys


def cmd_train(args) -> int:
    from ..options import UsageError, load_spec

    if isinstance(args.resume, str):  # `--resume RUN_DIR`; plain `--resume` continues the run in -o
        if args.output is not None and args.output != args.resume:
            raise UsageError(f"--resume names '{args.resume}' and -o '{args.output}': give the run folder once")
        args.output = args.resume
    if args.output is None:
        raise UsageError("name the run folder: -o RUN_DIR (checkpoints, metrics.csv and curves.png go there)")
    betas = None
    if args.betas:
        try:
            betas = tuple(float(b) for b in args.betas.split(","))
        except ValueError:
            betas = ()
        if len(betas) != 2:
            raise UsageError(f"--betas expects two numbers, B1,B2 (e.g. 0.9,0.999), got '{args.betas}'")
    graph = load_spec(args)
    try:
        _train(graph, args, betas)
    except KeyboardInterrupt:
        print(f"netspec: interrupted; '{args.output}' keeps every finished epoch: continue with --resume",
              file=sys.stderr)
        raise
    return 0


def _train(graph, args, betas) -> None:
    from .loop import train
    train(graph, args.data, args.output, backend=args.backend, weights=args.weights,
          resume=args.resume is not None, force=args.force, threads=args.threads,
          epochs=args.epochs, batch=args.batch, loss=args.loss, optimizer=args.optimizer, lr=args.lr,
          momentum=args.momentum, nesterov=args.nesterov, weight_decay=args.weight_decay, betas=betas,
          eps=args.eps, schedule=args.schedule, warmup=args.warmup, step_size=args.step_size, gamma=args.gamma,
          label_smoothing=args.label_smoothing, val_split=args.val_split, seed=args.seed, augment=args.augment)


def add_commands(sub, spec_options) -> None:
    from ..options import positive_int, seed_int

    def fraction(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got '{text}'") from None
        if not 0.0 <= value < 1.0:
            raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got '{text}'")
        return value

    def non_negative(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None
        if not value >= 0.0:
            raise argparse.ArgumentTypeError(f"expected a number ≥ 0, got '{text}'")
        return value

    def positive(text: str) -> float:
        value = non_negative(text)
        if value == 0.0:
            raise argparse.ArgumentTypeError(f"expected a number > 0, got '{text}'")
        return value

    p = sub.add_parser("train", help="train a spec on data: optimizers, schedules, checkpoints, resume, curves",
                       description="Train a spec on data. Settings: the spec's `train:` section, overridden by "
                                   "these options; defaults in brackets.")
    spec_options(p)
    p.add_argument("--data", metavar="DATA",
                   help="digits (scikit-learn's handwritten digits), an ImageFolder (one subfolder per class; or "
                        "train/ and val/), a segmentation folder (images/ and masks/), or a .npz with x and y")
    p.add_argument("-o", "--output", metavar="RUN_DIR", help="the run folder: checkpoints, metrics.csv, curves.png")
    p.add_argument("--resume", nargs="?", const=True, metavar="RUN_DIR",
                   help="continue the run in RUN_DIR (or -o) after its last finished epoch")
    p.add_argument("--force", action="store_true", help="start a new run in a run folder that is not empty")
    p.add_argument("--weights", metavar="INIT.safetensors", help="initial weights (default: initialized from --seed)")
    p.add_argument("--epochs", type=positive_int, help="[10]")
    p.add_argument("--batch", type=positive_int, help="[32]")
    p.add_argument("--loss", choices=["cross_entropy", "mse"], help="[cross_entropy where it fits, else mse]")
    p.add_argument("--optimizer", choices=["sgd", "adam", "adamw"], help="[sgd]")
    p.add_argument("--lr", type=positive, help="learning rate [0.01 for sgd, 0.001 for adam and adamw]")
    p.add_argument("--momentum", type=fraction, help="sgd [0.9]")
    p.add_argument("--nesterov", action="store_true", default=None, help="sgd: Nesterov momentum")
    p.add_argument("--weight-decay", type=non_negative, help="[0]; adamw's is decoupled from the gradient")
    p.add_argument("--betas", metavar="B1,B2", help="adam and adamw [0.9,0.999]")
    p.add_argument("--eps", type=positive, help="adam and adamw [1e-8]")
    p.add_argument("--schedule", choices=["constant", "step", "cosine"], help="the learning rate's schedule [cosine]")
    p.add_argument("--warmup", type=non_negative, metavar="EPOCHS", help="epochs of linear warm-up [0]")
    p.add_argument("--step-size", type=positive_int, metavar="EPOCHS",
                   help="step schedule: epochs between decays [a third of the epochs]")
    p.add_argument("--gamma", type=positive, help="step schedule: the decay factor [0.1]")
    p.add_argument("--label-smoothing", type=fraction, help="cross-entropy label smoothing [0]")
    p.add_argument("--val-split", type=fraction, help="the fraction of the data held out for validation [0.2]")
    p.add_argument("--augment", choices=["none", "shift"],
                   help="shift: move each training image by up to 1/16 of its side, anew each epoch [none]")
    p.add_argument("--seed", type=seed_int, help="seed of the weights, the data order and dropout [0]")
    p.add_argument("--threads", type=positive_int, help="threads for the kernels (default: all cores)")
    p.add_argument("--backend", choices=["cpu", "reference"], default="cpu",
                   help="cpu: Numba kernels (default); reference: plain numpy (slow; the judge in tests)")
    p.set_defaults(func=cmd_train)
