"""Generate image data to train on without downloading any: a 10-class ImageFolder of drawn shapes,
or a segmentation folder (images/ and masks/) of shapes on a textured background.

    python tools/shapes.py classes shapes/ --per-class 60 --size 32      # shapes/<class>/<n>.png
    python tools/shapes.py segments blobs/ --count 200 --size 64          # blobs/images, blobs/masks

Each shape varies in size, position, rotation and colour (light on a dark, noisy background), so a network must learn the
shape, not a pixel: ResNet-18 and MobileNet v1 learn the classes, U-Net the masks (tests/test_train_learns.py).
Deterministic from --seed."""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ("circle", "square", "triangle", "diamond", "plus", "cross", "hbar", "vbar", "ring", "star")
SEGMENT_CLASSES = ("background", "disc", "box")  # mask values 0, 1, 2


def _polygon(kind: str, cx: float, cy: float, r: float, turn: float) -> list[tuple[float, float]]:
    corners = {"square": 4, "triangle": 3, "diamond": 4}[kind]
    start = turn + (math.pi / 4 if kind == "square" else -math.pi / 2 if kind == "triangle" else 0.0)
    return [(cx + r * math.cos(start + 2 * math.pi * k / corners), cy + r * math.sin(start + 2 * math.pi * k / corners))
            for k in range(corners)]


def draw_shape(draw: ImageDraw.ImageDraw, kind: str, cx: float, cy: float, r: float, turn: float, colour) -> None:
    """One shape of radius about r centred at (cx, cy); `turn` a small rotation in radians."""
    width = max(2, round(r / 3))
    if kind == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif kind == "ring":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=colour, width=width)
    elif kind in ("square", "triangle", "diamond"):
        draw.polygon(_polygon(kind, cx, cy, r * (1.25 if kind != "diamond" else 1.1), turn), fill=colour)
    elif kind in ("plus", "cross"):
        base = turn + (math.pi / 4 if kind == "cross" else 0.0)
        for angle in (base, base + math.pi / 2):
            dx, dy = r * math.cos(angle), r * math.sin(angle)
            draw.line([cx - dx, cy - dy, cx + dx, cy + dy], fill=colour, width=width)
    elif kind in ("hbar", "vbar"):
        long, short = r, max(1.5, r / 3)
        w, h = (long, short) if kind == "hbar" else (short, long)
        draw.rectangle([cx - w, cy - h, cx + w, cy + h], fill=colour)
    elif kind == "star":
        points = [(cx + (r if k % 2 == 0 else r * 0.45) * math.cos(turn - math.pi / 2 + math.pi * k / 5),
                   cy + (r if k % 2 == 0 else r * 0.45) * math.sin(turn - math.pi / 2 + math.pi * k / 5))
                  for k in range(10)]
        draw.polygon(points, fill=colour)
    else:
        raise ValueError(f"unknown shape {kind!r}")


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    """A dark background of a random tint, with noise."""
    base = rng.integers(0, 90, 3)
    noise = rng.normal(0, 10, (size, size, 3))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8), "RGB")


def _bright(rng: np.random.Generator) -> tuple[int, int, int]:
    """A light colour of a random hue: the shape stands out from any background."""
    colour = rng.integers(60, 256, 3)
    colour[rng.integers(0, 3)] = 255
    return tuple(int(c) for c in colour)


def classes_folder(root: str | Path, per_class: int = 60, size: int = 32, seed: int = 0) -> Path:
    """root/<shape>/<n>.png, `per_class` images of each of the 10 shapes."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for kind in CLASSES:
        (root / kind).mkdir(parents=True, exist_ok=True)
        for n in range(per_class):
            image = _background(rng, size)
            r = size * rng.uniform(0.25, 0.34)
            cx, cy = rng.uniform(r + 1, size - r - 1, 2)
            draw_shape(ImageDraw.Draw(image), kind, cx, cy, r, rng.uniform(-0.3, 0.3), _bright(rng))
            image.save(root / kind / f"{n:04d}.png")
    return root


def segments_folder(root: str | Path, count: int = 200, size: int = 64, seed: int = 0) -> Path:
    """root/images/<n>.png and root/masks/<n>.png: 1–3 discs and boxes per image; the mask holds the
    class of each pixel (0 background, 1 disc, 2 box), in a mode-L PNG."""
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for n in range(count):
        image = _background(rng, size)
        mask = Image.new("L", (size, size), 0)
        for _ in range(rng.integers(1, 4)):
            label = int(rng.integers(1, 3))
            r = size * rng.uniform(0.08, 0.2)
            cx, cy = rng.uniform(r, size - r, 2)
            kind = "circle" if label == 1 else "square"
            draw_shape(ImageDraw.Draw(image), kind, cx, cy, r, 0.0, _bright(rng))
            draw_shape(ImageDraw.Draw(mask), kind, cx, cy, r, 0.0, label)
        image.save(root / "images" / f"{n:04d}.png")
        mask.save(root / "masks" / f"{n:04d}.png")
    return root


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="kind", required=True)
    p = sub.add_parser("classes", help="a 10-class ImageFolder of shapes")
    p.add_argument("root")
    p.add_argument("--per-class", type=int, default=60)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("segments", help="a segmentation folder: images/ and masks/")
    p.add_argument("root")
    p.add_argument("--count", type=int, default=200)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if Path(args.root).exists() and any(Path(args.root).iterdir()):
        print(f"shapes: '{args.root}' exists and is not empty; choose a new folder", file=sys.stderr)
        return 1
    if args.kind == "classes":
        classes_folder(args.root, args.per_class, args.size, args.seed)
        print(f"wrote {args.root}: {len(CLASSES)} classes × {args.per_class} images of {args.size}×{args.size}")
    else:
        segments_folder(args.root, args.count, args.size, args.seed)
        print(f"wrote {args.root}: {args.count} images and masks of {args.size}×{args.size} "
              f"(classes {', '.join(SEGMENT_CLASSES)})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
