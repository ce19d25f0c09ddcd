"""The training data (netspec/training/data.py): images come out as the network's input (resized,
scaled and normalized as the spec declares), the digits demo, the fixed validation split, the
order of an epoch's batches, the background loader (same batches, errors surfaced, stopped by
close()), and every kind of bad data refused by open_data with a message that says what and where."""
from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import netspec
from netspec.training import data as data_module
from netspec.training.data import DataError, Dataset, batches, open_data

from test_hardening import LENET, _png_header_only

MEAN, STD = [0.5, 0.25, 0.125], [0.5, 0.25, 2.0]
CLASSIFIER = f"""
netspec: 1
name: tiny
params: {{classes: 3, channels: 3}}
input: {{shape: [$channels, 8, 8], mean: {MEAN}, std: {STD}}}
layers:
  - {{op: global_avgpool}}
  - {{op: flatten}}
  - {{op: linear, out: $classes}}
"""
GREY_CLASSIFIER = """
netspec: 1
name: grey
input: {shape: [1, 8, 8]}
layers:
  - {op: global_avgpool}
  - {op: flatten}
  - {op: linear, out: 3}
"""
# valid 3×3 convolution: a 2-class map of 6×6 on an 8×8 input (masks are cropped to it)
SEGMENTER = """
netspec: 1
name: seg
input: {shape: [1, 8, 8]}
layers:
  - {op: conv2d, out: 2, kernel: 3}
"""


@pytest.fixture
def classifier(load_spec):
    return load_spec(CLASSIFIER)


def write_image(path: Path, pixels: np.ndarray) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return pixels


def random_pixels(rng, height=8, width=8, channels=3) -> np.ndarray:
    shape = (height, width, channels) if channels > 1 else (height, width)
    return rng.integers(0, 256, shape, dtype=np.uint8)


def image_folder(root: Path, per_class=(3, 2), seed=0) -> dict[Path, np.ndarray]:
    """root/<c0, c1, …>/<i>.png of random 8×8 RGB pixels; {path: pixels}."""
    rng = np.random.default_rng(seed)
    return {path: write_image(path, random_pixels(rng))
            for c, n in enumerate(per_class) for path in (root / f"c{c}" / f"{i}.png" for i in range(n))}


def arrays(n=40, classes=(30, 10), shape=(3, 8, 8)):
    """x whose first value is the sample's index (to follow samples through batches), y its class."""
    x = np.zeros((n,) + shape, np.float32)
    x[:, 0, 0, 0] = np.arange(n)
    return x, np.repeat(np.arange(len(classes)), classes).astype(np.int64)


def error(data, graph, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        open_data(data, graph, **kwargs)
    return str(info.value)


# ---- images as the network's input ------------------------------------------------------------------

def test_image_pixels_come_out_scaled_and_normalized_with_the_spec_mean_and_std(workdir, classifier):
    pixels = image_folder(Path("data"))
    train, val = open_data("data", classifier, val_split=0)
    assert val is None and train.count == 5 and train.classes == ["c0", "c1"] and train.task == "classify"
    x, y = train.take(np.arange(5))
    assert x.dtype == np.float32 and x.shape == (5, 3, 8, 8) and x.flags.c_contiguous
    assert y.dtype == np.int64 and y.tolist() == [0, 0, 0, 1, 1]
    mean, std = (np.array(v, np.float32)[:, None, None] for v in (MEAN, STD))
    for i, p in enumerate(sorted(pixels)):  # the files in the order of their class, then name
        expected = (pixels[p].transpose(2, 0, 1) / np.float32(255) - mean) / std
        np.testing.assert_allclose(x[i], expected, rtol=0, atol=1e-6)


def test_images_of_other_sizes_and_modes_are_resized_and_converted_like_netspec_run(workdir, load_spec):
    grey = load_spec(GREY_CLASSIFIER)
    colour = np.array([200, 100, 50], np.uint8)
    write_image(Path("data/a/wide.png"), np.broadcast_to(colour, (12, 30, 3)).copy())  # fit: resize, crop
    write_image(Path("data/b/small.png"), np.full((4, 4), 64, np.uint8))  # a grey image, upscaled
    x, _ = open_data("data", grey, val_split=0)[0].take([0, 1])
    assert x.shape == (2, 1, 8, 8)
    luma = np.asarray(Image.fromarray(colour[None, None]).convert("L"))[0, 0]  # PIL's RGB → L
    np.testing.assert_allclose(x[0], luma / 255, atol=1e-6)
    np.testing.assert_allclose(x[1], 64 / 255, atol=1e-6)
    assert np.array_equal(x[0], netspec.inputs.read_image("data/a/wide.png", grey)[0])


def test_decoded_images_are_kept_so_later_epochs_read_no_file(workdir, classifier, monkeypatch):
    paths = image_folder(Path("data"))
    train, _ = open_data("data", classifier, val_split=0)
    first, _ = train.take(np.arange(5))
    for path in paths:
        path.unlink()
    assert np.array_equal(train.take(np.arange(5))[0], first)
    # over the cache budget, every take decodes again: the missing file is named
    monkeypatch.setattr(data_module, "CACHE_BYTES", 0)
    image_folder(Path("data2"))
    uncached, _ = open_data("data2", classifier, val_split=0)
    uncached.take([0])
    Path("data2/c0/0.png").unlink()
    with pytest.raises(DataError, match="data2/c0/0.png"):
        uncached.take([0])


def test_a_train_and_val_folder_pair_gives_both_sets_and_no_split(workdir, classifier):
    image_folder(Path("data/train"), (3, 2))
    image_folder(Path("data/val"), (1, 1), seed=1)
    train, val = open_data("data", classifier, val_split=0.5)
    assert (train.count, val.count) == (5, 2) and train.classes == val.classes == ["c0", "c1"]
    assert val.take([0, 1])[1].tolist() == [0, 1]


def test_segmentation_masks_share_the_image_geometry_and_are_cropped_to_the_output(workdir, load_spec):
    graph = load_spec(SEGMENTER)
    rng = np.random.default_rng(0)
    exact = write_image(Path("data/masks/a.png"), rng.integers(0, 2, (8, 8), dtype=np.uint8))
    write_image(Path("data/images/a.png"), random_pixels(rng, channels=1))
    big = write_image(Path("data/masks/b.png"), rng.integers(0, 2, (16, 16), dtype=np.uint8))
    write_image(Path("data/images/b.jpg"), random_pixels(rng, 16, 16, channels=1))
    write_image(Path("data/val/masks/c.png"), exact)
    write_image(Path("data/val/images/c.png"), random_pixels(rng, channels=1))
    train, val = open_data("data", graph)
    assert train.task == "segment" and train.classes == ["0", "1"] and (train.count, val.count) == (2, 1)
    x, y = train.take([0, 1])
    assert x.shape == (2, 1, 8, 8) and y.shape == (2, 6, 6) and y.dtype == np.int64
    assert np.array_equal(y[0], exact[1:7, 1:7])  # the centre 6×6 of the 8×8
    nearest = np.asarray(Image.fromarray(big).resize((8, 8), Image.NEAREST))
    assert np.array_equal(y[1], nearest[1:7, 1:7])


def test_npz_and_arrays_are_taken_as_they_are(workdir, classifier, load_spec):
    x, y = arrays()
    np.savez("d.npz", x=x.astype(np.float64), y=y.astype(np.int32))
    train, _ = open_data("d.npz", classifier, val_split=0)
    got_x, got_y = train.take([3, 1])
    assert got_x.dtype == np.float32 and np.array_equal(got_x, x[[3, 1]]) and got_y.dtype == np.int64
    assert train.classes == ["0", "1", "2"] and train.name == "d.npz"
    targets = np.random.default_rng(0).standard_normal((40, 3)).astype(np.float32)
    regress, _ = open_data((x, targets), classifier, val_split=0)
    assert regress.task == "regress" and regress.classes == [] and regress.name == "arrays"
    assert np.array_equal(regress.take([5])[1], targets[[5]])
    masks = np.zeros((40, 6, 6), np.uint8)
    segment, _ = open_data((x[:, :1], masks), load_spec(SEGMENTER, name="seg.yaml"), val_split=0)
    assert segment.task == "segment" and segment.take([0])[1].shape == (1, 6, 6)


# ---- the digits demo -------------------------------------------------------------------------------

def test_digits_shapes_count_classes_and_a_stratified_split(load_spec):
    pytest.importorskip("sklearn")
    from sklearn.datasets import load_digits
    train, val = open_data("digits", netspec.load(LENET))
    assert train.classes == [str(d) for d in range(10)] and train.task == "classify"
    assert train.count + val.count == 1797 and 355 <= val.count <= 365
    per_class = np.bincount(load_digits().target)
    held_out = np.bincount(val.take(np.arange(val.count))[1], minlength=10)
    assert held_out.tolist() == [int(np.floor(0.2 * n + 0.5)) for n in per_class]
    x, y = train.take(np.arange(4))
    assert x.shape == (4, 1, 32, 32) and x.dtype == np.float32 and y.dtype == np.int64
    assert x.min() >= 0 and x.max() <= 1 and x.max() > 0.9  # scaled from 0..16, no mean/std in LeNet-5
    colour = load_spec(CLASSIFIER, params={"classes": 10})
    x, _ = open_data("digits", colour)[0].take(np.arange(4))
    values = x * np.array(STD, np.float32)[:, None, None] + np.array(MEAN, np.float32)[:, None, None]
    assert x.shape == (4, 3, 8, 8) and np.allclose(values[:, 0], values[:, 1], atol=1e-6)
    assert np.allclose(values[:, 0], values[:, 2], atol=1e-6) and -1e-6 <= values.min() <= values.max() <= 1 + 1e-6


def test_digits_need_ten_classes(classifier):
    pytest.importorskip("sklearn")
    assert "the digits demo has 10 classes (0–9) but this network's output has 3" in error("digits", classifier)


def test_digits_without_scikit_learn_says_how_to_install_it(classifier, monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # (importing it raises ImportError)
    assert "pip install scikit-learn" in error("digits", classifier)


# ---- the validation split and the order of batches -------------------------------------------------

def test_the_split_is_stratified_and_fixed(classifier):
    """The held-out samples are fixed (no seed to give: runs of any seed are compared on the same ones)."""
    x, y = arrays()
    train, val = open_data((x, y), classifier, val_split=0.25)
    assert np.bincount(val.take(np.arange(val.count))[1]).tolist() == [8, 3]  # 7.5 and 2.5 rounded half up
    np.random.seed(123)  # (numpy's global state plays no part)
    other_train, other_val = open_data((x, y), classifier, val_split=0.25)
    assert np.array_equal(other_val.rows, val.rows) and np.array_equal(other_train.rows, train.rows)
    assert set(train.rows) | set(val.rows) == set(range(40)) and not set(train.rows) & set(val.rows)


def order(dataset: Dataset, **kwargs) -> list[int]:
    """The samples of an epoch in the order its batches give them (x's first value is the index)."""
    return [int(v) for x, _ in batches(dataset, 4, **kwargs) for v in x[:, 0, 0, 0]]


def test_shuffle_order_depends_on_seed_and_epoch_and_repeats_for_the_same_pair(classifier):
    dataset, _ = open_data(arrays(), classifier, val_split=0)
    first = order(dataset, seed=0, epoch=0)
    assert first == np.random.default_rng([0, 0]).permutation(40).tolist()
    assert order(dataset, seed=0, epoch=0) == first
    assert order(dataset, seed=0, epoch=1) != first and order(dataset, seed=1, epoch=0) != first
    assert sorted(order(dataset, seed=0, epoch=1)) == list(range(40))
    assert order(dataset, seed=3, epoch=2, shuffle=False) == list(range(40))


def test_drop_last_leaves_out_a_final_partial_batch_only_when_there_is_a_full_one(classifier):
    dataset, _ = open_data(arrays(10, (5, 5)), classifier, val_split=0)
    kept = batches(dataset, 4, seed=0, epoch=0)
    assert len(kept) == 3 and [len(y) for _, y in kept] == [4, 4, 2]
    dropped = batches(dataset, 4, seed=0, epoch=0, drop_last=True)
    assert len(dropped) == 2 and [len(y) for _, y in dropped] == [4, 4]
    assert [len(y) for _, y in batches(dataset, 16, seed=0, epoch=0, drop_last=True)] == [10]
    with pytest.raises(ValueError, match="batch must be a positive integer"):
        batches(dataset, 0, seed=0, epoch=0)


# ---- the background loader -------------------------------------------------------------------------

def test_background_and_foreground_loaders_give_identical_batches(workdir, classifier):
    image_folder(Path("data"), (7, 6))
    train, val = open_data("data", classifier, val_split=0.3)
    for background in (True, False):
        got = list(batches(train, 3, seed=5, epoch=2, background=background))
        if background:
            expected = got
        else:
            assert len(got) == len(expected) == 3
            for (x, y), (ex, ey) in zip(got, expected):
                assert np.array_equal(x, ex) and np.array_equal(y, ey)


class CountingTake:
    """A dataset's take() that counts its calls, can be slow, and fails at a given call."""

    def __init__(self, dataset: Dataset, seconds=0.0, fail_at=None):
        self.dataset, self.seconds, self.fail_at, self.calls = dataset, seconds, fail_at, 0
        self.take = dataset.take

    def __call__(self, indices):
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError(f"take number {self.calls} failed")
        time.sleep(self.seconds)
        return self.take(indices)


def test_an_exception_in_take_surfaces_at_the_batch_where_it_happened(classifier, monkeypatch):
    dataset, _ = open_data(arrays(), classifier, val_split=0)
    monkeypatch.setattr(dataset, "take", CountingTake(dataset, fail_at=3))
    threads = threading.active_count()
    got = []
    with pytest.raises(RuntimeError, match="take number 3 failed"):
        for x, _ in batches(dataset, 4, seed=0, epoch=0, background=True):
            got.append(x)
    assert len(got) == 2 and threading.active_count() == threads


def test_a_truncated_image_found_while_decoding_names_the_file(workdir, classifier):
    image_folder(Path("data"), (2, 2))
    whole = Path("data/c1/0.png").read_bytes()
    Path("data/c1/0.png").write_bytes(whole[:len(whole) // 2])  # (its header still reads)
    train, _ = open_data("data", classifier, val_split=0)
    for background in (True, False):
        got = []
        with pytest.raises(DataError, match="cannot decode image 'data/c1/0.png'"):
            for x, _ in batches(train, 1, seed=0, epoch=0, shuffle=False, background=background):
                got.append(x)
        assert len(got) == 2


def test_the_thread_prepares_at_most_two_batches_ahead(classifier, monkeypatch):
    dataset, _ = open_data(arrays(), classifier, val_split=0)
    take = CountingTake(dataset)
    monkeypatch.setattr(dataset, "take", take)
    with batches(dataset, 4, seed=0, epoch=0, background=True) as loader:
        iterator = iter(loader)  # (kept: an iterator dropped stops its thread)
        next(iterator)
        time.sleep(0.2)
        assert take.calls == 3  # the batch handed over and two ahead


def test_a_thread_by_default_only_while_files_remain_to_decode(workdir, classifier):
    in_memory, _ = open_data(arrays(), classifier, val_split=0)
    assert not in_memory.reads_files and not batches(in_memory, 4, seed=0, epoch=0).background
    image_folder(Path("data"), (3, 3))
    images, _ = open_data("data", classifier, val_split=0)
    assert images.reads_files and batches(images, 2, seed=0, epoch=0).background
    for _ in batches(images, 2, seed=0, epoch=0):  # the first epoch decodes (and caches) every image
        pass
    assert not images.reads_files and not batches(images, 2, seed=0, epoch=1).background


def test_close_mid_epoch_stops_the_thread_promptly(classifier, monkeypatch):
    dataset, _ = open_data(arrays(400, (200, 200)), classifier, val_split=0)
    take = CountingTake(dataset, seconds=0.02)
    monkeypatch.setattr(dataset, "take", take)
    threads = threading.active_count()
    loader = batches(dataset, 4, seed=0, epoch=0, background=True)
    iterator = iter(loader)
    next(iterator)
    assert threading.active_count() == threads + 1
    started = time.perf_counter()
    loader.close()
    assert time.perf_counter() - started < 1  # not the 2 s the remaining 99 batches would take
    assert threading.active_count() == threads and take.calls <= 4
    with batches(dataset, 4, seed=0, epoch=1, background=True) as loader:  # the context manager closes it too
        next(iter(loader))
    assert threading.active_count() == threads
    for _ in batches(dataset, 4, seed=0, epoch=2, background=True):  # and leaving a loop early
        break
    assert threading.active_count() == threads


# ---- what open_data refuses ------------------------------------------------------------------------

def test_paths_that_are_not_data_and_unknown_words(workdir, classifier):
    message = error("digitz", classifier)
    assert "no such file or folder: 'digitz' (did you mean 'digits'?)" in message and ".npz file" in message
    assert "no such file or folder: 'nowhere/data'" in error("nowhere/data", classifier)
    Path("notes.txt").write_text("hi")
    assert "'notes.txt' is neither a folder nor an .npz file; give 'digits'" in error("notes.txt", classifier)
    assert "cannot train on a int" in error(3, classifier)
    assert "give the arrays as a pair (x, y); got 3" in error((1, 2, 3), classifier)


def test_folders_without_images(workdir, classifier):
    Path("empty").mkdir()
    assert "'empty' holds no images: expected one subfolder of images per class" in error("empty", classifier)
    write_image(Path("loose/a.png"), random_pixels(np.random.default_rng(0)))
    assert "'loose' holds images but no class folders" in error("loose", classifier)
    image_folder(Path("data"), (2, 2))
    Path("data/c2").mkdir()
    (Path("data/c3") / "notes.txt").parent.mkdir()
    Path("data/c3/notes.txt").write_text("not an image")
    message = error("data", classifier)
    assert "2 class folder(s) in 'data' hold no images" in message and "data/c2" in message and "data/c3" in message


def test_one_class_folder_and_too_few_samples(workdir, classifier, load_spec):
    image_folder(Path("one"), (3,))
    assert "'one' has one class folder ('c0'); a classifier needs at least 2" in error("one", classifier)
    write_image(Path("seg/images/a.png"), random_pixels(np.random.default_rng(0), channels=1))
    write_image(Path("seg/masks/a.png"), np.zeros((8, 8), np.uint8))
    assert "'seg' holds 1 sample; training needs at least 2" in error("seg", load_spec(SEGMENTER, name="s.yaml"))
    x, y = arrays(1, (1,))
    assert "'arrays' holds 1 sample" in error((x, y), classifier)


def test_unreadable_images_are_refused_and_listed(workdir, classifier):
    image_folder(Path("data"), (2, 2))
    Path("data/c0/text.png").write_text("not a picture")
    Path("data/c1/empty.jpg").write_bytes(b"")
    Path("data/c1/huge.png").write_bytes(_png_header_only(9000, 9000))
    Path("data/c1/.hidden.png").write_text("ignored: hidden")
    Path("data/c1/notes.txt").write_text("ignored: not an image suffix")
    message = error("data", classifier)
    assert message.startswith("3 image(s) cannot be read (fix or remove them):")
    assert "data/c0/text.png: not an image file (Pillow cannot identify its format)" in message and "data/c1/empty.jpg" in message
    assert "data/c1/huge.png: 9000×9000 pixels, over the limit of 67,108,864" in message
    for i in range(12):
        Path(f"data/c0/bad{i:02}.png").write_text("x")
    message = error("data", classifier)
    assert message.startswith("15 image(s) cannot be read") and "… and 5 more" in message


def test_class_folders_beyond_the_output_and_mismatched_train_val(workdir, classifier):
    image_folder(Path("four"), (1, 1, 1, 1))
    assert "'four' has 4 class folders but this network's output has 3 classes" in error("four", classifier)
    image_folder(Path("pair/train"), (1, 1))
    image_folder(Path("pair/val"), (1, 1, 1))
    message = error("pair", classifier)
    assert "'pair/train' and 'pair/val' must have the same class folders; only in val/: c2" in message
    image_folder(Path("half/train"), (1, 1))
    assert "'half' has a train/ folder but no val/" in error("half", classifier)


def test_labels_outside_the_classes(workdir, classifier, load_spec):
    x, y = arrays()
    y[7] = 3
    message = error((x, y), classifier)
    assert "1 label(s) of y outside [0, 3)" in message and "e.g. 3 at sample 7" in message
    np.savez("neg.npz", x=x, y=-y)
    assert "label(s) of y outside [0, 3)" in error("neg.npz", classifier)
    write_image(Path("seg/images/a.png"), random_pixels(np.random.default_rng(0), channels=1))
    write_image(Path("seg/masks/a.png"), np.full((8, 8), 2, np.uint8))
    write_image(Path("seg/images/b.png"), random_pixels(np.random.default_rng(1), channels=1))
    write_image(Path("seg/masks/b.png"), np.zeros((8, 8), np.uint8))
    message = error("seg", load_spec(SEGMENTER, name="s.yaml"))
    assert "1 mask(s) cannot be used" in message
    assert "seg/masks/a.png: class values up to 2, but this network's output has 2 classes (0–1)" in message


def test_segmentation_folders_with_unmatched_resized_or_wrong_masks(workdir, load_spec):
    graph = load_spec(SEGMENTER, name="s.yaml")
    rng = np.random.default_rng(0)
    for stem in ("a", "b", "c"):
        write_image(Path(f"seg/images/{stem}.png"), random_pixels(rng, channels=1))
    write_image(Path("seg/masks/a.png"), np.zeros((8, 8), np.uint8))
    write_image(Path("seg/masks/z.png"), np.zeros((8, 8), np.uint8))
    message = error("seg", graph)
    assert "3 image(s) and mask(s) without their other half" in message
    assert "seg/images/b.png: no mask" in message and "seg/masks/z.png: no image of that name" in message
    Path("seg/masks/z.png").unlink()
    write_image(Path("seg/masks/b.png"), np.zeros((9, 8), np.uint8))
    write_image(Path("seg/masks/c.jpg"), np.zeros((8, 8), np.uint8))
    message = error("seg", graph)
    assert "seg/masks/b.png: 8×9, but its image is 8×8" in message
    assert "seg/masks/c.jpg: a JPEG image of mode L; masks are PNG images of mode L or P" in message
    write_image(Path("seg/masks/b.jpg"), np.zeros((8, 8), np.uint8))
    assert "two files in 'seg/masks' are named 'b' (b.jpg, b.png)" in error("seg", graph)
    for stem in ("b", "c"):
        Path(f"seg/masks/{stem}.jpg").unlink()
        write_image(Path(f"seg/masks/{stem}.png"), np.zeros((8, 8), np.uint8))
    Path("seg/val/images").mkdir(parents=True)
    assert "'seg/val' must hold images/ and masks/ folders" in error("seg", graph)


def test_networks_that_do_not_fit_the_data(workdir, load_spec):
    segmenter = load_spec(SEGMENTER, name="s.yaml")
    rng = np.random.default_rng(0)
    for stem in ("a", "b"):
        write_image(Path(f"seg/images/{stem}.png"), random_pixels(rng, channels=1))
        write_image(Path(f"seg/masks/{stem}.png"), np.zeros((8, 8), np.uint8))
    classifier = load_spec(GREY_CLASSIFIER, name="g.yaml")
    assert "but this network's output is 3 per image, not a map of class scores" in error("seg", classifier)
    image_folder(Path("data"), (1, 1))
    assert "labels each image with one class, but this network's output is 2×6×6" in error("data", segmenter)
    upsampler = load_spec("name: up\ninput: {shape: [1, 8, 8]}\nlayers: [{op: conv_transpose2d, out: 2, kernel: 3}]\n",
                          name="u.yaml")
    assert "this network's output (10×10) is larger than its input (8×8)" in error("seg", upsampler)
    vector = load_spec("name: v\ninput: {shape: [5]}\nlayers: [{op: linear, out: 3}]\n", name="v.yaml")
    assert "gives images, but this network's input is 5; images need 1 or 3 channels" in error("data", vector)


def test_bad_npz_files(workdir, classifier):
    x, y = arrays()
    Path("junk.npz").write_text("not a zip")
    assert "'junk.npz' is not an .npz archive; write one with numpy.savez" in error("junk.npz", classifier)
    np.savez("nox.npz", inputs=x, y=y)
    assert "'nox.npz' has no x (it holds inputs, y)" in error("nox.npz", classifier)
    np.savez("shape.npz", x=x[:, :, :4], y=y)
    assert "x has shape 40×3×4×8; expected N×3×8×8" in error("shape.npz", classifier)
    np.savez("count.npz", x=x, y=y[:30])
    assert "x has 40 samples but y has 30" in error("count.npz", classifier)
    np.savez("shape_y.npz", x=x, y=y[:, None])
    assert ("y has shape 40×1 and dtype int64; for this network's output (3) y must be 40 integer class "
            "indices or 40×3 floats (regression)") in error("shape_y.npz", classifier)
    np.savez("bool_y.npz", x=x, y=y > 0)
    assert "y has shape 40 and dtype bool" in error("bool_y.npz", classifier)
    bad = x.copy()
    bad[3, 0, 0, 1], bad[5, 1, 2, 3] = np.nan, np.inf
    np.savez("nan.npz", x=bad, y=y)
    assert "'nan.npz': x contains 2 NaN or Inf value(s)" in error("nan.npz", classifier)
    np.savez("int_x.npz", x=x.astype(np.int32), y=y)
    assert "x has dtype int32; expected floating point" in error("int_x.npz", classifier)
    np.savez("obj.npz", x=np.array([None, 1], dtype=object), y=y)
    assert "cannot read 'obj.npz' as an .npz archive" in error("obj.npz", classifier)
    assert "x and y must be numpy arrays, got list and ndarray" in error(([1.0], y), classifier)


def test_val_split_out_of_range_or_leaving_a_set_empty(classifier):
    for bad in (-0.1, 1, 1.5, float("nan"), "0.2"):
        assert "val_split is the fraction of the data held out for validation, in [0, 1)" in \
            error(arrays(), classifier, val_split=bad)
    message = error(arrays(2, (1, 1)), classifier, val_split=0.2)
    assert "val_split 0.2 of 2 samples (20% of each class) leaves the validation set empty" in message
    message = error(arrays(3, (1, 1, 1)), classifier, val_split=0.6)
    assert "val_split 0.6 of 3 samples (60% of each class) leaves the training set empty" in message
