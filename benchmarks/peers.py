"""catdog against the libraries a practitioner would reach for instead, at equal CPU time (issue 29).

    python benchmarks/peers.py --minutes 15            # the README table (about 1.5 hours on 2 cores)
    python benchmarks/peers.py --minutes 1 --n 200     # the whole path in a few minutes
    python benchmarks/peers.py --peers "" --figure docs/figures/peers.png   # table + grids of OUT only

OUT/table.md and the figure hold every contender finished in OUT, also by an earlier invocation.

Each contender trains for the same wall time on the same 10,000 training cats and dogs, on this machine
with nothing else running (one after the other, each in its own process so that its peak memory is its
own), then samples N/2 cats and N/2 dogs, which `catdog evaluate --samples` scores against the shared
training statistics:
- catdog itself: `python main.py`'s `cpu` preset (15 minutes on 2 cores), every stage's steps scaled by
  minutes / 15 for other budgets; DDIM 50, guidance 6, refined.
- diffusers (Hugging Face): a class-conditional `UNet2DModel` (class embedding, a null class for
  classifier-free guidance) trained as its official unconditional example trains (DDPMScheduler, 1,000
  linear steps, epsilon loss, AdamW 1e-4 with betas 0.95/0.999 and weight decay 1e-6, 500 warm-up steps
  then cosine, EMA with power 3/4 up to 0.9999, batch 16, random flips), sampled with `DDIMScheduler` at
  50 steps and guidance 6.
- lucidrains' denoising-diffusion-pytorch: `classifier_free_guidance.Unet` + `GaussianDiffusion` with
  their defaults (cosine schedule, noise prediction, condition dropout 0.5, 50 sampling steps = its DDIM
  with eta 1, cond_scale 6, rescaled_phi 0.7), Adam at its Trainer's 1e-4, batch 16, its Trainer's EMA
  (ema_pytorch's `EMA`, 0.995 every 10 steps after a warm-up), random flips.
What 2 cores and 15 minutes force: the peers' U-Nets are sized down (their examples' 35 M+ parameters
for 64-256 px images would train at under a step a second here): diffusers 1.1 M parameters (widths
32, 64, 64, one layer per block, attention at 16x16 as DDPM's CIFAR-10 model has it; 4.7 steps/s at
batch 16, ~13 min to sample 2,000 with guidance), lucidrains 2.9 M (dim 32, mults 1, 2, 4; 2.9 steps/s,
~55 min to sample 2,000: its sampler runs the model twice per step, unbatched). Both train and sample
under bf16 autocast as catdog does (1.7x faster than float32 here).

The peers live in their own virtual environment (OUT/venv, made by this script): diffusers and
einops from PyPI, and lucidrains' package installed without its dependencies, because they pull a
torchvision that does not import beside the project's torch. Only the package's `__init__` needs
torchvision (for its Trainer's image folders); the classifier-free-guidance module does not, so it is
loaded from the installed package by path. Nothing is downloaded at run time (the lucidrains Trainer,
whose FID hook downloads Inception weights, is not used).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import inspect
import json
import math
import resource
import subprocess
import sys
import sysconfig
import time
import tomllib
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from catdog.data import create_cat_dog_dataset  # noqa: E402

PEERS = ("catdog", "diffusers", "lucidrains")
PEER_PACKAGES = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["peers"]
LUCIDRAINS = "denoising-diffusion-pytorch==2.3.4"       # --no-deps: see the module docstring
GUIDANCE, STEPS, BATCH = 6.0, 50, 16
NULL = 2                                 # the class index of "no class" (classifier-free guidance)


# --- the training data, as every contender sees it -------------------------------------------------
class Batches:
    """Random batches of the 10,000 training images with random horizontal flips: float (B, 3, 32, 32)
    in [0, 1] and labels (B,)."""

    def __init__(self, data=None, seed: int = 0):
        self.images, self.labels = create_cat_dog_dataset("train", data)
        self.rng = np.random.default_rng(seed)

    def next(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self.rng.integers(0, len(self.images), size)
        x = torch.from_numpy(self.images[idx]).permute(0, 3, 1, 2).float() / 255
        flip = torch.from_numpy(self.rng.random(size) < 0.5)
        x[flip] = x[flip].flip(3)
        return x, torch.from_numpy(self.labels[idx]).long()


def to_uint8(x01: torch.Tensor) -> np.ndarray:
    return (x01.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()


def sample_classes(sample_fn, n: int, batch: int = 250) -> tuple[np.ndarray, np.ndarray]:
    """n/2 cats then n/2 dogs from sample_fn(labels, seed) -> uint8 images, in batches of their own seeds
    (one seed for all would repeat the same noise, hence the same images, in every batch of a class)."""
    labels = np.repeat([0, 1], [n // 2, n - n // 2])
    images = [sample_fn(torch.from_numpy(labels[i:i + batch]), 1000 + i) for i in range(0, n, batch)]
    return np.concatenate(images), labels


# --- diffusers ------------------------------------------------------------------------------------
def train_diffusers(batches: Batches, seconds: float) -> tuple[dict, int]:
    from diffusers import DDPMScheduler, UNet2DModel
    from diffusers.optimization import get_cosine_schedule_with_warmup
    from diffusers.training_utils import EMAModel
    model = UNet2DModel(sample_size=32, in_channels=3, out_channels=3, layers_per_block=1,
                        block_out_channels=(32, 64, 64),
                        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
                        up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"), num_class_embeds=3)
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.95, 0.999), weight_decay=1e-6, eps=1e-8)
    expected_steps = 100_000                       # the cosine runs over a budget in steps; time stops it
    lr_schedule = get_cosine_schedule_with_warmup(optimizer, 500, expected_steps)
    ema = EMAModel(model.parameters(), decay=0.9999, use_ema_warmup=True, inv_gamma=1.0, power=3 / 4)
    start, step = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        x01, y = batches.next(BATCH)
        x = x01 * 2 - 1
        y = torch.where(torch.rand(len(y)) < 0.1, NULL, y)             # label dropout for guidance
        noise = torch.randn_like(x)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (len(x),))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            pred = model(scheduler.add_noise(x, noise, t), t, class_labels=y).sample
        loss = torch.nn.functional.mse_loss(pred.float(), noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        lr_schedule.step()
        optimizer.zero_grad()
        ema.step(model.parameters())
        step += 1
    ema.copy_to(model.parameters())
    return {"model": model.eval(), "scheduler": scheduler}, step


@torch.no_grad()
def sample_diffusers(trained: dict, labels: torch.Tensor, seed: int = 0) -> np.ndarray:
    from diffusers import DDIMScheduler
    model = trained["model"]
    scheduler = DDIMScheduler.from_config(trained["scheduler"].config)
    scheduler.set_timesteps(STEPS)
    x = torch.randn(len(labels), 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    both = torch.cat([labels, torch.full_like(labels, NULL)])
    for t in scheduler.timesteps:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            eps = model(torch.cat([x, x]), t, class_labels=both).sample.float()
        cond, uncond = eps.chunk(2)
        x = scheduler.step(uncond + GUIDANCE * (cond - uncond), t, x).prev_sample
    return to_uint8((x + 1) / 2)


# --- lucidrains' denoising-diffusion-pytorch -------------------------------------------------------
def lucidrains_module():
    """denoising_diffusion_pytorch.classifier_free_guidance, loaded without the package's __init__ (which
    imports torchvision for its Trainer)."""
    spec = importlib.util.find_spec("denoising_diffusion_pytorch")
    path = Path(spec.submodule_search_locations[0]) / "classifier_free_guidance.py"
    module_spec = importlib.util.spec_from_file_location("ddp_classifier_free_guidance", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def train_lucidrains(batches: Batches, seconds: float) -> tuple[dict, int]:
    from ema_pytorch import EMA
    cfg = lucidrains_module()
    model = cfg.Unet(dim=32, dim_mults=(1, 2, 4), num_classes=2, cond_drop_prob=0.5)
    diffusion = cfg.GaussianDiffusion(model, image_size=32, timesteps=1000, sampling_timesteps=STEPS)
    optimizer = torch.optim.Adam(diffusion.parameters(), lr=1e-4, betas=(0.9, 0.99))
    ema = EMA(diffusion, beta=0.995, update_every=10)                 # its Trainer's EMA, ema_pytorch defaults
    start, step = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        x01, y = batches.next(BATCH)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = diffusion(x01, classes=y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(diffusion.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        ema.update()
        step += 1
    return {"diffusion": ema.ema_model.eval()}, step


@torch.no_grad()
def sample_lucidrains(trained: dict, labels: torch.Tensor, seed: int = 0) -> np.ndarray:
    torch.manual_seed(seed)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        images = trained["diffusion"].sample(classes=labels, cond_scale=GUIDANCE)
    return to_uint8(images.float())


# --- catdog ---------------------------------------------------------------------------------------
def train_catdog(out: Path, minutes: float, data=None) -> tuple[object, int]:
    from catdog.config import PRESETS, override
    from catdog.pipeline import run_all
    from catdog.run_dir import load_run
    cpu = PRESETS["cpu"]
    scale = minutes / 15
    steps = {"ae_train_steps": cpu.ae.ae_train_steps, "diffusion_train_steps": cpu.diffusion.diffusion_train_steps,
             "refiner_train_steps": cpu.refiner.refiner_train_steps}
    steps = {k: max(1, round(v * scale)) for k, v in steps.items()}
    run_all(override(cpu, steps), out / "catdog_run", data, figures=False)
    return load_run(out / "catdog_run"), sum(steps.values())


def sample_catdog(run, labels: torch.Tensor, seed: int = 0) -> np.ndarray:
    from catdog.config import SampleConfig
    return run.generate(labels.numpy(), SampleConfig(seed=seed, steps=STEPS, guidance=GUIDANCE))


# --- one contender, in its own process -------------------------------------------------------------
def user_lines(*functions) -> int:
    """Non-blank, non-comment lines of the functions a user would write (not counting the data loader)."""
    text = "\n".join(inspect.getsource(f) for f in functions)
    return sum(1 for line in text.splitlines() if line.strip() and not line.strip().startswith(("#", '"""')))


def run_worker(name: str, minutes: float, n: int, out: Path, data=None, grid: int = 64) -> dict:
    torch.manual_seed(0)
    start = time.perf_counter()
    if name == "catdog":
        trained, steps = train_catdog(out, minutes, data)
        sample, lines, version = lambda y, seed=0: sample_catdog(trained, y, seed), 2, "this checkout"
    else:
        train, sample_fn = {"diffusers": (train_diffusers, sample_diffusers),
                            "lucidrains": (train_lucidrains, sample_lucidrains)}[name]
        trained, steps = train(Batches(data), minutes * 60)
        sample = lambda y, seed=0: sample_fn(trained, y, seed)
        lines = user_lines(train, sample_fn)
        package = {"diffusers": "diffusers", "lucidrains": "denoising-diffusion-pytorch"}[name]
        version = importlib.metadata.version(package)
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    grid = sample(torch.tensor([0] * (grid // 2) + [1] * (grid - grid // 2)), seed=1)
    sample64_s = (time.perf_counter() - start) * 64 / len(grid)
    images, labels = sample_classes(sample, n)
    np.savez(out / f"{name}_samples.npz", images=images, labels=labels)
    np.save(out / f"{name}_grid.npy", grid)
    return {"peer": name, "version": version, "torch": torch.__version__, "train_s": round(train_s, 1),
            "train_steps": steps, "sample64_s": round(sample64_s, 2), "n": n, "user_lines": lines,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


# --- the orchestrator ------------------------------------------------------------------------------
def peers_venv(out: Path) -> Path:
    """OUT/venv: sees this environment's packages (torch, numpy, ...) and adds the peers'."""
    python, installed = out / "venv" / "bin" / "python", out / "venv" / "catdog_peers.txt"
    wanted = "\n".join(PEER_PACKAGES + [LUCIDRAINS])
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(out / "venv")], check=True)
    if not installed.exists() or installed.read_text() != wanted:
        purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
        site = Path(subprocess.check_output([str(python), "-c", purelib], text=True).strip())
        core = sysconfig.get_paths()["purelib"]
        (site / "catdog_core.pth").write_text(f"import site; site.addsitedir({core!r})\n")
        pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        subprocess.run(pip + PEER_PACKAGES, check=True)
        subprocess.run(pip + ["--no-deps", LUCIDRAINS], check=True)
        installed.write_text(wanted)
    return python


def evaluate(npz: Path, ref_stats: Path | None) -> dict:
    out = npz.with_suffix(".eval.json")
    command = [sys.executable, "-m", "catdog", "evaluate", "--samples", str(npz), "--out", str(out), "--force"]
    if ref_stats is not None:
        command += ["--ref-stats", str(ref_stats)]
    subprocess.run(command, check=True)
    return json.loads(out.read_text())


def finished(out: Path) -> list[dict]:
    """Every contender whose run and scores are in OUT (also those of earlier invocations), in PEERS order."""
    rows = []
    for name in PEERS:
        result, scores = out / f"{name}.json", out / f"{name}_samples.eval.json"
        if result.exists() and scores.exists():
            scores = json.loads(scores.read_text())
            rows.append({**json.loads(result.read_text()),
                         **{k: scores.get(k, math.nan) for k in ("fid", "kid", "class_fidelity")}})
    return rows


def grids_figure(rows: list[dict], out: Path, path: Path) -> None:
    """The contenders' 64-image grids (first half cats, second half dogs, seed 1) side by side."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from catdog.viz import image_grid
    fig, axes = plt.subplots(1, len(rows), figsize=(3.2 * len(rows), 3.6), squeeze=False)
    for ax, r in zip(axes[0], rows):
        ax.imshow(image_grid(np.load(out / f"{r['peer']}_grid.npy"), 8))
        ax.set_title(f"{r['peer']} ({r['version']})\nFID {r['fid']:.1f} @ {r['n']:,}, "
                     f"{r['train_s'] / 60:.0f} CPU min", fontsize=8)
        ax.axis("off")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    print(f"wrote {path}")


def table(rows: list[dict]) -> str:
    lines = ["| contender (version) | FID @ N | KID | class fidelity | training wall time | 64 samples | peak memory | "
             "lines of user code |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['peer']} ({r['version']}) | {r['fid']:.1f} @ {r['n']:,} | {r['kid']:.3f} | "
                     f"{100 * r['class_fidelity']:.1f}% | {r['train_s'] / 60:.1f} min ({r['train_steps']:,} steps) | "
                     f"{r['sample64_s']:.1f} s | {r['peak_rss_mb'] / 1024:.1f} GiB | {r['user_lines']} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=15.0, help="training wall time of each contender")
    parser.add_argument("--n", type=int, default=2000, help="samples of each (half cats, half dogs)")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "peers")
    parser.add_argument("--peers", default=",".join(PEERS))
    parser.add_argument("--ref-stats", type=Path, default=ROOT.parent / "shared" / "fid_stats")
    parser.add_argument("--data", default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--figure", type=Path, default=None, help="the grids side by side (default OUT/grids.png)")
    parser.add_argument("--worker", choices=PEERS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.worker:
        result = run_worker(args.worker, args.minutes, args.n, args.out, args.data)
        (args.out / f"{args.worker}.json").write_text(json.dumps(result, indent=2))
        return 0
    names = [p for p in args.peers.split(",") if p]
    python = peers_venv(args.out) if set(names) - {"catdog"} else Path(sys.executable)
    ref_stats = args.ref_stats if args.ref_stats.is_dir() else None
    for name in names:
        print(f"== {name}: training {args.minutes:g} min, then {args.n} samples", flush=True)
        worker = [str(python if name != "catdog" else sys.executable), __file__, "--worker", name, "--minutes",
                  str(args.minutes), "--n", str(args.n), "--out", str(args.out), "--threads", str(args.threads)]
        subprocess.run(worker + (["--data", args.data] if args.data else []), check=True)
        result = json.loads((args.out / f"{name}.json").read_text())
        budget = args.minutes * 60
        if name != "catdog" and not budget <= result["train_s"] <= budget * 1.05 + 5:
            raise SystemExit(f"{name} trained {result['train_s']} s, not the {budget:g} s budget")
        evaluate(args.out / f"{name}_samples.npz", ref_stats)
        print(table([r for r in finished(args.out) if r["peer"] == name]), flush=True)
    rows = finished(args.out)
    (args.out / "table.md").write_text(table(rows))
    grids_figure(rows, args.out, args.figure or args.out / "grids.png")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
