"""The one base of every error a user can cause.

A bad path, flag, config field, data file or checkpoint raises a subclass of
`UserError`; the command layer (`burgers_jax.cli.run`) prints it as `prog: error: ...`
and exits with status 2, so no traceback escapes for a user's mistake. It subclasses
`ValueError` so that library callers who catch that keep working.
"""


class UserError(ValueError):
    """An error the user can fix; its message names the file, flag or field at fault."""


class TrainConfigError(UserError):
    """A training configuration that cannot run; raised before any work is done."""
