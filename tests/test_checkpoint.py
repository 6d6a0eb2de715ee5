"""Checkpoints: a killed run resumes to the same weights bit for bit; bad files fail clearly.
Run: pytest tests/test_checkpoint.py"""

import os

import pytest
import torch

import catdog.train as train_module
from catdog.checkpoint import load_state, load_weights, save_state, save_weights
from catdog.config import PRESETS, config_to_dict, override
from catdog.data import create_cat_dog_dataset
from catdog.errors import UserError
from catdog.run_dir import load_autoencoder
from killing import Killed, kill_after_saves

CONFIG = override(PRESETS["tiny"], {"ae_train_steps": 12, "diffusion_train_steps": 12,
                                    "checkpoint_every_steps": 4, "log_every_steps": 4})


def _same(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("kill_at_save,adversarial", [(1, False), (2, False), (2, True)])
def test_autoencoder_resume_equals_uninterrupted(tmp_path, monkeypatch, kill_at_save, adversarial):
    """Also with the adversarial term on (discriminator and its optimizer in the checkpoint)."""
    config = override(CONFIG, {"adv_weight": 0.1, "adv_start_step": 2}) if adversarial else CONFIG
    images, labels = create_cat_dog_dataset("train")
    images, labels = images[::40], labels[::40]                 # 250 images: fast
    cpu = torch.device("cpu")
    ref = train_module.train_autoencoder(config, images, labels, tmp_path / "ref.pt", tmp_path / "m1", cpu)
    kill_after_saves(monkeypatch, kill_at_save)
    with pytest.raises(Killed):
        train_module.train_autoencoder(config, images, labels, tmp_path / "s.pt", tmp_path / "m2", cpu)
    monkeypatch.undo()
    state = load_state(tmp_path / "s.pt", config_to_dict(config), ("ae",))
    assert state["step"] == 4 * kill_at_save and ("adversarial" in state) == adversarial
    resumed = train_module.train_autoencoder(config, images, labels, tmp_path / "s.pt", tmp_path / "m2", cpu)
    _same(ref.state_dict(), resumed.state_dict())
    if adversarial:
        assert "adv" in (tmp_path / "m2").read_text() and "disc" in (tmp_path / "m2").read_text()


def test_diffusion_resume_equals_uninterrupted(tmp_path, monkeypatch):
    g = torch.Generator().manual_seed(0)
    z, y = torch.randn(300, 16, generator=g), torch.randint(0, 2, (300,), generator=g)
    cpu = torch.device("cpu")
    ref = train_module.train_diffusion(CONFIG, z, y, tmp_path / "ref.pt", tmp_path / "m1", cpu)
    kill_after_saves(monkeypatch, 2)
    with pytest.raises(Killed):
        train_module.train_diffusion(CONFIG, z, y, tmp_path / "s.pt", tmp_path / "m2", cpu)
    monkeypatch.undo()
    resumed = train_module.train_diffusion(CONFIG, z, y, tmp_path / "s.pt", tmp_path / "m2", cpu)
    _same(ref.state_dict(), resumed.state_dict())


def test_pickle_payload_is_refused_not_executed(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "ae_state.pt"
    torch.save({"format_version": 1, "config": {}, "model": Payload()}, path)
    with pytest.raises(UserError, match="ae_state.pt: refused") as error:
        load_state(path, {}, ("ae",))
    assert not marker.exists()
    assert "weights_only" not in str(error.value)                 # never advise loading it unsafely


def test_truncated_and_mismatched_checkpoints_name_the_file(tmp_path):
    path = tmp_path / "state.pt"
    save_state(path, {"config": config_to_dict(CONFIG), "step": 3})
    with pytest.raises(UserError, match="latent_dim"):
        load_state(path, config_to_dict(override(CONFIG, {"latent_dim": 8})), ("ae",))
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(UserError, match="state.pt"):
        load_state(path, config_to_dict(CONFIG), ("ae",))
    weights = tmp_path / "w.safetensors"
    save_weights(weights, {"a": torch.ones(3)}, config_to_dict(CONFIG))
    weights.write_bytes(weights.read_bytes()[:-5])
    with pytest.raises(UserError, match="w.safetensors"):
        load_weights(weights)


def test_export_carries_config_and_latent_stats(tiny_run):
    model, config = load_autoencoder(tiny_run.root)
    assert config == PRESETS["tiny"]
    assert not torch.equal(model.latent_std, torch.ones_like(model.latent_std))  # measured, not default
    tensors, _, _ = load_weights(tiny_run.latents)
    z = model.normalize(tensors["train_latents"])
    assert z.mean(0).abs().max() < 1e-3 and (z.std(0) - 1).abs().max() < 1e-3
