"""The data `netspec train` learns from, checked whole before training starts, and the batches of an
epoch, prepared in a background thread while the network computes.

Sources: "digits" (scikit-learn's 1,797 scans of handwritten digits, a demo that needs no files); an
image folder (one subfolder of images per class, optionally split into train/ and val/); a
segmentation folder (images/ and masks/ matched by file name, optionally val/images and val/masks);
an .npz file holding x and y; or (x, y) numpy arrays.

Images come out as the network's input exactly as `netspec run` makes one: converted to L or RGB,
resized (aspect ratio kept) and centre-cropped to the input's H×W, scaled to [0, 1] and normalized
with the spec's `input: {mean, std}`. So images of different sizes are fine. Masks get the same
geometry with nearest-neighbour resizing, then are centre-cropped to the output's H×W (a U-Net with
valid convolutions has a smaller output than input). Arrays (.npz, (x, y)) are taken as the
network's input as they are, like the .npy batches of `netspec run`.

The validation split is fixed (np.random.default_rng(0), whatever the training seed), stratified per
class for classification, so runs with different seeds are compared on the same held-out samples.
"""
from __future__ import annotations

import contextlib
import difflib
import math
import queue
import threading
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..files import FileReadError, open_regular
from ..inputs import IMAGE_SUFFIXES, UnreadableImage, fit, image_pixels, normalize, normalize_pixels, open_image
from ..ir.graph import Graph
from ..resources import Needs, ResourceError, available_memory, check_fits

CACHE_BYTES = 512 << 20  # decoded images (uint8) are kept when the whole set takes at most this
AHEAD = 2  # batches the background thread prepares ahead of the one the network is on
LISTED = 10  # bad files named in an error (then a count)

IMAGE_KINDS = ", ".join(sorted(IMAGE_SUFFIXES))
SOURCES = ("'digits' (the demo), an image folder (one subfolder of images per class), a segmentation folder "
           "(images/ and masks/) or an .npz file (x and y)")


class DataError(ValueError):
    """Data that cannot be trained on; the message says what and where (file names)."""


@dataclass
class Dataset:
    name: str  # what the user gave: "digits", a folder path, an .npz path, "arrays"
    count: int  # number of samples
    classes: list[str]  # class names: folder names, "0".."9" for digits, str(i) for label i; [] for regress
    task: str  # "classify" (y: N int64), "segment" (y: N×H×W int64), "regress" (y: float32 of the output's shape)
    samples: "_Arrays | _Images" = field(repr=False)  # shared by a training set and its validation split
    rows: np.ndarray = field(repr=False)  # this set's rows of `samples`

    def take(self, indices) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) for these samples: x float32, C-contiguous, len(indices)×C×H×W, as the network takes it."""
        return self.samples.take(self.rows[np.asarray(indices, dtype=np.intp)])

    @property
    def reads_files(self) -> bool:
        """Whether taking this set's samples still decodes files (they are not all in memory yet)."""
        return self.samples.reads_files(self.rows)


# --- samples ---------------------------------------------------------------------------------------

class _Arrays:
    """Samples held in memory. With `graph`, x holds values in [0, 1] (one channel broadcasts to the
    input's channels) normalized per batch; without, x is the network's input as it is."""

    def __init__(self, x: np.ndarray, targets: np.ndarray, graph: Graph | None = None):
        self.x, self.targets, self.graph = x, targets, graph

    def __len__(self) -> int:
        return len(self.targets)

    def reads_files(self, rows: np.ndarray) -> bool:
        return False

    def take(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = self.x[rows]
        return (normalize(x, self.graph) if self.graph is not None else np.ascontiguousarray(x)), self.targets[rows]


class _Images:
    """Image files decoded when first taken; kept decoded (uint8, the input's size) when the whole set
    fits the cache budget, so that the epochs after the first decode nothing. `targets`: int64
    labels, or uint8 masks already at the output's size."""

    def __init__(self, paths: list[Path], targets: np.ndarray, graph: Graph):
        self.paths, self.targets, self.graph = paths, targets, graph
        self.input = _input_type(graph)
        nbytes = len(paths) * math.prod(self.input.dims)
        fits = nbytes <= min(CACHE_BYTES, available_memory()[0] // 4)
        self.cache = np.empty((len(paths),) + self.input.dims, np.uint8) if fits else None
        self.decoded = np.zeros(len(paths), bool)

    def __len__(self) -> int:
        return len(self.paths)

    def reads_files(self, rows: np.ndarray) -> bool:
        return self.cache is None or not self.decoded[rows].all()

    def take(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.cache is not None:
            for row in rows[~self.decoded[rows]]:
                self.cache[row] = self._decode(row)
                self.decoded[row] = True  # (after the pixels: a row marked decoded is whole)
            pixels = self.cache[rows]
        else:
            pixels = np.empty((len(rows),) + self.input.dims, np.uint8)
            for i, row in enumerate(rows):
                pixels[i] = self._decode(row)
        return normalize_pixels(pixels, self.graph), self.targets[rows].astype(np.int64)

    def _decode(self, row: int) -> np.ndarray:
        path = self.paths[row]
        try:
            with open_image(path) as image:
                return image_pixels(image, self.input)
        except UnreadableImage as e:  # (its header was read when the data was opened: truncated, or changed since)
            raise DataError(f"cannot decode image '{path}': {e}") from None


# --- checks shared by the sources --------------------------------------------------------------------

def _input_type(graph: Graph):
    if len(graph.inputs) != 1:
        raise DataError(f"training feeds a network of one input; this one has {len(graph.inputs)}: "
                        f"{', '.join(graph.inputs)}")
    (type_,) = graph.inputs.values()
    return type_


def _image_input(graph: Graph, what: str):
    type_ = _input_type(graph)
    if type_.rank != 4 or type_.c not in (1, 3):
        raise DataError(f"{what} gives images, but this network's input is {type_.dims_str()}; images need "
                        "1 or 3 channels (C×H×W)")
    return type_


def _output_dims(graph: Graph) -> tuple[int, ...]:
    return graph.type_of(graph.outputs[0]).dims


def _class_count(graph: Graph, what: str) -> int:
    """The classes of a classifier's output (K of an output K); DataError for another kind of output."""
    dims = _output_dims(graph)
    if len(dims) != 1:
        raise DataError(f"{what} labels each image with one class, but this network's output is "
                        f"{_shape(dims)} per image; a network that labels every pixel trains on a "
                        "segmentation folder (images/ and masks/)")
    return dims[0]


def _shape(dims) -> str:
    return "×".join(map(str, dims))


def _listing(lines: list[str]) -> str:
    """The first LISTED lines, indented, and how many more there are."""
    more = [f"  … and {len(lines) - LISTED:,} more"] if len(lines) > LISTED else []
    return "\n".join([f"  {line}" for line in lines[:LISTED]] + more)


def _fail_if(problems: list[str], what: str) -> None:
    if problems:
        raise DataError(f"{len(problems):,} {what}:\n{_listing(problems)}")


def _check_within_memory(parts: dict[str, int], subject: str) -> None:
    try:
        check_fits(Needs(parts), hint="use less data or a smaller input", subject=subject)
    except ResourceError as e:
        raise DataError(str(e)) from None


# --- images ------------------------------------------------------------------------------------------

def _image_sizes(paths: list[Path]) -> list[tuple[int, int]]:
    """Each image's (width, height) from its header; unreadable images refused, all listed."""
    sizes, bad = [], []
    for path in paths:
        try:
            with open_image(path) as image:
                sizes.append(image.size)
        except UnreadableImage as e:
            bad.append(f"{path}: {e}")
    _fail_if(bad, "image(s) cannot be read (fix or remove them)")
    return sizes


def _entries(folder: Path) -> list[Path]:
    """The visible entries of a folder, by name."""
    try:
        return sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    except OSError as e:
        raise DataError(f"cannot read folder '{folder}': {e.strerror or e}") from None


def _image_files(folder: Path) -> list[Path]:
    return [p for p in _entries(folder) if p.suffix.lower() in IMAGE_SUFFIXES and not p.is_dir()]


def _subfolders(folder: Path) -> list[Path]:
    return [p for p in _entries(folder) if p.is_dir()]


def _class_folders(root: Path) -> tuple[list[str], list[Path], np.ndarray]:
    """(class names, image paths, labels) of an image folder: one subfolder of images per class."""
    folders = _subfolders(root)
    if not folders:
        if _image_files(root):
            raise DataError(f"'{root}' holds images but no class folders: put each class's images in a "
                            f"subfolder named after the class ({root}/<class>/*.png)")
        raise DataError(f"'{root}' holds no images: expected one subfolder of images per class "
                        f"({IMAGE_KINDS})")
    files = [_image_files(folder) for folder in folders]
    _fail_if([str(folder) for folder, images in zip(folders, files) if not images],
             f"class folder(s) in '{root}' hold no images ({IMAGE_KINDS})")
    paths = [path for images in files for path in images]
    labels = np.repeat(np.arange(len(folders), dtype=np.int64), [len(images) for images in files])
    return [folder.name for folder in folders], paths, labels


def _image_folder(root: Path, graph: Graph, classes: list[str] | None = None) -> tuple[_Images, list[str]]:
    """An image folder's samples and class names; `classes`: those the training folder has (for val/)."""
    what = f"the image folder '{root}'"
    _image_input(graph, what)
    k = _class_count(graph, what)
    names, paths, labels = _class_folders(root)
    if classes is not None and names != classes:
        only_train, only_val = sorted(set(classes) - set(names)), sorted(set(names) - set(classes))
        raise DataError(f"'{root.parent}/train' and '{root}' must have the same class folders"
                        + (f"; only in train/: {', '.join(only_train)}" if only_train else "")
                        + (f"; only in val/: {', '.join(only_val)}" if only_val else ""))
    if len(names) > k:
        raise DataError(f"'{root}' has {len(names)} class folders but this network's output has {k} classes")
    if len(names) < 2 and classes is None:
        raise DataError(f"'{root}' has one class folder ('{names[0]}'); a classifier needs at least 2 (for "
                        "segmentation, give images/ and masks/ folders)")
    _image_sizes(paths)
    return _Images(paths, labels, graph), names


def _by_stem(files: list[Path], folder: Path) -> dict[str, Path]:
    by_stem: dict[str, Path] = {}
    for path in files:
        if path.stem in by_stem:
            raise DataError(f"two files in '{folder}' are named '{path.stem}' ({by_stem[path.stem].name}, "
                            f"{path.name}); images and masks are matched by name")
        by_stem[path.stem] = path
    return by_stem


def _segmentation_folder(root: Path, graph: Graph) -> _Images:
    """The images of root/images with their masks in root/masks (same file name, PNG of mode L or P
    whose pixel values are class indices)."""
    from PIL import Image

    type_ = _image_input(graph, f"the segmentation folder '{root}'")
    dims = _output_dims(graph)
    if len(dims) != 3:
        raise DataError(f"'{root}' is a segmentation folder (images/ and masks/), but this network's output is "
                        f"{_shape(dims)} per image, not a map of class scores (K×H×W)")
    k, out_h, out_w = dims
    if out_h > type_.h or out_w > type_.w:
        raise DataError(f"this network's output ({out_h}×{out_w}) is larger than its input ({type_.h}×{type_.w}); "
                        "masks are cropped to the output, never enlarged")
    images = _by_stem(_image_files(root / "images"), root / "images")
    masks = _by_stem(_image_files(root / "masks"), root / "masks")
    if not images:
        raise DataError(f"'{root / 'images'}' holds no images ({IMAGE_KINDS})")
    unmatched = ([f"{images[s]}: no mask {root / 'masks'}/{s}.png" for s in sorted(images.keys() - masks.keys())]
                 + [f"{masks[s]}: no image of that name in {root / 'images'}" for s in sorted(masks.keys() - images.keys())])
    _fail_if(unmatched, "image(s) and mask(s) without their other half")
    stems = sorted(images)
    sizes = _image_sizes([images[s] for s in stems])
    _check_within_memory({"the masks": len(stems) * out_h * out_w}, f"the masks of '{root}'")
    targets = np.empty((len(stems), out_h, out_w), np.uint8)
    top, left = (type_.h - out_h) // 2, (type_.w - out_w) // 2
    bad = []
    for i, (stem, size) in enumerate(zip(stems, sizes)):
        path = masks[stem]
        try:
            with open_image(path) as mask:
                if mask.format != "PNG" or mask.mode not in ("L", "P"):
                    bad.append(f"{path}: a {mask.format} image of mode {mask.mode}; masks are PNG images of mode "
                               "L or P (pixel value = class index)")
                elif mask.size != size:
                    bad.append(f"{path}: {mask.width}×{mask.height}, but its image is {size[0]}×{size[1]}")
                elif (top_class := int(np.asarray(mask).max())) >= k:
                    bad.append(f"{path}: class values up to {top_class}, but this network's output has {k} "
                               f"classes (0–{k - 1})")
                else:  # the image's geometry (fit), with nearest so that class indices stay indices
                    fitted = np.asarray(fit(mask, type_.w, type_.h, Image.NEAREST))
                    targets[i] = fitted[top:top + out_h, left:left + out_w]
        except UnreadableImage as e:
            bad.append(f"{path}: {e}")
    _fail_if(bad, "mask(s) cannot be used")
    return _Images([images[s] for s in stems], targets, graph)


def _open_folder(root: Path, graph: Graph):
    """(samples, classes, task, samples of the val folder or None) of a folder of one of the forms."""
    val = root / "val"
    if (root / "images").is_dir() and (root / "masks").is_dir():
        samples, val_samples = _segmentation_folder(root, graph), None
        if val.is_dir():
            if not ((val / "images").is_dir() and (val / "masks").is_dir()):
                raise DataError(f"'{val}' must hold images/ and masks/ folders, as '{root}' does")
            val_samples = _segmentation_folder(val, graph)
        return samples, [str(i) for i in range(_output_dims(graph)[0])], "segment", val_samples
    if (root / "train").is_dir() or val.is_dir():
        if not ((root / "train").is_dir() and val.is_dir()):
            there, missing = ("train", "val") if (root / "train").is_dir() else ("val", "train")
            raise DataError(f"'{root}' has a {there}/ folder but no {missing}/: give both (each with a subfolder "
                            "per class) or the class folders alone")
        samples, classes = _image_folder(root / "train", graph)
        return samples, classes, "classify", _image_folder(val, graph, classes)[0]
    samples, classes = _image_folder(root, graph)
    return samples, classes, "classify", None


# --- arrays ------------------------------------------------------------------------------------------

def _check_arrays(x, y, graph: Graph, where: str) -> tuple[_Arrays, list[str], str]:
    """(samples, classes, task) of arrays x (the network's inputs) and y (labels, masks or targets)."""
    if not isinstance(x, np.ndarray) or not isinstance(y, np.ndarray):
        raise DataError(f"{where}: x and y must be numpy arrays, got {type(x).__name__} and {type(y).__name__}")
    dims, out = _input_type(graph).dims, _output_dims(graph)
    if x.shape[1:] != dims or x.ndim != 1 + len(dims):
        raise DataError(f"{where}: x has shape {_shape(x.shape) or 'scalar'}; expected {_shape(('N',) + dims)} "
                        "(N samples of the network's input)")
    if x.dtype.kind != "f":
        raise DataError(f"{where}: x has dtype {x.dtype}; expected floating point values, the network's input "
                        "as it is (normalized, as for `netspec run`)")
    n = len(x)
    if y.ndim == 0 or len(y) != n:
        raise DataError(f"{where}: x has {n:,} samples but y has {len(y) if y.ndim else 'none (a scalar)'}")
    x = np.ascontiguousarray(x, np.float32)
    if not np.isfinite(x).all():
        raise DataError(f"{where}: x contains {int((~np.isfinite(x)).sum()):,} NaN or Inf value(s)")
    k = out[0]
    # integer class indices: one per sample for a classifier (output K), one per pixel for a K×H×W output
    label_shape = {1: (n,), 3: (n,) + out[1:]}.get(len(out))
    if y.dtype.kind in "iu" and y.shape == label_shape:
        outside = (y < 0) | (y >= k)
        if outside.any():
            raise DataError(f"{where}: {int(outside.sum()):,} label(s) of y outside [0, {k}) (the network's output "
                            f"has {k} classes), e.g. {int(y[outside].flat[0])} at sample "
                            f"{int(np.argwhere(outside)[0][0])}")
        return _Arrays(x, y.astype(np.int64)), [str(i) for i in range(k)], "classify" if len(out) == 1 else "segment"
    if y.dtype.kind == "f" and y.shape == (n,) + out:
        y = np.ascontiguousarray(y, np.float32)
        if not np.isfinite(y).all():
            raise DataError(f"{where}: y contains {int((~np.isfinite(y)).sum()):,} NaN or Inf value(s)")
        return _Arrays(x, y), [], "regress"
    forms = ([f"{_shape(label_shape)} integer class indices"] if label_shape else []) \
        + [f"{_shape((n,) + out)} floats (regression)"]
    raise DataError(f"{where}: y has shape {_shape(y.shape)} and dtype {y.dtype}; for this network's "
                    f"output ({_shape(out)}) y must be {' or '.join(forms)}")


def _npz_member_bytes(archive, key: str) -> tuple[int, int]:
    """(bytes of array `key` of an open .npz, bytes of its float32 copy) from its header alone."""
    with archive.zip.open(f"{key}.npy") as f:
        major, _ = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(f)
    count = math.prod(shape)
    return count * dtype.itemsize, 0 if dtype == np.float32 else count * 4


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    hint = "write one with numpy.savez(path, x=inputs, y=labels)"
    try:
        with open_regular(path) as f:
            if f.read(4) != b"PK\x03\x04":
                raise DataError(f"'{path}' is not an .npz archive; {hint}")
            f.seek(0)
            with np.load(f, allow_pickle=False) as archive:
                missing = [key for key in ("x", "y") if key not in archive.files]
                if missing:
                    raise DataError(f"'{path}' has no {' or '.join(missing)} (it holds "
                                    f"{', '.join(archive.files) or 'nothing'}); {hint}")
                (x_bytes, x_copy), (y_bytes, y_copy) = (_npz_member_bytes(archive, key) for key in ("x", "y"))
                _check_within_memory({"x": x_bytes, "x as float32": x_copy, "y": y_bytes, "y converted": y_copy},
                                     f"'{path}'")
                return archive["x"], archive["y"]
    except FileReadError as e:
        raise DataError(f"cannot read '{path}': {e.strerror}") from None
    except DataError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
        raise DataError(f"cannot read '{path}' as an .npz archive: {e}") from None


# --- digits ------------------------------------------------------------------------------------------

def _digits(graph: Graph) -> _Arrays:
    """scikit-learn's 8×8 digit scans, resized to the input (bilinear), kept in [0, 1] on one channel."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DataError("the digits demo needs scikit-learn, which is not installed here: "
                        ".venv/bin/pip install scikit-learn") from None
    from PIL import Image

    type_ = _image_input(graph, "the digits demo")
    k = _class_count(graph, "the digits demo")
    if k < 10:
        raise DataError(f"the digits demo has 10 classes (0–9) but this network's output has {k}; give it 10 "
                        "(e.g. --set num_classes=10)")
    digits = load_digits()
    _check_within_memory({"the digits": len(digits.images) * type_.h * type_.w * 4}, "the digits demo")
    scans = digits.images.astype(np.float32) / 16.0  # (values 0..16)
    x = np.stack([np.asarray(Image.fromarray(scan).resize((type_.w, type_.h), Image.BILINEAR)) for scan in scans])
    return _Arrays(x[:, None], digits.target.astype(np.int64), graph)


# --- open_data ---------------------------------------------------------------------------------------

def _split(count: int, labels: np.ndarray | None, val_split: float) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, validation rows): round(val_split × count) of each class held out (of all the
    samples without labels), drawn from default_rng(0) so that every run holds out the same."""
    rng = np.random.default_rng(0)
    groups = [np.arange(count)] if labels is None else [np.flatnonzero(labels == c) for c in np.unique(labels)]
    val = np.sort(np.concatenate([rng.permutation(g)[:math.floor(val_split * len(g) + 0.5)] for g in groups]))
    train = np.setdiff1d(np.arange(count), val)
    per_class = "" if labels is None else f" ({round(val_split * 100, 2):g}% of each class)"
    if not len(val):
        raise DataError(f"val_split {val_split:g} of {count:,} samples{per_class} leaves the validation set empty; "
                        "raise it, or give 0 for no validation")
    if not len(train):
        raise DataError(f"val_split {val_split:g} of {count:,} samples{per_class} leaves the training set empty; "
                        "lower it")
    return train, val


def open_data(data, graph: Graph, *, val_split: float = 0.2) -> tuple[Dataset, Dataset | None]:
    """(training set, validation set) from `data`: "digits"; the path of an image folder (a subfolder
    of images per class; or train/ and val/, each one such folder); of a segmentation folder (images/
    and masks/, optionally val/images and val/masks); of an .npz file (x: N×C×H×W inputs, y: labels,
    masks or regression targets); or a tuple (x, y) of numpy arrays, checked as an .npz's.

    Everything is checked here, before any training: every image's header is read (unreadable ones
    are refused and listed), masks are decoded, labels checked against the network's classes. The
    validation set is None when val_split is 0 and there is no val folder. The split takes no seed:
    runs with different seeds hold out the same samples. DataError for anything wrong."""
    if isinstance(val_split, bool) or not isinstance(val_split, (int, float)) or not 0 <= val_split < 1:
        raise DataError(f"val_split is the fraction of the data held out for validation, in [0, 1); got {val_split!r}")
    val_samples = None
    if isinstance(data, (tuple, list)):
        if len(data) != 2:
            raise DataError(f"give the arrays as a pair (x, y); got {len(data)} item(s)")
        name = "arrays"
        samples, classes, task = _check_arrays(*data, graph, "the arrays (x, y)")
    elif isinstance(data, str) and data == "digits":
        name, samples, classes, task = data, _digits(graph), [str(d) for d in range(10)], "classify"
    elif isinstance(data, (str, Path)):
        name, path = str(data), Path(data)
        if path.is_dir():
            samples, classes, task, val_samples = _open_folder(path, graph)
        elif path.suffix.lower() == ".npz" and path.exists():
            samples, classes, task = _check_arrays(*_read_npz(path), graph, f"'{path}'")
        elif path.exists():
            raise DataError(f"'{path}' is neither a folder nor an .npz file; give {SOURCES}")
        else:
            close = difflib.get_close_matches(name, ["digits"], n=1)
            raise DataError(f"no such file or folder: '{path}'" + (f" (did you mean '{close[0]}'?)" if close else "")
                            + f"; give {SOURCES}")
    else:
        raise DataError(f"cannot train on a {type(data).__name__}; give {SOURCES}, or a tuple (x, y) of arrays")
    count = len(samples)
    if count < 2:
        raise DataError(f"'{name}' holds {count} sample{'' if count == 1 else 's'}; training needs at least 2")

    def dataset(of, rows: np.ndarray) -> Dataset:
        return Dataset(name, len(rows), classes, task, of, rows)

    if val_samples is not None:
        return dataset(samples, np.arange(count)), dataset(val_samples, np.arange(len(val_samples)))
    if val_split == 0:
        return dataset(samples, np.arange(count)), None
    train, val = _split(count, samples.targets if task == "classify" else None, val_split)
    return dataset(samples, train), dataset(samples, val)


# --- batches -----------------------------------------------------------------------------------------

class _Prefetch:
    """A thread that prepares `prepare(job)` for each job, in order, at most AHEAD jobs ahead of the
    consumer; an exception there is handed over in the job's place and re-raised by the consumer."""

    _END = object()

    def __init__(self, prepare, jobs):
        # the queue holds AHEAD - 1 results; the thread holds one more, finished, while it waits to put it
        self._results: queue.Queue = queue.Queue(maxsize=AHEAD - 1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, args=(prepare, jobs), name="netspec-batches", daemon=True)
        self._thread.start()

    def _work(self, prepare, jobs) -> None:
        for job in jobs:
            if self._stop.is_set():
                return
            try:
                result = (prepare(job), None)
            except BaseException as e:  # handed to the consumer, raised there
                result = (None, e)
            if self._stop.is_set():
                return
            self._results.put(result)  # (close() empties the queue, so this cannot block it)
            if result[1] is not None:
                return
        if not self._stop.is_set():
            self._results.put((self._END, None))

    def __iter__(self):
        while True:
            result, error = self._results.get()
            if error is not None:
                raise error
            if result is self._END:
                return
            yield result

    def close(self) -> None:
        """Stop the thread: it ends once the job in hand (if any) is done."""
        self._stop.set()
        # The thread puts at most one more result after seeing no stop, into the room this leaves.
        with contextlib.suppress(queue.Empty):
            while True:
                self._results.get_nowait()
        self._thread.join()


class Batches:
    """One epoch's batches (x, y) of a dataset, in a fixed order; len() is the number of batches.
    With `background`, the batches are prepared in a thread, AHEAD at most; close() it (or use it as a
    context manager) to stop the thread when leaving an epoch early. Iterating again repeats the epoch."""

    def __init__(self, dataset: Dataset, order: np.ndarray, batch: int, drop_last: bool, background: bool):
        self.dataset, self.background = dataset, background
        ends = range(batch, len(order) + batch, batch)
        self._jobs = [order[end - batch:end] for end in ends if not (drop_last and end > len(order))]
        self._prefetch: _Prefetch | None = None

    def __len__(self) -> int:
        return len(self._jobs)

    def __iter__(self):
        if not self.background:
            for rows in self._jobs:
                yield self.dataset.take(rows)
            return
        self.close()  # (an earlier pass's thread)
        prefetch = self._prefetch = _Prefetch(self.dataset.take, self._jobs)
        try:
            yield from prefetch
        finally:
            prefetch.close()

    def close(self) -> None:
        if self._prefetch is not None:
            self._prefetch.close()
            self._prefetch = None

    def __enter__(self) -> "Batches":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def batches(dataset: Dataset, batch: int, *, seed: int, epoch: int, shuffle: bool = True, drop_last: bool = False,
            background: bool | None = None) -> Batches:
    """The batches of one epoch. shuffle: in the order of a permutation drawn from
    default_rng([seed, epoch]), so that epoch k has the same order in a resumed run. drop_last: leave
    out a final partial batch (only when there is a full one). background: prepare batches in a thread
    while the network computes (see Batches); None: only while there are files to decode. Samples in
    memory (arrays, the digits, images once cached) are gathered in the loop itself: on 2 cores, with
    the network's kernels on both, a thread there made an epoch 3–5% slower (tools/bench_loader.py)."""
    if background is None:
        background = dataset.reads_files
    if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
        raise ValueError(f"batch must be a positive integer, got {batch!r}")
    order = np.random.default_rng([seed, epoch]).permutation(dataset.count) if shuffle else np.arange(dataset.count)
    return Batches(dataset, order, int(batch), drop_last and dataset.count >= batch, background)
