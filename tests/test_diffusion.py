"""Diffusion: the schedule, v-prediction algebra, and a loss that falls on a toy distribution.
Run: pytest tests/test_diffusion.py"""

import torch

from catdog.config import DiffusionConfig
from catdog.denoiser import ConditionalUNet, TimeEmbedding
from catdog.diffusion import ConditionalDenoiseDiffusion, build_diffusion, cosine_alpha_bar


def test_cosine_schedule_is_monotone_and_spans_signal_to_noise():
    ab = cosine_alpha_bar(1000)
    assert ab.shape == (1000,) and (ab[1:] < ab[:-1]).all()
    assert ab[0] > 0.999 and ab[-1] < 1e-4 and (ab > 0).all()


def test_untrained_network_predicts_zero_and_shapes():
    unet = ConditionalUNet(16, (32, 16, 8), 2, 16)
    out = unet(torch.randn(4, 16), torch.tensor([0, 10, 500, 999]), torch.tensor([0, 1, 2, 0]))
    assert out.shape == (4, 16) and torch.equal(out, torch.zeros(4, 16))
    assert TimeEmbedding(7)(torch.arange(3)).shape == (3, 7)


def test_perfect_v_gives_back_x0():
    """Oracle: with v = sqrt(ab) noise - sqrt(1-ab) x0 exact, denoise(z_t) = x0 (Salimans & Ho)."""
    diffusion = ConditionalDenoiseDiffusion(ConditionalUNet(8, (16,), 1, 8), n_steps=100)
    x0, noise, t = torch.randn(6, 8), torch.randn(6, 8), torch.tensor([0, 5, 20, 50, 90, 99])
    ab = diffusion.alpha_bar[t][:, None]

    class ExactV(torch.nn.Module):
        def forward(self, z_t, t_, y):
            return ab.sqrt() * noise - (1 - ab).sqrt() * x0

    diffusion.model = ExactV()
    z_t = diffusion.q_sample(x0, t, noise)
    torch.testing.assert_close(diffusion.denoise(z_t, t, torch.zeros(6, dtype=torch.long)), x0,
                               atol=1e-4, rtol=1e-4)


def test_loss_falls_on_toy_distribution():
    """Two classes at +-2 in every dim: 300 steps must cut the loss well below its start."""
    torch.manual_seed(0)
    cfg = DiffusionConfig(n_steps=100, unet_widths=(64, 32), unet_blocks=1, emb_dim=32)
    diffusion = build_diffusion(4, cfg)
    opt = torch.optim.AdamW(diffusion.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(300):
        y = torch.randint(0, 2, (128,), generator=g)
        z0 = (y[:, None].float() * 4 - 2) + 0.1 * torch.randn(128, 4, generator=g)
        loss = diffusion.loss(z0, y, *diffusion.draw(128, 4, g))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    start, end = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    assert end < 0.4 * start, (start, end)


def test_loss_weights_known_answers():
    """Min-SNR-gamma on v is min(SNR, gamma) / (SNR + 1): SNR / (SNR + 1) where SNR < gamma, so ~0 at pure
    noise, and gamma / (SNR + 1) above; gamma 0 weights every step 1."""
    t = torch.arange(1000)
    min_snr = ConditionalDenoiseDiffusion(ConditionalUNet(4, (8,), 1, 8), 1000, min_snr_gamma=5.0)
    snr = (min_snr.alpha_bar / (1 - min_snr.alpha_bar)).float()
    torch.testing.assert_close(min_snr.loss_weights(t), torch.minimum(snr, torch.tensor(5.0)) / (snr + 1))
    assert min_snr.loss_weights(torch.tensor([999])) < 1e-6
    min_snr.min_snr_gamma = 0
    assert torch.equal(min_snr.loss_weights(t), torch.ones(1000))
