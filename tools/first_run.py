"""The first run's cost: for each spec, `netspec run SPEC --repeat 1` in a fresh process, timed from
outside (wall clock, the interpreter's start included), less the inference it did (three runs: the
first, the untimed one that compiles the program, the timed one; counted as three times the
reported time per batch). What is left is what a user waits for besides the network itself:
imports, loading or compiling kernels, the program.

    python tools/first_run.py                  # every spec of the zoo, with the cache as it is
    python tools/first_run.py --cold lenet5    # from an empty kernel cache (a temporary one)

Warm figures assume the cache holds the zoo (tools/setup.sh runs tools/warm.py); --cold gives
each spec its own empty cache, as on a machine that never ran netspec.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_PER_BATCH = re.compile(r"time per batch: ([\d,.]+) ms")


def first_run(spec: Path, cache: str | None) -> dict:
    """{'spec', 'wall_s', 'inference_s', 'outside_s'} of one fresh `netspec run` (cache: a
    NUMBA_CACHE_DIR to use instead of the user's)."""
    env = dict(os.environ)
    if cache is not None:
        env["NUMBA_CACHE_DIR"] = cache
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "netspec", "run", str(spec), "--repeat", "1"],
                          env=env, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - started
    found = _PER_BATCH.search(done.stdout)
    if done.returncode != 0 or not found:
        raise RuntimeError(f"netspec run {spec} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    inference = 3 * float(found.group(1).replace(",", "")) / 1e3
    return {"spec": spec.stem, "wall_s": round(wall, 2), "inference_s": round(inference, 3),
            "outside_s": round(wall - inference, 2)}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("specs", nargs="*", help="spec names or files (default: every spec in specs/)")
    parser.add_argument("--cold", action="store_true", help="each spec from an empty kernel cache")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args(argv)
    paths = [Path(s) if s.endswith(".yaml") else ROOT / "specs" / f"{s}.yaml" for s in args.specs]
    paths = paths or sorted((ROOT / "specs").glob("*.yaml"))
    rows = []
    print(f"{'spec':<16}{'wall s':>9}{'inference s':>13}{'outside s':>11}", file=sys.stderr)
    for path in paths:
        with tempfile.TemporaryDirectory(prefix="netspec-cold-") as empty:
            try:
                row = first_run(path, empty if args.cold else None)
            except RuntimeError as error:  # (the run's own message, not a traceback of this tool)
                print(f"first_run: {error}", file=sys.stderr)
                return 1
        rows.append(row)
        print(f"{row['spec']:<16}{row['wall_s']:>9.2f}{row['inference_s']:>13.3f}{row['outside_s']:>11.2f}",
              file=sys.stderr)
    print(f"{'largest':<16}{'':>9}{'':>13}{max(r['outside_s'] for r in rows):>11.2f}", file=sys.stderr)
    if args.json:
        print(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
