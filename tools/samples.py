"""Regenerate the sample inputs the README's commands use (specs/samples/), deterministically.

    .venv/bin/python tools/samples.py          # rewrite the files in specs/samples/
    .venv/bin/python tools/samples.py --check  # exit 1 if one is missing or holds other data (the tests run this)

The files, all computed here (no download, no torch):

    house.png                  a 256×192 synthetic drawing (sky, sun, a house on grass) for
                               `netspec run specs/resnet18.yaml --input ...` (resized and cropped to 224×224)
    house_1x3x64x64.npy        the same drawing as a float32 batch of one, pixels in [0, 1], for
                               `netspec run specs/unet.yaml --set resolution=64 --input ...`
    lenet5_torch.safetensors   a LeNet-5 state_dict as a PyTorch user's own model would name it (a
                               DataParallel `module.` prefix, nn.Sequential indices), PyTorch's default
                               initialization, for `netspec weights import ... --map ...`
    lenet5_torch.map.yml       the mapping from those names to specs/lenet5.yaml's

--check compares what the files hold (pixels, arrays, tensors, text), not their bytes, so that another
zlib or safetensors version that encodes the same data differently does not count as a change.
"""
from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "specs" / "samples"


def house(width: int, height: int) -> np.ndarray:
    """The drawing as height×width×3 uint8 RGB, from plain geometry (no font, no antialiasing, so the
    pixels do not depend on a drawing library's version). Coordinates are fractions of the picture."""
    y, x = np.mgrid[0:height, 0:width]
    u, v = (x + 0.5) / width, (y + 0.5) / height  # pixel centres in [0, 1]
    rgb = np.empty((height, width, 3), np.float64)
    sky_top, sky_bottom = np.array([70, 130, 210]), np.array([200, 225, 245])
    rgb[:] = (sky_top + (sky_bottom - sky_top) * np.clip(v / 0.65, 0, 1)[..., None])
    rgb[v >= 0.65] = (60, 150, 60)  # grass
    aspect = width / height
    sun = ((u - 0.82) * aspect) ** 2 + (v - 0.18) ** 2 <= 0.1 ** 2
    rgb[sun] = (250, 210, 50)
    wall = (u >= 0.30) & (u <= 0.62) & (v >= 0.45) & (v <= 0.78)
    rgb[wall] = (190, 50, 40)
    roof = (v >= 0.25) & (v < 0.45) & (np.abs(u - 0.46) <= v - 0.25)  # apex at the top, eaves past the walls
    rgb[roof] = (110, 60, 30)
    door = (u >= 0.42) & (u <= 0.50) & (v >= 0.60) & (v <= 0.78)
    rgb[door] = (70, 40, 20)
    window = (u >= 0.33) & (u <= 0.39) & (v >= 0.52) & (v <= 0.60)
    rgb[window] = (230, 240, 250)
    return np.rint(rgb).astype(np.uint8)


def png_bytes(pixels: np.ndarray) -> bytes:
    from PIL import Image
    out = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(out, format="PNG", optimize=True)  # no timestamp or other metadata
    return out.getvalue()


def npy_bytes(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, array, allow_pickle=False)
    return out.getvalue()


# LeNet-5 as a PyTorch user might have written it, trained with nn.DataParallel:
#   features = Sequential(Conv2d(1, 6, 5), Tanh(), AvgPool2d(2), Conv2d(6, 16, 5), Tanh(), AvgPool2d(2))
#   head = Sequential(Linear(400, 120), Tanh(), Linear(120, 84), Tanh());  classifier = Linear(84, 10)
TORCH_LENET5 = [  # (torch name, netspec name, weight shape)
    ("module.features.0", "conv1", (6, 1, 5, 5)),
    ("module.features.3", "conv2", (16, 6, 5, 5)),
    ("module.head.0", "fc1", (120, 400)),
    ("module.head.2", "fc2", (84, 120)),
    ("module.classifier", "fc3", (10, 84)),
]

MAP = """\
# specs/samples/lenet5_torch.safetensors's names (a PyTorch LeNet-5 trained with nn.DataParallel) onto
# specs/lenet5.yaml's: exact renames first, then the regular expressions in order (Python re.sub).
rename: {module.classifier.weight: fc3.weight, module.classifier.bias: fc3.bias}
regex:
  - ['^module\\.', '']            # DataParallel's prefix
  - ['^features\\.0\\.', 'conv1.']
  - ['^features\\.3\\.', 'conv2.']
  - ['^head\\.0\\.', 'fc1.']
  - ['^head\\.2\\.', 'fc2.']
"""


def lenet5_state_dict() -> dict[str, np.ndarray]:
    """PyTorch's default initialization of Conv2d and Linear: weight and bias uniform in ±1/sqrt(fan_in)."""
    rng = np.random.default_rng(5)
    state = {}
    for name, _, shape in TORCH_LENET5:
        bound = 1.0 / np.sqrt(np.prod(shape[1:]))
        state[f"{name}.weight"] = rng.uniform(-bound, bound, shape).astype(np.float32)
        state[f"{name}.bias"] = rng.uniform(-bound, bound, shape[:1]).astype(np.float32)
    return state


def safetensors_bytes(state: dict[str, np.ndarray]) -> bytes:
    from safetensors.numpy import save
    return save(state, metadata={"format": "pt"})


def samples() -> dict[str, tuple[bytes, object]]:
    """file name → (the bytes to write, the data --check compares)."""
    picture = house(256, 192)
    batch = (house(64, 64).astype(np.float32) / 255.0).transpose(2, 0, 1)[None].copy()
    state = lenet5_state_dict()
    return {
        "house.png": (png_bytes(picture), picture),
        "house_1x3x64x64.npy": (npy_bytes(batch), batch),
        "lenet5_torch.safetensors": (safetensors_bytes(state), state),
        "lenet5_torch.map.yml": (MAP.encode(), MAP),
    }


def read(path: Path):
    """What a sample file holds, in the form samples() gives for comparison."""
    if path.suffix == ".png":
        from PIL import Image
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False)
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file
        return load_file(path)
    return path.read_text(encoding="utf-8")


def same(a, b) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
    return a == b


def main(argv: list[str]) -> int:
    if argv not in ([], ["--check"]):
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        print("usage: tools/samples.py [--check]", file=sys.stderr)
        return 2
    stale = []
    for name, (data, expected) in samples().items():
        path = SAMPLES / name
        if argv:
            if not path.exists() or not same(expected, read(path)):
                stale.append(name)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        print(f"wrote {path.relative_to(ROOT)} ({len(data):,} bytes)")
    if stale:
        print(f"specs/samples/ is out of date ({', '.join(stale)}): run .venv/bin/python tools/samples.py",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
