"""After the Quick start, every command in the README works as written in a fresh shell.

The README's ```sh blocks (line by line; a line ending in `\\` continues, `#` starts a comment) and
```python blocks (each run whole by `.venv/bin/python`) run in document order, as a new user would
type them, in a fresh folder that looks like a fresh clone after the Quick start: the repository's
files (tracked, and new ones git does not ignore) and `.venv` there standing for the setup's venv.
Each runs with bash in an environment of its own (PATH=/usr/bin:/bin, a fresh HOME; the kernel cache
is kept so that kernels compiled once stay compiled) and must exit with status 0, and the files it
says it writes (-o, --output, --onnx, --weights-out) must exist afterwards. Exceptions, each checked:

- `bash tools/setup.sh [--test] && ...` (the Quick start): setup.sh itself is not run (it installs);
  what it installs must be importable from the venv, and the rest of the line runs.
- `.venv/bin/python -m pytest` (the whole suite, which is what runs this test) only collects it.
- `.venv/bin/pip install -e ".[EXTRA]"`: not run (an editable install from the copy would re-point
  the venv); the extra must exist and what it installs must be importable.
- `--backend cuda` on a machine without an NVIDIA GPU must stop cleanly: exit status 1, a message
  about the missing GPU, no internal error (exit status 3); with a GPU it must run, or, where the
  [cuda] extra is not installed, say that numba.cuda is missing (exit status 1).
- `render` to an image where graphviz's `dot` is missing must write the .dot source and exit with 1.
- A command whose purpose is to show an error says so in its comment, `# ... (exit status N)`, and
  must exit with N.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SYSTEM_PATH = "/usr/bin:/bin"
TIMEOUT = 900  # seconds for one command: a first run on a cold kernel cache compiles for minutes
OUTPUT_OPTIONS = ("-o", "--output", "--onnx", "--weights-out")
SETUP = re.compile(r"^bash tools/setup\.sh(?P<test> --test)?\s*&&\s*")
EXIT_MARK = re.compile(r"#.*\(exit status (\d+)\)\s*$")


@dataclass
class Command:
    line: int  # where it starts in README.md
    lang: str  # "sh" or "python"
    text: str  # as written (continuation lines joined with their backslash-newlines)

    def __str__(self) -> str:
        return f"README.md:{self.line}: {self.text}"


def readme_commands(text: str) -> list[Command]:
    """The commands of the README's ```sh and ```python blocks, in document order."""
    commands, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        fence = re.fullmatch(r"```(\w*)\s*", lines[i])
        if not fence:
            i += 1
            continue
        lang, start, i = fence.group(1), i + 1, i + 1
        while i < len(lines) and lines[i].strip() != "```":
            i += 1
        body = lines[start:i]
        i += 1
        if lang == "python":
            commands.append(Command(start + 1, "python", "\n".join(body) + "\n"))
        elif lang == "sh":
            j = 0
            while j < len(body):
                first, parts = j, [body[j]]
                while parts[-1].rstrip().endswith("\\") and j + 1 < len(body):
                    j += 1
                    parts.append(body[j])
                j += 1
                joined = "\n".join(parts).strip()
                if joined and not joined.startswith("#"):
                    commands.append(Command(start + first + 1, "sh", joined))
    return commands


COMMANDS = readme_commands(README.read_text(encoding="utf-8"))


def words(command: str) -> list[str]:
    """The command's words as bash would split them (comments dropped, continuations joined)."""
    return shlex.split(command.replace("\\\n", " "), comments=True)


# --- what is written ---------------------------------------------------------------------------

def test_the_readme_has_commands_to_check():
    langs = [c.lang for c in COMMANDS]
    assert langs.count("sh") >= 30 and langs.count("python") >= 1, COMMANDS


def test_quick_start_is_two_commands():
    section = README.read_text(encoding="utf-8").split("## Quick start", 1)[1].split("\n## ", 1)[0]
    quick = readme_commands(section)
    assert [SETUP.match(c.text) is not None for c in quick] == [True, True], quick
    assert SETUP.match(quick[0].text).group("test") is None and SETUP.match(quick[1].text).group("test")


def test_every_command_is_written_the_way_the_setup_leaves_it():
    """From the repository root, through the venv: `.venv/bin/netspec`, `.venv/bin/python`, `.venv/bin/pip`."""
    for c in COMMANDS:
        if c.lang != "sh":
            continue
        rest = SETUP.sub("", re.sub(r"(^|\s)#.*$", "", c.text, flags=re.M)).strip()
        for part in re.split(r"\s*(?:&&|\|\||;|\|)\s*", rest):
            assert part.startswith(".venv/bin/"), f"{c}: write '{part.split()[0]}' as the setup leaves it"
    text = README.read_text(encoding="utf-8")
    for span in re.findall(r"`([^`\n]+)`", text):  # commands in the prose too
        first = span.split()[0] if span.split() else ""
        assert not (first in ("python", "python3", "pip") or (first == "netspec" and len(span.split()) > 2)), \
            f"README.md: `{span}`: write it as the setup leaves it (.venv/bin/{first} ...)"


def test_the_limits_are_the_codes():
    from netspec.ops import fields
    from netspec.spec import expand, loader
    limits = " ".join(README.read_text(encoding="utf-8").split("**Limits.**", 1)[1].split("\n\n", 1)[0].split())
    assert loader.MAX_FILE_BYTES % 2**20 == 0 and fields.MAX_SIZE == 2 ** (fields.MAX_SIZE.bit_length() - 1)
    for figure in (f"files over {loader.MAX_FILE_BYTES // 2**20} MiB", f"over {loader.MAX_NODES:,} values",
                   f"networks over {expand.MAX_NODES:,} nodes", f"repeats over {expand.MAX_REPEAT:,}",
                   f"sizes over 2^{fields.MAX_SIZE.bit_length() - 1}"):
        assert figure in limits, f"README.md's Limits should say '{figure}', as the code does: {limits}"


def test_the_quick_start_summary_header_reads_naturally():
    import netspec
    from netspec.report import table
    head = table(netspec.summary(netspec.load(ROOT / "specs" / "resnet18.yaml"))).splitlines()[0]
    assert head == "resnet18: input 1×3×224×224, eval mode"  # (it said "input input 1×3×224×224")


def test_the_sample_inputs_are_up_to_date():
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "samples.py"), "--check"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_the_extras_the_readme_names_exist():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    named = re.findall(r"pip install -e [\"']\.\[(\w+)\][\"']", README.read_text(encoding="utf-8"))
    assert named and set(named) <= set(extras), named


# --- running them ------------------------------------------------------------------------------

def repository_files() -> list[str]:
    """The files of a fresh clone: git's tracked ones and the new ones it does not ignore."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                             capture_output=True, check=True, timeout=60).stdout.decode()
        return [f for f in out.split("\0") if f and (ROOT / f).is_file()]
    except (OSError, subprocess.SubprocessError):  # no git, or not a checkout: everything but the usual debris
        skip = {".git", ".venv", "__pycache__", ".pytest_cache", ".hypothesis", "build"}
        return [p.relative_to(ROOT).as_posix() for p in ROOT.rglob("*")
                if p.is_file() and not skip & set(p.relative_to(ROOT).parts) and not p.name.endswith(".egg-info")]


def fresh_clone(dest: Path) -> None:
    """A copy of the repository with `.venv` standing for the setup's venv.

    The package itself (netspec/) is imported from where this test imports it, as the setup's editable
    install does: one copy of the code, whose compiled kernels Numba caches by source path."""
    import netspec
    package = Path(netspec.__file__).resolve().parent
    for name in repository_files():
        if name.split("/")[0] == package.name and (ROOT / package.name).resolve() == package:
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    venv = Path(sys.prefix)
    if sys.prefix != sys.base_prefix and (venv / "bin" / "netspec").exists():
        (dest / ".venv").symlink_to(venv, target_is_directory=True)
        return
    # not in a venv: shims that run this interpreter, with the package on its path
    bin_ = dest / ".venv" / "bin"
    bin_.mkdir(parents=True)
    path = shlex.quote(str(package.parent))
    shims = {"python": f'exec {shlex.quote(sys.executable)} "$@"',
             "netspec": f'exec {shlex.quote(sys.executable)} -m netspec.cli "$@"',
             "pip": f'exec {shlex.quote(sys.executable)} -m pip "$@"'}
    for name, line in shims.items():
        (bin_ / name).write_text(f'#!/bin/bash\nexport PYTHONPATH={path}"${{PYTHONPATH:+:$PYTHONPATH}}"\n{line}\n')
        (bin_ / name).chmod(0o755)


def fresh_environment(home: Path) -> dict[str, str]:
    env = {"PATH": SYSTEM_PATH, "HOME": str(home), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
           "XDG_CACHE_HOME": os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")}
    for name in ("NUMBA_CACHE_DIR", "TMPDIR"):  # kernels compiled once stay compiled
        if os.environ.get(name):
            env[name] = os.environ[name]
    return env


def has_nvidia_gpu() -> bool:
    return Path("/dev/nvidia0").exists() or Path("/proc/driver/nvidia/gpus").is_dir()


@dataclass
class Result:
    code: int
    out: str
    err: str
    seconds: float


def run(command: str, cwd: Path, env: dict[str, str], stdin: str | None = None, argv: list[str] | None = None) -> Result:
    start = time.perf_counter()
    try:
        r = subprocess.run(argv or ["/bin/bash", "-c", command], cwd=cwd, env=env, input=stdin,
                           capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired as e:
        return Result(-1, str(e.stdout or ""), f"timed out after {TIMEOUT} s", time.perf_counter() - start)
    return Result(r.returncode, r.stdout, r.stderr, time.perf_counter() - start)


def extra_imports(extra: str | None) -> str:
    """A Python snippet that imports netspec and what `pip install -e ".[extra]"` installs."""
    reqs = []
    if extra:
        extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
        assert extra in extras, f"pyproject.toml has no extra [{extra}]"
        reqs = [re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0] for r in extras[extra]]
    return ("import importlib, importlib.metadata as m\n"
            "import netspec\n"
            f"for req in {reqs!r}:\n"
            "    dist = m.distribution(req)\n"
            "    tops = (dist.read_text('top_level.txt') or '').split() or [req.replace('-', '_')]\n"
            "    for top in tops:\n"
            "        if not top.startswith('_'):\n"
            "            importlib.import_module(top)\n")


def check(c: Command, cwd: Path, env: dict[str, str]) -> tuple[str | None, float]:
    """Run one README command as the module's doc says; a problem (or None) and the seconds it took."""
    if c.lang == "python":
        r = run("", cwd, env, stdin=c.text, argv=[".venv/bin/python", "-"])
        return (None if r.code == 0 else f"exit status {r.code}\n{r.err[-3000:]}"), r.seconds
    text, seconds, expected = c.text, 0.0, 0
    setup = SETUP.match(text)
    if setup:  # the Quick start: what setup.sh installs is there; then the rest of the line
        r = run("", cwd, env, argv=[".venv/bin/python", "-c", extra_imports("test" if setup.group("test") else None)])
        seconds += r.seconds
        if r.code != 0:
            return f"what `bash tools/setup.sh{setup.group('test') or ''}` installs is missing:\n{r.err[-3000:]}", seconds
        text = text[setup.end():]
    argv = words(text)
    if argv[:3] == [".venv/bin/python", "-m", "pytest"] and len(argv) == 3:
        text = ".venv/bin/python -m pytest --collect-only -q"  # the suite itself is what runs this test
    if argv[:2] == [".venv/bin/pip", "install"]:
        editable = re.fullmatch(r"\.(?:\[(\w+)\])?", argv[-1]) if argv[2:3] == ["-e"] else None
        assert editable and len(argv) == 4, f"{c}: only `pip install -e \".[EXTRA]\"` can be checked without installing"
        r = run("", cwd, env, argv=[".venv/bin/python", "-c", extra_imports(editable.group(1))])
        return (None if r.code == 0 else f"what it installs is not importable:\n{r.err[-3000:]}"), seconds + r.seconds
    mark = EXIT_MARK.search(c.text)
    if mark:
        expected = int(mark.group(1))
    cuda = "--backend" in argv and argv[argv.index("--backend") + 1:][:1] == ["cuda"]
    outputs = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a in OUTPUT_OPTIONS]
    no_dot = "render" in argv and shutil.which("dot", path=SYSTEM_PATH) is None and \
        not all(o.endswith((".dot", ".gv")) for o in outputs)
    r = run(text, cwd, env)
    seconds += r.seconds
    said = f"\n--- stdout\n{r.out[-2000:]}\n--- stderr\n{r.err[-3000:]}"
    if cuda and not has_nvidia_gpu():
        ok = r.code == 1 and "GPU" in r.err and "internal error" not in r.err
        return (None if ok else f"without a GPU: exit status {r.code}, expected 1 naming the GPU{said}"), seconds
    if cuda and r.code == 1 and "numba.cuda" in r.err and "internal error" not in r.err:
        return None, seconds  # a GPU, but not the [cuda] extra the README installs first (not here: it downloads)
    if no_dot:
        missing = [o for o in outputs if not (cwd / Path(o).with_suffix(".dot")).exists()]
        ok = r.code == 1 and "dot" in r.err and not missing
        return (None if ok else f"without graphviz's dot: exit status {r.code}, expected 1 and the .dot source{said}"), \
            seconds
    if r.code != expected:
        return f"exit status {r.code}, expected {expected}{said}", seconds
    missing = [o for o in outputs if not (cwd / o).exists()]
    if expected == 0 and missing:
        return f"did not write {', '.join(missing)}{said}", seconds
    return None, seconds


def test_every_readme_command_works_as_written_in_a_fresh_clone(tmp_path):
    clone, home = tmp_path / "netspec", tmp_path / "home"
    clone.mkdir()
    home.mkdir()
    fresh_clone(clone)
    env = fresh_environment(home)
    problems, timings = [], []
    for c in COMMANDS:
        problem, seconds = check(c, clone, env)
        timings.append((seconds, c))
        if problem:
            problems.append(f"{c}\n{problem}")
    slowest = "\n".join(f"  {s:6.1f} s  {c}" for s, c in sorted(timings, key=lambda t: -t[0])[:5])
    print(f"{len(COMMANDS)} README commands in {sum(s for s, _ in timings):.1f} s; the slowest:\n{slowest}")
    assert not problems, f"{len(problems)} of {len(COMMANDS)} README commands fail as written:\n\n" + \
        "\n\n".join(problems)
