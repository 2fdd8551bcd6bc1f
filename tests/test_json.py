"""_json.jsonable: the one conversion of result values to plain, JSON-able Python."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from napari_retina._json import jsonable


def test_numpy_torch_and_nested_values_become_plain_python():
    value = {1: np.float32(0.5), "a": np.arange(3), "b": (np.int64(2), [np.bool_(True)]),
             "t": torch.tensor([1.5]), "p": Path("x.h5"), "none": None}
    out = jsonable(value)
    assert out == {"1": 0.5, "a": [0, 1, 2], "b": [2, [True]], "t": [1.5], "p": "x.h5", "none": None}
    assert type(out["a"][0]) is int and type(out["1"]) is float and type(out["b"][1][0]) is bool
    json.dumps(out)


def test_non_finite_floats_are_kept_or_made_strict():
    value = {"nan": float("nan"), "up": np.inf, "down": np.array([-np.inf, 1.0])}
    loose = jsonable(value)
    assert np.isnan(loose["nan"]) and loose["up"] == np.inf and loose["down"][0] == -np.inf
    strict = jsonable(value, strict=True)
    assert strict == {"nan": None, "up": "inf", "down": ["-inf", 1.0]}
    json.dumps(strict, allow_nan=False)


def test_strict_json_makes_json_text_inside_strings_strict_and_keeps_other_strings():
    """Experiment readouts are JSON text (to_dict); Python's json wrote their NaN as NaN inside the string, which a
    strict parser refuses when it parses the string in turn."""
    from napari_retina._json import strict_json

    def refuse(name):
        raise ValueError(name)

    value = {"r": np.float64("nan"), "readout": json.dumps({"onset_ms": [float("nan"), 30.0], "ratio": float("inf")}),
             "labels": json.dumps(["A0 ON fast +"]), "plain": "[not json", "nested": {"c": json.dumps([float("-inf")])}}
    out = strict_json(value)
    text = json.dumps(out, allow_nan=False)
    assert json.loads(json.loads(text, parse_constant=refuse)["readout"], parse_constant=refuse) == \
        {"onset_ms": [None, 30.0], "ratio": "inf"}
    assert out["r"] is None and out["nested"] == {"c": '["-inf"]'}
    assert out["labels"] == value["labels"] and out["plain"] == "[not json"   # nothing to change: kept as it was
