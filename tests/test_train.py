"""Training-loop helpers: the logged losses are means over the logging interval.
Run: pytest tests/test_train.py"""

import json

import numpy as np
import pytest
import torch

from catdog.config import PRESETS, override
from catdog.data import create_cat_dog_dataset
from catdog.device import autocast, cpu_has_bf16, uses_bf16
from catdog.train import train_autoencoder
from catdog.training_loop import MetricsLog


def test_metrics_log_writes_interval_means_and_restarts_when_a_term_switches_on(tmp_path):
    log = MetricsLog(tmp_path / "m.jsonl", "autoencoder", batch_size=4, start_step=0)
    for v in (1.0, 2.0, 6.0):
        log.add({"loss": torch.tensor(v), "mse": torch.tensor(v / 2)})
    log.write(3, 1e-3, log.interval_means())
    log.add({"loss": torch.tensor(5.0), "mse": torch.tensor(1.0)})
    log.add({"loss": torch.tensor(7.0), "mse": torch.tensor(1.0), "disc": torch.tensor(0.5)})  # on now
    log.write(5, 1e-3, log.interval_means())
    first, second = (json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines())
    assert (first["step"], first["loss"], first["mse"]) == (3, 3.0, 1.5)
    assert (second["loss"], second["disc"]) == (7.0, 0.5)


@pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no native bf16")
def test_bf16_autocast_on_a_bf16_cpu_trains_and_keeps_float32_weights(tmp_path):
    """On CPUs with native bf16 the training steps run under bf16 autocast: the autoencoder still
    learns (its loss falls) and its weights stay float32; with --no-bf16 nothing runs in bf16."""
    images, labels = create_cat_dog_dataset("train")
    images, labels = images[:64], labels[:64]
    config = override(PRESETS["tiny"], {"bf16": True, "ae_train_steps": 100, "log_every_steps": 25})
    cpu = torch.device("cpu")
    assert uses_bf16(cpu, True) and not uses_bf16(cpu, False)
    with autocast(cpu, True):
        assert torch.ones(2, 2).matmul(torch.ones(2, 2)).dtype == torch.bfloat16
    model = train_autoencoder(config, images, labels, tmp_path / "s.pt", tmp_path / "m.jsonl", cpu)
    losses = [json.loads(line)["mse"] for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert losses[-1] < losses[0] * 0.8, losses
    assert all(p.dtype == torch.float32 for p in model.parameters())
    with autocast(cpu, False):
        assert torch.ones(2, 2).matmul(torch.ones(2, 2)).dtype == torch.float32


def test_resume_drops_the_rows_logged_after_the_last_checkpoint(tmp_path):
    """A run killed after logging step 30 but checkpointing at 20 logs 30 again when resumed: the
    stale rows of that stage (and a line cut short by the kill) go, other stages' rows stay."""
    from catdog.training_loop import drop_rows_after
    rows = [{"stage": "autoencoder", "step": s} for s in (10, 20, 30)] + [{"stage": "diffusion", "step": 10}]
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"stage": "autoencoder", "st')
    drop_rows_after(path, "autoencoder", 20)
    kept = [json.loads(line) for line in path.read_text().splitlines()]
    assert kept == rows[:2] + rows[3:]



def test_the_prior_s_shifted_latents_are_the_encoder_s_latents_of_shifted_images(tiny_run, small_data):
    """Oracle: shifting image i by (dx, dy) = (1, -1) with replicated edges, then encoding it, gives row
    k * N + i of encode_shifted (k the shift's index, images then mirrors, (0, 0) left out)."""

    from catdog.run_dir import encode_shifted, load_run
    autoencoder = load_run(tiny_run.root).autoencoder
    images, labels = create_cat_dog_dataset("train", small_data)
    latents, shifted_labels = encode_shifted(autoencoder, small_data, 1, hflip=True)
    n = 2 * len(images)
    assert latents.shape == (8 * n, autoencoder.latent_mean.shape[0]) and len(shifted_labels) == 8 * n
    assert (shifted_labels[:len(images)] == torch.as_tensor(labels)).all()
    shifts = [(dx, dy) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dx or dy]
    k, i = shifts.index((1, -1)), 7
    padded = np.pad(images[i], ((1, 1), (1, 1), (0, 0)), mode="edge")
    moved = padded[0:32, 2:34]                                   # content moves left by 1, down by 1
    torch.testing.assert_close(latents[k * n + i], autoencoder.encode_images(moved[None])[0])


def test_shifted_latents_are_cached_by_autoencoder_file_and_data(tiny_run, small_data, tmp_path, monkeypatch):
    """The second request reads the cache (encoding would fail now) and gives the same tensors; another
    autoencoder file or shift is another entry."""
    import shutil
    from catdog import run_dir
    from catdog.lineage import data_digest
    monkeypatch.setenv("CATDOG_CACHE", str(tmp_path / "cache"))
    run = run_dir.load_run(tiny_run.root)
    digest = data_digest(small_data)
    first = run_dir.cached_shifted(run.paths, run.autoencoder, small_data, digest, 1, True)
    encoded = run_dir.encode_shifted
    monkeypatch.setattr(run_dir, "encode_shifted", lambda *a: (_ for _ in ()).throw(AssertionError("encoded again")))
    again = run_dir.cached_shifted(run.paths, run.autoencoder, small_data, digest, 1, True)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert torch.equal(first[0], encoded(run.autoencoder, small_data, 1, True)[0])
    other = run_dir.RunPaths(tmp_path / "other")
    other.root.mkdir()
    shutil.copy(run.paths.autoencoder, other.autoencoder)
    with open(other.autoencoder, "ab") as f:                         # another file: another digest
        f.write(b" ")
    with pytest.raises(AssertionError, match="encoded again"):
        run_dir.cached_shifted(other, run.autoencoder, small_data, digest, 1, True)
    with pytest.raises(AssertionError, match="encoded again"):
        run_dir.cached_shifted(run.paths, run.autoencoder, small_data, digest, 2, True)
    assert len(list((tmp_path / "cache" / "latents").iterdir())) == 1
    entry = next((tmp_path / "cache" / "latents").iterdir())
    entry.write_bytes(b"not safetensors")                            # a damaged entry is encoded again
    monkeypatch.setattr(run_dir, "encode_shifted", encoded)
    assert torch.equal(run_dir.cached_shifted(run.paths, run.autoencoder, small_data, digest, 1, True)[0], first[0])
    assert torch.equal(run_dir.load_weights(entry)[0]["latents"], first[0])


def test_a_run_trains_its_prior_on_shifted_latents_too(tmp_path, small_data, monkeypatch):
    """`--diffusion-shift-px 1` on the tiny preset: the diffusion stage trains (and logs its held-out
    loss) and its weights record the setting."""
    monkeypatch.setenv("CATDOG_CACHE", str(tmp_path / "cache"))          # the user's cache stays untouched
    from catdog.checkpoint import load_weights
    from catdog.pipeline import run_all
    config = override(PRESETS["tiny"], {"diffusion_shift_px": 1, "refiner_train_steps": 0, "decoder_train_steps": 0})
    paths = run_all(config, tmp_path / "r", data=small_data, figures=False, until="diffusion")
    assert load_weights(paths.diffusion)[1]["diffusion"]["diffusion_shift_px"] == 1
    rows = [json.loads(line) for line in paths.metrics.read_text().splitlines()]
    assert all("val_loss" in r for r in rows if r["stage"] == "diffusion")
