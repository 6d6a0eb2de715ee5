"""Every artifact knows what it was made from, and every command checks that chain the same way
(lineage.py): a file from another run, other data or other settings is refused with one line naming
it, and a refused command leaves every byte of the folder as it was."""

import os
import shutil
import stat

import numpy as np
import pytest

from catdog.checkpoint import load_state, read_metadata, save_state
from catdog.cli import main
from catdog.config import PRESETS, config_to_dict, override
from catdog.errors import UserError
from catdog.lineage import data_digest
from catdog.pipeline import run_all

TINY = PRESETS["tiny"]


def snapshot(folder):
    """Every file under folder -> its bytes (the oracle for 'changed nothing')."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_line_error(capsys, argv) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    return err


@pytest.fixture(scope="module")
def other_run(small_run):
    """A second tiny run (conftest: another seed, other data): the source of foreign files."""
    return small_run


@pytest.fixture
def copy_of(tmp_path):
    def copy(paths, name="copy"):
        shutil.copytree(paths.root, tmp_path / name)
        return tmp_path / name
    return copy


@pytest.mark.parametrize("name", ["diffusion", "refiner", "decoder"])
def test_a_file_copied_from_another_run_is_refused_by_every_reader(tiny_run, other_run, copy_of, tmp_path,
                                                                   capsys, name):
    folder = copy_of(tiny_run)
    shutil.copy(getattr(other_run, name), folder / f"{name}.safetensors")
    before = snapshot(folder)
    png = ["--out", str(tmp_path / "x.png")]
    for argv in (["sample", "--run-dir", str(folder), "--class", "cat", "--n", "2", "--steps", "3", *png],
                 ["visualize", "--run-dir", str(folder)],
                 ["evaluate", "--run-dir", str(folder), "--n", "4", "--skip-fid"],
                 ["export", "--run-dir", str(folder), "--out", str(tmp_path / "export")],
                 ["run", "--preset", "tiny", "--run-dir", str(folder)]):
        err = one_line_error(capsys, argv)
        assert f"{name}.safetensors" in err and "--retrain" in err and "--force" not in err, (argv[0], err)
    with pytest.raises(UserError, match=f"{name}.safetensors"):
        from catdog.run_dir import load_run
        load_run(folder)
    assert snapshot(folder) == before
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "export").exists()


def test_a_rerun_on_an_export_changes_none_of_its_weights(tiny_run, tmp_path, capsys):
    out = tmp_path / "export"
    assert main(["export", "--run-dir", str(tiny_run.root), "--out", str(out)]) == 0
    assert read_metadata(out / "autoencoder.safetensors")["exported_from"] == tiny_run.root.name   # no path
    weights = {n: (out / n).read_bytes() for n in ("autoencoder.safetensors", "diffusion.safetensors",
                                                   "refiner.safetensors")}
    run_all(TINY, out, figures=False)
    assert {n: (out / n).read_bytes() for n in weights} == weights
    assert not (out / "decoder.safetensors").exists()
    err = one_line_error(capsys, ["run", "--preset", "tiny", "--run-dir", str(out), "--retrain", "decoder"])
    assert "merged" in err
    before = snapshot(out)
    err = one_line_error(capsys, ["run", "--preset", "tiny", "--run-dir", str(out), "--ae-train-steps", "31"])
    assert "is a catdog export, complete for sampling" in err and "ae_train_steps" in err
    assert snapshot(out) == before


def test_the_latent_cache_and_stages_are_tied_to_the_data(tiny_run, small_data, copy_of, tmp_path, capsys):
    folder = copy_of(tiny_run)
    before = snapshot(folder)
    err = one_line_error(capsys, ["run", "--preset", "tiny", "--run-dir", str(folder), "--data", str(small_data)])
    assert "autoencoder.safetensors was trained on other data" in err
    err = one_line_error(capsys, ["visualize", "--run-dir", str(folder), "--data", str(small_data)])
    assert "other data" in err
    # the same images shuffled are other data too: latent i would no longer be image i
    shuffled = tmp_path / "shuffled.npz"
    arrays = dict(np.load(small_data))
    order = np.random.default_rng(0).permutation(len(arrays["train_images"]))
    np.savez(shuffled, **{**arrays, "train_images": arrays["train_images"][order],
                          "train_labels": arrays["train_labels"][order]})
    assert data_digest(shuffled) != data_digest(small_data)
    assert "other data" in one_line_error(capsys, ["run", "--preset", "tiny", "--run-dir", str(folder),
                                                   "--data", str(shuffled)])
    assert snapshot(folder) == before
    assert read_metadata(folder / "latents.safetensors")["data_sha256"] == data_digest(None)


@pytest.mark.slow
def test_a_changed_stage_flag_is_refused_before_any_write_and_retrain_rebuilds_only_that_stage(
        tiny_run, copy_of, capsys):
    folder = copy_of(tiny_run)
    before = snapshot(folder)
    for flags, field in ((["--refiner-train-steps", "0"], "refiner_train_steps"), (["--seed", "3"], "seed"),
                         (["--grad-clip", "0.5"], "grad_clip"), (["--bf16"], "bf16")):
        err = one_line_error(capsys, ["run", "--preset", "tiny", "--run-dir", str(folder), *flags])
        assert f"with {field}=" in err and "--retrain" in err, err
    assert snapshot(folder) == before                        # config.json included
    # --retrain refiner with 0 steps: the refiner goes, config.json says so, every other stage stays
    assert main(["run", "--preset", "tiny", "--run-dir", str(folder), "--retrain", "refiner",
                 "--refiner-train-steps", "0"]) == 0
    after = snapshot(folder)
    assert "refiner.safetensors" not in after and "eval.json" not in after and '"refiner_train_steps": 0' in after["config.json"].decode()
    for name in ("autoencoder.safetensors", "diffusion.safetensors", "decoder.safetensors", "latents.safetensors"):
        assert after[name] == before[name], name
    # retraining the diffusion stage keeps the decoder, which was not made from it
    run_all(override(TINY, {"refiner_train_steps": 0}), folder, figures=False, retrain=("diffusion",))
    assert snapshot(folder)["decoder.safetensors"] == before["decoder.safetensors"]


def test_a_resume_with_other_training_flags_is_refused_before_any_write(tiny_run, copy_of, capsys):
    folder = copy_of(tiny_run)
    (folder / "refiner.safetensors").unlink()
    save_state(folder / "refiner_state.pt", {"config": config_to_dict(TINY), "step": 1})
    before = snapshot(folder)
    err = one_line_error(capsys, ["run", "--preset", "tiny", "--run-dir", str(folder), "--seed", "5"])
    assert "was trained with seed=0" in err and "--retrain" in err
    assert snapshot(folder) == before
    with pytest.raises(UserError, match="grad_clip"):
        load_state(folder / "refiner_state.pt", config_to_dict(override(TINY, {"grad_clip": 2.0})), ("ae",))
    load_state(folder / "refiner_state.pt", config_to_dict(override(TINY, {"log_every_steps": 7})), ("ae",))


def test_files_a_user_gives_or_gets(tiny_run, tmp_path, capsys):
    target = tmp_path / "data.npz"
    target.write_bytes(b"precious")
    err = one_line_error(capsys, ["sample", "--run-dir", str(tiny_run.root), "--class", "cat", "--n", "2",
                                  "--npz", str(target)])
    assert "exists; add --force" in err and target.read_bytes() == b"precious"
    assert main(["sample", "--run-dir", str(tiny_run.root), "--class", "cat", "--n", "2", "--steps", "2",
                 "--npz", str(target), "--force"]) == 0
    npy = tmp_path / "images.npy"
    np.save(npy, np.zeros((4, 32, 32, 3), np.uint8))
    assert ".npy" in one_line_error(capsys, ["evaluate", "--samples", str(npy), "--skip-fid"])
    assert ".npy" in one_line_error(capsys, ["run", "--preset", "tiny", "--run-dir", str(tmp_path / "r"),
                                             "--data", str(npy)])
    assert "at least 2 images of each class" in one_line_error(capsys, ["evaluate", "--run-dir",
                                                                        str(tiny_run.root), "--n", "1"])
    err = one_line_error(capsys, ["run", "--preset", "tiny", "--run-dir", str(tmp_path / "w"),
                                  "--refiner-widths", "16,26"])
    assert "GroupNorm" in err and not (tmp_path / "w").exists()
    umask = os.umask(0)
    os.umask(umask)
    for path in tiny_run.root.glob("*.safetensors"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path


@pytest.mark.parametrize("text", ['{"fid": 3', "[1, 2]", ""])
def test_a_broken_eval_json_is_ignored_with_a_warning(tiny_run, copy_of, capsys, text):
    from catdog.demo import Demo
    folder = copy_of(tiny_run)
    (folder / "eval.json").write_text(text)
    demo = Demo(folder)
    assert "measured" not in demo.info() and "eval.json" in capsys.readouterr().err
