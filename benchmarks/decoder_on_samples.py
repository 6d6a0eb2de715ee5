"""The decoder stage trained also on what it sees at sampling time: its hinge terms judge decodes of
latents sampled from the run's prior too (issue 26, item 2), a mixture with the reconstructions at
--sampled-weight : 1 (decoder_gan.py).

    git show 0a2e101:pretrained/autoencoder.safetensors > runs/ae_0a2e101.safetensors   # before its decoder stage
    python benchmarks/decoder_on_samples.py --run-dir runs/dec_sampled --decoder-train-steps 2000 \
        --decoder-init runs/ae_0a2e101.safetensors
    catdog evaluate --run-dir runs/dec_sampled --n 2000 --ref-stats ../shared/fid_stats

Copies --source's config, autoencoder (with its fine-tuned decoder merged in) and prior into --run-dir
once, draws --bank latents from the prior (DDIM 50 at --guidance, half cats, half dogs, seeded), then
trains the decoder stage with train_decoder (a fresh discriminator; a rerun resumes from decoder_state.pt)
from the source's decoder or, with --decoder-init, from the decoder of another autoencoder file with the
same encoder (`pretrained/`'s before its decoder stage: the shipped stage's 2,000 steps, repeated with the
sampled term), and writes decoder.safetensors, naming the prior it sampled from. The folder has no
refiner (the source's was trained on the source's decoder), so `evaluate` scores the decoder alone: its
raw decoding floor and raw samples, against the source's `unrefined` row and `floor_fid_raw`.
--sampled-weight 0 is the control: the same extra steps on reconstructions only.
"""

import argparse
import copy
import shutil
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from catdog.checkpoint import load_weights, save_weights  # noqa: E402
from catdog.config import config_to_dict, override  # noqa: E402
from catdog.device import pick_device  # noqa: E402
from catdog.lineage import file_digest, made_from  # noqa: E402
from catdog.pipeline import Job, build_latents, cached_images  # noqa: E402
from catdog.run_dir import RunPaths, load_autoencoder, load_diffusion  # noqa: E402
from catdog.sample import sample_latents  # noqa: E402
from catdog.train import train_decoder  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--run-dir", type=Path, required=True)
parser.add_argument("--source", type=Path, default=ROOT / "pretrained")
parser.add_argument("--decoder-train-steps", type=int, default=2000)
parser.add_argument("--decoder-lr", type=float, default=2e-4)
parser.add_argument("--decoder-warmup-steps", type=int, default=200)
parser.add_argument("--decoder-init", type=Path, default=None,
                    help="an autoencoder file with --source's encoder whose decoder to start from")
parser.add_argument("--sampled-weight", type=float, default=1.0, help="0: reconstructions only (the control)")
parser.add_argument("--bank", type=int, default=8192, help="latents drawn from the prior")
parser.add_argument("--guidance", type=float, default=9.0)
parser.add_argument("--checkpoint-every-steps", type=int, default=250)
parser.add_argument("--log-every-steps", type=int, default=50)
parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True)
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: the best available)")
args = parser.parse_args()
device = pick_device(args.device)
if device.type == "cpu":
    torch.set_num_threads(args.threads)

paths = RunPaths(args.run_dir)
if not paths.autoencoder.exists():
    paths.root.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "autoencoder.safetensors", "diffusion.safetensors"):
        shutil.copy(args.source / name, paths.root / name)
if paths.decoder.exists():
    sys.exit(f"{paths.decoder} exists already: evaluate it, or remove it to train again")
autoencoder, config = load_autoencoder(paths.root, device)
decoder = copy.deepcopy(autoencoder.decoder)                # the start: the source's, or --decoder-init's
if args.decoder_init:
    tensors, own = load_weights(args.decoder_init)[0], load_weights(paths.autoencoder)[0]
    if set(tensors) != set(own) or any(not torch.equal(tensors[k], v) for k, v in own.items()
                                       if not k.startswith("decoder.")):
        sys.exit(f"--decoder-init {args.decoder_init}: another encoder than {paths.autoencoder}'s")
    decoder.load_state_dict({k[len("decoder."):]: v.float() for k, v in tensors.items() if k.startswith("decoder.")})
config = override(config, {
    "decoder_train_steps": args.decoder_train_steps, "decoder_lr": args.decoder_lr,
    "decoder_warmup_steps": args.decoder_warmup_steps, "bf16": args.bf16, "compile": False,
    "checkpoint_every_steps": args.checkpoint_every_steps, "log_every_steps": args.log_every_steps})
job = Job(paths, config, None, device, {"autoencoder": autoencoder})
build_latents(job)
latents = job.products["latents"]

# 1. the bank: raw latents sampled from the prior, batches of 1,024 seeded 1,000 + i
sampled = None
if args.sampled_weight > 0:
    diffusion = load_diffusion(paths.root, device)[0]
    y = torch.arange(args.bank) % 2
    with torch.no_grad():
        z = torch.cat([sample_latents(diffusion, y[i:i + 1024].to(device), 1000 + i // 1024, 50, args.guidance)
                       for i in range(0, args.bank, 1024)])
        sampled = (autoencoder.denormalize(z).cpu(), y)
    print(f"[decoder] {args.bank} latents sampled from {paths.diffusion} at guidance {args.guidance}", flush=True)

# 2. the decoder stage
decoder = train_decoder(config, decoder, latents["train_latents"],
                        cached_images(job, len(latents["train_latents"])), latents["train_labels"],
                        paths.decoder_state, paths.metrics, device, sampled, args.sampled_weight)
start = {"decoder_init": file_digest(args.decoder_init)} if args.decoder_init else {}
prior = {"sampled_from": file_digest(paths.diffusion), "sampled_weight": str(args.sampled_weight),
         "sampled_guidance": str(args.guidance), "sampled_latents": str(args.bank)} if sampled else {}
save_weights(paths.decoder, decoder.state_dict(), config_to_dict(config),
             **made_from(paths, "decoder", job.data_sha256), **start, **prior)
paths.decoder_state.unlink(missing_ok=True)
print(f"[decoder] -> {paths.decoder}", flush=True)
