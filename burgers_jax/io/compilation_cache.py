"""JAX's persistent compilation cache for the command lines: a second run of the same
program (a resumed training, another evaluation) loads its compiled steps from disk
instead of compiling them again.

The cache lives in `~/.cache/burgers_jax/jax` unless the environment variable
`BURGERS_JAX_CACHE` names another directory; `BURGERS_JAX_CACHE=off` disables it. Every
program is kept, however quickly it compiled (JAX's default keeps those over 1 s): the
small programs of a command's setup (initialising adapters and the optimizer state)
add up to ~0.6 s of a warm start otherwise (measured, the small architecture).
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

ENV = "BURGERS_JAX_CACHE"
DEFAULT = Path.home() / ".cache" / "burgers_jax" / "jax"
_enabled: str | None = None


def enable(directory: str | os.PathLike | None = None) -> str | None:
    """Turns the cache on (idempotent); -> its directory, or None when disabled."""
    global _enabled
    path = str(directory or os.environ.get(ENV, "") or DEFAULT)
    if path.lower() in ("off", "0", "none", "false"):
        return None
    if _enabled == path:
        return path
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError:
        return None  # a read-only home: run without the cache rather than fail
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    _enabled = path
    return path
