"""Writes the analytic 2D Burgers data set in the reference HDF5 layout: a thin wrapper of
`burgers_jax.generate` (also installed as the `burgers-generate` command).

  .venv/bin/python scripts/generate_burgers_data.py --output data/burgers2d_nu0.1_0.15_res128_t1000_n100.h5
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from burgers_jax.generate import GenerateError, format_summary, generate, main  # noqa: E402,F401

if __name__ == "__main__":
    raise SystemExit(main())
