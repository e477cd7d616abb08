"""Loader throughput: training samples/s read from an HDF5 file by `train_batch`,
called directly and through the background prefetch (grain).

  .venv/bin/python scripts/bench/loader.py                    # generates 8 full-size samples
  .venv/bin/python scripts/bench/loader.py --file data/burgers2d_nu0.1_0.15_res128_t1000_n100.h5

Without --file a temporary file of 8 samples x 1000 frames x 128^2 (about 1 GB) is
written and deleted afterwards. Windows are random over 1000 frames, so after the first
pass most reads hit the OS page cache, as they would during a long run on a machine
with enough memory; `--consumer-ms` simulates a device step between batches to show
that the prefetcher hides the loading time.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

from burgers_jax.data import loader
from burgers_jax.data import sources as data
from burgers_jax.data.writer import write_dataset as generate


def bench(source, train_idx, batch_size, steps, prefetch, consumer_s, depth=2):
    fn = lambda s: loader.train_batch(source, train_idx, batch_size, seed=0, step=s)  # noqa: E731
    it = loader.prefetch(fn, range(steps), depth) if prefetch else map(fn, range(steps))
    t0 = time.perf_counter()
    wait = 0.0
    for _ in tqdm(range(steps), desc="prefetch" if prefetch else "direct", leave=False):
        w0 = time.perf_counter()
        next(it)
        wait += time.perf_counter() - w0
        if consumer_s:
            time.sleep(consumer_s)  # stands in for a device step (releases the GIL)
    total = time.perf_counter() - t0
    return steps * batch_size / total, wait / steps


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--file", default=None, help="HDF5 file (default: generate a temporary one)")
    p.add_argument("--num-samples", type=int, default=8, help="samples of the generated file")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--consumer-ms", type=float, default=0.0,
                   help="also time a loop that spends this long per step on 'compute'")
    a = p.parse_args(argv)

    tmp = None
    path = a.file
    if path is None:
        tmp = tempfile.TemporaryDirectory()
        path = Path(tmp.name) / "bench.h5"
        s = generate(path, num_samples=a.num_samples)
        print(f"generated {a.num_samples} samples x 1000 x 128^2 in {s['seconds']:.1f} s "
              f"({s['seconds_per_sample']:.3f} s/sample)")
    try:
        source = data.HDF5Source(path)
        train_idx, _ = data.split_indices(source.num_samples)
        if len(train_idx) == 0:
            train_idx = list(range(source.num_samples))
        print(f"{path}: {source.num_samples} samples, {source.num_frames} frames, "
              f"{source.resolution}^2; batch {a.batch_size}, {a.steps} steps, window {data.WINDOW}")
        bench(source, train_idx, a.batch_size, 5, False, 0.0)  # warm-up
        for prefetch in (False, True):
            sps, _ = bench(source, train_idx, a.batch_size, a.steps, prefetch, 0.0)
            print(f"  {'prefetch  ' if prefetch else 'direct    '}  {sps:8.1f} samples/s")
        if a.consumer_ms:
            c = a.consumer_ms / 1000
            for prefetch in (False, True):
                sps, wait = bench(source, train_idx, a.batch_size, a.steps, prefetch, c)
                print(f"  with {a.consumer_ms:.0f} ms compute/step, "
                      f"{'prefetch  ' if prefetch else 'direct    '}: {sps:7.1f} samples/s, "
                      f"consumer waits {1000 * wait:.1f} ms/step for data")
        source.close()
    finally:
        if tmp is not None:
            tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
