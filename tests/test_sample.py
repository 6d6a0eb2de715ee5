"""Samplers on analytic cases: an exact denoiser lands on its point; Gaussian data comes out Gaussian;
guidance 1 is the plain conditional prediction. Run: pytest tests/test_sample.py"""

import pytest
import torch

from catdog.diffusion import ConditionalDenoiseDiffusion, cosine_alpha_bar
from catdog.denoiser import ConditionalUNet
from catdog.sample import ddim_sample, ddim_timesteps, ddpm_sample, guided_denoiser, noise_level

N_STEPS = 200
ALPHA_BAR = cosine_alpha_bar(N_STEPS).float()


def test_exact_denoiser_lands_on_the_single_data_point():
    """Oracle: data = {x*}; the ideal x0-predictor returns x*, so both samplers must end at x*."""
    target = torch.tensor([[1.5, -2.0, 0.25]])
    denoise = lambda z, t: target.expand_as(z)
    for sampler in (lambda g: ddpm_sample(denoise, ALPHA_BAR, (4, 3), g),
                    lambda g: ddim_sample(denoise, ALPHA_BAR, (4, 3), g, steps=10)):
        z = sampler(torch.Generator().manual_seed(0))
        torch.testing.assert_close(z, target.expand(4, 3), atol=1e-5, rtol=0)


def gaussian_denoiser(mean: float, std: float):
    """Exact E[x0 | z_t] for data x0 ~ N(mean, std^2) per dimension."""
    def denoise(z, t):
        ab = ALPHA_BAR[t][:, None]
        var = ab * std ** 2 + (1 - ab)                       # Var[z_t]
        return mean + ab.sqrt() * std ** 2 / var * (z - ab.sqrt() * mean)
    return denoise


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "ddim_eta0.5"])
def test_gaussian_data_is_reproduced(sampler):
    """Oracle: with the exact denoiser of N(3, 0.5^2), samples have mean 3 and std 0.5: deterministic
    DDIM in 25 steps, the stochastic samplers at every step (in few large steps they fall short of the
    variance, since each step plugs in the mean prediction)."""
    g = torch.Generator().manual_seed(0)
    denoise = gaussian_denoiser(3.0, 0.5)
    if sampler == "ddpm":
        z = ddpm_sample(denoise, ALPHA_BAR, (4000, 2), g)
    else:
        eta = float(sampler.partition("eta")[2] or 0)
        z = ddim_sample(denoise, ALPHA_BAR, (4000, 2), g, steps=N_STEPS if eta else 25, eta=eta)
    assert abs(z.mean().item() - 3.0) < 0.03
    assert abs(z.std().item() - 0.5) < 0.03


def test_trajectory_runs_from_noise_to_the_sample():
    g = torch.Generator().manual_seed(1)
    z, traj = ddim_sample(gaussian_denoiser(0, 1), ALPHA_BAR, (3, 2), g, steps=7, return_trajectory=True)
    assert traj.shape == (8, 3, 2) and torch.equal(traj[-1], z)
    torch.testing.assert_close(traj[0], torch.randn((3, 2), generator=torch.Generator().manual_seed(1)))
    assert ddim_timesteps(N_STEPS, 7)[0] == N_STEPS - 1 and ddim_timesteps(N_STEPS, 7)[-1] == 0


def test_guidance_one_is_the_conditional_prediction_and_w_extrapolates():
    torch.manual_seed(0)
    diffusion = ConditionalDenoiseDiffusion(ConditionalUNet(6, (16,), 1, 8), n_steps=N_STEPS)
    for p in diffusion.model.parameters():                     # non-zero output
        torch.nn.init.normal_(p, std=0.3)
    z, t, y = torch.randn(5, 6), torch.full((5,), 50), torch.tensor([0, 1, 0, 1, 1])
    cond = diffusion.denoise(z, t, y)
    uncond = diffusion.denoise(z, t, torch.full_like(y, 2))
    assert not torch.allclose(cond, uncond)
    torch.testing.assert_close(guided_denoiser(diffusion, y, 1.0)(z, t), cond)
    torch.testing.assert_close(guided_denoiser(diffusion, y, 3.0)(z, t), uncond + 3 * (cond - uncond),
                               atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(guided_denoiser(diffusion, y, 0.0)(z, t), uncond, atol=1e-6, rtol=0)


def test_ddim_with_eta_one_at_every_step_is_the_ddpm_chain():
    """Oracle: DDIM's eta = 1 on all n_steps is DDPM's ancestral step (same variance, same mean), and it
    draws its noise in the same order, so from one seed the two chains agree."""
    denoise = gaussian_denoiser(1.0, 0.7)
    ddpm = ddpm_sample(denoise, ALPHA_BAR, (16, 3), torch.Generator().manual_seed(3))
    ddim = ddim_sample(denoise, ALPHA_BAR, (16, 3), torch.Generator().manual_seed(3), steps=N_STEPS, eta=1.0)
    torch.testing.assert_close(ddim, ddpm, atol=1e-4, rtol=1e-4)


def test_guidance_interval_guides_only_inside_it():
    """Within (lo, hi] of sigma the guided prediction, outside it the conditional one."""
    torch.manual_seed(0)
    diffusion = ConditionalDenoiseDiffusion(ConditionalUNet(6, (16,), 1, 8), n_steps=N_STEPS)
    for p in diffusion.model.parameters():
        torch.nn.init.normal_(p, std=0.3)
    t = torch.tensor([5, 60, 120, 190])
    sigma = noise_level(diffusion.alpha_bar[t])
    interval = (float(sigma[0] + sigma[1]) / 2, float(sigma[2] + sigma[3]) / 2)   # holds t = 60 and 120
    z, y = torch.randn(4, 6), torch.tensor([0, 1, 1, 0])
    cond = diffusion.denoise(z, t, y)
    uncond = diffusion.denoise(z, t, torch.full_like(y, 2))
    expected = torch.stack([cond[0], uncond[1] + 4 * (cond[1] - uncond[1]),
                            uncond[2] + 4 * (cond[2] - uncond[2]), cond[3]])
    torch.testing.assert_close(guided_denoiser(diffusion, y, 4.0, interval)(z, t), expected, atol=1e-5, rtol=1e-5)
