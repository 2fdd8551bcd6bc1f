"""The command line: predict end to end, and one-line errors instead of tracebacks."""

import json
import os
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import napari_retina as nr
from napari_retina.cli import main


@pytest.fixture
def tiny_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = nr.RetinaCNN(nr.ModelConfig(history=6, size=16, channels=(3, 4), kernels=(5, 3), n_cells=2)).eval()
    return model, nr.save_model(model, tmp_path / "tiny.pt")


def test_predict_writes_rates_matching_the_api(tmp_path, tiny_checkpoint, capsys):
    model, path = tiny_checkpoint
    stim = np.random.default_rng(0).standard_normal((30, 20, 20)).astype(np.float32)
    np.save(tmp_path / "s.npy", stim)
    out = tmp_path / "rates.h5"
    code = main(["predict", str(tmp_path / "s.npy"), "--model", str(path), "--out", str(out), "--crop", "2,3", "--quiet"])
    assert code == 0
    with h5py.File(out) as f:
        rates = f["rates"][()]
        assert json.loads(f.attrs["cell_names"]) == ["cell0", "cell1"]
    np.testing.assert_array_equal(rates, nr.predict(model, stim[:, 2:18, 3:19]))
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize("key", [None, "test/stimulus"])
def test_predict_and_attribute_record_the_crop_window_and_the_dataset_read(tmp_path, tiny_checkpoint, key):
    """predict's file kept neither the crop window nor the HDF5 dataset it read, attribute not the dataset, and a
    fixed-steps attribution's tol=None was written as the string "None"."""
    stim = np.random.default_rng(0).standard_normal((12, 20, 20)).astype(np.float32)
    with h5py.File(tmp_path / "rec.h5", "w") as f:
        f["train/stimulus"] = np.zeros((12, 20, 20), np.float32)   # what a wrong --key (or none) would read
        f["test/stimulus"] = stim
    read = key or "train/stimulus"   # the first of stimulus, test/stimulus, train/stimulus in a file without 'stimulus'
    if key is None:
        with h5py.File(tmp_path / "rec.h5", "a") as f:
            del f["test/stimulus"]
            f["train/stimulus"][...] = stim
    common = ["--model", str(tiny_checkpoint[1]), "--crop", "2,3", "--quiet"] + (["--key", key] if key else [])
    assert main(["predict", str(tmp_path / "rec.h5"), "--out", str(tmp_path / "r.h5"), *common]) == 0
    assert main(["attribute", str(tmp_path / "rec.h5"), "--out", str(tmp_path / "a.h5"), "--steps", "2",
                 *common]) == 0
    with h5py.File(tmp_path / "r.h5") as r, h5py.File(tmp_path / "a.h5") as a:
        assert r.attrs["stimulus_key"] == a.attrs["stimulus_key"] == read
        assert r["crop_origin"][()].tolist() == a["attribution/crop_origin"][()].tolist() == [2, 3]
        assert "tol" not in a["attribution"].attrs and a["attribution"].attrs["steps"] == 2
        assert not [k for g in (r, a, a["attribution"]) for k, v in g.attrs.items() if v == "None"]
    np.save(tmp_path / "s.npy", stim)   # a .npy holds one stack: no key to record
    assert main(["predict", str(tmp_path / "s.npy"), "--out", str(tmp_path / "n.h5"), *common[:5]]) == 0
    with h5py.File(tmp_path / "n.h5") as n:
        assert "stimulus_key" not in n.attrs and n["crop_origin"][()].tolist() == [2, 3]


@pytest.mark.parametrize(
    "args, match",
    [
        (["predict", "missing.npy"], "no file"),
        (["predict", "{stim}", "--model", "missing.pt"], "no checkpoint"),
        (["predict", "{stim}", "--model", "{model}"], "20x20 pixels but the model expects 16x16"),
        (["predict", "{stim}", "--model", "{model}", "--device", "tpu"], "device must be"),
    ],
)
def test_errors_are_one_line_with_exit_status_2(tmp_path, tiny_checkpoint, capsys, monkeypatch, args, match):
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "s.npy", np.zeros((10, 20, 20), np.float32))
    args = [a.format(stim=tmp_path / "s.npy", model=tiny_checkpoint[1]) for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("napari-retina predict: error:") and len(err.splitlines()) == 1
    assert match in err



@pytest.mark.parametrize("exc, status", [
    (PermissionError(13, "Permission denied", "noperm.npy"), 2),    # an input or --out this user cannot read
    (NotADirectoryError(20, "Not a directory", "afile/x.npy"), 2),
    (OSError(5, "Input/output error"), 1),                          # the system failed: not the user's input
    (ValueError("first line\nHDF5's second line"), 2),             # a library's message over two lines
])
def test_every_error_is_one_line_and_its_status_says_whose_it_is(monkeypatch, capsys, exc, status):
    """An unreadable path was a PermissionError traceback with exit 1 (run as a non-root user, where root
    ignores chmod 000); any other OSError was a traceback too; a message over lines printed them all."""
    from napari_retina.cli import core

    def fail(args):
        raise exc

    monkeypatch.setattr(core, "_predict", fail)
    assert main(["predict", "s.npy"]) == status
    err = capsys.readouterr().err.strip()
    assert err.startswith("napari-retina predict: error: ") and len(err.splitlines()) == 1
    assert err.endswith(str(exc).splitlines()[0])



@pytest.mark.parametrize("command, out", [("predict", "afile/r.h5"), ("experiment", "afile/sub/folder")])
def test_an_out_inside_a_file_says_it_is_a_file(tmp_path, capsys, command, out):
    """It said "folder 'afile' does not exist", which sends the user looking for a missing folder."""
    (tmp_path / "afile").write_text("not a folder")
    args = {"predict": ["predict", str(tmp_path / "s.npy")], "experiment": ["experiment", "osr"]}[command]
    assert main(args + ["--out", str(tmp_path / out)]) == 2
    assert capsys.readouterr().err.strip() == (f"napari-retina {command}: error: cannot write "
                                               f"{str(tmp_path / out)!r}: {str(tmp_path / 'afile')!r} is a file, "
                                               "not a folder")


def test_help_lists_the_subcommands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "demo" in out and "predict" in out


# --------------------------------------------------------------------------- crop, out, normalize, non-finite


@pytest.fixture
def no_prediction(monkeypatch):
    """Fail the test if the model runs: checks must come first."""
    import importlib

    module = importlib.import_module("napari_retina._predict")  # the module, not nr.predict the function

    def forbidden(*args, **kwargs):
        raise AssertionError("predict ran before the arguments were checked")

    monkeypatch.setattr(module, "predict", forbidden)


@pytest.mark.parametrize("crop", ["centre", "center", "CENTRE"])
def test_crop_centre_is_the_apis_centre(tmp_path, tiny_checkpoint, crop):
    model, path = tiny_checkpoint
    stim = np.random.default_rng(1).standard_normal((12, 20, 22)).astype(np.float32)
    np.save(tmp_path / "s.npy", stim)
    out = tmp_path / "r.npz"
    assert main(["predict", str(tmp_path / "s.npy"), "--model", str(path), "--out", str(out), "--crop", crop,
                 "--quiet"]) == 0
    np.testing.assert_array_equal(np.load(out)["rates"], nr.predict(model, stim, crop="center"))


@pytest.mark.parametrize(
    "args, match",
    [
        (["--crop", "1.5,2"], "crop must be None, 'none', 'center', (y0, x0) integers or the text 'y0,x0', got '1.5,2'"),
        (["--crop", "middle"], "crop must be"),
        (["--out", "rates.txt"], "--out must end in .h5, .hdf5, .npz, got '.txt'"),
        (["--out", "rates"], "--out must end in .h5, .hdf5, .npz, got 'no suffix'"),
        (["--out", "missing/rates.h5"], "cannot write 'missing/rates.h5': folder 'missing' does not exist"),
        (["--out", "taken.h5"], "--out must be a file, but 'taken.h5' is a folder"),
        (["--out", "pipe.h5"], "cannot write 'pipe.h5': it is not a regular file (a device, pipe or socket)"),
    ],
)
def test_arguments_are_checked_before_predicting(tmp_path, tiny_checkpoint, capsys, monkeypatch, no_prediction,
                                                 args, match):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "taken.h5").mkdir()
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "pipe.h5")   # was replaced by a plain file holding the rates (/dev/null too, as root)
    elif "pipe.h5" in args:
        pytest.skip("needs named pipes (POSIX)")
    np.save(tmp_path / "s.npy", np.zeros((10, 20, 20), np.float32))
    assert main(["predict", "s.npy", "--model", str(tiny_checkpoint[1]), "--quiet", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and match in err


def test_a_negative_crop_corner_is_read_as_a_corner_not_an_option(tmp_path, tiny_checkpoint, capsys):
    """argparse read "--crop -5,3" as an option and said only "expected one argument" (a helper's audit): the
    corner is read, and refused for what it is."""
    np.save(tmp_path / "s.npy", np.zeros((12, 20, 20), np.float32))
    assert main(["predict", str(tmp_path / "s.npy"), "--model", str(tiny_checkpoint[1]), "--quiet", "--crop",
                 "-5,3", "--out", str(tmp_path / "r.h5")]) == 2
    assert capsys.readouterr().err.strip() == ("napari-retina predict: error: a 16x16 crop at (y0=-5, x0=3) does not "
                                               "fit inside the 20x20 stimulus")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs POSIX permissions as a non-root user")
def test_unwritable_out_folder_is_refused_before_predicting(tmp_path, tiny_checkpoint, capsys, no_prediction):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    np.save(tmp_path / "s.npy", np.zeros((10, 16, 16), np.float32))
    assert main(["predict", str(tmp_path / "s.npy"), "--model", str(tiny_checkpoint[1]),
                 "--out", str(locked / "r.h5"), "--quiet"]) == 2
    assert "is not writable" in capsys.readouterr().err


def test_unwritable_out_folder_is_refused_as_root_too(tmp_path, tiny_checkpoint, capsys, monkeypatch, no_prediction):
    """The writability check itself (os.access) decides, whoever runs the tests."""
    import napari_retina.cli._paths

    monkeypatch.setattr(napari_retina.cli._paths.os, "access", lambda path, mode: False)
    np.save(tmp_path / "s.npy", np.zeros((10, 16, 16), np.float32))
    assert main(["predict", str(tmp_path / "s.npy"), "--model", str(tiny_checkpoint[1]),
                 "--out", str(tmp_path / "r.h5"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"folder {str(tmp_path)!r} is not writable" in err


@pytest.mark.parametrize("fails", ["mkstemp", "_fsync"])
def test_an_output_that_cannot_be_written_after_the_work_is_one_line_naming_it(tmp_path, tiny_checkpoint, capsys,
                                                                             monkeypatch, fails):
    """'predict --out /proc/x.h5' passed the folder check as root, then failed naming the temporary
    '.x.h5.…partial' file, exit 2 (bad input); a full disk does the same. One line naming --out, exit 1."""
    import errno

    import napari_retina._atomic as atomic

    def refuse(*args, **kwargs):   # what the kernel says in /proc (ENOENT) or on a full disk (ENOSPC)
        code = errno.ENOENT if fails == "mkstemp" else errno.ENOSPC
        name = args[0] if args and isinstance(args[0], str) else str(tmp_path / ".r.h5.0-1.x.partial")
        raise OSError(code, os.strerror(code), name)

    monkeypatch.setattr(atomic.tempfile if fails == "mkstemp" else atomic, fails, refuse)
    np.save(tmp_path / "s.npy", np.zeros((10, 16, 16), np.float32))
    out = tmp_path / "r.h5"
    assert main(["predict", str(tmp_path / "s.npy"), "--model", str(tiny_checkpoint[1]), "--out", str(out),
                 "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    reason = os.strerror(errno.ENOENT if fails == "mkstemp" else errno.ENOSPC)
    assert err == f"napari-retina predict: error: cannot write {str(out)!r}: {reason}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.npy", "tiny.pt"]


@pytest.mark.parametrize(
    "values, match",
    [
        (np.full((10, 16, 16), 1e39), "must fit in float32"),
        (np.full((10, 16, 16), 1e38, np.float32), "rates are NaN or infinite on 5 of 5 frames"),
    ],
)
def test_non_finite_results_exit_2_with_one_line(tmp_path, tiny_checkpoint, capsys, values, match):
    np.save(tmp_path / "s.npy", values)
    out = tmp_path / "r.h5"
    assert main(["predict", str(tmp_path / "s.npy"), "--model", str(tiny_checkpoint[1]), "--out", str(out),
                 "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("napari-retina predict: error:") and match in err[-1]
    assert all("Warning" in line for line in err[:-1])  # at most the one-line units warning before it
    assert not out.exists()


def test_raw_float_stack_warns_in_one_line_and_normalize_fixes_it(tmp_path, tiny_checkpoint, capsys):
    model, path = tiny_checkpoint
    raw = np.random.default_rng(2).integers(0, 256, (12, 16, 16)).astype(np.float32)
    np.save(tmp_path / "s.npy", raw)
    args = ["predict", str(tmp_path / "s.npy"), "--model", str(path), "--quiet"]
    assert main([*args, "--out", str(tmp_path / "a.h5")]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "StimulusUnitsWarning" in err[0] and "--normalize" in err[0]
    assert main([*args, "--out", str(tmp_path / "b.h5"), "--normalize"]) == 0
    assert capsys.readouterr().err.strip() == ""
    with h5py.File(tmp_path / "b.h5") as f:
        rates = f["rates"][()]
        assert f.attrs["normalize"] == "zscore"
    np.testing.assert_array_equal(rates, nr.predict(model, raw, normalize="zscore"))


def test_experiment_out_that_is_a_file_is_refused_before_loading(tmp_path, capsys, monkeypatch):
    import napari_retina.checkpoint

    def forbidden(*args, **kwargs):
        raise AssertionError("the model loaded before --out was checked")

    monkeypatch.setattr(napari_retina.checkpoint, "load_model", forbidden)
    (tmp_path / "taken").write_text("")
    assert main(["experiment", "osr", "--out", str(tmp_path / "taken"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--out must be a folder" in err


def test_experiment_out_named_as_a_file_is_refused_before_loading(tmp_path, capsys, monkeypatch):
    """A helper's audit: ``experiment osr --out results/x.h5`` made the folders results/x.h5/ and wrote into them."""
    import napari_retina.checkpoint

    def forbidden(*args, **kwargs):
        raise AssertionError("the model loaded before --out was checked")

    monkeypatch.setattr(napari_retina.checkpoint, "load_model", forbidden)
    assert main(["experiment", "osr", "--out", str(tmp_path / "results" / "x.h5"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"'{tmp_path / 'results' / 'x.h5'}' reads as a file name (.h5); give a folder, e.g. "
                        f"'{tmp_path / 'results' / 'x'}'")
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("arg, message", [
    (["--explain", "1.5"], "explain must be a fraction in (0, 1], got 1.5"),
    (["--tol", "-1"], "tol must be a number in"),
    (["--steps", "0"], "steps must be in [1, "),
    (["--cell", "9"], "cell (the model has 4 cells) must be in [0, 3], got 9"),
])
def test_experiment_settings_are_refused_before_the_out_folder_is_made_or_any_work(tmp_path, capsys, monkeypatch,
                                                                                    arg, message):
    import napari_retina.experiments

    def forbidden(*args, **kwargs):
        raise AssertionError("the battery started before the settings were checked")

    monkeypatch.setattr(napari_retina.experiments, "battery", forbidden)
    out = tmp_path / "new" / "folder"
    assert main(["experiment", "osr", "--out", str(out), *arg]) == 2  # no --quiet: no bar may be drawn either
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err and "\r" not in err
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize(
    "args, prefix",
    [
        (["synth", "x.h5", "--frames", "-1"], "napari-retina synth: error: frames must be >= "),
        (["train", "missing.h5", "--out", "m.pt"], "napari-retina train: error: no dataset at 'missing.h5'"),
    ],
)
def test_bad_input_draws_no_empty_progress_bar(tmp_path, capsys, monkeypatch, args, prefix):
    """Without --quiet too, an error raised before any work is the only line on stderr (the bar opens lazily)."""
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith(prefix) and "\r" not in err


def test_attribute_writes_the_attribution_with_tol_or_steps(tmp_path, tiny_checkpoint, capsys):
    """``napari-retina attribute``: nr.attribute's default tol without options, fixed steps with --steps."""
    model, path = tiny_checkpoint
    stim = np.random.default_rng(0).standard_normal((12, 16, 16)).astype(np.float32)
    np.save(tmp_path / "s.npy", stim)
    out = tmp_path / "a.h5"
    assert main(["attribute", str(tmp_path / "s.npy"), "--model", str(path), "--out", str(out), "--quiet"]) == 0
    ref = nr.attribute(model, stim)
    with h5py.File(out) as f:
        assert f["attribution"].attrs["tol"] == nr.attribution.DEFAULT_TOL == ref.tol
        np.testing.assert_array_equal(f["attribution/steps_per_frame"][()], ref.steps_per_frame)
        np.testing.assert_array_equal(f["attribution/maps"][()], ref.maps)
    assert "completeness error" in capsys.readouterr().out
    out = tmp_path / "b.npz"
    assert main(["attribute", str(tmp_path / "s.npy"), "--model", str(path), "--out", str(out), "--quiet",
                 "--cell", "0,1", "--steps", "5", "--invariance", "none"]) == 0
    with np.load(out) as z:
        np.testing.assert_array_equal(z["attribution/maps"],
                                      nr.attribute(model, stim, cell=[0, 1], steps=5, invariance="none").maps)
    assert main(["attribute", str(tmp_path / "s.npy"), "--model", str(path), "--tol", "1e-2", "--quiet",
                 "--cell", "all", "--out", str(tmp_path / "c.h5")]) == 0


@pytest.mark.parametrize("args, message", [
    (["--cell", "x"], "napari-retina attribute: error: --cell must be 'all', an index or a comma-separated list "
                      "of indices, got 'x'"),
    (["--tol", "0"], "napari-retina attribute: error: tol must be a number in [1e-06, 1) (a relative error), got 0.0"),
])
def test_attribute_bad_arguments_are_one_line(tmp_path, tiny_checkpoint, capsys, args, message):
    np.save(tmp_path / "s.npy", np.zeros((12, 16, 16), np.float32))
    assert main(["attribute", str(tmp_path / "s.npy"), "--model", str(tiny_checkpoint[1]), "--quiet", *args]) == 2
    assert capsys.readouterr().err.strip() == message


def test_attribute_tol_and_steps_exclude_each_other(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["attribute", "s.npy", "--tol", "1e-3", "--steps", "8"])
    assert exc.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


#: an osr run small enough for the tiny checkpoint (history 6, 16 px) and a few seconds
OSR_ARGS = ["--quiet", "--steps", "2", "--no-truth", "--param", "periods=[3,6]", "--param", "n_flashes=4",
            "--param", "max_frames=30"]


def _strict_json(text: str):
    def refuse(name):
        raise ValueError(f"not strict JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def test_experiment_json_records_which_model_and_versions(tmp_path, tiny_checkpoint, monkeypatch):
    """NAME.json held cells: [0] but not the model: a --model run could not be told from a default run."""
    import napari_retina.checkpoint
    from napari_retina._json import jsonable
    from napari_retina.checkpoint import weights_sha256

    model, path = tiny_checkpoint
    model.provenance = {"trained_by": "the test", "seed": 3}
    path = nr.save_model(model, path)
    assert main(["experiment", "osr", "--model", str(path), "--out", str(tmp_path / "a"), *OSR_ARGS]) == 0
    data = _strict_json((tmp_path / "a" / "osr.json").read_text())
    sha = weights_sha256(model.state_dict())
    assert data["model"] == {"path": str(path), "weights_sha256": sha,
                             "provenance": jsonable(nr.load_model(path).provenance, strict=True)}
    assert data["model"]["provenance"]["trained_by"] == "the test"
    assert {k: data["versions"][k] for k in ("napari_retina", "torch", "numpy")} == \
        {"napari_retina": nr.__version__, "torch": torch.__version__, "numpy": np.__version__}
    # the documented layout (docs/EXPERIMENTS.md); truth_readout and recovery only with the ground truth
    assert set(data) == {"name", "cells", "params", "readout", "reduction", "attribution", "conditions", "model",
                         "versions", "run", "truth_retina"}
    doc = (Path(__file__).resolve().parents[1] / "docs" / "EXPERIMENTS.md").read_text(encoding="utf-8")
    section = doc.split("### What `NAME.json` holds", 1)[1].split("\n#", 1)[0]
    documented = set(re.findall(r"^\| `(\w+)` \|", section, flags=re.M))
    assert documented == set(data) | {"truth_readout", "recovery"}
    # the default model: recorded as such (loaded here as the tiny one, to stay fast)
    real = napari_retina.checkpoint.load_model
    monkeypatch.setattr(napari_retina.checkpoint, "load_model",
                        lambda p=None, **kw: real(path if p is None else p, **kw))
    assert main(["experiment", "osr", "--out", str(tmp_path / "d"), *OSR_ARGS]) == 0
    default = _strict_json((tmp_path / "d" / "osr.json").read_text())
    assert default["model"]["path"] == "default" and default["model"]["weights_sha256"] == sha


def test_experiment_cell_takes_what_attribute_s_takes(tmp_path, tiny_checkpoint, capsys):
    """``experiment --cell`` took one index only, while ``attribute --cell`` and nr.experiments.run take a list
    (rates summed) or 'all'."""
    model, path = tiny_checkpoint
    nr.save_model(model, path)
    assert main(["experiment", "osr", "--model", str(path), "--out", str(tmp_path / "a"), "--cell", "all",
                 *OSR_ARGS]) == 0
    data = _strict_json((tmp_path / "a" / "osr.json").read_text())
    assert data["cells"] == list(range(model.config.n_cells)) and data["run"]["cell"] == "all"
    assert main(["experiment", "osr", "--model", str(path), "--out", str(tmp_path / "b"), "--cell", "0,x",
                 *OSR_ARGS]) == 2
    assert "--cell must be 'all', an index or a comma-separated list of indices, got '0,x'" in capsys.readouterr().err
    from napari_retina.cli.experiments import _cells_text   # battery.md's header says it in words

    assert [_cells_text(c) for c in (0, [0, 2], "all")] == ["cell 0", "cells 0, 2 (rates summed)",
                                                           "all cells (rates summed)"]


def test_experiment_all_records_the_model_and_versions_in_battery_json(tmp_path, tiny_checkpoint, monkeypatch):
    import napari_retina.experiments

    model, path = tiny_checkpoint
    monkeypatch.setattr(napari_retina.experiments, "names", lambda: ["osr"])   # 'all' of one experiment: fast
    assert main(["experiment", "all", "--model", str(path), "--out", str(tmp_path), *OSR_ARGS]) == 0
    bat = _strict_json((tmp_path / "battery.json").read_text())
    osr = _strict_json((tmp_path / "osr.json").read_text())
    assert bat["model"]["path"] == str(path) and len(bat["model"]["weights_sha256"]) == 64
    assert bat["model"] == osr["model"] and bat["versions"] == osr["versions"]
    assert bat["versions"]["napari_retina"] == nr.__version__
    # battery.md says which model, cell and settings, as its table alone did not
    head = (tmp_path / "battery.md").read_text().splitlines()[0]
    assert head.startswith(f"# Battery: cell 0 of {path} (") and bat["model"]["weights_sha256"][:12] in head
    assert "explain 0.9" in head and "napari-retina " + nr.__version__ in head


def test_experiment_truth_flag_compares_a_model_not_trained_on_it(tmp_path, tiny_checkpoint, capsys):
    """``--truth`` asks for the comparison the default now gives only a model of the synthetic retina (the
    Experiments dock's box): an untrained 50-px model is compared when asked, and not by default; a model of
    another field size is refused in one sentence."""
    torch.manual_seed(0)
    path = nr.save_model(nr.RetinaCNN(nr.ModelConfig(n_cells=4)), tmp_path / "untrained.pt")
    args = ["--quiet", "--steps", "2", "--param", "periods=[3,6]", "--param", "n_flashes=4"]
    assert main(["experiment", "osr", "--model", str(path), "--out", str(tmp_path / "a"), *args]) == 0
    assert json.loads((tmp_path / "a" / "osr.json").read_text())["truth_retina"] is None
    assert main(["experiment", "osr", "--model", str(path), "--out", str(tmp_path / "b"), "--truth", *args]) == 0
    data = json.loads((tmp_path / "b" / "osr.json").read_text())
    assert data["truth_retina"]["seed"] == 0 and "truth_readout" in data
    _, tiny = tiny_checkpoint
    capsys.readouterr()
    assert main(["experiment", "osr", "--model", str(tiny), "--out", str(tmp_path / "c"), "--truth", *OSR_ARGS[:3],
                 *OSR_ARGS[4:]]) == 2
    assert "retina sees a 50-pixel field but the model a 16-pixel one" in capsys.readouterr().err


def test_a_stderr_that_cannot_be_written_stops_the_progress_bar_not_the_work(tmp_path, tiny_checkpoint):
    """A reliability audit: with stderr on a full disk (/dev/full) or closed, the progress bar's failed write ended
    the run: exit 1, no results, and no message (it went to the same stderr)."""
    import subprocess
    import sys

    _, path = tiny_checkpoint
    np.save(tmp_path / "s.npy", np.random.default_rng(0).normal(size=(20, 16, 16)).astype(np.float32))
    env = {**os.environ, "PYTHONPATH": str(Path(nr.__file__).resolve().parents[1])}
    for name, stderr in (("full", open("/dev/full", "w")), ("closed", None)):
        out = tmp_path / f"{name}.h5"
        cmd = [sys.executable, "-m", "napari_retina.cli", "predict", str(tmp_path / "s.npy"), "--model", str(path),
               "--out", str(out)]
        if stderr is None:   # the shell's 2>&-
            run = subprocess.run(cmd, stdout=subprocess.PIPE, env=env, close_fds=True,
                                 preexec_fn=lambda: os.close(2))
        else:
            with stderr:
                run = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=stderr, env=env)
        assert run.returncode == 0 and out.is_file(), name
        assert run.stdout.decode().startswith(f"wrote {out}: rates 20 frames")
    # a stdout that cannot be written: the results are written, and the one line says it was stdout that failed
    out = tmp_path / "stdout.h5"
    with open("/dev/full", "w") as full:
        run = subprocess.run([*cmd[:-1], str(out)], stdout=full, stderr=subprocess.PIPE, env=env)
    assert run.returncode == 1 and out.is_file()
    assert run.stderr.decode().strip().endswith("error: standard output cannot be written (No space left on "
                                                "device); the files the command writes were written before its "
                                                "summary"), run.stderr
