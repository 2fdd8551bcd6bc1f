"""Training and evaluation: tiny configs, independent references, bad input through train()."""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings

import h5py
import numpy as np
import pytest
import torch

import napari_retina as nr
from napari_retina import cli, synthetic, training
from napari_retina._frames import gather_windows
from napari_retina.model import ModelConfig, RetinaCNN


@pytest.fixture(scope="module", autouse=True)
def two_threads():
    """Training here on 2 threads, then the process's own count again (set at import, it held for every module
    collected with this one, and a module run alone ran otherwise: a test audit)."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


TINY = dict(history=8, size=20, channels=(3, 3), kernels=(5, 5), bn="unit")


def tiny_config(n_cells=2, **kw):
    return ModelConfig(**{**TINY, "n_cells": n_cells, **kw})


def ln_data(frames=900, size=20, n_cells=2, seed=0, rate_scale=3.0):
    """White noise and Poisson counts from a known linear-nonlinear cell (strong signal)."""
    rng = np.random.default_rng(seed)
    stim = np.where(rng.random((frames, size, size)) < 0.5, -1.0, 1.0).astype(np.float32)
    true = np.zeros((frames, n_cells))
    for c in range(n_cells):
        y, x = 8 + 3 * c, 10
        drive = np.zeros(frames)
        for lag, w in enumerate([0.0, 0.6, 1.0, 0.5, -0.2, -0.3]):
            drive[lag:] += w * stim[: frames - lag, y - 1 : y + 2, x - 1 : x + 2].mean(axis=(1, 2)) * (1 if c == 0 else -1)
        true[:, c] = rate_scale * np.logaddexp(0, 2.0 * drive - 0.5)
    counts = rng.poisson(true).astype(np.float32)
    return stim, counts, true.astype(np.float32)


def write_h5(path, stim, rates, test_stim=None, test_rates=None, **extra):
    test_stim = stim[-200:] if test_stim is None else test_stim
    test_rates = rates[-200:] if test_rates is None else test_rates
    with h5py.File(path, "w") as h5:
        h5["train/stimulus"] = stim
        h5["train/response/firing_rate_10ms"] = np.asarray(rates).T
        h5["test/stimulus"] = test_stim
        h5["test/response/firing_rate_10ms"] = np.asarray(test_rates).T
        for k, v in extra.items():
            h5[k] = v
    return path


def poisson_loss64(pred, target):
    pred = pred.astype(np.float64)
    return float(np.mean(pred - target * np.log(pred + 1e-6)))


# ----------------------------------------------------------------------------- the FFT first layer

def test_training_first_layer_equals_direct_convolution_at_full_size():
    """Training computes conv1 with RetinaCNN.first_layer_windows (FFT); check it at the 40x15x15 shape."""
    torch.manual_seed(0)
    model = RetinaCNN(ModelConfig(n_cells=2)).double()
    s = torch.randn(200, 50, 50, dtype=torch.float64)
    ends = np.concatenate([np.arange(42, 63), np.arange(159, 180)])
    with torch.no_grad():
        z = model.first_layer_windows(s, ends)
        torch.testing.assert_close(z, model.conv1(gather_windows(s, ends, 40)), rtol=1e-10, atol=1e-10)


# ----------------------------------------------------------------------------- training

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train")
    stim, counts, true = ln_data()
    path = write_h5(tmp / "ln.h5", stim, counts)
    out = tmp / "m.pt"
    model = nr.train(path, config=tiny_config(), epochs=4, batch_size=32, lr=1e-2, seed=3, out=out, device="cpu")
    return path, out, model, stim, counts, true


def test_heldout_loss_falls_and_scores_are_right(trained):
    path, out, model, stim, counts, true = trained
    hist = model.provenance["history"]
    assert hist[0]["epoch"] == 0
    best = min(h["heldout_loss"] for h in hist[1:])
    assert best < hist[0]["heldout_loss"] - 0.02
    # the held-out tail is the last 5% of the training frames, scored independently here
    T = len(stim)
    hold = np.arange(7, T)[-int(round(0.05 * (T - 7))):]
    pred = model(gather_windows(torch.from_numpy(stim), hold, 8)).detach().numpy()
    assert model.scores["heldout_loss"] == pytest.approx(poisson_loss64(pred, counts[hold]), rel=1e-4, abs=1e-5)
    r = [np.corrcoef(pred[:, c], counts[hold, c])[0, 1] for c in range(2)]
    np.testing.assert_allclose(model.scores["heldout_r"], r, rtol=1e-5, atol=1e-6)
    assert np.mean(r) > 0.25 > hist[0]["heldout_r_mean"] + 0.1   # it learned the cells
    # better than a model that knows only each cell's mean rate (where the fresh model starts)
    mean_only = np.broadcast_to(counts.mean(0), (len(hold), 2)).copy()
    assert model.scores["heldout_loss"] < poisson_loss64(mean_only, counts[hold]) - 0.02
    # and at the data's scale (the first shipped model had r 0.95 at 1/5 of the mean rate)
    np.testing.assert_allclose(pred.mean(0), true[hold].mean(0), rtol=0.25)


def test_a_fresh_model_starts_at_the_data_rate_scale():
    """init_readout: mean and signal sd of the untrained output match the data's (Poisson counts)."""
    stim, counts, true = ln_data(frames=600, rate_scale=8.0)
    model = RetinaCNN(tiny_config()).train()
    training.init_readout(model, counts)
    torch.manual_seed(0)
    with torch.no_grad():
        pred = model(gather_windows(torch.from_numpy(stim), np.arange(7, 600), 8)).numpy()
    np.testing.assert_allclose(pred.mean(0), true.mean(0), rtol=0.15)
    np.testing.assert_allclose(pred.std(0), true.std(0), rtol=0.3)
    # without the output batch norm only the bias is set: the mean of a zero readout
    flat = RetinaCNN(tiny_config(bn="none"))
    with torch.no_grad():
        flat.linear.weight.zero_()
    training.init_readout(flat, counts)
    with torch.no_grad():
        out = flat(torch.zeros(1, 8, 20, 20)).numpy()[0]
    np.testing.assert_allclose(out, counts.mean(0), rtol=1e-4)


def test_checkpoint_round_trips_with_provenance(trained):
    path, out, model, stim, *_ = trained
    loaded = nr.load_model(out)
    x = torch.from_numpy(stim[:40].copy())
    np.testing.assert_allclose(nr.predict(loaded, x.numpy()), nr.predict(model, x.numpy()), rtol=1e-6, atol=1e-7)
    prov = loaded.provenance
    assert prov["data_sha256"] == hashlib.sha256(open(path, "rb").read()).hexdigest()
    assert prov["data_file"] == str(path)
    assert prov["seed"] == 3 and prov["params"]["lr"] == 1e-2
    assert prov["torch"] == torch.__version__ and prov["machine"] and prov["seconds"] >= 0
    assert prov["finished"] is True and 1 <= prov["best_epoch"] <= prov["epochs_run"] <= 4
    assert loaded.scores == json.loads(json.dumps(model.scores))
    assert loaded.config.norm["units"] == "contrast"
    assert loaded.config.norm["mean"] == pytest.approx(float(stim.astype(np.float64).mean()))
    assert loaded.config.norm["std"] == pytest.approx(float(stim.astype(np.float64).std()))
    assert not [f for f in os.listdir(out.parent) if f.endswith(".partial")]  # no temporary file left


def test_training_is_reproducible():
    stim, counts, _ = ln_data(frames=400)
    a = nr.train((stim, counts), config=tiny_config(), epochs=1, batch_size=32, seed=5)
    b = nr.train((stim, counts), config=tiny_config(), epochs=1, batch_size=32, seed=5)
    c = nr.train((stim, counts), config=tiny_config(), epochs=1, batch_size=32, seed=6)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(va, vb, rtol=0, atol=0, msg=k)
    assert not torch.equal(a.conv1.weight, c.conv1.weight)


def test_the_weight_penalty_is_the_recipes_and_training_pays_it():
    torch.manual_seed(0)
    model = RetinaCNN(tiny_config())
    w1, w2, lin = (m.weight.detach().double().numpy() for m in (model.conv1, model.conv2, model.linear))
    expected = 0.3 * ((w1**2).sum() + (w2**2).sum()) + 0.2 * np.abs(lin).sum()
    assert float(training.weight_penalty(model, 0.3, 0.2).detach()) == pytest.approx(expected, rel=1e-6)
    assert float(training.weight_penalty(model, 0.0, 0.0).detach()) == 0.0

    stim, counts, _ = ln_data(frames=400)
    plain, l2, l1 = (nr.train((stim, counts), config=tiny_config(), epochs=1, batch_size=32, seed=5, l2=a, l1_linear=b)
                     for a, b in ((0.0, 0.0), (1.0, 0.0), (0.0, 1.0)))
    conv = lambda m: float((m.conv1.weight.pow(2).sum() + m.conv2.weight.pow(2).sum()).detach())  # noqa: E731
    assert conv(l2) < 0.9 * conv(plain)
    assert float(l1.linear.weight.detach().abs().sum()) < 0.9 * float(plain.linear.weight.detach().abs().sum())


def test_integer_stimuli_are_normalised_and_stored_as_raw():
    stim, counts, _ = ln_data(frames=300)
    raw = ((stim + 1) * 100 + 20).astype(np.uint8)        # 20 or 220
    model = nr.train((raw, counts), config=tiny_config(), epochs=1, batch_size=32)
    assert model.config.norm == {"mean": pytest.approx(float(raw.mean())),
                                 "std": pytest.approx(float(raw.astype(np.float64).std())), "units": "raw"}


def test_a_float_training_stimulus_far_from_contrast_is_refused_by_the_rule_that_warns_at_predict(tmp_path):
    """A float64 0-255 stack trained silently and stored units 'contrast' with a mean that predict never applied."""
    from napari_retina._validate import StimulusUnitsWarning, warn_if_not_contrast

    stim, counts, _ = ln_data(frames=300)
    raw = (stim.astype(np.float64) * 40 + 128)                           # mean 128, std 40
    intensities = (stim + 1.5) / 3                                       # 1/6 or 5/6: nothing below 0
    for bad, what in ((raw, "does not look like contrast units"), (intensities, "looks like intensities")):
        with pytest.warns(StimulusUnitsWarning):                         # the rule predict warns by
            warn_if_not_contrast(bad)
        with pytest.raises(ValueError, match=f"^the training stimulus {what}.*z-score it .*integer stack"):
            nr.train((bad, counts), config=tiny_config(), epochs=1, batch_size=32)
    with pytest.raises(ValueError, match=r"^the training stimulus in f255\.h5 does not look like contrast units"):
        nr.train(write_h5(tmp_path / "f255.h5", raw, counts), config=tiny_config(), epochs=1, batch_size=32)
    # the same stack as integers is raw intensities: trained, normalised with the stored statistics
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)                     # one epoch may not improve; not the point
        model = nr.train((raw.astype(np.uint8), counts), config=tiny_config(), epochs=1, batch_size=32)
    assert model.config.norm["units"] == "raw" and model.config.norm["mean"] == pytest.approx(raw.mean())
    # contrast stimuli pass: the synthetic retina's training data (mix and sparse binary noise) and grey flashes
    for ok in (synthetic.training_mix(600, 0, size=20),
               nr.stimuli.white_noise(300, 20, 0, checker=4, kind="binary", contrast=2.0, grey=0.5),
               np.where(np.arange(300)[:, None, None] % 10 < 2, 1.0, 0.0) * np.ones((1, 20, 20))):
        training._check_training_stimulus(np.asarray(ok), "the training stimulus")


@pytest.mark.parametrize("value, dtype", [(0.0, np.float32), (128, np.uint8)])
def test_a_constant_training_stimulus_is_refused(value, dtype, tmp_path):
    """An all-zero stimulus trained to each cell's mean rate and passed as a trained model."""
    _, counts, _ = ln_data(frames=300)
    flat = np.full((300, 20, 20), value, dtype=dtype)
    sentence = rf"^the training stimulus( in c\.h5)? is constant \(every value is {value:g}\), so there is no response"
    with pytest.raises(ValueError, match=sentence):
        nr.train((flat, counts), config=tiny_config())
    with pytest.raises(ValueError, match=sentence):
        nr.train(write_h5(tmp_path / "c.h5", flat, counts), config=tiny_config())


def test_progress_never_passes_its_total_and_ends_there(monkeypatch):
    """Each epoch shifts its grid of blocks by a random offset, which can add a batch: progress went past its
    total (89 of 88, an audit's 6,000-frame run). Over seeds, with 4 blocks of 16 windows per batch: never
    past the total, never back, and at the total at the end; also when early stopping ends the run at its second
    epoch (the held-out loss never improves, patience 1)."""
    stim, counts, _ = ln_data(frames=618)   # 573 fit windows: 36 blocks of 16, 37 (10 batches of 4) when shifted >= 4
    for seed in range(2):
        calls = []
        nr.train((stim, counts), config=tiny_config(), epochs=2, batch_size=64, blocks_per_batch=4, seed=seed,
                 progress=lambda d, t: calls.append((d, t)))
        done = [d for d, _ in calls]
        assert len({t for _, t in calls}) == 1 and max(done) <= calls[0][1], (seed, calls[-3:])
        assert done == sorted(done) and done[-1] == calls[0][1], (seed, calls[-3:])
    from napari_retina import training

    entry = training._heldout_entry
    monkeypatch.setattr(training, "_heldout_entry", lambda *a, **k: {**entry(*a, **k), "heldout_loss": 1.0})
    calls = []
    nr.train((stim, counts), config=tiny_config(), epochs=4, batch_size=64, patience=1,
             progress=lambda d, t: calls.append((d, t)))
    assert calls[-1][0] == calls[-1][1] and calls[-2][0] < calls[-1][1]   # stopped after epoch 2, at the total


def test_progress_and_cancel_leave_no_half_written_checkpoint(tmp_path):
    stim, counts, _ = ln_data(frames=500)
    calls = []
    nr.train((stim, counts), config=tiny_config(), epochs=2, batch_size=64, progress=lambda d, t: calls.append((d, t)))
    assert calls[0][0] == 0 and calls[-1][0] == calls[-1][1] and len({t for _, t in calls}) == 1

    out = tmp_path / "cancel.pt"
    token = nr.CancelToken()

    def cb(done, total):
        if done == total // 2 + 1:
            token.cancel()

    with pytest.raises(nr.Cancelled):
        nr.train((stim, counts), config=tiny_config(), epochs=2, batch_size=64, out=out, progress=token.wrap(cb))
    # after the first epoch the best checkpoint was saved; the cancelled run left it whole
    assert out.exists()
    loaded = nr.load_model(out)
    assert loaded.provenance["finished"] is False
    assert sorted(os.listdir(tmp_path)) == ["cancel.pt"]


def test_a_run_cancelled_in_its_first_epoch_leaves_an_existing_out_file_as_it_was(tmp_path):
    """The docstring said out then holds 'the best checkpoint so far, or nothing'; an older file stays (documented)."""
    stim, counts, _ = ln_data(frames=500)
    out = tmp_path / "old.pt"
    out.write_bytes(b"an older, unrelated file")
    def stop_in_epoch_one(done, total):
        if done == 2:
            raise nr.Cancelled()

    with pytest.raises(nr.Cancelled):
        nr.train((stim, counts), config=tiny_config(), epochs=2, batch_size=64, out=out, progress=stop_in_epoch_one)
    assert out.read_bytes() == b"an older, unrelated file" and sorted(os.listdir(tmp_path)) == ["old.pt"]
    assert "an existing file untouched" in " ".join(nr.train.__doc__.split())


def test_evaluate_against_true_rates(tmp_path):
    gt = synthetic.Retina()
    path = synthetic.make_dataset(tmp_path / "wn.h5", frames=200, test_frames=120, repeats=4, seed=1)
    model = RetinaCNN(ModelConfig(n_cells=gt.n_cells)).eval()
    ev = nr.evaluate(model, path)
    ds = nr.io.read_dataset(path)
    pred = nr.predict(model, ds.test.stimulus)[39:]
    with h5py.File(path, "r") as h5:
        true = h5["test/true_rates"][()].T[39:]
    for c in range(gt.n_cells):
        assert ev["r"][c] == pytest.approx(np.corrcoef(pred[:, c], ds.test.rates[39:, c])[0, 1], abs=1e-5)
        assert ev["r_true"][c] == pytest.approx(np.corrcoef(pred[:, c], true[:, c])[0, 1], abs=1e-5)
        assert ev["mean_ratio"][c] == pytest.approx(pred[:, c].mean() / ds.test.rates[39:, c].mean(), rel=1e-5)
        resid = pred[:, c].astype(np.float64) - true[:, c]
        assert ev["ev_true"][c] == pytest.approx(1 - resid.var() / true[:, c].astype(np.float64).var(), abs=1e-5)
        reps = ds.test.repeats[c][:, 39:]
        rel = np.corrcoef(reps[0::2].mean(0), reps[1::2].mean(0))[0, 1]
        assert ev["reliability_split_half"][c] == pytest.approx(rel, abs=1e-5)
    assert ev["frames"] == 81 and ev["cell_names"] == model.config.cell_names
    # without the true rates there is no score against them (the comment here claimed an r = 1 it never checked)
    ev2 = training._evaluate(model, ds, true_test=None)
    assert "r_true" not in ev2


# ----------------------------------------------------------------------------- bad input through train()

@pytest.fixture()
def good():
    stim, counts, _ = ln_data(frames=300)
    return stim, counts


def test_bad_mismatched_lengths(tmp_path, good):
    stim, counts = good
    with pytest.raises(ValueError, match="frames but the rates have"):
        nr.train(write_h5(tmp_path / "a.h5", stim, counts[:-5]), config=tiny_config())
    with pytest.raises(ValueError, match=r"^train rates: the stimulus has \d+ frames but the rates have \d+ time bins$"):
        nr.train((stim, counts[:-5]), config=tiny_config())


def test_bad_missing_keys(tmp_path, good):
    stim, counts = good
    path = tmp_path / "m.h5"
    with h5py.File(path, "w") as h5:
        h5["train/stimulus"] = stim
        h5["train/response/firing_rate_10ms"] = counts.T
    with pytest.raises(ValueError, match="missing the dataset 'test/stimulus'"):
        nr.train(path, config=tiny_config())
    with pytest.raises(FileNotFoundError):
        nr.train(tmp_path / "nope.h5", config=tiny_config())


def test_bad_too_few_frames(good):
    stim, counts = good
    with pytest.raises(ValueError, match="at least"):
        nr.train((stim[:30], counts[:30]), config=tiny_config())
    big, big_counts, _ = ln_data(frames=100, size=50)
    with pytest.raises(ValueError, match="at least"):
        nr.train((big, big_counts))                          # the standard 40-frame history


def test_bad_nan_and_negative_rates(tmp_path, good):
    stim, counts = good
    bad = counts.copy()
    bad[10, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        nr.train(write_h5(tmp_path / "n.h5", stim, bad), config=tiny_config())
    with pytest.raises(ValueError, match="NaN"):
        nr.train((stim, bad), config=tiny_config())
    neg = counts.copy()
    neg[3, 1] = -1
    with pytest.raises(ValueError, match="negative"):
        nr.train(write_h5(tmp_path / "g.h5", stim, neg), config=tiny_config())
    with pytest.raises(ValueError, match="negative"):
        nr.train((stim, neg), config=tiny_config())


def test_bad_cells(tmp_path, good):
    stim, counts = good
    path = write_h5(tmp_path / "c.h5", stim, counts)
    with pytest.raises(ValueError, match="do not exist"):
        nr.train(path, config=tiny_config(), cells=[0, 5])
    with pytest.raises(ValueError, match="do not exist"):
        nr.train((stim, counts), config=tiny_config(), cells=[2])


def test_a_subset_of_cells_keeps_the_chosen_cells_names_and_lists_each_once(tmp_path):
    """cells=[1, 2] of arrays, or [3, 1] of a file without cell_names, were renamed cell0, cell1; [1, 1] was taken."""
    stim, counts, _ = ln_data(frames=300, n_cells=4)
    path = write_h5(tmp_path / "nonames.h5", stim, counts)
    assert nr.io.read_dataset(path, cells=[3, 1]).cell_names == ["cell3", "cell1"]
    assert nr.io.read_dataset(path).cell_names == ["cell0", "cell1", "cell2", "cell3"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = nr.train((stim, counts), config=tiny_config(), cells=[1, 2], epochs=1, batch_size=32)
    assert model.config.cell_names == ["cell1", "cell2"]
    for data in ((stim, counts), path):
        with pytest.raises(ValueError, match=r"^cells must list each cell once, got \[1, 1\]$"):
            nr.train(data, config=tiny_config(), cells=[1, 1])
    with pytest.raises(ValueError, match="each cell once"):
        nr.io.read_dataset(path, cells=[2, 2])


def test_bad_config_and_parameters(good, tmp_path):
    stim, counts = good
    with pytest.raises(ValueError, match="cells"):
        nr.train((stim, counts), config=tiny_config(n_cells=3))
    with pytest.raises(TypeError, match="ModelConfig"):
        nr.train((stim, counts), config={"history": 8})
    with pytest.raises(ValueError, match="epochs"):
        nr.train((stim, counts), config=tiny_config(), epochs=0)
    with pytest.raises(ValueError, match="holdout"):
        nr.train((stim, counts), config=tiny_config(), holdout=0.7)
    with pytest.raises(TypeError, match="data must be"):
        nr.train(42, config=tiny_config())
    with pytest.raises(FileNotFoundError, match="folder"):
        nr.train((stim, counts), config=tiny_config(), out=tmp_path / "no" / "m.pt")


def test_a_test_split_shorter_than_the_history_is_refused_by_train_as_by_evaluate(good, monkeypatch):
    """Training skipped the test scores silently (only heldout_* in .scores) where evaluate refused the data."""
    stim, counts = good
    monkeypatch.setattr(training, "_fit", lambda *a, **k: pytest.fail("refused only after training"))
    sentence = r"^the test stimulus has 5 frame\(s\) but the model needs at least its history of 8 frames \(80 ms\)$"
    with pytest.raises(ValueError, match=sentence):
        nr.train((stim, counts, stim[:5], counts[:5]), config=tiny_config())
    with pytest.raises(ValueError, match=sentence):
        nr.evaluate(RetinaCNN(tiny_config()).eval(), (stim[:5], counts[:5]))


def test_evaluate_bad_input(good):
    stim, counts = good
    with pytest.raises(TypeError, match="RetinaCNN"):
        nr.evaluate("model", (stim, counts))
    with pytest.raises(ValueError, match="cells"):
        nr.evaluate(RetinaCNN(tiny_config(n_cells=3)).eval(), (stim, counts))


def test_evaluate_scores_the_cells_asked_for_and_refuses_cells_the_names_say_are_others(tmp_path):
    """cells=[2, 1] scored a model of cells [1, 2] (u1, u2) against the wrong cells; arrays ignored cells."""
    stim, counts, _ = ln_data(frames=300, n_cells=4)
    path = write_h5(tmp_path / "named.h5", stim, counts)
    with h5py.File(path, "a") as h5:
        h5.attrs["cell_names"] = json.dumps(["u0", "u1", "u2", "u3"])
    torch.manual_seed(0)
    model = RetinaCNN(tiny_config(cell_names=["u1", "u2"])).eval()
    right = nr.evaluate(model, path, cells=[1, 2])
    assert right["cell_names"] == ["u1", "u2"]
    for cells in ([2, 1], [0, 3]):
        with pytest.raises(ValueError, match=r"^the cells chosen in named\.h5 \(cells=\[\d, \d\]\) are named "
                                             r"\['u\d', 'u\d'\] but the model's outputs are \['u1', 'u2'\], which "
                                             r"are cells=\[1, 2\] there; pass cells=\[1, 2\]"):
            nr.evaluate(model, path, cells=cells)
    ds = nr.io.read_dataset(path)
    with pytest.raises(ValueError, match="model's outputs are"):
        nr.evaluate(model, ds, cells=[2, 1])
    assert nr.evaluate(model, ds, cells=[1, 2])["r"] == pytest.approx(right["r"], abs=1e-6)
    # arrays: cells picks the columns (it was ignored and all four were scored)
    test = (stim[-200:], counts[-200:])
    picked = nr.evaluate(model, test, cells=[3, 0])
    assert picked["r"] == pytest.approx(nr.evaluate(model, (stim[-200:], counts[-200:, [3, 0]]))["r"], abs=1e-6)
    with pytest.raises(ValueError, match="the model has 2 cells but the data have 4"):
        nr.evaluate(model, test)
    with pytest.raises(ValueError, match="do not exist"):
        nr.evaluate(model, test, cells=[0, 4])
    # names that are not the model's (another recording, an untrained model's cell0...) cannot be checked
    assert len(nr.evaluate(RetinaCNN(tiny_config()).eval(), path, cells=[2, 1])["r"]) == 2


# ----------------------------------------------------------------------------- command line

def test_cli_synth_train_evaluate(tmp_path, capsys):
    data, out = tmp_path / "wn.h5", tmp_path / "tiny.pt"
    assert cli.main(["synth", str(data), "--frames", "300", "--test-frames", "80", "--repeats", "2", "--grey", "0.5",
                     "--quiet"]) == 0
    assert float(nr.io.read_dataset(data).attrs["grey"]) == 0.5
    assert cli.main(["train", str(data), "--out", str(out), "--tiny", "--epochs", "1", "--batch-size", "32",
                     "--quiet"]) == 0
    assert nr.load_model(out).provenance["params"]["command"].startswith("napari-retina")
    capsys.readouterr()
    assert cli.main(["evaluate", str(data), "--model", str(out), "--out", str(tmp_path / "s.npz")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result["r_true"]) == 4
    assert (tmp_path / "s.npz").exists()


def test_cli_bad_input_is_one_line(tmp_path, capsys):
    assert cli.main(["train", str(tmp_path / "missing.h5"), "--out", str(tmp_path / "m.pt"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no dataset" in err[0]
    assert cli.main(["evaluate", str(tmp_path / "x.h5"), "--cells", "a,b"]) == 2
    capsys.readouterr()
    for text in ("0,,1", "1,"):   # read as --cell reads them (a shape audit: they were [0, 1] and [1])
        assert cli.main(["evaluate", str(tmp_path / "x.h5"), "--cells", text]) == 2
        said = capsys.readouterr().err.strip()
        assert said.endswith(f": error: --cells must be comma-separated cell indices, got {text!r}")


def test_init_resumes_from_a_model(trained, tmp_path):
    path, out, model, *_ = trained
    again = nr.train(path, init=out, epochs=1, batch_size=32, lr=1e-3, seed=3)
    assert again.provenance["history"][0]["heldout_loss"] == pytest.approx(model.scores["heldout_loss"], rel=1e-5)
    assert again.config.history == model.config.history
    with pytest.raises(ValueError, match="either config or init"):
        nr.train(path, init=model, config=tiny_config())


def test_init_refusals_name_the_init_checkpoint_and_the_tiny_option(trained, tmp_path, capsys, monkeypatch):
    """--tiny --init said 'give either config or init' (no config was given); a misfit --init said 'config expects'."""
    path, out, *_ = trained
    monkeypatch.setattr(training, "_fit", lambda *a, **k: pytest.fail("refused only after training"))
    stim, counts, _ = ln_data(frames=300, n_cells=3)
    with pytest.raises(ValueError, match=rf"^the init checkpoint '{re.escape(str(out))}' expects a 20x20 stimulus and 2 cells, "
                                         r"the data have 20x20 and 3$"):
        nr.train((stim, counts), init=out)
    with pytest.raises(ValueError, match=r"^the init model expects a 20x20 stimulus and 2 cells"):
        nr.train((stim, counts), init=nr.load_model(out))
    assert cli.main(["train", str(path), "--out", str(tmp_path / "t.pt"), "--tiny", "--init", str(out),
                     "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "give either --tiny or --init, not both" in err[0], err


def test_provenance_records_the_start_the_arrays_and_the_absolute_data_path(trained, tmp_path, monkeypatch):
    """init= was not recorded, arrays had data_sha256 None, and data_file was the path as given ('own.h5')."""
    path, out, model, stim, counts, _ = trained
    stored = torch.load(out, map_location="cpu", weights_only=True)["weights_sha256"]   # save_model's own digest
    monkeypatch.chdir(path.parent)
    again = nr.train(path.name, init=out.name, epochs=1, batch_size=32, lr=1e-3, seed=3)
    assert again.provenance["data_file"] == str(path) and os.path.isabs(again.provenance["data_file"])
    assert again.provenance["init"] == {"file": str(out), "weights_sha256": stored}
    assert model.provenance["init"] is None                               # trained from scratch
    from_memory = nr.train((stim, counts), init=nr.load_model(out), epochs=1, batch_size=32, lr=1e-3, seed=3)
    assert from_memory.provenance["init"] == {"file": None, "weights_sha256": stored}
    # arrays: a hash of what was trained on, the same for the same arrays and another for one changed count
    assert from_memory.provenance["data_file"] is None
    digest = from_memory.provenance["data_sha256"]
    assert len(digest) == 64 and digest == training._load((stim.copy(), counts.copy()), None).sha256
    changed = counts.copy()
    changed[5, 0] += 1
    assert training._load((stim, changed), None).sha256 != digest
    assert training._load((stim, counts, stim[:100], counts[:100]), None).sha256 != digest


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_training_on_gpu(tmp_path):
    stim, counts, true = ln_data()
    out = tmp_path / "gpu.pt"
    model = nr.train((stim, counts), config=tiny_config(), epochs=4, batch_size=32, lr=1e-2, seed=3, out=out,
                     device="cuda")
    assert model.device.type == "cuda"
    hist = model.provenance["history"]
    assert min(h["heldout_loss"] for h in hist[1:]) < hist[0]["heldout_loss"] - 0.02
    loaded = nr.load_model(out, device="cpu")                       # a GPU checkpoint loads on a CPU
    np.testing.assert_allclose(nr.predict(loaded, stim[:100]), nr.predict(model, stim[:100]), rtol=1e-4, atol=1e-5)


def test_a_run_whose_heldout_loss_is_never_finite_says_it_diverged(tmp_path, monkeypatch):
    """Every epoch's held-out loss NaN (a diverged run): one sentence, not a load_state_dict(None) traceback."""
    from napari_retina import training

    real = training._heldout_entry

    def nan_loss(*args, **kwargs):
        return {**real(*args, **kwargs), "heldout_loss": float("nan")}

    monkeypatch.setattr(training, "_heldout_entry", nan_loss)
    stim, counts, _ = ln_data(frames=300)
    out = tmp_path / "m.pt"
    with pytest.raises(ValueError, match=r"training diverged: the held-out loss was nan in every epoch \(lr 0\.01\)"):
        nr.train((stim, counts), config=tiny_config(), epochs=2, batch_size=32, lr=1e-2, seed=0, device="cpu",
                 out=out)
    assert not out.exists()


# ----------------------------------------------------------------------------- batches larger than the fit range

@pytest.mark.parametrize("batch_size, blocks_per_batch", [(2048, 4), (600, 1), (280, 1), (32, 4)])
def test_no_training_or_calibration_window_leaves_the_fit_range(monkeypatch, batch_size, blocks_per_batch):
    """A batch (or one block of it) larger than the fit range used to make the batch-norm calibration read
    windows past the fit range, into the held-out tail and past the movie's end (IndexError, or a view
    RuntimeError, or, with 280, silently held-out windows). Every window that training and calibration run through conv1
    must end inside the fit range, so that no stimulus frame is shared with the held-out tail."""
    stim, counts, _ = ln_data(frames=300)
    fit_idx, hold_idx = training._split_indices(len(stim), TINY["history"], training.HOLDOUT)
    seen = []
    real = RetinaCNN.first_layer_windows

    def record(self, source, idx, *args, **kwargs):
        seen.append(np.asarray(idx).copy())
        return real(self, source, idx, *args, **kwargs)

    monkeypatch.setattr(RetinaCNN, "first_layer_windows", record)
    model = nr.train((stim, counts), config=tiny_config(), epochs=2, batch_size=batch_size,
                     blocks_per_batch=blocks_per_batch, seed=0, device="cpu")
    assert seen, "training ran no batch through first_layer_windows"
    ends = np.concatenate(seen)
    assert ends.min() >= fit_idx[0] and ends.max() <= fit_idx[-1]
    assert ends.max() - TINY["history"] + 1 < hold_idx[0] - TINY["history"] + 1   # no frame of a held-out window
    assert all(len(e) >= 2 for e in seen)                                            # batch norm needs two
    assert model.provenance["fit_windows"] == len(fit_idx)
    state = model.state_dict()
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_calibration_blocks_stay_inside_the_fit_range():
    """The calibration starts drawn for a block longer than the fit range are that range, once."""
    tc = training.TrainConfig(batch_size=2048, recalibrate=8)
    starts = training._calibration_starts(10, 109, 512, tc)
    np.testing.assert_array_equal(starts, [10])
    for per_block in (1, 7, 50, 99, 100):
        starts = training._calibration_starts(10, 109, per_block, tc)
        assert len(starts) and starts.min() >= 10 and starts.max() + per_block - 1 <= 109


# ----------------------------------------------------------------------------- non-finite weights are never the best


def _all_finite(state):
    return all(bool(torch.isfinite(v).all()) for v in state.values() if v.is_floating_point())


def test_a_diverging_run_never_returns_or_saves_non_finite_weights(tmp_path):
    """lr 1e10 used to end with a finite held-out loss on a state whose bn2 running_var held NaN/inf: it was
    accepted as best, saved (load_model then refused the file) and predicted all-zero rates. Either the run
    says it diverged and writes nothing, or every weight and buffer it returns and saves is finite."""
    stim, counts, _ = ln_data(frames=300)
    out = tmp_path / "m.pt"
    try:
        model = nr.train((stim, counts), config=tiny_config(), epochs=2, batch_size=32, lr=1e10, seed=0,
                         device="cpu", out=out)
    except ValueError as exc:
        assert "training diverged" in str(exc) and "lower the learning rate" in str(exc)
        assert not out.exists()
        return
    assert _all_finite(model.state_dict())
    loaded = nr.load_model(out, device="cpu")                       # refused before: unusable weights
    assert _all_finite(loaded.state_dict())
    assert np.isfinite(nr.predict(loaded, stim[:50])).all()


def test_an_epoch_with_non_finite_buffers_is_never_the_best(tmp_path, monkeypatch, capsys):
    """Every epoch leaves an infinite batch-norm variance behind a finite held-out loss: no epoch is usable, so the
    run fails with the diverged sentence (CLI: one line, exit 2) and writes no checkpoint."""
    real = training._epoch

    def poisoned(run, *args, **kwargs):
        result = real(run, *args, **kwargs)
        with torch.no_grad():
            run.model.bn2.bn.running_var[0] = float("inf")      # the eval-mode output stays finite
        return result

    monkeypatch.setattr(training, "_epoch", poisoned)
    stim, counts, _ = ln_data(frames=300)
    out = tmp_path / "m.pt"
    with pytest.raises(ValueError, match=r"training diverged .*after epoch 2, bn2\.bn\.running_var holds 1 NaN.*lower the learning rate"):
        nr.train((stim, counts), config=tiny_config(), epochs=2, batch_size=32, seed=0, device="cpu",
                 recalibrate=0, out=out)
    assert not out.exists()
    data = write_h5(tmp_path / "d.h5", stim, counts)
    assert cli.main(["train", str(data), "--out", str(out), "--tiny", "--epochs", "2", "--batch-size", "32",
                     "--recalibrate", "0", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "training diverged" in err[0], err
    assert not out.exists()


def test_the_best_epoch_is_the_best_one_with_finite_weights(tmp_path, monkeypatch):
    """Epoch 2 has the lowest held-out loss but an infinite batch-norm variance: epoch 1 is returned and saved,
    finite, and load_model accepts the checkpoint (before, epoch 2 was saved and load_model refused it)."""
    real_epoch, real_entry = training._epoch, training._heldout_entry

    def poisoned(run, *args, **kwargs):
        result = real_epoch(run, *args, **kwargs)
        if len(run.history) == 2:                                  # epoch 2 (history: epoch 0, epoch 1)
            with torch.no_grad():
                run.model.bn2.bn.running_var[0] = float("inf")
        return result

    def lowest_at_2(run, tc, epoch, *args, **kwargs):
        entry = real_entry(run, tc, epoch, *args, **kwargs)
        return {**entry, "heldout_loss": 0.0} if epoch == 2 else entry

    monkeypatch.setattr(training, "_epoch", poisoned)
    monkeypatch.setattr(training, "_heldout_entry", lowest_at_2)
    stim, counts, _ = ln_data(frames=300)
    out = tmp_path / "m.pt"
    model = nr.train((stim, counts), config=tiny_config(), epochs=2, batch_size=32, seed=0, device="cpu",
                     recalibrate=0, out=out)
    assert model.provenance["best_epoch"] == 1
    assert _all_finite(model.state_dict())
    loaded = nr.load_model(out, device="cpu")
    assert loaded.provenance["best_epoch"] == 1 and _all_finite(loaded.state_dict())



@pytest.mark.parametrize("lr_patience, lrs, epochs_run", [
    # the rate each epoch ran at: epoch 0 (the start), 1 (the best), then bad epochs 2, 3, 4
    (1, [1e-2, 1e-2, 1e-2, 5e-3, 2.5e-3], 4),      # every epoch without improvement halves it
    (2, [1e-2, 1e-2, 1e-2, 1e-2, 5e-3], 4),        # the second in a row does
    (3, [1e-2, 1e-2, 1e-2, 1e-2, 1e-2], 4),        # the third, when patience=3 stops the run
])
def test_lr_patience_counts_epochs_without_improvement_as_patience_does(monkeypatch, lr_patience, lrs, epochs_run):
    """lr_patience=N halved the learning rate after N + 1 bad epochs (torch's count) though documented as N."""
    stim, counts, _ = ln_data(frames=300)
    losses = iter([1.0, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])      # epoch 0, then one improvement and bad epochs only
    real = training._heldout_entry

    def scripted(run, tc, epoch, train_loss, lr):
        return {**real(run, tc, epoch, train_loss, lr), "heldout_loss": next(losses)}

    monkeypatch.setattr(training, "_heldout_entry", scripted)
    model = nr.train((stim, counts), config=tiny_config(), epochs=6, batch_size=64, lr=1e-2, patience=3,
                     lr_patience=lr_patience, device="cpu")
    history = model.provenance["history"]
    assert len(history) - 1 == epochs_run                  # patience=3: stopped after the third bad epoch
    assert [h["lr"] for h in history] == pytest.approx(lrs)


def test_a_run_that_ends_worse_than_it_started_warns_and_one_that_improves_does_not():
    """lr 1e3: the weights stay finite but every epoch's held-out loss is far above the untrained model's; the
    best epoch is returned, as before, but no longer passes unnoticed as a trained model."""
    stim, counts, _ = ln_data(frames=300)
    with pytest.warns(UserWarning, match=r"^training did not improve on the starting model: the best held-out "
                                         r"loss, .* \(epoch \d\), is above the .* before training"):
        model = nr.train((stim, counts), config=tiny_config(), epochs=2, batch_size=32, lr=1e3, seed=0,
                         device="cpu")
    hist = model.provenance["history"]
    assert min(h["heldout_loss"] for h in hist[1:]) > hist[0]["heldout_loss"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")                     # the same data at a sane learning rate: silent
        good = nr.train((stim, counts), config=tiny_config(), epochs=2, batch_size=32, lr=1e-2, seed=0,
                        device="cpu")
    hist = good.provenance["history"]
    assert min(h["heldout_loss"] for h in hist[1:]) < hist[0]["heldout_loss"]


def test_rates_given_as_arrays_that_look_like_hz_warn_as_a_file_s_do():
    """A file's rates warn when read (nr.io.read_dataset); the same rates given as arrays trained without a word."""
    stim, counts, _ = ln_data(frames=400)
    with pytest.warns(UserWarning, match=r"^train rates look like Hz, not spikes per 10 ms bin: 2 of 2 cells "
                                         r"average more than 5 spikes per 10 ms bin") as caught:
        nr.train((stim, counts * 100.0), config=tiny_config(), epochs=1, batch_size=32)
    assert [w.filename for w in caught if "look like Hz" in str(w.message)] == [__file__]
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*look like Hz.*")
        nr.train((stim, counts), config=tiny_config(), epochs=1, batch_size=32)


def test_a_cell_silent_in_every_training_frame_is_warned_of():
    """nr.train fitted a cell whose rates were all zero without a word, and the silent model it made (a bn3 shift
    of -7 over a scale of -3e-4) was what broke attribution's head; one warning names it, at the user's call."""
    stim, counts, _ = ln_data(frames=400)
    counts = counts.copy()
    counts[:, 1] = 0
    with pytest.warns(UserWarning, match=r"^the training rates are zero in every frame for cell 'cell1': a model "
                                         r"learns to keep it silent.*leave such cells out \(cells=\)$") as caught:
        nr.train((stim, counts), config=tiny_config(), epochs=1, batch_size=32)
    assert [w.filename for w in caught if "zero in every frame" in str(w.message)] == [__file__]
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*zero in every frame.*")
        counts[5, 1] = 1.0   # one spike: a cell that fires, however little
        nr.train((stim, counts), config=tiny_config(), epochs=1, batch_size=32)


def test_an_empty_list_of_cells_is_refused_in_one_sentence():
    """It reached the architecture check: "config expects ... 2 cells, the data have 20x20 and 0"."""
    stim, counts, _ = ln_data(frames=400)
    with pytest.raises(ValueError, match=r"^cells must name at least one cell, got an empty list \(the data have 2 "
                                         r"cells, 0\.\.1\); leave cells out to use them all$"):
        nr.train((stim, counts), config=tiny_config(), epochs=1, batch_size=32, cells=[])


def test_the_training_statistics_are_read_a_chunk_at_a_time():
    """The checkpoint's norm took a float64 copy of the whole training movie and a temporary as large (4× the
    stimulus, the whole of training's growth with the data's length); now a chunk's, the same numbers."""
    import tracemalloc

    from napari_retina.training import _norm_for

    stim = nr.stimuli.white_noise(frames=4000, size=50, seed=1, kind="gaussian", contrast=0.7)
    tracemalloc.start()
    try:
        norm = _norm_for(stim)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    x = stim.astype(np.float64)
    assert norm["units"] == "contrast"
    assert norm["mean"] == pytest.approx(x.mean(), rel=1e-9, abs=1e-12) and norm["std"] == pytest.approx(x.std(),
                                                                                                          rel=1e-12)
    assert peak < 0.5 * stim.nbytes, (peak, stim.nbytes)   # before: 4 × the stimulus


def test_a_seed_beyond_torch_s_64_bits_is_refused_naming_it():
    """A reliability audit: seed 2**64 raised torch's "Overflow when unpacking long long", and 2**64 - 1 failed
    only after the model and the data were built (calibration seeds seed + 1)."""
    assert training.TrainConfig(seed=2**64 - 2).seed == 2**64 - 2
    for seed in (2**64 - 1, 2**64, 2**70):
        with pytest.raises(ValueError, match=rf"^seed must be in \[0, {2**64 - 2}\], got {seed}$"):
            training.TrainConfig(seed=seed)
