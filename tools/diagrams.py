"""Regenerate the README's diagrams (docs/*.svg) with `netspec render`'s code.

    python tools/diagrams.py           # rewrite docs/lenet5.svg, resnet18_layer2.svg, googlenet_inception3a.svg, unet.svg
    python tools/diagrams.py --check   # exit 1 if one of them is missing or differs from what the specs give

Needs graphviz's `dot` program (apt-get install graphviz). Each image is what this command line draws:
    netspec render SPEC -o docs/NAME.svg [OPTIONS]
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# this checkout's netspec, not another one an editable install points to (an A/B from a git worktree)
sys.path.insert(0, str(ROOT))

import netspec  # noqa: E402
DOCS = ROOT / "docs"

DIAGRAMS = [  # (file, spec, options as netspec.render takes them, the equivalent command-line options)
    ("lenet5.svg", "specs/lenet5.yaml", {"depth": "full"}, "--depth full"),
    ("resnet18_layer2.svg", "specs/resnet18.yaml", {"scope": "layer2", "depth": "full"}, "--scope layer2 --depth full"),
    ("googlenet_inception3a.svg", "specs/googlenet.yaml", {"scope": "inception3a", "depth": "full"},
     "--scope inception3a --depth full"),
    ("unet.svg", "specs/unet.yaml", {"depth": 1}, "--depth 1"),
]


def svg(spec: str, options: dict) -> str:
    text = netspec.render(netspec.load(ROOT / spec), **options).pipe(format="svg", encoding="utf-8")
    return "\n".join(line.rstrip() for line in text.splitlines()) + "\n"


def main(argv: list[str]) -> int:
    if shutil.which("dot") is None:
        print("tools/diagrams.py: graphviz's `dot` program is needed (apt-get install graphviz)", file=sys.stderr)
        return 1
    check = "--check" in argv
    stale = []
    DOCS.mkdir(exist_ok=True)
    for name, spec, options, cli in DIAGRAMS:
        path = DOCS / name
        text = svg(spec, options)
        if check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
            continue
        path.write_text(text, encoding="utf-8")
        print(f"wrote docs/{name}   (netspec render {spec} -o docs/{name} {cli})")
    if stale:
        print(f"out of date: {', '.join(stale)}; run: python tools/diagrams.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
