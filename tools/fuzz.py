#!/usr/bin/env python3
"""A mutation fuzzer for the `netspec` command line (issue #25).

Every case is a command line plus the files it names (a mutated spec, a corrupt input, a FIFO, a
loop of links, ...), made in a fresh folder and run with `netspec.cli.main(argv)` in a worker
process: output captured, the worker's address space capped (RLIMIT_AS, --mem-gib), each case
held to --timeout seconds (a worker that overruns is killed and replaced). Each case is then one of

    ok        exit status 0
    clean     exit status 1 or 2 with a message on stderr, every diagnostic located (file:line:col:)
    internal  exit status 3 ("netspec: internal error: ..."): a bug, which no input may reach
    hang      no answer within --timeout seconds
    crash     an exception escaping main(), a MemoryError, or a worker that died (a signal)
    unclean   exit 1 or 2 without a message, with an unlocated diagnostic, or any other status
    leak      the output quotes a file outside the spec's folder (imports of /etc/shadow, ../x)

Families of cases (seeded, so a case is reproduced by its family and index alone):

    text   byte-level mutations of the zoo's specs and small inline specs (control characters,
           invalid UTF-8, YAML tags on keys and values, anchors and aliases, deep nesting, huge
           numbers and expressions, deleted, duplicated and swapped lines and tokens)
    tree   structural mutations of the parsed spec (as tests/test_mutations.py), dumped back to YAML
    files  file kinds: a folder, /dev/zero, a FIFO, loops of links, dangling links, unreadable
           files, imports and extends of absolute paths, ../ paths and links that leave the folder
    args   every subcommand with random options and extreme values (-1, 0, 10**12, nan, '', ...)
    data   `run --input` files (.npy, images, a 30000×30000 PNG), weights for `run --weights`,
           checkpoints and rename maps (bad and catastrophic regexes) for `weights import`

A worker first runs the small specs once, untimed, so that kernels missing from Numba's cache are
compiled before any case is timed; a case that overruns is run once more on a fresh worker before it
counts as a hang. At most two workers run at once (--jobs).

Usage (from the repository root):

    .venv/bin/python tools/fuzz.py --seconds 600                 # the long run
    .venv/bin/python tools/fuzz.py --cases 200 --family files     # one family
    .venv/bin/python tools/fuzz.py --replay files:17 --keep /tmp/k  # one case again, kept on disk
    .venv/bin/python tools/fuzz.py --seconds 300 --tree /tmp/old  # fuzz another checkout's netspec/

The summary table counts the cases per family and class; every case that is not ok or clean is
listed with a one-line reproducer (with --keep DIR its files are written under DIR), and the
failures are grouped by the first line of their error. The exit status is 1 when any case was an
internal error, a hang, a crash, unclean or a leak, else 0. tests/test_fuzz.py runs a short,
fixed-seed campaign in CI.
"""
from __future__ import annotations

import argparse
import copy
import io
import json
import os
import random
import re
import selectors
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SPECS = REPO / "specs"
FAMILIES = ("text", "tree", "files", "args", "data")
CLASSES = ("ok", "clean", "internal", "hang", "crash", "unclean", "leak")
FAILURES = ("internal", "hang", "crash", "unclean", "leak")
ROOT = "@ROOT@"  # stands for the case's folder in argv, file contents and link targets
SECRET = "NETSPEC_FUZZ_SECRET_7f3a"  # written into files outside a spec's folder: must never be echoed
SHADOW_LINE = r"\b[a-z_][a-z0-9_-]*:[^:\s']*:\d+:\d*:\d*:\d*:"  # the shape of a line of /etc/shadow
PASSWD_LINE = r"\b[a-z_][a-z0-9_-]*:x:\d+:\d+:"  # (the report never prints a leaking case's output)

# ---------------------------------------------------------------------------------------------
# Small inline specs (those of tests/test_mutations.py, and smaller ones that run in milliseconds)

TINY = """\
name: tiny
input: {shape: [3, 8, 8], mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25]}
layers:
  - {op: conv2d, name: conv, out: 4, kernel: 3, padding: 1}
  - {op: batchnorm2d, name: bn}
  - {op: relu, name: act}
  - {op: maxpool2d, name: pool, kernel: 2}
  - {op: global_avgpool, name: gap}
  - {op: flatten, name: flat}
  - {op: linear, name: fc, out: 5}
"""

RELU = "name: t\ninput: {shape: [1, 8, 8]}\nlayers: [{op: relu}]\n"

LENET = """\
netspec: 1
name: lenet
params: {num_classes: 10}
input: {shape: [1, 32, 32]}
layers:
  - {op: conv2d, name: conv1, out: 6, kernel: 5}
  - {op: tanh}
  - {op: avgpool2d, kernel: 2}
  - {op: conv2d, name: conv2, out: 16, kernel: 5}
  - {op: tanh}
  - {op: avgpool2d, kernel: 2}
  - {op: flatten}
  - {op: linear, name: fc1, out: 120}
  - {op: dropout, p: 0.5, mode: train}
  - {op: linear, name: fc2, out: $num_classes}
"""

BASIC_BLOCK = """\
blocks:
  basic:
    params: {c: int, stride: 1}
    layers:
      - {op: conv2d, name: conv1, out: $c, kernel: 3, stride: $stride, padding: 1, bias: false}
      - {op: batchnorm2d, name: bn1}
      - {op: relu, name: relu}
      - {op: conv2d, name: conv2, out: $c, kernel: 3, padding: 1, bias: false}
      - {op: batchnorm2d, name: bn2}
      - name: downsample
        in: input
        when: ${stride != 1 or input.c != c}
        layers:
          - {op: conv2d, out: $c, kernel: 1, stride: $stride, bias: false}
          - {op: batchnorm2d}
      - {op: add, name: add, in: [bn2, downsample or input]}
      - {op: relu, name: relu2}
"""

RESNET = """\
name: resnet
params: {num_classes: 10, depth: 2}
input: {shape: [3, 32, 32]}
variants:
  deep: {params: {depth: 3}}
""" + BASIC_BLOCK + """\
layers:
  - {op: conv2d, name: stem, out: 16, kernel: 3, padding: 1}
  - {op: basic, name: layer1, repeat: $depth, c: 16}
  - {op: basic, name: layer2, repeat: $depth, c: 32, first: {stride: 2}}
  - {op: global_avgpool, name: pool}
  - {op: flatten, name: flat}
  - {op: linear, name: fc, out: $num_classes}
outputs: [fc]
"""

INCEPTION = """\
name: inception
input: {shape: [16, 28, 28]}
blocks:
  conv_bn:
    params: {out: int, kernel: 1, padding: 0}
    layers:
      - {op: conv2d, name: conv, out: $out, kernel: $kernel, padding: $padding, bias: false}
      - {op: batchnorm2d, name: bn}
      - {op: relu, name: act}
layers:
  - {op: conv_bn, name: branch1, out: 8}
  - name: branch2
    in: input
    layers:
      - {op: conv_bn, out: 8}
      - {op: conv_bn, out: 12, kernel: 3, padding: 1}
  - name: branch3
    in: input
    layers:
      - {op: maxpool2d, kernel: 3, stride: 1, padding: 1, ceil_mode: true}
      - {op: conv_bn, out: 4}
  - {op: concat, name: cat, in: [branch1, branch2, branch3]}
  - {op: conv2d, name: head, out: "${cat.c // 2}", kernel: 1}
"""

BLOCK_LIB = """\
blocks:
  cbr:
    params: {c: int}
    layers:
      - {op: conv2d, name: conv, out: $c, kernel: 3, padding: 1}
      - {op: relu, name: act}
"""

USES_LIB = """\
name: uses_lib
input: {shape: [3, 8, 8]}
imports: [%s]
layers:
  - {op: cbr, name: b1, c: 4}
  - {op: global_avgpool}
"""

EXTENDS = "name: ext\nextends: %s\nparams: {num_classes: 3}\n"

INLINE = {"tiny": TINY, "relu": RELU, "lenet": LENET, "resnet": RESNET, "inception": INCEPTION}
RUNNABLE = ("tiny", "relu", "lenet")  # inline specs cheap enough for `run` and `compile`

LENET_WEIGHTS = {"conv1.weight": (6, 1, 5, 5), "conv1.bias": (6,), "conv2.weight": (16, 6, 5, 5), "conv2.bias": (16,),
                 "fc1.weight": (120, 400), "fc1.bias": (120,), "fc2.weight": (84, 120), "fc2.bias": (84,),
                 "fc3.weight": (10, 84), "fc3.bias": (10,)}

_zoo: dict[str, bytes] | None = None


def zoo() -> dict[str, bytes]:
    """specs/**/*.yaml of the repository, as 'specs/...' -> bytes (read once)."""
    global _zoo
    if _zoo is None:
        _zoo = {str(p.relative_to(REPO)): p.read_bytes() for p in sorted(SPECS.rglob("*.yaml"))
                if "samples" not in p.parts}
    return _zoo


def zoo_tops() -> list[str]:
    return [k for k in zoo() if k.count("/") == 1]


def dependents(target: str) -> list[str]:
    """Top-level zoo specs that read `target` (itself, an import of it, or an extends of it)."""
    if "/blocks/" not in target:
        found = [target]
        name = Path(target).name.encode()
        found += [k for k in zoo_tops() if k != target and re.search(rb"extends:\s*" + re.escape(name), zoo()[k])]
        return found
    rel = "/".join(target.split("/")[1:]).encode()
    return [k for k in zoo_tops() if rel in zoo()[k]] or ["specs/lenet5.yaml"]


# ---------------------------------------------------------------------------------------------
# Cases


@dataclass
class Case:
    family: str
    index: int
    kind: str  # what the case does, in a few words (groups hangs and crashes, which say nothing)
    argv: list[str]
    files: dict[str, bytes] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)
    fifos: list[str] = field(default_factory=list)
    dirs: list[str] = field(default_factory=list)
    modes: dict[str, int] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    leak: list[str] = field(default_factory=list)  # regexes the output must not match
    mutated: str | None = None  # the file the case mutated (for the reproducer)
    note: str = ""

    @property
    def name(self) -> str:
        return f"{self.family}:{self.index}"

    def materialize(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        broot = os.fsencode(str(root))
        for d in self.dirs:
            (root / d).mkdir(parents=True, exist_ok=True)
        for rel, data in self.files.items():
            p = root / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data.replace(ROOT.encode(), broot))
        for rel, target in self.links.items():
            p = root / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(target.replace(ROOT, str(root)), p)
        for rel in self.fifos:
            os.mkfifo(root / rel)
        for rel, mode in self.modes.items():
            os.chmod(root / rel, mode)

    def argv_at(self, root: Path) -> list[str]:
        return [a.replace(ROOT, str(root)) for a in self.argv]

    def env_at(self, root: Path) -> dict[str, str]:
        return {k: v.replace(ROOT, str(root)) for k, v in self.env.items()}

    def reproducer(self, root: Path | None) -> str:
        where = str(root) if root is not None else "<a folder with the case's files>"
        env = "".join(f"{k}={shell_quote(v)} " for k, v in self.env_at(Path(where)).items())
        line = f"(cd {shell_quote(where)} && {env}netspec {' '.join(map(shell_quote, self.argv_at(Path(where))))})"
        return line


def shell_quote(arg: str) -> str:
    raw = os.fsencode(arg)
    try:
        text = raw.decode("utf-8")
        if text.isprintable():
            return shlex.quote(text)
    except UnicodeDecodeError:
        pass
    out = []
    for b in raw:
        c = chr(b)
        out.append(c if 32 <= b < 127 and c not in "'\\" else f"\\x{b:02x}")
    return "$'" + "".join(out) + "'"


def unlock(root: Path, case: Case) -> None:
    """Give back the permissions a case took away, so its folder can be removed."""
    for rel in case.modes:
        try:
            os.chmod(root / rel, 0o755)
        except OSError:
            pass


# ---------------------------------------------------------------------------------------------
# Family 1: spec text, byte by byte

CONTROL = [bytes([b]) for b in list(range(0, 32)) + [0x7F]]
BAD_UTF8 = [b"\xff", b"\xfe", b"\xc3", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82", b"\x80",
            b"\xef\xbb\xbf", b"\xf8\x88\x80\x80\x80"]
ODD_UNICODE = ["\u2028", "\u0085", "\ufeff", "\u00a0", "\u202e", "\uff1a", "\u200b", "\U0001d518", "é", "\ufffd"]
TAGS = ["!!int", "!!float", "!!binary", "!!python/object:os.system", "!!python/name:os.system", "!!str", "!!null",
        "!!bool", "!!set", "!!omap", "!!pairs", "!!timestamp", "!!map", "!!seq", "!custom", "!", "!<tag:yaml.org,2002:int>",
        "!!python/tuple", "!!merge", "!!value", "!!yaml"]
HUGE = [b"16777216", b"1e308", b"1e999", b"-1e999", b"10000000000000000000000000000000", b"9" * 400, b".nan", b".inf", b"-.inf",
        b"0x7fffffffffffffff", b"0o777", b"1_000_000", b"-0", b"0", b"-1", b"2147483648", b"4294967297", b"16777216",
        b"1.5", b"1e-400", b"~", b"null", b"true", b"1000000000000", b"-1000000000000", b"1:30", b"0b101", b"2e9",
        b"16384", b"65536", b"1000000"]
EXPRS = ["${10**10**10}", "${1/0}", "${2**64}", "${'a'*10**9}", "${[0]*10**9}", "${(lambda: 1)()}",
         "${__import__('os')}", "${().__class__}", "${9**9**9}", "${-1}", "${1e308*10}", "${int('9'*5000)}",
         "${" + "(" * 400 + "1" + ")" * 400 + "}", "${input.c * 10**9}", "${range(10**12)}", "${nan}",
         "${max([])}", "${1 << 10**9}", "${a.b.c.d}", "${[i for i in range(10**9)]}", "${", "$", "${}",
         "${1 if 2 else 3}", "${'x' + 1}", "${10**12}", "${num_classes ** num_classes ** num_classes}",
         "${input.h // 0}", "${input.c % 0}", "${2.5 ** 1000}", "${-(2**63)}", "${abs}", "${\"\\x00\"}"]
GARBAGE = ["{", "}", "]", "[", ": :", "- - -", "\t", "&a", "*nowhere", "!!python/object:os.system {}",
           "<<: 1", "%YAML 1.1", "@", "`", "'", '"', "? ", "|", ">", "#", "---", "...", "${", "$", "\\x00",
           "\u00e9", "\ufeff", "~", "null", "- {op: relu}", "layers:", "  ", "\n  -", ": 3", "!!binary x",
           "<<: *a", "? [a, b]: c", "? {a: 1}\n: 2", "!!set {a, b}"]
WHOLE = [b"", b"\n", b"   ", b"---", b"...", b"~", b"[]", b"{}", b'"x"', b"- 1", b"\xef\xbb\xbf", b"\x00",
         b"name: x", b"layers: []", b"%YAML 1.1\n", b"&a [*a]", b"!!binary AAAA", b"\t", b"a: b: c"]

KEY_RE = re.compile(rb"(?m)(?:^[ \t]*(?:- )?|[{,] ?)([A-Za-z_][A-Za-z0-9_]*)(?=:)")
VALUE_RE = re.compile(rb": (?=[^\s#])")
NUMBER_RE = re.compile(rb"(?<![\w.$])\d+(?:\.\d+)?(?![\w.])")
PARAM_RE = re.compile(rb"\$[A-Za-z_]\w*|\$\{[^}\n]*\}")
TOKEN_RE = re.compile(rb"[A-Za-z_$][\w$.]*|\d+")


def _pos(rng: random.Random, data: bytes) -> int:
    return rng.randint(0, len(data))


def _pick(rng: random.Random, regex: re.Pattern, data: bytes):
    found = list(regex.finditer(data))
    return rng.choice(found) if found else None


def _lines(data: bytes) -> list[bytes]:
    return data.splitlines(keepends=True)


def _alias(data: bytes, at: int, alias: bytes) -> bytes:
    """Replace the value that starts at `at` with an alias (a scalar, a [...] or a {...} as a whole)."""
    depth, j = 0, at
    while j < len(data):
        c = data[j:j + 1]
        if c in (b"[", b"{"):
            depth += 1
        elif c in (b"]", b"}"):
            if depth == 0:
                break
            depth -= 1
            if depth == 0:
                j += 1
                break
        elif c in (b",", b"\n", b"#") and depth == 0:
            break
        j += 1
    return data[:at] + alias + data[j:]


def laughs(levels: int) -> bytes:
    out = [b"lol0: &l0 [1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    for i in range(1, levels):
        out.append(b"lol%d: &l%d [" % (i, i) + b", ".join([b"*l%d" % (i - 1)] * 9) + b"]")
    return b"\n".join(out) + b"\n"


# The first cases of the text and tree families make these mutations, with the first (the worst) value of
# each list, so that a short run (tests/test_fuzz.py) always covers the classes of bugs issue #25 found.
TEXT_FIRST = ["control", "tag_key", "utf8", "laughs", "deep", "expr", "number", "tag_value", "anchor"]
TREE_FIRST = ["file", "bigrepeat", "number", "deepen", "type"]


def text_mutation(rng: random.Random, data: bytes, forced: str | None = None) -> tuple[bytes, str]:
    kind = forced or rng.choice(["control", "control", "utf8", "unicode", "tag_key", "tag_key", "tag_value", "anchor",
                                 "laughs", "deep", "number", "number", "expr", "expr", "delete_line", "duplicate_line",
                                 "swap_lines", "swap_tokens", "delete_chars", "truncate", "indent", "tabs", "newlines",
                                 "bom", "whole", "directive", "documents", "long", "garbage", "garbage"])

    def pick(options):
        return options[0] if forced else rng.choice(options)
    lines = _lines(data)
    if kind == "control":
        p = _pos(rng, data)
        return data[:p] + pick(CONTROL) + data[p:], kind
    if kind == "utf8":
        p = _pos(rng, data)
        return data[:p] + pick(BAD_UTF8) + data[p:], kind
    if kind == "unicode":
        p = _pos(rng, data)
        return data[:p] + rng.choice(ODD_UNICODE).encode() + data[p:], kind
    if kind == "tag_key":
        m = _pick(rng, KEY_RE, data)
        if m:
            return data[:m.start(1)] + pick(TAGS).encode() + b" " + data[m.start(1):], kind
    if kind == "tag_value":
        m = _pick(rng, VALUE_RE, data)
        if m:
            return data[:m.end()] + pick(TAGS).encode() + b" " + data[m.end():], kind
    if kind == "anchor":
        values = list(VALUE_RE.finditer(data))
        if len(values) >= 2:
            a, b = sorted(rng.sample(values, 2), key=lambda m: m.start())
            how = rng.choice(["forward", "forward", "backward", "undefined", "merge", "self"])
            if how == "merge":
                i = rng.randrange(len(lines))
                indent = re.match(rb"[ \t]*(?:- )?", lines[i]).group(0)
                return b"".join(lines[:i] + [indent + b"<<: *a\n"] + lines[i:]), f"{kind} {how}"
            if how == "self":
                return data[:a.end()] + b"&a [*a] " + data[a.end():], f"{kind} {how}"
            if how == "undefined":
                return _alias(data, b.end(), b"*nowhere"), f"{kind} {how}"
            anchor_at, alias_at = (a, b) if how == "forward" else (b, a)
            if alias_at.end() > anchor_at.end():  # edit the later position first, so the earlier one stays put
                return _alias(data, alias_at.end(), b"*a")[:anchor_at.end()] + b"&a " + \
                    _alias(data, alias_at.end(), b"*a")[anchor_at.end():], f"{kind} {how}"
            edited = data[:anchor_at.end()] + b"&a " + data[anchor_at.end():]
            return _alias(edited, alias_at.end(), b"*a"), f"{kind} {how}"
    if kind == "laughs":
        levels = pick([9, 3, 5, 7])
        where = rng.choice(["top", "doc", "params"])
        bomb = laughs(levels)
        if where == "top":
            return bomb + data, kind
        key = b"doc" if where == "doc" else b"params"
        return bomb + re.sub(rb"(?m)^" + key + rb":.*$", key + b": *l%d" % (levels - 1), data, count=1) \
            if re.search(rb"(?m)^" + key + b":", data) else bomb + data + key + b": *l%d\n" % (levels - 1), kind
    if kind == "deep":
        depth = pick([200000, 50, 500, 2000, 20000])
        m = _pick(rng, VALUE_RE, data)
        opener, closer = rng.choice([(b"[", b"]"), (b"{a: ", b"}")])
        nest = opener * depth + b"1" + closer * depth
        p = m.end() if m else len(data)
        return data[:p] + nest + data[p:], f"{kind} {depth}"
    if kind == "number":
        m = _pick(rng, NUMBER_RE, data)
        if m:
            return data[:m.start()] + pick(HUGE) + data[m.end():], kind
    if kind == "expr":
        m = _pick(rng, PARAM_RE, data) or _pick(rng, NUMBER_RE, data)
        if m:
            return data[:m.start()] + json.dumps(pick(EXPRS)).encode() + data[m.end():], kind
    if kind == "delete_line" and lines:
        i = rng.randrange(len(lines))
        return b"".join(lines[:i] + lines[i + 1:]), kind
    if kind == "duplicate_line" and lines:
        i = rng.randrange(len(lines))
        return b"".join(lines[:i + 1] + lines[i:]), kind
    if kind == "swap_lines" and len(lines) > 1:
        i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
        lines[i], lines[j] = lines[j], lines[i]
        return b"".join(lines), kind
    if kind == "swap_tokens":
        tokens = list(TOKEN_RE.finditer(data))
        if len(tokens) > 1:
            a, b = sorted(rng.sample(tokens, 2), key=lambda m: m.start())
            return (data[:a.start()] + b.group() + data[a.end():b.start()] + a.group() + data[b.end():]), kind
    if kind == "delete_chars" and data:
        i = rng.randrange(len(data))
        return data[:i] + data[i + rng.randint(1, 5):], kind
    if kind == "truncate" and data:
        return data[:rng.randrange(len(data))], kind
    if kind == "indent" and lines:
        i = rng.randrange(len(lines))
        lines[i] = (b" " * rng.randint(1, 3) + lines[i]) if rng.random() < 0.5 else lines[i][rng.randint(1, 3):]
        return b"".join(lines), kind
    if kind == "tabs":
        return re.sub(rb"(?m)^  ", b"\t", data, count=rng.randint(1, 5)), kind
    if kind == "newlines":
        return data.replace(b"\n", rng.choice([b"\r\n", b"\r", b"\n\n", b"\x0b", b"\x0c", b"\xc2\x85"])), kind
    if kind == "bom":
        how = rng.choice(["utf8", "utf16", "utf32", "middle"])
        if how == "utf8":
            return b"\xef\xbb\xbf" + data, kind
        if how == "middle":
            p = _pos(rng, data)
            return data[:p] + b"\xef\xbb\xbf" + data[p:], kind
        text = data.decode("utf-8", "surrogateescape")
        try:
            return text.encode("utf-16" if how == "utf16" else "utf-32"), f"{kind} {how}"
        except UnicodeEncodeError:
            return data, kind
    if kind == "whole":
        return rng.choice(WHOLE), kind
    if kind == "directive":
        return rng.choice([b"%YAML 1.1\n---\n", b"%YAML 1.2\n---\n", b"%YAML 9.9\n---\n", b"%TAG ! tag:x,2000:\n---\n",
                           b"%FOO bar\n---\n", b"%YAML 1.1\n%YAML 1.1\n---\n"]) + data, kind
    if kind == "documents":
        return data + rng.choice([b"---\nname: other\n", b"---\n", b"...\n---\n" + data, b"...\n"]), kind
    if kind == "long":
        n = rng.choice([10_000, 1_000_000])
        what = rng.choice(["key", "value", "name"])
        if what == "key":
            return data + b"k" * n + b": 1\n", f"{kind} {what}"
        if what == "name":
            return re.sub(rb"(?m)^name:.*$", b"name: " + b"n" * n, data, count=1), f"{kind} {what}"
        return data + b"doc: " + b"d" * n + b"\n", f"{kind} {what}"
    p = _pos(rng, data)
    return data[:p] + rng.choice(GARBAGE).encode() + data[p:], "garbage"


def spec_command(rng: random.Random, spec: str, runnable: bool) -> tuple[list[str], str]:
    """A command that reads a (mutated) spec: mostly check and summary; run and compile when cheap."""
    choices = ["check"] * 6 + ["summary"] * 3 + ["expand"] * 2 + ["render"]
    if runnable:
        choices += ["run", "run", "compile", "export"]
    cmd = rng.choice(choices)
    if cmd == "summary":
        extra = rng.choice([[], [], ["--json"], ["--explain"], ["--depth", "1"], ["--mode", "train"], ["--batch", "2"]])
        return ["summary", spec] + extra, cmd
    if cmd == "render":
        return ["render", spec, "-o", "out.dot"], cmd
    if cmd == "run":
        return ["run", spec, "--repeat", "1", "--threads", "1"] + rng.choice([[], ["--mode", "train"], ["--batch", "2"]]), cmd
    if cmd == "export":
        return ["export", spec, "--onnx", "out.onnx"], cmd
    if cmd == "compile":
        return ["compile", spec] + rng.choice([[], ["--dump-passes"], ["--mode", "train"]]), cmd
    return [cmd, spec], cmd


def base_spec(rng: random.Random, inline_share: float = 0.6):
    """(files, spec path, runnable, label): an inline spec, or one zoo file with the zoo beside it."""
    if rng.random() < inline_share:
        name = rng.choice(list(INLINE))
        return {"spec.yaml": INLINE[name].encode()}, "spec.yaml", name in RUNNABLE, name
    files = dict(zoo())
    target = rng.choice(list(files))
    return files, target, False, target


def gen_text(rng: random.Random, index: int) -> Case:
    files, target, runnable, label = base_spec(rng)
    data = files[target]
    count = 0 if index % 10 == 0 else rng.choice([1, 1, 1, 2, 3])
    kinds = []
    for i in range(count):
        data, kind = text_mutation(rng, data, TEXT_FIRST[index - 1] if i == 0 and index <= len(TEXT_FIRST) else None)
        kinds.append(kind)
    files[target] = data
    spec = target if target == "spec.yaml" else rng.choice(dependents(target))
    argv, cmd = spec_command(rng, spec, runnable)
    return Case("text", index, f"text {'+'.join(kinds) or 'none'} | {cmd}", argv, files=files, mutated=target,
                note=f"{label}: {', '.join(kinds) or 'unmutated'}")


# ---------------------------------------------------------------------------------------------
# Family 2: spec trees (the structural mutations of tests/test_mutations.py, with a random.Random)

NUMBERS = [0, -1, -3, 10**12, 10**30, 2**24 + 1, 1.5, float("inf"), float("nan"), True, 3, 2**63, -(2**63) - 1, 1e-300]
VALUES = [None, "x", "", [], {}, [1, 2], {"a": 1}, "${1/0}", "${nope}", "$", "${i}", "input", "conv1", 0.5,
          "${" + "9" * 30 + "}", "${10**10**10}", "relu", "add", "basic", "conv_bn", False, "\x00", "\x07", "é",
          [[[[[]]]]], {"op": "relu"}, [{"op": "relu"}], "${input.c}", "a" * 5000]
KEYS = ["in", "repeat", "when", "mode", "first", "layers", "op", "name", "kernal", "groups", "in_channels",
        "extends", "imports", "outputs", "blocks", "params", "variants", "input", "shape", "netspec", "doc",
        "padding", "stride", "dilation", "out", "kernel", "bias", "p", "mean", "std", 1, None, True, "", "é"]
PATH_VALUES = ["nowhere.yaml", "/etc/passwd", "/dev/null", "/dev/zero", ".", "..", "", "spec.yaml",
               "../spec.yaml", "blocks", "blocks/conv.yaml", "/", "a" * 300, "\x00", ["x.yaml"], 1, None]


def tree_paths(data, prefix=()):
    yield prefix, data
    if isinstance(data, dict):
        for k, v in list(data.items()):
            yield from tree_paths(v, prefix + (k,))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield from tree_paths(v, prefix + (i,))


def tree_get(data, path):
    for p in path:
        data = data[p]
    return data


def names_in(data) -> list:
    return sorted({v for _, v in tree_paths(data) if isinstance(v, str) and v.isidentifier()} | {"input", "nowhere"})


def tree_mutation(rng: random.Random, data, forced: str | None = None) -> tuple[object, str]:
    all_paths = [p for p, _ in tree_paths(data) if p]
    if not all_paths:
        return {"garbage": 1}, "replace"
    path = rng.choice(all_paths)
    parent, key = tree_get(data, path[:-1]), path[-1]
    kind = forced or rng.choice(["delete", "type", "rename", "number", "duplicate", "swap", "add_key", "add_key",
                                 "file", "wrap", "deepen", "bigrepeat"])
    if kind == "delete":
        del parent[key]
    elif kind == "type":
        parent[key] = copy.deepcopy(rng.choice(VALUES))
    elif kind == "rename":
        parent[key] = rng.choice(names_in(data))
    elif kind == "number":
        parent[key] = rng.choice(NUMBERS)
    elif kind == "duplicate":
        lists = [p for p, v in tree_paths(data) if isinstance(v, list) and v]
        if lists:
            target = tree_get(data, rng.choice(lists))
            i = rng.randrange(len(target))
            target.insert(i, copy.deepcopy(target[i]))
    elif kind == "swap":
        lists = [p for p, v in tree_paths(data) if isinstance(v, list) and len(v) > 1]
        if lists:
            target = tree_get(data, rng.choice(lists))
            i, j = rng.randrange(len(target)), rng.randrange(len(target))
            target[i], target[j] = target[j], target[i]
    elif kind == "add_key":
        dicts = [p for p, v in tree_paths(data) if isinstance(v, dict)]
        target = tree_get(data, rng.choice(dicts))
        target[rng.choice(KEYS)] = copy.deepcopy(rng.choice(VALUES + NUMBERS))
    elif kind == "file":
        if isinstance(data, dict):
            if rng.random() < 0.5:
                data["imports"] = [copy.deepcopy(rng.choice(PATH_VALUES)) for _ in range(rng.randint(1, 3))]
            else:
                data["extends"] = copy.deepcopy(rng.choice(PATH_VALUES))
    elif kind == "wrap":
        parent[key] = rng.choice([[parent[key]], {"x": parent[key]}, {"layers": [parent[key]]}])
    elif kind == "deepen":
        value = 1
        for _ in range(rng.choice([10, 100, 300])):
            value = [value]
        parent[key] = value
    elif kind == "bigrepeat":
        dicts = [v for p, v in tree_paths(data) if isinstance(v, dict) and "op" in v]
        if dicts:
            rng.choice(dicts)[rng.choice(["repeat", "out", "kernel", "groups"])] = rng.choice(
                [10**6, 10**9, 2**31, 65536, 16777216, 10**12])
    return data, kind


def gen_tree(rng: random.Random, index: int) -> Case:
    import yaml
    files, target, runnable, label = base_spec(rng)
    tree = yaml.safe_load(files[target].decode("utf-8"))
    count = 0 if index % 10 == 0 else rng.choice([1, 1, 2, 3])
    kinds = []
    for i in range(count):
        tree, kind = tree_mutation(rng, tree, TREE_FIRST[index - 1] if i == 0 and index <= len(TREE_FIRST) else None)
        kinds.append(kind)
    style = dict(sort_keys=False, default_flow_style=rng.choice([None, None, False, True]),
                 allow_unicode=rng.random() < 0.8, width=rng.choice([80, 10**6]))
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 20000))  # the dumper recurses 3 frames a level; deepen nests 300
    try:
        text = yaml.safe_dump(tree, **style)
    finally:
        sys.setrecursionlimit(limit)
    data = text.encode("utf-8", "surrogatepass")
    if count and rng.random() < 0.3:
        p = _pos(rng, data)
        data = data[:p] + rng.choice(GARBAGE).encode() + data[p:]
        kinds.append("garbage")
    files[target] = data
    spec = target if target == "spec.yaml" else rng.choice(dependents(target))
    argv, cmd = spec_command(rng, spec, runnable)
    return Case("tree", index, f"tree {'+'.join(kinds) or 'none'} | {cmd}", argv, files=files, mutated=target,
                note=f"{label}: {', '.join(kinds) or 'unmutated'}")


# ---------------------------------------------------------------------------------------------
# Family 3: file kinds

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
READERS = [["check"], ["summary"], ["expand"], ["run", "--repeat", "1"], ["compare", "lenet5.yaml"],
           ["weights", "init", "-o", "w.safetensors"], ["render", "-o", "o.dot"], ["export", "--onnx", "o.onnx"]]


def reader(rng: random.Random, spec: str) -> list[str]:
    cmd = rng.choice(READERS)
    if cmd[0] == "compare":
        return ["compare", spec, "lenet5.yaml"] if rng.random() < 0.5 else ["compare", "lenet5.yaml", spec]
    if cmd[0] == "weights":
        return ["weights", "init", spec] + cmd[2:]
    return [cmd[0], spec] + cmd[1:]


def outside_file(rng: random.Random) -> bytes:
    """A file outside the spec's folder that carries the secret marker: in a comment of a valid block
    library, as an unknown key (which an error message would quote), or in a line that is not YAML."""
    return rng.choice([f"# {SECRET}\n" + BLOCK_LIB, BLOCK_LIB + f"{SECRET}: 1\n", f"{SECRET}: [\n" + BLOCK_LIB,
                       BLOCK_LIB.replace("cbr", SECRET)]).encode()


def gen_files(rng: random.Random, index: int) -> Case:
    lenet = zoo()["specs/lenet5.yaml"]
    base = {"lenet5.yaml": lenet}
    scenarios = ["inside", "dir", "device", "fifo", "abs_import", "loop", "dotdot", "fifo_ref", "link_out", "dangling",
                 "include", "loop_ref", "abs_extends", "dangling_ref", "names", "contents", "extends_chain",
                 "import_odd", "outputs"]
    if not IS_ROOT:
        scenarios.append("unreadable")
    scenario = scenarios[index % len(scenarios)] if index < len(scenarios) else rng.choice(scenarios)
    c = Case("files", index, f"files {scenario}", [], files=dict(base))
    first = index < len(scenarios)  # the first case of a scenario takes its first (worst) option

    def choose(options):
        return options[0] if first else rng.choice(options)

    if scenario == "dir":
        c.dirs.append("d.yaml")
        spec = rng.choice(["d.yaml", ".", "d.yaml/", "/"])
        c.argv = reader(rng, spec)
        c.kind += f" {spec}"
    elif scenario == "device":
        dev = choose(["/dev/zero", "/dev/null", "/dev/urandom", "/dev/full", "/proc/self/status", "/proc/self/mem",
                          "/dev/stdin", "/proc/self/fd/0", "/proc/self/cmdline", "/sys/kernel/mm"])
        c.argv = reader(rng, dev)
        c.kind += f" {dev} | {c.argv[0]}"
    elif scenario == "fifo":
        c.fifos.append("spec.yaml")
        c.argv = reader(rng, "spec.yaml")
        c.kind += f" | {c.argv[0]}"
    elif scenario in ("fifo_ref", "loop_ref", "dangling_ref"):
        name = "ref.yaml"
        if scenario == "fifo_ref":
            c.fifos.append(name)
        elif scenario == "loop_ref":
            c.links.update({name: "ref2.yaml", "ref2.yaml": name})
        else:
            c.links[name] = "nowhere.yaml"
        how = rng.choice(["imports", "extends", "input", "weights", "map", "checkpoint", "compare"])
        if how == "imports":
            c.files["spec.yaml"] = (USES_LIB % name).encode()
            c.argv = ["check", "spec.yaml"]
        elif how == "extends":
            c.files["spec.yaml"] = (EXTENDS % name).encode()
            c.argv = ["summary", "spec.yaml"]
        elif how == "input":
            c.argv = ["run", "lenet5.yaml", "--repeat", "1", "--input", rng.choice([name, "ref.npy", "ref.png"])]
            if c.argv[-1] != name:
                c.links[c.argv[-1]] = name
        elif how == "weights":
            c.argv = ["run", "lenet5.yaml", "--repeat", "1", "--weights", "ref.safetensors"]
            c.links["ref.safetensors"] = name
        elif how == "map":
            c.argv = ["weights", "import", "ck.safetensors", "--spec", "lenet5.yaml", "-o", "o.safetensors", "--map", name]
            c.files["ck.safetensors"] = lenet_weights_file()
        elif how == "checkpoint":
            c.argv = ["weights", "import", "ref.safetensors", "--spec", "lenet5.yaml", "-o", "o.safetensors"]
            c.links["ref.safetensors"] = name
        else:
            c.argv = ["compare", "lenet5.yaml", name]
        c.kind += f" {how}"
    elif scenario == "loop":
        if rng.random() < 0.5:
            c.links["spec.yaml"] = "spec.yaml"
        else:
            c.links.update({"spec.yaml": "b.yaml", "b.yaml": "spec.yaml"})
        c.argv = reader(rng, "spec.yaml")
        c.kind += f" | {c.argv[0]}"
    elif scenario == "dangling":
        c.links["spec.yaml"] = rng.choice(["nowhere.yaml", "/nonexistent/x.yaml", "sub/x.yaml"])
        c.argv = reader(rng, "spec.yaml")
        c.kind += f" | {c.argv[0]}"
    elif scenario == "unreadable":
        c.files["spec.yaml"] = RELU.encode()
        if rng.random() < 0.5:
            c.modes["spec.yaml"] = 0
            c.argv = reader(rng, "spec.yaml")
        else:
            c.files["lib.yaml"] = BLOCK_LIB.encode()
            c.modes["lib.yaml"] = 0
            c.files["spec.yaml"] = (USES_LIB % "lib.yaml").encode()
            c.argv = ["check", "spec.yaml"]
    elif scenario in ("abs_import", "abs_extends"):
        target = choose(["/etc/shadow", "/etc/passwd", "/etc/hostname", "/dev/zero", "/dev/null", "/proc/self/environ",
                             "/etc", f"{ROOT}/outside.yaml", f"{ROOT}/proj/lib/block.yaml", str(SPECS / "lenet5.yaml"),
                             str(SPECS / "blocks" / "conv.yaml")])
        c.files["outside.yaml"] = outside_file(rng)
        c.files["proj/lib/block.yaml"] = BLOCK_LIB.encode()
        spec = (USES_LIB % json.dumps(target)) if scenario == "abs_import" else (EXTENDS % json.dumps(target))
        c.files["proj/spec.yaml"] = spec.encode()
        c.argv = [rng.choice(["check", "summary", "expand"]), "proj/spec.yaml"]
        c.leak = [SECRET, SHADOW_LINE, PASSWD_LINE]
        c.kind += f" {target.replace(ROOT, '<case>')}"
    elif scenario == "dotdot":
        target = choose(["../outside.yaml", "lib/../../outside.yaml", "./../outside.yaml", "../proj/lib/block.yaml",
                             "lib/../lib/block.yaml", "../../../../../../etc/passwd", "..", "../"])
        c.files["outside.yaml"] = outside_file(rng)
        c.files["proj/lib/block.yaml"] = BLOCK_LIB.encode()
        how = rng.choice(["imports", "extends"])
        c.files["proj/spec.yaml"] = ((USES_LIB if how == "imports" else EXTENDS) % json.dumps(target)).encode()
        c.argv = [rng.choice(["check", "summary"]), "proj/spec.yaml"]
        c.leak = [SECRET, PASSWD_LINE]
        c.kind += f" {how} {target}"
    elif scenario == "link_out":
        c.files["outside.yaml"] = outside_file(rng)
        c.files["outdir/block.yaml"] = outside_file(rng)
        how = choose(["file_rel", "file_abs", "dir", "spec_itself"])
        if how == "file_rel":
            c.links["proj/link.yaml"] = "../outside.yaml"
            c.files["proj/spec.yaml"] = rng.choice([USES_LIB, EXTENDS]) .__mod__("link.yaml").encode()
        elif how == "file_abs":
            c.links["proj/link.yaml"] = f"{ROOT}/outside.yaml"
            c.files["proj/spec.yaml"] = rng.choice([USES_LIB, EXTENDS]).__mod__("link.yaml").encode()
        elif how == "dir":
            c.links["proj/lib"] = "../outdir"
            c.files["proj/spec.yaml"] = (USES_LIB % "lib/block.yaml").encode()
        else:  # the spec named on the command line is itself a link: its own folder is where it lies
            c.files["real/spec.yaml"] = (USES_LIB % "lib.yaml").encode()
            c.files["real/lib.yaml"] = BLOCK_LIB.encode()
            c.links["proj/spec.yaml"] = "../real/spec.yaml"
            c.leak = []
        c.argv = [rng.choice(["check", "summary"]), "proj/spec.yaml"]
        if how != "spec_itself":
            c.leak = [SECRET]
        c.kind += f" {how}"
    elif scenario == "inside":  # legitimate imports and extends: these must work
        how = rng.choice(["import", "import_sub", "extends", "import_abs_inside"])
        c.files["proj/lib.yaml"] = BLOCK_LIB.encode()
        c.files["proj/sub/block.yaml"] = BLOCK_LIB.encode()
        c.files["proj/lenet5.yaml"] = lenet
        target = {"import": "lib.yaml", "import_sub": "sub/block.yaml", "extends": "lenet5.yaml",
                  "import_abs_inside": f"{ROOT}/proj/lib.yaml"}[how]
        c.files["proj/spec.yaml"] = ((EXTENDS if how == "extends" else USES_LIB) % json.dumps(target)).encode()
        c.argv = [rng.choice(["check", "summary", "expand"]), "proj/spec.yaml"]
        c.kind += f" {how}"
    elif scenario == "include":
        c.files["lib/block.yaml"] = BLOCK_LIB.encode()
        c.files["proj/spec.yaml"] = (USES_LIB % "block.yaml").encode()
        how = rng.choice(["option", "env", "none", "option_missing", "env_odd"])
        c.argv = ["check", "proj/spec.yaml"]
        if how == "option":
            c.argv += ["--include", rng.choice(["lib", f"{ROOT}/lib", "lib/"])]
        elif how == "option_missing":
            c.argv += ["--include", rng.choice(["nowhere", "", "lib/block.yaml", "/"])]
        elif how == "env":
            c.env["NETSPEC_PATH"] = f"{ROOT}/lib"
        elif how == "env_odd":
            c.env["NETSPEC_PATH"] = rng.choice([":::", "", "/nonexistent", "\x01", f"{ROOT}/lib:/dev/null"])
        c.kind += f" {how}"
    elif scenario == "names":
        name = rng.choice(["spec", "spec.yml", "spec.json", "a b.yaml", "é.yaml", "\udcff.yaml", "-spec.yaml",
                           "spec.yaml ", "x" * 300 + ".yaml", "spec.yaml/", ".yaml", "new\nline.yaml", "*.yaml", "~",
                           "sp:ec.yaml", "lenet5.yaml:base", "--"])
        content = RELU.encode() if name != "spec.json" else json.dumps(
            {"name": "j", "input": {"shape": [1, 8, 8]}, "layers": [{"op": "relu"}]}).encode()
        if len(os.fsencode(name)) < 250 and not name.endswith("/") and name not in ("--", "~"):
            c.files[name] = content
        c.argv = reader(rng, name)
        c.kind += f" {name[:20]!r}"
    elif scenario == "contents":
        what = rng.choice(["empty", "binary", "png", "huge", "utf16", "many_layers", "long_line", "npy"])
        data = {"empty": b"", "binary": bytes(rng.randrange(256) for _ in range(4096)), "png": small_png(),
                "huge": RELU.encode() + b"# " + b"x" * 78 + b"\n" * 1 + (b"#" * 79 + b"\n") * 150_000,
                "utf16": RELU.encode("utf-16"), "many_layers": (
                    "name: many\ninput: {shape: [1, 4, 4]}\nlayers:\n" + "  - {op: relu}\n" * 20000).encode(),
                "long_line": b"name: " + b"x" * 5_000_000 + b"\n", "npy": npy_bytes()}[what]
        c.files["spec.yaml"] = data
        c.argv = reader(rng, "spec.yaml") if what != "many_layers" else ["check", "spec.yaml"]
        c.kind += f" {what}"
    elif scenario == "extends_chain":
        how = rng.choice(["self", "cycle3", "block", "dir", "deep", "abs_zoo"])
        if how == "self":
            c.files["spec.yaml"] = (EXTENDS % "spec.yaml").encode()
        elif how == "cycle3":
            c.files["spec.yaml"] = (EXTENDS % "b.yaml").encode()
            c.files["b.yaml"] = (EXTENDS % "c.yaml").encode()
            c.files["c.yaml"] = (EXTENDS % "spec.yaml").encode()
        elif how == "block":
            c.files["lib.yaml"] = BLOCK_LIB.encode()
            c.files["spec.yaml"] = (EXTENDS % "lib.yaml").encode()
        elif how == "dir":
            c.dirs.append("sub")
            c.files["spec.yaml"] = (EXTENDS % rng.choice([".", "sub", "sub/"])).encode()
        elif how == "deep":
            n = rng.choice([50, 500])
            for i in range(n):
                c.files[f"e{i}.yaml"] = (EXTENDS % f"e{i + 1}.yaml").encode()
            c.files[f"e{n}.yaml"] = lenet
            c.files["spec.yaml"] = (EXTENDS % "e0.yaml").encode()
        else:
            c.files["spec.yaml"] = (EXTENDS % json.dumps(str(SPECS / "resnet.yaml"))).encode()
        c.argv = [rng.choice(["check", "summary"]), "spec.yaml"]
        c.kind += f" {how}"
    elif scenario == "import_odd":
        how = rng.choice(["self", "cycle", "dir", "empty", "twice", "many", "spec_as_lib", "nested_dir"])
        c.files["lib.yaml"] = BLOCK_LIB.encode()
        target = {"self": '"spec.yaml"', "cycle": '"b.yaml"', "dir": '"."', "empty": '""', "twice": "lib.yaml, lib.yaml",
                  "many": ", ".join(["lib.yaml"] * 200), "spec_as_lib": "lenet5.yaml", "nested_dir": '"sub/"'}[how]
        if how == "cycle":
            c.files["b.yaml"] = (BLOCK_LIB.replace("cbr", "cbr2") + 'imports: ["spec.yaml"]\n').encode()
        if how == "nested_dir":
            c.dirs.append("sub")
        c.files["spec.yaml"] = (USES_LIB % target).encode()
        c.argv = [rng.choice(["check", "summary"]), "spec.yaml"]
        c.kind += f" {how}"
    else:  # outputs: where -o points
        target = rng.choice(["d", "nodir/out.x", "link_to_dir", "dangling.x", "fifo.x", "exists.x", "", ".", "/",
                             "/nonexistent/out.x", "out.x/", "lenet5.yaml"])
        c.dirs.append("d")
        c.links["link_to_dir"] = "d"
        c.links["dangling.x"] = "nowhere/out.x"
        c.fifos.append("fifo.x")
        c.files["exists.x"] = b"keep me\n"
        force = ["--force"] if rng.random() < 0.5 else []
        cmd = rng.choice(["expand", "schema", "run", "weights", "render", "export"])
        suffix = {"run": ".npy", "weights": ".safetensors", "render": ".dot", "export": ".onnx"}.get(cmd, ".yaml")
        out = target.replace(".x", suffix)
        if out != target:
            if target in c.links:
                c.links[out] = c.links.pop(target)
            if target in c.fifos:
                c.fifos = [out]
            if target in c.files:
                c.files[out] = c.files.pop(target)
        c.argv = {"expand": ["expand", "lenet5.yaml", "-o", out], "schema": ["schema", "-o", out],
                  "run": ["run", "lenet5.yaml", "--repeat", "1", "-o", out],
                  "weights": ["weights", "init", "lenet5.yaml", "-o", out],
                  "render": ["render", "lenet5.yaml", "-o", out], "export": ["export", "lenet5.yaml", "--onnx", out]}[cmd] + force
        c.kind += f" {cmd} -o {target}"
    if c.mutated is None:
        c.mutated = next((k for k in ("proj/spec.yaml", "spec.yaml") if k in c.files), None)
    return c


# ---------------------------------------------------------------------------------------------
# Family 4: command-line arguments

INTS = ["-1"] * 4 + ["0"] * 3 + ["1000000000000"] * 4 + ["1000000"] * 2 + ["1", "2", "3", "100000", "nan", "inf", "", "é", "\u0663", "1e3", "0x10", " 4", "+4", "1_0",
        "9" * 400, "-0", "2147483648", "2.5", "true", "-1000000000000", "\uff14"]
STRINGS = ["", "x", "é", "\u202e", "a" * 10000, "-", "--", ".", "..", "/", "nowhere", "conv1", "fc3", "None",
           "\udcff", " ", "*", "base", "train", "auto", "full", "\t", "\U0001d518"]
SETS = ["num_classes=3", "num_classes=0", "num_classes=-1", "num_classes=1000000000000", "num_classes=nan",
        "num_classes=", "num_classes", "=3", "resolution=1", "resolution=4", "resolution=1e400", "resolution=[1, 2]",
        "resolution=${1/0}", "resolution=true", "resolution=16", "nope=1", "num_classes=[", "num_classes=3=4",
        " num_classes = 5 ", "num_classes=0x10", "num_classes=1e3", "resolution=65536", "num_classes=" + "9" * 5000,
        "num_classes=é", "resolution=[[[[1]]]]", "resolution=2147483648", "resolution=16384", "num_classes=16777216"]


def sane_or(rng: random.Random, sane: list, extreme: list, p_extreme: float = 0.3):
    return rng.choice(extreme) if rng.random() < p_extreme else rng.choice(sane)


def spec_arg(rng: random.Random) -> str:
    return sane_or(rng, ["lenet5.yaml"] * 4 + ["tiny.yaml", "relu.yaml", "resnet.yaml"],
                   ["nowhere.yaml", "d", ".", "", "lenet5", "/dev/null", "-", "a" * 5000, "\udcff.yaml", "tiny.yaml:x"], 0.12)


def out_arg(rng: random.Random, suffix: str) -> str:
    return sane_or(rng, [f"out{suffix}", f"d/out{suffix}"],
                   [f"out{suffix}", "d", "", "nodir/out" + suffix, "out", "out.txt", "o" * 300 + suffix, "\udcff" + suffix,
                    "lenet5.yaml", f"é{suffix}", "-"], 0.35)


def args_options(rng: random.Random, cmd: str) -> list[list[str]]:
    """The option groups a subcommand accepts, each with a random value (picked from sane and extreme ones)."""
    variant = ["--variant", sane_or(rng, ["base", "x"], STRINGS)]
    sets = ["--set", sane_or(rng, ["num_classes=3", "resolution=32"], SETS, 0.6)]
    force = ["--force"]
    if cmd == "check":
        return [sets, sets[:], ["--include", sane_or(rng, ["."], STRINGS)]]
    if cmd == "summary":
        return [variant, sets, ["--depth", sane_or(rng, ["1", "2"], INTS)], ["--batch", sane_or(rng, ["1", "4"], INTS)],
                ["--mode", sane_or(rng, ["eval", "train"], STRINGS)], ["--json"], ["--explain"]]
    if cmd == "run":
        return [variant, sets, ["--weights", sane_or(rng, ["w.safetensors"], ["nowhere.safetensors", "d", "", "lenet5.yaml"])],
                ["--input", sane_or(rng, ["x.npy", "x.png"], ["nowhere.npy", "d", "", "lenet5.yaml", "x.png.npy"])],
                ["--batch", sane_or(rng, ["1", "2", "3"], INTS, 0.35)], ["--seed", sane_or(rng, ["0", "1", "42"], INTS, 0.5)],
                ["--mode", sane_or(rng, ["eval", "train"], STRINGS)],
                ["--backend", sane_or(rng, ["cpu", "reference"], STRINGS + ["cuda"])],
                ["--repeat", sane_or(rng, ["1", "2"], INTS, 0.3)], ["--threads", sane_or(rng, ["1", "2"], INTS, 0.4)],
                ["-o", out_arg(rng, rng.choice([".npy", ".npz"]))], force]
    if cmd == "compile":
        return [variant, sets, ["--mode", sane_or(rng, ["eval", "train"], STRINGS)],
                ["--weights", sane_or(rng, ["w.safetensors"], ["nowhere.safetensors", "d", ""])], ["--dump-passes"]]
    if cmd == "weights init":
        return [variant, sets, ["--seed", sane_or(rng, ["0", "7"], INTS, 0.5)], force]
    if cmd == "weights import":
        return [variant, sets, ["--map", sane_or(rng, ["map.yaml"], ["nowhere.yaml", "d", "", "lenet5.yaml"])], force]
    if cmd == "render":
        return [variant, sets, ["--depth", sane_or(rng, ["1", "auto", "full"], INTS + STRINGS)],
                ["--rankdir", sane_or(rng, ["TB", "LR"], STRINGS)], ["--no-shapes"],
                ["--show", sane_or(rng, ["params", "macs", "params,macs"], STRINGS + [",", "params,,", "macs,x"])],
                ["--scope", sane_or(rng, ["conv1", "fc1"], STRINGS)], force]
    if cmd == "export":
        return [variant, sets, ["--weights", sane_or(rng, ["w.safetensors"], ["nowhere.safetensors", "d", ""])],
                ["--batch", sane_or(rng, ["1", "2", "dynamic"], INTS + ["Dynamic", "dynamic "])],
                ["--mode", sane_or(rng, ["eval", "train"], STRINGS)], force]
    if cmd == "import":
        return [["--weights-out", out_arg(rng, ".safetensors")], force]
    if cmd == "compare":
        return [sets, ["--batch", sane_or(rng, ["1", "8"], INTS)]]
    if cmd in ("expand", "schema"):
        return ([variant, sets] if cmd == "expand" else []) + [force]
    return []


ARGS_FIRST = {1: ["summary", "lenet5.yaml", "--batch", "1000000000000"],
              2: ["run", "lenet5.yaml", "--seed", "-1", "--repeat", "1"],
              3: ["run", "lenet5.yaml", "--batch", "1000000000000"],
              7: ["run", "lenet5.yaml", "--batch", "1000000", "--repeat", "1"],
              17: ["run", "lenet5.yaml", "--set", "resolution=16384", "--repeat", "1"],
              18: ["weights", "init", "lenet5.yaml", "-o", "w2.safetensors", "--seed", "-1"],
              19: ["compare", "lenet5.yaml", "tiny.yaml", "--batch", "1000000000000"]}


def gen_args(rng: random.Random, index: int) -> Case:
    commands = ["check", "summary", "run", "run", "compile", "weights init", "weights import", "render", "export",
                "import", "compare", "expand", "schema", "ops", "odd"]
    cmd = commands[index % len(commands)] if index < len(commands) else rng.choice(commands)
    files = {"lenet5.yaml": zoo()["specs/lenet5.yaml"], "tiny.yaml": TINY.encode(), "relu.yaml": RELU.encode(),
             "resnet.yaml": RESNET.encode(), "w.safetensors": lenet_weights_file(), "x.npy": npy_bytes(),
             "x.png": small_png(), "map.yaml": b"rename: {}\nregex: [['^model\\.', '']]\n",
             "ck.safetensors": lenet_weights_file(prefix="model."), "model.onnx": small_onnx()}
    c = Case("args", index, f"args {cmd}", [], files=files, dirs=["d"])
    if index in ARGS_FIRST:  # what issue #25 found, early, so that a short run covers it
        c.argv = ARGS_FIRST[index]
        c.kind = f"args {c.argv[0]} {' '.join(c.argv[2:])}"
        return c
    if cmd == "odd":
        c.argv = rng.choice([[], ["--version"], ["-h"], ["nope"], ["weights"], ["weights", "nope"], ["--", "check"],
                             ["check"], ["run"], ["summary", "lenet5.yaml", "--bat", "2"], ["ops", "--json"],
                             ["check", "--", "-x.yaml"], ["summary", "lenet5.yaml", "-V"], ["é"], [""],
                             ["check", "lenet5.yaml"] * 50, ["summary", "--help"], ["run", "lenet5.yaml", "--batch"]])
        c.kind += f" {' '.join(c.argv)[:30]}"
        return c
    if cmd == "weights import":
        ckpt = sane_or(rng, ["ck.safetensors", "w.safetensors"], ["nowhere.safetensors", "d", "", "x.npy", "map.yaml"], 0.2)
        required = [["--spec", spec_arg(rng)], ["-o", out_arg(rng, ".safetensors")]]
        positional = [ckpt]
        prefix = ["weights", "import"]
    elif cmd == "import":
        model = sane_or(rng, ["model.onnx"], ["nowhere.onnx", "d", "", "x.npy", "lenet5.yaml", "w.safetensors"], 0.4)
        required, positional, prefix = [["-o", out_arg(rng, ".yaml")]], [model], ["import"]
    elif cmd == "compare":
        n = rng.choice([1, 2, 2, 3])
        positional = [sane_or(rng, ["lenet5.yaml", "tiny.yaml", "resnet.yaml", "resnet.yaml:deep"],
                              ["lenet5.yaml:nope", "lenet5.yaml:", ":", "nowhere.yaml", "d", ""], 0.25) for _ in range(n)]
        required, prefix = [], ["compare"]
    elif cmd in ("schema", "ops"):
        required, positional, prefix = ([["-o", out_arg(rng, ".json")]] if cmd == "schema" and rng.random() < 0.5 else []), [], [cmd]
    else:
        prefix = cmd.split()
        positional = [spec_arg(rng)]
        required = []
        if cmd == "weights init":
            required = [["-o", out_arg(rng, ".safetensors")]]
        elif cmd == "render":
            required = [["-o", out_arg(rng, rng.choice([".dot", ".svg", ".png", ".pdf", ".gv", ".txt"]))]]
        elif cmd == "export":
            required = [["--onnx", out_arg(rng, ".onnx")]]
    options = args_options(rng, cmd)
    chosen = [o for o in options if rng.random() < 0.35]
    chosen += [r for r in required if rng.random() < 0.95]
    if rng.random() < 0.1 and chosen:
        chosen.append(list(rng.choice(chosen)))  # an option given twice
    if rng.random() < 0.05:
        chosen.append([rng.choice(["--nope", "-z", "--batch=", "--seed=-1", "--batch=1000000000000"])])
    rng.shuffle(chosen)
    argv = list(prefix)
    if rng.random() < 0.5:
        argv += positional
        for o in chosen:
            argv += o
    else:
        for o in chosen:
            argv += o
        argv += positional
    if "-o" in argv or "--onnx" in argv or "--weights-out" in argv:  # some outputs exist already
        if rng.random() < 0.2:
            for flag in ("-o", "--onnx", "--weights-out"):
                if flag in argv and argv.index(flag) + 1 < len(argv):
                    out = argv[argv.index(flag) + 1]
                    if out and "/" not in out and out not in files and len(os.fsencode(out)) < 250:
                        c.files[out] = b"old\n"
    c.argv = argv
    return c


# ---------------------------------------------------------------------------------------------
# Family 5: input files, weights, checkpoints and rename maps

_cache: dict[str, bytes] = {}


def npy_bytes(array=None) -> bytes:
    """An array as .npy bytes; without one, a good lenet input (1×1×32×32 float32)."""
    import numpy as np
    if array is None:
        array = np.random.default_rng(0).standard_normal((1, 1, 32, 32)).astype("<f4")
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def npy_header(shape, descr="<f4", fortran=False, body=b"") -> bytes:
    header = repr({"descr": descr, "fortran_order": fortran, "shape": shape}).encode()
    header += b" " * ((64 - (10 + len(header) + 1) % 64) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + body


def png(width: int, height: int, mode: str = "L", rows: bytes | None = None, idat: bytes | None = None) -> bytes:
    """A PNG written by hand: any declared size (the data may be short or absent)."""
    color = {"L": 0, "RGB": 2, "RGBA": 6}[mode]

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, color, 0, 0, 0)
    if idat is None:
        idat = zlib.compress(rows if rows is not None else b"")
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def huge_png(side: int = 30000) -> bytes:
    """A real side×side grey PNG (all zeros: 30000² compresses to about 0.9 MB), made once and cached
    in the temporary folder, since compressing 900 MB of rows takes seconds."""
    key = f"huge{side}"
    if key in _cache:
        return _cache[key]
    path = Path(tempfile.gettempdir()) / "netspec-fuzz-cache" / f"zeros-{side}x{side}.png"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        z = zlib.compressobj(9)
        row = b"\x00" * (side + 1)
        parts = [z.compress(row * 500) for _ in range(side // 500)] + [z.compress(row * (side % 500)), z.flush()]
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(png(side, side, "L", idat=b"".join(parts)))
        os.replace(tmp, path)
    _cache[key] = path.read_bytes()
    return _cache[key]


def small_png(mode: str = "L", size=(8, 8)) -> bytes:
    key = f"png{mode}{size}"
    if key not in _cache:
        from PIL import Image
        buffer = io.BytesIO()
        image = Image.new({"I16": "I;16"}.get(mode, mode), size)
        if mode == "P":
            image.putpalette(list(range(256)) * 3)
        image.save(buffer, format="PNG")
        _cache[key] = buffer.getvalue()
    return _cache[key]


def small_image(fmt: str, mode: str = "RGB", size=(16, 12)) -> bytes:
    key = f"{fmt}{mode}{size}"
    if key not in _cache:
        from PIL import Image
        buffer = io.BytesIO()
        image = Image.new(mode, size, color=(200, 30, 40) if mode == "RGB" else None)
        if fmt == "GIF":
            frames = [Image.new("P", size, i) for i in range(3)]
            frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
        else:
            image.save(buffer, format=fmt)
        _cache[key] = buffer.getvalue()
    return _cache[key]


def safetensors_bytes(tensors: dict) -> bytes:
    from safetensors.numpy import save
    return save(tensors)


def raw_safetensors(header: dict | bytes, body: bytes = b"", length: int | None = None) -> bytes:
    data = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(data) if length is None else length) + data + body


def lenet_weights(prefix: str = "", dtype="float32"):
    import numpy as np
    rng = np.random.default_rng(0)
    return {prefix + k: (rng.standard_normal(s) * 0.1).astype(dtype) for k, s in LENET_WEIGHTS.items()}


def lenet_weights_file(prefix: str = "") -> bytes:
    key = f"lenetw{prefix}"
    if key not in _cache:
        _cache[key] = safetensors_bytes(lenet_weights(prefix))
    return _cache[key]


def small_onnx() -> bytes:
    """A one-Relu ONNX model, and its bytes (cached)."""
    if "onnx" not in _cache:
        try:
            import onnx
            from onnx import TensorProto, helper
            x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])
            y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 8, 8])
            graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
            _cache["onnx"] = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
        except ImportError:
            _cache["onnx"] = b"\x08\x07"
    return _cache["onnx"]


def weights_variant(rng: random.Random, prefix: str = "", forced: str | None = None) -> tuple[bytes, str]:
    """A lenet weights file, good or damaged in one way."""
    import numpy as np
    kind = forced or rng.choice(["good", "good", "missing", "extra", "shape", "float64", "float16", "int32", "bool", "nan", "inf",
                       "empty_tensor", "scalar", "truncated", "header_json", "header_len_huge", "header_len_short",
                       "offsets_out", "offsets_reversed", "bf16", "f8", "unknown_dtype", "negative_shape", "empty_file",
                       "seven_bytes", "npz", "npy", "text", "metadata", "dup_keys", "overflow_shape", "weird_keys",
                       "no_tensors"])
    w = lenet_weights(prefix)
    key = prefix + "conv1.weight"
    if kind == "good":
        return safetensors_bytes(w), kind
    if kind == "missing":
        del w[rng.choice(list(w))]
    elif kind == "extra":
        w[prefix + rng.choice(["conv9.weight", "num_batches_tracked", "conv1.weight.x", "", " ", "é"])] = np.zeros(3, "f4")
    elif kind == "shape":
        w[key] = np.zeros(rng.choice([(6, 1, 5), (6, 1, 5, 6), (1, 6, 5, 5), (0, 1, 5, 5), (6, 1, 5, 5, 1)]), "f4")
    elif kind in ("float64", "float16", "int32", "bool"):
        w[key] = w[key].astype(kind)
    elif kind in ("nan", "inf"):
        w[key][0, 0, 0, 0] = np.nan if kind == "nan" else np.inf
    elif kind == "empty_tensor":
        w[prefix + "conv1.bias"] = np.zeros((0,), "f4")
    elif kind == "scalar":
        w[prefix + "conv1.bias"] = np.array(1.0, dtype="f4")
    if kind in ("missing", "extra", "shape", "float64", "float16", "int32", "bool", "nan", "inf", "empty_tensor", "scalar"):
        return safetensors_bytes(w), kind
    good = safetensors_bytes(w)
    n = struct.unpack("<Q", good[:8])[0]
    header = json.loads(good[8:8 + n])
    body = good[8 + n:]
    entry = header[key]
    if kind == "truncated":
        return good[:rng.randrange(8, len(good))], kind
    if kind == "header_json":
        return raw_safetensors(good[8:8 + n].replace(b"}", b"", 1), body), kind
    if kind == "header_len_huge":
        return raw_safetensors(good[8:8 + n], body, length=rng.choice([2**63, 2**40, 10**9, len(good)])), kind
    if kind == "header_len_short":
        return raw_safetensors(good[8:8 + n], body, length=rng.randint(0, n - 1)), kind
    if kind == "offsets_out":
        entry["data_offsets"] = [0, 10**12]
    elif kind == "offsets_reversed":
        entry["data_offsets"] = list(reversed(entry["data_offsets"]))
    elif kind in ("bf16", "f8", "unknown_dtype"):
        entry["dtype"] = {"bf16": "BF16", "f8": "F8_E4M3", "unknown_dtype": "X9"}[kind]
    elif kind == "negative_shape":
        entry["shape"] = [-6, 1, 5, 5]
    elif kind == "overflow_shape":
        entry["shape"] = [2**62, 2**62, 1, 1]
    elif kind == "metadata":
        header["__metadata__"] = rng.choice([{"a": 1}, [], "x", {"spec": "\x00"}, None])
    elif kind == "weird_keys":
        header["\x00"] = header.pop(key)
    elif kind == "no_tensors":
        header = {"__metadata__": {}}
        body = b""
    elif kind == "dup_keys":
        text = json.dumps(header)
        return raw_safetensors(text[:-1].encode() + b", " + json.dumps({key: entry})[1:-1].encode() + b"}", body), kind
    elif kind == "empty_file":
        return b"", kind
    elif kind == "seven_bytes":
        return b"\x00" * 7, kind
    elif kind == "npz":
        buffer = io.BytesIO()
        np.savez(buffer, **{k.replace(".", "_"): v for k, v in w.items()})
        return buffer.getvalue(), kind
    elif kind == "npy":
        return npy_bytes(), kind
    elif kind == "text":
        return b"conv1.weight: [1, 2, 3]\n", kind
    return raw_safetensors(header, body), kind


def input_variant(rng: random.Random, channels: int, forced: str | None = None) -> tuple[str, bytes, str]:
    """(file name, bytes, kind): an input for `run --input` of a spec with 1 (lenet) or 3 (tiny) channels."""
    import numpy as np
    dims = (1, 32, 32) if channels == 1 else (3, 8, 8)
    kind = forced or rng.choice(["npy_good", "npy_sample", "npy_batch", "npy_empty_batch", "npy_shape", "npy_rank1", "npy_rank5",
                       "npy_scalar", "npy_f64", "npy_f16", "npy_int8", "npy_bool", "npy_complex", "npy_object",
                       "npy_str", "npy_bigendian", "npy_fortran", "npy_nan", "npy_inf", "npy_truncated",
                       "npy_header_huge", "npy_header_garbage", "npy_magic", "npz_as_npy", "npz", "empty", "text_npy",
                       "png_good", "png_rgba", "png_p", "png_16bit", "png_1x1", "png_tall", "jpeg", "jpeg_truncated",
                       "gif_anim", "bmp", "webp", "tiff", "text_png", "png_header_huge", "png_zero", "png_truncated",
                       "png_bomb", "huge_png", "png_12000", "npy_as_png", "dir_npy", "png_cmyk_jpeg"])
    good = np.random.default_rng(1).standard_normal((1,) + dims).astype("f4")
    if kind == "npy_good":
        return "x.npy", npy_bytes(good), kind
    if kind == "npy_sample":
        return "x.npy", npy_bytes(good[0]), kind
    if kind == "npy_batch":
        return "x.npy", npy_bytes(np.repeat(good, 3, axis=0)), kind
    if kind == "npy_empty_batch":
        return "x.npy", npy_bytes(good[:0]), kind
    if kind == "npy_shape":
        return "x.npy", npy_bytes(np.zeros(rng.choice([(1, 2, 32, 32), (1, 3, 5, 5), (1, 1, 0, 32), (2, 1, 33, 32)]), "f4")), kind
    if kind == "npy_rank1":
        return "x.npy", npy_bytes(np.zeros(1024, "f4")), kind
    if kind == "npy_rank5":
        return "x.npy", npy_bytes(good[None]), kind
    if kind == "npy_scalar":
        return "x.npy", npy_bytes(np.float32(1)), kind
    if kind in ("npy_f64", "npy_f16", "npy_int8", "npy_bool", "npy_complex"):
        dtype = {"npy_f64": "f8", "npy_f16": "f2", "npy_int8": "i1", "npy_bool": "?", "npy_complex": "c8"}[kind]
        return "x.npy", npy_bytes(good.astype(dtype)), kind
    if kind == "npy_object":
        return "x.npy", npy_header((1,) + dims, descr="|O", body=b"\x80\x04N."), kind
    if kind == "npy_str":
        return "x.npy", npy_bytes(np.full((1,) + dims, "ab")), kind
    if kind == "npy_bigendian":
        return "x.npy", npy_bytes(good.astype(">f4")), kind
    if kind == "npy_fortran":
        return "x.npy", npy_bytes(np.asfortranarray(good)), kind
    if kind in ("npy_nan", "npy_inf"):
        bad = good.copy()
        bad[0, 0, 0, :4] = np.nan if kind == "npy_nan" else np.inf
        return "x.npy", npy_bytes(bad), kind
    if kind == "npy_truncated":
        data = npy_bytes(good)
        return "x.npy", data[:rng.randrange(1, len(data))], kind
    if kind == "npy_header_huge":
        shape = (10**12,) if forced else rng.choice([(10**12,), (1, 1, 10**6, 10**6), (2**62, 4), (-1, 1, 32, 32), (2**63,)])
        return "x.npy", npy_header(shape, body=b"\x00" * 64), kind
    if kind == "npy_header_garbage":
        return "x.npy", b"\x93NUMPY\x01\x00" + struct.pack("<H", 30) + b"{'descr': __import__('os')}  \n", kind
    if kind == "npy_magic":
        return "x.npy", b"\x93NUMPY\x09\x09" + npy_bytes(good)[8:], kind
    if kind in ("npz_as_npy", "npz"):
        buffer = io.BytesIO()
        np.savez(buffer, x=good)
        return ("x.npy" if kind == "npz_as_npy" else "x.npz"), buffer.getvalue(), kind
    if kind == "empty":
        return rng.choice(["x.npy", "x.png", "x.jpg"]), b"", kind
    if kind == "text_npy":
        return "x.npy", b"1 2 3\n", kind
    if kind == "png_good":
        return "x.png", small_png("L" if channels == 1 else "RGB", (40, 30)), kind
    if kind in ("png_rgba", "png_p", "png_16bit"):
        return "x.png", small_png({"png_rgba": "RGBA", "png_p": "P", "png_16bit": "I16"}[kind]), kind
    if kind == "png_1x1":
        return "x.png", small_png("RGB", (1, 1)), kind
    if kind == "png_tall":
        return "x.png", small_png("L", rng.choice([(1, 20000), (20000, 1), (1, 3000)])), kind
    if kind in ("jpeg", "jpeg_truncated"):
        data = small_image("JPEG", "RGB", (64, 48))
        return "x.jpg", data if kind == "jpeg" else data[:len(data) // 2], kind
    if kind == "png_cmyk_jpeg":
        return "x.jpeg", small_image("JPEG", "CMYK", (16, 16)), kind
    if kind == "gif_anim":
        return "x.gif", small_image("GIF"), kind
    if kind in ("bmp", "webp", "tiff"):
        try:
            return f"x.{kind}", small_image(kind.upper(), "RGB"), kind
        except (KeyError, OSError):
            return f"x.{kind}", b"", kind
    if kind == "text_png":
        return "x.png", b"this is not a picture\n", kind
    if kind == "png_header_huge":
        w, h = rng.choice([(30000, 30000), (65535, 65535), (2**31 - 1, 1), (1, 2**31 - 1), (100000, 100000)])
        return "x.png", png(w, h, rng.choice(["L", "RGB"]), rows=b"\x00" * 10), kind
    if kind == "png_zero":
        return "x.png", png(0, 0), kind
    if kind == "png_truncated":
        data = small_png("RGB", (40, 30))
        return "x.png", data[:rng.randrange(8, len(data))], kind
    if kind == "png_bomb":  # declared 20000×20000 (400 Mpx): over twice Pillow's limit
        return "x.png", png(20000, 20000, "L", idat=zlib.compress(b"\x00" * 20001 * 100)), kind
    if kind == "huge_png":
        return "x.png", huge_png(30000), kind
    if kind == "png_12000":  # 144 Mpx: over Pillow's warning limit, under its error limit
        return "x.png", huge_png(12000), kind
    if kind == "npy_as_png":
        return "x.png", npy_bytes(good), kind
    return "x.npy/", b"", kind  # dir_npy


def map_variant(rng: random.Random, forced: str | None = None) -> tuple[bytes, dict | None, str]:
    """(map file, extra checkpoint keys or None, kind)."""
    kind = forced or rng.choice(["rename", "regex", "regex_bad", "regex_catastrophic", "regex_catastrophic", "repl_bad_group",
                       "repl_named", "collide", "not_yaml", "not_mapping", "unknown_key", "rename_bad", "regex_not_list",
                       "rule_shape", "empty", "huge_list", "regex_empty_match", "control", "tagged"])
    if kind == "rename":
        return b"rename: {model.conv1.weight: conv1.weight}\nregex: [['^model\\.', '']]\n", None, kind
    if kind == "regex":
        return b"regex: [['^model\\.(.*)$', '\\1']]\n", None, kind
    if kind == "regex_bad":
        return b"regex: [[" + rng.choice([b"'('", b"'[a-'", b"'*'", b"'(?P<a>x)(?P<a>y)'", b"'\\\\'", b"'(?<=a+)b'"]) + \
            b", 'x']]\n", None, kind
    if kind == "regex_catastrophic":
        n = 40 if forced else rng.choice([24, 28, 32, 40])
        pattern = r"^(a+)+$" if forced else rng.choice([r"^(a+)+$", r"^(a|a)*$", r"^(a|aa)+$", r"(a*)*b", r"^(\w+\s?)*$"])
        return json.dumps({"regex": [[pattern, "x"], ["^model\\.", ""]]}).encode(), {"a" * n + "!": (1,)}, f"{kind} {n}"
    if kind == "repl_bad_group":
        return b"regex: [['^model\\.', '\\\\9']]\n", None, kind
    if kind == "repl_named":
        return b"regex: [['^model\\.', '\\\\g<nope>']]\n", None, kind
    if kind == "collide":
        return b"regex: [['.*', 'same']]\n", None, kind
    if kind == "not_yaml":
        return b"regex: [[\n", None, kind
    if kind == "not_mapping":
        return rng.choice([b"- a\n- b\n", b"3\n", b"''\n", b"~\n"]), None, kind
    if kind == "unknown_key":
        return b"renames: {}\n", None, kind
    if kind == "rename_bad":
        return rng.choice([b"rename: [a, b]\n", b"rename: {a: 1}\n", b"rename: {1: a}\n", b"rename: x\n"]), None, kind
    if kind == "regex_not_list":
        return rng.choice([b"regex: x\n", b"regex: {a: b}\n", b"regex: 3\n"]), None, kind
    if kind == "rule_shape":
        return rng.choice([b"regex: [[a]]\n", b"regex: [[a, b, c]]\n", b"regex: [a]\n", b"regex: [[1, 2]]\n",
                           b"regex: [[null, x]]\n"]), None, kind
    if kind == "empty":
        return b"", None, kind
    if kind == "huge_list":
        return json.dumps({"regex": [["^model\\.", ""]] + [["x", "y"]] * 5000}).encode(), None, kind
    if kind == "regex_empty_match":
        return b"regex: [['', 'p.'], ['^model\\.', '']]\n", None, kind
    if kind == "control":
        return b"regex: [['^model\\.', '']]\x00\n", None, kind
    return b"regex: !!python/object:os.system [['^model\\.', '']]\n", None, kind


def gen_data(rng: random.Random, index: int) -> Case:
    import numpy as np
    lenet = zoo()["specs/lenet5.yaml"]
    files = {"lenet5.yaml": lenet, "tiny.yaml": TINY.encode()}
    what = ["input", "input", "weights", "checkpoint", "map"][index % 5]
    control = (index // 5) % 5 == 0  # cases 0-4, 25-29, ...: the good files, so that successes are exercised
    # cases 5-9: the worst of each kind (what issue #25 found), so that a short run covers them
    forced = {5: "huge_png", 6: "npy_header_huge", 7: "header_len_huge", 8: "truncated", 9: "regex_catastrophic"}.get(index)
    c = Case("data", index, f"data {what}", [], files=files)
    if what == "input":
        spec = rng.choice(["lenet5.yaml", "tiny.yaml"])
        if control:
            name, data, kind = ("x.npy", npy_bytes(np.zeros((1, 1, 32, 32) if spec == "lenet5.yaml" else (1, 3, 8, 8),
                                                          "f4")), "npy_good")
        else:
            name, data, kind = input_variant(rng, 1 if spec == "lenet5.yaml" else 3, forced)
        if name.endswith("/"):
            c.dirs.append(name.rstrip("/"))
            name = name.rstrip("/")
        else:
            c.files[name] = data
        c.argv = ["run", spec, "--input", name, "--repeat", "1", "--threads", "1"] + rng.choice(
            [[], [], ["--batch", "2"], ["--backend", "reference"], ["-o", "out.npy"]])
        c.kind += f" {kind}"
        c.mutated = name if name in c.files else None
    elif what == "weights":
        data, kind = (lenet_weights_file(), "good") if control else weights_variant(rng, forced=forced)
        c.files["w.safetensors"] = data
        cmd = rng.choice(["run", "run", "compile", "export"])
        c.argv = {"run": ["run", "lenet5.yaml", "--weights", "w.safetensors", "--repeat", "1", "--threads", "1"],
                  "compile": ["compile", "lenet5.yaml", "--weights", "w.safetensors"],
                  "export": ["export", "lenet5.yaml", "--weights", "w.safetensors", "--onnx", "o.onnx"]}[cmd]
        c.kind += f" {kind} | {cmd}"
        c.mutated = "w.safetensors"
    elif what == "checkpoint":
        suffix = ".safetensors" if forced else rng.choice([".safetensors"] * 6 + [".pt", ".pth", ".bin", ".ckpt", ".tar",
                                                                                 ".npz", "", ".SAFETENSORS"])
        if control:
            data, kind = lenet_weights_file(), "good"
            suffix = ".safetensors"
        elif suffix == ".safetensors":
            data, kind = weights_variant(rng, forced=forced)
        else:
            data, kind = rng.choice([lenet_weights_file(), b"", b"PK\x03\x04garbage", b"\x80\x02}q\x00."]), f"suffix {suffix or 'none'}"
        name = "ck" + suffix
        c.files[name] = data
        c.argv = ["weights", "import", name, "--spec", "lenet5.yaml", "-o", "o.safetensors"]
        c.kind += f" {kind}"
        c.mutated = name
    else:
        if control:
            data, extra, kind = b"regex: [['^model\\.', '']]\n", None, "regex"
        else:
            data, extra, kind = map_variant(rng, forced)
        w = lenet_weights("model.")
        for k, shape in (extra or {}).items():
            w[k] = np.zeros(shape, "f4")
        c.files["ck.safetensors"] = safetensors_bytes(w)
        c.files["m.yaml"] = data
        c.argv = ["weights", "import", "ck.safetensors", "--spec", "lenet5.yaml", "-o", "o.safetensors", "--map", "m.yaml"]
        c.kind += f" {kind}"
        c.mutated = "m.yaml"
    return c


GENERATORS = {"text": gen_text, "tree": gen_tree, "files": gen_files, "args": gen_args, "data": gen_data}


def make_case(family: str, seed: int, index: int) -> Case:
    rng = random.Random(f"{seed}:{family}:{index}")
    return GENERATORS[family](rng, index)


# ---------------------------------------------------------------------------------------------
# The worker: runs cases in-process, one at a time, under a memory cap


class Captured(io.StringIO):
    """A stream that keeps the first `limit` characters. As stdout it encodes like a real UTF-8
    stream (strict), so text that a terminal or pipe would refuse fails here too."""

    def __init__(self, limit: int, strict: bool):
        super().__init__()
        self.limit, self.strict, self.size = limit, strict, 0
        self.handler = "strict"

    def reconfigure(self, errors: str | None = None, **_) -> None:
        """As TextIOWrapper.reconfigure: the error handler encoding uses from now on."""
        self.handler = errors or self.handler

    def write(self, s):
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        if self.strict:
            s.encode("utf-8", self.handler)
        if self.size < self.limit:
            super().write(s[:self.limit - self.size])
            self.size += min(len(s), self.limit - self.size)
        return len(s)

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self):
        return "utf-8"


def run_in_worker(msg: dict) -> dict:
    import contextlib
    import traceback
    import netspec.cli
    out, err = Captured(4000, strict=True), Captured(20000, strict=False)
    saved_env = {k: os.environ.get(k) for k in msg.get("env", {})}
    os.environ.update(msg.get("env", {}))
    result = {"rc": None, "exc": None}
    started = time.perf_counter()
    try:
        os.chdir(msg["cwd"])
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                result["rc"] = netspec.cli.main(msg["argv"])
            except SystemExit as e:  # argparse: 2 for usage errors, 0 for --help and --version
                code = e.code
                result["rc"] = code if isinstance(code, int) else (0 if code is None else 1)
                if not isinstance(code, int) and code is not None:
                    print(code, file=err)
    except BaseException as e:  # noqa: BLE001 - anything escaping main is what we look for
        tb = traceback.extract_tb(e.__traceback__)
        last = tb[-1] if tb else None
        where = f" at {Path(last.filename).name}:{last.lineno}" if last else ""
        result["exc"] = f"{type(e).__name__}: {str(e)[:300]}{where}"
    finally:
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        try:
            os.chdir("/")
        except OSError:
            pass
    result.update(stdout=out.getvalue(), stderr=err.getvalue(), secs=round(time.perf_counter() - started, 3))
    return result


WARM_UP = [["run", "lenet.yaml", "--repeat", "1"], ["run", "lenet.yaml", "--repeat", "1", "--mode", "train", "--batch", "2"],
           ["run", "tiny.yaml", "--repeat", "1", "--threads", "1"], ["run", "tiny.yaml", "--repeat", "1", "--mode", "train"],
           ["run", "relu.yaml", "--repeat", "1"]]


def warm_up() -> None:
    """Run the small specs once before the first case, untimed: a kernel that is not in Numba's
    cache (the first run after the kernels' source changed) compiles for tens of seconds, which a
    case's time bound would take for a hang."""
    folder = Path(tempfile.mkdtemp(prefix="netspec-fuzz-warm-"))
    try:
        (folder / "lenet.yaml").write_bytes(zoo()["specs/lenet5.yaml"])
        (folder / "tiny.yaml").write_text(TINY)
        (folder / "relu.yaml").write_text(RELU)
        for argv in WARM_UP:
            run_in_worker({"argv": argv, "cwd": str(folder)})
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def worker(mem_gib: float, warm: bool = True) -> None:
    proto_in = os.fdopen(os.dup(0), "rb")
    proto_out = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)  # C-level output (LLVM, graphviz) must not corrupt the protocol
    if mem_gib > 0:
        import resource
        limit = int(mem_gib * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    os.environ.pop("NETSPEC_DEBUG", None)
    os.environ.pop("NETSPEC_PATH", None)
    import netspec.cli  # noqa: F401 - import before the first case, so its time is not counted
    if warm:
        warm_up()
    proto_out.write(b'{"ready": true}\n')
    proto_out.flush()
    for line in proto_in:
        try:
            result = run_in_worker(json.loads(line))
        except MemoryError:
            result = {"rc": None, "exc": "MemoryError: in the worker", "stdout": "", "stderr": "", "secs": 0}
        proto_out.write(json.dumps(result).encode() + b"\n")
        proto_out.flush()


# ---------------------------------------------------------------------------------------------
# Classification

DIAG_RE = re.compile(r"^(?P<loc>.+?): (?:error|note|warning): ")
LOCATED_RE = re.compile(r"^.+:(?P<line>\d+):(?P<col>\d+)$")


def unlocated_lines(stderr: str) -> list[str]:
    bad = []
    for line in stderr.splitlines():
        m = DIAG_RE.match(line)
        if not m:
            continue
        loc = m.group("loc")
        if loc == "netspec" or loc.startswith("netspec ") or loc.startswith("usage"):
            continue
        located = LOCATED_RE.match(loc)
        if located and int(located.group("line")) >= 1 and int(located.group("col")) >= 1:
            continue
        bad.append(line)
    return bad


def classify(case: Case, result: dict) -> tuple[str, str]:
    """(class, group key: the first line of the error, or what the case did)."""
    if result.get("hang"):
        return "hang", f"hang: {normalize(case.kind.split(' | ')[0])}"
    if result.get("died"):
        return "crash", f"worker died ({result['died']}): {normalize(case.kind)}"
    if result.get("exc"):
        return "crash", f"exception escaped main: {normalize(result['exc'])}"
    out = result.get("stdout", "") + "\n" + result.get("stderr", "")
    for pattern in case.leak:
        if re.search(pattern, out):
            return "leak", f"leak: the output quotes a file outside the spec's folder ({case.kind})"
    rc, stderr = result.get("rc"), result.get("stderr", "")
    if rc == 0:
        return "ok", ""
    if rc == 3:
        line = next((x for x in stderr.splitlines() if "internal error" in x), stderr.strip().split("\n")[0])
        if "MemoryError" in line:
            return "crash", normalize(line)
        return "internal", normalize(line)
    if rc in (1, 2):
        if not stderr.strip():
            return "unclean", f"exit {rc} without a message: {normalize(case.kind)}"
        if "Traceback (most recent call last)" in stderr:
            return "unclean", f"exit {rc} with a traceback: {normalize(first_error(stderr))}"
        bad = unlocated_lines(stderr)
        if bad:
            return "unclean", f"unlocated diagnostic: {normalize(bad[0])}"
        return "clean", normalize(first_error(stderr))
    return "unclean", f"exit status {rc!r}: {normalize(case.kind)}"


def first_error(stderr: str) -> str:
    for line in stderr.splitlines():
        if ": error: " in line or "error" in line.lower():
            return line
    return stderr.strip().split("\n")[0]


def normalize(line: str) -> str:
    """A first line of an error with the details that vary from case to case taken out."""
    line = re.sub(r"/tmp/[^\s'\":,)]*", "<tmp>", line)
    line = re.sub(r"'[^']{0,200}'", "'…'", line)
    line = re.sub(r'"[^"]{0,200}"', '"…"', line)
    line = re.sub(r"(?:#x|0x)?\d[0-9a-fA-F]*", "N", line)
    return line[:200]


# ---------------------------------------------------------------------------------------------
# The driver


class Worker:
    def __init__(self, mem_gib: float, startup: float = 900.0, tree: Path = REPO):
        env = dict(os.environ)
        env["PYTHONPATH"] = str(tree) + os.pathsep + env.get("PYTHONPATH", "")
        env.pop("NETSPEC_DEBUG", None)
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker", "--mem-gib", str(mem_gib)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     env=env, start_new_session=True)
        self.buffer = b""
        self.ready = False
        self.case: Case | None = None
        self.root: Path | None = None
        self.deadline = time.monotonic() + startup  # the import of netspec and the warm-up runs
        self.served = 0

    def send(self, case: Case, root: Path, timeout: float) -> None:
        self.case, self.root = case, root
        self.deadline = time.monotonic() + timeout
        msg = {"argv": case.argv_at(root), "cwd": str(root), "env": case.env_at(root)}
        self.proc.stdin.write(json.dumps(msg).encode() + b"\n")
        self.proc.stdin.flush()

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass


@dataclass
class Outcome:
    case: Case
    cls: str
    key: str
    secs: float
    detail: str = ""
    seed: int | None = None
    retried: bool = False  # a hang is run again on a fresh worker before it counts


@dataclass
class Report:
    outcomes: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0
    keep: Path | None = None

    def counts(self) -> dict[str, Counter]:
        table: dict[str, Counter] = defaultdict(Counter)
        for o in self.outcomes:
            table[o.case.family][o.cls] += 1
        return table

    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.cls in FAILURES]

    def table(self) -> str:
        counts = self.counts()
        header = f"{'family':<8} {'cases':>6}" + "".join(f" {c:>8}" for c in CLASSES)
        rows = [header, "-" * len(header)]
        total: Counter = Counter()
        for fam in FAMILIES:
            if fam not in counts:
                continue
            n = sum(counts[fam].values())
            total.update(counts[fam])
            rows.append(f"{fam:<8} {n:>6}" + "".join(f" {counts[fam][c]:>8}" for c in CLASSES))
        rows.append("-" * len(header))
        rows.append(f"{'total':<8} {sum(total.values()):>6}" + "".join(f" {total[c]:>8}" for c in CLASSES))
        return "\n".join(rows)

    def groups(self) -> dict[tuple[str, str], list[Outcome]]:
        groups: dict[tuple[str, str], list[Outcome]] = defaultdict(list)
        for o in self.failures():
            groups[(o.cls, o.key)].append(o)
        return groups

    def format_failures(self, every: bool = True) -> str:
        lines = []
        if every and self.failures():
            lines.append("\nEvery failing case (family:index  class  reproducer):")
            for o in self.failures():
                lines.append(f"  {o.case.name:<11} {o.cls:<8} {self.reproducer(o)}")
        groups = self.groups()
        if groups:
            lines.append(f"\n{len(groups)} distinct failure classes (smallest reproducer of each):")
            for (cls, key), items in sorted(groups.items(), key=lambda kv: (FAILURES.index(kv[0][0]), -len(kv[1]))):
                smallest = min(items, key=lambda o: (sum(len(v) for v in o.case.files.values()) if o.case.mutated else 0)
                               + len(" ".join(o.case.argv)))
                fams = Counter(o.case.family for o in items)
                lines.append(f"[{cls}] {key}")
                lines.append(f"    {len(items)} case(s) ({', '.join(f'{f} {n}' for f, n in fams.items())}); "
                             f"e.g. {smallest.case.name} ({smallest.case.kind})")
                lines.append(f"    {self.reproducer(smallest)}")
                if smallest.detail:
                    lines.append(f"    says: {smallest.detail}")
                mutated = smallest.case.mutated
                if mutated and mutated in smallest.case.files:
                    lines.append(f"    {mutated}: {show_bytes(smallest.case.files[mutated])}")
        return "\n".join(lines)

    def reproducer(self, o: Outcome) -> str:
        root = self.keep / case_dirname(o.case) if self.keep else None
        line = o.case.reproducer(root)
        if o.seed is not None:
            line += f"   # tools/fuzz.py --replay {o.case.name} --seed {o.seed}"
        return line

    def to_json(self) -> dict:
        kinds: dict[str, Counter] = defaultdict(Counter)  # how each kind of mutation or file ended
        for o in self.outcomes:
            kind = o.case.kind.split(" | ")[0]
            if o.case.family in ("text", "tree"):
                for part in set(kind.split(" ", 1)[1].split("+")):
                    kinds[normalize(f"{o.case.family} {part}")][o.cls] += 1
            else:
                kinds[normalize(kind)][o.cls] += 1
        return {"seconds": round(self.seconds, 1),
                "counts": {fam: dict(c) for fam, c in self.counts().items()},
                "kinds": {k: dict(c) for k, c in sorted(kinds.items())},
                "failures": [{"case": o.case.name, "class": o.cls, "key": o.key, "kind": o.case.kind,
                              "argv": o.case.argv, "detail": o.detail} for o in self.failures()]}


def show_bytes(data: bytes, limit: int = 400) -> str:
    """A file's content for the report: as text where it is UTF-8 text, else its first bytes."""
    try:
        text = data.decode("utf-8")
        shown = repr(text[:limit])
    except UnicodeDecodeError:
        shown = repr(data[:min(limit, 120)])
    return f"({len(data):,} bytes) {shown}{' ...' if len(data) > limit else ''}"


def case_dirname(case: Case) -> str:
    return f"{case.family}-{case.index:05d}"


def run_cases(cases, *, jobs: int = 2, timeout: float = 20.0, mem_gib: float = 4.0, seconds: float | None = None,
              keep: Path | None = None, verbose: bool = False, seed: int | None = None, log=None,
              tree: Path = REPO) -> Report:
    """Run cases (an iterable of Case) on `jobs` workers; stop early after `seconds` (the cases then
    running are finished). A case that overruns `timeout` is run once more on a fresh worker (whose
    warm-up compiled any kernel missing from Numba's cache) and is a hang only if it overruns again.
    Cases that are not ok or clean are written under `keep`, if given."""
    from collections import deque
    jobs = max(1, min(jobs, 2))
    started = time.monotonic()
    report = Report(keep=keep)
    tmp = Path(tempfile.mkdtemp(prefix="netspec-fuzz-"))
    source = iter(cases)
    retry: deque[Case] = deque()
    retried: set[str] = set()
    exhausted = False
    workers: list[Worker] = []
    selector = selectors.DefaultSelector()

    def spawn() -> Worker:
        w = Worker(mem_gib, tree=tree)
        selector.register(w.proc.stdout, selectors.EVENT_READ, w)
        workers.append(w)
        return w

    def replace(w: Worker) -> None:
        selector.unregister(w.proc.stdout)
        w.kill()
        workers.remove(w)

    def finish(w: Worker, result: dict) -> None:
        case, root = w.case, w.root
        w.case = w.root = None
        unlock(root, case)
        shutil.rmtree(root, ignore_errors=True)
        if result.get("hang") and case.name not in retried:
            retried.add(case.name)
            retry.append(case)
            return
        cls, key = classify(case, result)
        detail = ""
        if cls != "leak":
            detail = (result.get("exc") or first_error(result.get("stderr", "")) or "")[:300]
        o = Outcome(case, cls, key, result.get("secs", timeout), detail, seed, case.name in retried)
        report.outcomes.append(o)
        if cls in FAILURES and keep is not None:
            target = keep / case_dirname(case)
            if target.exists():
                unlock(target, case)
                shutil.rmtree(target, ignore_errors=True)
            case.materialize(target)
        if log is not None and (verbose or cls in FAILURES):
            print(f"{case.name:<11} {cls:<8} {o.secs:6.2f}s  {case.kind[:60]}  {key[:100]}", file=log, flush=True)

    spawn()
    try:
        while True:
            now = time.monotonic()
            out_of_time = seconds is not None and now - started > seconds
            # one worker at a time warms up: the first compiles what Numba's cache lacks, the next reuse it
            if len(workers) < jobs and all(w.ready for w in workers):
                spawn()
            for w in list(workers):
                if not w.ready or w.case is not None:
                    continue
                if w.served >= 400:  # a fresh worker now and then: no slow leaks build up
                    replace(w)
                    continue
                if retry:
                    case = retry.popleft()
                elif exhausted or out_of_time:
                    continue
                else:
                    case = next(source, None)
                    if case is None:
                        exhausted = True
                        continue
                root = tmp / case_dirname(case)
                try:
                    case.materialize(root)
                except OSError as e:
                    report.outcomes.append(Outcome(case, "clean", f"(case not made: {e})", 0.0))
                    unlock(root, case)
                    shutil.rmtree(root, ignore_errors=True)
                    continue
                w.served += 1
                w.send(case, root, timeout)
            busy = [w for w in workers if w.case is not None]
            if not busy and not retry and (exhausted or out_of_time):
                break
            if not workers:
                spawn()
            pending = [w.deadline for w in workers if w.case is not None or not w.ready]
            wait = max(0.05, min(pending) - time.monotonic()) if pending else 0.05
            for key, _ in selector.select(timeout=min(wait, 1.0)):
                w: Worker = key.data
                if w not in workers:
                    continue
                chunk = os.read(w.proc.stdout.fileno(), 1 << 20)
                if not chunk:  # the worker died
                    code = w.proc.wait()
                    if not w.ready:
                        raise RuntimeError(f"a fuzz worker did not start (exit status {code}): "
                                           f"try {sys.executable} {__file__} --worker")
                    if w.case is not None:
                        reason = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit {code}"
                        finish(w, {"died": reason})
                    replace(w)
                    continue
                w.buffer += chunk
                while b"\n" in w.buffer:
                    line, w.buffer = w.buffer.split(b"\n", 1)
                    msg = json.loads(line)
                    if msg.get("ready"):
                        w.ready = True
                    elif w.case is not None:
                        finish(w, msg)
            now = time.monotonic()
            for w in list(workers):
                if now > w.deadline and (w.case is not None or not w.ready):
                    if w.case is None:
                        raise RuntimeError("a fuzz worker did not get ready in time (importing netspec, warming up)")
                    finish(w, {"hang": True})
                    replace(w)
    finally:
        for w in workers:
            w.kill()
        shutil.rmtree(tmp, ignore_errors=True)
        report.seconds = time.monotonic() - started
    return report


def campaign(seed: int, families=FAMILIES, cases: int | None = None, per_family: int | None = None):
    """Cases round-robin over the families: `per_family` each, or `cases` in all, or without end."""
    index = 0
    made = 0
    while True:
        for fam in families:
            if per_family is not None and index >= per_family:
                return
            if cases is not None and made >= cases:
                return
            made += 1
            try:
                yield make_case(fam, seed, index)
            except Exception as e:  # a bug of the fuzzer's own: say so, and go on
                print(f"fuzz: case {fam}:{index} could not be made: {type(e).__name__}: {str(e)[:200]}", file=sys.stderr)
        index += 1


def fuzz(seed: int = 0, *, families=FAMILIES, cases: int | None = None, per_family: int | None = None,
         seconds: float | None = None, **kwargs) -> Report:
    """The Python face of the fuzzer (tests/test_fuzz.py): run a campaign and return its Report."""
    return run_cases(campaign(seed, families, cases, per_family), seconds=seconds, seed=seed, **kwargs)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0, help="seed of the campaign (default 0)")
    parser.add_argument("--cases", type=int, help="cases in all (default: 500, or unbounded with --seconds)")
    parser.add_argument("--seconds", type=float, help="time budget; the cases running then are finished")
    parser.add_argument("--family", action="append", choices=FAMILIES, help="only this family (repeatable)")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes, 1 or 2 (default 2)")
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds a case may take (default 20)")
    parser.add_argument("--mem-gib", type=float, default=4.0, help="address-space cap of a worker (default 4 GiB)")
    parser.add_argument("--keep", type=Path, help="write the files of every failing case under this folder")
    parser.add_argument("--replay", metavar="FAMILY:INDEX", action="append", help="run this case only (repeatable)")
    parser.add_argument("--json", type=Path, help="also write the counts and failures as JSON here")
    parser.add_argument("--tree", type=Path, default=REPO,
                        help="the source tree whose netspec package is fuzzed (default: this repository's)")
    parser.add_argument("--verbose", "-v", action="store_true", help="a line for every case, not only failures")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.mem_gib)
        return 0
    families = tuple(args.family) if args.family else FAMILIES
    if args.replay:
        cases = []
        for item in args.replay:
            fam, _, index = item.partition(":")
            if fam not in FAMILIES or not index.isdigit():
                parser.error(f"--replay expects FAMILY:INDEX, got '{item}'")
            cases.append(make_case(fam, args.seed, int(index)))
        source = cases
        args.verbose = True
    else:
        total = args.cases if args.cases is not None else (None if args.seconds else 500)
        source = campaign(args.seed, families, total)
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    print(f"netspec fuzz: seed {args.seed}, families {', '.join(families)}, {args.jobs} worker(s), "
          f"timeout {args.timeout:g} s, memory cap {args.mem_gib:g} GiB", file=sys.stderr)
    report = run_cases(source, jobs=args.jobs, timeout=args.timeout, mem_gib=args.mem_gib, seconds=args.seconds,
                       keep=args.keep, verbose=args.verbose, seed=args.seed, log=sys.stderr, tree=args.tree.resolve())
    print(f"\n{len(report.outcomes)} cases in {report.seconds:.0f} s\n")
    print(report.table())
    print(report.format_failures())
    if args.json:
        args.json.write_text(json.dumps(report.to_json(), indent=1))
    return 1 if report.failures() else 0


if __name__ == "__main__":
    sys.exit(main())
