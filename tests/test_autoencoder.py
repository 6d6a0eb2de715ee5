"""Autoencoder: shapes, the classifier and Center Loss shape the encoder, a tiny batch overfits.
Run: pytest tests/test_autoencoder.py"""

import pytest
import torch
import torch.nn.functional as F

from catdog.autoencoder import SimpleAutoencoder
from catdog.config import PRESETS, AutoencoderConfig, override
from catdog.data import create_cat_dog_dataset, to_model_range
from catdog.adversarial import AdversarialTerm
from catdog.distributed import World

TINY = PRESETS["tiny"].ae


@pytest.mark.parametrize("channels", [(8, 16, 16, 16), (16, 32, 64, 128)])
def test_shapes_and_latent_scale(channels):
    torch.manual_seed(0)
    model = SimpleAutoencoder(AutoencoderConfig(latent_dim=128, ae_channels=channels))
    x = torch.rand(5, 3, 32, 32) * 2 - 1
    x_hat, latent, logits = model(x)
    assert x_hat.shape == x.shape and latent.shape == (5, 128) and logits.shape == (5, 2)
    assert sum(isinstance(m, torch.nn.Conv2d) and m.stride == (2, 2) for m in model.encoder.modules()) \
        == len(channels) - 1                                  # one 2x downsampling between levels
    # layer-normalised latent: zero mean and unit RMS per row, whatever the losses do
    torch.testing.assert_close(latent.mean(1), torch.zeros(5), atol=1e-5, rtol=0)
    torch.testing.assert_close(latent.pow(2).mean(1), torch.ones(5), atol=1e-3, rtol=0)


def test_latent_standardisation_round_trip():
    model = SimpleAutoencoder(TINY)
    latents = torch.randn(1000, TINY.latent_dim) * 3 + 1
    model.set_latent_stats(latents)
    z = model.normalize(latents)
    torch.testing.assert_close(z.mean(0), torch.zeros(TINY.latent_dim), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.std(0), torch.ones(TINY.latent_dim), atol=1e-5, rtol=0)
    torch.testing.assert_close(model.denormalize(z), latents, atol=1e-5, rtol=1e-5)


def _encoder_grad_norm(model, loss):
    model.zero_grad()
    loss.backward()
    return sum(p.grad.norm() for p in model.encoder.parameters() if p.grad is not None)


def test_classifier_and_center_losses_reach_the_encoder():
    """The earlier public attempt detached these losses from the encoder; here both move it."""
    torch.manual_seed(0)
    model = SimpleAutoencoder(TINY)
    x, y = torch.rand(8, 3, 32, 32) * 2 - 1, torch.tensor([0, 1] * 4)
    latent = model.encode(x)
    ce = torch.nn.functional.cross_entropy(model.classifier(latent), y)
    assert _encoder_grad_norm(model, ce) > 0
    assert _encoder_grad_norm(model, model.center_loss(model.encode(x), y)) > 0
    # and one optimizer step on them alone changes the encoder's weights
    before = [p.detach().clone() for p in model.encoder.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    opt.zero_grad()
    latent = model.encode(x)
    (torch.nn.functional.cross_entropy(model.classifier(latent), y) + model.center_loss(latent, y)).backward()
    opt.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.encoder.parameters()))


def test_tiny_batch_overfits():
    """Oracle: 8 real images, 150 Adam steps: reconstruction MSE falls 5x and the classifier fits."""
    torch.manual_seed(0)
    images, labels = create_cat_dog_dataset("test")
    idx = torch.tensor([0, 1, 2, 3, 1000, 1001, 1002, 1003])
    x, y = to_model_range(images[idx.numpy()]), torch.as_tensor(labels[idx.numpy()])
    model = SimpleAutoencoder(AutoencoderConfig(latent_dim=32, ae_channels=(16, 32, 32, 32)))
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    first = None
    for _ in range(150):
        loss, parts, _ = model.loss(x, y)
        first = first or {k: float(v) for k, v in parts.items()}
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert parts["mse"] < first["mse"] / 5
    assert parts["ce"] < 0.2 and parts["center"] < first["center"]


def test_adaptive_adversarial_weight_balances_the_gradients_at_the_last_layer():
    """With adv_weight 1 the adversarial term's gradient at the decoder's last layer has the norm of
    the reconstruction term's (VQGAN's adaptive weight); adv_weight scales it from there."""
    torch.manual_seed(0)
    for adv_weight in (1.0, 0.25):
        cfg = override(PRESETS["tiny"], {"adv_weight": adv_weight, "cls_weight": 0.0, "center_weight": 0.0}).ae
        model, adversarial = SimpleAutoencoder(cfg), AdversarialTerm(cfg, World(), torch.device("cpu"))
        x, y = torch.rand(8, 3, 32, 32) * 2 - 1, torch.randint(0, 2, (8,))
        last = model.decoder.output_conv().weight
        _, _, x_hat = model.loss(x, y)
        term, parts = adversarial.loss(model, x, None, x_hat, step=cfg.adv_start_step)   # refreshes the scale
        rec = F.mse_loss(x_hat, x) + cfg.l1_weight * F.l1_loss(x_hat, x)
        g_rec, = torch.autograd.grad(rec, last, retain_graph=True)
        g_adv, = torch.autograd.grad(term, last)
        assert parts["adv_scale"] > 0 and not adversarial.scale.requires_grad
        torch.testing.assert_close(g_adv.norm(), adv_weight * g_rec.norm(), rtol=1e-3, atol=1e-6)
