"""Writing outputs without ever losing a user's file: the one helper every command that
writes goes through (convert, export, predict, train, generate, evaluate).

- A path that exists and is not one of our own outputs is never replaced or deleted:
  a file where a directory should go, a directory holding other files (the folder of
  the input checkpoint, `--out .`) are refused with a message naming the path.
- Our own output directories carry `metadata.json` with a `format` marker and the list
  of the entries we wrote (`files`); one of them is replaced only when the user passes
  `--overwrite`, and then only those entries: anything else in the folder (a user's
  `NOTES.txt`, an exported `best_lora.pt`) is carried into the new output. A file output
  that exists is likewise replaced only with `--overwrite`.
- One writer per output at a time: the check before the work claims the path (a
  sibling `.NAME.claim` holding the pid, the host name and the process's start time,
  created exclusively); a second command writing the same path while the first runs is
  refused, naming the first one's pid and the claim file. The claim of a process that
  died (on this host: its pid is gone, or now belongs to a process started at another
  time) is taken over; a claim made on another host (a shared file system) never is:
  the refusal says to delete the claim file if that writer is gone. A process's claims
  go when it exits.
- A name too long for the file system once the temporary sibling's suffix is added is
  refused before the work, naming the limit.
- Every check runs before the work (a refusal after an hour of compute helps nobody),
  including whether the place is writable at all.
- Writes go to a temporary sibling (`.NAME.tmp-PID-...`) renamed into place at the end,
  so a crash never leaves a half-written output under the final name; leftovers of a
  killed write (their process is gone) are removed by the next write to the same path.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import socket
import uuid
from pathlib import Path
from typing import Any, Callable

from burgers_jax.errors import UserError

FORMAT_KEY = "format"  # in metadata.json: "burgers_jax.<kind>"
FILES_KEY = "files"  # in metadata.json: the top-level entries we wrote
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


def _our_entries(directory: Path) -> set[str] | None:
    """The top-level entries an output of ours lists as written by us (None: an output of
    an older version, which lists nothing)."""
    try:
        files = json.loads((directory / METADATA_FILE).read_text()).get(FILES_KEY)
    except (OSError, ValueError, AttributeError):
        return None
    return set(files) | {METADATA_FILE} if isinstance(files, list) else None


_PID_DIGITS = 7  # Linux's largest pid_max, 4194304, has 7 digits


def _name_max(directory: Path) -> int:
    try:
        return os.pathconf(directory, "PC_NAME_MAX")
    except (AttributeError, ValueError, OSError):  # no pathconf (Windows), or no answer
        return 255


def check_name_length(p: Path) -> None:
    """Raises OutputError when `p`'s name, or a folder still to be made above it, does not
    fit the file system's limit on a name, counting the longest sibling we create next to
    it (`.NAME.tmp-PID-XXXXXXXX`), so the refusal comes before the work, not after it.
    Runs before anything stats `p` (a name over the limit makes that an OSError)."""
    if not p.name:
        return
    directory = Path(p.anchor)
    limit = _name_max(directory)
    for part in p.parts[1:-1]:
        if len(os.fsencode(part)) > limit:
            raise OutputError(f"{p}: the folder name {part[:40]}... is {len(os.fsencode(part))} bytes; the file "
                              f"system allows at most {limit} bytes per name")
        if os.path.isdir(directory / part):  # else a folder made at the write, on `directory`'s file system
            directory = directory / part
            limit = _name_max(directory)
    longest = len(os.fsencode(_temp_sibling(p, "9" * max(_PID_DIGITS, len(str(os.getpid())))).name))
    if longest > limit:
        extra = longest - len(os.fsencode(p.name))
        raise OutputError(f"{p}: the name is {len(os.fsencode(p.name))} bytes; with the temporary sibling's "
                          f"{extra} more (.NAME.tmp-PID-...) it exceeds the file system's limit of {limit} bytes "
                          f"per name; choose a name of at most {limit - extra} bytes")


def check_dir(path: str | os.PathLike, kind: str, overwrite: bool = False, claim: bool = True) -> Path:
    """Before any work: may an output directory of `kind` be written at `path`? With
    `claim`, the path is this process's until it exits or `write_dir` finishes."""
    p = Path(path).expanduser().absolute()
    check_name_length(p)
    if p.is_symlink():
        raise OutputError(f"{p}: is a symbolic link{' (dangling)' if not p.exists() else ''}; not writing "
                          "through it (give the real directory)")
    if p.exists() and not p.is_dir():
        raise OutputError(f"{p}: exists and is a file; not replacing it (choose another output path)")
    if p.is_dir() and any(p.iterdir()):
        if not is_ours(p, kind):
            raise OutputError(f"{p}: exists and holds files this tool did not write; not touching it "
                              "(choose a new or empty directory)")
        if not overwrite:
            raise OutputError(f"{p}: holds an earlier {kind.replace('_', ' ')}; pass --overwrite to replace it")
    p = check_writable(p, kind.replace("_", " "))
    if claim:
        claim_path(p)
    return p


def check_file(path: str | os.PathLike, overwrite: bool = False, what: str = "output file") -> Path:
    """Before any work: may an output file be written at `path`?"""
    p = Path(path).expanduser().absolute()
    check_name_length(p)
    if p.is_dir():
        raise OutputError(f"{p}: is a directory; the {what} must be a file path")
    if p.exists() and not overwrite:
        raise OutputError(f"{p}: exists; pass --overwrite to replace it")
    p = check_writable(p, what)
    claim_path(p)
    return p


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_CLAIMED: set[Path] = set()


def _claim_file(final: Path) -> Path:
    return final.parent / f".{final.name}.claim"


def _start_time(pid: int) -> str:
    """When process `pid` started, as the kernel counts it (Linux: field 22 of
    /proc/PID/stat, clock ticks since boot); "" where that cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
    except OSError:
        return ""
    fields = stat.rpartition(")")[2].split()  # after the command name, which may hold spaces: field 3 on
    return fields[19] if len(fields) > 19 else ""


def _my_claim() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "start": _start_time(os.getpid())}


def _read_claim(text: str) -> dict | None:
    """A claim file's holder {"pid", "host", "start"} (host and start None in the claim of
    an older version, which holds only the pid); None for anything else (taken over)."""
    text = text.strip()
    if text.isdigit():
        return {"pid": int(text), "host": None, "start": None}
    try:
        holder = json.loads(text)
    except ValueError:
        return None
    if not isinstance(holder, dict) or not isinstance(holder.get("pid"), int) or isinstance(holder["pid"], bool):
        return None
    return {"pid": holder["pid"], "host": holder.get("host"), "start": holder.get("start")}


def _holder_is_live(holder: dict) -> bool:
    """Whether the process of a claim (on this host) still runs: its pid is there and, when
    the claim recorded it, with the same start time (a reused pid is another process)."""
    if not _pid_alive(holder["pid"]):
        return False
    return not holder["start"] or _start_time(holder["pid"]) in ("", holder["start"])


def claim_path(final: Path) -> None:
    """Makes `final` this process's output: refused while another live process holds it."""
    if final in _CLAIMED or not final.parent.is_dir():
        return  # a parent that does not exist yet: nobody else can be writing there (it is made at the write)
    claim = _claim_file(final)
    me = _my_claim()
    for _ in range(3):  # take over a dead process's claim; lose a race to a live one
        try:
            fd = os.open(claim, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            try:
                holder = _read_claim(claim.read_text())
            except FileNotFoundError:
                continue
            except (OSError, UnicodeDecodeError):
                holder = None
            if holder is not None and holder["host"] not in (None, me["host"]):
                raise OutputError(f"{final}: is claimed by a command on host {holder['host']} (pid {holder['pid']}; "
                                  f"claim file {claim}); wait for it to finish, or delete {claim} if that writer "
                                  "is gone") from None
            if holder is not None and holder["pid"] != me["pid"] and _holder_is_live(holder):
                raise OutputError(f"{final}: is being written by another command (pid {holder['pid']}), which "
                                  f"holds {claim}; wait for it to finish or choose another output path (if no "
                                  f"such command runs, delete {claim})") from None
            claim.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(me) + "\n")
        if not _CLAIMED:
            atexit.register(release_all)
        _CLAIMED.add(final)
        return
    raise OutputError(f"{final}: could not claim it ({claim} keeps changing); is another command writing it?")


def release(final: Path) -> None:
    if final in _CLAIMED:
        _CLAIMED.discard(final)
        claim = _claim_file(final)
        try:
            holder = _read_claim(claim.read_text())
            if holder is not None and holder["pid"] == os.getpid() and holder["host"] in (None, socket.gethostname()):
                claim.unlink()
        except (OSError, UnicodeDecodeError):
            pass


def release_all() -> None:
    for final in list(_CLAIMED):
        release(final)


def _temp_sibling(final: Path, pid: str | None = None) -> Path:
    return final.parent / f".{final.name}.tmp-{pid or os.getpid()}-{uuid.uuid4().hex[:8]}"


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
    final = check_dir(path, kind, overwrite, claim=False)
    final.parent.mkdir(parents=True, exist_ok=True)
    claim_path(final)
    clean_leftovers(final)
    tmp = _temp_sibling(final)
    tmp.mkdir()  # default permissions (umask), not mkdtemp's 0700
    carried: list[str] = []  # the user's entries, moved from the old output into the new one
    try:
        fill(tmp)
        _list_our_entries(tmp)
        if final.is_dir() and any(final.iterdir()):  # ours (checked above): replace only what we wrote
            ours = _our_entries(final)
            new_names = {e.name for e in tmp.iterdir()}
            foreign = sorted(e.name for e in final.iterdir() if e.name not in (ours if ours is not None else new_names))
            clash = [n for n in foreign if n in new_names]
            if clash:
                raise OutputError(f"{final}: holds {', '.join(clash)}, which this tool did not write there but the "
                                  "new output would replace; move it out of the folder and run again")
            for name in foreign:
                os.rename(final / name, tmp / name)
                carried.append(name)
            old = _temp_sibling(final)
            os.rename(final, old)
            os.rename(tmp, final)
            carried = []
            shutil.rmtree(old)
        else:
            if final.is_dir():
                final.rmdir()  # empty
            os.rename(tmp, final)
    except BaseException:
        for name in carried:  # put the user's entries back before the temporary output goes
            os.rename(tmp / name, final / name)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        release(final)
    return final


def _list_our_entries(directory: Path) -> None:
    """Adds the list of the entries `fill` wrote to the output's metadata.json."""
    meta = directory / METADATA_FILE
    data = json.loads(meta.read_text())
    data[FILES_KEY] = sorted(e.name for e in directory.iterdir())
    meta.write_text(json.dumps(data, indent=2) + "\n")


def write_file(path: str | os.PathLike, write: Callable[[Path], Any], overwrite: bool = False,
               what: str = "output file") -> Path:
    """Calls `write(tmp_path)` and renames the result to exactly `path`."""
    final = check_file(path, overwrite, what)
    final.parent.mkdir(parents=True, exist_ok=True)
    claim_path(final)
    clean_leftovers(final)
    tmp = _temp_sibling(final)
    try:
        write(tmp)
        if not overwrite and os.path.lexists(final):  # appeared while we worked: keep it
            raise OutputError(f"{final}: was written by something else while this command ran; not replacing it "
                              "(pass --overwrite to replace it)")
        os.replace(tmp, final)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise
    finally:
        release(final)
    return final
