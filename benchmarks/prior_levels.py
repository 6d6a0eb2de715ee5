"""Where along the noise levels a run's latent prior errs: a diagnostic that needs no evaluation network.

    python benchmarks/prior_levels.py pretrained runs/prior_sc

Per step t, for the 2,000 held-out test latents (standardised) noised with fixed seeds: the clean-latent
error (x0-MSE per dimension) of the conditional and the unconditional prediction. At pure noise the best
possible conditional prediction is the class mean of the training latents, whose error is printed as
`class mean`; a network above it there has learnt to read noise that carries no information, and
classifier-free guidance multiplies that by (guidance - 1). `spread` is the RMS over inputs of the
guidance direction cond - uncond about its class's mean (per dimension), which the exact answer makes 0
at pure noise. First line: the held-out loss (`val_loss` of training) and the class mean's error.
"""

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from catdog.data import NULL_CLASS  # noqa: E402
from catdog.run_dir import load_run, run_latents  # noqa: E402
from catdog.train import held_out_loss  # noqa: E402

STEPS = (999, 990, 980, 950, 900, 800, 700, 500, 300, 100, 10)

torch.set_num_threads(2)
for run_dir in sys.argv[1:]:
    run = load_run(Path(run_dir))
    latents, diffusion = run_latents(run), run.diffusion
    z0, y = run.autoencoder.normalize(latents["test_latents"]), latents["test_labels"].long()
    train, train_y = run.autoencoder.normalize(latents["train_latents"]), latents["train_labels"].long()
    class_mean = torch.stack([train[train_y == c].mean(0) for c in (0, 1)])[y]
    generator = torch.Generator().manual_seed(0)
    loss = held_out_loss(diffusion, z0, y, torch.device("cpu"))
    print(f"{run_dir}: held-out loss {loss:.4f}; class mean {(z0 - class_mean).pow(2).mean():.4f}")
    print("    t      sigma   cond   uncond  spread")
    for t in STEPS:
        steps = torch.full((len(z0),), t)
        z_t = diffusion.q_sample(z0, steps, torch.randn(z0.shape, generator=generator))
        with torch.no_grad():
            cond = diffusion.denoise(z_t, steps, y)
            uncond = diffusion.denoise(z_t, steps, torch.full_like(y, NULL_CLASS))
        ab = diffusion.alpha_bar[t].item()
        direction = cond - uncond
        per_class = torch.stack([direction[y == c].mean(0) for c in (0, 1)])[y]
        spread = (direction - per_class).pow(2).mean().sqrt()
        print(f"{t:5d} {((1 - ab) / ab) ** 0.5:10.3f} {(cond - z0).pow(2).mean():.4f} "
              f"{(uncond - z0).pow(2).mean():.4f} {spread:.4f}")
