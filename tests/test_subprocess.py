"""call_in_subprocess: a core call in a fresh process, with progress, cancel and errors coming back."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

import napari_retina as nr
from napari_retina import _subprocess
from napari_retina._subprocess import call_in_subprocess


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return nr.RetinaCNN(nr.ModelConfig(history=6, size=16, channels=(3, 4), kernels=(5, 3), n_cells=2)).eval()


@pytest.fixture
def children(monkeypatch):
    """Every child process started, to check how it ended."""
    started = []
    real = subprocess.Popen

    def spy(*args, **kwargs):
        started.append(real(*args, **kwargs))
        return started[-1]

    monkeypatch.setattr(_subprocess.subprocess, "Popen", spy)
    return started


def test_result_and_progress_come_back(tiny, children):
    stim = nr.stimuli.white_noise(frames=40, size=16, seed=2)
    reports = []
    got = call_in_subprocess(nr.predict, tiny, stim, batch_size=8, progress=lambda d, t: reports.append((d, t)))
    np.testing.assert_array_equal(got, nr.predict(tiny, stim, batch_size=8))
    assert reports and reports[-1][0] == reports[-1][1] == 35  # the frames with a full history
    assert children[0].returncode == 0


def test_errors_come_back_with_their_type_and_message(tiny):
    short = np.zeros((3, 16, 16), np.float32)
    with pytest.raises(ValueError) as here:
        nr.predict(tiny, short)
    with pytest.raises(ValueError) as there:
        call_in_subprocess(nr.predict, tiny, short)
    assert str(there.value) == str(here.value)


def test_a_raising_progress_cancels_the_child(children):
    rng = np.random.default_rng(0)
    stim = rng.choice([-1.0, 1.0], size=(200, 16, 16)).astype(np.float32)
    rates = rng.poisson(0.5, size=(200, 2)).astype(np.float32)
    config = nr.ModelConfig(history=6, size=16, channels=(3, 4), kernels=(5, 3), n_cells=2)
    reports = []

    def cancel_at_third(done, total):
        reports.append(done)
        if len(reports) == 3:
            raise nr.Cancelled("cancelled by the user")

    with pytest.raises(nr.Cancelled):
        call_in_subprocess(nr.train, (stim, rates), config=config, epochs=10000, patience=10000,
                           progress=cancel_at_third)
    assert len(reports) == 3
    assert children[0].returncode == 0  # it stopped at its next report, it was not killed


def test_a_child_that_dies_is_one_runtime_error(monkeypatch):
    monkeypatch.setattr(_subprocess, "_child_command", lambda: [sys.executable, "-c", "import os; os._exit(3)"])
    with pytest.raises(RuntimeError, match=r"^the predict process ended without an answer \(exit code 3\)$"):
        call_in_subprocess(nr.predict, None, None)


def test_a_cancel_acts_before_the_child_first_reports(tiny, children):
    """The child spends a second or more importing torch before its first report; a cancel then
    must not wait for that report (the parent polls progress with (0, 0) until it comes)."""
    calls = []

    def cancel_at_once(done, total):
        calls.append((done, total))
        raise nr.Cancelled()

    with pytest.raises(nr.Cancelled):
        call_in_subprocess(nr.predict, tiny, nr.stimuli.white_noise(frames=40, size=16, seed=2),
                           progress=cancel_at_once)
    assert calls == [(0, 0)]          # the parent's poll, not a report of the child's
    children[0].wait(timeout=60)
    assert children[0].returncode is not None


def test_the_child_s_warnings_come_back(tiny):
    """A GUI audit: the child's warnings went to its stderr alone, so the Model dock said "Training finished"
    over a training that did not improve on the starting model."""
    import warnings

    stim = 100.0 + nr.stimuli.white_noise(frames=40, size=16, seed=2)   # raw intensities: a units warning
    with warnings.catch_warnings(record=True) as direct:
        warnings.simplefilter("always")
        want = nr.predict(tiny, stim)
    messages = [str(w.message) for w in direct if issubclass(w.category, nr.StimulusUnitsWarning)]
    assert messages
    warned: list = []
    np.testing.assert_array_equal(call_in_subprocess(nr.predict, tiny, stim, warned=warned), want)
    assert [m for c, m in warned if c == "StimulusUnitsWarning"] == messages
    with pytest.warns(UserWarning, match="^StimulusUnitsWarning: ") as again:
        call_in_subprocess(nr.predict, tiny, stim)
    assert [str(w.message).split(": ", 1)[1] for w in again if "StimulusUnitsWarning" in str(w.message)] == messages
