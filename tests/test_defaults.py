"""One default per setting: nr.train / nr.attribute, the command line and the napari widgets agree.

The napari widgets promise the exact call a script would make, so a widget
left at its initial values, the command line without options and the API
without keywords must train and attribute the same way. The training
defaults live in ``nr.training.TrainConfig``, the integrated-gradients
accuracy in ``nr.attribution.DEFAULT_TOL`` (no fixed steps by default).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import napari_retina as nr
from napari_retina import attribution, cli, training

ROOT = Path(__file__).resolve().parents[1]
#: the training settings: nr.train keyword -> the `napari-retina train` option that sets it
SETTINGS = ("epochs", "batch_size", "blocks_per_batch", "lr", "l2", "l1_linear", "patience", "lr_patience",
            "holdout", "seed", "recalibrate")
CLI_OPTION = {name: "--" + name.replace("_", "-") for name in SETTINGS}


def _signature_defaults(func) -> dict:
    return {k: p.default for k, p in inspect.signature(func).parameters.items()
            if p.default is not inspect.Parameter.empty}


def _train_config(args):
    from napari_retina.cli.training import _train_config

    return _train_config(args)


def _widgets(viewer) -> dict:
    from napari_retina._napari import _widgets

    analyze = _widgets.AnalyzeWidget(viewer).parameters()
    experiments = _widgets.ExperimentsWidget(viewer)
    return {"epochs": _widgets.ModelWidget(viewer).epochs.value,
            "analyze steps": analyze["steps"], "analyze tol": analyze["tol"], "analyze explain": analyze["explain"],
            "experiments steps": int(experiments.steps.value) or None}


def test_api_cli_and_widgets_agree(make_napari_viewer):
    """The same numbers, read independently from nr.train / nr.attribute, the parser and the widgets."""
    pytest.importorskip("napari")
    api = _signature_defaults(nr.train)
    args = cli.build_parser().parse_args(["train", "data.h5", "--out", "m.pt"])
    options = {name: getattr(args, name, "no option") for name in SETTINGS}
    assert options == {name: api[name] for name in SETTINGS}
    attr = nr.attribute(*_tiny_model_and_stimulus(), frames=[5])
    assert _widgets(make_napari_viewer()) == {"epochs": api["epochs"], "analyze steps": None,
                                              "analyze tol": attr.tol, "experiments steps": None,
                                              "analyze explain": _signature_defaults(nr.reduce)["explain"]}


def _tiny_model_and_stimulus():
    torch.manual_seed(0)
    model = nr.RetinaCNN(nr.ModelConfig(history=4, size=12, channels=(2, 2), kernels=(3, 3), n_cells=1)).eval()
    return model, np.random.default_rng(0).standard_normal((6, 12, 12)).astype(np.float32)


# ----------------------------------------------------------------------------- training


def test_train_keywords_are_the_train_config_fields_with_its_defaults():
    assert tuple(f.name for f in dataclasses.fields(training.TrainConfig)) == SETTINGS
    api = _signature_defaults(nr.train)
    expected = dataclasses.asdict(training.TrainConfig())
    assert {k: api.get(k, "missing") for k in expected} == expected


def test_cli_train_defaults_are_the_train_config_defaults():
    args = cli.build_parser().parse_args(["train", "data.h5", "--out", "m.pt"])
    assert {name: getattr(args, name) for name in SETTINGS} == dataclasses.asdict(training.TrainConfig())
    assert _train_config(args) == training.TrainConfig()


def test_cli_sets_every_train_config_field():
    """Each field has an option, and the option reaches the TrainConfig the CLI trains with."""
    values = {"epochs": 7, "batch_size": 64, "blocks_per_batch": 2, "lr": 0.01, "l2": 0.5, "l1_linear": 0.25,
              "patience": 5, "lr_patience": 4, "holdout": 0.125, "seed": 9, "recalibrate": 3}
    assert set(values) == set(CLI_OPTION)
    argv = ["train", "data.h5", "--out", "m.pt"]
    for name, value in values.items():
        argv += [CLI_OPTION[name], str(value)]
    assert _train_config(cli.build_parser().parse_args(argv)) == training.TrainConfig(**values)


def test_the_shipped_model_recipe_is_unchanged():
    """The shipped checkpoint was trained by scripts/science_sweep.py with its defaults: RECIPE
    (scripts/seed_sweep.py) changed by SHIPPED, on FRAMES frames of the training mix."""
    model = nr.load_model()
    params = model.provenance["params"]
    recorded = training.TrainConfig.from_provenance(params)
    argv = shlex.split(params["command"])
    assert argv[0] == "scripts/science_sweep.py" and argv[1:4] == ["--stage", "model", "--seed"]
    spec = importlib.util.spec_from_file_location("science_sweep", ROOT / "scripts" / "science_sweep.py")
    sweep = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        spec.loader.exec_module(sweep)
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    assert training.TrainConfig(**{**sweep.RECIPE, **sweep.SHIPPED}, seed=int(argv[4])) == recorded
    assert model.provenance["train_frames"] == sweep.FRAMES
    # the recipe passes what differs from the defaults explicitly
    assert {k: v for k, v in dataclasses.asdict(recorded).items() if v != getattr(training.DEFAULTS, k)} == {
        "epochs": 20, "batch_size": 192, "blocks_per_batch": 8, "l1_linear": 3e-5, "seed": 3}


def test_provenance_params_keep_their_recorded_names():
    tc = training.TrainConfig(epochs=3, recalibrate=2)
    params = tc.provenance_params(torch.device("cpu"), [0, 1], "a call")
    assert params == {"epochs_max": 3, "batch_size": 128, "blocks_per_batch": 4, "lr": 2e-3, "l2": 1e-3,
                      "l1_linear": 0.0, "patience": 3, "lr_patience_epochs": 2, "holdout": 0.05, "seed": 0,
                      "recalibrate_batches": 2, "device": "cpu", "cells": [0, 1], "command": "a call"}
    assert training.TrainConfig.from_provenance(params) == tc
    # older checkpoints recorded torch's count as "lr_patience": one less than the epochs it means
    old = {**{k: v for k, v in params.items() if k != "lr_patience_epochs"}, "lr_patience": 1}
    assert training.TrainConfig.from_provenance(old) == tc


@pytest.mark.parametrize("field, value, error, message", [
    ("epochs", 0, ValueError, "epochs must be >= 1, got 0"),
    ("epochs", 2.0, TypeError, "epochs must be an int, got float 2.0"),
    ("batch_size", 1, ValueError, "batch_size must be >= 2, got 1"),
    ("lr", -1.0, ValueError, "lr must be a finite number > 0, got -1.0"),
    ("holdout", 0.5, ValueError, r"holdout must be a fraction in \(0, 0.5\), got 0.5"),
    ("l2", float("nan"), ValueError, "l2 must be a finite number >= 0, got nan"),
    ("l1_linear", -0.1, ValueError, "l1_linear must be a finite number >= 0, got -0.1"),
    ("patience", 0, ValueError, "patience must be >= 1, got 0"),
    ("recalibrate", -1, ValueError, "recalibrate must be >= 0, got -1"),
])
def test_train_config_validates(field, value, error, message):
    with pytest.raises(error, match=f"^{message}$"):
        training.TrainConfig(**{field: value})


def test_train_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        training.DEFAULTS.epochs = 3


# ----------------------------------------------------------------------------- integrated-gradient accuracy


def test_attribute_without_steps_refines_to_default_tol():
    attr = nr.attribute(*_tiny_model_and_stimulus(), frames=[5])
    assert attr.tol == attribution.DEFAULT_TOL and attr.steps_per_frame[5] >= 2 * attribution.ADAPTIVE_START_STEPS
    for func in (nr.attribute, nr.experiments.run, nr.experiments.battery, nr.analysis.run_analysis):
        params = inspect.signature(func).parameters
        assert (params["steps"].default, params["tol"].default) == (None, None), func   # None: nr.attribute's


def test_explain_has_one_default():
    """The reduced circuit's variance fraction: nr.reduce, the analysis, the experiments, the battery and the
    command line all default to reduction.DEFAULT_EXPLAIN (the Analyze dock: test_widget_defaults_...)."""
    from napari_retina import reduction

    for func in (nr.reduce, nr.analysis.run_analysis, nr.experiments.run, nr.experiments.battery,
                 nr.experiments.base.run_model):
        assert inspect.signature(func).parameters["explain"].default == reduction.DEFAULT_EXPLAIN, func
    assert [f.default for f in dataclasses.fields(reduction.Reduction) if f.name == "explain"] == [
        reduction.DEFAULT_EXPLAIN]
    assert cli.build_parser().parse_args(["experiment", "osr"]).explain == reduction.DEFAULT_EXPLAIN


def test_cli_steps_and_tol_defaults_are_the_api_defaults():
    for argv in (["experiment", "osr"], ["attribute", "s.npy"]):
        args = cli.build_parser().parse_args(argv)
        assert (args.steps, args.tol) == (None, None)           # None: nr.attribute's DEFAULT_TOL


# ----------------------------------------------------------------------------- napari widgets


def test_widget_defaults_are_the_named_defaults(make_napari_viewer):
    pytest.importorskip("napari")
    assert _widgets(make_napari_viewer()) == {"epochs": training.DEFAULTS.epochs,
                                              "analyze steps": None, "analyze tol": attribution.DEFAULT_TOL,
                                              "experiments steps": None,
                                              "analyze explain": nr.reduction.DEFAULT_EXPLAIN}


def test_synth_defaults_are_make_dataset_s():
    """``napari-retina synth`` without options records what nr.synthetic.make_dataset records by default."""
    args = cli.build_parser().parse_args(["synth", "d.h5"])
    api = _signature_defaults(nr.synthetic.make_dataset)
    assert {k: getattr(args, k) for k in ("frames", "test_frames", "repeats", "seed", "checker", "contrast", "kind",
                                          "grey")} == {k: api[k] for k in ("frames", "test_frames", "repeats", "seed",
                                                                           "checker", "contrast", "kind", "grey")}
