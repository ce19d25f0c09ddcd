"""Inputs for `netspec run`: a .npy batch, an image (resized and normalized as the spec declares),
or a seeded random batch."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .backends.executor import InputError
from .ir.graph import Graph

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def _input_type(graph: Graph):
    (name, type_), = graph.inputs.items()
    return name, type_


def random_batch(graph: Graph, batch: int, seed: int) -> np.ndarray:
    _, type_ = _input_type(graph)
    return np.random.default_rng(seed).standard_normal((batch,) + type_.dims).astype(np.float32)


def read_npy(path: str) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise InputError(f"cannot read '{path}': no such file") from None
    except IsADirectoryError:
        raise InputError(f"cannot read '{path}': it is a directory") from None
    except (OSError, ValueError, EOFError):
        raise InputError(f"'{path}' is not a .npy array file (write one with numpy.save), nor an image "
                         f"({', '.join(sorted(IMAGE_SUFFIXES))})") from None
    if not isinstance(array, np.ndarray):
        array.close()
        raise InputError(f"'{path}' is an .npz archive; give one array as a .npy file (numpy.save)")
    return array


def fit(image, width: int, height: int):
    """Resize so the image covers width×height, keeping its aspect ratio, then crop the centre."""
    from PIL import Image

    scale = max(width / image.width, height / image.height)
    w, h = max(width, round(image.width * scale)), max(height, round(image.height * scale))
    image = image.resize((w, h), Image.BILINEAR)
    left, top = (w - width) // 2, (h - height) // 2
    return image.crop((left, top, left + width, top + height))


def read_image(path: str, graph: Graph) -> np.ndarray:
    """One image as a 1×C×H×W batch: resized (aspect kept) and centre-cropped to H×W, pixels scaled
    to [0, 1], then (x - mean) / std with the spec's `input: {mean, std}`."""
    from PIL import Image, UnidentifiedImageError

    _, type_ = _input_type(graph)
    if type_.rank != 4 or type_.c not in (1, 3):
        raise InputError(f"this network's input is {type_}; images need 1 or 3 channels")
    try:
        with Image.open(path) as image:
            image = fit(image.convert("L" if type_.c == 1 else "RGB"), type_.w, type_.h)
            pixels = np.asarray(image, dtype=np.float32) / 255.0
    except FileNotFoundError:
        raise InputError(f"cannot read '{path}': no such file") from None
    except (UnidentifiedImageError, OSError) as e:
        raise InputError(f"cannot read image '{path}': {e}") from None
    chw = pixels[None] if type_.c == 1 else pixels.transpose(2, 0, 1)
    mean = np.asarray(graph.preprocess.get("mean", [0.0] * type_.c), np.float32)[:, None, None]
    std = np.asarray(graph.preprocess.get("std", [1.0] * type_.c), np.float32)[:, None, None]
    return ((chw - mean) / std)[None].astype(np.float32)


def load_input(path: str | None, graph: Graph, batch: int, seed: int) -> np.ndarray:
    """The batch `netspec run` feeds the network. A single sample (C×H×W) becomes a batch of one,
    and a single image is repeated `batch` times."""
    if path is None:
        return random_batch(graph, batch, seed)
    if Path(path).suffix.lower() in IMAGE_SUFFIXES:
        return np.repeat(read_image(path, graph), batch, axis=0)
    array = read_npy(path)
    _, type_ = _input_type(graph)
    if array.shape == type_.dims:
        array = array[None]
    return array
