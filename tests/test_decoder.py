"""The decoder stage (adversarial decoder fine-tune, encoder frozen): DiffAugment and the random-CNN
distance give known answers, a tiny batch overfits, training resumes bitwise, and the stage joins
`catdog run`, loading, the refiner's provenance and export.
Run: pytest tests/test_decoder.py"""

import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import catdog.training_loop as loop_module
from catdog.adversarial import PatchDiscriminator
from catdog.autoencoder import Decoder
from catdog.checkpoint import load_weights, save_weights
from catdog.cli import main
from catdog.config import PRESETS, SampleConfig, config_to_dict, override
from catdog.data import create_cat_dog_dataset, to_model_range
from catdog.decoder_gan import RandomCNN, augment
from catdog.errors import UserError
from catdog.pipeline import run_all
from catdog.run_dir import file_digest, load_autoencoder, load_run
from catdog.train import train_decoder
from killing import Killed, kill_after_saves

TINY = PRESETS["tiny"]
CPU = torch.device("cpu")


def _identity(n, shift=(4, 4), hole=(0, 0)):
    return {"brightness": torch.zeros(n, 1, 1, 1), "saturation": torch.ones(n, 1, 1, 1),
            "contrast": torch.ones(n, 1, 1, 1), "shift": torch.tensor([shift] * n), "hole": torch.tensor([hole] * n)}


def test_diffaugment_translates_with_zero_padding_and_cuts_out_a_square():
    x = torch.rand(2, 3, 32, 32) + 1.0                             # no zeros of its own
    centred = augment(x, _identity(2, hole=(0, 0)))
    expected = x.clone()
    expected[:, :, :8, :8] = 0                                     # the 16 px square centred at (0, 0)
    torch.testing.assert_close(centred, expected)
    shifted = augment(x, _identity(2, shift=(0, 8), hole=(31, 31)))
    assert torch.equal(shifted[:, :, :4], torch.zeros(2, 3, 4, 32))                     # 4 rows of padding
    torch.testing.assert_close(shifted[:, :, 4:20, :20], x[:, :, :16, 4:24])            # moved down 4, left 4
    p = _identity(2, hole=(31, 31))
    p["brightness"] += 0.25
    torch.testing.assert_close(augment(x, p)[:, :, :16, :16], x[:, :, :16, :16] + 0.25)


def test_random_cnn_distance_is_a_fixed_function_zero_only_for_equal_images():
    a, b = torch.rand(4, 3, 32, 32) * 2 - 1, torch.rand(4, 3, 32, 32) * 2 - 1
    first, second = RandomCNN(), RandomCNN()
    assert float(first.distance(a, a)) == 0.0
    assert float(first.distance(a, b)) > 0.1
    assert torch.equal(first.distance(a, b), second.distance(a, b))
    assert not any(p.requires_grad for p in first.parameters())


def _latents_images_labels(n):
    images, labels = create_cat_dog_dataset("train")
    return torch.randn(n, TINY.ae.latent_dim, generator=torch.Generator().manual_seed(0)), images[:n], labels[:n]


def test_the_projection_discriminator_learns_which_class_an_image_shows():
    """Real images with their own class against the same images with the other class: only the
    class projection can separate them, and it starts at zero (the unconditional discriminator)."""
    images, labels = create_cat_dog_dataset("train")
    x = to_model_range(images[:32])
    y = torch.as_tensor(labels[:32], dtype=torch.long)
    torch.manual_seed(0)
    disc = PatchDiscriminator(8, n_classes=2)
    assert torch.equal(disc(x, y), disc(x)) and torch.equal(disc(x, y), disc(x, 1 - y))
    opt = torch.optim.Adam(disc.parameters(), lr=1e-2)
    for _ in range(60):
        loss = F.relu(1 - disc(x, y)).mean() + F.relu(1 + disc(x, 1 - y)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        own, other = disc(x, y).mean((1, 2, 3)), disc(x, 1 - y).mean((1, 2, 3))
    assert (own > other).float().mean() > 0.9, (own - other)


@pytest.mark.slow
def test_a_tiny_batch_overfits(tmp_path):
    latents, images, labels = _latents_images_labels(8)
    config = override(TINY, {"decoder_train_steps": 300, "decoder_batch_size": 8, "decoder_lr": 3e-3,
                             "decoder_warmup_steps": 10, "log_every_steps": 50, "bf16": False})
    torch.manual_seed(0)
    train_decoder(config, Decoder(config.ae), latents, images, labels, tmp_path / "s.pt", tmp_path / "m", CPU)
    rows = [json.loads(line) for line in (tmp_path / "m").read_text().splitlines()]
    assert rows[-1]["pixel"] < 0.5 * rows[0]["pixel"], [r["pixel"] for r in rows]
    assert rows[-1]["perceptual"] < rows[0]["perceptual"]


def _restamp(path, **changes):
    """Rewrite a weight file's metadata (as if it came from another run)."""
    tensors, config, meta = load_weights(path)
    meta = {k: v for k, v in meta.items() if k not in ("config", "format_version")}
    save_weights(path, tensors, config, **{**meta, **changes})


def test_decoder_resume_equals_uninterrupted(tmp_path, monkeypatch):
    """The discriminator (with its class projection), both optimizers, the term weights and the
    adaptive weight are in the checkpoint."""
    latents, images, labels = _latents_images_labels(32)
    config = override(TINY, {"decoder_train_steps": 12, "checkpoint_every_steps": 4, "log_every_steps": 4,
                             "decoder_disc_classes": True})
    torch.manual_seed(1)
    start = Decoder(config.ae).state_dict()

    def fresh():
        decoder = Decoder(config.ae)
        decoder.load_state_dict(start)
        return decoder
    ref = train_decoder(config, fresh(), latents, images, labels, tmp_path / "ref.pt", tmp_path / "m1", CPU)
    kill_after_saves(monkeypatch, 2)
    with pytest.raises(Killed):
        train_decoder(config, fresh(), latents, images, labels, tmp_path / "s.pt", tmp_path / "m2", CPU)
    monkeypatch.undo()
    state = loop_module.load_state(tmp_path / "s.pt", config_to_dict(config), ("ae", "decoder"))
    assert state["step"] == 8 and float(state["objective"]["weights"].min()) > 0
    resumed = train_decoder(config, fresh(), latents, images, labels, tmp_path / "s.pt", tmp_path / "m2", CPU)
    for k, v in ref.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    assert (tmp_path / "m1").read_text().count("\n") == (tmp_path / "m2").read_text().count("\n")


def test_the_stage_is_part_of_the_run_and_of_every_reader(tiny_run, tmp_path, capsys):
    """tiny_run (conftest) ran every stage: the fine-tuned decoder replaces the autoencoder's own when
    the run loads, the refiner names it, export merges it into the autoencoder file (same samples up
    to fp16), and a refiner trained on another decoder is refused."""
    paths = tiny_run
    own = {k[len("decoder."):]: v for k, v in load_weights(paths.autoencoder)[0].items() if k.startswith("decoder.")}
    tuned = load_weights(paths.decoder)[0]
    assert set(own) == set(tuned) and any(not torch.equal(own[k], tuned[k]) for k in own)
    run = load_run(paths.root)
    for k, v in run.autoencoder.decoder.state_dict().items():
        assert torch.equal(v, tuned[k].float()), k
    assert load_weights(paths.refiner)[2]["decoder_sha256"] == file_digest(paths.decoder)
    # export merges the fine-tuned decoder into its autoencoder file, and the refiner follows
    out = tmp_path / "export"
    assert main(["export", "--run-dir", str(paths.root), "--out", str(out), "--fp32"]) == 0
    assert not (out / "decoder.safetensors").exists()
    assert load_weights(out / "refiner.safetensors")[2]["decoder_sha256"] == ""
    exported = load_run(out)
    for k, v in exported.autoencoder.decoder.state_dict().items():
        assert torch.equal(v, tuned[k]), k
    labels, sample = [0, 1, 1], SampleConfig(steps=5)
    np.testing.assert_array_equal(exported.generate(labels, sample), run.generate(labels, sample))
    # training in a run again checks that its refiner belongs to its decoder
    copy = tmp_path / "copy"
    shutil.copytree(paths.root, copy)
    _restamp(copy / "refiner.safetensors", decoder_sha256="0" * 16)
    with pytest.raises(UserError, match="refiner.safetensors was trained on another decoder"):
        run_all(TINY, copy, figures=False)


def test_a_decoder_of_another_autoencoder_is_refused_naming_the_file(tiny_run, tmp_path, capsys):
    out = tmp_path / "copy"
    shutil.copytree(tiny_run.root, out)
    _restamp(out / "decoder.safetensors", autoencoder_sha256="0" * 16)
    capsys.readouterr()
    assert main(["sample", "--run-dir", str(out), "--class", "cat", "--n", "2", "--steps", "5",
                 "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "decoder.safetensors was made from another autoencoder" in err


def test_a_run_without_the_stage_keeps_the_autoencoders_decoder(tmp_path):
    config = override(TINY, {"decoder_train_steps": 0, "refiner_train_steps": 0})
    paths = run_all(config, tmp_path / "r", figures=False)
    assert not paths.decoder.exists()
    autoencoder, _ = load_autoencoder(paths.root)
    own = {k[len("decoder."):]: v for k, v in load_weights(paths.autoencoder)[0].items() if k.startswith("decoder.")}
    for k, v in autoencoder.decoder.state_dict().items():
        assert torch.equal(v, own[k].float()), k
