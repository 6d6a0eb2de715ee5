"""The generative decoding stages for the shipped model's autoencoder: decoder fine-tune and refiner.

    python benchmarks/refine_pretrained.py --run-dir runs/pretrained_refined --refiner-train-steps 50000 \\
        --refiner-widths 64,128,128 --refiner-ema-halflife-steps 1500 --refiner-warmup-steps 500
    python benchmarks/refine_pretrained.py --run-dir runs/pretrained_decoder --decoder-train-steps 2000 \\
        --refiner-train-steps 10000 --refiner-init pretrained

Copies --source's autoencoder and diffusion model (weights, config, eval.json) into --run-dir once, then
runs the pipeline's own latents, decoder (if --decoder-train-steps > 0) and refiner stages there (the
same code as `catdog run`; a rerun resumes from the *_state.pt files). --refiner-init starts the refiner
from another run's refiner of the same widths instead of random weights. Then `catdog evaluate
--run-dir DIR` measures it against pretrained/.
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
from catdog.pipeline import Job, build_decoder, build_latents, build_refiner, prepare_run_dir  # noqa: E402
from catdog.run_dir import RunPaths, load_autoencoder, load_refiner  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--run-dir", type=Path, default=ROOT / "runs" / "pretrained_refined")
parser.add_argument("--source", type=Path, default=ROOT / "pretrained")
parser.add_argument("--refiner-train-steps", type=int, default=50000)
parser.add_argument("--refiner-widths", default="64,128,128")
parser.add_argument("--refiner-batch-size", type=int, default=64)
parser.add_argument("--refiner-crop-px", type=int, default=16)
parser.add_argument("--refiner-lr", type=float, default=1e-3)
parser.add_argument("--refiner-warmup-steps", type=int, default=500)
parser.add_argument("--refiner-ema-halflife-steps", type=int, default=1500)
parser.add_argument("--refiner-init", type=Path, default=None, help="a run folder whose refiner to start from")
parser.add_argument("--decoder-train-steps", type=int, default=0)
parser.add_argument("--decoder-batch-size", type=int, default=64)
parser.add_argument("--decoder-lr", type=float, default=2e-4)
parser.add_argument("--decoder-warmup-steps", type=int, default=200)
parser.add_argument("--checkpoint-every-steps", type=int, default=1000)
parser.add_argument("--log-every-steps", type=int, default=500)
parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: the best available)")
args = parser.parse_args()
device = pick_device(args.device)
if device.type == "cpu":
    torch.set_num_threads(2)

paths = RunPaths(args.run_dir)
if not paths.autoencoder.exists():
    paths.root.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "autoencoder.safetensors", "diffusion.safetensors", "eval.json"):
        shutil.copy(args.source / name, paths.root / name)
autoencoder, config = load_autoencoder(paths.root, device)
config = override(config, {
    "refiner_train_steps": args.refiner_train_steps, "bf16": True, "compile": False,
    "refiner_widths": tuple(int(w) for w in args.refiner_widths.split(",")),
    "refiner_batch_size": args.refiner_batch_size, "refiner_crop_px": args.refiner_crop_px,
    "refiner_lr": args.refiner_lr, "refiner_warmup_steps": args.refiner_warmup_steps,
    "refiner_ema_halflife_steps": args.refiner_ema_halflife_steps,
    "decoder_train_steps": args.decoder_train_steps, "decoder_batch_size": args.decoder_batch_size,
    "decoder_lr": args.decoder_lr, "decoder_warmup_steps": args.decoder_warmup_steps,
    "checkpoint_every_steps": args.checkpoint_every_steps, "log_every_steps": args.log_every_steps})
prepare_run_dir(paths.root, config, force=False)
job = Job(paths, config, None, device, {"autoencoder": autoencoder})
build_latents(job)
build_decoder(job)
build_refiner(job, load_refiner(args.refiner_init, device)[0] if args.refiner_init else None)
