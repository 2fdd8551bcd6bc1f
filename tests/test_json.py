"""_json.jsonable: the one conversion of result values to plain, JSON-able Python."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
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


# ------------------------------------------- JSON read from files: one ValueError, never RecursionError ---

DEEP = "[" * 100_000 + "]" * 100_000   # Python's json recurses per level: RecursionError, not a ValueError
TOO_DEEP = "nests lists and objects more than 100 levels deep"


def test_parse_json_refuses_deep_and_broken_text_in_one_sentence_naming_what_was_read():
    from napari_retina._json import MAX_JSON_DEPTH, parse_json

    assert parse_json('{"a": [1, {"b": null}]}', "the readout") == {"a": [1, {"b": None}]}
    fine = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    assert parse_json(fine, "x") is not None
    for text, why in [(DEEP, TOO_DEEP), ("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1), TOO_DEEP),
                      ("{oops", "Expecting property name")]:
        try:
            parse_json(text, "the readout")
        except ValueError as exc:
            assert str(exc).startswith("the readout is not valid JSON (") and why in str(exc)
            assert exc.__cause__ is None and exc.__context__ is None     # one sentence, no chained traceback
        else:
            raise AssertionError(f"{text[:10]!r} was parsed")


def test_nesting_depth_counts_levels_and_stops_on_a_list_that_holds_itself():
    from napari_retina._json import nesting_depth

    assert [nesting_depth(v) for v in (1, [], {"a": [1, {"b": 2}]})] == [0, 1, 3]
    loop: list = []
    loop.append(loop)
    assert nesting_depth(loop, stop=10) == 11


def test_a_checkpoint_with_deeply_nested_config_is_one_value_error(tmp_path):
    import torch

    import napari_retina as nr

    model = nr.RetinaCNN(nr.ModelConfig(history=4, size=8, channels=(2, 2), kernels=(3, 3), n_cells=1)).eval()
    path = nr.save_model(model, tmp_path / "m.pt")
    for key in ("config", "info"):
        payload = torch.load(path, weights_only=True)
        payload[key] = DEEP
        torch.save(payload, tmp_path / f"deep_{key}.pt")
        with pytest.raises(ValueError, match=f"deep_{key}.pt' has a malformed {key}: it is not valid JSON .*{TOO_DEEP}"):
            nr.load_model(tmp_path / f"deep_{key}.pt")


def test_a_keras_model_config_nested_too_deeply_is_ignored_as_unreadable_json_is(tmp_path):
    import h5py
    from test_formats import keras_weights, save_keras

    import napari_retina as nr

    path = save_keras(tmp_path / "k.h5", keras_weights(), nested=True, epsilon=1e-3)
    with h5py.File(path, "a") as h5:
        h5.attrs["model_config"] = DEEP.encode()
    assert nr.load_model(path).config.n_cells > 0


def test_a_dataset_whose_cell_names_nest_too_deeply_is_one_value_error(tmp_path):
    import h5py

    from napari_retina.io import read_dataset

    with h5py.File(tmp_path / "d.h5", "w") as h5:
        for split in ("train", "test"):
            h5[f"{split}/stimulus"] = np.zeros((20, 8, 8), np.float32)
            h5[f"{split}/response/firing_rate_10ms"] = np.zeros((2, 20), np.float32)
        h5.attrs["cell_names"] = DEEP
    with pytest.raises(ValueError, match=r"d.h5' has a malformed cell_names attribute: expected a JSON list of 2"):
        read_dataset(tmp_path / "d.h5")


def test_saved_analysis_labels_nested_too_deeply_are_a_damaged_file(tmp_path):
    import h5py

    from napari_retina.saved import read_analysis

    with h5py.File(tmp_path / "an.h5", "w") as h5:
        h5["stimulus"] = np.zeros((6, 8, 8), np.float32)
        h5["attribution/channels"] = np.zeros((6, 2), np.float32)
        h5["attribution/response"] = np.zeros(6, np.float32)
        h5["attribution/cells"], h5["attribution/crop_origin"] = np.array([0]), np.zeros(2, np.int64)
        h5["reduction/kept"] = np.array([0])
        h5["reduction/reduced_response"] = np.zeros(6, np.float32)
        h5["reduction"].attrs["labels"] = DEEP
    with pytest.raises(ValueError, match=r"an.h5' is a damaged saved analysis: its attribute 'reduction/labels' is"):
        read_analysis(tmp_path / "an.h5")


@pytest.mark.parametrize("suffix, text", [(".json", '{"model": ' + DEEP + "}"),
                                          (".yaml", "model: " + "[" * 10_000 + "]" * 10_000 + "\n"),
                                          (".yaml", "model: " + "[" * 101 + "]" * 101 + "\n")],
                         ids=["json", "yaml deeper than the parser recurses", "yaml deeper than 100"])
def test_a_batch_spec_nested_too_deeply_is_a_batch_spec_error(tmp_path, suffix, text):
    if suffix == ".yaml":
        pytest.importorskip("yaml")
    from napari_retina import batch

    path = tmp_path / f"spec{suffix}"
    path.write_text(text)
    with pytest.raises(batch.BatchSpecError, match=f"spec{suffix}' is not valid {suffix[1:].upper()} .*{TOO_DEEP}"):
        batch.parse_spec(path)


def test_a_batch_store_whose_json_nests_too_deeply_is_refused_or_skipped(tmp_path):
    from napari_retina import batch

    with pytest.raises(ValueError, match=f"an experiment's stored readout is not valid JSON .*{TOO_DEEP}"):
        batch.parse_readout(DEEP)
    (tmp_path / "task").mkdir()
    (tmp_path / "task" / "zarr.json").write_text('{"attributes": ' + DEEP + "}")
    assert batch._attrs(tmp_path / "task") == {}
    (tmp_path / batch.MANIFEST).write_text('{"tasks": [{"key": "task"}]}')
    with pytest.raises(batch.StoreError, match=f"the zarr.json of its task 'task' is not valid JSON .*{TOO_DEEP}"):
        batch.load(tmp_path)                   # a damaged store is refused in one sentence (test_batch_store.py)
    (tmp_path / batch.MANIFEST).write_text('{"tasks": ' + DEEP + "}")
    with pytest.raises(ValueError, match=f"its {batch.MANIFEST} is not valid JSON .*{TOO_DEEP}"):
        batch.load(tmp_path)


def test_a_checkpoint_with_deep_json_fails_only_its_own_batch_tasks(tmp_path):
    import torch

    import napari_retina as nr
    from napari_retina import batch

    model = nr.RetinaCNN(nr.ModelConfig(history=4, size=8, channels=(2, 2), kernels=(3, 3), n_cells=1)).eval()
    good = nr.save_model(model, tmp_path / "good.pt")
    payload = torch.load(good, weights_only=True)
    payload["config"] = DEEP
    torch.save(payload, tmp_path / "deep.pt")
    np.save(tmp_path / "s.npy", np.zeros((10, 8, 8), np.float32))
    spec = batch.parse_spec({"model": [str(tmp_path / "deep.pt"), str(good)], "stimuli": [str(tmp_path / "s.npy")],
                             "analyses": ["predict"], "out": str(tmp_path / "out")})
    deep, fine = batch.plan(spec)
    assert "deep.pt' has a malformed config: it is not valid JSON" in deep.error and fine.error is None


def test_a_provenance_retina_description_nested_too_deeply_means_the_default_retina():
    from types import SimpleNamespace

    from napari_retina.experiments.battery import default_retina
    from napari_retina.synthetic import Retina

    model = SimpleNamespace(provenance={"data_attrs": {"retina": DEEP}}, config=SimpleNamespace(size=Retina().size))
    assert default_retina(model).version == Retina(seed=0).version


def test_a_deep_param_on_the_command_line_is_one_value_error():
    from napari_retina.cli.experiments import _parse_params

    with pytest.raises(ValueError, match=f"--param p must be valid JSON .*'\\.\\.\\.: it is not valid JSON .*{TOO_DEEP}"):
        _parse_params(["p=" + DEEP])
