"""Output claims and temporary siblings (`burgers_jax.io.outputs`): a name too long for the
file system once `.NAME.tmp-PID-XXXXXXXX` is added is refused before any work, naming the
path and the limit; a claim records the pid, the host and the process's start time, so a
pid that now belongs to another process does not block the output, a claim made on another
host is never taken over, and every refusal names the claim file."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from burgers_jax import predict as predict_cmd
from burgers_jax.io import outputs

SUFFIX = len(".") + len(".tmp-") + 7 + len("-") + 8  # .NAME.tmp-PID-XXXXXXXX, a pid of up to 7 digits


@pytest.fixture(autouse=True)
def _release_claims():
    yield
    outputs.release_all()


def _one_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def _name_max(directory: Path) -> int:
    try:
        return os.pathconf(directory, "PC_NAME_MAX")
    except (AttributeError, ValueError, OSError):
        return 255


def _claim(out: Path) -> Path:
    return out.parent / f".{out.name}.claim"


# ----------------------------------------------------------------------------- a name too long


def test_a_name_whose_temporary_sibling_does_not_fit_is_refused_before_the_work(tmp_path):
    limit = _name_max(tmp_path)
    longest_ok = limit - SUFFIX
    ok = tmp_path / ("a" * longest_ok)
    assert outputs.write_file(ok, lambda p: p.write_text("x")) == ok and ok.read_text() == "x"
    for n in (longest_ok + 1, limit - 10, limit - 5):  # the 240-250 on a 255-byte file system
        out = tmp_path / ("b" * n)
        called = []
        with pytest.raises(outputs.OutputError) as e:
            outputs.write_file(out, lambda p: called.append(p))
        assert str(out) in str(e.value) and f"limit of {limit} bytes" in str(e.value), e.value
        assert f"at most {longest_ok} bytes" in str(e.value), e.value
        assert not called, "refused before the work"
        with pytest.raises(outputs.OutputError, match=f"limit of {limit} bytes"):
            outputs.write_dir(out, lambda p: called.append(p), "evaluation")
        assert not called
        assert [p.name for p in tmp_path.iterdir()] == [ok.name], "no claim, no temporary left"


def test_a_folder_name_too_long_is_refused_before_the_work(tmp_path):
    limit = _name_max(tmp_path)
    out = tmp_path / ("c" * (limit + 1)) / "ev"
    with pytest.raises(outputs.OutputError, match=f"at most {limit} bytes per name") as e:
        outputs.check_dir(out, "evaluation")
    assert str(out) in str(e.value)


def test_predict_refuses_a_too_long_output_name_in_one_line_before_loading_anything(tmp_path, capsys):
    out = tmp_path / ("p" * (_name_max(tmp_path) - 10))
    rc = predict_cmd.main(["--checkpoint", str(tmp_path / "no_model"), "--input", str(tmp_path / "no.npy"),
                           "--out", str(out)])
    line = _one_line(capsys.readouterr().err)
    assert rc == 2, line
    assert line.startswith(f"burgers-predict: error: {out}: the name is ") and "exceeds the file system's limit" in line
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- claims


def test_a_claim_records_the_pid_the_host_and_the_start_time(tmp_path):
    out = outputs.check_file(tmp_path / "pred.npy")
    holder = json.loads(_claim(out).read_text())
    assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
    if Path(f"/proc/{os.getpid()}/stat").exists():
        assert holder["start"] and holder["start"] == outputs._start_time(os.getpid())
    outputs.release_all()
    assert not _claim(out).exists()


@pytest.fixture
def live_process():
    """A live process that is not this one (a stand-in for another command, or an unrelated one)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc
    proc.kill()
    proc.wait()


def _write_claim(out: Path, pid: int, host: str | None = None, start: str | None = None) -> Path:
    claim = _claim(out)
    claim.write_text(f"{pid}\n" if host is None else json.dumps({"pid": pid, "host": host, "start": start}) + "\n")
    return claim


def test_a_live_writers_claim_is_refused_naming_the_claim_file(tmp_path, live_process):
    out = tmp_path / "pred.npy"
    claim = _write_claim(out, live_process.pid, socket.gethostname(), outputs._start_time(live_process.pid))
    with pytest.raises(outputs.OutputError) as e:
        outputs.write_file(out, lambda p: p.write_text("x"))
    text = str(e.value)
    assert f"being written by another command (pid {live_process.pid})" in text and str(claim) in text, text
    assert not out.exists() and claim.exists()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="start times are read from /proc (Linux)")
def test_a_claim_whose_pid_now_belongs_to_another_process_is_taken_over(tmp_path, live_process):
    out = tmp_path / "pred.npy"
    start = outputs._start_time(live_process.pid)
    _write_claim(out, live_process.pid, socket.gethostname(), str(int(start) + 12345))  # the pid, reused since
    outputs.write_file(out, lambda p: p.write_text("x"))
    assert out.read_text() == "x" and not _claim(out).exists()


def test_a_dead_writers_claim_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    for host in (None, socket.gethostname()):  # a claim of an older version (the pid alone), and of this one
        out = tmp_path / f"pred_{host}.npy"
        _write_claim(out, dead.pid, host, "1")
        outputs.write_file(out, lambda p: p.write_text("x"))
        assert out.read_text() == "x" and not _claim(out).exists()


def test_an_old_pid_only_claim_of_a_live_process_still_blocks_and_names_the_claim_file(tmp_path, live_process):
    out = tmp_path / "ev"
    claim = _write_claim(out, live_process.pid)
    with pytest.raises(outputs.OutputError, match=rf"\(pid {live_process.pid}\)") as e:
        outputs.check_dir(out, "evaluation")
    assert str(claim) in str(e.value)


def test_a_claim_from_another_host_is_never_taken_over(tmp_path, capsys):
    out = tmp_path / "pred.npy"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that is dead here says nothing about the other host
    claim = _write_claim(out, dead.pid, "node-17.cluster", "4242")
    with pytest.raises(outputs.OutputError) as e:
        outputs.write_file(out, lambda p: p.write_text("x"))
    text = str(e.value)
    assert "host node-17.cluster" in text and f"pid {dead.pid}" in text and f"delete {claim}" in text, text
    assert claim.exists() and not out.exists()
    rc = predict_cmd.main(["--checkpoint", str(tmp_path / "no_model"), "--input", str(tmp_path / "no.npy"),
                           "--out", str(out)])
    line = _one_line(capsys.readouterr().err)
    assert rc == 2 and line.startswith(f"burgers-predict: error: {out}: is claimed by a command on host "
                                       "node-17.cluster"), line
    assert str(claim) in line
