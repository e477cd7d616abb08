"""What every command shares: one place that turns a `UserError` into
`prog: error: ...` and exit status 2."""

from __future__ import annotations

import sys
from typing import Callable

from burgers_jax.errors import UserError

EXIT_USER_ERROR = 2


def run(prog: str, body: Callable[[], int | None]) -> int:
    """Runs a command's body; a `UserError` becomes one line on stderr and exit 2."""
    try:
        return body() or 0
    except UserError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
