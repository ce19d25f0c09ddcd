"""Inputs for `netspec run`: a .npy batch, an image (resized and normalized as the spec declares),
or a seeded random batch."""
from __future__ import annotations

import contextlib
import math
import warnings
from pathlib import Path

import numpy as np

from .backends.executor import InputError
from .files import FileReadError, open_regular
from .ir.graph import Graph
from .resources import Needs, check_fits, npy_header

MAX_IMAGE_PIXELS = 8192 * 8192  # a larger image is refused before it is decoded
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def _input_type(graph: Graph):
    (name, type_), = graph.inputs.items()
    return name, type_


def random_batch(graph: Graph, batch: int, seed: int) -> np.ndarray:
    _, type_ = _input_type(graph)
    return np.random.default_rng(seed).standard_normal((batch,) + type_.dims, dtype=np.float32)


def _not_npy(path: str) -> InputError:
    return InputError(f"'{path}' is not a .npy array file (write one with numpy.save), nor an image "
                      f"({', '.join(sorted(IMAGE_SUFFIXES))})")


def read_npy(path: str) -> np.ndarray:
    """A .npy array, read from a regular file only, its size (from its header) checked against the
    memory left first."""
    header = npy_header(path)
    if header is None:  # why not: no file, not a regular one, an .npz archive, or not an array
        try:
            with open_regular(path) as f:
                magic = f.read(4)
        except OSError as e:
            raise InputError(f"cannot read '{path}': {e.strerror}") from None
        if magic == b"PK\x03\x04":
            raise InputError(f"'{path}' is an .npz archive; give one array as a .npy file (numpy.save)")
        raise _not_npy(path)
    shape, dtype = header
    nbytes = math.prod(shape) * dtype.itemsize
    check_fits(Needs({"the array in the file": nbytes}), hint="the file is too large to read here", subject=f"'{path}'")
    try:
        with open_regular(path) as f:
            return np.load(f, allow_pickle=False)
    except OSError as e:
        raise InputError(f"cannot read '{path}': {e.strerror or e}") from None
    except (ValueError, EOFError):
        raise _not_npy(path) from None


def fit(image, width: int, height: int, resample=None):
    """Resize so the image covers width×height, keeping its aspect ratio, then crop the centre.
    resample: PIL's filter, bilinear by default (nearest for a segmentation mask, whose pixels are
    class indices, so that its geometry matches its image's)."""
    from PIL import Image

    scale = max(width / image.width, height / image.height)
    w, h = max(width, round(image.width * scale)), max(height, round(image.height * scale))
    image = image.resize((w, h), Image.BILINEAR if resample is None else resample)
    left, top = (w - width) // 2, (h - height) // 2
    return image.crop((left, top, left + width, top + height))


def image_pixels(image, type_) -> np.ndarray:
    """An opened PIL image as the input `type_` takes it, before scaling: C×H×W uint8, converted to
    L or RGB for its 1 or 3 channels, resized (aspect kept) and centre-cropped to H×W. Decoding
    happens here."""
    pixels = np.asarray(fit(image.convert("L" if type_.c == 1 else "RGB"), type_.w, type_.h), dtype=np.uint8)
    return pixels[None] if type_.c == 1 else pixels.transpose(2, 0, 1)


def normalize(values: np.ndarray, graph: Graph) -> np.ndarray:
    """Values in [0, 1] (…×C×H×W, or …×1×H×W broadcast to the input's C channels) as the network
    takes them: (x - mean) / std with the spec's `input: {mean, std}`, float32."""
    _, type_ = _input_type(graph)
    mean = np.asarray(graph.preprocess.get("mean", [0.0] * type_.c), np.float32)[:, None, None]
    std = np.asarray(graph.preprocess.get("std", [1.0] * type_.c), np.float32)[:, None, None]
    return ((values - mean) / std).astype(np.float32)


def normalize_pixels(pixels: np.ndarray, graph: Graph) -> np.ndarray:
    """normalize(pixels / 255, graph) for 8-bit pixels of the input's own channels (image_pixels'):
    the same float32 operations in one new array, in place (normalize's temporaries cost LeNet-5's
    predict more than its first layer); a mean of 0 and a std of 1 left out (exact either way)."""
    _, type_ = _input_type(graph)
    x = np.divide(pixels, np.float32(255.0), dtype=np.float32)
    mean = np.asarray(graph.preprocess.get("mean", [0.0] * type_.c), np.float32)[:, None, None]
    std = np.asarray(graph.preprocess.get("std", [1.0] * type_.c), np.float32)[:, None, None]
    if (mean != 0).any():
        np.subtract(x, mean, out=x)
    if (std != 1).any():
        np.divide(x, std, out=x)
    return x


class UnreadableImage(Exception):
    """An image file that cannot be read: `reason` in words; `kind` "file" (not a readable regular
    file), "size" (over MAX_IMAGE_PIXELS: `size` is its width and height), "declared" (its header
    declares more pixels than Pillow will open) or "image" (not an image, or damaged)."""

    def __init__(self, reason: str, kind: str = "image", size: tuple[int, int] | None = None):
        super().__init__(reason)
        self.reason, self.kind, self.size = reason, kind, size


@contextlib.contextmanager
def open_image(path):
    """The image in a regular file, opened (its header read, the pixels not decoded yet) and within
    MAX_IMAGE_PIXELS; UnreadableImage otherwise, also when decoding it fails inside the block."""
    from PIL import Image, UnidentifiedImageError

    try:
        with open_regular(path) as f, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # (refused below, with a reason)
            with Image.open(f) as image:  # (reads the header only: the size is known before decoding)
                if image.width * image.height > MAX_IMAGE_PIXELS:
                    raise UnreadableImage(f"{image.width}×{image.height} pixels, over the limit of "
                                          f"{MAX_IMAGE_PIXELS:,}", "size", image.size)
                yield image
    except FileReadError as e:
        raise UnreadableImage(e.strerror, "file") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UnreadableImage(f"it declares more than {MAX_IMAGE_PIXELS:,} pixels, the limit", "declared") from None
    except UnidentifiedImageError:  # (its own message names a file object, not the file)
        raise UnreadableImage("not an image file (Pillow cannot identify its format)") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise UnreadableImage(str(e)) from None


def read_image(path: str, graph: Graph) -> np.ndarray:
    """One image as a 1×C×H×W batch: resized (aspect kept) and centre-cropped to H×W, pixels scaled
    to [0, 1], then (x - mean) / std with the spec's `input: {mean, std}`."""
    _, type_ = _input_type(graph)
    if type_.rank != 4 or type_.c not in (1, 3):
        raise InputError(f"this network's input is {type_}; images need 1 or 3 channels")
    try:
        with open_image(path) as image:
            pixels = image_pixels(image, type_)
    except UnreadableImage as e:
        if e.kind == "file":
            raise InputError(f"cannot read '{path}': {e.reason}") from None
        if e.kind == "size":
            (w, h) = e.size
            raise InputError(f"image '{path}' is {w}×{h} ({w * h:,} pixels); images are limited to "
                             f"{MAX_IMAGE_PIXELS:,} pixels") from None
        if e.kind == "declared":
            raise InputError(f"image '{path}' declares more than {MAX_IMAGE_PIXELS:,} pixels; images are limited "
                             "to that") from None
        raise InputError(f"cannot read image '{path}': {e.reason}") from None
    return normalize_pixels(pixels, graph)[None]


def planned_batch(path: str | None, graph: Graph, batch: int) -> int:
    """The batch size `load_input` will give, known before anything is read: a .npy file's from its
    header (a file that is not one gives `batch`: reading it will say what is wrong)."""
    if path is None or Path(path).suffix.lower() in IMAGE_SUFFIXES:
        return batch
    header = npy_header(path)
    if header is None:
        return batch
    shape = header[0]
    return 1 if shape == _input_type(graph)[1].dims or not shape else max(1, int(shape[0]))


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
