"""Realistic but awkward inputs to the public API: each one a defect a review found (bad-input policy)."""

import numpy as np
import pytest
import torch

import napari_retina as nr


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return nr.RetinaCNN(nr.ModelConfig(history=6, size=12, channels=(3, 4), kernels=(5, 3), n_cells=2)).eval()


@pytest.fixture(scope="module")
def movie():
    return np.random.default_rng(0).standard_normal((140, 12, 12)).astype(np.float32)


@pytest.mark.parametrize("dtype", [np.int8, np.uint64, np.uint32, np.int16])
def test_frames_of_any_integer_dtype_select_the_same_frames(model, movie, dtype):
    # an int8 -1 overflowed when made positive (OverflowError), a uint64 index reached torch (IndexError)
    frames = np.array([-1, 100], dtype=np.int64) if np.issubdtype(dtype, np.signedinteger) else np.array([139, 100])
    attr = nr.attribute(model, movie, steps=2, frames=frames.astype(dtype))
    assert attr.frames.tolist() == [100, 139]
    ref = nr.attribute(model, movie, steps=2, frames=[100, 139])
    np.testing.assert_array_equal(attr.channels[[100, 139]], ref.channels[[100, 139]])


@pytest.mark.parametrize("param", ["max_frames", "gap", "window"])
@pytest.mark.parametrize("value", [float("inf"), float("nan")])
def test_experiment_frame_counts_that_are_not_finite_get_the_parameter_sentence(model, param, value):
    # max_frames=np.inf ("no limit") raised OverflowError: cannot convert float infinity to integer
    with pytest.raises(ValueError, match=f"{param} must be a whole number of frames, got {value}"):
        nr.experiments.run("osr", model, steps=2, **{param: value})


def test_a_zero_dimensional_cell_array_is_the_cell_it_holds(model, movie):
    # cell=np.array(1) (a 0-d array, e.g. read back from a file) raised "TypeError: len() of unsized object"
    attr = nr.attribute(model, movie[:20], cell=np.array(1), steps=2)
    assert attr.cells == [1]
    with pytest.raises(ValueError, match=r"cell \(the model has 2 cells\) must be in \[0, 1\], got 2"):
        nr.attribute(model, movie[:20], cell=np.array(2), steps=2)


def test_a_range_of_cells_is_the_cells_it_holds(model, movie):
    # cell=range(2) raised "TypeError: cell (the model has 2 cells) must be an int, got range range(0, 2)"
    attr = nr.attribute(model, movie[:20], cell=range(2), steps=2)
    assert attr.cells == [0, 1]
    ref = nr.attribute(model, movie[:20], cell="all", steps=2)
    np.testing.assert_array_equal(attr.channels[19], ref.channels[19])
    assert nr.experiments.run("osr", model, cell=range(1, 2), steps=2, periods=(6, 8), n_flashes=3).cells == [1]


def test_saving_onto_a_folder_says_so_before_any_work(model, tmp_path, monkeypatch):
    # the model was serialised in full, then os.replace failed with "[Errno 21] Is a directory:
    # '<dir>/.<name>...partial' -> '<dir>'", naming a temporary file the user never asked for
    (tmp_path / "out.pt").mkdir()
    monkeypatch.setattr(torch, "save", lambda *a, **k: pytest.fail("serialised before the destination was checked"))
    with pytest.raises(IsADirectoryError, match=r"cannot write .*out\.pt.*: it is a folder; give a file name inside it"):
        nr.save_model(model, tmp_path / "out.pt")
    (tmp_path / "res.h5").mkdir()
    with pytest.raises(IsADirectoryError, match=r"cannot write .*res\.h5.*: it is a folder"):
        nr.io.write_results(tmp_path / "res.h5", {"a": np.zeros(3)})
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["out.pt", "res.h5"]  # no temporary file left


def test_predict_attribute_evaluate_and_reduce_leave_the_callers_train_mode_alone(model, movie):
    # a user's own training loop that validates with nr.predict found its model switched to eval mode
    # for the rest of training (batch norm's running statistics frozen); reduce already restored it
    import copy

    training = copy.deepcopy(model).train()
    training.bn1.eval()  # a mixed state is kept exactly, not flattened to train()
    modes = [m.training for m in training.modules()]
    stim = movie[:30]
    rates = nr.predict(training, stim)
    attr = nr.attribute(training, stim, steps=2)
    nr.evaluate(training, (stim, np.random.default_rng(1).random((30, 2)).astype(np.float32)))
    nr.reduce(attr, fit_steps=5)  # reduce's model is the caller's too (model.train(was_training) flattened bn1)
    assert [m.training for m in training.modules()] == modes
    np.testing.assert_array_equal(rates, nr.predict(model, stim))  # still computed in eval mode
    np.testing.assert_array_equal(attr.channels, nr.attribute(model, stim, steps=2).channels)


@pytest.mark.parametrize(
    "model_arg, stimulus, error, match",
    [
        ("m.pt", None, TypeError, r"model must be a RetinaCNN \(nr.load_model\) or a wrapped module"),
        (None, None, TypeError, "model must be a RetinaCNN"),
        ("good", None, TypeError, r"stimulus must be a \(T, H, W\) array of numbers, got NoneType"),
        ("good", "movie.tif", TypeError, r"stimulus must be a \(T, H, W\) array of numbers, got the path 'movie\.tif'"),
        ("good", 5.0, ValueError, r"stimulus must be a \(T, H, W\) stack, got 0 dimension"),
    ],
)
def test_run_analysis_refuses_a_model_or_stimulus_that_is_not_one(model, model_arg, stimulus, error, match):
    # AttributeError: 'str' object has no attribute 'config'; IndexError: tuple index out of range
    with pytest.raises(error, match=match):
        nr.analysis.run_analysis(model if model_arg == "good" else model_arg, stimulus, steps=2)


def test_train_refuses_a_folder_as_out_before_training(tmp_path):
    # out="runs/" trained a whole epoch and only then failed, when the first checkpoint was saved
    rng = np.random.default_rng(0)
    data = (rng.standard_normal((200, 12, 12)).astype(np.float32), rng.random((200, 2)).astype(np.float32))
    config = nr.ModelConfig(history=6, size=12, channels=(3, 4), kernels=(5, 3), n_cells=2)
    epochs = []
    with pytest.raises(IsADirectoryError, match="it is a folder; give a file name inside it"):
        nr.train(data, config=config, epochs=2, device="cpu", out=tmp_path, log=epochs.append)
    assert epochs == []


def test_a_read_only_memmap_is_used_without_torch_s_non_writable_warning(tmp_path):
    """np.load(mmap_mode="r") gives a read-only array: it is only read, so torch's one-time "not writable ...
    undefined behavior" warning must not reach the user (checked in a fresh interpreter: torch warns once)."""
    import subprocess
    import sys
    from pathlib import Path

    np.save(tmp_path / "movie.npy", np.random.default_rng(1).standard_normal((30, 12, 12)).astype(np.float32))
    code = (
        "import warnings, numpy as np, torch, napari_retina as nr\n"
        "warnings.filterwarnings('error', message='The given NumPy array is not writable')\n"
        "torch.manual_seed(0)\n"
        "m = nr.RetinaCNN(nr.ModelConfig(history=6, size=12, channels=(3, 4), kernels=(5, 3), n_cells=2)).eval()\n"
        f"s = np.load({str(tmp_path / 'movie.npy')!r}, mmap_mode='r')\n"
        "assert not s.flags.writeable\n"
        "nr.predict(m, s)\n"
        "a = nr.attribute(m, s, steps=2, frames=[20, 25])\n"
        "nr.reduce(a, fit_steps=5)\n"
        "w = nr.wrap(m, first_layer='conv1', history=6, size=12)\n"
        "nr.predict(w, s)\n"
        "nr.attribute(w, s, steps=2, frames=[20])\n"
        "print('done')\n"
    )
    src = str(Path(__file__).resolve().parents[1] / "src")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "PYTHONPATH": src})
    assert done.returncode == 0 and done.stdout.strip() == "done", done.stderr[-2000:]


@pytest.mark.parametrize("make, params, names", [
    (nr.stimuli.white_noise, dict(frames=10**12), "white noise with frames=1,000,000,000,000"),
    (nr.stimuli.naturalistic, dict(frames=10**12), "naturalistic movie with frames=1,000,000,000,000"),
    (nr.stimuli.flash, dict(post=10**12), "post=1,000,000,000,000"),
    (nr.stimuli.step, dict(post=10**12), "post=1,000,000,000,000"),
    (nr.stimuli.flash_train, dict(n_flashes=10**12), "n_flashes=1,000,000,000,000"),
    (nr.stimuli.flashed_bar, dict(post=10**12), "post=1,000,000,000,000"),
    (nr.stimuli.reversing_grating, dict(frames=10**12), "frames=1,000,000,000,000"),
    (nr.stimuli.moving_bar, dict(speed=1e-9), "a bar moving 60 px at speed 1e-09 px/frame"),
    (nr.stimuli.moving_bar, dict(speed=5e-324), "a bar moving 60 px at speed 4.94066e-324 px/frame takes inf"),
    (nr.stimuli.reversing_bar, dict(speed=1e-300), "a bar reversing after 25 px at speed 1e-300 px/frame"),
])
def test_a_movie_longer_than_memory_is_one_sentence_naming_its_parameters(make, params, names):
    # numpy's "Unable to allocate 447. GiB for an array with shape (60000000041,)" came from deep inside the
    # generator and named no parameter; speed=5e-324 was an OverflowError (cannot convert float infinity)
    with pytest.raises(MemoryError, match=rf"^.*{names}.* frames of 50×50 px, .* GiB as float32, more than this "
                                          r"machine's memory \(.* GiB\)$"):
        make(**params)


def test_an_experiment_too_long_for_memory_names_the_experiment_and_its_parameters(model):
    # the whole movie is refused before any condition is built (it was the first flash train's own sentence)
    with pytest.raises(MemoryError, match=r"^experiment 'osr' with .*window=1000000000.*: 7 flash trains .* come to "
                                          r"7,000,000,\d+ frames"):
        nr.experiments.run("osr", model, steps=2, window=1e9)


def test_the_synthetic_retina_reads_an_integer_stack_as_raw_intensities_like_predict():
    # Retina.respond took a uint8 stack's 0..255 as contrast (rates of a stimulus 100x too strong), where
    # nr.predict z-scores it by its own statistics
    raw = np.random.default_rng(3).integers(0, 256, (45, 50, 50), dtype=np.uint8)
    x = raw.astype(np.float64)
    contrast = ((x - x.mean()) / x.std()).astype(np.float32)
    retina = nr.synthetic.Retina(seed=0)
    np.testing.assert_allclose(retina.respond(raw), retina.respond(contrast), rtol=1e-5, atol=1e-6)
    recorded = retina.record(raw, seed=1)
    np.testing.assert_array_equal(recorded, retina.record(contrast, seed=1))


def test_saving_an_analysis_without_a_file_name_says_so():
    # the message ended "got ''." for an empty path (a Save field left empty) or ".", naming nothing
    from napari_retina.analysis import run_analysis

    torch.manual_seed(0)
    model = nr.RetinaCNN(nr.ModelConfig(history=6, size=12, channels=(3, 4), kernels=(5, 3), n_cells=2)).eval()
    result = run_analysis(model, np.random.default_rng(0).standard_normal((20, 12, 12)).astype(np.float32), steps=2)
    for path in ("", "."):
        with pytest.raises(ValueError, match=r"\.csv file \(traces\), got no file name \('\.'\)\.$"):
            result.save(path)
    with pytest.raises(ValueError, match=r"got 'x\.txt'\.$"):
        result.save("x.txt")
