"""Issue #25's cases, each as a user met them: bad spec bytes, files that are not files, symlink loops,
specs reaching outside their folder, absurd sizes, memory a run cannot have, a decompression bomb, a
backtracking regex, and writes that must not lose anything. Each gives a clear error (exit 1, or 2
for usage), never an internal error (exit 3) or a hang."""
from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

import netspec
from netspec.spec.errors import SpecError

from conftest import one_error_at

TINY = "name: t\ninput: {shape: [1, 8, 8]}\nlayers: [{op: relu}]\n"
LENET = str(Path(__file__).resolve().parent.parent / "specs" / "lenet5.yaml")


def clean(result, code: int, *words: str) -> str:
    """Assert the exit code, no internal error or traceback, and the words on stderr; the first line."""
    assert result.code == code, (result.code, result.out, result.err)
    assert "internal error" not in result.err and "Traceback" not in result.err, result.err
    for w in words:
        assert w in result.err, result.err
    return result.err.strip().splitlines()[0] if result.err.strip() else ""


# ---- spec bytes -------------------------------------------------------------------------------------

@pytest.mark.parametrize("char", ["\x00", "\x07", "\x1b", "\x7f", "\x9b"])
def test_control_characters_are_located(workdir, char):
    Path("s.yaml").write_text(f"name: t{char}x\ninput: {{shape: [1, 8, 8]}}\nlayers: [{{op: relu}}]\n",
                              encoding="utf-8")
    with pytest.raises(SpecError) as info:
        netspec.load("s.yaml")
    one_error_at(info.value, 1, 8, f"U+{ord(char):04X}", "control characters", file="s.yaml")


@pytest.mark.parametrize("text, line, col", [
    ("!!int doc: x\n" + TINY, 1, 1),
    ("name: t\ninput: {shape: [1, 8, 8]}\nlayers: [{op: relu, !!float kernel: 1}]\n", 3, 21),
    ("name: t\n!!bool maybe: 1\ninput: {shape: [1, 8, 8]}\nlayers: [{op: relu}]\n", 2, 1),
])
def test_a_tag_on_a_mapping_key_is_located(workdir, text, line, col):
    Path("s.yaml").write_text(text)
    with pytest.raises(SpecError) as info:
        netspec.load("s.yaml")
    one_error_at(info.value, line, col, "mapping keys must be plain words", file="s.yaml")


def test_devices_fifos_and_directories_are_refused_without_reading(cli, workdir):
    for device in ("/dev/zero", "/dev/urandom"):
        clean(cli("check", device), 1, "it is a device, not a regular file")
    os.mkfifo("pipe.yaml")
    # in a subprocess with a time limit: opening a FIFO for reading used to wait for a writer for ever
    r = subprocess.run([sys.executable, "-m", "netspec.cli", "check", "pipe.yaml"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 1 and "a named pipe, not a regular file" in r.stderr, r.stderr
    os.mkdir("folder.yaml")
    clean(cli("check", "folder.yaml"), 1, "a directory")


def test_an_oversized_spec_is_refused(cli, workdir):
    Path("big.yaml").write_text(TINY + "#" * (3 << 20) + "\n")
    clean(cli("check", "big.yaml"), 1, "over the limit of 2,097,152 bytes")


@pytest.mark.parametrize("key", ["imports: [loop1.yaml]\n", "extends: loop1.yaml\n"])
def test_a_symlink_loop_is_a_located_error(workdir, key):
    os.symlink("loop2.yaml", "loop1.yaml")
    os.symlink("loop1.yaml", "loop2.yaml")
    Path("s.yaml").write_text("name: t\n" + key + ("input: {shape: [1, 8, 8]}\nlayers: [{op: relu}]\n"
                                                   if "imports" in key else ""))
    with pytest.raises(SpecError) as info:
        netspec.load("s.yaml")
    assert "a loop of symbolic links" in info.value.format()
    assert info.value.diagnostics[0].location.line == 2


def test_a_symlink_loop_as_the_spec_itself(cli, workdir):
    os.symlink("b.yaml", "a.yaml")
    os.symlink("a.yaml", "b.yaml")
    clean(cli("check", "a.yaml"), 1, "a loop of symbolic links")


# ---- imports and extends stay in the spec's folder ---------------------------------------------------

SECRET = "zorro:*:20228:0:99999:7:::\nbatman:*:20228:0:99999:7:::\n"  # /etc/shadow's shape


@pytest.fixture
def outside(tmp_path):
    """A folder beside the working folder, holding a secret and a valid block library."""
    folder = tmp_path.parent / (tmp_path.name + "-outside")
    folder.mkdir()
    (folder / "shadow").write_text(SECRET)
    (folder / "lib.yaml").write_text("blocks:\n  act:\n    layers: [{op: relu}]\n")
    return folder


def _spec_importing(name: str, key: str = "imports") -> str:
    if key == "extends":
        return f"name: t\nextends: {name}\n"
    return f"name: t\nimports: [{name}]\ninput: {{shape: [1, 8, 8]}}\nlayers: [{{op: act}}]\n"


@pytest.mark.parametrize("key", ["imports", "extends"])
@pytest.mark.parametrize("how", ["absolute", "dotdot", "symlink"])
def test_imports_and_extends_outside_the_spec_folder_are_refused_unread(workdir, outside, key, how):
    target = outside / "shadow"
    if how == "absolute":
        name = str(target)
    elif how == "dotdot":
        name = os.path.relpath(target, workdir)
    else:
        os.symlink(target, "innocent.yaml")
        name = "innocent.yaml"
    Path("s.yaml").write_text(_spec_importing(name, key))
    with pytest.raises(SpecError) as info:
        netspec.load("s.yaml")
    text = info.value.format()
    assert "lies outside" in text and "--include" in text, text
    assert "zorro" not in text and "batman" not in text


def test_include_folders_and_netspec_path_allow_and_are_searched(workdir, outside, monkeypatch):
    Path("s.yaml").write_text(_spec_importing("lib.yaml"))
    with pytest.raises(SpecError, match="no such file"):
        netspec.load("s.yaml")
    assert len(netspec.load("s.yaml", include=[outside])) == 1  # found by searching the included folder
    monkeypatch.setenv("NETSPEC_PATH", str(outside))
    assert len(netspec.load("s.yaml")) == 1
    Path("abs.yaml").write_text(_spec_importing(str(outside / "lib.yaml")))
    assert len(netspec.load("abs.yaml")) == 1


def test_include_on_the_command_line(cli, workdir, outside):
    Path("s.yaml").write_text(_spec_importing("lib.yaml"))
    clean(cli("check", "s.yaml"), 1, "no such file")
    assert cli("check", "s.yaml", "--include", str(outside)).code == 0
    assert cli("summary", "s.yaml", "-I", str(outside)).code == 0


def test_a_file_that_is_not_a_spec_is_refused_without_echoing_it(cli, workdir):
    Path("notes.yaml").write_text("password: hunter2\nuser: alice\n")
    Path("s.yaml").write_text(_spec_importing("notes.yaml"))
    for spec in ("s.yaml", "notes.yaml"):
        first = clean(cli("check", spec), 1, "not a netspec spec")
        assert "hunter2" not in first and "password" not in cli("check", spec).err


def test_block_libraries_are_checked_on_their_own(cli):
    blocks = Path(LENET).parent / "blocks"
    r = cli("check", *sorted(str(p) for p in blocks.glob("*.yaml")))
    assert r.code == 0, r.err
    assert "(block library: basic, bottleneck)" in r.out


def test_a_broken_block_library_is_reported(cli, workdir):
    Path("lib.yaml").write_text("blocks:\n  act:\n    params: {i: 1}\n    layers: [{op: relu}]\n")
    clean(cli("check", "lib.yaml"), 1, "lib.yaml:3:14: error:", "cannot be a parameter")


# ---- command-line values ---------------------------------------------------------------------------

@pytest.mark.parametrize("args, words", [
    (["run", LENET, "--seed", "-1"], "expected a non-negative integer"),
    (["summary", LENET, "--batch", "1000000000000"], "too large (at most 16,777,216)"),
    (["run", LENET, "--batch", "1000000000000"], "too large"),
    (["run", LENET, "--max-memory", "lots"], "expected a size such as 8G"),
])
def test_out_of_range_options_are_usage_errors(cli, args, words):
    clean(cli(*args), 2, words)


def test_a_summary_at_the_largest_batch_is_arithmetic(cli):
    r = cli("summary", LENET, "--batch", str(1 << 24))
    assert r.code == 0, r.err
    assert "at batch 16777216" in r.out


# ---- memory a run cannot have ----------------------------------------------------------------------

@pytest.mark.parametrize("spec, args", [
    ("name: huge\ninput: {shape: [3, 16384, 16384]}\nlayers: [{op: conv2d, out: 64, kernel: 3}]\n", []),
    ("name: wide\ninput: {shape: [3, 32, 32]}\nlayers: [{op: conv2d, out: 16777216, kernel: 3}]\n", []),
    (None, ["--batch", "1000000"]),
])
def test_a_run_that_cannot_fit_is_refused_before_allocating(cli, workdir, monkeypatch, spec, args):
    if spec is not None:
        Path("s.yaml").write_text(spec)
    path = "s.yaml" if spec is not None else LENET
    first = clean(cli("run", path, *args, "--max-memory", "16G"), 1, "not enough memory for this run", "allowed by --max-memory")
    assert "GiB" in first and "activations" in first
    # without --max-memory: the memory available (as this machine would say it)
    from netspec import resources
    monkeypatch.setattr(resources, "available_memory", lambda: (12 << 30, "available"))
    clean(cli("run", path, *args), 1, "not enough memory for this run", "12.0 GiB available")


def test_max_memory_refuses_and_allows(cli):
    clean(cli("run", LENET, "--max-memory", "100K"), 1, "not enough memory for this run", "100.0 KiB allowed by --max-memory")
    assert cli("run", LENET, "--max-memory", "1G", "--repeat", "1").code == 0


def test_the_executable_refuses_an_arena_it_cannot_have():
    from netspec.resources import ResourceError
    graph = netspec.load(LENET)
    exe = netspec.compile(graph, progress=False)
    exe.max_memory = 1 << 20
    with pytest.raises(ResourceError, match="run a smaller batch"):
        exe.run(np.zeros((64, 1, 32, 32), np.float32))
    assert exe.run(np.zeros((1, 1, 32, 32), np.float32))  # one sample's arena fits in 1 MiB


def test_an_npy_larger_than_memory_is_refused_from_its_header(cli, workdir):
    # a .npy header claiming 4 TiB, and no data: refused from the header, nothing read
    header = np.lib.format.header_data_from_array_1_0(np.zeros((1, 1, 32, 32), np.float32))
    header["shape"] = (1 << 30, 1, 32, 32)
    with open("big.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
    clean(cli("run", LENET, "--input", "big.npy"), 1, "not enough memory for this run")


def test_an_npz_or_a_fifo_as_input(cli, workdir):
    np.savez("b.npz", x=np.zeros((1, 1, 32, 32), np.float32))
    clean(cli("run", LENET, "--input", "b.npz"), 1, "is an .npz archive")
    os.mkfifo("pipe.npy")
    clean(cli("run", LENET, "--input", "pipe.npy"), 1, "a named pipe, not a regular file")


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares width×height (greyscale) followed by an empty image stream: what a
    decompression bomb looks like before decoding."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [30000, 9000])
def test_an_image_over_the_pixel_limit_is_refused_before_decoding(cli, workdir, side):
    Path("big.png").write_bytes(_png_header_only(side, side))
    clean(cli("run", LENET, "--input", "big.png"), 1, "big.png", "67,108,864 pixels")


# ---- regular expressions from map files ------------------------------------------------------------

def test_a_backtracking_regex_is_cut_off(monkeypatch):
    from netspec.interop import checkpoint
    graph = netspec.load(LENET)
    monkeypatch.setattr(checkpoint, "REGEX_SECONDS", 0.2)
    pattern = checkpoint.regex.compile(r"^(a|aa)+$")
    state = {"a" * 60 + "!": np.zeros(1, np.float32)}
    mapping = checkpoint.Mapping({}, [(pattern, "x")])
    with pytest.raises(checkpoint.CheckpointError, match="took too long"):
        checkpoint.map_state_dict(state, graph, mapping)


# ---- writing ----------------------------------------------------------------------------------------

def test_a_dangling_symlink_at_the_output_is_refused_like_a_file(cli, workdir):
    os.symlink("nowhere.safetensors", "w.safetensors")
    clean(cli("weights", "init", LENET, "-o", "w.safetensors"), 2, "a symbolic link to nothing", "--force")
    assert os.path.islink("w.safetensors") and not os.path.exists("nowhere.safetensors")
    assert cli("weights", "init", LENET, "-o", "w.safetensors", "--force").code == 0
    assert not os.path.islink("w.safetensors") and os.path.getsize("w.safetensors") > 0


def test_a_killed_writer_s_temporary_file_is_removed_by_the_next_write(workdir):
    from netspec.files import atomic_write
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = Path(f".out.bin.{dead}.0.tmp")
    stale.write_bytes(b"half")
    live = Path(f".out.bin.{os.getppid()}.0.tmp")  # a live process's write in progress is left alone
    live.write_bytes(b"busy")
    atomic_write("out.bin", b"whole")
    assert Path("out.bin").read_bytes() == b"whole"
    assert not stale.exists() and live.exists()
    assert sorted(p.name for p in Path(".").iterdir()) == sorted(["out.bin", live.name])


@pytest.mark.parametrize("args", [
    ["run", LENET, "--weights", "{fifo}.safetensors"],
    ["weights", "import", "{fifo}.safetensors", "-o", "out.safetensors", "--spec", LENET],
    ["weights", "import", "{file}", "-o", "out.safetensors", "--spec", LENET, "--map", "{fifo}.yaml"],
    ["import", "{fifo}.onnx", "-o", "out.yaml"],
])
def test_weights_maps_and_models_that_are_fifos_are_refused(cli, workdir, args):
    os.mkfifo("pipe.safetensors")
    os.mkfifo("pipe.yaml")
    os.mkfifo("pipe.onnx")
    from netspec.weights import init_weights, save_weights
    save_weights(init_weights(netspec.load(LENET)), "w.safetensors")
    argv = [a.replace("{fifo}", "pipe").replace("{file}", "w.safetensors") for a in args]
    clean(cli(*argv), 1, "a named pipe, not a regular file")


def test_weights_that_cannot_fit_are_refused_before_initialising(cli, workdir):
    Path("s.yaml").write_text("name: fat\ninput: {shape: [3, 32, 32]}\n"
                              "layers: [{op: flatten}, {op: linear, out: 16777216}]\n")
    for args in (["weights", "init", "s.yaml", "-o", "w.safetensors"], ["export", "s.yaml", "--onnx", "s.onnx"],
                 ["compile", "s.yaml"]):
        clean(cli(*args), 1, "not enough memory for the weights: 192.1 GiB needed")
    clean(cli("run", "s.yaml"), 1, "not enough memory for this run", "weights 192.1 GiB")
    assert not Path("w.safetensors").exists() and not Path("s.onnx").exists()


def test_force_never_replaces_a_device_or_fifo(cli, workdir):
    os.mkfifo("out.npy")
    for target in ("/dev/null", "out.npy"):
        clean(cli("run", LENET, "-o", target, "--force"), 2, "it is not a regular file")
    assert Path("/dev/null").is_char_device() and Path("out.npy").is_fifo()


# ---- what the fuzzer (tools/fuzz.py) found next --------------------------------------------------------

@pytest.mark.parametrize("name", ['"a\\0b.yaml"', "a" * 300 + ".yaml"])
@pytest.mark.parametrize("key", ["imports", "extends"])
def test_impossible_file_names_in_a_spec_are_located_errors(workdir, key, name):
    Path("s.yaml").write_text(_spec_importing(name, key))
    with pytest.raises(SpecError) as info:
        netspec.load("s.yaml")
    assert info.value.diagnostics[0].location.line == 2, info.value.format()
    assert "cannot " + ("import" if key == "imports" else "extend") in info.value.format()


@pytest.mark.parametrize("name", ["o" * 300 + ".json", "o" * 250 + ".json"])
def test_an_output_name_too_long_is_a_usage_error(cli, workdir, name):
    clean(cli("schema", "-o", name), 2, "too long")


def test_a_map_whose_regex_is_not_a_list(cli, workdir):
    from netspec.weights import init_weights, save_weights
    save_weights(init_weights(netspec.load(LENET)), "w.safetensors")
    Path("m.yaml").write_text("regex: 3\n")
    clean(cli("weights", "import", "w.safetensors", "-o", "o.safetensors", "--spec", LENET, "--map", "m.yaml"), 1,
          "`regex` must be a list")


def test_a_file_name_that_is_not_utf8_prints_escaped_under_a_strict_locale(workdir):
    name = os.fsdecode(b"\xff.yaml")
    Path(name).write_text(TINY)
    r = subprocess.run([sys.executable, "-m", "netspec.cli", "check", name], capture_output=True,
                       env={**os.environ, "PYTHONIOENCODING": "utf-8:strict"}, timeout=120)
    assert r.returncode == 0, r.stderr
    assert b"ok  \\udcff.yaml" in r.stdout
    # and written into the files made from it: escaped
    from netspec.cli import main
    for args in (["weights", "init", name, "-o", "w.safetensors"], ["export", name, "--onnx", "o.onnx"],
                 ["expand", name, "-o", "e.yaml"]):
        assert main(args) == 0, args
    assert "\\udcff.yaml" in Path("e.yaml").read_text(encoding="utf-8")
