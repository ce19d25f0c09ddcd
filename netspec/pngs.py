"""Small PNGs read a batch at once, for `netspec predict` (netspec/predictions.py).

Pillow spends ~100 µs of Python (under the GIL) opening a 32×32 PNG whose pixels take it ~15 µs to
decode: more than LeNet-5's inference of it. So a PNG that is already what the network takes (its
size, 8-bit gray for 1 channel or RGB for 3, not interlaced) and holds nothing but its image (IHDR,
IDATs, IEND: as Pillow writes them) is read here instead, a batch at once: its bytes through
files.read_limited (a regular file, at most the largest such PNG), its chunks checked (in bounds,
IHDR's and IEND's CRCs: the ones Pillow checks), its data inflated by Python's zlib (the whole
stream, its checksum included, to exactly the rows' size), then its rows unfiltered by
`_unfilter`, a Numba kernel over the batch's arrays of known shape (no pointer, no length read
from the file). PNG is lossless, so they are the pixels Pillow gives (tests/test_predict.py
decodes files both ways, damaged ones included). A file this does not take goes to Pillow as
before, so an unreadable file gets Pillow's reason. (An earlier release used imagecodecs' libpng:
~39 µs a 32×32 file here, against ~22 so.)
"""
from __future__ import annotations

import struct
import zlib

import numpy as np
from numba import njit

from .files import read_limited
from .ir.graph import Graph

_PNG_LIMIT = 1 << 20  # (decoded bytes of one image, at most; larger images are Pillow's)
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR"  # (the signature, then IHDR's length and type)
_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # (IEND: empty, its CRC)


def _png_fits(type_) -> bool:
    """Whether this network's images may take the fast path (small enough, 1 or 3 channels)."""
    from .inputs import MAX_IMAGE_PIXELS
    return (type_.rank == 4 and type_.c in (1, 3) and type_.h * (1 + type_.w * type_.c) <= _PNG_LIMIT
            and type_.h * type_.w <= MAX_IMAGE_PIXELS)


def _png_cap(type_) -> int:
    """Bytes read of each file at most: the largest PNG of this size (its pixels stored, not compressed)."""
    raw = type_.h * (1 + type_.w * type_.c)
    return raw + raw // 1024 + 4096


def warm_pngs(graph: Graph) -> None:
    """Compile (or load) the unfiltering kernel before the clock starts, where the network's inputs take it."""
    type_ = next(iter(graph.inputs.values()))
    if _png_fits(type_):
        _unfilter(np.zeros((1, 1, 2), np.uint8), np.ones(1, np.bool_), np.zeros((1, 1, 1, 1), np.uint8))


def _idat(data: bytes, ihdr: bytes) -> bytes | None:
    """The compressed stream of `data` where it is a PNG of this IHDR (its CRC right), then one or
    more IDATs, then IEND and nothing else (bytes after IEND are ignored, as Pillow ignores them),
    every chunk within the file; else None."""
    if data[:16] != _PNG_SIGNATURE or data[16:29] != ihdr or data[29:33] != zlib.crc32(data[12:29]).to_bytes(4, "big"):
        return None
    pos, size, parts = 33, len(data), []
    while pos + 12 <= size:
        length = int.from_bytes(data[pos:pos + 4], "big")
        if data[pos + 4:pos + 8] != b"IDAT":
            return (parts[0] if len(parts) == 1 else b"".join(parts)) if parts and data[pos:pos + 12] == _IEND else None
        if pos + 12 + length > size:
            return None
        parts.append(data[pos + 8:pos + 8 + length])
        pos += 12 + length
    return None


def read_pngs(paths: list[str], type_, pixels: np.ndarray) -> np.ndarray:
    """The pixels of the PNGs among `paths` that the fast path takes, into pixels[i] (C×H×W); whether
    each was. None are where the images do not fit (_png_fits)."""
    done = np.zeros(len(paths), bool)
    if not _png_fits(type_):
        return done
    c, h, w = type_.dims
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0 if c == 1 else 2, 0, 0, 0)
    size, cap = h * (1 + w * c), _png_cap(type_)
    rows = np.empty((len(paths), size), np.uint8)
    for i, path in enumerate(paths):
        if path[-4:].lower() != ".png":
            continue
        try:
            stream = _idat(read_limited(path, cap), ihdr)
        except (OSError, ValueError):  # (not a regular file, larger, a NUL in its name: Pillow says why)
            continue
        if stream is None:
            continue
        inflate = zlib.decompressobj()
        try:
            data = inflate.decompress(stream, size + 1)  # (one byte more than the rows: a longer stream is refused)
        except zlib.error:  # (a damaged stream, a wrong checksum: Pillow gives the reason)
            continue
        if len(data) == size and inflate.eof:
            rows[i] = np.frombuffer(data, np.uint8)
            done[i] = True
    rows = rows.reshape(len(paths), h, 1 + w * c)
    group = max(1, _UNFILTER_BYTES // (8 * size))  # (images a call: its two int32 copies of their rows)
    for g in range(0, len(paths), group):
        if done[g:g + group].any():
            _unfilter(rows[g:g + group], done[g:g + group], pixels[g:g + group])
    return done


_UNFILTER_BYTES = 4 << 20  # `_unfilter`'s work arrays, at most (a batch of larger images goes in groups)


@njit(nogil=True, cache=True)
def _unfilter(rows, done, pixels):
    """PNG's five filters undone: rows (N, H, 1 + W·C) as inflated (each row's filter byte first),
    into pixels (N, C, H, W), for the images where done[i] (an unknown filter clears it). The images
    go side by side, a byte position at a time across the batch: within one image each byte depends
    on the one before (Sub, Average, Paeth), across images none does."""
    n, h, stride = rows.shape
    c = pixels.shape[1]
    m = stride - 1
    t = np.empty((h, stride, n), np.int32)  # (the batch's rows, images innermost)
    for i in range(n):
        if done[i]:
            for y in range(h):
                if rows[i, y, 0] > 4:
                    done[i] = False
                for k in range(stride):
                    t[y, k, i] = rows[i, y, k]
        else:
            t[:, :, i] = 0
    zero = np.zeros(n, np.int32)
    out = np.zeros((h, m, n), np.int32)
    for y in range(h):
        kind = t[y, 0]
        for k in range(m):
            x = t[y, k + 1]
            up = out[y - 1, k] if y > 0 else zero
            left = out[y, k - c] if k >= c else zero
            corner = out[y - 1, k - c] if (k >= c and y > 0) else zero
            o = out[y, k]
            for i in range(n):
                a, b, d, f = left[i], up[i], corner[i], kind[i]
                pa, pb, pc = abs(b - d), abs(a - d), abs(a + b - 2 * d)
                paeth = a if (pa <= pb and pa <= pc) else (b if pb <= pc else d)
                o[i] = (x[i] + (f == 1) * a + (f == 2) * b + (f == 3) * ((a + b) >> 1) + (f == 4) * paeth) & 255
    for i in range(n):
        if done[i]:
            for y in range(h):
                for k in range(m):
                    pixels[i, k % c, y, k // c] = out[y, k, i]
