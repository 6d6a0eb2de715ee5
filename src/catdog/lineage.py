"""What each artifact of a run folder was made from, and the one check that every command runs on it.

Every weights file records, next to its config: the data it was trained on (`data_sha256`, a digest of
the images and labels, so a renamed copy matches and a shuffled one does not), the autoencoder file it
was made from (`autoencoder_sha256`) and, for stages trained on the decoder's outputs, the decoder file
(`decoder_sha256`, "" for the autoencoder's own). The latent cache records the same. `check_run`
verifies that chain for every artifact present, and (when a command trains) that each one was made with
the config sections and the run fields that shaped it. A file copied in from another run, trained on
other data or with other settings is refused with its name, the reason, and how to retrain only it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from catdog.checkpoint import check_config_matches, read_metadata
from catdog.data import create_cat_dog_dataset
from catdog.errors import UserError

# artifact -> the config sections that shaped it (the `run` fields that change training come with each)
SHAPED_BY = {
    "autoencoder": ("ae",),
    "diffusion": ("ae", "diffusion"),
    "decoder": ("ae", "decoder"),
    "refiner": ("ae", "refiner"),
}
DECODER_USERS = ("refiner",)             # trained on the decoder's outputs: they name the decoder


def file_digest(path: Path) -> str:
    """First 16 hex digits of a file's sha256 (names the file an artifact was made from)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def data_digest(data=None) -> str:
    """First 16 hex digits of the sha256 of the train and test images and labels that `data` names."""
    h = hashlib.sha256()
    for split in ("train", "test"):
        for array in create_cat_dog_dataset(split, data):
            h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()[:16]


def decoder_digest(paths) -> str:
    """Names the decoder a stage was trained on: the decoder file's digest, or "" for the AE's own."""
    return file_digest(paths.decoder) if paths.decoder.is_file() else ""


def made_from(paths, name: str, data_sha256: str) -> dict[str, str]:
    """The lineage metadata that artifact `name` is saved with (the autoencoder records only its data)."""
    record = {"data_sha256": data_sha256}
    if name != "autoencoder":
        record["autoencoder_sha256"] = file_digest(paths.autoencoder)
    if name in DECODER_USERS:
        record["decoder_sha256"] = decoder_digest(paths)
    return record


def retrain_hint(paths, name: str) -> str:
    return f"retrain only it with `catdog run --run-dir {paths.root} --retrain {name}`, or use another --run-dir"


def check_artifact(paths, name: str, data_sha256: str | None = None, config: dict | None = None) -> None:
    """Refuse artifact `name` unless it was made from this folder's autoencoder (and decoder), from the
    data `data_sha256` names (if given and recorded), and (if `config` is given) with its sections."""
    path = getattr(paths, name)
    meta = read_metadata(path)
    if name != "autoencoder" and meta.get("autoencoder_sha256") != file_digest(paths.autoencoder):
        raise UserError(f"{path} was made from another autoencoder than {paths.autoencoder.name} (copied in from "
                        f"another run?); {retrain_hint(paths, name)}")
    if name in DECODER_USERS and meta.get("decoder_sha256", "") != decoder_digest(paths):
        raise UserError(f"{path} was trained on another decoder than this folder's; {retrain_hint(paths, name)}")
    recorded = meta.get("data_sha256")
    if data_sha256 and recorded and recorded != data_sha256:
        raise UserError(f"{path} was trained on other data (digest {recorded}) than this command's "
                        f"(digest {data_sha256}); give the --data it was trained on, or {retrain_hint(paths, name)}")
    if config is not None:
        stored = meta["config"]
        check_config_matches(path, stored, config, SHAPED_BY[name] + ("run",),
                             hint=f"to retrain, rerun with --retrain {name} (or --force for every stage)")


def check_run(paths, data_sha256: str | None = None, config: dict | None = None) -> None:
    """`check_artifact` for every trained artifact in the folder, in the order they were made."""
    for name in SHAPED_BY:
        if getattr(paths, name).is_file():
            check_artifact(paths, name, data_sha256, config)
