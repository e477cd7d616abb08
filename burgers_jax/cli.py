"""What every command shares: one place that turns a `UserError` into
`prog: error: ...` and exit status 2, and Ctrl-C into one line and exit status 130, also
while the command starts (`start`). Imports nothing heavy: the console scripts import
this, and each command's module, before anything can catch a Ctrl-C."""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from burgers_jax.errors import UserError
from burgers_jax.io import outputs

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # the shell's status for a command stopped by SIGINT


def run(prog: str, body: Callable[[], int | None]) -> int:
    """Runs a command's body; a `UserError` becomes one line on stderr and exit 2, a
    Ctrl-C one line and exit 130 (outputs are written to a temporary sibling and renamed
    at the end, so an interrupted command leaves nothing half-written under the final name)."""
    try:
        return body() or 0
    except UserError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        return interrupted(prog)
    finally:
        outputs.release_all()  # the output paths this command claimed (a failed one wrote nothing there)


def interrupted(prog: str) -> int:
    print(f"{prog}: interrupted; nothing was written under the output name", file=sys.stderr)
    return EXIT_INTERRUPTED


def start(prog: str, main: Callable[[], int | None]) -> int:
    """Runs a command's whole `main`: its imports of jax and the like (seconds, so each
    command module imports them in `main`, not at its top), its flags, then `run`. A
    Ctrl-C while it starts is the same one line and exit 130 as one during the work."""
    try:
        return main() or 0
    except KeyboardInterrupt:
        return interrupted(prog)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Every command's `--help`: the description as written, and each flag's default after
    its help, `(default: X)`; a required flag has none, and a flag whose default is None
    says in its help what happens without it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if ("%(default)" in text or action.required or not action.option_strings
                or action.default is None or action.default is argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)"
