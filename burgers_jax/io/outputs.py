"""Writing outputs without ever losing a user's file: the one helper every command that
writes goes through (convert, export, predict, train, generate, evaluate).

- A path that exists and is not one of our own outputs is never replaced or deleted:
  a file where a directory should go, a directory holding other files (the folder of
  the input checkpoint, `--out .`) are refused with a message naming the path.
- Our own output directories carry `metadata.json` with a `format` marker; one of them
  is replaced only when the user passes `--overwrite`. A file output that exists is
  likewise replaced only with `--overwrite`.
- Every check runs before the work (a refusal after an hour of compute helps nobody),
  including whether the place is writable at all.
- Writes go to a temporary sibling (`.NAME.tmp-PID-...`) renamed into place at the end,
  so a crash never leaves a half-written output under the final name; leftovers of a
  killed write (their process is gone) are removed by the next write to the same path.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable

from burgers_jax.errors import UserError

FORMAT_KEY = "format"  # in metadata.json: "burgers_jax.<kind>"
METADATA_FILE = "metadata.json"


class OutputError(UserError):
    """An output path that cannot be written without losing something, or at all."""


def format_marker(kind: str) -> dict[str, str]:
    """The metadata entry that marks a directory as our output of `kind`."""
    return {FORMAT_KEY: f"burgers_jax.{kind}"}


def is_ours(directory: Path, kind: str) -> bool:
    """Whether `directory` is an output of `kind` that we wrote: its metadata carries our marker."""
    meta = directory / METADATA_FILE
    try:
        marker = json.loads(meta.read_text()).get(FORMAT_KEY)
    except (OSError, ValueError, AttributeError):
        return False
    return marker == format_marker(kind)[FORMAT_KEY]


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable(path: str | os.PathLike, what: str = "output") -> Path:
    """Raises OutputError when `path` cannot be created or written (read-only folder)."""
    p = Path(path).expanduser().absolute()
    target = p if p.is_dir() else _nearest_existing(p.parent)
    if not target.is_dir():
        raise OutputError(f"{p}: cannot write the {what} there: {target} is not a directory")
    if not os.access(target, os.W_OK | os.X_OK):
        raise OutputError(f"{p}: cannot write the {what} there: {target} is not writable")
    return p


def check_dir(path: str | os.PathLike, kind: str, overwrite: bool = False) -> Path:
    """Before any work: may an output directory of `kind` be written at `path`?"""
    p = Path(path).expanduser().absolute()
    if p.exists() and not p.is_dir():
        raise OutputError(f"{p}: exists and is a file; not replacing it (choose another output path)")
    if p.is_dir() and any(p.iterdir()):
        if not is_ours(p, kind):
            raise OutputError(f"{p}: exists and holds files this tool did not write; not touching it "
                              "(choose a new or empty directory)")
        if not overwrite:
            raise OutputError(f"{p}: holds an earlier {kind.replace('_', ' ')}; pass --overwrite to replace it")
    return check_writable(p, kind.replace("_", " "))


def check_file(path: str | os.PathLike, overwrite: bool = False, what: str = "output file") -> Path:
    """Before any work: may an output file be written at `path`?"""
    p = Path(path).expanduser().absolute()
    if p.is_dir():
        raise OutputError(f"{p}: is a directory; the {what} must be a file path")
    if p.exists() and not overwrite:
        raise OutputError(f"{p}: exists; pass --overwrite to replace it")
    return check_writable(p, what)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _temp_sibling(final: Path) -> Path:
    return final.parent / f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def clean_leftovers(final: Path) -> list[Path]:
    """Removes temporary siblings of `final` left by a write whose process has died."""
    removed = []
    for p in final.parent.glob(f".{final.name}.tmp-*"):
        pid = p.name.rsplit(".tmp-", 1)[1].split("-")[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
            removed.append(p)
    return removed


def write_dir(path: str | os.PathLike, fill: Callable[[Path], Any], kind: str, overwrite: bool = False) -> Path:
    """Calls `fill(tmp_dir)` on a fresh temporary sibling and renames it to `path`.

    `fill` must write `metadata.json` with `format_marker(kind)`. An earlier output of
    ours at `path` is replaced only with `overwrite`; anything else there is refused.
    """
    final = check_dir(path, kind, overwrite)
    final.parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(final)
    tmp = _temp_sibling(final)
    tmp.mkdir()  # default permissions (umask), not mkdtemp's 0700
    try:
        fill(tmp)
        if final.is_dir() and any(final.iterdir()):  # ours (checked above): move it aside, then drop it
            old = _temp_sibling(final)
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old)
        else:
            if final.is_dir():
                final.rmdir()  # empty
            os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def write_file(path: str | os.PathLike, write: Callable[[Path], Any], overwrite: bool = False,
               what: str = "output file") -> Path:
    """Calls `write(tmp_path)` and renames the result to exactly `path`."""
    final = check_file(path, overwrite, what)
    final.parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(final)
    tmp = _temp_sibling(final)
    try:
        write(tmp)
        os.replace(tmp, final)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise
    return final
