"""Moved: the torch side lives in `burgers_jax.porting` (the library) and in
`burgers_jax.convert` / `burgers_jax.export` (the commands). Each `porting.<name>` is
the module `burgers_jax.porting.<name>` under its old name, kept for one release:
import the new path. `python porting/convert_ckpt.py ...` and
`python porting/export_torch.py ...` stay the same commands as `burgers-convert` and
`burgers-export`.

Importing this package needs no torch; `porting.mapping` and `porting.architecture`
need none either, and the modules that do need it raise an ImportError naming the
install command.
"""

from __future__ import annotations

import collections
import importlib
import sys
import types
from typing import Any, Callable, Mapping

from burgers_jax.porting import INSTALL_TORCH, TORCH_MISSING  # noqa: F401  (the old names)

_NAMESPACE = types.ModuleType.__dict__["__dict__"]  # a module's own namespace, below the override here


def _own(module: types.ModuleType) -> dict[str, Any]:
    return _NAMESPACE.__get__(module)


class _Forwarding(types.ModuleType):
    """An old module name whose reads and writes reach the moved module, so that a
    `monkeypatch.setattr(porting.convert_ckpt, "verify", ...)` patches what `convert`
    calls, and its undo restores it; only its own names (`main`, `build_parser`, the
    module's dunders) stay here."""

    @property
    def __dict__(self) -> Mapping[str, Any]:
        """Its own names over the moved module's: what `vars()` and monkeypatch read."""
        own = _own(self)
        return collections.ChainMap(own, vars(own["_moved"]))

    def __getattr__(self, name: str) -> Any:  # a name not in its own namespace
        return getattr(_own(self)["_moved"], name)

    def __setattr__(self, name: str, value: Any) -> None:
        own = _own(self)
        if name in own:
            super().__setattr__(name, value)
        else:
            setattr(own["_moved"], name, value)

    def __delattr__(self, name: str) -> None:
        own = _own(self)
        if name in own:
            super().__delattr__(name)
        else:
            delattr(own["_moved"], name)

    def __dir__(self) -> list[str]:
        return sorted(self.__dict__)


def alias(old: str, new: str, **commands: Callable) -> None:
    """Makes the module named `old` the moved module `new`. With `commands` (the old
    `main` and `build_parser`, which now live in the command modules), `old` keeps them
    and forwards every other name to `new`."""
    moved = importlib.import_module(new)
    if not commands:
        sys.modules[old] = moved  # what `import old` and `from porting import <name>` return
        return
    shim = sys.modules[old]
    for name in [n for n in shim.__dict__ if not (n.startswith("__") and n.endswith("__"))]:
        del shim.__dict__[name]  # the shim's own imports: `convert` must be the moved function, not a module
    shim.__dict__.update(commands, _moved=moved)
    shim.__class__ = _Forwarding
