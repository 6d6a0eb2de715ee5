"""Faults: repeated SIGKILLs at random moments, a failing disk, a NaN loss. The run must resume to
the uninterrupted result and never lose or overwrite its last good checkpoint.
Run: pytest tests/test_faults.py"""

import errno
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import catdog.checkpoint as checkpoint
from catdog.autoencoder import SimpleAutoencoder
from catdog.checkpoint import load_state, load_weights, save_state
from catdog.config import PRESETS, config_to_dict, override
from catdog.data import create_cat_dog_dataset
from catdog.errors import UserError
from catdog.train import train_autoencoder

ROOT = Path(__file__).resolve().parents[1]
FLAGS = ["--preset", "tiny", "--ae-train-steps", "80", "--diffusion-train-steps", "300",
         "--checkpoint-every-steps", "3"]


def _main(run_dir, **kw):
    return subprocess.Popen([sys.executable, str(ROOT / "main.py"), *FLAGS, "--run-dir", str(run_dir)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)


def _wait_for_write(path: Path, proc, timeout: float = 120) -> bool:
    """Wait until this process (re)writes `path`; False if it ends first."""
    mtime = lambda: path.stat().st_mtime_ns if path.exists() else None
    before, deadline = mtime(), time.time() + timeout
    while proc.poll() is None and time.time() < deadline:
        if mtime() not in (None, before):
            return True
        time.sleep(0.01)
    return False


@pytest.mark.slow
def test_random_sigkills_then_rerun_equals_uninterrupted(tmp_path):
    """Oracle: the same command run once without interruption. Kills land in AE training, in
    diffusion training (checkpoints every 3 steps, so often while one is being written), and at
    random moments; after each, the same command is rerun."""
    ref = _main(tmp_path / "ref")
    assert ref.wait(timeout=600) == 0, ref.stderr.read()
    rng = random.Random(0)
    run_dir = tmp_path / "killed"
    plan = ["ae_state.pt", "ae_state.pt", "diffusion_state.pt", "diffusion_state.pt", None, None]
    stages_hit = []
    for trigger in plan:
        proc = _main(run_dir)
        if trigger is None:
            time.sleep(rng.uniform(1.0, 8.0))
        elif not _wait_for_write(run_dir / trigger, proc):
            proc.wait()
            continue
        time.sleep(rng.uniform(0.0, 0.3))
        if proc.poll() is None:
            stages_hit.append("diffusion" if (run_dir / "autoencoder.safetensors").exists() else "autoencoder")
            proc.send_signal(signal.SIGKILL)
        proc.wait()
    final = _main(run_dir)
    assert final.wait(timeout=600) == 0, final.stderr.read()
    assert {"autoencoder", "diffusion"} <= set(stages_hit), stages_hit
    for name in ("autoencoder.safetensors", "diffusion.safetensors"):
        a, _, _ = load_weights(tmp_path / "ref" / name)
        b, _, _ = load_weights(run_dir / name)
        assert all(torch.equal(a[k], b[k]) for k in a), name


def test_disk_full_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ae_state.pt"
    save_state(path, {"config": {}, "step": 1})
    good = path.read_bytes()

    def full_disk(obj, f):
        Path(f).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(checkpoint.torch, "save", full_disk)
    with pytest.raises(UserError, match="No space left"):
        save_state(path, {"config": {}, "step": 2})
    assert path.read_bytes() == good and not (tmp_path / "ae_state.pt.tmp").exists()


def test_unwritable_run_folder_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the run folder should be")
    result = subprocess.run([sys.executable, str(ROOT / "main.py"), "--preset", "tiny", "--run-dir",
                             str(blocker / "run")], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "cannot write" in result.stderr


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    config = override(PRESETS["tiny"], {"ae_train_steps": 20, "checkpoint_every_steps": 5})
    images, labels = create_cat_dog_dataset("train")
    images, labels = images[::50], labels[::50]
    real_loss = SimpleAutoencoder.loss
    calls = {"n": 0}

    def loss_turning_nan(self, *args):
        calls["n"] += 1
        total, parts, x_hat = real_loss(self, *args)
        return (total * float("nan") if calls["n"] > 12 else total), parts, x_hat
    monkeypatch.setattr(SimpleAutoencoder, "loss", loss_turning_nan)
    state = tmp_path / "ae_state.pt"
    with pytest.raises(UserError, match=r"non-finite \(nan or inf\) at step 12"):
        train_autoencoder(config, images, labels, state, tmp_path / "m", torch.device("cpu"))
    assert load_state(state, config_to_dict(config), ("ae",))["step"] == 10
