"""The HDF5 compressions of the fields that the data set writer (`burgers_jax.data.writer`)
offers, importable without h5py or jax: `burgers-generate --compression` lists them before
anything heavy loads."""

from __future__ import annotations

COMPRESSIONS = ("none", "gzip", "lzf")
