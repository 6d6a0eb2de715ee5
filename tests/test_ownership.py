"""Never lose a user's work: run folders are catdog's own, one command writes into one at a time,
mistakes are refused before any work, and memory is bounded. Each case: exit status 2, one stderr line
without a traceback, and for data-loss cases a byte-for-byte check that nothing was changed.
Run: pytest tests/test_ownership.py"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file, save_file

from catdog.cli import main
from catdog.data import create_cat_dog_dataset
from catdog.run_dir import locked


def snapshot(folder: Path) -> dict:
    """Every file under folder -> its bytes."""
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def refused(capsys, argv, message: str) -> None:
    """main(argv) exits 2 with one stderr line containing message."""
    try:
        status = main(argv)
    except SystemExit as e:
        status = e.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 2 and len(lines) == 1 and message in lines[0], err


@pytest.fixture
def trained(tiny_run, tmp_path):
    """A private copy of the tiny run (tests may try to damage it)."""
    copy = tmp_path / "trained"
    shutil.copytree(tiny_run.root, copy)
    (copy / ".lock").unlink(missing_ok=True)
    return copy


def test_export_never_overwrites_its_source_or_another_run(trained, tmp_path, capsys):
    before = snapshot(trained)
    refused(capsys, ["export", "--run-dir", str(trained), "--out", str(trained)], "the run folder itself")
    other = tmp_path / "other"
    shutil.copytree(trained, other)
    (other / "notes.txt").write_text("mine")
    other_before = snapshot(other)
    refused(capsys, ["export", "--run-dir", str(trained), "--out", str(other)], "not an earlier catdog export")
    assert snapshot(trained) == before and snapshot(other) == other_before


def test_export_replaces_an_earlier_export_only_with_force_and_keeps_foreign_files(trained, tmp_path, capsys):
    out = tmp_path / "shipped"
    assert main(["export", "--run-dir", str(trained), "--out", str(out)]) == 0
    (out / "README.md").write_text("the user's notes")
    (out / "eval.json").write_text("{}")                          # measured on the old model
    before = snapshot(out)
    refused(capsys, ["export", "--run-dir", str(trained), "--out", str(out)], "add --force")
    assert snapshot(out) == before
    assert main(["export", "--run-dir", str(trained), "--out", str(out), "--force"]) == 0
    assert (out / "README.md").read_text() == "the user's notes"
    assert not (out / "eval.json").exists() or (trained / "eval.json").exists()


def test_run_refuses_a_folder_that_is_not_a_catdog_run(tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "cat.jpg").write_bytes(b"precious")
    (folder / "config.json").write_text('{"camera": "nikon"}')
    before = snapshot(folder)
    for extra in ([], ["--force"]):
        refused(capsys, ["run", "--preset", "tiny", "--run-dir", str(folder), *extra], "not a catdog run folder")
    assert snapshot(folder) == before


def test_force_clears_only_catdogs_files_and_says_which(trained, capsys):
    (trained / "notes.txt").write_text("mine")
    (trained / "eval.json").write_text("{}")
    assert main(["train-ae", "--preset", "tiny", "--run-dir", str(trained), "--force"]) == 0
    said = capsys.readouterr()
    assert "--force removed:" in said.out + said.err and "eval.json" in said.out + said.err
    assert (trained / "notes.txt").read_text() == "mine"
    assert not (trained / "eval.json").exists() and not (trained / "diffusion.safetensors").exists()


def test_one_command_per_run_folder_and_a_dead_holder_does_not_block(trained, capsys):
    with locked(trained, "run"):
        refused(capsys, ["evaluate", "--run-dir", str(trained), "--skip-fid", "--n", "4"], "is in use by catdog run")
        refused(capsys, ["run", "--preset", "tiny", "--run-dir", str(trained)], "is in use by catdog run")
    (trained / ".lock").write_text("catdog run (pid 999999)")       # left by a killed process: no flock held
    assert main(["train-ae", "--preset", "tiny", "--run-dir", str(trained)]) == 0


@pytest.mark.parametrize("flags,message", [
    (["--out", "{tmp}"], "is a folder"),
    (["--out", "{tmp}/grid.jpg"], "must end in .png"),
    (["--npz", "{tmp}/images"], "must end in .npz"),
    (["--npz", "{tmp}/a_file.txt/images.npz"], "cannot create its folder"),
    (["--out", "{tmp}/x.png", "--n", "1000000000"], "at most 100,000"),
    (["--out", "{tmp}/x.png", "--n", "5000"], "at most 4,096"),
    (["--npz", "{tmp}/x.npz", "--seed", str(2**70)], "below 2^62"),
    (["--npz", "{tmp}/x.npz", "--guidance", "1e30"], "non-finite"),
])
def test_sample_checks_its_outputs_and_numbers_before_working(tiny_run, tmp_path, capsys, flags, message):
    (tmp_path / "a_file.txt").write_text("x")
    flags = [f.format(tmp=tmp_path) for f in flags]
    refused(capsys, ["sample", "--run-dir", str(tiny_run.root), "--class", "dog", "--steps", "5", *flags], message)
    assert not list(tmp_path.glob("x.*"))


@pytest.mark.parametrize("flag,value,message", [
    ("--ae-lr", "0", "--ae-lr"), ("--grad-clip", "-1", "--grad-clip"), ("--latent-dim", "100000", "too large"),
    ("--diffusion-batch-size", str(2**40), "too large"), ("--seed", str(2**64), "below 2^62"),
    ("--ae-warmup-steps", "-5", "--ae-warmup-steps"), ("--refiner-crop-px", "13", "--refiner-crop-px"),
    ("--decoder-disc-width", "6", "--decoder-disc-width"), ("--decoder-lr", "-1", "--decoder-lr"),
])
def test_training_numbers_are_checked_before_training(tmp_path, capsys, flag, value, message):
    refused(capsys, ["run", "--preset", "tiny", "--run-dir", str(tmp_path / "r"), flag, value], message)
    assert not (tmp_path / "r" / "autoencoder.safetensors").exists()


def _data(tmp_path, n_train_per_class, n_test_per_class, classes=(0, 1)):
    images, labels = create_cat_dog_dataset("train")
    test_images, test_labels = create_cat_dog_dataset("test")
    pick = lambda lab, n: np.concatenate([np.flatnonzero(lab == c)[:n] for c in classes])
    a, b = pick(labels, n_train_per_class), pick(test_labels, n_test_per_class)
    path = tmp_path / "small.npz"
    np.savez(path, train_images=images[a], train_labels=labels[a], test_images=test_images[b],
             test_labels=test_labels[b])
    return path


def test_one_class_only_is_refused_up_front(tmp_path, capsys):
    data = _data(tmp_path, 20, 5, classes=(0,))
    refused(capsys, ["run", "--preset", "tiny", "--run-dir", str(tmp_path / "r"), "--data", str(data)],
            "at least 2 of each class")
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_a_handful_of_images_trains_every_stage_and_draws_every_figure(tmp_path):
    data = _data(tmp_path, 3, 2)
    assert main(["run", "--preset", "tiny", "--run-dir", str(tmp_path / "r"), "--data", str(data)]) == 0
    assert (tmp_path / "r" / "figures" / "samples.png").is_file()
    assert (tmp_path / "r" / "refiner.safetensors").is_file()


def test_weight_metadata_of_a_wrong_type_is_refused_naming_the_file(trained, capsys):
    path = trained / "diffusion.safetensors"
    tensors = load_file(str(path))
    for config in ('[1, 2]', json.dumps({"ae": {"latent_dim": "sixteen"}}), json.dumps({"ae": 3})):
        save_file(tensors, str(path), metadata={"format_version": "1", "config": config})
        refused(capsys, ["sample", "--run-dir", str(trained), "--class", "cat", "--npz", str(trained / "x.npz")],
                "diffusion.safetensors")


def test_corrupt_samples_files_get_clean_errors(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 garbage")
    refused(capsys, ["evaluate", "--samples", str(bad), "--skip-fid"], "bad.npz")
    np.savez(bad, images=np.array([object()], dtype=object), labels=np.array([0]))
    try:
        main(["evaluate", "--samples", str(bad), "--skip-fid"])
    finally:
        err = capsys.readouterr().err
    assert "refused" in err and "allow_pickle" not in err
    refused(capsys, ["evaluate", "--samples", str(tmp_path / "missing.npz"), "--skip-fid"], "no such file")
