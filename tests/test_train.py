"""Training-loop helpers: the logged losses are means over the logging interval.
Run: pytest tests/test_train.py"""

import json

import torch

from catdog.train import MetricsLog


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
