"""An experiment run reports progress from inside its stages, and Cancel stops it at the next report."""

from __future__ import annotations

import numpy as np
import pytest

import napari_retina as nr
from napari_retina import experiments as E
from napari_retina._progress import Cancelled, within
from napari_retina.experiments import base

SMALL = {"latency": {"intensities": [0.0, -2.0, -5.0, -10.0]},
         "reversal": {"reversals": [-3.0, -1.0, 1.0], "speed": 0.3}}


def test_within_scales_a_stage_into_its_range_and_never_goes_back():
    seen = []
    sub = within(lambda d, t: seen.append((d, t)), 100, 200, 400)
    for d, n in [(0, 10), (5, 10), (10, 10), (0, 4), (2, 4)]:  # a second function counting from 0 again
        sub(d, n)
    assert seen == [(100, 400), (150, 400), (200, 400), (200, 400), (200, 400)]
    assert within(None, 0, 1, 2) is None


@pytest.mark.parametrize("name", ["latency", "reversal"])
def test_run_reports_progress_inside_each_stage(tiny, name, monkeypatch):
    seen, given = [], []
    real = base.reduce

    def reduce(*args, progress=None, **kwargs):  # the reduction reports per batch: one batch on this tiny movie
        given.append(progress)
        return real(*args, progress=progress, **kwargs)

    monkeypatch.setattr(base, "reduce", reduce)
    E.run(name, tiny, cell=0, max_frames=60, steps=32, progress=lambda d, t: seen.append((d, t)), **SMALL[name])
    done = [d for d, _ in seen]
    assert len(seen) > 4 and len({t for _, t in seen}) == 1
    assert done == sorted(done) and done[-1] == seen[-1][1]
    total = seen[-1][1]
    # reports strictly inside the rates and the attribution; the reduction is given a progress of its own
    for lo, hi in [(total // 4, total // 2), (total // 2, 3 * total // 4)]:
        assert any(lo < d < hi for d in done), (lo, hi, done)
    assert len(given) == 1 and callable(given[0])
    if name == "reversal":  # its RF mapping runs the model before the protocol's movie: progress there too
        assert any(0 < d < total // 4 for d in done), done


def test_cancel_inside_the_attribution_stops_the_run_without_more_model_work(tiny):
    calls = [0]
    hooks = [m.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1)) for m in tiny.modules()]
    run = dict(name="latency", model=tiny, cell=0, max_frames=60, steps=32, **SMALL["latency"])
    try:
        at_report = []  # (done, total, forward calls so far) of an uncancelled run
        E.run(progress=lambda d, t: at_report.append((d, t, calls[0])), **run)
        after_attribution = next(c for d, t, c in at_report if d >= 3 * t // 4)
        calls[0] = 0
        at_cancel = []

        def progress(done, total):
            if done > total // 2:  # the first report inside the attribution
                at_cancel.append(calls[0])
                raise nr.Cancelled("cancelled by the user")

        with pytest.raises(nr.Cancelled):
            E.run(progress=progress, **run)
    finally:
        for h in hooks:
            h.remove()
    assert len(at_cancel) == 1
    # stopped after a chunk of the attribution, not all of it, and nothing ran after the report that cancelled
    assert 0 < at_cancel[0] < after_attribution
    assert calls[0] == at_cancel[0]


# ------------------------------------------------- the ground truth's stage ---

def test_the_synthetic_retina_reports_each_block_of_frames_and_stops_when_cancelled():
    gt = nr.synthetic.Retina(seed=0)
    stim = nr.stimuli.white_noise(frames=1200, size=50, seed=0)
    seen = []
    rates = gt.respond(stim, progress=lambda d, t: seen.append((d, t)))
    block = nr.synthetic.CHUNK_FRAMES
    assert seen == [(0, 1200)] + [(min(b + block, 1200), 1200) for b in range(0, 1200, block)]
    np.testing.assert_allclose(rates, gt.respond(stim), rtol=0, atol=0)   # the same numbers with or without

    blocks = []

    def cancel_after_first(done, total):
        blocks.append(done)
        if done > 0:
            raise Cancelled()

    with pytest.raises(Cancelled):
        gt.respond(stim, progress=cancel_after_first)
    assert blocks == [0, block]                          # no block computed after the cancel


def test_run_truth_reports_from_inside_its_responses_and_never_goes_back():
    seen = []
    E.run_truth("reversal", nr.synthetic.Retina(seed=0), 0, progress=lambda d, t: seen.append((d, t)),
                **SMALL["reversal"])
    done = [d for d, _ in seen]
    assert {t for _, t in seen} == {100} and done == sorted(done) and done[-1] == 100
    assert len([d for d in done if 0 < d < 100]) >= 3      # inside the responses, not only before and after


def test_a_battery_reports_inside_each_run_and_a_cancel_in_the_truth_stops_it(shipped_small):
    model, params = shipped_small
    seen = []
    out = E.battery(model, 0, names=["osr"], steps=2, progress=lambda d, t: seen.append((d, t)), **params)
    total = E.battery.__globals__["UNITS"]
    done = [d for d, _ in seen]
    assert {t for _, t in seen} == {total} and done == sorted(done) and done[-1] == total
    split = E.battery.__globals__["MODEL_UNITS"]
    assert any(0 < d < split for d in done) and any(split < d < total for d in done)   # model, then truth
    assert out["truth"]["osr"] is not None

    responded = []
    gt = nr.synthetic.Retina(seed=0)
    real = gt.respond

    def respond(stimulus, progress=None):
        responded.append(len(stimulus))
        return real(stimulus, progress=progress)

    gt.respond = respond

    def cancel_in_truth(done, total):
        if done > split:
            raise Cancelled()

    with pytest.raises(Cancelled):
        E.battery(model, 0, retina=gt, names=["osr", "reversal"], steps=2, progress=cancel_in_truth, **params)
    assert len(responded) == 1       # stopped inside the truth's first response: no reversal was run after it


@pytest.fixture(scope="module")
def shipped_small():
    """The shipped model (trained on the synthetic retina, so a battery compares it) and small osr parameters."""
    return nr.load_model(), {"max_frames": 40}
