"""Training configs (`get_config()` files) and what reads them field by field."""

from __future__ import annotations

from typing import Any


def flat_leaves(tree, prefix: str = "") -> list[tuple[str, Any]]:
    """[('section.field', value)] of a config (ConfigDict or nested mapping), values as they are."""
    out = []
    for key, value in tree.items():
        if hasattr(value, "items"):
            out += flat_leaves(value, f"{prefix}{key}.")
        else:
            out.append((f"{prefix}{key}", value))
    return out
