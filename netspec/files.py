"""Reading and writing the user's files safely.

Reading: only regular files (a FIFO, a device such as /dev/zero or a directory is refused before a
byte is read) and never more than a size limit plus one byte, so an endless or huge file is refused
instead of filling memory. Writing: atomically (a failure never leaves a half-written or emptied
file), with the permissions a plain `open(path, "w")` would give; the temporary file a killed
write left behind is removed by the next write to the same path."""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Callable


class FileReadError(OSError):
    """A file that cannot be read as asked; the message is the reason, in words."""


def printable(text: str) -> str:
    """`text` as valid UTF-8: a file name that is not (its bytes kept as surrogates) escaped, for
    writing it into a file's metadata."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _reason(e: OSError) -> str:
    if e.errno == errno.ELOOP:
        return "a loop of symbolic links"
    return e.strerror or str(e)


def _regular_fd(path: str | os.PathLike) -> tuple[int, os.stat_result]:
    """An open file descriptor of `path`, which must be a regular file (FileReadError if not), and
    its status. O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        if e.errno == errno.ENOENT:
            raise FileReadError(e.errno, "no such file") from None
        raise FileReadError(e.errno, _reason(e)) from None
    try:
        status = os.fstat(fd)
        mode = status.st_mode
        if not stat.S_ISREG(mode):
            kind = ("a directory" if stat.S_ISDIR(mode) else "a named pipe" if stat.S_ISFIFO(mode) else
                    "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode)
                    else "not a regular file")
            raise FileReadError(errno.EINVAL, f"it is {kind}, not a regular file")
        return fd, status
    except BaseException:
        os.close(fd)
        raise


def open_regular(path: str | os.PathLike):
    """An open binary file object for `path`, which must be a regular file (FileReadError if not)."""
    fd, _ = _regular_fd(path)
    try:
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_limited(path: str | os.PathLike, limit: int | Callable[[int], int], what: str = "the file") -> bytes:
    """The bytes of a regular file of at most `limit` bytes (FileReadError otherwise). Reads at most
    limit + 1 bytes whatever the file claims to be. `limit` may be a function of the file's size
    that returns the limit (or raises: resources.read_within_memory's check). Through the file
    descriptor, no file object: `netspec predict` reads small images at ~15 µs a file so, ~5 bare."""
    fd, status = _regular_fd(path)
    try:
        if callable(limit):
            limit = limit(status.st_size)
        parts, left = [], limit + 1
        while left > 0:
            want = min(left, 1 << 24)
            part = os.read(fd, want)
            if not part:
                break
            parts.append(part)
            left -= len(part)
            if len(part) < want and len(part) >= status.st_size:  # (the whole file as fstat saw it: no read to find its end)
                break
    except OSError as e:
        raise FileReadError(e.errno, _reason(e)) from None
    finally:
        os.close(fd)
    data = parts[0] if len(parts) == 1 else b"".join(parts)
    if len(data) > limit:
        raise FileReadError(errno.EFBIG, f"{what} is over the limit of {limit:,} bytes")
    return data


def resolve(path: str | os.PathLike) -> Path:
    """The absolute path with every symbolic link resolved; FileReadError for a loop of links or a
    name no file can have (a NUL byte, a component over the system's length limit)."""
    if "\0" in str(path):
        raise FileReadError(errno.EINVAL, "a file name cannot contain a NUL character")
    try:
        return Path(path).resolve()
    except RuntimeError:  # Python 3.11 raises RuntimeError for a symlink loop
        raise FileReadError(errno.ELOOP, "a loop of symbolic links") from None
    except OSError as e:
        raise FileReadError(e.errno, _reason(e)) from None


def is_regular(path: Path) -> bool:
    """Whether `path` is a regular file (following links), False for a name that cannot exist."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def is_within(path: Path, folder: Path) -> bool:
    """Whether the resolved `path` is `folder` or below it (both resolved)."""
    return path == folder or folder in path.parents


def _tmp_prefix(target: Path) -> str:
    return f".{target.name}."


def temporary_name(target: Path, n: int = 99) -> str:
    """The name of the temporary file a write to `target` goes through (the n-th try)."""
    return f"{_tmp_prefix(target)}{os.getpid()}.{n}.tmp"


def _remove_stale_temporaries(target: Path) -> None:
    """Temporary files of earlier writes to `target` whose writer is gone (killed mid-write)."""
    prefix = _tmp_prefix(target)
    try:
        names = [n for n in os.listdir(target.parent) if n.startswith(prefix) and n.endswith(".tmp")]
    except OSError:
        return
    for name in names:
        pid = name[len(prefix):-len(".tmp")].split(".")[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        try:
            (target.parent / name).unlink()
        except OSError:
            pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # (signal 0: only asks whether the process exists)
    except ProcessLookupError:
        return False
    except OSError:  # it exists, another user's
        return True
    return True


def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` via a temporary file in the same directory; raises OSError.

    The temporary file is named after the target and the writing process (`.NAME.PID.N.tmp`), so a
    later write can tell the leftovers of a killed writer from a live one's, and removes them."""
    target = Path(path)
    _remove_stale_temporaries(target)
    for n in range(100):
        tmp = target.parent / temporary_name(target, n)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, as for open()
            break
        except FileExistsError:
            continue
    else:
        raise FileExistsError(errno.EEXIST, f"too many temporary files beside '{target}'")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
