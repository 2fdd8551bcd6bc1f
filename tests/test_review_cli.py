"""Command-line bad input found in review: output paths that are folders, checks that must come before
the work, and option values the core passed through unchecked."""

import json
import os

import numpy as np
import pytest

import napari_retina as nr
from napari_retina.cli import main


def _one_line(err: str, command: str) -> str:
    err = err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"napari-retina {command}: error:"), err
    return err


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A small synthetic dataset in the lab layout (100 training frames, 50 test frames x 2)."""
    path = tmp_path_factory.mktemp("data") / "d.h5"
    return nr.synthetic.make_dataset(path, frames=100, test_frames=50, repeats=2, kind="binary")


# --------------------------------------------------------------------------- an output path that is a folder


def test_atomic_write_refuses_a_folder_in_one_sentence(tmp_path):
    """Every writer goes through atomic_write: a folder at the path is refused (IsADirectoryError) before the
    work, not by the rename after it, and no temporary is left beside it."""
    from napari_retina._atomic import atomic_write_text

    (tmp_path / "taken.json").mkdir()
    with pytest.raises(IsADirectoryError, match="is a folder"):
        atomic_write_text(tmp_path / "taken.json", "{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.json"]


def test_evaluate_out_that_is_a_folder_is_one_line(tmp_path, dataset, capsys):
    (tmp_path / "scores.h5").mkdir()
    assert main(["evaluate", str(dataset), "--out", str(tmp_path / "scores.h5")]) == 2
    assert "is a folder" in _one_line(capsys.readouterr().err, "evaluate")


# --------------------------------------------------------------------------- synth: --out checked before the work


@pytest.fixture
def no_dataset(monkeypatch):
    import napari_retina.synthetic

    def forbidden(*args, **kwargs):
        raise AssertionError("the dataset was made before --out was checked")

    monkeypatch.setattr(napari_retina.synthetic, "make_dataset", forbidden)


@pytest.mark.parametrize(
    "out, message",
    [
        ("taken.h5", "error: out must be a file, but 'taken.h5' is a folder"),   # the positional out: no --out
        ("missing/d.h5", "cannot write 'missing/d.h5': folder 'missing' does not exist"),
        ("d.txt", "error: out must end in .h5, .hdf5, got '.txt'"),
    ],
)
def test_synth_out_is_checked_before_the_work(tmp_path, monkeypatch, capsys, no_dataset, out, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "taken.h5").mkdir()
    assert main(["synth", out, "--quiet"]) == 2
    assert message in _one_line(capsys.readouterr().err, "synth")
    assert not (tmp_path / "d.txt").exists()


# --------------------------------------------------------------------------- train: --out and --threads


@pytest.fixture
def no_training(monkeypatch):
    import napari_retina.training

    def forbidden(*args, **kwargs):
        raise AssertionError("training ran before its arguments were checked")

    monkeypatch.setattr(napari_retina.training, "_fit", forbidden)


def test_train_out_that_is_a_folder_is_refused_before_training(tmp_path, dataset, capsys, no_training):
    (tmp_path / "m.pt").mkdir()
    assert main(["train", str(dataset), "--out", str(tmp_path / "m.pt"), "--tiny", "--quiet"]) == 2
    assert "is a folder" in _one_line(capsys.readouterr().err, "train")


@pytest.mark.parametrize("threads", ["-1", "-8"])
def test_train_negative_threads_is_one_line(tmp_path, dataset, capsys, no_training, threads):
    assert main(["train", str(dataset), "--out", str(tmp_path / "m.pt"), "--tiny", "--quiet",
                 "--threads", threads]) == 2
    assert "threads" in _one_line(capsys.readouterr().err, "train")


# --------------------------------------------------------------------------- synth: the mixture's noise settings


@pytest.mark.parametrize("kw", [{"contrast": float("nan")}, {"contrast": -1.0}, {"grey": 2.0},
                                {"grey": float("nan")}])
def test_training_mix_checks_its_noise_settings_however_short(kw):
    """The noise blocks come second: a mix of one naturalistic block never reached white_noise's checks."""
    with pytest.raises(ValueError, match="contrast|grey"):
        nr.synthetic.training_mix(100, **kw)


def test_synth_nan_contrast_is_refused(tmp_path, capsys):
    assert main(["synth", str(tmp_path / "d.h5"), "--frames", "100", "--test-frames", "50", "--repeats", "2",
                 "--contrast", "nan", "--quiet"]) == 2
    assert "contrast" in _one_line(capsys.readouterr().err, "synth")
    assert not os.path.exists(tmp_path / "d.h5")


@pytest.mark.parametrize("kind, blocks", [("mix-switching", "MIX_SWITCHING"), ("mix-steps", "MIX_STEPS"),
                                         ("mix-field", "MIX_FIELD"), ("mix-quiet", "MIX_QUIET"),
                                         ("mix-sparse", "MIX_SPARSE")])
def test_synth_kind_writes_that_mix(tmp_path, kind, blocks):
    out = tmp_path / "sw.h5"
    assert main(["synth", str(out), "--frames", "600", "--test-frames", "50", "--repeats", "1",
                 "--kind", kind, "--quiet"]) == 0
    ds = nr.io.read_dataset(out)
    assert ds.attrs["kind"] == kind
    np.testing.assert_array_equal(ds.train.stimulus,
                                  nr.synthetic.training_mix(600, 0, blocks=getattr(nr.synthetic, blocks)))


@pytest.mark.parametrize("version", [4, 5, 6])
def test_synth_records_the_retina_version_it_is_asked_for(tmp_path, capsys, version):
    """--retina-version 4 (5, 6) records that truth (version 3 with a bank of tuned ON pathways; that bank searched
    again for an OSR on a line; again for an OSR that rises over the train's level): its description, and its rates on the test stimulus, no other version's."""
    import h5py

    out = tmp_path / f"v{version}.h5"
    assert main(["synth", str(out), "--frames", "60", "--test-frames", "50", "--repeats", "2", "--kind", "binary",
                 "--retina-version", str(version), "--quiet"]) == 0
    ds = nr.io.read_dataset(out)
    with h5py.File(out, "r") as f:
        assert json.loads(f.attrs["retina"])["version"] == version
        true_rates = f["test/true_rates"][()].T
    np.testing.assert_allclose(true_rates, nr.synthetic.Retina(seed=0, version=version).respond(ds.test.stimulus),
                               rtol=1e-5, atol=1e-6)
    for other in {2, 3, 4, 5, 6} - {version}:
        assert not np.allclose(true_rates, nr.synthetic.Retina(seed=0, version=other).respond(ds.test.stimulus),
                               atol=1e-3)
    with pytest.raises(SystemExit) as exit_:                 # argparse's choices: a version it does not build
        main(["synth", str(tmp_path / "x.h5"), "--retina-version", "7", "--quiet"])
    assert exit_.value.code == 2 and "--retina-version: invalid choice: 7" in capsys.readouterr().err


# --------------------------------------------------------------------------- evaluate: --out checked before the work


@pytest.mark.parametrize(
    "out, message",
    [
        ("missing/scores.h5", "cannot write 'missing/scores.h5': folder 'missing' does not exist"),
        ("scores.txt", "--out must end in .h5, .hdf5, .npz, got '.txt'"),
    ],
)
def test_evaluate_out_is_checked_before_the_work(tmp_path, dataset, monkeypatch, capsys, out, message):
    import napari_retina.checkpoint
    import napari_retina.training

    def forbidden(*args, **kwargs):
        raise AssertionError("the model was loaded or scored before --out was checked")

    monkeypatch.setattr(napari_retina.checkpoint, "load_model", forbidden)
    monkeypatch.setattr(napari_retina.training, "evaluate", forbidden)
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", str(dataset), "--out", out]) == 2
    assert message in _one_line(capsys.readouterr().err, "evaluate")


# --------------------------------------------------------------------------- a plain pickle as --model


class _Runs:
    """Unpickling this would create a file: loading a model must never do it."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("payload", ["plain", "code"])
def test_a_plain_pickle_as_model_is_one_line_and_runs_nothing(tmp_path, capsys, payload):
    """A pickle that is not a torch file: torch warns about its protocol before refusing it; the refusal
    alone is the user's one line, and nothing in the file runs."""
    import pickle

    ran = tmp_path / "ran"
    with open(tmp_path / "model.pkl", "wb") as f:
        pickle.dump({"weights": [1.0]} if payload == "plain" else _Runs(ran), f, protocol=4)
    (tmp_path / "s.npy").write_bytes(b"")  # never read: the model is loaded first
    assert main(["predict", str(tmp_path / "s.npy"), "--model", str(tmp_path / "model.pkl"),
                 "--out", str(tmp_path / "r.h5"), "--quiet"]) == 2
    assert "model.pkl" in _one_line(capsys.readouterr().err, "predict")
    assert not ran.exists()


# --------------------------------------------------------------------------- a huge value that the memory cannot hold


def test_running_out_of_memory_is_one_line(tmp_path, capsys, monkeypatch):
    """'experiment osr --param gap=100000000' asks numpy for 931 GiB: one line, not a MemoryError traceback.
    (The battery stands in with numpy's error, as the real allocation may succeed on an overcommitting kernel
    and bring in the OOM killer instead; the --param check before the battery refuses this size first, from
    the whole movie's size against the machine's memory, before allocating: one line naming the 7 trains' 700
    million frames and the 1.96e+04 GiB their copies take, where numpy's one line names 931 GiB.)"""
    import napari_retina.experiments

    def huge(*args, **kwargs):  # numpy's _ArrayMemoryError is a MemoryError with this message
        raise MemoryError("Unable to allocate 931. GiB for an array with shape (100000085, 50, 50) and data type "
                          "float32")

    monkeypatch.setattr(napari_retina.experiments, "battery", huge)
    assert main(["experiment", "osr", "--param", "gap=100000000", "--steps", "2", "--no-truth", "--quiet",
                 "--out", str(tmp_path / "out")]) == 2
    err = _one_line(capsys.readouterr().err, "experiment")
    assert "memory" in err and ("931. GiB" in err or "1.96e+04 GiB" in err)


# --------------------------------------------------------------------------- a stimulus value beyond float32


def test_flash_intensity_beyond_float32_names_the_intensity():
    """Stimuli are float32: 1e39 is finite as a Python float but overflowed to inf in the stack, and the
    error then blamed the stimulus's 'NaN or infinite values' after a RuntimeWarning."""
    with pytest.raises(ValueError, match="intensity"):
        nr.stimuli.flash(intensity=1e39)


def test_experiment_param_beyond_float32_is_one_line_about_it(tmp_path, capsys):
    assert main(["experiment", "osr", "--param", "intensity=1e39", "--steps", "2", "--no-truth", "--quiet",
                 "--out", str(tmp_path / "out")]) == 2
    assert "intensity" in _one_line(capsys.readouterr().err, "experiment")


def test_an_experiment_param_given_twice_is_refused_not_the_last_one_kept(tmp_path, capsys):
    """'--param periods=[5] --param periods=[7]' ran periods [7] and recorded it, silently."""
    assert main(["experiment", "osr", "--param", "periods=[5,9]", "--param", " periods=[7,9]", "--steps", "2",
                 "--no-truth", "--quiet", "--out", str(tmp_path / "out")]) == 2
    assert _one_line(capsys.readouterr().err, "experiment").endswith(
        "error: --param periods is given twice; give each parameter once")
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- --out that is the input file


@pytest.mark.parametrize("command", ["predict", "attribute", "evaluate"])
def test_out_that_is_the_input_is_refused_and_the_input_kept(tmp_path, dataset, capsys, monkeypatch, command):
    """'predict rec.h5 --out rec.h5' replaced the recording with its rates (and evaluate the dataset with
    its scores), atomically and silently."""
    import shutil

    monkeypatch.chdir(tmp_path)
    shutil.copy(dataset, "rec.h5")
    before = (tmp_path / "rec.h5").read_bytes()
    args = [command, "rec.h5", "--out", "./rec.h5"] + ([] if command == "evaluate" else ["--key", "test/stimulus",
                                                                                          "--quiet"])
    if command == "attribute":
        args += ["--steps", "1"]
    assert main(args) == 2
    assert "rec.h5" in _one_line(capsys.readouterr().err, command)
    assert (tmp_path / "rec.h5").read_bytes() == before


# --------------------------------------------------------------------------- demo without a display


@pytest.mark.parametrize("headless", [True, False])
def test_demo_without_a_display_is_one_line(tmp_path, capsys, monkeypatch, headless):
    """On Linux without $DISPLAY (a server, ssh), Qt aborted the process (SIGABRT, exit 134) after a page of
    plugin warnings, --headless included; say what to do instead."""
    import sys

    import napari_retina._napari.demo as demo

    def forbidden(*args, **kwargs):
        raise AssertionError("Qt was started without a display")

    monkeypatch.setattr(demo, "run_demo", forbidden)
    monkeypatch.setattr(sys, "platform", "linux")
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(name, raising=False)
    assert main(["demo", "--out", str(tmp_path / "demo")] + (["--headless"] if headless else [])) == 2
    assert "xvfb-run" in _one_line(capsys.readouterr().err, "demo")



def test_a_headless_demo_checks_its_default_folder_before_any_work(tmp_path, capsys, monkeypatch):
    """Without --out a headless demo writes ./napari-retina-demo: a file of that name was found only after the
    whole demo ran (a FileExistsError traceback after ~7 s)."""
    import napari_retina._napari.demo as demo

    def forbidden(*args, **kwargs):
        raise AssertionError("the demo ran before its folder was checked")

    monkeypatch.setattr(demo, "run_demo", forbidden)
    monkeypatch.chdir(tmp_path)
    (tmp_path / demo.DEFAULT_OUT_DIR).write_text("not a folder")
    assert main(["demo", "--headless"]) == 2
    assert "--out must be a folder, but 'napari-retina-demo' is a file" in _one_line(capsys.readouterr().err, "demo")


def test_train_out_that_is_the_dataset_is_refused_before_training(tmp_path, dataset, capsys, no_training):
    """'train d.h5 --out d.h5' overwrote the dataset with the first checkpoint while training on it."""
    import shutil

    shutil.copy(dataset, tmp_path / "d.h5")
    before = (tmp_path / "d.h5").read_bytes()
    assert main(["train", str(tmp_path / "d.h5"), "--out", str(tmp_path / "d.h5"), "--tiny", "--quiet"]) == 2
    assert "d.h5" in _one_line(capsys.readouterr().err, "train")
    assert (tmp_path / "d.h5").read_bytes() == before


def _strict_json(text: str):
    """json.loads that refuses NaN and Infinity, which Python writes but JSON does not have."""
    import json

    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def test_evaluate_prints_strict_json_when_a_score_is_undefined(tmp_path, dataset, monkeypatch, capsys):
    """An r that is undefined (a constant recorded cell) was printed as NaN, which JSON readers (jq, JavaScript,
    strict parsers) refuse; it is null now, as in the experiments' JSON."""
    import napari_retina.training

    scores = {"r": [0.5, float("nan")], "r_mean": float("nan"), "ratio": float("inf"), "cell_names": ["a", "b"]}
    monkeypatch.setattr(napari_retina.training, "evaluate", lambda *a, **k: dict(scores))
    assert main(["evaluate", str(dataset)]) == 0
    out = _strict_json(capsys.readouterr().out)
    assert out == {"r": [0.5, None], "r_mean": None, "ratio": "inf", "cell_names": ["a", "b"]}


# --------------------------------------------------------------------------- train --out: a checkpoint's suffix


@pytest.mark.parametrize("name, suffix", [("tiny.npy", "'.npy'"), ("tiny", "'no suffix'")])
def test_train_out_without_the_checkpoint_suffix_is_refused_before_training(tmp_path, dataset, capsys, no_training,
                                                                            name, suffix):
    """'train --out out/tiny.npy' wrote a checkpoint named like a stimulus stack."""
    assert main(["train", str(dataset), "--out", str(tmp_path / name), "--tiny", "--quiet"]) == 2
    err = _one_line(capsys.readouterr().err, "train")
    assert f"--out must end in .pt, got {suffix}" in err
    assert not (tmp_path / name).exists()


def test_train_out_in_an_unwritable_folder_is_refused_before_training(tmp_path, dataset, capsys, monkeypatch,
                                                                       no_training):
    """It trained first, then died on a PermissionError traceback (exit 1). The writability check itself
    (os.access) decides, whoever runs the tests (root writes into a 0555 folder)."""
    import napari_retina.cli._paths

    monkeypatch.setattr(napari_retina.cli._paths.os, "access", lambda path, mode: False)
    assert main(["train", str(dataset), "--out", str(tmp_path / "m.pt"), "--tiny", "--quiet"]) == 2
    assert f"folder {str(tmp_path)!r} is not writable" in _one_line(capsys.readouterr().err, "train")


# --------------------------------------------------------------------------- evaluate needs only the test split


def test_evaluate_scores_a_file_that_holds_only_the_test_split(tmp_path, dataset, capsys):
    """A file with only test/... was refused: "missing the dataset 'train/stimulus'", a split evaluate never uses."""
    import json
    import shutil

    import h5py
    import torch

    shutil.copy(dataset, tmp_path / "test-only.h5")
    with h5py.File(tmp_path / "test-only.h5", "a") as f:
        del f["train"]
        size, n_cells = f["test/stimulus"].shape[1], f["test/response/firing_rate_10ms"].shape[0]
    torch.manual_seed(0)
    model = nr.RetinaCNN(nr.ModelConfig(history=10, size=size, channels=(2, 2), kernels=(5, 3), n_cells=n_cells)).eval()
    path = nr.save_model(model, tmp_path / "m.pt")
    assert main(["evaluate", str(tmp_path / "test-only.h5"), "--model", str(path)]) == 0
    scores = json.loads(capsys.readouterr().out)
    full = nr.evaluate(nr.load_model(path), dataset)   # the same test split, read with the train split beside it
    assert scores["frames"] == full["frames"] and scores["r"] == pytest.approx(full["r"], nan_ok=True)
    assert scores["r_true"] == pytest.approx(full["r_true"], nan_ok=True)


# --------------------------------------------------------------------------- a second review: option names, memory


@pytest.mark.parametrize("argv, want", [
    (["train", "{data}", "--tiny", "--lr-patience", "0"], "error: --lr-patience must be >= 1, got 0"),
    (["train", "{data}", "--tiny", "--l1-linear", "-1"], "error: --l1-linear must be a finite number >= 0, got -1.0"),
    (["train", "{data}", "--tiny", "--blocks-per-batch", "20000"],
     "error: --blocks-per-batch must be at most --batch-size (128): a batch is --blocks-per-batch runs of "
     "--batch-size // --blocks-per-batch windows, got 20000"),
    (["predict", "{stim}", "--batch-size", "0"], "error: --batch-size must be >= 1, got 0"),
])
def test_a_refused_option_is_named_as_the_option_not_the_python_parameter(tmp_path, dataset, capsys, argv, want):
    """The core's messages name its parameters ("lr_patience must be >= 1"); the command line names its options.
    --blocks-per-batch 20000 with --batch-size 128 trained on batches of 20,000 windows (4.8 GB for 400 frames)."""
    np.save(tmp_path / "s.npy", np.zeros((45, 50, 50), np.float32))
    argv = [a.format(data=dataset, stim=tmp_path / "s.npy") for a in argv]
    assert main([*argv, "--out", str(tmp_path / ("m.pt" if argv[0] == "train" else "r.h5"))]) == 2
    assert _one_line(capsys.readouterr().err, argv[0]).endswith(want)
    assert not (tmp_path / "m.pt").exists() and not (tmp_path / "r.h5").exists()


def test_the_option_names_follow_the_parser():
    """Every option whose Python name has an underscore is spelt with dashes, so messages can be rewritten; a
    positional argument or an unrelated word is left alone."""
    from napari_retina.cli import as_options, build_parser, option_names

    parser = build_parser()
    train = option_names(parser, "train")
    assert train["blocks_per_batch"] == "--blocks-per-batch" and "out" not in train
    assert as_options("batch_size x my_batch_size batch_size_2 --batch-size", train) == \
        "--batch-size x my_batch_size batch_size_2 --batch-size"


def test_torch_running_out_of_host_memory_is_one_line_exit_2(tmp_path, capsys, monkeypatch):
    """A huge --batch-size: torch's CPU allocator raised a RuntimeError ("DefaultCPUAllocator: can't allocate
    memory"), printed as a traceback with exit 1; now one line as numpy's MemoryError is, and the analysis' own
    out-of-memory retry (analysis.is_out_of_memory) recognises it."""
    import torch

    import napari_retina._predict
    from napari_retina.analysis import is_out_of_memory

    try:
        torch.empty(2**62, dtype=torch.uint8)
    except RuntimeError as exc:
        real = exc
    assert is_out_of_memory(real) and not is_out_of_memory(RuntimeError("shape mismatch"))

    def predict(*args, **kwargs):
        raise real

    monkeypatch.setattr(napari_retina._predict, "predict", predict)
    np.save(tmp_path / "s.npy", np.zeros((45, 50, 50), np.float32))
    assert main(["predict", str(tmp_path / "s.npy"), "--batch-size", "100000", "--out",
                 str(tmp_path / "r.h5")]) == 2
    err = _one_line(capsys.readouterr().err, "predict")
    assert err.endswith("error: not enough memory: torch could not allocate 4294967296.0 GiB at once; a smaller "
                        "--batch-size needs less"), err
