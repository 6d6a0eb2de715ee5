"""A new latent prior (diffusion stage) for an existing run's autoencoder, decoder and refiner.

    python benchmarks/train_prior.py --run-dir runs/prior_long --diffusion-train-steps 60000 --threads 1
    catdog evaluate --run-dir runs/prior_long --n 2000 --ref-stats ../shared/fid_stats

Copies --source's config and autoencoder into --run-dir once, sets the diffusion fields given here, runs
the pipeline's own latents and diffusion stages there (the same code as `catdog run`; a rerun resumes
from diffusion_state.pt; metrics.jsonl logs the held-out `val_loss`), then copies --source's refiner
(trained on the same decoder, so it is valid for the new prior) so that the folder evaluates and
samples like --source with only the prior changed.
"""

import argparse
import shutil
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from catdog.config import override  # noqa: E402
from catdog.device import pick_device  # noqa: E402
from catdog.pipeline import Job, build_diffusion, build_latents, prepare_run_dir  # noqa: E402
from catdog.run_dir import RunPaths, load_autoencoder  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--run-dir", type=Path, required=True)
parser.add_argument("--source", type=Path, default=ROOT / "pretrained")
parser.add_argument("--diffusion-train-steps", type=int, default=60000)
parser.add_argument("--diffusion-batch-size", type=int, default=512)
parser.add_argument("--diffusion-lr", type=float, default=1e-3)
parser.add_argument("--diffusion-warmup-steps", type=int, default=500)
parser.add_argument("--ema-halflife-steps", type=int, default=2000)
parser.add_argument("--unet-widths", default="320,160")
parser.add_argument("--unet-blocks", type=int, default=2)
parser.add_argument("--min-snr-gamma", type=float, default=5.0)
parser.add_argument("--label-dropout", type=float, default=0.1)
parser.add_argument("--checkpoint-every-steps", type=int, default=2000)
parser.add_argument("--log-every-steps", type=int, default=1000)
parser.add_argument("--diffusion-shift-px", type=int, default=0)
parser.add_argument("--threads", type=int, default=2, help="CPU threads (1 leaves a core for other work)")
parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: the best available)")
args = parser.parse_args()
device = pick_device(args.device)
if device.type == "cpu":
    torch.set_num_threads(args.threads)



paths = RunPaths(args.run_dir)
if not paths.autoencoder.exists():
    paths.root.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "autoencoder.safetensors"):
        shutil.copy(args.source / name, paths.root / name)
autoencoder, config = load_autoencoder(paths.root, device)
config = override(config, {
    "diffusion_train_steps": args.diffusion_train_steps, "diffusion_batch_size": args.diffusion_batch_size,
    "diffusion_lr": args.diffusion_lr, "diffusion_warmup_steps": args.diffusion_warmup_steps,
    "ema_halflife_steps": args.ema_halflife_steps, "unet_blocks": args.unet_blocks,
    "unet_widths": tuple(int(w) for w in args.unet_widths.split(",")), "min_snr_gamma": args.min_snr_gamma,
    "label_dropout": args.label_dropout, "diffusion_shift_px": args.diffusion_shift_px, "bf16": True, "compile": False,
    "checkpoint_every_steps": args.checkpoint_every_steps, "log_every_steps": args.log_every_steps})
prepare_run_dir(paths.root, config, force=False)
job = Job(paths, config, None, device, {"autoencoder": autoencoder})
build_latents(job)
build_diffusion(job)
if (args.source / "refiner.safetensors").is_file() and not paths.refiner.exists():
    shutil.copy(args.source / "refiner.safetensors", paths.refiner)
