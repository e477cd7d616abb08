"""Moved: the library (`export`, `export_merged`, `export_lora`, ...) is
`burgers_jax.porting.export_torch`, the command (`main`, `build_parser`) is
`burgers_jax.export`; this old name stays for one release.

    python porting/export_torch.py --checkpoint DIR --lora ADAPTERS --out best_lora.pt   # = burgers-export
"""

import sys

from burgers_jax import export  # light: the command imports torch and jax in main

if __name__ == "__main__":
    sys.exit(export.main())
else:
    import porting

    porting.alias(__name__, "burgers_jax.porting.export_torch", main=export.main, build_parser=export.build_parser)
