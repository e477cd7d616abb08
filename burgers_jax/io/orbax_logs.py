"""What orbax and tensorstore print after a failure that our own one-line message
already names (a full disk, an unreadable checkpoint), and one notice about a format we
do not use, dropped: only those records, each matched by its text (a library call stays
quiet without changing the process's log levels; the commands set absl's level at their
entry). Installed by the checkpoint code when it saves or restores (each filter once)."""

from __future__ import annotations

import logging
import sys

from absl import logging as absl_logging

from burgers_jax.io import disk


class _DropDiskFullEchoes(logging.Filter):
    """On a full disk, orbax logs the exception of each of its writer threads (absl:
    "... raised an exception"), and asyncio each write's future whose error nobody read
    ("Future exception was never retrieved"), each with a traceback, burying the one
    line `disk.named_when_full` makes of the error the caller gets. Those records, and
    only those whose exception is a full disk, are dropped."""

    ECHOES = ("raised an exception", "exception was never retrieved")

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None and isinstance(record.args, dict):
            exc = record.args.get("exception")
        echo = any(e in str(record.msg) for e in self.ECHOES)
        return not (echo and exc is not None and disk.is_disk_full(exc))


class _DropFailedRestoreEchoes(logging.Filter):
    """After a restore that failed on an unreadable checkpoint (reported in one line and
    skipped), the read futures orbax left behind are garbage-collected whenever Python
    gets to them, and asyncio logs each one's error with a traceback ("Task exception was
    never retrieved"): a timing-dependent wall of text about the failure already named.
    Installed only once a restore has failed; drops only those echoes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "exception was never retrieved" not in str(record.msg)


class _DropNoOcdbtMergeNotice(logging.Filter):
    """orbax's pytree handler tries to merge per-process OCDBT files after every save, also
    when the save wrote none (our whole-tree files are plain zarr, `use_ocdbt=False`), and
    logs "Skipping merge of OCDBT checkpoints" at WARNING each time: a notice about a
    format we do not use, on every conversion and every saved result. Only that record."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Skipping merge of OCDBT checkpoints: No per-process OCDBT" not in str(record.msg)


def _add_filter_once(filter_cls: type[logging.Filter], *loggers: logging.Logger) -> None:
    for logger in loggers:
        if not any(isinstance(f, filter_cls) for f in logger.filters):
            logger.addFilter(filter_cls())


def quiet_failed_restore_echoes() -> None:
    _add_filter_once(_DropFailedRestoreEchoes, logging.getLogger("asyncio"))


def quiet_no_ocdbt_merge_notice() -> None:
    _add_filter_once(_DropNoOcdbtMergeNotice, absl_logging.get_absl_logger())


def quiet_disk_full_thread_logs() -> None:
    _add_filter_once(_DropDiskFullEchoes, absl_logging.get_absl_logger(), logging.getLogger("asyncio"))


def quiet_closed_event_loop() -> None:
    """After a failed orbax restore, tensorstore's reader threads keep completing futures
    on orbax's event loop, already closed: each prints an "Event loop is closed"
    traceback through `sys.unraisablehook` (dozens for one corrupt file), burying the one
    message that matters. Those, and only those, are dropped (installed once)."""
    previous = sys.unraisablehook
    if getattr(previous, "_burgers_quiet", False):
        return

    def hook(unraisable):
        exc = unraisable.exc_value
        if isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed":
            return
        previous(unraisable)

    hook._burgers_quiet = True
    sys.unraisablehook = hook
