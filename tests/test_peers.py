"""benchmarks/peers.py stays alive: each contender whose packages are installed trains for a few
seconds, samples, and writes what the README table is made of. CI does not install the peers (their
virtual environment is the script's business), so there only catdog's path runs. Run:
pytest tests/test_peers.py"""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"catdog": ("catdog",), "diffusers": ("diffusers",), "lucidrains": ("denoising_diffusion_pytorch", "ema_pytorch")}


def peers_script():
    spec = importlib.util.spec_from_file_location("peers", ROOT / "benchmarks" / "peers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.parametrize("peer", sorted(PACKAGES))
def test_each_installed_peer_trains_samples_and_reports(peer, tmp_path, small_data):
    if any(importlib.util.find_spec(module) is None for module in PACKAGES[peer]):
        pytest.skip(f"{peer} is not installed here (python benchmarks/peers.py installs it in its own venv)")
    peers = peers_script()
    if peer != "catdog":
        peers.STEPS = 2                              # pixel-space sampling steps: seconds, not minutes
    result = peers.run_worker(peer, minutes=0.02, n=4, out=tmp_path, data=str(small_data), grid=2)
    with np.load(tmp_path / f"{peer}_samples.npz") as f:
        assert f["images"].shape == (4, 32, 32, 3) and f["images"].dtype == np.uint8
        assert f["labels"].tolist() == [0, 0, 1, 1]
    assert result["train_steps"] >= 1 and result["user_lines"] >= 2 and result["peak_rss_mb"] > 0
    if peer != "catdog":
        assert result["train_s"] >= 0.02 * 60                               # it trained for its budget


def test_every_batch_of_samples_starts_from_its_own_seed():
    """The first 15-minute benchmark sampled every batch of a class with seed 0: 4 copies of 500 images.
    Oracle: a fake sampler that paints its seed; no two batches may share one."""
    peers = peers_script()
    paint = lambda labels, seed: np.full((len(labels), 32, 32, 3), seed % 251, np.uint8)
    images, labels = peers.sample_classes(paint, 10, batch=3)
    assert labels.tolist() == [0] * 5 + [1] * 5
    assert len({int(im[0, 0, 0]) for im in images[::3]}) == 4


def test_table_and_figure_gather_every_contender_finished_in_the_folder(tmp_path):
    """A rerun of one peer (`--peers lucidrains`) must not drop the others from the table: the rows come
    from the folder. Oracle: two finished contenders and one without scores."""
    peers = peers_script()
    for name, fid in (("catdog", 90.0), ("diffusers", 300.0), ("lucidrains", None)):
        run = {"peer": name, "version": "v", "train_s": 900.0, "train_steps": 10, "sample64_s": 1.0, "n": 4,
               "user_lines": 2, "peak_rss_mb": 1024}
        (tmp_path / f"{name}.json").write_text(json.dumps(run))
        np.save(tmp_path / f"{name}_grid.npy", np.zeros((4, 32, 32, 3), np.uint8))
        if fid is not None:
            (tmp_path / f"{name}_samples.eval.json").write_text(json.dumps({"fid": fid, "kid": 0.1,
                                                                             "class_fidelity": 0.5}))
    rows = peers.finished(tmp_path)
    assert [r["peer"] for r in rows] == ["catdog", "diffusers"] and rows[1]["fid"] == 300.0
    assert "| diffusers (v) | 300.0 @ 4 |" in peers.table(rows)
    peers.grids_figure(rows, tmp_path, tmp_path / "grids.png")
    assert (tmp_path / "grids.png").stat().st_size > 1000
