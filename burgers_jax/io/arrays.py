"""Reading a user's `.npy` array without ever unpickling it, and without passing on
numpy's advice to ("If you trust the file you can load it unsafely using the
`allow_pickle=` keyword argument or `pickle.load()`"): a file that holds pickled objects
is refused as such, in one line naming the file.

    load_plain_array(path)  # np.load(path, mmap_mode="r", allow_pickle=False), named errors
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np

from burgers_jax.errors import UserError

NOT_PLAIN = "not a plain numeric array file; we do not load pickled objects"
_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"  # .npz
_PICKLE_PROTO = b"\x80"  # a pickle of protocol 2 or later (np.save of an object, pickle.dump)


class ArrayFileError(UserError):
    """A file given as an array that is not a plain .npy array."""


def load_plain_array(path: str | os.PathLike, mmap_mode: str | None = "r") -> np.ndarray:
    """The array of a `.npy` file (memory-mapped by default). Anything that would need
    pickle (an object array, a pickle file) is an ArrayFileError saying that we do not
    load pickled objects; any other non-array file, an ArrayFileError naming why."""
    path = Path(path)
    if not path.is_file():
        raise ArrayFileError(f"{path}: input file not found")
    try:
        with open(path, "rb") as f:
            head = f.read(len(_NPY_MAGIC))
    except OSError as e:
        raise ArrayFileError(f"{path}: cannot read it ({e.strerror or e})") from None
    if head.startswith(_PICKLE_PROTO):
        raise ArrayFileError(f"{path}: {NOT_PLAIN}")
    if head.startswith(_ZIP_MAGIC):
        raise ArrayFileError(f"{path}: an .npz archive, not a .npy array file (save one array with np.save)")
    if not head.startswith(_NPY_MAGIC):
        raise ArrayFileError(f"{path}: not a .npy array file (it does not start with the .npy header)")
    try:
        array = np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except (ValueError, OSError, EOFError, pickle.UnpicklingError) as e:
        text = str(e).strip()
        if any(w in text.lower() for w in ("pickle", "python objects", "object arrays")):
            raise ArrayFileError(f"{path}: {NOT_PLAIN}") from None
        reason = text.splitlines()[0][:160] if text else ""
        raise ArrayFileError(f"{path}: not a .npy array file ({type(e).__name__}{': ' + reason if reason else ''})"
                             ) from None
    if not isinstance(array, np.ndarray) or array.dtype.hasobject:
        raise ArrayFileError(f"{path}: {NOT_PLAIN}")
    return array
