"""Weak answers made named ones: a full disk during convert, export and
generate; a symlinked `--out` for `burgers-export --peft`; files that need pickle; Ctrl-C
in generate. Each is one line on stderr, no traceback, exit 2 (130 for Ctrl-C), and
nothing left behind: no temporary `.NAME.tmp-*` sibling, no partial output.

Faults are injected at the lowest call that writes (orbax's `Checkpointer.save`, which
drives tensorstore; `torch.save`; h5py's `create_dataset`), raising what those libraries
raise on a full disk (measured on a full tmpfs, see `burgers_jax.io.disk`); where this
machine lets a test mount a small tmpfs in a private mount namespace, the commands also
run against a really full one. Tiny model, tiny files.
"""

from __future__ import annotations

import errno
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
from collections import namedtuple
from pathlib import Path

import h5py
import numpy as np
import orbax.checkpoint as ocp
import pytest
import torch
from conftest import REPO

from burgers_jax import generate as generate_cmd
from burgers_jax import predict as predict_cmd
from burgers_jax.data import writer
from burgers_jax.io import arrays, disk
from burgers_jax.io import checkpoint as ck
from burgers_jax.model.config import LoraConfig
from porting import convert_ckpt as cc
from porting import export_torch
from porting.torch_checkpoint import NOT_WEIGHTS_ONLY, load_torch_file

ENOSPC = "No space left on device"
# What tensorstore raises (through orbax) when the disk fills up, verbatim but for the path.
TENSORSTORE_FULL = ('RESOURCE_EXHAUSTED: Error writing local file "{p}/x/0.0": Failed writing: "{p}/x/0.0.__lock": '
                    "Failed to write 6196 bytes to file 14: No space left on device [os_error_code='28']")
# What h5py raises when the disk fills up (errno 28, HDF5's own text).
H5PY_FULL = ("Can't write data (file write failed: time = Tue Dec  1 13:43:19 2026\n, filename = '{p}', "
             "file descriptor = 3, errno = 28, error message = 'No space left on device', buf = 0x55f0, "
             "total write size = 2048, bytes this sub-write = 2048, offset = 4096)")
UNSAFE_ADVICE = ("weights_only set to False", "weights_only` set to `False", "Re-running", "safe_globals",
                 "trusted source", "allow_pickle", "unsafely", "pickle.load")


class Custom:
    """An object only pickle can store (torch's weights-only loader refuses it)."""


def _one_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def _assert_nothing_left(out: Path) -> None:
    left = [p.name for p in out.parent.iterdir() if p.name == out.name or p.name.startswith(f".{out.name}.tmp-")]
    assert left == [], f"left behind: {left}"


def _disk_full_line(err: str, prog: str, out: Path) -> str:
    line = _one_line(err)
    assert line.startswith(f"{prog}: error: no space left on {out} (needs about "), line
    assert " MB" in line, line
    return line


# ----------------------------------------------------------------------------- 1. a full disk


@pytest.mark.parametrize("raised", ["tensorstore", "oserror"])
def test_full_disk_during_convert(tiny_best_pt, tmp_path, monkeypatch, capsys, raised):
    def full(self, path, *args, **kwargs):
        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / "partial").write_bytes(b"\0" * 4096)  # some chunks got written
        if raised == "tensorstore":
            raise ValueError(TENSORSTORE_FULL.format(p=path))
        raise OSError(errno.ENOSPC, ENOSPC)

    monkeypatch.setattr(ocp.Checkpointer, "save", full)
    out = tmp_path / "conv"
    assert cc.main([str(tiny_best_pt), "--out", str(out)]) == 2
    _disk_full_line(capsys.readouterr().err, "burgers-convert", out)
    _assert_nothing_left(out)


def _full_torch_save(raised):
    def full(obj, f, *args, **kwargs):
        if isinstance(f, (str, os.PathLike)):
            Path(f).write_bytes(b"\0" * 4096)
        else:
            f.write(b"\0" * 4096)
        if raised == "oserror":
            raise OSError(errno.ENOSPC, ENOSPC)
        try:  # what torch.save into a file object raises: its writer's RuntimeError, the OSError as context
            raise OSError(errno.ENOSPC, ENOSPC)
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598") from None

    return full


@pytest.mark.parametrize("raised", ["oserror", "torch_runtime_error"])
def test_full_disk_during_export_merged(tiny_converted, tmp_path, monkeypatch, capsys, raised):
    monkeypatch.setattr(torch, "save", _full_torch_save(raised))
    out = tmp_path / "merged.pt"
    assert export_torch.main(["--checkpoint", str(tiny_converted), "--merged", "--out", str(out)]) == 2
    line = _disk_full_line(capsys.readouterr().err, "burgers-export", out)
    weights = disk.tree_bytes(ck.load_converted(tiny_converted)[0])  # merged: the base weights' size
    assert f"needs about {disk.format_mb(weights)}" in line, line
    _assert_nothing_left(out)


GENERATE = ["--num-samples", "3", "--num-frames", "4", "--resolution", "8"]


def test_full_disk_during_generate(tmp_path, monkeypatch, capsys):
    real, calls = h5py.Group.create_dataset, []

    def full(self, name, *args, **kwargs):
        calls.append(name)
        if len(calls) == 9:  # into the second sample
            raise OSError(errno.ENOSPC, H5PY_FULL.format(p=self.file.filename))
        return real(self, name, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", full)
    out = tmp_path / "d.h5"
    assert generate_cmd.main([*GENERATE, "--out", str(out)]) == 2
    line = _disk_full_line(capsys.readouterr().err, "burgers-generate", out)
    assert f"needs about {disk.format_mb(writer.dataset_bytes(3, 4, 8))}" in line, line
    assert len(calls) == 9
    _assert_nothing_left(out)


def test_generate_refuses_a_file_that_cannot_fit_before_the_work(tmp_path, monkeypatch, capsys):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(disk.shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 120_000, 120_000))

    def never(*args, **kwargs):
        raise AssertionError("the work started")

    monkeypatch.setattr(writer, "burgers_fields32", never)
    out = tmp_path / "big.h5"
    assert generate_cmd.main(["--num-samples", "2", "--num-frames", "100", "--resolution", "64",
                              "--out", str(out)]) == 2
    line = _disk_full_line(capsys.readouterr().err, "burgers-generate", out)
    assert "needs about 7.0 MB, 0.1 MB free there" in line, line  # 2 x 100 x (64^2 x 2 + 4 x 64 x 2) x 4 bytes
    _assert_nothing_left(out)


def _private_tmpfs_command(where: Path) -> list[str] | None:
    """`unshare` arguments that give a private mount namespace (gone when the command
    exits) where a tmpfs may be mounted on `where`; None when this machine does not allow it."""
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        return None
    for cmd in ([["unshare", "-m"]] if os.geteuid() == 0 else []) + [["unshare", "-rm"]]:
        probe = subprocess.run([*cmd, "mount", "-t", "tmpfs", "-o", "size=64k", "none", str(where)],
                               capture_output=True, timeout=30)
        if probe.returncode == 0:
            return cmd
    return None


REAL_FULL_DISK = textwrap.dedent("""
    import contextlib, io, os, sys
    from pathlib import Path
    from porting import convert_ckpt, export_torch
    from burgers_jax import generate
    best, converted, full = sys.argv[1:4]
    full = Path(full)
    cases = {
        "convert": (convert_ckpt.main, [best, "--out", str(full / "conv")], full / "conv"),
        "export": (export_torch.main, ["--checkpoint", converted, "--merged", "--out", str(full / "m.pt")],
                   full / "m.pt"),
        "generate": (generate.main, ["--num-samples", "4", "--num-frames", "80", "--resolution", "32",
                                     "--compression", "gzip", "--out", str(full / "d.h5")], full / "d.h5"),
        "generate_upfront": (generate.main, ["--num-samples", "4", "--num-frames", "80", "--resolution", "32",
                                             "--out", str(full / "e.h5")], full / "e.h5"),
    }
    for name, (main, args, out) in cases.items():
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            rc = main(args)
        lines = [l for l in err.getvalue().splitlines() if l.strip()]
        left = sorted(p.name for p in full.iterdir())
        print(f"{name}|{rc}|{len(lines)}|{lines[-1] if lines else ''}|{left}")
""")


def test_a_really_full_disk(tiny_best_pt, tiny_converted, tmp_path):
    """convert, export --merged and generate against a 300 KB tmpfs: the real tensorstore,
    torch and h5py failures, each one named line, exit 2, and the tmpfs empty again."""
    full = tmp_path / "full"
    full.mkdir()
    cmd = _private_tmpfs_command(full)
    if cmd is None:
        pytest.skip("no private mount namespace with tmpfs here (unshare/mount not permitted)")
    script = tmp_path / "full_disk.py"
    script.write_text(REAL_FULL_DISK)
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([*cmd, "sh", "-c", f'mount -t tmpfs -o size=300k none "{full}" && exec "$0" "$@"',
                           sys.executable, str(script), str(tiny_best_pt), str(tiny_converted), str(full)],
                          capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Event loop is closed" not in proc.stderr, proc.stderr[-3000:]
    rows = {r.split("|")[0]: r.split("|")[1:] for r in proc.stdout.splitlines() if r.count("|") == 4}
    assert set(rows) == {"convert", "export", "generate", "generate_upfront"}, proc.stdout
    for name, (rc, n_lines, line, left) in rows.items():
        prog = "burgers-generate" if name.startswith("generate") else f"burgers-{name}"
        assert (rc, n_lines, left) == ("2", "1", "[]"), (name, rc, n_lines, line, left, proc.stderr[-2000:])
        assert line.startswith(f"{prog}: error: no space left on {full}/"), (name, line)
        assert "needs about" in line and "free there" in line, (name, line)


# ----------------------------------------------------------------------------- 2. --peft through a symlink


@pytest.fixture
def adapters_dir(tmp_path):
    adapters = {"transformer": {f"layers_{i}": {"self_attn": {"q_proj": {
        "lora_A": np.zeros((64, 2), np.float32), "lora_B": np.zeros((2, 64), np.float32)}}} for i in (0, 1)}}
    return ck.save_adapters(tmp_path / "ad", adapters, LoraConfig(r=2, alpha=4.0, target_modules=("q_proj",)))


@pytest.mark.parametrize("where", ["dangling_symlink", "symlink_to_empty_dir", "symlink_to_file", "file"])
def test_export_peft_refuses_a_symlink_or_file_out_before_the_work(tiny_converted, adapters_dir, tmp_path,
                                                                     monkeypatch, capsys, where):
    out = tmp_path / "peft_out"
    target = tmp_path / "target"
    if where == "dangling_symlink":
        out.symlink_to(target)
    elif where == "symlink_to_empty_dir":
        target.mkdir()
        out.symlink_to(target)
    elif where == "symlink_to_file":
        target.write_text("mine")
        out.symlink_to(target)
    else:
        out.write_text("mine")

    def no_work(*args, **kwargs):
        raise AssertionError("the export loaded the model before refusing --out")

    monkeypatch.setattr(export_torch, "load_for_export", no_work)
    args = ["--checkpoint", str(tiny_converted), "--lora", str(adapters_dir), "--peft", "--out", str(out)]
    assert export_torch.main(args) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"burgers-export: error: {out}"), line
    assert ("symbolic link" if "symlink" in where else "file") in line, line
    assert os.path.lexists(out) and out.is_symlink() == ("symlink" in where)  # untouched
    if where == "symlink_to_file":
        assert target.read_text() == "mine"
    if where == "symlink_to_empty_dir":
        assert list(target.iterdir()) == []
    assert not any(".tmp-" in p.name for p in tmp_path.iterdir())


# ----------------------------------------------------------------------------- 3. files that need pickle


@pytest.mark.parametrize("zipfile", [True, False], ids=["zip", "legacy"])
def test_pickled_object_checkpoint_is_refused_without_unsafe_advice(tmp_path, capsys, zipfile):
    path = tmp_path / "objects.pt"
    torch.save({"x": Custom(), "model_state_dict": {"w": torch.zeros(2)}}, path,
               _use_new_zipfile_serialization=zipfile)
    assert cc.main([str(path), "--out", str(tmp_path / "out")]) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"burgers-convert: error: {path}: {NOT_WEIGHTS_ONLY}"), line
    assert not any(w in line for w in UNSAFE_ADVICE), line
    assert "\x1b[" not in line, line  # no terminal escapes
    assert not (tmp_path / "out").exists()


def test_a_folder_named_weights_only_does_not_make_a_checkpoint_refused(tmp_path):
    """The refusal is read from torch's message without the path in it."""
    folder = tmp_path / "weights_only trusted source"
    folder.mkdir()
    path = folder / "legacy.pt"
    torch.save({"model_state_dict": {"w": torch.zeros(2)}}, path, _use_new_zipfile_serialization=False)
    obj, mmapped = load_torch_file(path)  # the mmap attempt fails naming the path; the legacy read follows
    assert not mmapped and torch.equal(obj["model_state_dict"]["w"], torch.zeros(2))


@pytest.mark.parametrize("kind", ["object_npy", "pickle_file"])
def test_array_needing_pickle_is_refused_without_unsafe_advice(tmp_path, kind):
    path = tmp_path / "x.npy"
    if kind == "object_npy":
        np.save(path, np.array([{}], dtype=object), allow_pickle=True)
    else:
        path.write_bytes(pickle.dumps({"x": 1}))
    for mmap_mode in ("r", None):
        with pytest.raises(arrays.ArrayFileError) as e:
            arrays.load_plain_array(path, mmap_mode=mmap_mode)
        assert str(e.value) == f"{path}: {arrays.NOT_PLAIN}"
    text = tmp_path / "notes.npy"
    text.write_text("my notes\n")
    with pytest.raises(arrays.ArrayFileError, match="not a .npy array file") as e:
        arrays.load_plain_array(text)
    assert not any(w in str(e.value) for w in UNSAFE_ADVICE), e.value
    np.save(tmp_path / "ok.npy", np.arange(3.0))
    assert arrays.load_plain_array(tmp_path / "ok.npy").tolist() == [0.0, 1.0, 2.0]


@pytest.mark.parametrize("kind", ["object_npy", "pickle_file"])
def test_predict_input_needing_pickle_is_refused_without_unsafe_advice(tiny_converted, tmp_path, capsys, kind):
    path = tmp_path / "x.npy"
    if kind == "object_npy":
        np.save(path, np.array([{}], dtype=object), allow_pickle=True)
    else:
        path.write_bytes(pickle.dumps({"x": 1}))
    rc = predict_cmd.main(["--checkpoint", str(tiny_converted), "--input", str(path),
                           "--output", str(tmp_path / "y.npy")])
    line = _one_line(capsys.readouterr().err)
    assert rc == 2 and not any(w in line for w in UNSAFE_ADVICE), line
    assert arrays.NOT_PLAIN in line, line


# ----------------------------------------------------------------------------- 4. Ctrl-C in generate


def test_ctrl_c_during_generate_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    real, calls = h5py.Group.create_dataset, []

    def interrupted(self, name, *args, **kwargs):
        calls.append(name)
        if len(calls) == 9:  # Ctrl-C while the second sample is being written
            raise KeyboardInterrupt
        return real(self, name, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", interrupted)
    out = tmp_path / "d.h5"
    assert generate_cmd.main([*GENERATE, "--out", str(out)]) == 130
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("burgers-generate: interrupted"), line
    assert len(calls) == 9
    _assert_nothing_left(out)
