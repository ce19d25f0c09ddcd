"""Compile ahead what the zoo's first runs would compile: every CPU kernel the zoo's layers take,
then each spec's compiled program at batch 1 (backends/cpu/program.py), into netspec's cache
(~/.cache/netspec/numba/<digest>). tools/setup.sh runs it, so that a first `netspec run` of a zoo
spec spends its time running, not compiling. With a progress bar; a second call finds everything
cached and takes seconds.

    python tools/warm.py                 # the zoo in specs/
    python tools/warm.py my_net.yaml     # other specs
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
# this checkout's netspec, not another one an editable install points to (an A/B from a git worktree)
sys.path.insert(0, str(ROOT))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("specs", nargs="*", help="spec files (default: every spec in specs/)")
    args = parser.parse_args(argv)
    import netspec

    paths = [Path(p) for p in args.specs] or sorted((ROOT / "specs").glob("*.yaml"))
    started = time.perf_counter()
    for path in paths:
        began = time.perf_counter()
        graph = netspec.load(path)
        exe = netspec.compile(graph)  # (its progress bar shows while kernels compile)
        x = np.zeros((1,) + next(iter(graph.inputs.values())).dims, np.float32)
        for _ in range(2):  # the loop once, then the traced run that compiles the program
            exe.run(x)
        print(f"warm: {path.name} ready ({time.perf_counter() - began:.1f} s)", file=sys.stderr)
    print(f"warm: {len(paths)} specs in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
