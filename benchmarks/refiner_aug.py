"""Refiner conditioning augmentation: fine-tune a run's refiner on decodes of prior-perturbed latents.

    python benchmarks/refiner_aug.py --source pretrained --run-dir runs/refiner_aug --strengths 0.1,0.2,0.3,0.4 \\
        --guidance 9 --steps 6000
    catdog evaluate --run-dir runs/refiner_aug --guidance 9 --ref-stats ../shared/fid_stats

The refiner learns x from x_hat = D(z) of real latents z; at sampling time its x_hat is the decode of a
*sampled* latent, which carries the prior's errors. Here every training latent is also carried a short
way by the run's own sampler (img2img toward its own class: noised to `strength` of the DDIM schedule and
denoised with guidance, an equal share at each of --strengths), and the refiner, started from --source's,
is fine-tuned on (x, D(z)) and (x, D(z_perturbed)) pairs, half each (cascaded diffusion's conditioning
augmentation, with the prior's own error model in place of Gaussian noise). The new refiner.safetensors
records what it was made from, the diffusion file included. A rerun resumes from refiner_state.pt.
"""

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from catdog.checkpoint import save_weights  # noqa: E402
from catdog.config import SampleConfig, config_to_dict, override  # noqa: E402
from catdog.data import create_cat_dog_dataset  # noqa: E402
from catdog.device import pick_device  # noqa: E402
from catdog.lineage import data_digest, file_digest, made_from  # noqa: E402
from catdog.run_dir import RunPaths, encode_dataset, load_refiner, load_run  # noqa: E402
from catdog.train import train_refiner  # noqa: E402
from catdog.translate import translate_latents  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--source", type=Path, default=ROOT / "pretrained")
parser.add_argument("--run-dir", type=Path, default=ROOT / "runs" / "refiner_aug")
parser.add_argument("--strengths", default="0.1,0.2,0.3,0.4", help="img2img strengths, an equal share each")
parser.add_argument("--guidance", type=float, default=9.0)
parser.add_argument("--steps", type=int, default=6000, help="fine-tuning steps")
parser.add_argument("--lr", type=float, default=2e-4)
parser.add_argument("--warmup-steps", type=int, default=200)
parser.add_argument("--ema-halflife-steps", type=int, default=500)
parser.add_argument("--device", default=None)
args = parser.parse_args()
device = pick_device(args.device)
if device.type == "cpu":
    torch.set_num_threads(2)
strengths = [float(s) for s in args.strengths.split(",")]

# 1. the run folder: a copy of --source whose refiner is replaced at the end
paths = RunPaths(args.run_dir)
if not paths.root.exists():
    shutil.copytree(args.source, paths.root, ignore=shutil.ignore_patterns("*_state.pt", "figures", "eval.json"))
run = load_run(paths.root, device)
source_refiner, refiner_config = load_refiner(args.source, device)
config = override(refiner_config, {"refiner_train_steps": args.steps, "refiner_lr": args.lr,
                                   "refiner_warmup_steps": args.warmup_steps,
                                   "refiner_ema_halflife_steps": args.ema_halflife_steps,
                                   "log_every_steps": 250, "checkpoint_every_steps": 500,
                                   "bf16": device.type == "cuda"})   # CPUs without AVX512-BF16 emulate it slowly

# 2. training latents (images, then mirrors), clean and carried by the prior, and their decodes
@torch.no_grad()
def decoder_inputs() -> dict[str, torch.Tensor]:
    latents = encode_dataset(run.autoencoder, None, hflip=True)
    z = run.autoencoder.normalize(latents["train_latents"].to(device))
    y = latents["train_labels"].to(device)
    share = torch.randperm(len(z), generator=torch.Generator().manual_seed(0)).chunk(len(strengths))
    z_aug = z.clone()
    for k, (strength, idx) in enumerate(zip(strengths, share)):
        z_aug[idx] = translate_latents(run.diffusion, z[idx], y[idx], strength, SampleConfig(guidance=args.guidance),
                                       seed=1000 + k)
    return {"x_hat": run.autoencoder.decode_latents(torch.cat([z, z_aug])).cpu(), "labels": y.cpu(),
            "moved": (z_aug - z).norm(dim=1).cpu(), "z_norm": z.norm(dim=1).cpu()}


start = time.perf_counter()
data_sha256 = data_digest(None)
cache = paths.root / "refiner_aug_inputs.pt"             # 10 min of CPU: kept for a rerun
if not cache.is_file():
    torch.save(decoder_inputs(), cache)
inputs = torch.load(cache)
images = create_cat_dog_dataset("train", None)[0]
images = np.concatenate([images, images[:, :, ::-1]] * 2)
labels = inputs["labels"].repeat(2)
print(f"latents carried at strengths {strengths}: mean |z_aug - z| {inputs['moved'].mean():.2f} "
      f"(|z| {inputs['z_norm'].mean():.2f}); {time.perf_counter() - start:.0f} s", flush=True)

# 3. fine-tune the refiner on both halves, then save it with its lineage (the diffusion model included)
ema = train_refiner(config, images, inputs["x_hat"], labels, paths.root / "refiner_state.pt", paths.root / "refiner_aug.jsonl",
                    device, init=source_refiner)
save_weights(paths.refiner, {k: v.half() if v.is_floating_point() else v for k, v in ema.state_dict().items()},
             config_to_dict(config), **made_from(paths, "refiner", data_sha256), dtype="float16",
             exported_from=f"{args.source.resolve().name} + refiner_aug",
             refiner_aug=f"strengths {args.strengths}, guidance {args.guidance:g}, "
                         f"diffusion {file_digest(paths.diffusion)}")
(paths.root / "refiner_state.pt").unlink(missing_ok=True)
print(f"refiner fine-tuned in {time.perf_counter() - start:.0f} s -> {paths.refiner}", flush=True)
