"""Issue 20, item 3: decoder fine-tunes against the refiner at equal CPU time, on the shipped autoencoder.

    python benchmarks/ablate_decoder.py --minutes 6 'pixel={}' 'patchgan={"adv": 1}' \\
        'diffaug_r1={"adv": 1, "diffaug": 1, "r1": 1}' 'refiner={"refiner_steps": 4700}'

Each variant starts from pretrained/'s autoencoder with the encoder frozen and trains for --minutes of
wall time on this machine (nothing else running), then reports on the 2,000 test images: PSNR, recon
FID against those originals (the number `catdog evaluate` calls recon FID) and the ResNet-20 judge's
accuracy on the reconstructions. The evaluation networks only measure; nothing is selected with them.

Decoder variants (keys of the JSON, 0/1), after Zhao et al. 2020 (DiffAugment), Mescheder et al. 2018
(R1), Wang et al. 2018 (pix2pixHD feature matching), Ulyanov et al. 2018 (random-weight networks):
  adv       PatchGAN hinge term, scaled by VQGAN's adaptive weight (the team's term, adv_weight 0.8)
  diffaug   colour, translation (1/8) and cutout (1/2) on real and fake images, for D and G alike
  r1        R1 penalty on real images (gamma 0.1, every 4th step, lazily scaled x4)
  fm        discriminator feature matching: L1 between D's features of x_hat and of x
  rcnn      perceptual loss in a fixed random-weight CNN (4 conv layers, never trained)
  lowpass   the pixel loss (MSE + L1) on 2x2-average-pooled images only, so it stops fighting detail
  noise     per-pixel noise channels into the decoder's last block (StyleGAN's noise inputs)
Every extra term starts at the size of the pixel loss (its weight is fixed from the first batch).
The augmentations, random CNN and feature taps are the package's (decoder_gan.py); the tables of
session 11 in docs/experiments.md were measured at commit f2cc11b with this script's own copies
(the random CNN then drew its weights with kaiming_normal_ under torch.manual_seed(1234)).
`refiner_steps=S` trains the package's refiner (the `full` preset's refiner) for S steps instead;
`shipped_refiner=1` also reports pretrained/'s refiner applied, unchanged, to the fine-tuned decoder.
"""

import argparse
import dataclasses
import json
import tempfile
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from catdog.adversarial import PatchDiscriminator, generator_hinge_loss  # noqa: E402
from catdog.decoder_gan import RandomCNN, augment, disc_features, draw_augment  # noqa: E402
from catdog.config import PRESETS, override  # noqa: E402
from catdog.data import create_cat_dog_dataset, to_model_range, to_uint8  # noqa: E402
from catdog.evaluate import cached_features  # noqa: E402
from catdog.fid import feature_stats, frechet_distance, inception_features, load_inception  # noqa: E402
from catdog.judge import class_accuracy, load_judge  # noqa: E402
from catdog.metrics import psnr_db  # noqa: E402
from catdog.run_dir import load_autoencoder, load_refiner  # noqa: E402
from catdog.train import train_refiner  # noqa: E402
from catdog.training_loop import batch_indices  # noqa: E402

BATCH, LR, WARMUP, ADV_WEIGHT, R1_GAMMA, R1_EVERY = 64, 2e-4, 200, 0.8, 0.1, 4


class NoisyDecoder(nn.Module):
    """The decoder with 3 per-pixel noise channels mixed in by a zero-initialised 1x1 conv before its
    output convolution (so it starts as the plain decoder)."""

    def __init__(self, decoder: nn.Module):
        super().__init__()
        self.decoder = decoder
        width = decoder.output_conv().in_channels
        self.mix = nn.Conv2d(3, width, 1)
        nn.init.zeros_(self.mix.weight)
        nn.init.zeros_(self.mix.bias)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        h = self.decoder.from_latent(latent).view(-1, self.decoder.width, 4, 4)
        *body, last = self.decoder.net
        for layer in body:
            h = layer(h)
        noise = torch.randn(len(h), 3, *h.shape[2:], dtype=h.dtype)
        return last(h + self.mix(noise))

    def output_conv(self) -> nn.Conv2d:
        return self.decoder.output_conv()


def finetune_decoder(v: dict, latents: torch.Tensor, targets: torch.Tensor, seconds: float, noise_std: float):
    """Fine-tune a copy of the decoder for `seconds`; returns (decoder, steps, seconds used)."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    autoencoder, _ = load_autoencoder(ROOT / "pretrained")
    decoder = NoisyDecoder(autoencoder.decoder) if v.get("noise") else autoencoder.decoder
    decoder.train()
    opt = torch.optim.Adam(decoder.parameters(), lr=LR, betas=(0.5, 0.9))
    disc = PatchDiscriminator(64) if v.get("adv") else None
    opt_d = torch.optim.Adam(disc.parameters(), lr=LR, betas=(0.5, 0.9)) if disc else None
    rcnn = RandomCNN() if v.get("rcnn") else None
    aug = (lambda x: augment(x, draw_augment(len(x), generator))) if v.get("diffaug") else (lambda x: x)
    weights, scale, step, start = {}, torch.zeros(()), 0, time.perf_counter()
    bf16 = torch.autocast("cpu", torch.bfloat16)
    while time.perf_counter() - start < seconds:
        # 1. batch: latents of training images or their mirrors (+ the training noise), their images
        idx = batch_indices(len(latents), BATCH, step, 0)
        noise = noise_std * torch.randn(len(idx), latents.shape[1], generator=generator)
        x = targets[idx]
        # 2. decoder loss: pixel (low-passed or not) + perceptual terms + the adaptive adversarial term
        with bf16:
            x_hat = decoder(latents[idx] + noise).float()
            pool = (lambda t: F.avg_pool2d(t, 2)) if v.get("lowpass") else (lambda t: t)
            terms = {"pixel": autoencoder.reconstruction_loss(pool(x_hat), pool(x))[0]}   # MSE + L1
            if rcnn is not None:
                terms["rcnn"] = rcnn.distance(x_hat, x)
            if v.get("fm"):
                p = draw_augment(len(x), generator) if v.get("diffaug") else None
                pair = (lambda t: augment(t, p)) if p else (lambda t: t)
                disc.requires_grad_(False)
                real_f = disc_features(disc, pair(x))
                fake_f = disc_features(disc, pair(x_hat))
                terms["fm"] = sum(F.l1_loss(f, r.detach()) for f, r in zip(fake_f, real_f)) / len(real_f)
            for k, t in terms.items():                            # each term starts at the pixel loss's size
                weights.setdefault(k, float(terms["pixel"].detach()) / max(float(t.detach()), 1e-8))
            rec = sum(weights[k] * t for k, t in terms.items())
            loss = rec
            if disc is not None:
                disc.requires_grad_(False)
                adv = generator_hinge_loss(disc(aug(x_hat)).float())
                if step % 25 == 0:                                # VQGAN's adaptive weight
                    last = decoder.output_conv().weight
                    g_rec, = torch.autograd.grad(rec, last, retain_graph=True)
                    g_adv, = torch.autograd.grad(adv, last, retain_graph=True)
                    scale = (ADV_WEIGHT * g_rec.norm() / (g_adv.norm() + 1e-4)).clamp(0, 1e4).detach()
                loss = rec + scale * adv
        for group in opt.param_groups:                            # warm-up: fresh Adam moments
            group["lr"] = LR * min(1.0, (step + 1) / WARMUP)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(decoder.parameters(), 1.0)
        opt.step()
        # 3. the discriminator: real against fake (both augmented if diffaug), R1 on reals
        if disc is not None:
            disc.requires_grad_(True)
            with bf16:
                d_loss = F.relu(1 - disc(aug(x))).mean() + F.relu(1 + disc(aug(x_hat.detach()))).mean()
            if v.get("r1") and step % R1_EVERY == 0:
                real = x.detach().requires_grad_(True)
                grad, = torch.autograd.grad(disc(aug(real)).mean((1, 2, 3)).sum(), real, create_graph=True)
                d_loss = d_loss + R1_EVERY * R1_GAMMA / 2 * grad.pow(2).sum((1, 2, 3)).mean()
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
        if step % 500 == 0:
            parts = " ".join(f"{k} {float(t.detach()):.4f}" for k, t in terms.items())
            print(f"  step {step:5d} {parts} scale {float(scale):.3f}", flush=True)
        step += 1
    decoder.eval()
    return decoder, step, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("variants", nargs="+", help="NAME=JSON (see above)")
    parser.add_argument("--minutes", type=float, default=6.0)
    parser.add_argument("--skip-shipped", action="store_true", help="do not measure pretrained/'s own decoder")
    parser.add_argument("--test-n", type=int, default=2000, help="test images to measure on (smoke runs: fewer)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    autoencoder, config = load_autoencoder(ROOT / "pretrained")
    train_images, train_labels = create_cat_dog_dataset("train")
    test_images, test_labels = (a[:args.test_n] for a in create_cat_dog_dataset("test"))
    both = np.concatenate([train_images, train_images[:, :, ::-1]])   # images and mirrors
    latents = torch.cat([autoencoder.encode_images(train_images), autoencoder.encode_images(train_images, flip=True)])
    targets = to_model_range(both)
    test_latents = autoencoder.encode_images(test_images)
    judge, inception = load_judge(), load_inception()
    reference = feature_stats(cached_features(test_images, "test", inception, torch.device("cpu")))

    def report(name: str, recon: np.ndarray, steps: int, seconds: float, extra: str = "") -> None:
        fid = frechet_distance(*feature_stats(inception_features(recon, inception)), *reference)
        print(f"RESULT {name:12s} steps {steps:6d} train_s {seconds:6.0f} psnr {psnr_db(test_images, recon):6.2f} "
              f"recon_fid {fid:6.1f} judge {class_accuracy(judge, recon, test_labels):.3f} {extra}", flush=True)

    if not args.skip_shipped:
        report("shipped", autoencoder.reconstruct_images(test_images), 0, 0)
    for variant in args.variants:
        name, _, changes = variant.partition("=")
        v = json.loads(changes or "{}")
        print(f"[{name}] {v}", flush=True)
        if "refiner_steps" in v:
            start = time.perf_counter()
            cfg = override(config, {**dataclasses.asdict(PRESETS["full"].refiner),
                                    "refiner_train_steps": v["refiner_steps"], "bf16": True, "compile": False,
                                    "checkpoint_every_steps": 10 ** 9, "log_every_steps": 500})
            with torch.no_grad():
                x_hat_train = torch.cat([autoencoder.decoder(z) for z in latents.split(500)])
            with tempfile.TemporaryDirectory() as tmp:
                refiner = train_refiner(cfg, both, x_hat_train.clamp(-1, 1), np.concatenate([train_labels] * 2),
                                        Path(tmp) / "state.pt", Path(tmp) / "metrics.jsonl", torch.device("cpu"))
            seconds = time.perf_counter() - start
            x_hat = autoencoder.reconstruct_x(test_images).clamp(-1, 1)
            recon = to_uint8(refiner.refine(x_hat, torch.as_tensor(test_labels), seed=0, steps=10))
            report(name, recon, v["refiner_steps"], seconds)
            continue
        decoder, steps, seconds = finetune_decoder(v, latents, targets, args.minutes * 60,
                                                   config.ae.latent_noise_std)
        with torch.no_grad():
            x_hat = torch.cat([decoder(z).clamp(-1, 1) for z in test_latents.split(500)])
        report(name, to_uint8(x_hat), steps, seconds, json.dumps(v))
        if v.get("shipped_refiner"):                              # pretrained/'s refiner on top, as it is
            recon = to_uint8(load_refiner(ROOT / "pretrained")[0].refine(x_hat, torch.as_tensor(test_labels), seed=0))
            report(name + "+refiner", recon, steps, seconds, "pretrained/'s refiner (trained on the old decoder)")


if __name__ == "__main__":
    main()
