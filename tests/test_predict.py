"""`netspec predict` in one process: every kind of source, the output formats, the rows' values
against `Executable.run`, unreadable inputs in the errors file, resume, Ctrl-C, and the mistakes
refused before any work (exit status 1 for inputs, 2 for usage), with nothing of the user's lost."""
from __future__ import annotations

import csv
import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import netspec
from netspec.inputs import read_image

from conftest import TINY_SPEC

ROOT = Path(__file__).resolve().parent.parent

SPEC = TINY_SPEC

SEGMENTER = """
name: seg
input: {shape: [3, 12, 12]}
layers:
  - {op: conv2d, name: conv, out: 3, kernel: 3, padding: 1}
"""


def images(folder: Path, count: int, seed: int = 0, size=(20, 16)) -> list[Path]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"{i:03d}.png"
        Image.fromarray(rng.integers(0, 256, size + (3,), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def read_csv(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def softmax(z):
    p = np.exp(z - z.max(axis=-1, keepdims=True))
    return p / p.sum(axis=-1, keepdims=True)


def assert_clean_failure(result, code, *words):
    assert result.code == code, result
    assert "Traceback" not in result.err and "internal error" not in result.err, result.err
    for w in words:
        assert w in result.err, result.err


def test_folder_to_csv_rows_match_the_network_and_bad_files_are_listed(cli, write_spec, load_spec, workdir):
    write_spec(SPEC)
    good = images(workdir / "data" / "a", 5) + images(workdir / "data" / "b" / "deeper", 4, seed=1)
    (workdir / "data" / "a" / "corrupt.png").write_bytes(open(good[0], "rb").read()[:60])  # a truncated PNG
    junk = workdir / "data" / "junk"
    junk.mkdir()
    for i in range(3):
        (junk / f"notes{i}.txt").write_text("not an image")
    (workdir / "data" / ".hidden.png").write_bytes(b"skipped: hidden")
    (workdir / "labels.txt").write_text("\n".join(f"thing{i}" for i in range(7)) + "\n")
    r = cli("predict", "spec.yaml", "--input", "data", "-o", "out.csv", "--top", "3", "--labels", "labels.txt",
            "--batch", "4")
    assert r.code == 0, r.err
    assert "9 rows" in r.out and "4 inputs that could not be read" in r.out and "images/s" in r.out
    assert "netspec: predict: 0/13" in r.err  # the progress, from the start
    rows = read_csv(workdir / "out.csv")
    assert list(rows[0]) == ["path", "class", "score", "label", "class_2", "score_2", "label_2",
                             "class_3", "score_3", "label_3"]
    assert sorted(row["path"] for row in rows) == sorted(str(p.relative_to(workdir)) for p in good)
    errors = read_csv(workdir / "out.errors.csv")
    assert sorted(Path(e["path"]).name for e in errors) == ["corrupt.png", "notes0.txt", "notes1.txt", "notes2.txt"]
    assert all(e["reason"] for e in errors)
    # each row is the softmax of what Executable.run gives for the image read as `netspec run` reads it
    graph = load_spec(SPEC)
    exe = netspec.compile(graph)
    for row in rows:
        p = softmax(exe.run(read_image(row["path"], graph))["fc"][0].astype(np.float64))
        order = np.argsort(-p, kind="stable")[:3]
        assert [int(row["class"]), int(row["class_2"]), int(row["class_3"])] == list(order)
        np.testing.assert_allclose([float(row["score"]), float(row["score_2"]), float(row["score_3"])], p[order],
                                   rtol=1e-4)
        assert row["label"] == f"thing{order[0]}"


def test_array_sources_globs_and_lists(cli, write_spec, load_spec, workdir):
    write_spec(SPEC)
    x = np.random.default_rng(0).standard_normal((37, 3, 12, 12)).astype(np.float32)
    x[5, 0, 0, 0] = np.nan
    np.save(workdir / "x.npy", x)
    r = cli("predict", "spec.yaml", "--input", "x.npy", "-o", "x.jsonl", "--batch", "16")  # 37 = 16 + 16 + 5, padded
    assert r.code == 0, r.err
    rows = [json.loads(line) for line in (workdir / "x.jsonl").read_text().splitlines()]
    assert [row["path"] for row in rows] == [f"x.npy[{i}]" for i in range(37) if i != 5]
    assert read_csv(workdir / "x.errors.csv") == [{"path": "x.npy[5]", "reason": "contains NaN or Inf values"}]
    logits = netspec.compile(load_spec(SPEC)).run(np.delete(x, 5, axis=0))["fc"]
    assert [row["class"] for row in rows] == list(logits.argmax(axis=1))
    np.testing.assert_allclose([row["score"] for row in rows], softmax(logits.astype(np.float64)).max(axis=1),
                               rtol=1e-4)
    # batches of 4: 10 of them, run in groups (8, then 2) back to back, give the same rows in order
    assert cli("predict", "spec.yaml", "--input", "x.npy", "-o", "x4.jsonl", "--batch", "4").code == 0
    rows4 = [json.loads(line) for line in (workdir / "x4.jsonl").read_text().splitlines()]
    assert [(row["path"], row["class"]) for row in rows4] == [(row["path"], row["class"]) for row in rows]
    np.testing.assert_allclose([row["score"] for row in rows4], [row["score"] for row in rows], rtol=1e-5)
    assert read_csv(workdir / "x4.errors.csv") == [{"path": "x.npy[5]", "reason": "contains NaN or Inf values"}]

    np.savez(workdir / "x.npz", x=x[:3])
    assert cli("predict", "spec.yaml", "--input", "x.npz", "-o", "z.csv").code == 0
    assert [row["path"] for row in read_csv(workdir / "z.csv")] == ["x.npz[0]", "x.npz[1]", "x.npz[2]"]

    paths = images(workdir / "imgs", 3)
    (workdir / "imgs" / "skip.jpg").write_bytes(b"")
    assert cli("predict", "spec.yaml", "--input", "imgs/*.png", "-o", "g.csv").code == 0
    assert [row["path"] for row in read_csv(workdir / "g.csv")] == [f"imgs/{p.name}" for p in paths]
    (workdir / "imgs" / "list.txt").write_text("# two of them\n001.png\n\n002.png\n")
    assert cli("predict", "spec.yaml", "--input", "imgs/list.txt", "-o", "l.csv").code == 0
    assert [row["path"] for row in read_csv(workdir / "l.csv")] == ["imgs/001.png", "imgs/002.png"]


def test_parquet_has_the_same_rows(cli, write_spec, workdir):
    pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq
    write_spec(SPEC)
    images(workdir / "imgs", 6)
    assert cli("predict", "spec.yaml", "--input", "imgs", "-o", "p.csv", "--top", "2").code == 0
    assert cli("predict", "spec.yaml", "--input", "imgs", "-o", "p.parquet", "--top", "2").code == 0
    table = pq.read_table(workdir / "p.parquet").to_pylist()
    expected = [{k: (v if k == "path" else int(v) if k.startswith("class") else float(v)) for k, v in row.items()}
                for row in read_csv(workdir / "p.csv")]
    assert table == expected


def test_a_map_gives_mask_pngs_beside_out(cli, write_spec, load_spec, workdir):
    write_spec(SEGMENTER)
    x = np.random.default_rng(0).standard_normal((3, 3, 12, 12)).astype(np.float32)
    np.save(workdir / "x.npy", x)
    r = cli("predict", "spec.yaml", "--input", "x.npy", "-o", "seg.csv")
    assert r.code == 0, r.err
    rows = read_csv(workdir / "seg.csv")
    assert list(rows[0]) == ["path", "mask"]
    expected = netspec.compile(load_spec(SEGMENTER)).run(x)["conv"].argmax(axis=1)
    for row, want in zip(rows, expected):
        assert Path(row["mask"]).parent == Path("seg.masks")
        np.testing.assert_array_equal(np.asarray(Image.open(row["mask"])), want)
    assert_clean_failure(cli("predict", "spec.yaml", "--input", "x.npy", "-o", "seg2.csv", "--top", "2"), 2,
                         "for classifiers")


def test_other_outputs_give_an_npy_per_input(cli, write_spec, workdir):
    write_spec("""
        input: {shape: [3, 12, 12]}
        layers:
          - {op: avgpool2d, kernel: 2}
          - {op: conv2d, out: 1, kernel: 1, bias: false, init: {weight: 1}}
        """)  # (one channel: neither classes nor a map of class scores)
    np.save(workdir / "x.npy", np.ones((2, 3, 12, 12), np.float32))
    assert cli("predict", "spec.yaml", "--input", "x.npy", "-o", "o.jsonl").code == 0
    rows = [json.loads(line) for line in (workdir / "o.jsonl").read_text().splitlines()]
    assert all(Path(row["output"]).parent == Path("o.outputs") for row in rows)
    np.testing.assert_allclose(np.load(rows[1]["output"]), np.full((1, 6, 6), 3.0), rtol=1e-6)


def test_python_api_is_an_iterator_of_rows(load_spec, workdir):
    graph = load_spec(SPEC)
    images(workdir / "imgs", 5)
    job = netspec.predict(graph, "imgs", batch=2, top=2)
    rows = list(job)
    assert len(rows) == 5 == job.rows and not job.errors
    assert set(rows[0]) == {"path", "class", "score", "class_2", "score_2"}
    assert not list(workdir.glob("*.csv"))  # no out: nothing written


def test_lanes_give_the_rows_of_one_lane_and_are_as_many_as_memory_holds(load_spec, workdir, monkeypatch):
    """With 2 threads the network runs in 2 lanes (two copies, a thread each, batches side by side):
    the same rows, in the same order, as in one lane on 1 thread, from an array and from images;
    where the memory available holds one copy only, one lane."""
    from netspec import predictions, resources
    graph = load_spec(SPEC)
    np.save(workdir / "x.npy", np.random.default_rng(0).standard_normal((70, 3, 12, 12)).astype(np.float32))
    images(workdir / "imgs", 23, size=(12, 12))
    for source in ("x.npy", "imgs"):
        one, two = (list(netspec.predict(graph, source, batch=4, top=3, threads=t)) for t in (1, 2))
        assert [(r["path"], r["class"], r["class_2"], r["class_3"]) for r in one] == \
            [(r["path"], r["class"], r["class_2"], r["class_3"]) for r in two]
        np.testing.assert_allclose([r["score"] for r in one], [r["score"] for r in two], rtol=1e-5)
    runner = predictions.Runner(predictions.Job(graph, None, 0, 4, 1, None), progress=False, threads=2)
    try:
        assert runner.lanes == 2 and len(runner.exes) == 2 and runner.exes[0] is not runner.exes[1]
    finally:
        runner.close()
    parts = resources.run_needs(graph.active("eval"), 4).parts
    lane = sum(parts.values()) - parts["weights"] - parts["netspec itself"]  # (what a lane more holds)
    monkeypatch.setattr(resources, "available_memory", lambda: (sum(parts.values()) + lane // 2, "available"))
    assert predictions._lanes(graph, 4, 2) == 1
    monkeypatch.setattr(resources, "available_memory", lambda: (64 << 30, "available"))
    assert predictions._lanes(graph, 4, 2) == 2 and predictions._lanes(graph, 4, 1) == 1


def test_an_existing_out_is_refused_kept_and_replaced_with_force(cli, write_spec, workdir):
    write_spec(SPEC)
    images(workdir / "imgs", 2)
    (workdir / "out.csv").write_text("mine\n")
    assert_clean_failure(cli("predict", "spec.yaml", "--input", "imgs", "-o", "out.csv"), 2, "already exists",
                         "--force", "--resume")
    assert (workdir / "out.csv").read_text() == "mine\n"
    assert cli("predict", "spec.yaml", "--input", "imgs", "-o", "out.csv", "--force").code == 0
    assert len(read_csv(workdir / "out.csv")) == 2
    assert_clean_failure(cli("predict", "spec.yaml", "--input", "imgs", "-o", "out.txt"), 2, ".csv, .jsonl, .parquet")
    before = (workdir / "out.csv").read_bytes()  # a job that fails before its first batch replaces nothing
    assert_clean_failure(cli("predict", "spec.yaml", "--input", "imgs", "-o", "out.csv", "--force",
                             "--weights", "missing.safetensors"), 1, "cannot read weights")
    assert (workdir / "out.csv").read_bytes() == before
    assert not list(workdir.glob(".out*"))  # no temporary file left


def test_resume_skips_the_rows_out_has(cli, write_spec, load_spec, workdir):
    write_spec(SPEC)
    images(workdir / "imgs", 10)
    assert cli("predict", "spec.yaml", "--input", "imgs", "-o", "all.csv", "--batch", "3").code == 0
    job = netspec.predict(load_spec(SPEC), "imgs", "part.csv", batch=3)
    first = [next(job) for _ in range(4)]
    job.close()  # stopped early: the file holds what was finished (the first two batches)
    done = read_csv(workdir / "part.csv")
    assert 4 <= len(done) < 10 and [row["path"] for row in done[:4]] == [row["path"] for row in first]
    r = cli("predict", "spec.yaml", "--input", "imgs", "-o", "part.csv", "--batch", "3", "--resume")
    assert r.code == 0, r.err
    assert f"({10 - len(done)} new)" in r.out
    assert read_csv(workdir / "part.csv") == read_csv(workdir / "all.csv")
    assert_clean_failure(cli("predict", "spec.yaml", "--input", "imgs", "-o", "part.csv", "--resume", "--top", "2"),
                         2, "cannot resume", "same --top")
    (workdir / "notmine.jsonl").write_text('{"path": "a", "class": 1, "score": 0.5}\nnot json\n')
    assert_clean_failure(cli("predict", "spec.yaml", "--input", "imgs", "-o", "notmine.jsonl", "--resume"), 1,
                         "cannot resume 'notmine.jsonl'")
    assert (workdir / "notmine.jsonl").read_text().endswith("not json\n")


def test_inputs_the_network_cannot_take_are_refused_before_any_work(cli, write_spec, workdir):
    write_spec(SPEC)
    np.save(workdir / "x.npy", np.zeros((4, 3, 10, 12), np.float32))
    assert_clean_failure(cli("predict", "spec.yaml", "--input", "x.npy", "-o", "o.csv"), 1,
                         "shape 4×3×10×12", "N×3×12×12")
    np.save(workdir / "i.npy", np.zeros((4, 3, 12, 12), np.int32))
    assert_clean_failure(cli("predict", "spec.yaml", "--input", "i.npy", "-o", "o.csv"), 1, "dtype int32")
    assert_clean_failure(cli("predict", "spec.yaml", "--input", "nothing", "-o", "o.csv"), 1, "no such file")
    (workdir / "empty").mkdir()
    assert_clean_failure(cli("predict", "spec.yaml", "--input", "empty", "-o", "o.csv"), 1, "holds no inputs")
    (workdir / "labels.txt").write_text("a\nb\n")
    images(workdir / "imgs", 1)
    assert_clean_failure(cli("predict", "spec.yaml", "--input", "imgs", "-o", "o.csv", "--labels", "labels.txt"), 1,
                         "2 labels", "7 classes")
    assert_clean_failure(cli("predict", "spec.yaml", "--input", "imgs", "-o", "o.csv", "--top", "8"), 2, "7 classes")
    write_spec("""
        input: {shape: [5, 12, 12]}
        layers: [{op: global_avgpool}, {op: flatten}]
        """, "five.yaml")
    assert_clean_failure(cli("predict", "five.yaml", "--input", "imgs", "-o", "o.csv"), 1, "1 or 3 channels")
    assert not list(workdir.glob("o.*")) and not list(workdir.glob(".o.*"))


def test_a_job_too_large_for_memory_is_refused_before_any_work(cli, write_spec, workdir):
    write_spec("""
        input: {shape: [3, 4096, 4096]}
        layers: [{op: conv2d, out: 64, kernel: 3, padding: 1}, {op: global_avgpool}, {op: flatten}]
        """)
    (workdir / "list.txt").write_text("".join(f"{i}.png\n" for i in range(64)))  # (never read)
    assert_clean_failure(cli("predict", "spec.yaml", "--input", "list.txt", "-o", "o.csv", "--batch", "64"), 1,
                         "not enough memory for this job", "lower --batch")
    assert not list(workdir.glob("*o.csv*"))


def test_ctrl_c_leaves_the_finished_rows_and_resume_completes_them(write_spec, workdir):
    write_spec(SPEC)
    np.save(workdir / "x.npy", np.random.default_rng(0).standard_normal((20000, 3, 12, 12)).astype(np.float32))
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    command = [sys.executable, "-m", "netspec", "predict", "spec.yaml", "--input", "x.npy", "-o", "out.csv",
               "--batch", "1"]
    process = subprocess.Popen(command, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:  # until rows are being written
        partial = list(workdir.glob(".out.csv.*.tmp"))
        if partial and partial[0].stat().st_size > 1000:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "interrupted" in err and "--resume" in err and "Traceback" not in err
    rows = read_csv(workdir / "out.csv")
    assert 0 < len(rows) < 20000 and [row["path"] for row in rows] == [f"x.npy[{i}]" for i in range(len(rows))]
    assert not list(workdir.glob(".out.csv.*"))
    r = subprocess.run(command[:-2] + ["--batch", "500", "--resume"], cwd=workdir, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    again = read_csv(workdir / "out.csv")
    assert again[:len(rows)] == rows and [row["path"] for row in again] == [f"x.npy[{i}]" for i in range(20000)]


def test_scores_are_rounded_as_one_row_at_a_time_would_round_them():
    """The batch's scores, rounded at once (numpy), are the floats `float(f"{p:.6g}")` gives, bit for
    bit: values of every magnitude, near ties (x.5 in the 7th digit), powers of ten, 0, NaN, inf."""
    from netspec.predictions import significant
    rng = np.random.default_rng(0)
    values = np.concatenate([
        rng.random(20000), rng.random(2000) ** 40, 10.0 ** rng.uniform(-320, 300, 2000), -rng.random(500),
        np.array([0.0, -0.0, 1.0, 0.1, 1e-4, 1e-5, 1e22, 1e23, 5e-324, np.nan, np.inf, -np.inf, 0.9999995,
                  0.99999949999, 0.1234565, 0.12345650000000001, 123456.5, 1234565.0, 2.5e-7]),
        (np.arange(100000, 100100) + 0.5) / 1e6,  # (ties in decimal, near ties in binary)
        np.nextafter((np.arange(100000, 100100) + 0.5) / 1e6, 1.0)])
    batch = values[:len(values) // 7 * 7].reshape(-1, 7)[:, ::-1]  # (a strided 2-D batch, as the scores come)
    got = significant(batch).ravel()
    want = np.array([float(f"{v:.6g}") for v in batch.ravel()])
    assert got.tobytes() == want.tobytes()


def png(pixels: np.ndarray, filters=(0, 1, 2, 3, 4), chunks: int = 1, extra: bytes = b"", interlace: int = 0) -> bytes:
    """A PNG of H×W (gray) or H×W×3 (RGB) uint8 pixels, written by hand: the rows filtered with each of
    the five filters in turn, the compressed stream cut into `chunks` IDATs, `extra` chunks after IHDR."""
    h, w = pixels.shape[:2]
    c = 1 if pixels.ndim == 2 else pixels.shape[2]
    rows = pixels.reshape(h, w * c).astype(np.int64)
    out = bytearray()
    for y in range(h):
        kind, row = filters[y % len(filters)], rows[y]
        up = rows[y - 1] if y else np.zeros_like(row)
        a = np.concatenate([np.zeros(c, np.int64), row[:-c]])
        d = np.concatenate([np.zeros(c, np.int64), up[:-c]])
        pa, pb, pc = abs(up - d), abs(a - d), abs(a + up - 2 * d)
        predicted = [np.zeros_like(row), a, up, (a + up) // 2,
                     np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, up, d))][kind]
        out += bytes([kind]) + bytes(((row - predicted) % 256).astype(np.uint8))
    data = zlib.compress(bytes(out))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    cut = [data[i * len(data) // chunks:(i + 1) * len(data) // chunks] for i in range(chunks)]
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0 if c == 1 else 2, 0, 0, interlace))
            + extra + b"".join(chunk(b"IDAT", part) for part in cut) + chunk(b"IEND", b""))


def read_both_ways(graph, folder: Path, monkeypatch):
    """read_batch over every file of `folder`, with the fast path for small PNGs (netspec/pngs.py)
    and with Pillow alone (the fast path made to take nothing)."""
    from netspec import pngs, predictions
    source = predictions.open_source(str(folder), graph)
    rows = list(range(len(source.names)))
    fast = predictions.read_batch(source, rows, graph)
    with monkeypatch.context() as m:
        m.setattr(pngs, "read_pngs", lambda paths, type_, pixels: np.zeros(len(paths), bool))
        slow = predictions.read_batch(source, rows, graph)
    return source, fast, slow


def test_small_pngs_read_by_the_fast_path_are_the_pixels_pillow_reads(load_spec, workdir, monkeypatch):
    """The fast path (netspec/pngs.py) against Pillow: every filter, several IDATs,
    gray and RGB, files written by Pillow; what it does not take (another size or mode, interlaced, an
    extra chunk, 16 bits, a palette) is Pillow's, with the same pixels; and it takes the ones it should."""
    from netspec import pngs
    graph = load_spec(SPEC)  # 3×12×12
    rng = np.random.default_rng(0)
    folder = workdir / "pngs"
    folder.mkdir()
    smooth = np.cumsum(rng.integers(0, 3, (12, 12, 3)), axis=1).astype(np.uint8)  # (Paeth's cases: a, b and c)
    takes = {
        "filters.png": png(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)),
        "smooth.png": png(smooth, filters=(4, 3, 4, 1, 2)),
        "chunks.png": png(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8), chunks=3),
    }
    for name, data in takes.items():
        (folder / name).write_bytes(data)
    Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(folder / "pillow.png")
    Image.fromarray(smooth).save(folder / "pillow-smooth.PNG", optimize=True)
    text = b"tEXt" + b"Comment\0hi"
    others = {
        "gray.png": png(rng.integers(0, 256, (12, 12), dtype=np.uint8)),
        "bigger.png": png(rng.integers(0, 256, (13, 12, 3), dtype=np.uint8)),
        "text.png": png(smooth, extra=struct.pack(">I", 10) + text + struct.pack(">I", zlib.crc32(text))),
    }
    for name, data in others.items():
        (folder / name).write_bytes(data)
    (folder / "interlaced.png").write_bytes(png(smooth, interlace=1))  # (not Adam7 inside: Pillow's error either way)
    Image.fromarray(rng.integers(0, 256, (12, 12, 4), dtype=np.uint8)).save(folder / "rgba.png")
    Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).convert("P").save(folder / "palette.png")
    Image.fromarray(rng.integers(0, 65535, (12, 12), dtype=np.uint16)).save(folder / "deep.png")
    source, (x, good, errors), (x_pillow, good_pillow, errors_pillow) = read_both_ways(graph, folder, monkeypatch)
    assert len(good) == 11 and len(source.names) == 12 and [Path(e[0]).name for e in errors] == ["interlaced.png"]
    assert good == good_pillow and errors == errors_pillow
    np.testing.assert_array_equal(x, x_pillow)
    type_ = next(iter(graph.inputs.values()))
    pixels = np.empty((len(source.names),) + type_.dims, np.uint8)
    taken = pngs.read_pngs([source.path(n) for n in source.names], type_, pixels)
    assert sorted(Path(n).name for n, t in zip(source.names, taken) if t) == sorted(
        list(takes) + ["pillow.png", "pillow-smooth.PNG"])
    gray = load_spec(SPEC.replace("[3, 12, 12], mean: [0.5, 0.4, 0.3], std: [0.2, 0.25, 0.5]", "[1, 12, 12]"), "gray.yaml")
    source, (x, good, errors), (x_pillow, good_pillow, errors_pillow) = read_both_ways(gray, folder, monkeypatch)
    assert (good, errors) == (good_pillow, errors_pillow) and len(good) == 11
    np.testing.assert_array_equal(x, x_pillow)
    type_ = next(iter(gray.inputs.values()))
    pixels = np.empty((len(source.names),) + type_.dims, np.uint8)
    taken = pngs.read_pngs([source.path(n) for n in source.names], type_, pixels)
    assert [Path(n).name for n, t in zip(source.names, taken) if t] == ["gray.png"]


def test_damaged_pngs_get_pillows_reasons(load_spec, workdir, monkeypatch):
    """Damaged copies of a PNG the fast path takes (bytes changed, cut short, grown): each is read as
    Pillow alone reads it, the same pixels or the same reason in the errors file, never a crash."""
    graph = load_spec(SPEC)
    rng = np.random.default_rng(1)
    good = png(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8), chunks=2)
    folder = workdir / "damaged"
    folder.mkdir()
    for i in range(150):
        data = bytearray(good)
        if i % 5 == 0:
            data = data[:rng.integers(0, len(data))]
        elif i % 5 == 1:  # (after IEND: both ignore it)
            data += rng.integers(0, 256, rng.integers(1, 40), dtype=np.uint8).tobytes()
        elif i % 5 == 2:  # (in an IDAT's CRC, which Pillow does not check, or in the data it covers)
            idat = data.index(b"IDAT")
            data[idat + 4 + int.from_bytes(data[idat - 4:idat], "big") + rng.integers(-3, 4)] ^= 1 + i % 255
        else:
            for at in rng.integers(0, len(data), 1 + i % 4):
                data[at] = rng.integers(0, 256)
        (folder / f"{i:03d}.png").write_bytes(bytes(data))
    text = b"tEXt" + b"Comment\0hi"  # (a wrong CRC in an ancillary chunk: Pillow refuses the file)
    (folder / "text-crc.png").write_bytes(png(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8), extra=struct.pack(
        ">I", 10) + text + struct.pack(">I", zlib.crc32(text) ^ 1)))
    (folder / "huge.png").write_bytes(good[:-12] + bytes(200_000) + good[-12:])  # (over the bytes read: Pillow's)
    os.mkfifo(folder / "fifo.png")
    _, (x, good_rows, errors), (x_pillow, good_pillow, errors_pillow) = read_both_ways(graph, folder, monkeypatch)
    assert good_rows == good_pillow and errors == errors_pillow
    np.testing.assert_array_equal(x, x_pillow)
    assert 20 < len(good_rows) and 60 < len(errors)
    reasons = {Path(name).name: reason for name, reason in errors}
    assert "named pipe" in reasons["fifo.png"] and "text-crc.png" in reasons


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_the_fast_path_undoes_every_filter_as_pillow_does(data):
    """Property: a PNG of any small size, gray or RGB, its rows filtered with any sequence of PNG's five
    filters and its stream cut into any number of IDATs, is read by the fast path (netspec/pngs.py),
    several in one batch, as the pixels written and as Pillow reads them; a row whose filter byte is
    not one of the five leaves the file to Pillow (which refuses it), the others in the batch read;
    in one call or an image a call."""
    import io
    from types import SimpleNamespace
    import tempfile
    from netspec import pngs
    c = data.draw(st.sampled_from([1, 3]), "channels")
    h, w = data.draw(st.integers(1, 9), "h"), data.draw(st.integers(1, 9), "w")
    count = data.draw(st.integers(1, 4), "images")
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 32 - 1), "seed"))
    type_ = SimpleNamespace(rank=4, c=c, h=h, w=w, dims=(c, h, w))
    bad = data.draw(st.integers(-1, count - 1), "a bad filter in image")  # (-1: none)
    with tempfile.TemporaryDirectory() as folder:
        paths, want = [], []
        for i in range(count):
            smooth = data.draw(st.booleans(), "smooth")  # (Paeth's three cases need neighbours alike)
            pixels = (np.cumsum(rng.integers(0, 3, (h, w, c)), axis=1) if smooth else
                      rng.integers(0, 256, (h, w, c))).astype(np.uint8)
            pixels = pixels[..., 0] if c == 1 else pixels
            filters = data.draw(st.lists(st.integers(0, 4), min_size=1, max_size=h), "filters")
            encoded = png(pixels, filters=filters, chunks=data.draw(st.integers(1, 3), "idats"))
            if i == bad:
                row = data.draw(st.integers(0, h - 1), "bad row")
                raw = bytearray(zlib.decompress(b"".join(_idats(encoded))))
                raw[row * (1 + w * c)] = data.draw(st.integers(5, 255), "bad filter")
                encoded = png_from_rows(bytes(raw), h, w, c)
            paths.append(os.path.join(folder, f"{i}.png"))
            Path(paths[-1]).write_bytes(encoded)
            want.append(pixels[None] if c == 1 else pixels.transpose(2, 0, 1))
        got = np.zeros((count, c, h, w), np.uint8)
        budget = pngs._UNFILTER_BYTES
        pngs._UNFILTER_BYTES = data.draw(st.sampled_from([1, budget]), "work bytes")  # (1: an image a call)
        try:
            taken = pngs.read_pngs(paths, type_, got)
        finally:
            pngs._UNFILTER_BYTES = budget
        for i in range(count):
            assert taken[i] == (i != bad)
            if i != bad:
                np.testing.assert_array_equal(got[i], want[i])
                with Image.open(io.BytesIO(Path(paths[i]).read_bytes())) as image:
                    pillow = np.asarray(image)
                np.testing.assert_array_equal(pillow[None] if c == 1 else pillow.transpose(2, 0, 1), want[i])
            else:
                with pytest.raises(Exception), Image.open(paths[i]) as image:
                    image.load()


def _idats(data: bytes) -> list[bytes]:
    """The IDAT chunks' contents of a PNG, in order."""
    pos, out = 33, []
    while data[pos + 4:pos + 8] == b"IDAT":
        length = int.from_bytes(data[pos:pos + 4], "big")
        out.append(data[pos + 8:pos + 8 + length])
        pos += 12 + length
    return out


def png_from_rows(raw: bytes, h: int, w: int, c: int) -> bytes:
    """A PNG whose inflated data is `raw` as given (filter bytes included)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0 if c == 1 else 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_images_are_normalized_as_netspec_run_normalizes_them(load_spec):
    """The in-place normalization of 8-bit pixels (inputs.normalize_pixels: predict's, run's and
    train's) gives inputs.normalize's floats, with and without a mean and std."""
    from netspec.inputs import normalize
    from netspec.inputs import normalize_pixels as _normalized
    pixels = np.random.default_rng(0).integers(0, 256, (5, 3, 12, 12), dtype=np.uint8)
    for spec in (SPEC, SPEC.replace(", mean: [0.5, 0.4, 0.3], std: [0.2, 0.25, 0.5]", "")):
        graph = load_spec(spec)
        want = normalize(pixels / np.float32(255.0), graph)
        got = _normalized(pixels, graph)
        assert got.dtype == want.dtype == np.float32 and got.tobytes() == want.tobytes()
