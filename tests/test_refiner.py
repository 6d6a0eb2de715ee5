"""The refiner (generative decoding stage): its sampler lands on a known residual, a tiny batch
overfits, training resumes bitwise, and the stage joins `catdog run` and every reader of a run.
Run: pytest tests/test_refiner.py"""

import json

import numpy as np
import pytest
import torch

import catdog.training_loop as loop_module
from catdog.cli import main
from catdog.config import PRESETS, SampleConfig, config_to_dict, override
from catdog.data import create_cat_dog_dataset, to_model_range
from catdog.refiner import Refiner
from catdog.run_dir import load_run
from catdog.train import random_crops, train_refiner
from killing import Killed, kill_after_saves

TINY = PRESETS["tiny"]


def test_refine_with_an_exact_denoiser_adds_the_known_residual():
    """Oracle: if the network's denoised residual is always r*, DDIM lands on r*, so the refined image
    is x_hat + residual_std * r* (clamped)."""
    refiner = Refiner(TINY.refiner)
    refiner.residual_std.fill_(0.5)
    x_hat = torch.rand(3, 3, 32, 32) * 1.6 - 0.8
    target = torch.randn(3, 3, 32, 32) * 0.2
    refiner.denoise = lambda r_t, t, y, x: target[:len(r_t)]
    out = refiner.refine(x_hat, torch.tensor([0, 1, 0]), seed=0, steps=7)
    torch.testing.assert_close(out, (x_hat + 0.5 * target).clamp(-1, 1), atol=1e-5, rtol=0)


def test_random_crops_take_each_examples_own_window():
    x = torch.arange(2 * 3 * 32 * 32, dtype=torch.float32).view(2, 3, 32, 32)
    out = random_crops(x, torch.tensor([[0, 0], [5, 16]]), 16)
    torch.testing.assert_close(out[0], x[0, :, :16, :16])
    torch.testing.assert_close(out[1], x[1, :, 5:21, 16:32])


def _pairs(n=16):
    images, labels = create_cat_dog_dataset("train")
    images, labels = images[:n], labels[:n]
    x = to_model_range(images)
    x_hat = torch.nn.functional.avg_pool2d(x, 4).repeat_interleave(4, 2).repeat_interleave(4, 3)   # a "blur"
    return images, x_hat, labels


@pytest.mark.slow
def test_a_tiny_batch_overfits(tmp_path):
    images, x_hat, labels = _pairs(8)
    config = override(TINY, {"refiner_train_steps": 300, "refiner_batch_size": 8, "refiner_widths": (16, 32, 32),
                             "refiner_lr": 3e-3, "log_every_steps": 50, "refiner_crop_px": 32})
    train_refiner(config, images, x_hat, labels, tmp_path / "s.pt", tmp_path / "m.jsonl", torch.device("cpu"))
    losses = [json.loads(line)["loss"] for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert losses[-1] < 0.5 * losses[0], losses


def test_refiner_resume_equals_uninterrupted(tmp_path, monkeypatch):
    images, x_hat, labels = _pairs()
    config = override(TINY, {"refiner_train_steps": 12, "checkpoint_every_steps": 4, "log_every_steps": 4})
    cpu = torch.device("cpu")
    ref = train_refiner(config, images, x_hat, labels, tmp_path / "ref.pt", tmp_path / "m1", cpu)
    kill_after_saves(monkeypatch, 2)
    with pytest.raises(Killed):
        train_refiner(config, images, x_hat, labels, tmp_path / "s.pt", tmp_path / "m2", cpu)
    monkeypatch.undo()
    assert loop_module.load_state(tmp_path / "s.pt", config_to_dict(config), ("ae", "refiner"))["step"] == 8
    resumed = train_refiner(config, images, x_hat, labels, tmp_path / "s.pt", tmp_path / "m2", cpu)
    for k, v in ref.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k


def test_the_stage_is_part_of_the_run_and_of_every_reader(tiny_run, tmp_path):
    """tiny_run (conftest) ran every stage: the refiner names its autoencoder, samples are refined by
    default and raw with --no-refiner, the same seed gives the same images, and export carries it."""
    run = load_run(tiny_run.root)
    assert run.refiner is not None and float(run.refiner.residual_std) > 0
    labels = [0, 1, 1]
    refined = run.generate(labels, SampleConfig(steps=5))
    raw = run.generate(labels, SampleConfig(steps=5, refiner=False))
    assert not np.array_equal(refined, raw)
    np.testing.assert_array_equal(refined, run.generate(labels, SampleConfig(steps=5)))
    out = tmp_path / "export"
    assert main(["export", "--run-dir", str(tiny_run.root), "--out", str(out)]) == 0
    assert (out / "refiner.safetensors").is_file()
    npz = tmp_path / "s.npz"
    for flags in ([], ["--no-refiner"]):
        assert main(["sample", "--run-dir", str(out), "--class", "dog", "--n", "3", "--steps", "5",
                     "--npz", str(npz), "--force", *flags]) == 0
    assert load_run(out).refiner is not None
    again = tmp_path / "export_of_the_export"                      # pretrained/ itself is an export
    assert main(["export", "--run-dir", str(out), "--out", str(again)]) == 0
    assert load_run(again).refiner is not None


@pytest.mark.slow
def test_evaluate_reports_refined_and_raw_and_the_copying_check(tiny_run):
    from catdog.judge import default_judge_path
    if default_judge_path() is None:
        pytest.skip("ResNet-20 weights not present (../shared/weights or CATDOG_JUDGE)")
    assert main(["evaluate", "--run-dir", str(tiny_run.root), "--n", "20", "--steps", "5", "--skip-fid"]) == 0
    result = json.loads((tiny_run.root / "eval.json").read_text())
    assert result["refiner"] is True and "class_fidelity" in result["unrefined"]
    assert 0 <= result["class_fidelity_recon_refined"] <= 1 and result["recon_psnr_refined"] > 5
    for space in ("pixel_rms", "judge_features"):
        r = result["copying"][space]
        assert 0 < r["test_p1"] <= r["test_median"] and 0 <= r["samples_p1"] <= r["samples_median"]
