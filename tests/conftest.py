"""Test setup. Two host CPU devices are forced *before* jax is imported, so the
data-parallel tests (pmap residual, sharded train step) run on any machine; code
that is not sharded explicitly runs on device 0 as usual."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
