"""An experiment run reports progress from inside its stages, and Cancel stops it at the next report."""

from __future__ import annotations

import pytest

import napari_retina as nr
from napari_retina import experiments as E
from napari_retina._progress import within
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
