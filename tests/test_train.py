"""Training-loop helpers: the logged losses are means over the logging interval.
Run: pytest tests/test_train.py"""

import json

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
