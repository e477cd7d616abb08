"""The processes around a training run: stop signals (Ctrl-C, SIGTERM) handled at step
boundaries and agreed between hosts, `jax.distributed` initialisation, and host values
<-> arrays laid out over every process's devices."""

from __future__ import annotations

import os
import signal
import sys

import jax
import numpy as np

from burgers_jax.errors import TrainConfigError


def global_array(tree, sharding):
    """Host values (the same on every process) as arrays laid out by `sharding`; each
    process supplies only its own devices' shards, so this works across hosts too (a
    plain device_put needs every device to be addressable)."""
    def put(x):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    return jax.tree.map(put, tree)


def to_host(tree):
    """Arrays as numpy on this process; an array sharded over several hosts is gathered."""
    from jax.experimental import multihost_utils

    def get(a):
        if not isinstance(a, jax.Array) or a.is_fully_addressable or a.is_fully_replicated:
            return np.asarray(a)
        return np.asarray(multihost_utils.process_allgather(a, tiled=True))

    return jax.tree.map(get, tree)


class StopSignals:
    """While installed, the first Ctrl-C (SIGINT) or SIGTERM (a cluster's time limit or a
    preemption) only sets `requested`, so the loop stops at the next step boundary with
    its state saved; a second one acts at once (the default action)."""

    SIGNALS = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM (a time limit or preemption?)"}

    def __init__(self):
        self.requested: int | None = None  # the signal that asked to stop
        self._previous: dict[int, object] = {}

    def _handler(self, signum, frame):
        self.requested = signum
        signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
        print(f"\n{self.SIGNALS[signum]}: stopping after this step and saving a checkpoint "
              "(send it again to abort)", file=sys.stderr, flush=True)

    def install(self) -> "StopSignals":
        try:
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handler)
        except ValueError:  # not the main thread: leave signals alone
            self._previous = {}
        return self

    def agreed(self) -> int | None:
        """The stop request, the same on every process: a multi-host run's hosts get the
        signal at different steps, and must all stop (and checkpoint) at the same one."""
        if jax.process_count() == 1:
            return self.requested
        from jax.experimental import multihost_utils

        flags = multihost_utils.process_allgather(np.int32(self.requested or 0))
        return int(np.max(flags)) or None

    def restore(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous = {}


DISTRIBUTED_ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


def initialize_distributed() -> None:
    """`jax.distributed.initialize()`, from a cluster JAX detects (SLURM, Open MPI, TPU
    pods, ...) or from the three DISTRIBUTED_ENV variables set on every host."""
    env = {k: os.environ[k] for k in DISTRIBUTED_ENV if os.environ.get(k)}
    kwargs = {}
    try:
        if "JAX_NUM_PROCESSES" in env:
            kwargs["num_processes"] = int(env["JAX_NUM_PROCESSES"])
        if "JAX_PROCESS_ID" in env:
            kwargs["process_id"] = int(env["JAX_PROCESS_ID"])
        jax.distributed.initialize(**kwargs)
    except (ValueError, RuntimeError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise TrainConfigError(
            f"training.distributed=True: jax.distributed.initialize() failed ({reason}). Outside a cluster JAX "
            "detects (SLURM, Open MPI, TPU pods), set on every host JAX_COORDINATOR_ADDRESS=host:port (process "
            "0's address), JAX_NUM_PROCESSES=N and JAX_PROCESS_ID=0..N-1; set now: "
            + (", ".join(f"{k}={v}" for k, v in env.items()) or "none")) from None
