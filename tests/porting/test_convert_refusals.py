"""`burgers-convert` refusals that used to be silent or to give advice that loses a file:
`--lora-for` on a full model checkpoint was ignored, and an `--out` naming a converted base
(the very `--lora-for` base the command reads) got "pass --overwrite" or "holds files this
tool did not write". Each is one line on stderr, exit status 2, nothing written."""

from __future__ import annotations

import shutil

import pytest

from porting import convert_ckpt as cc


@pytest.fixture(scope="module")
def tiny_lora_pt(tiny_best_pt, tmp_path_factory):
    """`best_lora.pt` of the tiny architecture (adapters on every projection, r=2)."""
    from porting import torch_reference as R

    config = R.small_model_config_dict()
    model = R.wrap_lora(R.build_model(config, seed=0), r=2, alpha=4.0, seed=1)
    path = tmp_path_factory.mktemp("tiny_lora") / "best_lora.pt"
    R.write_best_lora_pt(path, model, config, global_step=3)
    return path


@pytest.fixture
def base(tiny_converted, tmp_path):
    """A converted base of our own to refuse writing over (the session's stays untouched)."""
    return shutil.copytree(tiny_converted, tmp_path / "base")


def _one_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def _files(directory):
    return {p.relative_to(directory): p.read_bytes() for p in directory.rglob("*") if p.is_file()}


@pytest.mark.parametrize("out_is_base", [False, True])
def test_lora_for_on_a_full_model_checkpoint_is_refused(tiny_best_pt, base, tmp_path, capsys, out_is_base):
    before = _files(base)
    out = base if out_is_base else tmp_path / "out"
    argv = [str(tiny_best_pt), "--lora-for", str(base), "--out", str(out)] + (["--overwrite"] if out_is_base else [])
    assert cc.main(argv) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"burgers-convert: error: {tiny_best_pt}: is a full model checkpoint"), line
    assert "--lora-for applies to LoRA checkpoints" in line and "only" in line, line
    assert not (tmp_path / "out").exists()
    assert _files(base) == before


@pytest.mark.parametrize("overwrite", [False, True])
def test_out_naming_the_lora_for_base_says_it_would_overwrite_its_input(tiny_lora_pt, base, capsys, overwrite):
    before = _files(base)
    argv = [str(tiny_lora_pt), "--lora-for", str(base), "--out", str(base)] + (["--overwrite"] if overwrite else [])
    assert cc.main(argv) == 2
    line = _one_line(capsys.readouterr().err)
    assert f"--out {base} is the --lora-for base this command reads" in line, line
    assert "would overwrite its own input" in line and "choose another --out" in line, line
    assert "pass --overwrite" not in line and "did not write" not in line, line
    assert _files(base) == before


def test_out_naming_another_converted_base_is_refused_without_suggesting_overwrite(tiny_lora_pt, base, tmp_path,
                                                                                   capsys):
    before = _files(base)
    assert cc.main([str(tiny_lora_pt), "--out", str(base), "--overwrite"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert f"--out {base} holds a converted base model" in line and "choose another --out" in line, line
    assert "pass --overwrite" not in line and "did not write" not in line, line
    assert _files(base) == before


def test_lora_for_still_converts_a_lora_checkpoint(tiny_lora_pt, base, tmp_path, capsys):
    out = tmp_path / "adapters"
    assert cc.main([str(tiny_lora_pt), "--lora-for", str(base), "--out", str(out)]) == 0
    assert "converted LoRA adapters" in capsys.readouterr().out
    assert (out / "lora_config.json").is_file()
