"""Command line: argparse subcommands that only parse and call.

    catdog run              train the missing stages (autoencoder, diffusion, decoder, refiner), then the figures
    catdog train-ae         the autoencoder stage only
    catdog train-diffusion  the autoencoder (if missing) and diffusion stages
    catdog sample           images of one class from a trained run, as a PNG grid and/or .npz
    catdog visualize        rewrite the figures of a trained run
    catdog img2img          turn pictures into the other class (SDEdit-style, through the latent)
    catdog interpolate      frames between two seeds or two pictures, as a PNG strip and a GIF
    catdog evaluate         FID / KID / class fidelity / reconstruction metrics -> eval.json
    catdog export           a slim (fp16) copy of a trained run, e.g. for pretrained/
    catdog demo             a local web page on a trained run (pretrained/ by default)

User errors print one line on stderr and exit with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

from catdog.config import PRESETS, SAMPLERS, Config, SampleConfig, all_fields, config_to_dict, override
from catdog.errors import UserError

CHECKOUT = Path(__file__).resolve().parents[2]        # the source checkout, when installed with pip install -e

EXAMPLES = """
examples:
  catdog run                                  # cpu preset without a GPU, gpu preset with CUDA
  catdog run --preset tiny --run-dir runs/smoke
  catdog run --latent-dim 64 --n-steps 500 --unet-widths 256,128 --run-dir runs/small
  catdog sample --run-dir pretrained --class dog --n 64 --seed 0 --out dogs.png
  catdog sample --run-dir pretrained --class cat --sampler ddpm --out cats.png   # all n_steps, ancestral
  catdog visualize --run-dir runs/cpu
  catdog img2img --run-dir pretrained --image my_cat.jpg --class dog --out my_dog.png
  catdog interpolate --run-dir pretrained --seeds 3,7 --classes cat,dog --out strip.png --gif strip.gif
  catdog evaluate --run-dir runs/cpu --n 2000
  catdog demo                                 # the page on pretrained/, at http://127.0.0.1:7860/
"""


class DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows each option's default, except where it says nothing: none (None, an empty list), a switch's
    off state, or a --no-X switch (whose default True is the X it turns off)."""

    def _get_help_string(self, action):
        silent = (action.default is None or action.default is False or action.default == ()
                  or isinstance(action, argparse._StoreFalseAction))
        return action.help if silent else super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line and exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


INT_LIMIT = 2**62                       # every integer flag fits a 64-bit tensor, with room for seed + batch


def _int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if abs(value) >= INT_LIMIT:
        raise argparse.ArgumentTypeError(f"must be below 2^62 in size, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = _int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _seed(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def _int_tuple(text: str) -> tuple[int, ...]:
    try:
        return tuple(_int(v) for v in text.split(","))
    except (ValueError, argparse.ArgumentTypeError):
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _add_training_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="named config (default: gpu with CUDA, else cpu)")
    p.add_argument("--run-dir", type=Path, default=None, help="run folder (default: runs/<preset>)")
    p.add_argument("--data", default=None,
                   help="cat/dog .npz, folder of CIFAR-10 binary batches, or 'download' "
                        "(default: the project's data/cifar10_catdog.npz)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N or mps (default: auto)")
    p.add_argument("--force", action="store_true", help="retrain from scratch, deleting trained stages")
    p.add_argument("--retrain", type=_name_tuple, default=(), metavar="STAGES",
                   help="retrain only these stages (and those made from them), e.g. refiner or diffusion,decoder")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and stop")
    fields = p.add_argument_group("config fields (each overrides the preset; defaults shown are the cpu preset's)")
    cpu = config_to_dict(PRESETS["cpu"])
    for section, name, f in all_fields():
        flag = "--" + name.replace("_", "-")
        default = cpu[section][name]
        if f.type in ("bool", bool):
            fields.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None,
                                help=f"(cpu: {default})")
            continue
        kind = {"int": _int, "float": _finite_float, "str": str}.get(f.type, _int_tuple)
        shown = ",".join(map(str, default)) if isinstance(default, (list, tuple)) else default
        fields.add_argument(flag, dest=name, type=kind, default=None, metavar="V", help=f"(cpu: {shown})")


def resolve_config(args) -> tuple[Config, str]:
    """Preset (explicit, or by device) plus flag overrides."""
    preset = args.preset
    if preset is None:
        import torch
        preset = "gpu" if torch.cuda.is_available() and args.device in (None, "auto", "cuda") else "cpu"
    changes = {name: getattr(args, name) for _, name, _ in all_fields() if getattr(args, name) is not None}
    return override(PRESETS[preset], changes), preset


COMMANDS_WITH_HELP = ("", "run", "sample", "img2img", "interpolate", "visualize", "evaluate", "export", "demo")


def help_text() -> str:
    """The --help of catdog and its main commands, as captured in docs/cli_help.txt."""
    parser, parts = build_parser(), []
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    for name in COMMANDS_WITH_HELP:
        p = subparsers[name] if name else parser
        parts.append(f"$ catdog {name} --help".replace("  ", " ") + "\n" + p.format_help())
    return "\n".join(parts)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="catdog", description="Class-conditional latent diffusion for CIFAR-10 cats and dogs.",
                    epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for name, text in (("run", "train what is missing, then write all figures"),
                       ("train-ae", "train the autoencoder only"),
                       ("train-diffusion", "train the autoencoder if missing, then the diffusion model")):
        _add_training_flags(sub.add_parser(name, help=text, description=text, epilog=EXAMPLES,
                                           formatter_class=argparse.RawDescriptionHelpFormatter))

    p = sub.add_parser("sample", help="generate images of one class from a trained run",
                       formatter_class=DefaultsFormatter, epilog=EXAMPLES)
    p.add_argument("--run-dir", type=Path, required=True, help="trained run folder (e.g. pretrained)")
    p.add_argument("--class", dest="class_name", required=True, help="cat or dog")
    p.add_argument("--n", type=_positive_int, default=64, help=f"number of images (at most {MAX_SAMPLE:,})")
    _add_sampling_flags(p)
    p.add_argument("--out", type=Path, default=None, help="PNG grid to write")
    p.add_argument("--npz", type=Path, default=None, help="also write raw uint8 images (key 'images')")
    p.add_argument("--force", action="store_true", help="replace existing --out / --npz files")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N or mps (default: auto)")

    p = sub.add_parser("img2img", help="turn pictures into the other class through the latent",
                       formatter_class=DefaultsFormatter, epilog=EXAMPLES, description=IMG2IMG_HELP)
    p.add_argument("--run-dir", type=Path, required=True, help="trained run folder (e.g. pretrained)")
    p.add_argument("--image", type=Path, required=True,
                   help="a PNG/JPEG of any size (centre-cropped, resized to 32x32, as the demo page reads "
                        "uploads), or an .npz with 'images' uint8 (n,32,32,3)")
    p.add_argument("--class", dest="class_name", required=True, help="the target class: cat or dog")
    p.add_argument("--strength", type=float, default=RECOMMENDED_STRENGTH,
                   help="share of the sampling schedule re-run: 0 = the reconstruction, 1 = a new sample")
    _add_sampling_flags(p)
    p.add_argument("--out", type=Path, default=None, help="PNG: the inputs (upper rows) above their translations")
    p.add_argument("--npz", type=Path, default=None, help="also write 'images' (translations), 'labels', 'sources'")
    p.add_argument("--force", action="store_true", help="replace existing --out / --npz files")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N or mps (default: auto)")

    p = sub.add_parser("interpolate", help="frames between two seeds or two pictures (PNG strip, GIF)",
                       formatter_class=DefaultsFormatter, epilog=EXAMPLES)
    p.add_argument("--run-dir", type=Path, required=True, help="trained run folder (e.g. pretrained)")
    ends = p.add_mutually_exclusive_group(required=True)
    ends.add_argument("--seeds", type=_int_tuple, default=None, metavar="A,B",
                      help="two seeds: their starting noises are interpolated (spherically)")
    ends.add_argument("--images", default=None, metavar="A.png,B.png",
                      help="two PNG/JPEG pictures: their DDIM-inverted latents are interpolated")
    p.add_argument("--classes", default=None, metavar="A,B",
                   help="class of each end (default: cat,dog for seeds; for pictures, what the latent "
                        "classifier says)")
    p.add_argument("--frames", type=_int, default=9, help="frames, both ends included (2..64)")
    _add_sampling_flags(p)
    p.add_argument("--out", type=Path, default=None, help="PNG strip of the frames")
    p.add_argument("--gif", type=Path, default=None, help="GIF of the frames")
    p.add_argument("--force", action="store_true", help="replace existing --out / --gif files")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N or mps (default: auto)")

    p = sub.add_parser("visualize", help="rewrite the figures of a trained run", epilog=EXAMPLES,
                       formatter_class=DefaultsFormatter)
    p.add_argument("--run-dir", type=Path, required=True)
    _add_sampling_flags(p)
    p.add_argument("--data", default=None, help="as for run")
    p.add_argument("--device", default=None)
    p = sub.add_parser("export", help="slim copy of a trained run (weights, config, eval) for sharing",
                       formatter_class=DefaultsFormatter)
    p.add_argument("--run-dir", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="destination folder, e.g. pretrained")
    p.add_argument("--fp32", action="store_true", help="keep float32 weights (default: float16)")
    p.add_argument("--force", action="store_true", help="replace an earlier export in --out")

    p = sub.add_parser("demo", help="a local web page to make, watch and probe samples",
                       formatter_class=DefaultsFormatter)
    p.add_argument("--run-dir", type=Path, default=None,
                   help="trained run folder (default: ./pretrained, else the catdog checkout's pretrained/)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (0.0.0.0 exposes the page to every machine that can reach this one)")
    p.add_argument("--port", type=_int, default=7860, help="port (0 picks a free one)")
    p.add_argument("--data", default=None, help="as for run (the training images for 'is it copying?')")
    p.add_argument("--device", default=None)

    p = sub.add_parser("evaluate", help="FID, KID, class fidelity and AE metrics -> RUN_DIR/eval.json",
                       formatter_class=DefaultsFormatter, epilog=EXAMPLES)
    p.add_argument("--run-dir", type=Path, default=None, help="trained run folder to evaluate")
    p.add_argument("--samples", type=Path, default=None,
                   help="instead of a run: score an .npz with 'images' uint8 (n,32,32,3) and 'labels' 0/1")
    p.add_argument("--n", type=_positive_int, default=2000, help="samples (half cats, half dogs)")
    _add_sampling_flags(p)
    p.add_argument("--sweep-guidance", type=_float_tuple, default=(), help="e.g. 1,1.5,2,3")
    p.add_argument("--sweep-steps", type=_int_tuple, default=(), help="e.g. 10,25,50,1000")
    p.add_argument("--ref-stats", type=Path, default=None,
                   help="folder with fid_ref_train_{all,cat,dog}.npz (default: computed once and cached)")
    p.add_argument("--inception", type=Path, default=None, help="FID Inception TorchScript file")
    p.add_argument("--judge", type=Path, default=None, help="ResNet-20 weights resnet20-12fca82f.th")
    p.add_argument("--skip-fid", action="store_true", help="no Inception: only the fast metrics (seconds)")
    p.add_argument("--out", type=Path, default=None,
                   help="also write the numbers to this .json file (with --samples: the only record)")
    p.add_argument("--force", action="store_true", help="replace an existing --out file")
    p.add_argument("--data", default=None, help="as for run")
    p.add_argument("--device", default=None)
    return parser


def _add_sampling_flags(p: argparse.ArgumentParser) -> None:
    """--sampler, --steps, --guidance, --seed: a SampleConfig, with its defaults."""
    d = SampleConfig()
    p.add_argument("--sampler", choices=SAMPLERS, default=d.sampler,
                   help="ddim: deterministic in --steps steps; ddpm: the ancestral chain over all n_steps")
    p.add_argument("--steps", type=_positive_int, default=None, help=f"DDIM steps (default: {d.steps})")
    p.add_argument("--guidance", type=_finite_float, default=d.guidance,
                   help="classifier-free guidance w; 1 = plain conditional")
    p.add_argument("--eta", type=_finite_float, default=d.eta,
                   help="ddim only: 0 deterministic, 1 ancestral (fresh noise at every step), between: a mix")
    p.add_argument("--guidance-interval", type=_interval, default=None, metavar="LO,HI",
                   help="guide only at noise levels LO < sigma <= HI (sigma^2 = (1 - alpha_bar) / alpha_bar); "
                        "the conditional model elsewhere (default: guide at every step)")
    p.add_argument("--seed", type=_seed, default=d.seed, help="seed of the starting noise")
    p.add_argument("--refiner-steps", type=_positive_int, default=d.refiner_steps,
                   help="DDIM steps of the refiner (runs that have one)")
    p.add_argument("--no-refiner", dest="refiner", action="store_false",
                   help="the decoder's raw output, even if the run has a refiner")


def sample_config(args) -> SampleConfig:
    """The SampleConfig the sampling flags ask for; --steps belongs to DDIM only."""
    if args.sampler == "ddpm" and args.steps is not None:
        raise UserError("--steps sets the DDIM steps; --sampler ddpm always runs all of the model's n_steps")
    steps = SampleConfig.steps if args.steps is None else args.steps
    return SampleConfig(args.sampler, steps, args.guidance, args.seed, args.refiner, args.refiner_steps,
                        args.eta, args.guidance_interval)


def _name_tuple(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def _float_tuple(text: str) -> tuple[float, ...]:
    return tuple(_finite_float(v) for v in text.split(","))


def _interval(text: str) -> tuple[float, float]:
    """'LO,HI' -> (LO, HI); HI may be 'inf'."""
    parts = text.split(",")
    try:
        values = tuple(float(v) for v in parts)
    except ValueError:
        values = ()
    if len(values) != 2 or math.isnan(values[0]) or math.isnan(values[1]) or math.isinf(values[0]):
        raise argparse.ArgumentTypeError(f"expected LO,HI (two numbers, HI may be inf), got {text!r}")
    return values


MAX_SAMPLE = 100_000                    # images per `catdog sample` (300 MB of uint8)
RECOMMENDED_STRENGTH = 0.5
IMG2IMG_HELP = """Turn pictures into the target class through the latent (SDEdit, as diffusers' img2img):
encode, noise the standardised latent to the step that --strength selects on the sampling schedule,
run the remaining int(steps * strength) steps toward --class with guidance, decode and refine.
Strength 0 gives the reconstruction, 1 a new sample from the same seed. For cat <-> dog the project
recommends 0.5: on pretrained/ at guidance 6 the independent judge calls 37% / 51% / 64% / 77% of the results the
target class at strength 0 / 0.3 / 0.5 / 0.7, while PSNR to the source falls 23.1 / 19.3 / 16.3 / 13.4
dB; 0.5 is the first where most results are the target class and layout and colours are still the
picture's; 0.7 changes the class more surely and keeps less (docs/experiments.md, session 17)."""
MAX_GRID = 4096                         # images in one PNG grid


def check_output_file(path: Path, suffix: str, flag: str, replace: bool = True) -> None:
    """Before any work: `path` ends in `suffix`, is not a folder (nor, unless `replace`, an existing
    file), and its folder exists (or can be made) and is writable, so that the file printed is the file
    written."""
    if path.is_dir():
        raise UserError(f"{flag} {path}: is a folder; give a file name ending in {suffix}")
    if path.exists() and not replace:
        raise UserError(f"{flag} {path}: exists; add --force to replace it")
    if path.suffix.lower() != suffix:
        raise UserError(f"{flag} {path}: the file name must end in {suffix}")
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{flag} {path}: cannot create its folder ({e.strerror or e})") from None
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UserError(f"{flag} {path}: not writable")


def check_output_folder(folder: Path) -> None:
    """A run folder a command writes results into must be writable (checked before the work)."""
    if not os.access(folder, os.W_OK):
        raise UserError(f"{folder}: not writable, so its results (eval.json, figures/) cannot be saved")


def cmd_evaluate(args) -> int:
    from catdog.device import pick_device
    from catdog.evaluate import evaluate_run, evaluate_samples_file, format_table
    device = pick_device(args.device)
    common = dict(data=args.data, ref_stats=args.ref_stats, inception=args.inception, judge_path=args.judge,
                  device=device, skip_fid=args.skip_fid)
    if args.out is not None:
        check_output_file(args.out, ".json", "--out", replace=args.force)
    if args.samples is not None:
        result = evaluate_samples_file(args.samples, **common)
    elif args.run_dir is not None:
        from catdog.evaluate import check_fid_size
        from catdog.run_dir import locked, require_run
        if not args.skip_fid:
            check_fid_size((args.n // 2, args.n - args.n // 2), f"--n {args.n}")
        check_output_folder(require_run(args.run_dir, "autoencoder").root)
        with locked(args.run_dir, "evaluate"):
            result = evaluate_run(args.run_dir, args.n, sample_config(args), sweep_guidance=args.sweep_guidance,
                                  sweep_steps=args.sweep_steps, **common)
        print(f"wrote {Path(args.run_dir) / 'eval.json'}")
    else:
        raise UserError("give --run-dir DIR (a trained run) or --samples FILE.npz")
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")
    print(format_table(result))
    return 0


def cmd_train(args, until: str, figures: bool) -> int:
    from catdog.distributed import close_world, init_world
    from catdog.pipeline import run_all
    config, preset = resolve_config(args)
    run_dir = args.run_dir or Path("runs") / preset
    world = init_world()                                        # torchrun: join the process group
    if world.is_main:
        print(f"preset {preset}, run folder {run_dir}")
        print(json.dumps(config_to_dict(config), indent=1))
    if args.dry_run:
        return 0
    try:
        run_all(config, run_dir, args.data, args.device, args.force, until, figures, retrain=args.retrain)
    finally:
        close_world()
    return 0


def cmd_sample(args) -> int:
    import numpy as np

    from catdog.config import validate_sampling
    from catdog.data import class_index
    from catdog.device import pick_device
    from catdog.run_dir import load_run
    from catdog.viz import save_image_grid
    class_id = class_index(args.class_name)
    sample = sample_config(args)
    if args.out is None and args.npz is None:
        raise UserError("nothing to write: give --out FILE.png and/or --npz FILE.npz")
    if args.n > MAX_SAMPLE:
        raise UserError(f"--n {args.n}: at most {MAX_SAMPLE:,} images per command (a bound on memory); "
                        "run it several times with other seeds")
    if args.out is not None:
        check_output_file(args.out, ".png", "--out", replace=args.force)
        if args.n > MAX_GRID:
            raise UserError(f"--out: a PNG grid holds at most {MAX_GRID:,} images; use --npz for more")
    if args.npz is not None:
        check_output_file(args.npz, ".npz", "--npz", replace=args.force)
    run = load_run(args.run_dir, pick_device(args.device))
    validate_sampling(sample, run.diffusion.n_steps)
    images = run.generate(np.full(args.n, class_id), sample, progress=True)
    if args.out is not None:
        save_image_grid(images, args.out)
        print(f"wrote {args.out}")
    if args.npz is not None:
        np.savez(args.npz, images=images, labels=np.full(args.n, class_id, dtype=np.int64))
        print(f"wrote {args.npz}: images {images.shape} uint8")
    return 0


def cmd_img2img(args) -> int:
    import numpy as np

    from catdog.config import validate_sampling
    from catdog.data import class_index
    from catdog.device import pick_device
    from catdog.pictures import read_pictures
    from catdog.run_dir import load_run
    from catdog.translate import check_strength
    from catdog.viz import save_image_grid
    class_id = class_index(args.class_name)
    sample = sample_config(args)
    check_strength(args.strength)
    if args.out is None and args.npz is None:
        raise UserError("nothing to write: give --out FILE.png and/or --npz FILE.npz")
    for path, suffix, flag in ((args.out, ".png", "--out"), (args.npz, ".npz", "--npz")):
        if path is not None:
            check_output_file(path, suffix, flag, replace=args.force)
    sources = read_pictures(args.image)
    if len(sources) > MAX_SAMPLE:
        raise UserError(f"--image {args.image}: {len(sources):,} images; at most {MAX_SAMPLE:,} per command")
    run = load_run(args.run_dir, pick_device(args.device))
    validate_sampling(sample, run.diffusion.n_steps)
    images = run.img2img(sources, np.full(len(sources), class_id), args.strength, sample, progress=len(sources) > 1000)
    if args.out is not None:
        rows = [part for start in range(0, min(len(images), MAX_GRID // 2), 8)
                for part in (sources[start:start + 8], images[start:start + 8])]
        save_image_grid(np.concatenate(rows), args.out, ncols=min(8, len(images)))
        print(f"wrote {args.out}")
    if args.npz is not None:
        np.savez(args.npz, images=images, labels=np.full(len(images), class_id, dtype=np.int64), sources=sources)
        print(f"wrote {args.npz}: images {images.shape} uint8")
    return 0


def cmd_interpolate(args) -> int:
    from catdog.config import validate_sampling
    from catdog.data import CLASS_NAMES, class_index
    from catdog.device import pick_device
    from catdog.pictures import read_pictures
    from catdog.run_dir import load_run
    from catdog.translate import interpolation_shares
    from catdog.viz import create_diffusion_animation, save_image_grid
    sample = sample_config(args)
    shares = interpolation_shares(args.frames)
    if args.out is None and args.gif is None:
        raise UserError("nothing to write: give --out FILE.png and/or --gif FILE.gif")
    for path, suffix, flag in ((args.out, ".png", "--out"), (args.gif, ".gif", "--gif")):
        if path is not None:
            check_output_file(path, suffix, flag, replace=args.force)
    if args.seeds is not None:
        if len(args.seeds) != 2 or min(args.seeds) < 0:
            raise UserError(f"--seeds needs two seeds >= 0 (A,B), got {args.seeds}")
        ends = args.seeds
    else:
        names = args.images.split(",")
        if len(names) != 2:
            raise UserError(f"--images needs two files (A.png,B.png), got {args.images!r}")
        ends = tuple(read_pictures(Path(name))[0] for name in names)
    classes = None
    if args.classes is not None:
        names = args.classes.split(",")
        if len(names) != 2:
            raise UserError(f"--classes needs two classes (A,B), got {args.classes!r}")
        classes = tuple(class_index(name) for name in names)
    run = load_run(args.run_dir, pick_device(args.device))
    validate_sampling(sample, run.diffusion.n_steps)
    if classes is None:
        classes = (0, 1) if args.seeds is not None else run.autoencoder.predict_classes(ends)
        print(f"classes: {CLASS_NAMES[classes[0]]} -> {CLASS_NAMES[classes[1]]}")
    frames = run.interpolate(ends, classes, args.frames, sample)
    if args.out is not None:
        save_image_grid(frames, args.out, ncols=len(frames))
        print(f"wrote {args.out}")
    if args.gif is not None:
        create_diffusion_animation(frames, [f"{s:.2f}" for s in shares], args.gif, frame_ms=250)
        print(f"wrote {args.gif}")
    return 0


def cmd_export(args) -> int:
    from catdog.run_dir import export_run
    for path in export_run(args.run_dir, args.out, fp16=not args.fp32, force=args.force):
        print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    return 0


def cmd_visualize(args) -> int:
    from catdog.device import pick_device
    from catdog.figures import write_all_figures
    from catdog.run_dir import locked, require_run
    paths = require_run(args.run_dir, "autoencoder", "diffusion")
    sample = sample_config(args)
    check_output_folder(paths.root)
    with locked(paths.root, "visualize"):
        written = write_all_figures(paths, args.data, pick_device(args.device), sample)
    for path in written:
        print(path)
    return 0


def cmd_demo(args) -> int:
    import threading

    from catdog.demo import Demo
    from catdog.device import pick_device
    from catdog.server import ALL_INTERFACES, DemoServer
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must be in 0..65535, got {args.port}")
    run_dir = args.run_dir if args.run_dir is not None else default_demo_run()
    print(f"catdog demo: loading {run_dir} ...", file=sys.stderr, flush=True)     # seconds on a CPU
    demo = Demo(run_dir, pick_device(args.device), args.data)
    try:
        server = DemoServer(demo, args.host, args.port)
    except OSError as e:
        raise UserError(f"cannot listen on {args.host}:{args.port} ({e.strerror or e})") from None
    if args.host in ALL_INTERFACES:
        print(f"catdog demo: warning: listening on every interface: anyone who can reach this machine on port "
              f"{server.server_address[1]} can use the page and its CPU (--host 127.0.0.1 keeps it local)",
              file=sys.stderr, flush=True)
    try:
        threading.Thread(target=demo.train_latents, daemon=True).start()     # for 'is it copying?'
        print(f"catdog demo on {run_dir}: open {server.url} (Ctrl-C stops it)", flush=True)
        server.serve_forever()
    except KeyboardInterrupt:
        server.server_close()
        print("catdog demo: stopped", file=sys.stderr, flush=True)
        # Request and index threads may be inside torch, whose teardown under a running thread aborts
        # the process: leave without it (nothing is written, so nothing is lost).
        os._exit(130)
    return 0


def default_demo_run() -> Path:
    """./pretrained, else the pretrained/ of the checkout catdog is installed from (pip install -e)."""
    for candidate in (Path("pretrained"), CHECKOUT / "pretrained"):
        if (candidate / "autoencoder.safetensors").is_file():
            return candidate
    raise UserError(f"no model to serve: there is no pretrained/ in {Path.cwd()}; point the demo at a trained run "
                    "with --run-dir PATH (the catdog checkout ships pretrained/; `catdog run` trains one)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command in ("run", "train-ae", "train-diffusion"):
            until, figures = {"run": ("refiner", True), "train-ae": ("autoencoder", False),
                              "train-diffusion": ("diffusion", False)}[args.command]
            return cmd_train(args, until, figures)
        commands = {"sample": cmd_sample, "img2img": cmd_img2img, "interpolate": cmd_interpolate,
                    "visualize": cmd_visualize, "evaluate": cmd_evaluate,
                    "export": cmd_export, "demo": cmd_demo}
        return commands[args.command](args)
    except UserError as e:
        print(f"catdog: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("catdog: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
