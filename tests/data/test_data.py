"""Data generation and loading: file layout and values against the formula written
out here (exp form, float64), the reference split and nu draws against numpy's legacy
global RNG, loader errors, stateless training batches, validation coverage, prefetch."""


import pickle
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from burgers_jax import generate as generate_cmd
from burgers_jax.data import loader, writer
from burgers_jax.data import sources as data
from burgers_jax.io.outputs import OutputError
from burgers_jax.physics import analytic

ROOT = Path(__file__).resolve().parents[2]

# A stored float32 value in [0.5, 1) (u and v always are) is within half a float32 ulp
# (2**-25) of the float64 value; allow one ulp (2**-24) for float64 rounding noise in z.
# A real fault (x/y swapped, wrong time, wrong nu) differs by far more than 1e-4.
F32_ATOL = 2.0**-24




def formula(nu, x, y, t):
    """docs/model_and_formats.md, "Burgers data" written directly (not analytic.py's tanh form)."""
    e = np.exp((-4.0 * x + 4.0 * y - t) / (32.0 * nu))
    return 0.75 - 0.25 / (1.0 + e), 0.75 + 0.25 / (1.0 + e)


def expected_sample(nu, times, n):
    """(data, left, right, bottom, top) in the file layout, float64."""
    c = (np.arange(n) + 0.5) / n
    t = np.asarray(times, dtype=np.float64)[:, None, None]
    y, x = c[None, :, None], c[None, None, :]
    data = np.stack(formula(nu, x, y, t), -1)
    left = np.stack(formula(nu, 0.0, y, t), -1)  # [T, H, 1, 2]
    right = np.stack(formula(nu, 1.0, y, t), -1)
    bottom = np.stack(formula(nu, x, 0.0, t), -1)  # [T, 1, W, 2]
    top = np.stack(formula(nu, x, 1.0, t), -1)
    return {"data": data, "left": left, "right": right, "bottom": bottom, "top": top}


@pytest.fixture(scope="module")
def small_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("gen") / "small.h5"
    writer.write_dataset(path, num_samples=4, num_frames=40, resolution=32, progress=False)
    return path


# --------------------------------------------------------------------------- generator


def test_generated_layout_is_the_reference_layout(tmp_path):
    path = tmp_path / "layout.h5"
    summary = writer.write_dataset(path, num_samples=3, num_frames=20, resolution=128, progress=False)
    assert summary["samples"] == 3 and summary["data_shape"] == (20, 128, 128, 2)
    t, n = 20, 128
    with h5py.File(path, "r") as f:
        assert sorted(f.keys()) == ["0", "1", "2"]
        for i in range(3):
            g = f[str(i)]
            assert sorted(g.keys()) == ["nu", "scalar", "vector"]
            assert sorted(g["vector"].keys()) == ["boundary", "data"]
            assert sorted(g["vector/boundary"].keys()) == ["bottom", "left", "right", "top"]
            assert g["nu"].shape == () and g["nu"].dtype == np.float32
            assert g["scalar"].shape is None  # empty dataset: no scalar fields
            assert isinstance(g["scalar"][()], h5py.Empty)
            shapes = {"vector/data": (t, n, n, 2),
                      "vector/boundary/left": (t, n, 1, 2), "vector/boundary/right": (t, n, 1, 2),
                      "vector/boundary/bottom": (t, 1, n, 2), "vector/boundary/top": (t, 1, n, 2)}
            for key, shape in shapes.items():
                assert g[key].shape == shape, key
                assert g[key].dtype == np.float32, key


def test_generated_values_match_the_formula(small_file):
    legacy_state = np.random.get_state()
    np.random.seed(42)  # the reference generator's draw, on numpy's global RNG
    nus_ref = np.sort(np.random.uniform(0.1, 0.15, 4))
    np.random.set_state(legacy_state)
    times = np.linspace(0.0, 1.0, 40)
    with h5py.File(small_file, "r") as f:
        for i in range(4):
            g = f[str(i)]
            assert g["nu"][()] == np.float32(nus_ref[i])
            want = expected_sample(nus_ref[i], times, 32)
            got = {"data": g["vector/data"][()],
                   **{b: g[f"vector/boundary/{b}"][()] for b in data.BOUNDARIES}}
            for key in want:
                np.testing.assert_allclose(got[key], want[key], rtol=0, atol=F32_ATOL, err_msg=key)
            # u + v = 1.5: exact in float64, within one float32 ulp of 1.5 (2**-23) stored
            assert np.abs(got["data"].sum(-1, dtype=np.float64) - 1.5).max() <= 2.0**-23


def test_boundaries_are_at_cell_centres_of_the_edge(small_file):
    with h5py.File(small_file, "r") as f:
        nu = float(f["1/nu"][()])
        left = f["1/vector/boundary/left"][()]
        top = f["1/vector/boundary/top"][()]
    n, t = 32, np.linspace(0, 1, 40)[:, None]
    c = (np.arange(n) + 0.5) / n
    u_left, _ = formula(nu, 0.0, c[None, :], t)  # x = 0, y = cell centres
    u_top, v_top = formula(nu, c[None, :], 1.0, t)  # y = 1, x = cell centres
    # nu read back as float32: relative change 3e-8 in z, far below the tolerance.
    np.testing.assert_allclose(left[:, :, 0, 0], u_left, rtol=0, atol=2 * F32_ATOL)
    np.testing.assert_allclose(top[:, 0, :, 1], v_top, rtol=0, atol=2 * F32_ATOL)
    # ... and not at the edge nodes (y = i / n): those values differ clearly.
    u_nodes, _ = formula(nu, 0.0, (np.arange(n) / n)[None, :], t)
    assert np.abs(left[:, :, 0, 0] - u_nodes).max() > 1e-4


def test_fast_fields_equal_analytic_fields():
    times = analytic.reference_times(30, 0.2, 0.7)
    for nu, n in [(0.1, 20), (0.137, 7), (0.05, 64)]:
        ref = analytic.analytic_fields(nu, times, n)
        got = analytic.burgers_fields32(nu, times, n)
        for key in ref:
            assert got[key].shape == ref[key].shape and got[key].dtype == np.float32
            np.testing.assert_allclose(got[key], ref[key], rtol=0, atol=F32_ATOL, err_msg=key)


def test_refuses_to_overwrite(tmp_path, capsys):
    path = tmp_path / "x.h5"
    writer.write_dataset(path, num_samples=1, num_frames=17, resolution=8, progress=False)
    before = path.read_bytes()
    with pytest.raises(OutputError, match="--overwrite"):
        writer.write_dataset(path, num_samples=2, num_frames=17, resolution=8, progress=False)
    argv = ["--output", str(path), "--num-samples", "2", "--num-frames", "17", "--resolution", "8"]
    assert generate_cmd.main(argv) == 2  # errors exit 2 in every command
    assert path.read_bytes() == before
    assert generate_cmd.main(argv + ["--overwrite"]) == 0
    with h5py.File(path, "r") as f:
        assert sorted(f.keys()) == ["0", "1"]
    assert "samples            2" in capsys.readouterr().out


def test_compression_and_chunks_read_back_the_same(tmp_path, small_file):
    path = tmp_path / "gz.h5"
    writer.write_dataset(path, num_samples=4, num_frames=40, resolution=32, compression="gzip",
                 chunk_frames=10, progress=False)
    with h5py.File(path, "r") as f, h5py.File(small_file, "r") as g:
        assert f["2/vector/data"].compression == "gzip"
        assert f["2/vector/data"].chunks == (10, 32, 32, 2)
        np.testing.assert_array_equal(f["2/vector/data"][()], g["2/vector/data"][()])


# --------------------------------------------------------------------------- reference draws


def test_split_equals_legacy_global_permutation():
    state = np.random.get_state()
    for n, seed in [(100, 42), (10, 42), (37, 7)]:
        np.random.seed(seed)
        perm = np.random.permutation(n)
        k = int(0.9 * n)
        np.random.seed(123)
        tr, va = data.split_indices(n, 0.9, seed)
        after = np.random.uniform()  # the global stream was not touched by split_indices
        np.random.seed(123)
        assert after == np.random.uniform()
        np.testing.assert_array_equal(tr, perm[:k])
        np.testing.assert_array_equal(va, perm[k:])
    np.random.set_state(state)
    tr, va = data.split_indices(100)
    assert len(tr) == 90 and len(va) == 10 and sorted(np.r_[tr, va]) == list(range(100))


def test_reference_nus_equal_legacy_global_draw():
    state = np.random.get_state()
    np.random.seed(42)
    want = np.sort(np.random.uniform(0.1, 0.15, 100))
    np.random.set_state(state)
    np.testing.assert_array_equal(data.reference_nus(), want)
    src = data.AnalyticSource.reference(num_samples=100, num_frames=20, resolution=8)
    assert [src.nu(i) for i in range(100)] == list(want)


# --------------------------------------------------------------------------- sources


def test_hdf5_source_reads_windows_of_the_formula(small_file):
    src = data.HDF5Source(small_file)
    assert (src.num_samples, src.num_frames, src.resolution) == (4, 40, 32)
    assert src.dt == pytest.approx(1 / 39, rel=1e-15)
    times = np.linspace(0.0, 1.0, 40)
    w = src.read_window(2, 11, 17)
    assert w["data"].shape == (17, 32, 32, 2) and w["left"].shape == (17, 32, 1, 2)
    assert w["bottom"].shape == (17, 1, 32, 2) and w["nu"].dtype == np.float32
    want = expected_sample(data.reference_nus(4)[2], times[11:28], 32)
    for key in want:
        np.testing.assert_allclose(w[key], want[key], rtol=0, atol=F32_ATOL, err_msg=key)
    with pytest.raises(data.DataError, match="sample 2.*start=30"):
        src.read_window(2, 30, 17)


def test_analytic_source_equals_hdf5_source(small_file):
    h5 = data.HDF5Source(small_file)
    an = data.AnalyticSource.reference(num_samples=4, num_frames=40, resolution=32)
    assert (an.num_samples, an.num_frames, an.resolution, an.dt) == \
        (h5.num_samples, h5.num_frames, h5.resolution, h5.dt)
    for i, start in [(0, 0), (3, 23), (1, 7)]:
        a, b = an.read_window(i, start, 17), h5.read_window(i, start, 17)
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{key} sample {i}")


def test_analytic_source_any_nu_and_time_range():
    src = data.AnalyticSource([0.3, 0.02], num_frames=11, resolution=12, t_range=(0.5, 2.5))
    assert src.dt == pytest.approx(0.2)
    w = src.read_window(1, 4, 5)
    want = expected_sample(0.02, 0.5 + 0.2 * np.arange(4, 9), 12)
    for key in want:
        np.testing.assert_allclose(w[key], want[key], rtol=0, atol=F32_ATOL, err_msg=key)


def test_analytic_source_rejects_bad_nus():
    with pytest.raises(data.DataError, match="no viscosities"):
        data.AnalyticSource([])
    with pytest.raises(data.DataError, match=r"sample 1: nu=-0.1"):
        data.AnalyticSource([0.1, -0.1])
    with pytest.raises(data.DataError, match=r"sample 0: nu=nan"):
        data.AnalyticSource([np.nan])


def test_hdf5_source_pickles_and_reopens(small_file):
    src = data.HDF5Source(small_file)
    a = src.read_window(1, 3, 17)
    clone = pickle.loads(pickle.dumps(src))
    b = clone.read_window(1, 3, 17)
    np.testing.assert_array_equal(a["data"], b["data"])
    src.close()
    np.testing.assert_array_equal(src.read_window(1, 3, 17)["top"], a["top"])  # reopens


# --------------------------------------------------------------------------- bad input


def write_file(path, samples=2, t=20, h=8, w=8, edit=None):
    """A valid file written with h5py alone; `edit(f)` then breaks it."""
    with h5py.File(path, "w") as f:
        for i in range(samples):
            g = f.create_group(str(i))
            g.create_dataset("nu", data=np.float32(0.1))
            g.create_dataset("scalar", shape=None, dtype=np.float32)
            g.create_dataset("vector/data", data=np.full((t, h, w, 2), 0.75, np.float32))
            for b, shape in [("left", (t, h, 1, 2)), ("right", (t, h, 1, 2)),
                             ("bottom", (t, 1, w, 2)), ("top", (t, 1, w, 2))]:
                g.create_dataset(f"vector/boundary/{b}", data=np.full(shape, 0.75, np.float32))
        if edit is not None:
            edit(f)
    return path


def _longer_sample_1(f):
    """Sample 1 self-consistent but with 21 frames: samples must share T."""
    del f["1"]
    src = write_file(Path(f.filename + ".one"), samples=2, t=21)
    with h5py.File(src, "r") as g:
        f.copy(g["1"], "1")


def _replace(key, arr):
    def edit(f):
        del f[key]
        f.create_dataset(key, data=arr)
    return edit


BAD_FILES = {
    "missing_group": (dict(samples=3, edit=lambda f: f.move("1", "5")),
                      r"sample 1: missing group '1'"),
    "missing_dataset": (dict(edit=lambda f: f.__delitem__("1/vector/boundary/top")),
                        r"sample 1 .*missing dataset '1/vector/boundary/top'"),
    "missing_nu": (dict(edit=lambda f: f.__delitem__("0/nu")), r"sample 0 .*missing dataset '0/nu'"),
    "missing_data": (dict(edit=lambda f: f.__delitem__("1/vector/data")),
                     r"sample 1 .*missing dataset '1/vector/data'"),
    "too_few_frames": (dict(t=16), r"sample 0 .*16 frames, fewer than the 17"),
    "not_square": (dict(h=8, w=12), r"sample 0 .*H=8 != W=12"),
    "left_shape": (dict(edit=_replace("1/vector/boundary/left", np.zeros((20, 8, 2, 2), np.float32))),
                   r"sample 1 .*'vector/boundary/left' has shape \(20, 8, 2, 2\)"),
    "top_frames": (dict(edit=_replace("0/vector/boundary/top", np.zeros((19, 1, 8, 2), np.float32))),
                   r"sample 0 .*'vector/boundary/top' has shape \(19, 1, 8, 2\)"),
    "bottom_swapped": (dict(edit=_replace("1/vector/boundary/bottom", np.zeros((20, 8, 1, 2), np.float32))),
                       r"sample 1 .*'vector/boundary/bottom'"),
    "samples_disagree": (dict(edit=_longer_sample_1),
                         r"sample 1 .*sample 0 has"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_files_name_file_and_sample(tmp_path, case):
    kwargs, pattern = BAD_FILES[case]
    path = write_file(tmp_path / f"{case}.h5", **kwargs)
    with pytest.raises(data.DataError, match=pattern) as info:
        data.HDF5Source(path)
    assert str(path) in str(info.value)


def test_valid_handmade_file_opens(tmp_path):
    src = data.HDF5Source(write_file(tmp_path / "ok.h5"))  # the base of BAD_FILES is fine
    assert (src.num_samples, src.num_frames, src.resolution) == (2, 20, 8)


def test_not_hdf5_empty_and_absent_files(tmp_path):
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    with pytest.raises(data.DataError, match="not an HDF5 file") as info:
        data.HDF5Source(text)
    assert str(text) in str(info.value)
    empty = tmp_path / "empty.h5"
    h5py.File(empty, "w").close()
    with pytest.raises(data.DataError, match="empty file") as info:
        data.HDF5Source(empty)
    assert str(empty) in str(info.value)
    with pytest.raises(data.DataError, match="no such file"):
        data.HDF5Source(tmp_path / "absent.h5")


def test_non_finite_window_names_file_sample_and_start(tmp_path):
    def poison(f):
        f["1/vector/data"][10, 3, 4, 0] = np.nan
        f["0/vector/boundary/right"][15, 0, 0, 1] = np.inf  # inside every 17-frame window
    path = write_file(tmp_path / "nan.h5", t=30, edit=poison)
    src = data.HDF5Source(path)  # layout is fine; values are only checked when read
    src.read_window(1, 11, 17)  # the window after the NaN is clean
    with pytest.raises(data.DataError, match=r"sample 1 .*non-finite .*'data'.*frame 5") as info:
        src.read_window(1, 5, 17)
    assert str(path) in str(info.value)
    with pytest.raises(data.DataError, match=r"sample 0 .*'right'.*starting at frame \d+"):
        loader.train_batch(src, [0], batch_size=1, seed=0, step=0, window=17)


# --------------------------------------------------------------------------- batches


@pytest.fixture(scope="module")
def small_source():
    return data.AnalyticSource.reference(num_samples=10, num_frames=40, resolution=16)


def test_train_batch_layout(small_source):
    tr, _ = data.split_indices(10)
    b = loader.train_batch(small_source, tr, batch_size=3, seed=1, step=5)
    assert b["frames"].shape == (3, 17, 16, 16, 6) and b["frames"].dtype == np.float32
    assert b["left"].shape == (3, 17, 16, 1, 2) and b["top"].shape == (3, 17, 1, 16, 2)
    assert b["nu"].shape == (3,) and b["nu"].dtype == np.float32
    assert b["valid"].dtype == bool and b["valid"].all()
    assert np.all(b["frames"][..., 2:] == 0)
    assert set(b["sample"]) <= set(tr) and np.all((0 <= b["start"]) & (b["start"] <= 40 - 17))
    for k in range(3):  # each item is the window it claims to be
        w = small_source.read_window(int(b["sample"][k]), int(b["start"][k]), 17)
        np.testing.assert_array_equal(b["frames"][k, ..., :2], w["data"])
        np.testing.assert_array_equal(b["right"][k], w["right"])
        assert b["nu"][k] == np.float32(small_source.nu(int(b["sample"][k])))


def test_train_batches_are_a_function_of_seed_and_step(small_source):
    tr, _ = data.split_indices(10)

    def batch(seed, step):
        return loader.train_batch(small_source, tr, batch_size=4, seed=seed, step=step)

    a, b = batch(0, 7), batch(0, 7)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    picks = {(tuple(batch(0, s)["sample"]), tuple(batch(0, s)["start"])) for s in range(6)}
    assert len(picks) == 6  # different steps draw different windows
    c = batch(1, 7)
    assert not (np.array_equal(a["sample"], c["sample"]) and np.array_equal(a["start"], c["start"]))
    assert not np.array_equal(a["frames"], batch(0, 8)["frames"])


def test_train_windows_cover_each_sample_once_per_epoch():
    tr = np.array([5, 9, 2, 7, 11, 3, 8])
    seen = np.concatenate([loader.train_windows(100, tr, 3, seed=4, step=s)[0] for s in range(7)])
    for epoch in range(3):  # 21 items = 3 epochs of 7
        assert sorted(seen[7 * epoch:7 * epoch + 7]) == sorted(tr)
    starts = np.concatenate([loader.train_windows(100, tr, 3, 4, s)[1] for s in range(200)])
    assert starts.min() >= 0 and starts.max() <= 100 - 17
    assert starts.min() < 10 and starts.max() > 73  # spread over the range, not stuck
    assert len(set(starts)) > 60  # 600 draws over 84 starts: a step-independent draw fails


def test_val_batches_cover_every_sample_deterministically(small_source):
    _, va = data.split_indices(10, train_ratio=0.5)  # 5 validation samples
    for per_sample in (1, 3):
        run1 = list(loader.val_batches(small_source, va, batch_size=4, windows_per_sample=per_sample))
        run2 = list(loader.val_batches(small_source, va, batch_size=4, windows_per_sample=per_sample))
        n_items = 5 * per_sample
        assert len(run1) == -(-n_items // 4)
        for a, b in zip(run1, run2):
            for key in a:
                np.testing.assert_array_equal(a[key], b[key], err_msg=key)
        valid = np.concatenate([b["valid"] for b in run1])
        samples = np.concatenate([b["sample"] for b in run1])[valid]
        starts = np.concatenate([b["start"] for b in run1])[valid]
        assert valid.sum() == n_items and not valid[n_items:].any()
        assert sorted(set(samples)) == sorted(va)
        assert len(set(zip(samples, starts))) == n_items  # no window counted twice
        assert all(b["frames"].shape[0] == 4 for b in run1)  # padded, not dropped
        assert np.all((0 <= starts) & (starts <= 40 - 17))
    single = loader.val_windows(40, [3], windows_per_sample=1)
    assert single == [(3, 12)]  # middle of the 24 possible starts


# --------------------------------------------------------------------------- prefetch


def test_prefetch_order_and_work_ahead():
    calls = []

    def fn(step):
        calls.append(step)
        return step * step

    it = loader.prefetch(fn, range(10), depth=2)
    assert next(it) == 0
    deadline = time.time() + 10
    while len(calls) < 3 and time.time() < deadline:  # works ahead of the consumer
        time.sleep(0.01)
    assert len(calls) >= 3
    assert list(it) == [s * s for s in range(1, 10)]
    assert list(it) == []


class Boom(RuntimeError):
    pass


def test_prefetch_propagates_worker_exceptions():
    def fn(step):
        if step == 3:
            raise Boom(f"bad step {step}")
        return step

    got = []
    with pytest.raises(Boom, match="bad step 3"):
        for x in loader.prefetch(fn, range(10)):
            got.append(x)
    assert got == [0, 1, 2]


def test_prefetch_stops_when_closed():
    calls = []
    it = loader.prefetch(lambda s: calls.append(s) or s, range(10**6), depth=2)
    assert [next(it) for _ in range(3)] == [0, 1, 2]
    it.close()
    time.sleep(0.2)
    n = len(calls)
    time.sleep(0.2)
    assert len(calls) == n <= 3 + 2 + 2  # consumed + buffered + in flight on the two threads


def test_prefetched_hdf5_batches_equal_direct_batches(small_file):
    src = data.HDF5Source(small_file)
    tr, _ = data.split_indices(src.num_samples, train_ratio=0.75)
    fn = lambda s: loader.train_batch(src, tr, batch_size=2, seed=3, step=s)  # noqa: E731
    batches = list(loader.prefetch(fn, range(4, 9)))
    assert len(batches) == 5
    for step, b in zip(range(4, 9), batches):
        direct = fn(step)
        for key in b:
            np.testing.assert_array_equal(b[key], direct[key], err_msg=f"{key} step {step}")
