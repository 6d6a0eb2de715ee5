"""Checkpoints: atomic training state for resume, and safetensors exports that carry their config.

Training state (`*_state.pt`) is one dict: model, EMA, optimizer, step, RNG state, config and format
version, written to a temporary file and renamed into place, so a kill leaves either the old or the
new file, never half of one. It is read with `torch.load(weights_only=True)`, which refuses any
pickle that would build arbitrary objects, so a tampered file cannot run code. Finished models are
exported as safetensors (tensors only) with the config as JSON metadata. Every failure to read or
match a file is a UserError that names the file.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from catdog.config import SHAPING_RUN_FIELDS
from catdog.errors import UserError

FORMAT_VERSION = 1


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()            # what open() gives a new file; safetensors' writer gives 0600


def atomic_write(path: Path, write) -> None:
    """Call write(tmp_path), fsync, then rename onto path (atomic on POSIX), with the usual file mode."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        os.chmod(tmp, FILE_MODE)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None


def save_state(path: Path, state: dict) -> None:
    """Atomically save a training-state dict (tensors, numbers, strings, lists, dicts only)."""
    atomic_write(path, lambda tmp: torch.save({"format_version": FORMAT_VERSION, **state}, tmp))


def load_state(path: Path, expected_config: dict, sections: tuple[str, ...], hint: str | None = None) -> dict:
    """Load a training state safely and check that its config matches in `sections` (and the run
    fields that shape training)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:                               # weights_only refused a Python object
        raise UserError(f"{path}: refused, it holds pickled Python objects that could run code; "
                        "delete it or rerun with --force") from None
    except Exception as e:  # truncated zip, not a torch file, ...
        raise UserError(f"{path}: unreadable checkpoint ({type(e).__name__}); delete it or rerun with --force") from None
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{path}: not a catdog checkpoint of format {FORMAT_VERSION}")
    check_config_matches(path, state.get("config", {}), expected_config, sections + ("run",),
                         *([hint] if hint else []))
    return state


def check_config_matches(path: Path, found: dict, expected: dict, sections: tuple[str, ...],
                         hint: str = "rerun with --force to retrain, or use another --run-dir") -> None:
    """Raise a UserError naming the first differing field between two config dicts in `sections`
    (of section "run", only the fields that shape training). A field that only one side records is
    skipped: it was added to (or removed from) the config after the file was written, and a new field's
    default keeps the behaviour of the code that wrote it."""
    for section in sections:
        a, b = found.get(section, {}), expected.get(section, {})
        names = set(a) & set(b)
        for name in sorted(names & set(SHAPING_RUN_FIELDS) if section == "run" else names):
            va, vb = _plain(a.get(name)), _plain(b.get(name))
            if va != vb:
                raise UserError(f"{path} was trained with {name}={va}, but this run asks for {vb}; {hint}")


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def save_weights(path: Path, tensors: dict[str, torch.Tensor], config: dict, **metadata: str) -> None:
    """Export tensors as safetensors with the config (JSON) and extra string metadata."""
    meta = {"format_version": str(FORMAT_VERSION), "config": json.dumps(config), **metadata}
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def read_metadata(path: Path) -> dict:
    """A safetensors export's metadata (strings) with its config parsed, without reading the tensors."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
        meta["config"] = json.loads(meta["config"])
    except (SafetensorError, OSError, KeyError, ValueError, TypeError) as e:
        raise _unreadable(path, e) from None
    config = meta["config"]
    if not isinstance(config, dict) or not all(isinstance(v, dict) for v in config.values()):
        raise UserError(f"{path}: its config metadata is not a catdog config (a JSON object of sections)")
    return meta


def load_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict, dict]:
    """Read a safetensors export -> (tensors, config dict, metadata with that config)."""
    meta = read_metadata(path)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise _unreadable(Path(path), e) from None
    return tensors, meta["config"], meta


def _unreadable(path: Path, error: Exception) -> UserError:
    return UserError(f"{path}: unreadable weights file ({type(error).__name__}: {str(error)[:200]})")


def load_into(module: torch.nn.Module, tensors: dict[str, torch.Tensor], path: Path) -> None:
    """load_state_dict with a clear error naming the file if the shapes or names differ."""
    try:
        module.load_state_dict(tensors)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise UserError(f"{path}: weights do not fit this model ({' '.join(first[:2])[:300]})") from None
