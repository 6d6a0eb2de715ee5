"""Autoencoder: shapes, the classifier and Center Loss shape the encoder, a tiny batch overfits.
Run: pytest tests/test_autoencoder.py"""

import pytest
import torch
import torch.nn.functional as F

from catdog.autoencoder import SimpleAutoencoder
from catdog.config import PRESETS, AutoencoderConfig, override
from catdog.data import create_cat_dog_dataset, to_model_range
from catdog.discriminator import PatchDiscriminator
from catdog.metrics import ssim

TINY = PRESETS["tiny"].ae


@pytest.mark.parametrize("channels", [(8, 16, 16, 16), (16, 16, 16)])   # 3 widths: starts at 16 px
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
        model, disc = SimpleAutoencoder(cfg), PatchDiscriminator(cfg.disc_width)
        x, y = torch.rand(8, 3, 32, 32) * 2 - 1, torch.randint(0, 2, (8,))
        last = model.decoder.output_conv().weight
        scale = model.adversarial_scale(x, None, disc)
        total, parts, x_hat = model.loss(x, y, None, disc, scale)
        rec = F.mse_loss(x_hat, x) + cfg.l1_weight * F.l1_loss(x_hat, x)
        g_rec, = torch.autograd.grad(rec, last, retain_graph=True)
        g_adv, = torch.autograd.grad(total - rec, last)
        assert parts["adv_scale"] > 0 and not scale.requires_grad
        torch.testing.assert_close(g_adv.norm(), adv_weight * g_rec.norm(), rtol=1e-3, atol=1e-6)


def test_ssim_term_is_added_to_the_loss_and_reaches_the_decoder():
    torch.manual_seed(0)
    cfg = override(PRESETS["tiny"], {"ssim_weight": 2.0}).ae
    model = SimpleAutoencoder(cfg)
    x, y = torch.rand(4, 3, 32, 32) * 2 - 1, torch.tensor([0, 1, 0, 1])
    total, parts, x_hat = model.loss(x, y)
    plain = SimpleAutoencoder(override(PRESETS["tiny"], {"ssim_weight": 0.0}).ae)
    plain.load_state_dict(model.state_dict())
    total_plain, parts_plain, _ = plain.loss(x, y)
    assert "ssim" in parts and "ssim" not in parts_plain
    torch.testing.assert_close(parts["ssim"], ssim(x_hat, x).detach())
    torch.testing.assert_close(total - total_plain, 2.0 * (1 - ssim(x_hat, x)))
    grad, = torch.autograd.grad(1 - ssim(x_hat, x), model.decoder.output_conv().weight)
    assert grad.norm() > 0
