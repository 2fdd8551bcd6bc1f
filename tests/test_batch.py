"""Batch runs on a dask LocalCluster (2 worker processes): equal to direct calls, resumable, failures isolated.

A tiny model (history 8, 12×12 pixels) and short stimuli keep the whole file to
tens of seconds; ``block_frames=16`` splits the 50-frame stimulus into blocks
(16 + 16 + 16 + 2 output frames) so the frame-block overlap is exercised.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("distributed")
pytest.importorskip("zarr", minversion="3")

import napari_retina as nr  # noqa: E402
from napari_retina import batch  # noqa: E402
from napari_retina.cli import main  # noqa: E402

STEPS = 4


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A tiny checkpoint, two good stimuli and a broken one."""
    import torch

    d = tmp_path_factory.mktemp("batch-inputs")
    torch.manual_seed(0)
    model = nr.RetinaCNN(nr.ModelConfig(history=8, size=12, channels=(3, 3), kernels=(5, 3), n_cells=2)).eval()
    nr.save_model(model, d / "tiny.pt")
    rng = np.random.default_rng(0)
    np.save(d / "a.npy", rng.standard_normal((50, 12, 12)).astype(np.float32))
    np.save(d / "b.npy", rng.standard_normal((20, 12, 12)).astype(np.float32))
    (d / "broken.npy").write_bytes(b"not an array")
    return d


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as c:
        yield c


def _spec(inputs, out, stimuli=("a.npy", "b.npy"), cells=(0, 1), analyses=("predict", "attribute", "reduce")):
    return {"model": str(inputs / "tiny.pt"), "stimuli": [str(inputs / s) for s in stimuli], "cells": list(cells),
            "analyses": list(analyses), "out": str(out), "block_frames": 16, "steps": STEPS}


def _key(results, stem, suffix):
    (key,) = [k for k in results if f"/{stem}-" in k and k.endswith(suffix)]
    return key


@pytest.fixture(scope="module")
def grid(inputs, client, tmp_path_factory):
    """The grid run once: its report and the store."""
    out = tmp_path_factory.mktemp("batch-out") / "results"
    report = batch.run(_spec(inputs, out), client)
    return report, out


def test_results_equal_direct_calls_and_blocks_equal_the_unsplit_run(inputs, grid):
    report, out = grid
    assert report.failed == [] and len(report.done) == 10   # 2 stimuli × (predict + 2 cells × 2 analyses)
    res = batch.load(out)
    model = nr.load_model(inputs / "tiny.pt")
    for stem in ("a", "b"):
        stim = np.load(inputs / f"{stem}.npy")
        pred = res[_key(res, stem, "/predict")]
        np.testing.assert_allclose(pred.arrays["rates"].compute(), nr.predict(model, stim), rtol=1e-5, atol=1e-6)
        for cell in (0, 1):
            direct = nr.attribute(model, stim, cell=cell, steps=STEPS, invariance="none")
            got = res[_key(res, stem, f"/cell{cell}/attribute")].arrays
            for name in ("maps", "channels", "response", "rates"):
                np.testing.assert_allclose(got[name].compute(), getattr(direct, name), rtol=1e-4, atol=1e-6,
                                           err_msg=f"{stem} cell {cell} {name}")
            red = nr.reduce(direct)
            got = res[_key(res, stem, f"/cell{cell}/reduce")].arrays
            np.testing.assert_array_equal(got["reduction/kept"].compute(), red.kept)
            np.testing.assert_allclose(got["reduction/reduced_response"].compute(), red.reduced_response,
                                       rtol=1e-3, atol=1e-5)
    attrs = res[_key(res, "a", "/cell0/attribute")].attrs
    assert attrs["blocks"] == [[0, 16], [16, 32], [32, 48], [48, 50]]   # split, with history as overlap
    assert {k: attrs["params"][k] for k in ("steps", "invariance", "block_frames")} == \
        {"steps": STEPS, "invariance": "none", "block_frames": 16}
    assert len(attrs["params"]["model_weights"]) == 64 and attrs["params"]["stimulus_file"][0] > 0
    assert attrs["versions"]["napari_retina"] == nr.__version__ and attrs["provenance"]["model_config"]["size"] == 12
    assert attrs["provenance"]["device"] == str(model.device)      # the worker's best device, as load_model picks
    assert attrs["stimulus"] == str(inputs / "a.npy") and attrs["cell"] == 0
    assert not (out / ".tmp").exists() and not (out / ".partial" / _key(res, "a", "/cell0/attribute")).exists()


def test_a_rerun_computes_nothing_and_force_recomputes(inputs, client, grid):
    _, out = grid
    before = {k: os.stat(out / k).st_ino for k in batch.load(out)}
    again = batch.run(_spec(inputs, out), client)
    assert again.done == [] and again.failed == [] and sorted(again.skipped) == sorted(before)
    assert {k: os.stat(out / k).st_ino for k in batch.load(out)} == before   # nothing rewritten
    forced = batch.run(_spec(inputs, out, stimuli=("b.npy",), analyses=("predict",)), client, force=True)
    assert len(forced.done) == 1 and forced.skipped == []


def test_an_experiment_task_equals_the_direct_run(inputs, client, tmp_path):
    spec = {"model": str(inputs / "tiny.pt"), "experiments": ["osr"], "cells": [1], "steps": STEPS,
            "out": str(tmp_path / "r")}
    report = batch.run(spec, client)
    assert report.done == [f"{batch._path_key(str(inputs / 'tiny.pt'))}/experiments/osr/cell1"]
    (res,) = batch.load(tmp_path / "r").values()
    direct = nr.experiments.run("osr", nr.load_model(inputs / "tiny.pt"), cell=1, steps=STEPS)
    np.testing.assert_allclose(res.arrays["rates"].compute(), direct.rates, rtol=1e-5, atol=1e-6)
    (row,) = batch.load(tmp_path / "r").table()
    assert row["name"] == "osr" and row["readout/present"] == direct.readout["present"]
    assert row["readout/slope"] == pytest.approx(direct.readout["slope"], rel=1e-4, nan_ok=True)
    assert row["readout/explained_variance"] == pytest.approx(direct.readout["explained_variance"], rel=1e-4)


def test_a_store_with_nothing_to_draw_says_why_in_napari(inputs, client, tmp_path):
    """napari said only that the reader "returned no data" for a store of experiment results, or of failed tasks."""
    from napari_retina._napari._batch_reader import napari_get_reader

    spec = {"model": str(inputs / "tiny.pt"), "experiments": ["osr"], "cells": [1], "steps": STEPS,
            "out": str(tmp_path / "r")}
    assert len(batch.run(spec, client).done) == 1
    with pytest.raises(ValueError, match=r"^the results store 'r' holds only results without a stimulus file to draw "
                                         r"over \(1 experiment result\(s\)\); nr.show\(nr.batch.load\(path\)\[key\]\)"):
        napari_get_reader(str(tmp_path / "r"))(str(tmp_path / "r"))
    failed = _spec(inputs, tmp_path / "f", stimuli=("broken.npy",), cells=(0,), analyses=("predict",))
    assert batch.run(failed, client).exit_code == 1
    with pytest.raises(ValueError, match=r"^the results store 'f' holds no complete result yet"):
        napari_get_reader(str(tmp_path / "f"))(str(tmp_path / "f"))


def test_a_changed_stimulus_file_is_computed_again(inputs, client, tmp_path):
    stim = tmp_path / "c.npy"
    np.save(stim, np.zeros((20, 12, 12), np.float32))
    spec = {**_spec(inputs, tmp_path / "r", analyses=("predict",)), "stimuli": [str(stim)]}
    assert len(batch.run(spec, client).done) == 1
    new = np.random.default_rng(1).standard_normal((20, 12, 12)).astype(np.float32)
    np.save(stim, new)
    os.utime(stim, ns=(os.stat(stim).st_atime_ns, os.stat(stim).st_mtime_ns + 10**9))   # a clock tick later
    again = batch.run(spec, client)
    assert len(again.done) == 1 and again.skipped == []
    (res,) = batch.load(tmp_path / "r").values()
    np.testing.assert_allclose(res.arrays["rates"].compute(), nr.predict(nr.load_model(inputs / "tiny.pt"), new),
                               rtol=1e-5, atol=1e-6)


def test_a_broken_input_or_a_bad_cell_fails_alone(inputs, client, tmp_path):
    spec = _spec(inputs, tmp_path / "r", stimuli=("b.npy", "broken.npy"), cells=(0, 5), analyses=("attribute",))
    lines: list = []
    report = batch.run(spec, client, log=lines.append)
    assert report.exit_code == 1
    # the three failed while planning: the banner counts the one task sent to the workers, and says so
    assert lines[0].endswith("; 1 task to compute (3 failed before running) on 2 workers"), lines
    assert len(report.done) == 1 and report.done[0].endswith("/cell0/attribute") and "/b-" in report.done[0]
    failed = dict(report.failed)
    assert len(failed) == 3
    broken = [m for label, m in failed.items() if "broken.npy" in label]
    assert len(broken) == 2 and all("is not a .npy file or its header is corrupt" in m for m in broken)
    assert failed[f"attribute of {inputs / 'b.npy'} (model {inputs / 'tiny.pt'}, cell 5)"] == \
        f"cell 5 is out of range: model {inputs / 'tiny.pt'} has 2 cells (0 to 1)"
    assert list(batch.load(tmp_path / "r")) == report.done


def test_a_cell_error_found_by_the_worker_is_reported_in_one_sentence(inputs, client, tmp_path):
    """A spec whose task fails inside the worker (here: an invariance the stimulus lacks) fails alone."""
    spec = {**_spec(inputs, tmp_path / "r", stimuli=("b.npy",), cells=(0,), analyses=("predict", "attribute")),
            "invariance": "space"}
    report = batch.run(spec, client)
    assert len(report.done) == 1 and report.done[0].endswith("/predict")
    ((label, message),) = report.failed
    assert label.startswith(f"attribute of {inputs / 'b.npy'}") and "space" in message and "\n" not in message
    # the remedy is one the spec accepts ('auto' is refused there: every block must have the same maps)
    assert message.endswith("varies along y and x; set the spec's 'invariance' to 'none'") and "auto" not in message


def test_a_checkpoint_saved_again_with_other_raw_statistics_makes_its_results_outdated(inputs, client, tmp_path):
    """A helper's audit: a raw-unit checkpoint saved again with corrected statistics (same weights) left its
    results marked current, 0.136 off nr.predict with it; its raw statistics are part of a result's identity."""
    import dataclasses

    model = nr.load_model(inputs / "tiny.pt")
    raw = nr.RetinaCNN(dataclasses.replace(model.config, norm={"mean": 127.0, "std": 60.0, "units": "raw"}))
    raw.load_state_dict(model.state_dict())
    nr.save_model(raw.eval(), tmp_path / "raw.pt")
    np.save(tmp_path / "u8.npy", np.random.default_rng(3).integers(0, 256, (30, 12, 12), dtype=np.uint8))
    spec = {**_spec(inputs, tmp_path / "r", stimuli=(), analyses=("predict",)), "model": str(tmp_path / "raw.pt"),
            "stimuli": [str(tmp_path / "u8.npy")]}
    assert batch.run(spec, client).exit_code == 0
    fixed = nr.RetinaCNN(dataclasses.replace(model.config, norm={"mean": 90.0, "std": 30.0, "units": "raw"}))
    fixed.load_state_dict(model.state_dict())
    nr.save_model(fixed.eval(), tmp_path / "raw.pt")
    report = batch.run(spec, client)
    assert len(report.done) == 1 and report.skipped == []      # recomputed, not skipped as current
    (res,) = batch.load(tmp_path / "r").values()
    stim = np.load(tmp_path / "u8.npy")
    np.testing.assert_allclose(res.arrays["rates"].compute(), nr.predict(nr.load_model(tmp_path / "raw.pt"), stim),
                               rtol=1e-5, atol=1e-6)


def test_a_model_that_does_not_load_fails_its_tasks_with_every_cell(inputs, tmp_path):
    """A helper's audit: with cells "all", a checkpoint that failed to load had no cells, so its attribute tasks
    vanished and the batch reported 0 failed and exit 0."""
    (tmp_path / "broken.pt").write_bytes(b"garbage")
    spec = {**_spec(inputs, tmp_path / "r", stimuli=("a.npy",), analyses=("attribute",)), "cells": "all",
            "model": str(tmp_path / "broken.pt")}
    (task,) = batch.plan(batch.parse_spec(spec))
    assert task.kind == "attribute" and task.error.startswith(f"model {tmp_path / 'broken.pt'}: ")


@pytest.mark.parametrize("shape", [(), (45,), (45, 12)])
def test_a_stimulus_of_the_wrong_dimensions_fails_its_own_tasks_only(inputs, tmp_path, shape):
    """A helper's audit: a 0-, 1- or 2-D HDF5 dataset was an IndexError while planning, ending the whole batch."""
    import h5py

    with h5py.File(tmp_path / "flat.h5", "w") as h5:
        h5.create_dataset("stimulus", data=np.zeros(shape, np.float32))
    spec = {**_spec(inputs, tmp_path / "r", stimuli=("a.npy",), cells=(0,), analyses=("predict",)),
            "stimuli": [str(inputs / "a.npy"), str(tmp_path / "flat.h5")]}
    tasks = batch.plan(batch.parse_spec(spec))
    assert [t.error for t in tasks] == [None, f"the stimulus in flat.h5 must be a (T, H, W) stack, got {len(shape)} "
                                              f"dimension(s) with shape {shape}"]


def test_the_store_reader_counts_what_it_does_not_draw():
    """A helper's audit: an attribute result without maps (invariance "space") was dropped as silently as the
    other kinds were; each is counted in the reader's notification."""
    from types import SimpleNamespace

    from napari_retina._napari._batch_reader import _undrawn

    def res(kind, maps=True):
        return SimpleNamespace(attrs={"kind": kind}, arrays={"maps": None} if maps else {})

    results = {1: res("attribute"), 2: res("experiment"), 3: res("attribute", maps=False), 4: res("predict"),
               5: res("predict")}
    assert _undrawn(results) == "2 predict, 1 attribute (no maps: invariance 'space') and 1 experiment result(s)"
    assert _undrawn({1: res("attribute")}) == ""


def test_a_damaged_manifest_is_kept_aside_and_rebuilt_from_the_results(inputs, client, tmp_path):
    """A helper's audit: a manifest that could not be read was replaced by the next run's, and the earlier runs'
    intact results dropped out of load and the reader without a word."""
    out = tmp_path / "r"
    first = {**_spec(inputs, out, stimuli=("b.npy",), cells=(0,), analyses=("predict",))}
    assert batch.run(first, client).exit_code == 0
    (out / batch.MANIFEST).write_text("{not json")
    second = {**_spec(inputs, out, stimuli=("a.npy",), cells=(0,), analyses=("predict",))}
    with pytest.warns(UserWarning, match=r"could not be read .*; it was kept as napari-retina-batch.json.damaged and "
                                         r"rebuilt from the 1 complete result\(s\) in the store"):
        assert batch.run(second, client).exit_code == 0
    assert sorted(k.split("/")[1].split("-")[0] for k in batch.load(out)) == ["a", "b"]
    assert (out / f"{batch.MANIFEST}.damaged").read_text() == "{not json"


def test_cancelling_a_run_on_a_client_passed_in_cancels_its_queued_work(inputs, client, tmp_path):
    """A helper's audit: a run cancelled through its progress callback, on a client passed in (--scheduler),
    returned while its tasks went on computing and committing after the store's lock was released."""
    spec = _spec(inputs, tmp_path / "r", cells=(0, 1), analyses=("attribute", "reduce"))
    calls = []

    def progress(done, total):
        calls.append(done)
        if done >= 1:
            raise nr.Cancelled()

    with pytest.raises(nr.Cancelled):
        batch.run(spec, client, progress=progress)
    time.sleep(1.0)
    left = [k for k in client.futures if str(k).startswith(("block-", "task-"))]
    assert left == []                                   # released: nothing of this run still queued on the cluster
    assert len(batch.load(tmp_path / "r")) < 8          # not every task went on to completion


def test_a_movie_shorter_than_the_history_fails_every_analysis(inputs, client, tmp_path):
    # its blocks all lie before the first full history: attribute used to store all-NaN arrays as complete
    np.save(tmp_path / "short.npy", np.zeros((5, 12, 12), np.float32))   # history 8
    spec = {**_spec(inputs, tmp_path / "r", stimuli=(), cells=(0,), analyses=("predict", "attribute", "reduce")),
            "stimuli": [str(tmp_path / "short.npy")]}
    expected = "the stimulus in short.npy has 5 frame(s) but the model needs at least its history of 8 frames (80 ms)"
    # refused while planning, by the check nr.predict makes, not by whatever a worker happens to meet
    assert [t.error for t in batch.plan(batch.parse_spec(spec))] == [expected] * 3
    report = batch.run(spec, client)
    assert report.done == [] and report.exit_code == 1
    messages = dict(report.failed)
    assert sorted(label.split(" of ")[0] for label in messages) == ["attribute", "predict", "reduce"]
    assert all(m == expected for m in messages.values())
    assert list(batch.load(tmp_path / "r")) == []


def test_an_empty_stimulus_fails_its_tasks_as_read_stimulus_refuses_it(inputs, client, tmp_path):
    # a 0-frame stack made split tasks of no blocks, stored as complete with no arrays; table() then crashed
    np.save(tmp_path / "empty.npy", np.zeros((0, 12, 12), np.float32))
    with pytest.raises(ValueError) as refused:
        nr.io.read_stimulus(tmp_path / "empty.npy")
    out = tmp_path / "r"
    spec = {**_spec(inputs, out, cells=(0,)), "stimuli": [str(inputs / "b.npy"), str(tmp_path / "empty.npy")]}
    report = batch.run(spec, client)
    assert report.exit_code == 1 and len(report.done) == 3 and all("/b-" in k for k in report.done)
    failed = dict(report.failed)
    assert sorted(label.split(" of ")[0] for label in failed) == ["attribute", "predict", "reduce"]
    assert all(str(tmp_path / "empty.npy") in label for label in failed)
    assert set(failed.values()) == {str(refused.value)} == {"the stimulus in empty.npy must not be empty, got shape "
                                                             "(0, 12, 12)"}
    results = batch.load(out)
    assert sorted(results) == sorted(report.done) and len(results.table()) == 3
    # a file of 0 bytes: the sentence predict gives, not the .npy header's "EOF: reading magic string" (an audit)
    (tmp_path / "zero.npy").write_bytes(b"")
    with pytest.raises(ValueError) as refused:
        nr.io.read_stimulus(tmp_path / "zero.npy")
    spec0 = {**_spec(inputs, tmp_path / "r0", cells=(0,), analyses=("predict",)),
             "stimuli": [str(tmp_path / "zero.npy")]}
    assert [message for _, message in batch.run(spec0, client).failed] == [str(refused.value)]
    assert "is empty (0 bytes)" in str(refused.value)
    # a result of no blocks that an earlier version stored is not served (its table row would read no block)
    key = next(t.key for t in batch.plan(batch.parse_spec(spec)) if "/empty-" in t.key and t.kind == "predict")
    (out / key).mkdir(parents=True)
    (out / key / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {
        "complete": True, "kind": "predict", "name": "predict", "model": "m", "stimulus": "s", "cell": None,
        "blocks": []}}))
    assert key not in batch.load(out) and len(batch.load(out).table()) == 3


def test_a_workers_warning_is_one_line_from_the_command_naming_the_task(inputs, client, tmp_path, capfd):
    """Workers printed warnings in Python's format ('/…/batch.py:669: StimulusUnitsWarning: …' and the source
    line); every other command prints 'napari-retina: StimulusUnitsWarning: …' on one line."""
    from napari_retina._validate import StimulusUnitsWarning

    np.save(tmp_path / "bright.npy", np.random.default_rng(1).uniform(0, 255, (20, 12, 12)).astype(np.float32))
    spec = {**_spec(inputs, tmp_path / "r", stimuli=(), cells=(0,), analyses=("predict",)),
            "stimuli": [str(tmp_path / "bright.npy")]}
    with pytest.warns(StimulusUnitsWarning, match=r"^predict of .*bright\.npy .*: "):
        assert batch.run({**spec, "out": str(tmp_path / "api")}, client).exit_code == 0
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    capfd.readouterr()
    assert main(["batch", str(path), "--scheduler", client.scheduler.address, "--quiet"]) == 0
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if "Warning" in line]
    assert len(lines) == 1 and lines[0].startswith(f"napari-retina: StimulusUnitsWarning: predict of "
                                                  f"{tmp_path / 'bright.npy'} (model "), err
    assert "batch.py" not in err and "warnings.warn" not in err


def test_a_killed_worker_leaves_no_partial_result_and_the_rerun_completes_it(inputs, client, tmp_path):
    import dask
    from distributed import Client, LocalCluster

    out = tmp_path / "r"
    spec = _spec(inputs, out, stimuli=("a.npy",), cells=(0,), analyses=("attribute",))
    key = batch.plan(batch.parse_spec(spec))[0].key
    env = {batch._CRASH_ENV: f".partial/{key}/b00001"}   # the worker dies writing block 1
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), \
            LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0", env=env) as cl, \
            Client(cl) as killing:
        report = batch.run(spec, killing)
    ((label, message),) = report.failed
    assert "its worker died" in message
    assert not (out / key).exists() and key not in batch.load(out)
    assert not (out / ".partial" / key / "b00001").exists()
    leftovers = list((out / ".tmp").iterdir())
    assert leftovers and any(p.name == "zarr.json" for t in leftovers for p in t.rglob("*"))   # the dead write
    block0 = out / ".partial" / key / "b00000"
    inode0 = os.stat(block0).st_ino if block0.exists() else None
    assert inode0 is None or (block0 / "zarr.json").exists()   # a failed task's committed block is kept

    again = batch.run(spec, client)
    assert again.done == [key] and again.failed == []
    assert not (out / ".tmp").exists()                           # the dead worker's folder is removed, then .tmp
    assert not (out / ".partial").exists()                       # and, every task committed, .partial's folders
    if inode0 is not None:
        assert os.stat(out / key / "b00000").st_ino == inode0    # the committed block was kept, not recomputed
    direct = nr.attribute(nr.load_model(inputs / "tiny.pt"), np.load(inputs / "a.npy"), cell=0, steps=STEPS,
                          invariance="none")
    np.testing.assert_allclose(batch.load(out)[key].arrays["maps"].compute(), direct.maps, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("spec, match", [
    ({"stimuli": ["a.npy"], "analyses": ["predict"], "out": "r", "colour": 1}, "got unknown 'colour'"),
    ({"stimuli": ["a.npy"], "analyses": ["predcit"], "out": "r"}, "spec analyses must be among predict, attribute, "
                                                                   "reduce, got 'predcit'"),
    ({"stimuli": ["nothing*.npy"], "analyses": ["predict"], "out": "r"}, "spec stimulus 'nothing\\*.npy' matches no file"),
    ({"stimuli": ["a.npy"], "analyses": ["predict"], "out": "r", "cells": [0, -1]}, "spec key 'cells' must be 'all' or"),
    ({"stimuli": ["a.npy"], "analyses": ["attribute"], "out": "r", "invariance": "auto"}, "one fixed choice"),
    ({"stimuli": ["a.npy"], "analyses": ["predict"], "out": "r", "block_frames": 0}, "'block_frames' must be an integer of at least 1"),
    ({"stimuli": ["a.npy"], "analyses": ["predict"], "out": "r", "crop": [1.5, 2]}, "spec key 'crop' must be None, "
                                                                                     "'none', 'center'"),
    ({"stimuli": ["a.npy"], "analyses": ["predict"], "out": "r", "crop": "middle"}, "spec key 'crop' must be"),
    ({"stimuli": ["a.npy"], "out": "r"}, "at least one of 'analyses' or 'experiments'"),
    ({"experiments": ["nope"], "out": "r"}, "spec experiments must be among"),
    ({"model": "missing.pt", "stimuli": ["a.npy"], "analyses": ["predict"], "out": "r"}, "no file at"),
    ({"stimuli": ["a.npy"], "analyses": ["predict"]}, "spec key 'out'"),
    ({"stimuli": ["a.npy"], "analyses": 0, "experiments": ["osr"], "out": "r"},   # was read as "no analyses"
     "spec key 'analyses' must be a non-empty list of strings, got 0"),
    ({"stimuli": ["a.npy"], "analyses": ["predict"], "experiments": False, "out": "r"},
     "spec key 'experiments' must be a non-empty list of strings, got False"),
])
def test_a_bad_spec_exits_2_with_one_sentence(inputs, tmp_path, capsys, spec, match):
    path = tmp_path / "spec.json"
    spec = {**spec, "stimuli": [s if "*" in s or s != "a.npy" else str(inputs / s) for s in spec.get("stimuli", [])]} \
        if "stimuli" in spec else spec
    path.write_text(json.dumps(spec))
    with pytest.raises(batch.BatchSpecError, match=match):
        batch.parse_spec(path)
    assert main(["batch", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("napari-retina batch: error: spec") and "\n" not in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("where", ["spec", "--out"])
def test_a_results_folder_that_cannot_be_written_exits_2_before_any_work(inputs, tmp_path, capsys, monkeypatch,
                                                                          where):
    """The spec's 'out' in an unwritable folder gave a raw Path.mkdir traceback, exit 1."""
    import napari_retina.cli._paths

    monkeypatch.setattr(napari_retina.cli._paths.os, "access", lambda path, mode: False)
    monkeypatch.setattr(batch, "plan", lambda spec: pytest.fail("planned before the folder was checked"))
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(_spec(inputs, tmp_path / "locked" / "r", stimuli=("b.npy",), analyses=("predict",))))
    extra = ["--out", str(tmp_path / "locked" / "r")] if where == "--out" else []
    assert main(["batch", str(path), "--quiet", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"napari-retina batch: error: cannot write {str(tmp_path / 'locked' / 'r')!r}: "
                   f"folder {str(tmp_path)!r} is not writable")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.json"]


@pytest.mark.parametrize("name", ["spec.txt", "spec"])
def test_a_spec_file_of_another_suffix_exits_2(inputs, tmp_path, capsys, name):
    """The help says .json, .yaml or .yml, but spec.txt was read as JSON."""
    path = tmp_path / name
    path.write_text(json.dumps(_spec(inputs, tmp_path / "r", stimuli=("b.npy",), analyses=("predict",))))
    assert main(["batch", str(path), "--quiet"]) == 2
    suffix = "'.txt'" if name.endswith(".txt") else "'no suffix'"
    assert capsys.readouterr().err.strip() == (f"napari-retina batch: error: the batch spec must be a .json, .yaml, "
                                               f".yml file (the suffix says which format), got {suffix} "
                                               f"({str(path)!r})")
    assert not (tmp_path / "r").exists()


def test_a_spec_that_is_not_json_exits_2(tmp_path, capsys):
    path = tmp_path / "spec.json"
    path.write_text("{'stimuli': ")
    assert main(["batch", str(path)]) == 2
    assert "is not valid JSON" in capsys.readouterr().err


def test_the_command_runs_on_a_given_scheduler_and_exits_1_when_a_task_failed(inputs, client, tmp_path, capsys):
    path = tmp_path / "spec.yaml"
    path.write_text(f"model: {inputs / 'tiny.pt'}\nstimuli: [{inputs / 'b.npy'}, {inputs / 'broken.npy'}]\n"
                    f"analyses: [predict]\nout: results\n")
    assert main(["batch", str(path), "--scheduler", client.scheduler.address, "--quiet"]) == 1
    captured = capsys.readouterr()
    assert "1 computed, 0 already done, 1 failed" in captured.out
    assert f"failed: predict of {inputs / 'broken.npy'}" in captured.err
    assert len(batch.load(tmp_path / "results")) == 1            # 'out' is relative to the spec's folder
    path.write_text(path.read_text().replace(f", {inputs / 'broken.npy'}", ""))
    assert main(["batch", str(path), "--scheduler", client.scheduler.address, "--quiet"]) == 0
    assert "0 computed, 1 already done, 0 failed" in capsys.readouterr().out


def test_the_napari_reader_opens_the_store_lazily(inputs, grid):
    import dask.array as da

    from napari_retina._napari._batch_reader import napari_get_reader

    _, out = grid
    assert napari_get_reader(str(inputs / "a.npy")) is None
    layers = napari_get_reader(str(out))(str(out))
    images = {kw["name"]: data for data, kw, kind in layers if kind == "image"}
    assert isinstance(images["a"], da.Array) and images["a"].shape == (50, 12, 12)
    maps = [n for n in images if n.startswith("a tiny cell0 ")]
    assert len(maps) == 3 and all(isinstance(images[n], da.Array) and images[n].shape == (50, 8, 8) for n in maps)
    np.testing.assert_array_equal(images["a"][20:22].compute(), np.load(inputs / "a.npy")[20:22])
    # the first map of a result carries its traces for the plugin's plot dock
    carried = [kw["metadata"]["napari_retina"]["traces"] for data, kw, kind in layers
               if "traces" in kw.get("metadata", {}).get("napari_retina", {})]
    assert carried and carried[0]["series"][0]["label"] == "model response"
    assert len(carried[0]["series"][0]["values"]) == 50


def test_the_napari_reader_says_when_a_stimulus_file_changed_since_the_run(inputs, client, tmp_path, monkeypatch):
    """A helper's audit: a recording replaced by another of the same shape had the old maps drawn over it without
    a word; the store's stamp of the file (size, modification time) tells."""
    import napari.utils.notifications as notifications

    from napari_retina._napari._batch_reader import napari_get_reader

    shutil.copy(inputs / "b.npy", tmp_path / "r.npy")
    spec = {**_spec(inputs, tmp_path / "out", stimuli=(), cells=(0,), analyses=("attribute",)),
            "stimuli": [str(tmp_path / "r.npy")]}
    assert batch.run(spec, client).exit_code == 0
    said = []
    monkeypatch.setattr(notifications, "show_warning", said.append)
    napari_get_reader(str(tmp_path / "out"))(str(tmp_path / "out"))
    assert said == []
    np.save(tmp_path / "r.npy", np.random.default_rng(9).standard_normal((20, 12, 12)).astype(np.float32))
    os.utime(tmp_path / "r.npy", ns=(time.time_ns() + 10 ** 9,) * 2)
    napari_get_reader(str(tmp_path / "out"))(str(tmp_path / "out"))
    assert said == ["1 stimulus file(s) of the results store 'out' changed since the run (r: another size or time); "
                    "their results are drawn over the files as they are now, which they were not computed on"]


@pytest.mark.parametrize("modules, heavy", [("napari_retina, napari_retina.batch", ("distributed", "zarr", "torch")),
                                            ("napari_retina.cli", ("distributed", "zarr"))])
def test_importing_the_package_batch_and_the_command_loads_neither_distributed_nor_zarr(modules, heavy):
    code = f"import sys, {modules}; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "[]"


def test_the_plugin_manifest_offers_the_store_reader_for_folders(grid):
    import importlib
    from pathlib import Path

    from npe2 import PluginManifest

    _, out = grid
    manifest = PluginManifest.from_file(Path(nr.__file__).parent / "napari.yaml")
    (reader,) = [r for r in manifest.contributions.readers if r.accepts_directories]
    (command,) = [c for c in manifest.contributions.commands if c.id == reader.command]
    module, name = command.python_name.split(":")
    get_reader = getattr(importlib.import_module(module), name)
    assert get_reader(str(out)) is not None and get_reader(str(out.parent)) is None


def test_without_the_batch_extra_the_command_says_what_to_install(inputs, tmp_path, monkeypatch, capsys):
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(_spec(inputs, tmp_path / "r", analyses=("predict",))))
    monkeypatch.setitem(sys.modules, "distributed", None)    # import distributed -> ImportError
    assert main(["batch", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("napari-retina batch: error: batch runs need dask.distributed and zarr, but 'distributed' is not "
                   "installed; pip install 'napari-retina[batch]'")


def test_an_unreachable_scheduler_is_one_sentence():
    with pytest.raises(ValueError, match=r"^cannot reach a dask scheduler at 'tcp://127.0.0.1:1' within 1 s"):
        batch.connect("tcp://127.0.0.1:1", timeout_s=1)


def test_an_existing_stimulus_with_glob_characters_in_its_name_is_taken_literally(inputs, tmp_path):
    # "run[1].npy" as a glob is the character class [1]: it would match run1.npy, or nothing
    literal, lookalike = tmp_path / "run[1].npy", tmp_path / "run1.npy"
    np.save(literal, np.zeros((20, 12, 12), np.float32))
    np.save(lookalike, np.ones((20, 12, 12), np.float32))
    spec = batch.parse_spec({"model": str(inputs / "tiny.pt"), "stimuli": [str(literal)], "analyses": ["predict"],
                             "out": str(tmp_path / "r")})
    assert spec.stimuli == (literal.resolve(),)
    path = tmp_path / "spec.json"                  # relative to a spec file, too; a glob still expands
    path.write_text(json.dumps({"stimuli": ["run[1].npy", "run?.npy"], "analyses": ["predict"], "out": "r"}))
    assert batch.parse_spec(path).stimuli == (literal.resolve(), lookalike.resolve())


def test_a_rerun_on_a_changed_input_that_fails_leaves_no_outdated_result(inputs, client, tmp_path):
    stim = tmp_path / "c.npy"
    np.save(stim, np.zeros((20, 12, 12), np.float32))
    out = tmp_path / "r"
    spec = {**_spec(inputs, out, analyses=("predict", "attribute"), cells=(0,)), "stimuli": [str(stim)]}
    assert len(batch.run(spec, client).done) == 2
    keys = sorted(batch.load(out))
    bad = np.random.default_rng(1).standard_normal((15, 12, 12)).astype(np.float32)
    bad[10, 3, 3] = np.nan                       # the recording is replaced by another one, which fails
    np.save(stim, bad)
    os.utime(stim, ns=(os.stat(stim).st_atime_ns, os.stat(stim).st_mtime_ns + 10**9))
    again = batch.run(spec, client)
    assert again.done == [] and again.skipped == [] and len(again.failed) == 2
    assert list(batch.load(out)) == [] and not any((out / k).exists() for k in keys)
    assert not (out / ".tmp").exists()
    # a file that can no longer be read at all (a failure found while planning) drops its results too
    np.save(stim, np.zeros((20, 12, 12), np.float32))
    assert len(batch.run(spec, client).done) == 2 and sorted(batch.load(out)) == keys
    stim.write_bytes(b"not an array any more")
    assert len(batch.run(spec, client).failed) == 2 and list(batch.load(out)) == []


def test_a_rerun_that_cannot_read_its_inputs_keeps_their_results(inputs, client, tmp_path, monkeypatch):
    """An input that cannot be read at the rerun but has not changed (a permission or a disk error), or a model
    that cannot be loaded (its weights unknown), does not tell that a result is outdated: removing it would lose
    work that nothing has invalidated."""
    stim, model = tmp_path / "c.npy", tmp_path / "m.pt"
    np.save(stim, np.zeros((20, 12, 12), np.float32))
    shutil.copy(inputs / "tiny.pt", model)
    out = tmp_path / "r"
    spec = {**_spec(inputs, out, analyses=("predict", "attribute"), cells=(0,)), "stimuli": [str(stim)],
            "model": str(model)}
    assert len(batch.run(spec, client).done) == 2
    keys = sorted(batch.load(out))

    def unreadable(path):
        raise PermissionError(13, "Permission denied", str(path))

    with monkeypatch.context() as m:     # the file is there, unchanged, but cannot be read now
        m.setattr(batch, "stimulus_shape", unreadable)
        assert len(batch.run(spec, client).failed) == 2 and sorted(batch.load(out)) == keys
    good = model.read_bytes()
    model.write_bytes(b"not a checkpoint")
    assert len(batch.run(spec, client).failed) == 2 and sorted(batch.load(out)) == keys
    model.write_bytes(good)
    again = batch.run(spec, client)     # readable again, unchanged: nothing to recompute
    assert len(again.skipped) == 2 and sorted(batch.load(out)) == keys


def test_a_split_tasks_scalars_are_the_whole_tasks_not_block_0s(inputs, grid):
    from napari_retina.metrics import map_limit

    _, out = grid
    res = batch.load(out)
    model = nr.load_model(inputs / "tiny.pt")
    direct = nr.attribute(model, np.load(inputs / "a.npy"), cell=1, steps=STEPS, invariance="none")
    key = _key(res, "a", "/cell1/attribute")
    assert len(res[key].attrs["blocks"]) == 4
    scalars = res[key].scalars()
    assert scalars["completeness_error"] == pytest.approx(direct.completeness_error, rel=1e-3, abs=1e-6)
    assert scalars["map_limit"] == pytest.approx(map_limit(direct.maps), rel=1e-5)
    assert scalars["steps"] == direct.steps
    (row,) = [r for r in res.table() if r["key"] == key]
    assert row["completeness_error"] == scalars["completeness_error"] and row["map_limit"] == scalars["map_limit"]
    # block 0 alone is normalised by its own largest response: not the task's number
    block0 = nr.attribute(model, np.load(inputs / "a.npy")[:16], cell=1, steps=STEPS, invariance="none")
    assert block0.completeness_error != pytest.approx(direct.completeness_error, rel=1e-3)


def test_the_blockwise_map_limit_equals_the_percentile_of_the_whole(tmp_path):
    from napari_retina.metrics import map_limit, map_limit_of_blocks

    rng = np.random.default_rng(3)
    maps = rng.standard_cauchy((101, 3, 4, 5)).astype(np.float32)
    maps[7, 1] = np.nan
    for cuts in ([101], [16, 32, 48, 101], [1, 2, 100, 101]):
        blocks = np.split(maps, cuts[:-1])
        assert map_limit_of_blocks(blocks) == pytest.approx(map_limit(maps), rel=1e-6)
    assert map_limit_of_blocks([np.zeros((4, 2, 3, 3))]) == map_limit(np.zeros((4, 2, 3, 3))) == 1.0


def test_with_the_default_tolerance_a_split_attribution_agrees_with_the_unsplit_run_within_tol(inputs, client,
                                                                                                tmp_path):
    """What the module docstring and the README say: equal with fixed steps (tested above), within tol without."""
    from napari_retina.attribution._adaptive import DEFAULT_TOL

    stim = np.load(inputs / "a.npy")
    stim[30:] *= 3                                 # later blocks respond more than the first: maxima differ by block
    np.save(tmp_path / "loud.npy", stim)
    spec = {**_spec(inputs, tmp_path / "r", analyses=("attribute",)), "stimuli": [str(tmp_path / "loud.npy")]}
    del spec["steps"]
    report = batch.run(spec, client)
    assert len(report.done) == 2
    res = batch.load(tmp_path / "r")
    model = nr.load_model(inputs / "tiny.pt")
    for cell in (0, 1):
        got = res[_key(res, "loud", f"/cell{cell}/attribute")]
        assert len(got.attrs["blocks"]) == 4
        unsplit = nr.attribute(model, stim, cell=cell, invariance="none")       # tol = DEFAULT_TOL
        maps, idx = got.arrays["maps"].compute(), unsplit.frames
        # each frame's completeness gap, against the whole movie's largest response (a reference computed here)
        gap = np.abs(got.arrays["channels"].compute()[idx].sum(1).astype(np.float64) - unsplit.response[idx])
        assert gap.max() <= DEFAULT_TOL * np.abs(unsplit.response[idx]).max()
        assert got.scalars()["completeness_error"] <= DEFAULT_TOL
        # the maps: both within tol of the exact integral, so within 2 tol of each other, per frame
        frame_norm = np.linalg.norm(unsplit.maps[idx].reshape(len(idx), -1), axis=1)
        diff = np.linalg.norm((maps[idx] - unsplit.maps[idx]).reshape(len(idx), -1), axis=1)
        assert diff.max() <= 2 * DEFAULT_TOL * frame_norm.max()
        np.testing.assert_allclose(got.arrays["response"].compute(), unsplit.response, rtol=1e-5, atol=1e-6)


def test_a_larger_stack_is_refused_naming_the_specs_crop_and_a_crop_is_the_direct_runs(inputs, client, tmp_path):
    from napari_retina._napari._batch_reader import napari_get_reader

    rng = np.random.default_rng(5)
    big = rng.integers(0, 256, (40, 16, 18), dtype=np.uint8)   # z-scored by the cropped window's statistics
    np.save(tmp_path / "big.npy", big)
    spec = {**_spec(inputs, tmp_path / "r", cells=(1,)), "stimuli": [str(tmp_path / "big.npy")]}
    report = batch.run(spec, client)
    assert report.done == [] and len(report.failed) == 3
    assert {m for _, m in report.failed} == {"the stimulus in big.npy is 16x18 pixels but the model expects 12x12; "
                                             "set the spec's 'crop' to 'center' or [y0, x0] to cut a window out of "
                                             "a larger stack"}
    model = nr.load_model(inputs / "tiny.pt")
    for crop in ([1, 5], "center"):
        report = batch.run({**spec, "crop": crop}, client)   # the crop is a parameter: each is computed
        assert report.failed == [] and len(report.done) == 3
        res = batch.load(tmp_path / "r")
        direct_crop = tuple(crop) if isinstance(crop, list) else crop
        np.testing.assert_allclose(res[_key(res, "big", "/predict")].arrays["rates"].compute(),
                                   nr.predict(model, big, crop=direct_crop), rtol=1e-5, atol=1e-6)
        direct = nr.attribute(model, big, cell=1, steps=STEPS, invariance="none", crop=direct_crop)
        got = res[_key(res, "big", "/cell1/attribute")]
        assert len(got.attrs["blocks"]) == 3 and got.attrs["params"]["crop"] == crop
        for name in ("maps", "channels", "response"):
            np.testing.assert_allclose(got.arrays[name].compute(), getattr(direct, name), rtol=1e-4, atol=1e-6)
        red = res[_key(res, "big", "/cell1/reduce")].arrays
        np.testing.assert_allclose(red["attribution/channels"].compute(), direct.channels, rtol=1e-4, atol=1e-6)
    assert direct.crop_origin == (2, 3)
    # the reader draws the maps over the window the crop cut, on the whole stimulus
    layers = napari_get_reader(str(tmp_path / "r"))(str(tmp_path / "r"))
    images = {kw["name"]: kw for _, kw, _ in layers}
    assert np.allclose(images["big"].get("translate", 0), 0)
    maps = [kw for kw in images.values() if kw["metadata"].get("napari_retina", {}).get("role") == "map"]
    assert len(maps) == 3
    offset = model.config.first_layer_offset
    for kw in maps:
        np.testing.assert_allclose(np.asarray(kw["translate"])[1:],
                                   (np.array([2, 3]) + offset) * np.asarray(kw["scale"])[1:])


def test_stimuli_sharing_a_file_stem_get_layer_names_of_their_own(inputs, client, tmp_path):
    # napari renames a duplicate name ("x [1]"); showing the store again then added layers instead of replacing
    from napari_retina._napari._batch_reader import napari_get_reader

    for d in ("d1", "d2"):
        (tmp_path / d).mkdir()
        np.save(tmp_path / d / "x.npy", np.load(inputs / "b.npy"))
    spec = {**_spec(inputs, tmp_path / "r", cells=(0,), analyses=("attribute",)),
            "stimuli": [str(tmp_path / "d*" / "x.npy")]}
    assert len(batch.run(spec, client).done) == 2
    layers = napari_get_reader(str(tmp_path / "r"))(str(tmp_path / "r"))
    names = [kw["name"] for _, kw, _ in layers]
    assert len(names) == 8 and len(set(names)) == 8
    assert {kw["name"]: kw["metadata"]["source"] for _, kw, _ in layers if "source" in kw.get("metadata", {})} == \
        {"d1/x": str(tmp_path / "d1" / "x.npy"), "d2/x": str(tmp_path / "d2" / "x.npy")}


def test_normalize_zscores_every_block_by_the_whole_files_statistics_as_the_direct_call(inputs, client, tmp_path):
    """A float 0–255 movie: without normalize every task warns; with it the split results equal
    nr.predict/nr.attribute(normalize="zscore") on the whole cropped stack, with no warning."""
    import warnings

    from napari_retina._validate import StimulusUnitsWarning

    rng = np.random.default_rng(7)
    # a brightness drift, so that each block's own statistics differ from the whole file's
    bright = (rng.uniform(0, 200, (50, 14, 13)) + np.linspace(0, 55, 50)[:, None, None]).astype(np.float32)
    np.save(tmp_path / "bright.npy", bright)
    spec = {**_spec(inputs, tmp_path / "r", cells=(0,), analyses=("predict", "attribute", "reduce")),
            "stimuli": [str(tmp_path / "bright.npy")], "crop": "center"}
    with pytest.warns(StimulusUnitsWarning):
        assert batch.run(spec, client).exit_code == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error", StimulusUnitsWarning)
        report = batch.run({**spec, "normalize": "zscore"}, client)
    assert report.failed == [] and len(report.done) == 3   # the key changes the parameters: all recomputed
    model = nr.load_model(inputs / "tiny.pt")
    res = batch.load(tmp_path / "r")
    pred = res[_key(res, "bright", "/predict")]
    assert pred.attrs["params"]["normalize"] == "zscore" and len(pred.attrs["blocks"]) == 4
    np.testing.assert_allclose(pred.arrays["rates"].compute(),
                               nr.predict(model, bright, crop="center", normalize="zscore"), rtol=1e-5, atol=1e-6)
    direct = nr.attribute(model, bright, cell=0, steps=STEPS, invariance="none", crop="center", normalize="zscore")
    got = res[_key(res, "bright", "/cell0/attribute")].arrays
    for name in ("maps", "channels", "response"):
        np.testing.assert_allclose(got[name].compute(), getattr(direct, name), rtol=1e-4, atol=1e-6)
    red = res[_key(res, "bright", "/cell0/reduce")].arrays
    np.testing.assert_allclose(red["attribution/channels"].compute(), direct.channels, rtol=1e-4, atol=1e-6)
    assert batch.parse_spec({**spec, "normalize": True}).normalize is True


def test_a_bad_normalize_is_one_sentence(inputs):
    with pytest.raises(batch.BatchSpecError, match=r"^spec key 'normalize' must be false, true or \"zscore\", "
                                                   r"got 'minmax'$"):
        batch.parse_spec({**_spec(inputs, "r"), "normalize": "minmax"})


def _refuse(name):
    raise ValueError(f"not strict JSON: {name}")


def _strict_json(text: str):
    """json.loads that refuses NaN and Infinity (Python writes them; JSON, jq and JavaScript do not have them)."""
    return json.loads(text, parse_constant=_refuse)


def _json_texts(value):
    """The strings in ``value`` that are JSON text (experiment readouts, conditions, params, reduction names)."""
    if isinstance(value, dict):
        for v in value.values():
            yield from _json_texts(v)
    elif isinstance(value, list):
        for v in value:
            yield from _json_texts(v)
    elif isinstance(value, str) and value[:1] in "[{":
        yield value


def test_every_attribute_in_the_store_is_strict_json_and_nan_loads_back_as_nan(inputs, client, tmp_path):
    """An experiment's readout was stored as JSON text holding NaN ('"onset_ms": [NaN, ...]' in
    attributes.readout), which strict parsers refuse, while NAME.json writes null. Now every zarr.json and
    every JSON text in it is strict; load(), table() and the store reader still give NaN."""
    from napari_retina._napari._batch_reader import read_task_layers

    out = tmp_path / "r"
    spec = {**_spec(inputs, out, stimuli=("a.npy",), cells=(0,), analyses=("attribute",)), "experiments": ["osr"]}
    report = batch.run(spec, client)
    assert report.failed == [] and len(report.done) == 2
    files = list(out.rglob("zarr.json"))
    assert len(files) > 10
    for path in files:
        doc = _strict_json(path.read_text(encoding="utf-8"))
        for text in _json_texts(doc.get("attributes", {})):
            _strict_json(text)
    direct = nr.experiments.run("osr", nr.load_model(inputs / "tiny.pt"), cell=0, steps=STEPS)
    onset = np.asarray(direct.readout["onset_ms"], float)
    assert np.isnan(onset).any()   # what the test is about: a readout holding NaN
    res = batch.load(out)
    key = next(k for k in res if "/experiments/osr/" in k)
    (row,) = [r for r in res.table() if r["key"] == key]
    for k, v in direct.readout.items():
        if isinstance(v, float):
            assert row[f"readout/{k}"] == pytest.approx(v, rel=1e-4, nan_ok=True), k
    meta = read_task_layers(res[key])[0][1]["metadata"]
    np.testing.assert_allclose(np.asarray(meta["readout"]["onset_ms"], float), onset, rtol=1e-4)   # NaN where NaN


def test_a_non_finite_float_attribute_is_stored_as_strict_json_and_read_back_as_nan(tmp_path):
    import zarr

    group = zarr.open_group(str(tmp_path / "t" / "b00000"), mode="w")
    batch._write_tree(group, {"completeness_error": float("nan"), "map_limit": float("inf"), "tol": None,
                              "readout": json.dumps({"latency_ms": [float("nan"), 3.0]}),
                              "rates": np.array([np.nan, 1.0], np.float32)})
    doc = _strict_json((tmp_path / "t" / "b00000" / "zarr.json").read_text(encoding="utf-8"))
    assert doc["attributes"]["completeness_error"] is None and doc["attributes"]["map_limit"] == "inf"
    assert _strict_json(doc["attributes"]["readout"]) == {"latency_ms": [None, 3.0]}
    scalars = batch.TaskResult("t", {"kind": "predict"}, {}, tmp_path / "t").scalars()
    assert np.isnan(scalars["completeness_error"]) and scalars["map_limit"] == np.inf and scalars["tol"] is None
    assert np.isnan(zarr.open_group(str(tmp_path / "t" / "b00000"), mode="r")["rates"][0])   # arrays keep NaN


def test_a_finished_run_leaves_no_partial_folder(grid):
    """Every task committed: the empty '.partial/<model>/<stimulus>/cell<c>' folders were left behind."""
    _, out = grid
    assert not (out / ".partial").exists()


def test_predict_attribute_and_reduce_results_carry_the_commands_units(inputs, grid, tmp_path):
    """predict's and attribute's files say what their rates are in ("units"); the batch results did not."""
    import h5py

    _, out = grid
    assert main(["predict", str(inputs / "a.npy"), "--model", str(inputs / "tiny.pt"),
                 "--out", str(tmp_path / "r.h5"), "--quiet"]) == 0
    with h5py.File(tmp_path / "r.h5") as f:
        units = f.attrs["units"]
    res = batch.load(out)
    kinds = {r.attrs["kind"]: r.attrs.get("units") for r in res.values()}
    assert kinds == {"predict": units, "attribute": units, "reduce": units}


@pytest.mark.parametrize("key, value, match", [
    ("steps", 10**30, "spec key 'steps' must be an integer from 1 to 10000, got 10{30}"),
    ("threads", 10**9, "spec key 'threads' must be an integer from 1 to 512, got 1000000000"),
], ids=["steps", "threads"])
def test_steps_and_threads_beyond_their_limits_are_refused(tmp_path, key, value, match):
    """steps=1e30 and threads=1e9 were accepted (a worker would try to start 10^9 threads)."""
    np.save(tmp_path / "s.npy", np.zeros((10, 8, 8), np.float32))
    spec = {"stimuli": [str(tmp_path / "s.npy")], "analyses": ["attribute"], "out": str(tmp_path / "r")}
    assert batch.parse_spec({**spec, key: {"steps": 10_000, "threads": 512}[key]})
    with pytest.raises(batch.BatchSpecError, match=match.replace("10{30}", str(10**30))):
        batch.parse_spec({**spec, key: value})



@pytest.mark.parametrize("name, text", [
    ("spec.json", '{"stimuli": ["s.npy"], "analyses": ["predict"], "out": "r", "out": "elsewhere"}'),
    ("spec.yaml", "stimuli: [s.npy]\nanalyses: [predict]\nout: r\nout: elsewhere\n"),
    ("spec.yaml", "stimuli: [s.npy]\nanalyses: [predict]\nout: r\nmodels: {a: m.pt, a: n.pt}\n"),
])
def test_a_key_given_twice_is_refused_not_the_last_one_taken(tmp_path, name, text):
    """JSON and YAML parsers keep the last of two equal keys: a copy-pasted 'out' wrote the results elsewhere."""
    (tmp_path / name).write_text(text)
    with pytest.raises(batch.BatchSpecError, match=r"is not valid (JSON|YAML) \(key '(out|a)' appears twice in one "
                                                   r"mapping"):
        batch.parse_spec(tmp_path / name)



def test_a_yaml_spec_cannot_run_code(tmp_path, monkeypatch):
    """The spec is read with a safe loader (the duplicate-key check subclasses it): a python tag is refused."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "spec.yaml").write_text("stimuli: !!python/object/apply:os.system ['touch ran']\n"
                                        "analyses: [predict]\nout: r\n")
    with pytest.raises(batch.BatchSpecError, match=r"is not valid YAML \(could not determine a constructor"):
        batch.parse_spec(tmp_path / "spec.yaml")
    assert not (tmp_path / "ran").exists()


def test_empty_or_null_analyses_still_mean_none(tmp_path):
    np.save(tmp_path / "s.npy", np.zeros((10, 8, 8), np.float32))
    for none in (None, []):
        spec = batch.parse_spec({"stimuli": [str(tmp_path / "s.npy")], "analyses": none, "experiments": ["osr"],
                                 "out": str(tmp_path / "r")})
        assert spec.analyses == () and spec.experiments == ("osr",)



def test_processes_started_for_a_local_cluster_ignore_a_terminals_ctrl_c():
    """A terminal's Ctrl-C reaches every process of its group: each worker printed a KeyboardInterrupt
    traceback after "cancelled". Processes started while the cluster starts inherit SIGINT ignored; the
    command's own handler is back afterwards."""
    import signal
    import subprocess
    import sys

    before = signal.getsignal(signal.SIGINT)
    with batch._sigint_ignored():
        child = subprocess.run([sys.executable, "-c", "import signal as s; print(s.getsignal(s.SIGINT) == s.SIG_IGN)"],
                               capture_output=True, text=True, check=True)
    assert child.stdout.strip() == "True"
    assert signal.getsignal(signal.SIGINT) is before


@pytest.mark.parametrize("status,ignored", [(130, True), (0, False), (1, False)])
def test_a_cancelled_command_ignores_further_ctrl_c_while_it_exits(monkeypatch, status, ignored):
    """An audit: Ctrl-C pressed three times 0.3 s apart printed "cancelled", then a 20-line KeyboardInterrupt
    traceback from dask's atexit hook closing its cluster. The command's process ignores SIGINT once it has
    been cancelled (130); otherwise it leaves the handler alone. (Run as a background job, the suite failed here:
    such a job starts with SIGINT ignored.)"""
    import signal

    import napari_retina.cli as cli

    monkeypatch.setattr(cli, "main", lambda: status)
    monkeypatch.setattr("napari_retina._malloc.hold_freed_memory", lambda: None)
    before = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)   # a shell's background job starts with it ignored
    try:
        assert cli.command() == status
        assert (signal.getsignal(signal.SIGINT) == signal.SIG_IGN) is ignored
    finally:
        signal.signal(signal.SIGINT, before)


def test_a_json_spec_with_a_byte_order_mark_is_read(tmp_path):
    """Windows editors write UTF-8 with a BOM: it was refused ("Unexpected UTF-8 BOM")."""
    np.save(tmp_path / "s.npy", np.zeros((10, 8, 8), np.float32))
    (tmp_path / "spec.json").write_text(json.dumps({"stimuli": ["s.npy"], "analyses": ["predict"], "out": "r"}),
                                        encoding="utf-8-sig")
    assert batch.parse_spec(tmp_path / "spec.json").stimuli == ((tmp_path / "s.npy").resolve(),)


def test_blocks_of_an_earlier_layout_are_not_committed_with_the_new_ones(inputs, client, tmp_path):
    """A run killed at its task's commit left 7 blocks of 8 frames under .partial; the rerun with block_frames 16
    committed its 4 blocks beside the old b00004-b00006 (the store then held overlapping blocks)."""
    import dask
    from distributed import Client, LocalCluster

    out = tmp_path / "r"
    small = {**_spec(inputs, out, stimuli=("a.npy",), cells=(0,), analyses=("attribute",)), "block_frames": 8}
    (first,) = batch.plan(batch.parse_spec(small))
    key = first.key
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), \
            LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0",
                         env={batch._CRASH_ENV: key}) as cl, Client(cl) as killing:
        batch.run(small, killing)                                  # dies renaming the task into place
    assert len(list((out / ".partial" / key).glob("b*"))) == len(first.blocks) == 7
    spec = {**small, "block_frames": 16}
    (task,) = batch.plan(batch.parse_spec(spec))
    assert task.key == key and len(task.blocks) < len(first.blocks)
    assert batch.run(spec, client).done == [key]
    assert sorted(p.name for p in (out / key).glob("b*")) == [f"b{i:05d}" for i in range(len(task.blocks))]
    direct = nr.attribute(nr.load_model(inputs / "tiny.pt"), np.load(inputs / "a.npy"), cell=0, steps=STEPS,
                          invariance="none")
    np.testing.assert_allclose(batch.load(out)[key].arrays["maps"].compute(), direct.maps, rtol=1e-4, atol=1e-6)


def test_a_complete_tasks_leftover_blocks_are_removed_when_it_is_skipped(inputs, client, tmp_path):
    """A --force run cancelled after some tasks left their new blocks under .partial for good: the next run
    skipped those tasks as complete and never looked there."""
    out = tmp_path / "r"
    spec = _spec(inputs, out, stimuli=("a.npy",), cells=(0,), analyses=("predict",))
    (key,) = batch.run(spec, client).done
    left = out / ".partial" / key / "b00000"
    left.mkdir(parents=True)
    (left / "zarr.json").write_text("{}")
    again = batch.run(spec, client)
    assert again.skipped == [key] and again.done == []
    assert not (out / ".partial").exists()


def test_a_task_marked_complete_without_its_blocks_is_computed_again(inputs, client, tmp_path):
    """An audit: a block folder deleted (or a store two runs wrote at once) left a task whose attributes said
    complete; reruns printed "already done" and load refused the whole store for it. A rerun now recomputes it."""
    out = tmp_path / "r"
    spec = _spec(inputs, out, stimuli=("a.npy",), cells=(0,), analyses=("predict",))
    (key,) = batch.run(spec, client).done
    shutil.rmtree(out / key / "b00000")
    with pytest.raises(FileNotFoundError, match="block b00000 of its task .* is missing"):
        batch.load(out)
    again = batch.run(spec, client)
    assert again.done == [key] and again.skipped == []
    assert key in batch.load(out)


def test_a_second_run_on_a_store_in_use_is_refused_in_one_sentence(inputs, client, tmp_path, capsys):
    """An audit: two runs on one store at once committed each other's half-written tasks (the second found blocks
    missing, a task was left complete without its blocks). The store is held by the run that writes it."""
    out = tmp_path / "r"
    spec = _spec(inputs, out, stimuli=("a.npy",), cells=(0,), analyses=("predict",))
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    out.mkdir()
    with batch.store_lock(out):   # as a running batch holds it (flock: another open of the file is refused)
        with pytest.raises(batch.StoreInUseError, match=rf"is being written by another batch run \(pid {os.getpid()} "):
            batch.run(spec, client)
        assert main(["batch", str(path), "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("napari-retina batch: error: the results store") and "\n" not in err
        assert not (out / batch.MANIFEST).exists()   # nothing of the store was touched
    assert len(batch.run(spec, client).done) == 1   # held no more: the run goes


def test_a_spec_path_that_is_a_folder_is_said_to_be_one(tmp_path, capsys):
    """An audit: ``mkdir spec.json`` gave "no batch spec at 'spec.json'"; the README names a folder as one."""
    (tmp_path / "spec.json").mkdir()
    assert main(["batch", str(tmp_path / "spec.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("is a folder, not a file") and "\n" not in err, err


def _fails(_):
    raise OSError(28, "No space left on device")


def test_a_task_that_raises_on_the_local_cluster_prints_no_dask_traceback(capfd):
    """An audit: a worker's error (a full disk) printed dask's multi-line "Compute Failed" block with its
    traceback on stderr before the run's own one-line report of it."""
    client = batch.start_cluster(1)
    try:
        with pytest.raises(OSError, match="No space left"):
            client.submit(_fails, 0).result()
        time.sleep(0.5)   # the worker's log lines reach this process's stderr (its pipe) meanwhile
    finally:
        cluster = client.cluster
        client.close()
        cluster.close()
    err = capfd.readouterr().err
    assert "Compute Failed" not in err and "Traceback" not in err, err


def test_a_tasks_label_names_its_inputs_once():
    """A failed experiment was reported as "experiment of experiment osr (model ...)"."""
    assert batch.Task("k", "experiment", "m.pt", None, 1, "osr", {}).label == "experiment osr (model m.pt, cell 1)"
    assert batch.Task("k", "attribute", None, "a.npy", 0, "a", {}).label == "attribute of a.npy (model default, cell 0)"


def test_a_spec_s_pixel_um_resamples_every_stimulus_as_the_direct_run_and_the_reader_places_the_maps(inputs, client,
                                                                                                    tmp_path):
    """A uint8 stack of 27.5 µm pixels, 26 x 30: 13 x 15 model pixels, the 12 x 12 window at (0, 1) ('center').
    Every block equals nr.predict / nr.attribute with pixel_um=27.5 (z-scored by the whole file's values under
    the window, at its own pixels); the reader draws the stimulus at 27.5 µm and each map over the 2 x 2 pixels
    it explains."""
    from napari_retina._napari._batch_reader import napari_get_reader

    big = np.random.default_rng(8).integers(0, 256, (40, 26, 30), dtype=np.uint8)
    np.save(tmp_path / "fine.npy", big)
    spec = {**_spec(inputs, tmp_path / "r", cells=(1,)), "stimuli": [str(tmp_path / "fine.npy")], "crop": "center",
            "pixel_um": 27.5}
    report = batch.run(spec, client)
    assert report.failed == [] and len(report.done) == 3
    res = batch.load(tmp_path / "r")
    model = nr.load_model(inputs / "tiny.pt")
    np.testing.assert_allclose(res[_key(res, "fine", "/predict")].arrays["rates"].compute(),
                               nr.predict(model, big, crop="center", pixel_um=27.5), rtol=1e-5, atol=1e-6)
    direct = nr.attribute(model, big, cell=1, steps=STEPS, invariance="none", crop="center", pixel_um=27.5)
    assert direct.crop_origin == (0, 1)
    got = res[_key(res, "fine", "/cell1/attribute")]
    assert len(got.attrs["blocks"]) == 3 and got.attrs["params"]["pixel_um"] == [27.5, 27.5]
    for name in ("maps", "channels", "response"):
        np.testing.assert_allclose(got.arrays[name].compute(), getattr(direct, name), rtol=1e-4, atol=1e-6)
    red = res[_key(res, "fine", "/cell1/reduce")].arrays
    np.testing.assert_allclose(red["attribution/channels"].compute(), direct.channels, rtol=1e-4, atol=1e-6)
    layers = napari_get_reader(str(tmp_path / "r"))(str(tmp_path / "r"))
    images = {kw["name"]: kw for _, kw, _ in layers}
    assert tuple(images["fine"]["scale"]) == (10.0, 27.5, 27.5)
    maps = [kw for kw in images.values() if kw["metadata"].get("napari_retina", {}).get("role") == "map"]
    offset = model.config.first_layer_offset
    for kw in maps:   # map pixel (0, 0): model pixel (y0 + offset, x0 + offset), centred on layer pixel (m + ½)·2 − ½
        np.testing.assert_allclose(kw["scale"][1:], [55.0, 55.0])
        centre = (np.array([0, 1]) + offset + 0.5) * 2 - 0.5
        np.testing.assert_allclose(np.asarray(kw["translate"])[1:], centre * 27.5)


def test_a_spec_s_frame_ms_resamples_every_stimulus_to_10_ms_bins_as_the_direct_run_and_the_reader_places_them(
        inputs, client, tmp_path):
    """A uint8 stack of 60 Hz frames (50/3 ms), 36 frames of 14 x 14: 60 bins of 10 ms, in blocks of 16 bins,
    the 12 x 12 window at its centre. Every block equals nr.predict / nr.attribute with frame_ms=50/3 (z-scored by
    the whole file's values under the window); the reader draws the stimulus at 50/3 ms per frame and each map
    bin at 10 ms, centred on the frames it averages, and a predict task's traces on those centres too."""
    from napari_retina._napari._batch_reader import napari_get_reader, read_task_layers

    frame = 50 / 3
    big = np.random.default_rng(9).integers(0, 256, (36, 14, 14), dtype=np.uint8)
    np.save(tmp_path / "sixty.npy", big)
    spec = {**_spec(inputs, tmp_path / "r", cells=(1,)), "stimuli": [str(tmp_path / "sixty.npy")], "crop": "center",
            "frame_ms": frame}
    report = batch.run(spec, client)
    assert report.failed == [] and len(report.done) == 3
    res = batch.load(tmp_path / "r")
    model = nr.load_model(inputs / "tiny.pt")
    rates = res[_key(res, "sixty", "/predict")].arrays["rates"].compute()
    assert rates.shape == (60, 2)
    np.testing.assert_allclose(rates, nr.predict(model, big, crop="center", frame_ms=frame), rtol=1e-5, atol=1e-6)
    direct = nr.attribute(model, big, cell=1, steps=STEPS, invariance="none", crop="center", frame_ms=frame)
    got = res[_key(res, "sixty", "/cell1/attribute")]
    assert got.attrs["blocks"] == [[0, 16], [16, 32], [32, 48], [48, 60]] and got.attrs["params"]["frame_ms"] == frame
    for name in ("maps", "channels", "response"):
        np.testing.assert_allclose(got.arrays[name].compute(), getattr(direct, name), rtol=1e-4, atol=1e-6)
    red = res[_key(res, "sixty", "/cell1/reduce")].arrays
    np.testing.assert_allclose(red["attribution/channels"].compute(), direct.channels, rtol=1e-4, atol=1e-6)
    layers = napari_get_reader(str(tmp_path / "r"))(str(tmp_path / "r"))
    images = {kw["name"]: kw for _, kw, _ in layers}
    np.testing.assert_allclose(images["sixty"]["scale"], (frame, 55.0, 55.0))
    maps = [kw for kw in images.values() if kw["metadata"].get("napari_retina", {}).get("role") == "map"]
    assert len(maps) == 3
    for kw in maps:   # bin 0 covers frames 0 and 0.6 of frame 1: centred on layer frame 0.6·½ − ½ = −0.2
        assert kw["scale"][0] == pytest.approx(10.0)
        assert kw["translate"][0] == pytest.approx((0.5 * 0.6 - 0.5) * frame)
    (_, kw, _), = read_task_layers(res[_key(res, "sixty", "/predict")])
    assert kw["metadata"]["napari_retina"]["traces"]["layer_frames_per_value"] == pytest.approx(0.6)


@pytest.mark.parametrize("value", [0, -2, "a", [16], True, 16667, "1/0"])
def test_a_spec_s_frame_ms_that_is_no_positive_interval_is_refused_in_one_sentence(inputs, tmp_path, value):
    with pytest.raises(batch.BatchSpecError, match=r"^spec key 'frame_ms' must be a positive number of ms per frame "
                                                   r"or a ratio as text \('1000/60'\), at most 10000 \(null: the "
                                                   r"model's 10\), got "):
        batch.parse_spec({**_spec(inputs, tmp_path / "r"), "frame_ms": value})
    assert batch.parse_spec({**_spec(inputs, tmp_path / "r"), "frame_ms": 10}).frame_ms is None
    assert batch.parse_spec({**_spec(inputs, tmp_path / "r"), "frame_ms": "1000/60"}).frame_ms == 1000 / 60


@pytest.mark.parametrize("value", [0, -2, "a", [1, 2, 3], True])
def test_a_spec_s_pixel_um_that_is_no_positive_size_is_refused_in_one_sentence(inputs, tmp_path, value):
    with pytest.raises(batch.BatchSpecError, match=r"^spec key 'pixel_um' must be None, a positive number of µm, "
                                                   r"\[y_um, x_um\], or the text '27.5' or '20,25', got "):
        batch.parse_spec({**_spec(inputs, tmp_path / "r"), "pixel_um": value})


def test_every_task_of_a_flash_train_on_grey_says_where_z_scoring_puts_its_grey(inputs, client, tmp_path):
    """Left out last session: a uint8 stack z-scored by its own statistics whose grey (128, most of its values)
    lands off 0 warned through a reduce task (nr.attribute's check) but not through predict or attribute, whose
    blocks are mapped with the whole file's statistics. Each task now says it, in the direct run's words."""
    stim = np.full((40, 12, 12), 128, np.uint8)
    stim[5::8, :, :] = 0                                   # dark full-field flashes on grey: mean below the grey
    np.save(tmp_path / "grey.npy", stim)
    spec = {**_spec(inputs, tmp_path / "r", cells=(1,)), "stimuli": [str(tmp_path / "grey.npy")]}
    with pytest.warns(nr.StimulusUnitsWarning) as caught:
        report = batch.run(spec, client)
    assert report.failed == [] and len(report.done) == 3
    with pytest.warns(nr.StimulusUnitsWarning) as direct:
        nr.predict(nr.load_model(inputs / "tiny.pt"), stim)
    sentence = str(direct[0].message).replace("stimulus's", "the stimulus in grey.npy's")
    said = [str(w.message) for w in caught if "most common value, 128" in str(w.message)]
    assert len(said) == 3 and all(message.endswith(sentence) for message in said), said
    assert sum("predict" in m.split(": the stimulus")[0] for m in said) == 1
    assert sum("attribute" in m.split(": the stimulus")[0] for m in said) == 1


def test_a_tiff_stimulus_is_read_by_its_header_and_by_window(tmp_path, monkeypatch):
    """A reliability audit: stimulus_shape and read_window read a TIFF whole (485 MiB and 0.8 s for a 50,000-frame
    movie, for its shape and again for each block, in each worker); tifffile reads the window's pages alone."""
    import tifffile

    stack = np.random.default_rng(0).normal(size=(50, 12, 12)).astype(np.float32)
    tifffile.imwrite(tmp_path / "s.tif", stack, photometric="minisblack")
    read = []
    real = tifffile.TiffFile.asarray

    def spy(self, *args, **kwargs):
        read.append(kwargs.get("key"))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(tifffile.TiffFile, "asarray", spy)
    assert batch.stimulus_shape(tmp_path / "s.tif") == (50, 12, 12) and read == []   # the header alone
    np.testing.assert_array_equal(batch.read_window(tmp_path / "s.tif", 10, 13), stack[10:13])
    np.testing.assert_array_equal(batch.read_window(tmp_path / "s.tif", 49, 60), stack[49:])
    np.testing.assert_array_equal(batch.read_window(tmp_path / "s.tif", 7, 8), stack[7:8])
    assert read == [range(10, 13), range(49, 50), range(7, 8)]
    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((4, 12, 12, 3), np.uint8), photometric="rgb")
    with pytest.raises(ValueError, match="must be a greyscale"):
        batch.read_window(tmp_path / "rgb.tif", 0, 2)
    with pytest.raises(ValueError, match="must be a greyscale"):
        batch.stimulus_shape(tmp_path / "rgb.tif")
