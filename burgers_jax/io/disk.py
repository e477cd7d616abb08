"""A full disk, named: every command that writes an output (convert, export, generate)
turns the failure of a write on a full file system into one line,

    no space left on /path/out (needs about 812 MB, 3.1 MB free there)

a `DiskFullError` (a `UserError`: exit status 2), instead of the traceback of whichever
library happened to write (tensorstore under orbax, torch, h5py, safetensors). The
temporary sibling the write went to is removed by `burgers_jax.io.outputs` before the
error gets here, so nothing is left behind.

What each library raises on ENOSPC (measured on a full tmpfs):

- h5py: `OSError` with errno 28 ("Can't close file (file write failed: ... errno = 28,
  error message = 'No space left on device' ...)").
- tensorstore, through orbax: `ValueError("RESOURCE_EXHAUSTED: Error writing local file
  ...: No space left on device [os_error_code='28']")`.
- torch.save into a Python file object: `RuntimeError("[enforce fail at
  inline_container.cc:...] unexpected pos ...")` whose `__context__` is the
  `OSError(28)` of the file's write (into a path, torch's C++ writer loses the errno:
  write through a file object).
- Python's own writes (json, text): `OSError` with errno 28.
- HDF5 writing a path itself cannot survive it: the failed chunk flushes surface only as
  "Exception ignored" lines, and closing the file (or the interpreter's exit) then
  segfaults. The data set writer therefore lets HDF5 write through a `GuardedFile`,
  which records the first failed write and drops the rest, so HDF5 closes cleanly and
  the writer raises the recorded error.

So the test walks the exception's cause/context chain for an `OSError` with errno
ENOSPC/EDQUOT, or a message carrying the C library's text for them.
"""

from __future__ import annotations

import errno
import math
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from burgers_jax.io.outputs import OutputError

DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_MARKERS = ("No space left on device", "Disk quota exceeded", "os_error_code='28'", "errno = 28,")


class DiskFullError(OutputError):
    """An output that did not fit on its file system; the message names the path and the size."""


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen, todo = set(), [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [e.__cause__, e.__context__, *getattr(e, "exceptions", ())]  # ExceptionGroup too


def is_disk_full(exc: BaseException) -> bool:
    """Whether `exc` (or anything in its cause/context chain) is a write that found the disk full."""
    for e in _chain(exc):
        if isinstance(e, OSError) and e.errno in DISK_FULL_ERRNOS:
            return True
        if any(m in str(e) for m in _MARKERS):
            return True
    return False


def free_bytes(path: str | os.PathLike) -> int | None:
    """Free bytes on the file system that `path` (or its nearest existing parent) is on."""
    p = Path(path).expanduser().absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


def format_mb(n: float) -> str:
    """Bytes for a person: "0.8 MB", "812 MB", "13.1 GB" (decimal units, as df -H)."""
    mb = n / 1e6
    if mb < 10:
        return f"{mb:.1f} MB"
    return f"{math.ceil(mb):,} MB" if mb < 10_000 else f"{mb / 1e3:.1f} GB"


def disk_full_message(path: str | os.PathLike, needed_bytes: int | None) -> str:
    free = free_bytes(path)
    details = [f"needs about {format_mb(needed_bytes)}"] if needed_bytes else []
    if free is not None:
        details.append(f"{format_mb(free)} free there")
    return f"no space left on {path}" + (f" ({', '.join(details)})" if details else "")


def check_space(path: str | os.PathLike, needed_bytes: int) -> None:
    """Before the work: raises DiskFullError when `needed_bytes` cannot fit where `path` goes."""
    free = free_bytes(path)
    if free is not None and free < needed_bytes:
        raise DiskFullError(disk_full_message(path, needed_bytes))


@contextmanager
def named_when_full(path: str | os.PathLike, needed_bytes: int | None = None) -> Iterator[None]:
    """Turns a disk-full failure of the writes inside into a DiskFullError naming `path`
    and the size; anything else passes through unchanged."""
    try:
        yield
    except DiskFullError:
        raise
    except Exception as e:
        if not is_disk_full(e):
            raise
        raise DiskFullError(disk_full_message(path, needed_bytes)) from e


def tree_bytes(tree: Mapping[str, Any]) -> int:
    """Bytes of the array leaves of a nested dict (numpy, jax or torch arrays)."""
    total = 0
    for leaf in tree.values():
        if isinstance(leaf, Mapping):
            total += tree_bytes(leaf)
        elif hasattr(leaf, "nbytes"):
            total += int(leaf.nbytes)
        elif hasattr(leaf, "element_size"):  # torch.Tensor
            total += int(leaf.element_size() * leaf.numel())
        else:
            total += int(np.asarray(leaf).nbytes)
    return total


class GuardedFile:
    """A binary file, unbuffered, for a library that writes through a Python file object
    and cannot survive a failed write (h5py's `fileobj` driver: HDF5's state after one
    segfaults). The first write that finds the disk full is recorded in `error`; it and
    every later write are dropped and reported as done, so the library finishes or closes
    cleanly. The file is then incomplete: the caller stops, calls `raise_if_full()`, and
    removes it (`outputs.write_file` does). Writes are complete or an error: a short
    write of the OS is continued, never passed on (h5py ignores write's return value)."""

    def __init__(self, path: str | os.PathLike, mode: str = "w+b"):
        self.path = Path(path)
        self._f = open(self.path, mode, buffering=0)
        self.error: OSError | None = None

    def _full(self, e: OSError) -> bool:
        if e.errno not in DISK_FULL_ERRNOS:
            return False
        self.error = self.error or e
        return True

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        if self.error is not None:
            return len(view)
        done = 0
        while done < len(view):
            try:
                n = self._f.write(view[done:])
            except OSError as e:
                if not self._full(e):
                    raise
                return len(view)
            if not n:  # nothing written and no error: treat as full rather than spin
                self._full(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
                return len(view)
            done += n
        return done

    def truncate(self, size: int | None = None) -> int:
        try:
            return self._f.truncate(size)
        except OSError as e:
            if not self._full(e):
                raise
            return self._f.tell() if size is None else size

    def read(self, size: int = -1) -> bytes:
        return self._f.read(size)

    def readinto(self, buffer) -> int:
        return self._f.readinto(buffer)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        self._f.close()

    @property
    def closed(self) -> bool:
        return self._f.closed

    def __getattr__(self, name: str) -> Any:  # readable(), seekable(), fileno(), ...
        if name == "_f":  # not opened
            raise AttributeError(name)
        return getattr(self._f, name)

    def __enter__(self) -> "GuardedFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def raise_if_full(self) -> None:
        """Raises the recorded disk-full error (an OSError naming the file), if any."""
        if self.error is not None:
            raise OSError(self.error.errno, f"{self.error.strerror}: {self.path}") from self.error
