"""Checkpoints: round trip, the shipped model, and refusal of unsafe or broken files."""

import hashlib
import json
import os
import pickle
import struct
import warnings

import numpy as np
import pytest
import torch

import napari_retina as nr
from napari_retina import checkpoint
from napari_retina.checkpoint import weights_sha256
from napari_retina.model import ModelConfig, RetinaCNN


def tiny():
    torch.manual_seed(0)
    model = RetinaCNN(ModelConfig(history=6, size=16, channels=(3, 4), kernels=(5, 3), n_cells=2))
    with torch.no_grad():
        model.bn1.bn.running_mean.uniform_(-1, 1)
    model.provenance = {"trained_on": "nothing", "seed": 0}
    model.scores = {"test_r": [0.5, 0.6]}
    return model.eval()


def test_round_trip_gives_identical_outputs(tmp_path):
    model = tiny()
    nr.save_model(model, tmp_path / "m.pt")
    loaded = nr.load_model(tmp_path / "m.pt", device="cpu")
    x = torch.randn(5, 6, 16, 16)
    assert torch.equal(model(x), loaded(x))
    assert loaded.config == model.config
    assert loaded.provenance == model.provenance and loaded.scores == model.scores
    assert not loaded.training


def rewrite(path, change):
    """Apply ``change(payload)`` to the checkpoint at ``path`` (as an attacker or a bad disk would)."""
    payload = torch.load(path, weights_only=True)
    change(payload)
    torch.save(payload, path)
    return path


def set_json(key, **fields):
    def change(payload):
        payload[key] = json.dumps({**json.loads(payload[key]), **fields})
    return change


def test_shipped_default_model_loads_and_predicts():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # it carries a checksum: no "no weights checksum" warning
        model = nr.load_model(device="cpu")
    assert (model.config.history, model.config.size) == (40, 50)
    assert model.provenance, "the shipped model must say where it came from"
    stim = np.sign(np.random.default_rng(0).standard_normal((45, 50, 50))).astype(np.float32)
    rates = nr.predict(model, stim)
    assert rates.shape == (45, model.config.n_cells) and np.isfinite(rates[39:]).all()


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch " + os.environ["NR_EVIL_MARKER"],))


def test_file_that_would_run_code_is_refused(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("NR_EVIL_MARKER", str(marker))
    path = tmp_path / "evil.pt"
    torch.save({"format": "napari-retina-checkpoint", "version": 1, "x": _Evil()}, path)
    with pytest.raises(ValueError, match="could execute code"):
        nr.load_model(path)
    assert not marker.exists()
    # the same attack as a plain pickle file
    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump(_Evil(), f)
    with pytest.raises(ValueError, match="evil.pkl' is not a napari-retina checkpoint: it holds pickled objects "
                                         "other than weights"):
        nr.load_model(tmp_path / "evil.pkl")
    assert not marker.exists()


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        nr.load_model(tmp_path / "nope.pt")


def test_corrupt_file(tmp_path):
    model = tiny()
    good = nr.save_model(model, tmp_path / "m.pt")
    data = good.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cut.pt' is not a readable checkpoint \(corrupt or truncated\)"):
        nr.load_model(tmp_path / "cut.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(ValueError, match=r"text.pt' is not a readable checkpoint \(corrupt or truncated\)"):
        nr.load_model(tmp_path / "text.pt")


def test_foreign_torch_file_is_refused(tmp_path):
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt' is a torch file but not a napari-retina checkpoint"):
        nr.load_model(tmp_path / "other.pt")


def test_incompatible_weights_are_refused(tmp_path):
    model = tiny()
    path = nr.save_model(model, tmp_path / "m.pt")
    payload = torch.load(path, weights_only=True)
    payload["state_dict"]["conv1.weight"] = torch.zeros(9, 6, 5, 5)
    torch.save(payload, path)
    with pytest.raises(ValueError, match=r"do not match its own config: conv1.weight should be \[3, 6, 5, 5\] "
                                         r"but is \[9, 6, 5, 5\] in the file"):
        nr.load_model(path)


def test_missing_and_unexpected_weights_are_named(tmp_path):
    def change(payload):
        del payload["state_dict"]["linear.bias"]
        payload["state_dict"]["extra.w"] = torch.zeros(2)
    path = rewrite(nr.save_model(tiny(), tmp_path / "m.pt"), change)
    with pytest.raises(ValueError, match=r"do not match its own config: missing 1 \(linear.bias\) of its 21 tensors, "
                                         r"unexpected 1 \(extra.w\)"):
        nr.load_model(path)


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda p: p.__setitem__("info", "[1, 2]"), r"has a malformed info: expected a JSON object, got a list"),
        (lambda p: p.__setitem__("info", "{oops"),
         r"has a malformed info: it is not valid JSON \(Expecting property name"),
        (lambda p: p.__setitem__("info", 3), r"has a malformed info: expected a JSON string, got int"),
        (set_json("info", provenance="x"), r"has a malformed info: expected a JSON object with exactly "
                                           r"\['provenance', 'scores'\], each an object, got \{'provenance': 'str', 'scores': 'dict'\}"),
        (set_json("info", junk=1),
         r"has a malformed info: .* got \{'provenance': 'dict', 'scores': 'dict', 'junk': 'int'\}"),
        (lambda p: p.__setitem__("info", "{}"), r"has a malformed info: .* got \{\}"),
        (lambda p: p.__setitem__("config", "[1]"), r"has a malformed config: expected a JSON object, got a list"),
        (set_json("config", norm=None), r"has an invalid model config: ModelConfig.norm must be a dict .*, got None"),
        (set_json("config", history="6"),
         r"has an invalid model config: ModelConfig.history must be a positive int up to 1000, got '6'"),
        (set_json("config", junk=1), r"has an invalid model config: unknown model config keys \['junk'\]"),
        (lambda p: p.__setitem__("config", json.dumps({k: v for k, v in json.loads(p["config"]).items() if k != "bn"})),
         r"has an invalid model config: the model config lacks keys \['bn'\]"),
        (lambda p: p.__setitem__("junk", "x"),
         r"is a malformed napari-retina checkpoint: it holds unknown entries \['junk'\]"),
        (lambda p: p.pop("info"), r"is a malformed napari-retina checkpoint: it lacks \['info'\]"),
        (lambda p: p.__setitem__("state_dict", [1, 2]), r"has malformed weights: expected a dict of named tensors, got list"),
        (lambda p: p["state_dict"].__setitem__("conv1.bias", [0.0, 0.0, 0.0]),
         r"has malformed weights: expected a dict of named tensors, got a dict holding non-tensors"),
        (lambda p: p.__setitem__("weights_sha256", torch.zeros(2)),
         r"has a malformed weights_sha256: expected 64 lowercase hex digits, got a Tensor"),
        (lambda p: p.__setitem__("weights_sha256", "abc"),
         r"has a malformed weights_sha256: expected 64 lowercase hex digits, got 'abc'"),
        (lambda p: p["state_dict"].__setitem__("conv1.bias", torch.zeros(3, dtype=torch.int32)),
         r"has malformed weights: conv1.bias should be a floating-point tensor, got torch.int32"),
    ],
)
def test_malformed_config_info_or_weights_are_one_sentence(tmp_path, change, match):
    path = rewrite(nr.save_model(tiny(), tmp_path / "m.pt"), change)
    with pytest.raises(ValueError, match=r"m.pt' " + match):
        nr.load_model(path)


@pytest.mark.parametrize(
    "name, index, value, match",
    [
        ("conv1.weight", (0, 0, 0, 0), float("nan"),
         r"conv1.weight holds 1 NaN or infinite value of 450 \(expected all finite\)"),
        ("bn1.bn.running_var", (3,), float("inf"), r"bn1.bn.running_var holds 1 NaN or infinite value of 432"),
        ("bn3.running_var", (1,), -1.0, r"bn3.running_var holds 1 negative variance \(expected all >= 0\)"),
    ],
)
def test_non_finite_weights_are_refused(tmp_path, monkeypatch, name, index, value, match):
    model = tiny()
    with torch.no_grad():
        model.state_dict()[name][index] = value
    with monkeypatch.context() as m:   # a file written elsewhere: save_model refuses such weights itself
        m.setattr(checkpoint, "unusable_weights", lambda state: None)
        path = nr.save_model(model, tmp_path / "m.pt")  # a valid checksum: the model itself is broken
    with pytest.raises(ValueError, match=r"m.pt' has unusable weights: " + match):
        nr.load_model(path)
    good = nr.save_model(tiny(), tmp_path / "good.pt")
    before = good.read_bytes()
    with pytest.raises(ValueError, match=r"^the model has unusable weights, not saved to '.*good.pt': " + match):
        nr.save_model(model, good)   # a good checkpoint is not swapped for one load_model refuses
    assert good.read_bytes() == before


def _data_offset(path, member):
    """Byte offset of ``member``'s data inside the (uncompressed) zip that torch.save writes."""
    import zipfile
    with zipfile.ZipFile(path) as z:
        info = next(i for i in z.infolist() if i.filename.endswith(member))
    raw = path.read_bytes()
    name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26: info.header_offset + 30])
    return info.header_offset + 30 + name_len + extra_len


@pytest.mark.parametrize("written", ["in place (a bad disk)", "saved again (the zip's checksums made anew)"])
def test_one_flipped_byte_in_the_weights_is_refused(tmp_path, written):
    """In place, the zip entry's CRC-32 no longer matches; written again by torch.save, the zip is whole and the
    weights' SHA-256 catches it."""
    path = nr.save_model(tiny(), tmp_path / "m.pt")
    names = list(torch.load(path, weights_only=True)["state_dict"])
    member = f"data/{names.index('conv2.weight')}"
    raw = bytearray(path.read_bytes())
    raw[_data_offset(path, member) + 101] ^= 0x01  # the low byte of a float: the value stays finite
    path.write_bytes(bytes(raw))
    conv2 = torch.load(path, weights_only=True)["state_dict"]["conv2.weight"]
    assert torch.isfinite(conv2).all() and not torch.equal(conv2, tiny().conv2.weight)  # torch itself notices nothing
    if written.startswith("in place"):
        match = rf"m.pt' is damaged: its entry '[^']*{member}' fails its checksum \(CRC-32\)"
    else:
        torch.save(torch.load(path, weights_only=True), path)
        match = (r"m.pt' is corrupt: its weights hash to SHA-256 [0-9a-f]{16}\.\.\. "
                 r"but it was saved with [0-9a-f]{16}\.\.\.")
    with pytest.raises(ValueError, match=match):
        nr.load_model(path)


@pytest.mark.parametrize("field,offset,value", [("version needed to extract", 6, 0xE7),
                                                 ("compression method", 10, 0x63)])
def test_a_zip_directory_torch_save_never_writes_is_one_sentence(tmp_path, field, offset, value):
    """A helper's audit: one byte of the zip's central directory (its first entry's version needed to extract,
    23.1, or compression method 99) made zipfile raise NotImplementedError, which escaped nr.load_model and made
    the CLI print a traceback, while torch read the file without checking its checksums."""
    path = nr.save_model(tiny(), tmp_path / "m.pt")
    raw = bytearray(path.read_bytes())
    raw[raw.find(b"PK\x01\x02") + offset] = value
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"m.pt' is damaged: its zip directory asks for what torch.save never "
                                         r"writes \(.*\), so its checksums cannot be checked; use an intact copy$"):
        nr.load_model(path)


def test_checkpoint_without_checksum_loads_with_one_warning(tmp_path):
    model = tiny()
    path = rewrite(nr.save_model(model, tmp_path / "m.pt"), lambda p: p.pop("weights_sha256"))
    match = r"m.pt' has no weights checksum \(saved by an older napari-retina\)"
    with pytest.warns(UserWarning, match=match) as record:
        loaded = nr.load_model(path)
    assert len([w for w in record if "checksum" in str(w.message)]) == 1
    x = torch.randn(2, 6, 16, 16)
    assert torch.equal(loaded(x), model(x))


def test_weights_sha256_follows_its_definition():
    """Reference: sorted names; per tensor <Q len + JSON [name, dtype, shape] + C-order bytes."""
    state = {"b": torch.arange(6, dtype=torch.float32).reshape(2, 3).T, "a": torch.tensor(7, dtype=torch.int64)}
    ref = hashlib.sha256()
    b = np.arange(6, dtype=np.float32).reshape(2, 3).T
    for name, dtype, arr in (("a", "int64", np.array(7, np.int64)), ("b", "float32", b)):
        header = json.dumps([name, dtype, list(arr.shape)]).encode()
        ref.update(struct.pack("<Q", len(header)) + header + np.ascontiguousarray(arr).tobytes())
    assert weights_sha256(state) == ref.hexdigest()
    # storage-independent, but sensitive to values, dtype, shape and names
    assert weights_sha256({k: v.contiguous() for k, v in state.items()}) == ref.hexdigest()
    assert weights_sha256({**state, "a": torch.tensor(7, dtype=torch.int32)}) != ref.hexdigest()
    assert weights_sha256({**state, "b": state["b"].reshape(6)}) != ref.hexdigest()
    assert weights_sha256({"c": state["a"], "b": state["b"]}) != ref.hexdigest()


def test_save_stores_the_checksum_of_the_weights(tmp_path):
    model = tiny()
    payload = torch.load(nr.save_model(model, tmp_path / "m.pt"), weights_only=True)
    assert payload["weights_sha256"] == weights_sha256(model.state_dict())


def _refuse_to_build(config):
    raise AssertionError(f"RetinaCNN was built for {config}")


@pytest.mark.parametrize("size, match", [
    (7000, r"has an invalid model config: ModelConfig.size must be a positive int up to 1024, got 7000"),
    (100_000, r"has an invalid model config: ModelConfig.size must be a positive int up to 1024, got 100000"),
    (1000, r"has weights that do not match its own config: missing 20 \(conv1.bias, bn1.bn.weight, bn1.bn.bias, "
           r"bn1.bn.running_mean, bn1.bn.running_var and 15 more\) of its 21 tensors, unexpected none"),
])
def test_crafted_small_file_with_a_huge_config_is_refused_before_building(tmp_path, monkeypatch, size, match):
    def craft(payload):
        payload["config"] = json.dumps({**json.loads(payload["config"]), "size": size})
        payload["state_dict"] = {"conv1.weight": torch.zeros(1)}
    path = rewrite(nr.save_model(tiny(), tmp_path / "m.pt"), craft)
    assert path.stat().st_size < 4000
    monkeypatch.setattr(checkpoint, "RetinaCNN", _refuse_to_build)
    with pytest.raises(ValueError, match=r"m.pt' " + match):
        nr.load_model(path)


def test_zero_stride_tensors_claiming_more_than_the_file_holds_are_refused(tmp_path, monkeypatch):
    cfg = ModelConfig(size=1000, kernels=(15, 11), n_cells=4)  # 92 M numbers (370 MB) if it were built
    def craft(payload):
        payload["config"] = json.dumps(cfg.to_dict())
        payload["state_dict"] = {k: torch.zeros(1).expand(shape) if shape else torch.zeros((), dtype=torch.int64)
                                 for k, shape in cfg.state_shapes().items()}
        payload.pop("weights_sha256")
    path = rewrite(nr.save_model(tiny(), tmp_path / "m.pt"), craft)
    assert path.stat().st_size < 20_000
    monkeypatch.setattr(checkpoint, "RetinaCNN", _refuse_to_build)
    with pytest.raises(ValueError, match=r"m.pt' has malformed weights: conv1.weight claims 72000 elements "
                                         r"but the file holds only 4 bytes for it"):
        nr.load_model(path)


@pytest.mark.parametrize("make, kind", [
    (lambda t: t.to_sparse(), "sparse_coo tensor on device 'cpu'"),
    (lambda t: t.to("meta"), "strided tensor on device 'meta'"),   # a meta tensor has no values at all
])
def test_sparse_or_meta_tensors_are_refused_in_one_sentence(tmp_path, make, kind):
    # torch's weights-only loader accepts both; they then failed deep inside the checks (NotImplementedError,
    # "Tensor.item() cannot be called on meta tensors")
    def craft(payload):
        payload["state_dict"]["conv1.bias"] = make(payload["state_dict"]["conv1.bias"])
        payload.pop("weights_sha256")
    path = rewrite(nr.save_model(tiny(), tmp_path / "m.pt"), craft)
    with pytest.raises(ValueError, match=rf"m.pt' has malformed weights: conv1.bias is a {kind}; expected a dense "
                                         r"tensor with its values in the file$"):
        nr.load_model(path)


def test_a_path_that_is_not_a_path_is_one_sentence():
    with pytest.raises(TypeError, match=r"^path must be a str or os.PathLike or None, got int$"):
        nr.load_model(3)


def test_a_file_that_is_no_torch_file_is_not_called_a_pickle_of_code(tmp_path):
    # a stimulus given as the model: it was refused as "pickled objects other than weights ... could execute code"
    np.save(tmp_path / "stim.npy", np.zeros((3, 4, 4), np.float32))
    with pytest.raises(ValueError, match=r"stim.npy' is not a checkpoint: it is neither a torch file \(a zip archive, "
                                         r"or a pickle of protocol 2 or later, as torch.save writes\) nor Keras HDF5 "
                                         r"weights$"):
        nr.load_model(tmp_path / "stim.npy")


def test_other_version_is_refused(tmp_path):
    path = nr.save_model(tiny(), tmp_path / "m.pt")
    payload = torch.load(path, weights_only=True)
    payload["version"] = 99
    torch.save(payload, path)
    with pytest.raises(ValueError, match="version 99"):
        nr.load_model(path)


def test_save_is_atomic(tmp_path, monkeypatch):
    path = nr.save_model(tiny(), tmp_path / "m.pt")
    before = path.read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(OSError, match="disk full"):
        nr.save_model(tiny(), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


def test_unavailable_device_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(ValueError, match="no CUDA GPU is available"):
        nr.load_model(device="cuda")
    with pytest.raises(ValueError, match="device must be"):
        nr.load_model(device="tpu")


@pytest.mark.parametrize("name", ["m.h5", "m.pth", "m"])
def test_a_checkpoint_is_written_only_under_the_suffix_it_is_read_by(tmp_path, name):
    """nr.train(out="m.h5") wrote a torch file that load_model then read as the lab's HDF5 format."""
    with pytest.raises(ValueError, match=rf"^a checkpoint is written to a \.pt file .*, got '{name}'$"):
        nr.save_model(tiny(), tmp_path / name)
    with pytest.raises(ValueError, match=rf"^a checkpoint is written to a \.pt file .*, got '{name}'$"):
        nr.train((np.zeros((40, 16, 16), np.float32), np.zeros((40, 2))), config=tiny().config, out=tmp_path / name)
    assert list(tmp_path.iterdir()) == []


def test_numpy_scores_and_other_objects_in_the_metadata_are_saved(tmp_path):
    """A reliability audit: a float32 score (np.float32(0.61)) or a date in the provenance raised json's TypeError
    ("Object of type float32 is not JSON serializable"), naming no field."""
    import datetime

    import numpy as np

    model = nr.RetinaCNN(nr.ModelConfig(history=6, size=16, kernels=(5, 5), n_cells=2))
    model.scores = {"pearson_r": np.float32(0.5), "per_cell": np.array([0.25, 0.75])}
    model.provenance = {"when": datetime.date(2026, 12, 8), "seed": np.int64(3)}
    back = nr.load_model(nr.save_model(model, tmp_path / "m.pt"))
    assert back.scores == {"pearson_r": 0.5, "per_cell": [0.25, 0.75]}
    assert back.provenance == {"when": "2026-12-08", "seed": 3}
