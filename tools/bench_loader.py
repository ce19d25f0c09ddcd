"""Does the background loader slow the network? (issue #27) Time epochs of training-step work — one
`exe.grad(x, y)` per batch — with batches prepared in the background thread against prepared in the
training loop itself, on an image folder of generated PNGs.

    .venv/bin/python tools/bench_loader.py                  # ResNet-18 at 32×32, 640 images, batch 64
    .venv/bin/python tools/bench_loader.py --spec lenet5    # a small net: the loader's share is largest
    .venv/bin/python tools/bench_loader.py --rounds 5 --images 1280

Each round opens the folder afresh for each loader, so its first epoch decodes every image and its
second reads the decoded cache; the two are reported apart. The loaders take turns, the one going
first alternating by round, and a ratio is the median of the rounds' ratios (background / foreground),
so that a slow spell of the shared machine falls on both sides. The loader alone (no network) is
timed too: the work the background thread has to hide.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
# this checkout's netspec, not another one an editable install points to (an A/B from a git worktree)
sys.path.insert(0, str(ROOT))

import netspec  # noqa: E402
from netspec.threads import set_threads  # noqa: E402
from netspec.training.data import batches, open_data  # noqa: E402
NETS = {"resnet18": ("specs/resnet.yaml", {"resolution": 32, "num_classes": 10, "depth": 18}),
        "lenet5": ("specs/lenet5.yaml", {"num_classes": 10})}
CLASSES = 10


def write_shapes(folder: Path, count: int, seed: int = 0) -> None:
    """`count` PNGs of 36–44 pixels a side in CLASSES class folders: a class is a shape (ellipse,
    rectangle or triangle) and a hue, drawn at a random place and size on a random background."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    for i in range(count):
        label = i % CLASSES
        side = int(rng.integers(36, 45))
        image = Image.new("RGB", (side, side), tuple(int(v) for v in rng.integers(0, 96, 3)))
        x0, y0 = rng.integers(0, side // 3, 2)
        x1, y1 = side - rng.integers(0, side // 3, 2)
        colour = tuple(int(v) for v in np.roll([255, int(25 * label), 60], label % 3))
        draw = ImageDraw.Draw(image)
        if label % 3 == 0:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        elif label % 3 == 1:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
        else:
            draw.polygon([(x0, y1), ((x0 + x1) // 2, y0), (x1, y1)], fill=colour)
        (folder / f"class{label}").mkdir(parents=True, exist_ok=True)
        image.save(folder / f"class{label}" / f"{i:05}.png")


def epoch_seconds(dataset, batch: int, epoch: int, background: bool, step=None) -> tuple[float, float]:
    """(wall seconds of one epoch, of them the seconds inside `step`): every batch prepared, and
    `step(x, y)` run on it when given. The steps' share tells a slower network (the thread taking
    cores or the GIL from it) from a network left waiting for its batches."""
    stepping = 0.0
    started = time.perf_counter()
    with batches(dataset, batch, seed=0, epoch=epoch, background=background) as loader:
        for x, y in loader:
            if step is not None:
                before = time.perf_counter()
                step(x, y)
                stepping += time.perf_counter() - before
    return time.perf_counter() - started, stepping


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", choices=sorted(NETS), default="resnet18")
    parser.add_argument("--images", type=int, default=640)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    path, params = NETS[args.spec]
    graph = netspec.load(ROOT / path, params=params)
    exe = netspec.compile(graph, mode="train", loss="cross_entropy")
    with tempfile.TemporaryDirectory() as tmp, set_threads(args.threads):
        folder = Path(tmp) / "shapes"
        write_shapes(folder, args.images)
        started = time.perf_counter()
        train, _ = open_data(str(folder), graph, val_split=0)
        opened = time.perf_counter() - started
        decode, _ = epoch_seconds(train, args.batch, 0, background=False)
        cached, _ = epoch_seconds(train, args.batch, 1, background=False)
        steps = len(batches(train, args.batch, seed=0, epoch=0))
        print(f"{args.spec} {graph.inputs['input'].dims_str()}, {args.images} PNGs of 36–44 px, batch {args.batch} "
              f"({steps} steps an epoch), {args.threads} threads")
        print(f"the loader alone: open_data {opened:.2f} s (every header), first epoch {decode:.2f} s (decoding), "
              f"a cached epoch {cached:.3f} s")
        x, y = train.take(np.arange(args.batch))
        exe.grad(x, y)  # untimed: plans the step's memory once

        times = {(background, first): [] for background in (True, False) for first in (True, False)}
        for round_ in range(args.rounds):
            for background in ((True, False) if round_ % 2 == 0 else (False, True)):
                fresh, _ = open_data(str(folder), graph, val_split=0)  # (an empty cache: the first epoch decodes)
                for epoch, first in ((0, True), (1, False)):
                    times[background, first].append(epoch_seconds(fresh, args.batch, epoch, background, exe.grad))
            print(f"round {round_ + 1}: " + ", ".join(
                f"{'background' if background else 'foreground'} {'first' if first else 'cached'} "
                f"{t[-1][0]:.2f} s (steps {t[-1][1]:.2f})" for (background, first), t in times.items()), flush=True)

    print(f"\nmedians of {args.rounds} rounds; bg / fg: the median of the rounds' ratios")
    print(f"{'epoch':<16}{'':<7}{'background s':>14}{'foreground s':>14}{'bg / fg':>10}")
    for first, label in ((True, "first (decode)"), (False, "cached")):
        for part, name in ((0, "epoch"), (1, "steps")):
            bg, fg = ([t[part] for t in times[background, first]] for background in (True, False))
            ratio = statistics.median(b / f for b, f in zip(bg, fg))
            print(f"{label if part == 0 else '':<16}{name:<7}{statistics.median(bg):>14.2f}"
                  f"{statistics.median(fg):>14.2f}{ratio:>10.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
