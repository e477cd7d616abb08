"""Moved: the library (`convert`, `convert_model`, `convert_lora`, ...) is
`burgers_jax.porting.convert_ckpt`, the command (`main`, `build_parser`) is
`burgers_jax.convert`; this old name stays for one release.

    python porting/convert_ckpt.py best.pt [--out DIR] [--verify]   # = burgers-convert
"""

import sys

from burgers_jax import convert  # light: the command imports torch and jax in main

if __name__ == "__main__":
    sys.exit(convert.main())
else:
    import porting

    porting.alias(__name__, "burgers_jax.porting.convert_ckpt", main=convert.main, build_parser=convert.build_parser)
