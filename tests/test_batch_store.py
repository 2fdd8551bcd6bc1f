"""A results store is never trusted: nr.batch.load and the store reader refuse damage in one sentence.

The store is made in this process (run_block and finish_task, no cluster) from a tiny model, then damaged.
"""

from __future__ import annotations

import glob
import json
import os
import shutil

import numpy as np
import pytest

import napari_retina as nr

batch = pytest.importorskip("napari_retina.batch")
pytest.importorskip("zarr")
pytest.importorskip("dask")

PREDICT = "predict"
ATTRIBUTE = "cell0/attribute"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A store with a predict and a split attribute task (30 frames in blocks of 16) of one stimulus."""
    import torch

    d = tmp_path_factory.mktemp("store-inputs")
    torch.manual_seed(0)
    model = nr.RetinaCNN(nr.ModelConfig(history=8, size=12, channels=(3, 3), kernels=(5, 3), n_cells=2)).eval()
    nr.save_model(model, d / "tiny.pt")
    np.save(d / "a.npy", np.random.default_rng(0).standard_normal((30, 12, 12)).astype(np.float32))
    spec = batch.parse_spec({"model": str(d / "tiny.pt"), "stimuli": [str(d / "a.npy")], "cells": [0],
                             "analyses": ["predict", "attribute"], "out": str(d / "store"), "block_frames": 16,
                             "steps": 2})
    spec.out.mkdir()
    tasks = batch.plan(spec)
    batch._write_manifest(spec.out, spec, tasks)
    for task in tasks:
        batch.finish_task(task, str(spec.out), *[batch.run_block(task, i, str(spec.out))
                                                 for i in range(len(task.blocks))])
    batch.remove_empty_partial(spec.out)
    return spec.out


def _key(root, suffix):
    (key,) = [k for k in batch.load(root) if k.endswith(suffix)]
    return key


def _edit(path, change):
    doc = json.loads(open(path).read())
    change(doc)
    with open(path, "w") as f:
        json.dump(doc, f)


def _manifest(change):
    return lambda root: _edit(root / batch.MANIFEST, change)


def _task_attr(suffix, name, value):
    def damage(root):
        _edit(root / _key(root, suffix) / "zarr.json", lambda doc: doc["attributes"].__setitem__(name, value))
    return damage


def _array_meta(change, array="channels", block="b00000"):
    def damage(root):
        _edit(root / _key(root, ATTRIBUTE) / block / array / "zarr.json", change)
    return damage


def _huge(doc):
    doc["shape"] = [10**6, 10**5]
    doc["chunk_grid"]["configuration"]["chunk_shape"] = [10**6, 10**5]


def _outside(root):
    """A key that climbs out of the store to another copy of it."""
    other = root.parent / "other"
    shutil.copytree(root, other)
    key = _key(root, ATTRIBUTE)
    _edit(root / batch.MANIFEST, lambda doc: doc["tasks"].append({"key": f"../other/{key}"}))


def _absolute(root):
    key = _key(root, ATTRIBUTE)
    _edit(root / batch.MANIFEST, lambda doc: doc["tasks"].append({"key": str(root / key)}))


def _linked_out(root):
    os.symlink(root.parent, root / "elsewhere")
    _edit(root / batch.MANIFEST, lambda doc: doc["tasks"].append({"key": "elsewhere/x"}))


def _missing_block(root):
    shutil.rmtree(root / _key(root, ATTRIBUTE) / "b00001")


def _unknown_codec(doc):
    doc["codecs"].append({"name": "numcodecs.pickle"})


DAMAGE = {
    "manifest not JSON": (lambda root: (root / batch.MANIFEST).write_text("{not json"),
                          "its napari-retina-batch.json is not valid JSON"),
    "manifest a list": (lambda root: (root / batch.MANIFEST).write_text("[1]"),
                        "its napari-retina-batch.json holds a JSON list, expected an object with a list of tasks"),
    "tasks a string": (_manifest(lambda doc: doc.__setitem__("tasks", "abc")), "holds tasks that are a str"),
    "task without key": (_manifest(lambda doc: doc["tasks"][0].pop("key")),
                         "task 0 of its napari-retina-batch.json is"),
    "key out of the store": (_outside, "its task key '../other/"),
    "absolute key": (_absolute, "its task key '/"),
    "key through a link out of the store": (_linked_out, "its task 'elsewhere/x' is a link to a folder outside"),
    "attributes a list": (lambda root: _edit(root / _key(root, PREDICT) / "zarr.json",
                                             lambda doc: doc.__setitem__("attributes", [1])),
                          "the attributes of its task"),
    "blocks an int": (_task_attr(PREDICT, "blocks", 5), "the attribute 'blocks' of its task"),
    "blocks not contiguous": (_task_attr(ATTRIBUTE, "blocks", [[0, 16], [20, 30]]), "the attribute 'blocks'"),
    "more blocks than stored": (_task_attr(ATTRIBUTE, "blocks", [[0, 16], [16, 30], [30, 31]]),
                                "block b00002 of its task"),
    "a block missing": (_missing_block, "block b00001 of its task"),
    "params a list": (_task_attr(ATTRIBUTE, "params", [1]), "the attribute 'params' of its task"),
    "summary a string": (_task_attr(ATTRIBUTE, "summary", "x"), "the attribute 'summary' of its task"),
    "map limit infinite": (_task_attr(ATTRIBUTE, "summary", {"map_limit": "inf"}), "the summary 'map_limit'"),
    "cell a string": (_task_attr(ATTRIBUTE, "cell", "abc"), "the attribute 'cell' of its task"),
    "unknown codec": (_array_meta(_unknown_codec), "block b00000 of its task"),
    "huge array": (_array_meta(_huge), "the array 'channels' of block b00000 of its task"),
    "string data type": (_array_meta(lambda doc: doc.__setitem__("data_type", "string")), "block b00000"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_damaged_store_is_one_sentence_naming_the_store_and_the_entry(store, tmp_path, case):
    damage, sentence = DAMAGE[case]
    root = tmp_path / "store"
    shutil.copytree(store, root)
    damage(root)
    with pytest.raises((ValueError, FileNotFoundError)) as info:
        batch.load(root)
    message = str(info.value)
    assert message.startswith(f"{str(root)!r} is a damaged napari-retina results store: ")
    assert sentence in message and "\n" not in message


def test_one_damaged_task_is_left_out_where_asked_and_the_reader_shows_the_rest(store, tmp_path, monkeypatch):
    """A helper's audit: one damaged task made load, and with it the napari reader, refuse the whole store. load
    still refuses by default; damaged="skip" leaves the task out with its sentence, and the reader shows the
    intact results and says how many it left out."""
    import napari.utils.notifications as notifications

    from napari_retina._napari._batch_reader import napari_get_reader

    root = tmp_path / "store"
    shutil.copytree(store, root)
    predict, attribute = _key(root, PREDICT), _key(root, ATTRIBUTE)
    _task_attr(PREDICT, "blocks", 5)(root)
    with pytest.raises(ValueError, match="the attribute 'blocks' of its task"):
        batch.load(root)
    results = batch.load(root, damaged="skip")
    assert list(results) == [attribute] and list(results.damaged) == [predict]
    assert results.damaged[predict].startswith(f"{str(root)!r} is a damaged napari-retina results store: the "
                                               f"attribute 'blocks' of its task {predict!r}")
    said = []
    monkeypatch.setattr(notifications, "show_warning", said.append)
    layers = napari_get_reader(str(root))(str(root))
    assert layers[0][1]["name"] == "a" and len(layers) > 1                      # the stimulus and its maps
    assert len(said) == 1 and said[0].startswith(f"1 result(s) of the results store 'store' are damaged and not "
                                                 f"shown (the first, {predict}: ")
    with pytest.raises(ValueError, match="damaged must be 'raise' or 'skip', got 'ignore'"):
        batch.load(root, damaged="ignore")


def test_a_rerun_recomputes_a_result_or_partial_block_with_a_chunk_gone_or_corrupt(store, tmp_path):
    """A helper's audit: a rerun took a result for complete, and a resumed run reused a partial block, on their
    attributes alone, so a deleted chunk or array was skipped on every rerun (load refused it), and a corrupt
    partial chunk was committed as complete. A committed result is checked for its chunks (cheap, every rerun);
    a partial block about to be joined is read whole."""
    root = tmp_path / "store"
    shutil.copytree(store, root)
    spec = batch.parse_spec({**json.loads((root / batch.MANIFEST).read_text())["spec"], "out": str(root)})
    key = _key(root, ATTRIBUTE)
    task = next(t for t in batch.plan(spec) if t.key == key)
    assert batch.is_complete(root, task)
    (chunk, *_) = _chunk_files(root, key, "maps")
    os.remove(chunk)
    assert not batch.is_complete(root, task)
    # a partial block: committed by a run that stopped, one chunk corrupted since, then the run resumed
    partial = tmp_path / "partial"
    partial.mkdir()
    assert batch.run_block(task, 0, str(partial))["skipped"] is False
    assert batch.run_block(task, 0, str(partial))["skipped"] is True          # intact: reused
    (chunk, *_) = sorted(f for f in glob.glob(str(partial / ".partial" / key / "b00000" / "rates" / "c" / "**" / "*"),
                                               recursive=True) if os.path.isfile(f))
    open(chunk, "wb").write(b"\x00\x01")
    assert batch.run_block(task, 0, str(partial))["skipped"] is False         # corrupt: computed again


def test_a_truncated_partial_task_header_is_rebuilt_not_a_failure_on_every_rerun(store, tmp_path):
    """A helper's audit: a crash left .partial/<key>/zarr.json truncated, and the task failed on every rerun with
    "Unterminated string starting at: line 1 column 33", naming no file."""
    spec = batch.parse_spec({**json.loads((store / batch.MANIFEST).read_text())["spec"], "out": str(tmp_path / "s")})
    (task,) = [t for t in batch.plan(spec) if t.key.endswith(PREDICT)]
    out = tmp_path / "s"
    out.mkdir()
    blocks = [batch.run_block(task, i, str(out)) for i in range(len(task.blocks))]
    (out / ".partial" / task.key / "zarr.json").write_text('{"zarr_format": 3, "node_ty')
    assert "error" not in batch.finish_task(task, str(out), *blocks)
    batch._write_manifest(out, spec, [task])
    np.testing.assert_array_equal(batch.load(out)[task.key].arrays["rates"].compute(),
                                  batch.load(store)[task.key].arrays["rates"].compute())


def test_a_failed_block_write_and_a_killed_replace_leave_no_folders_behind(store, tmp_path, monkeypatch):
    """A helper's audit: a write that failed (a full disk) left its half-written folder in .tmp, and a --force
    commit killed between its two renames left the replaced result as .partial/<key>-old, which nothing removed."""
    spec = batch.parse_spec({**json.loads((store / batch.MANIFEST).read_text())["spec"], "out": str(tmp_path / "s")})
    (task,) = [t for t in batch.plan(spec) if t.key.endswith(PREDICT)]
    out = tmp_path / "s"
    out.mkdir()
    real = batch._write_tree

    def full_disk(group, data):
        real(group, {k: v for k, v in list(data.items())[:1]})
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(batch, "_write_tree", full_disk)
    with pytest.raises(OSError, match="No space left"):
        batch.run_block(task, 0, str(out))
    assert list((out / ".tmp").iterdir()) == []
    monkeypatch.setattr(batch, "_write_tree", real)
    old = out / ".partial" / (task.key + "-old") / "b00000"
    old.mkdir(parents=True)
    (old / "zarr.json").write_text("{}")
    kept = out / ".partial" / "other" / "b00000"
    kept.mkdir(parents=True)
    (kept / "zarr.json").write_text("{}")
    batch.remove_empty_partial(out)
    assert not old.parent.exists() and kept.exists()


def test_a_corrupt_chunk_is_one_sentence_when_it_is_read(store, tmp_path):
    root = tmp_path / "store"
    shutil.copytree(store, root)
    key = _key(root, ATTRIBUTE)
    for chunk in glob.glob(str(root / key / "b00000" / "channels" / "c" / "**" / "*"), recursive=True):
        if os.path.isfile(chunk):
            open(chunk, "wb").write(b"x")
    channels = batch.load(root)[key].arrays["channels"]
    with pytest.raises(ValueError) as info:
        channels.compute()
    assert str(info.value).startswith(f"{str(root)!r} is a damaged napari-retina results store: the array "
                                      f"'channels' of block b00000 of its task {key!r} cannot be read")



def _chunk_files(root, key, name):
    return sorted(f for f in glob.glob(str(root / key / "b00000" / name / "c" / "**" / "*"), recursive=True)
                  if os.path.isfile(f))


def test_a_missing_chunk_is_one_sentence_not_zeros(store, tmp_path):
    """zarr reads a chunk that is not there as its fill value (0): a deleted chunk file must not load as rates of 0."""
    root = tmp_path / "store"
    shutil.copytree(store, root)
    key = _key(root, PREDICT)
    (chunk,) = _chunk_files(root, key, "rates")
    os.remove(chunk)
    with pytest.raises(ValueError) as info:
        batch.load(root)[key].arrays["rates"].compute()
    assert str(info.value).startswith(f"{str(root)!r} is a damaged napari-retina results store: the array "
                                      f"'rates' of block b00000 of its task {key!r} has 1 of its 1 chunks missing")



@pytest.mark.parametrize("damage, says", [
    ("metadata", "cannot be opened (ZarrUserWarning: Object at channels is not recognized"),   # zarr only warned
    ("folder", "lacks the array 'channels' that block b00000 holds"),
])
def test_a_block_missing_an_array_is_one_sentence_not_a_shorter_result(store, tmp_path, damage, says):
    """A split task's second block without its 'channels' opened silently, the channels cut to the first block's
    frames (86 of 150 in the audit's store)."""
    root = tmp_path / "store"
    shutil.copytree(store, root)
    key = _key(root, ATTRIBUTE)
    array = root / key / "b00001" / "channels"
    if damage == "metadata":
        os.remove(array / "zarr.json")
    else:
        shutil.rmtree(array)
    with pytest.raises(ValueError) as info:
        batch.load(root)
    assert str(info.value).startswith(f"{str(root)!r} is a damaged napari-retina results store: block b00001 of "
                                      f"its task {key!r} ")
    assert says in str(info.value) and "\n" not in str(info.value)


def test_every_chunk_is_written_even_one_of_zeros(tmp_path):
    """zarr leaves out a chunk equal to its fill value unless told otherwise; the store writes them all, so that a
    chunk of a grey stretch's zero attributions is on disk and its absence can be told from damage."""
    import zarr

    group = zarr.open_group(str(tmp_path / "g"), mode="w")
    values = np.zeros((600, 2), np.float32)
    values[:256] = 1.0                                     # chunks of 256 frames: one of ones, two of zeros
    batch._write_tree(group, {"channels": values})
    files = sorted(f for f in glob.glob(str(tmp_path / "g" / "channels" / "c" / "**" / "*"), recursive=True)
                   if os.path.isfile(f))
    assert len(files) == 3
    arr = batch._checked_array(tmp_path, "k", "b00000", "channels", zarr.open_group(str(tmp_path / "g"))["channels"],
                               None)
    np.testing.assert_array_equal(arr.compute(), values)


def test_a_store_written_before_every_chunk_was_kept_still_loads(store, tmp_path):
    """An array without the every-chunk attribute (an older store) may lack a chunk of zeros: it reads as zeros."""
    root = tmp_path / "store"
    shutil.copytree(store, root)
    key = _key(root, PREDICT)
    _edit(root / key / "b00000" / "rates" / "zarr.json", lambda doc: doc["attributes"].pop(batch.EVERY_CHUNK))
    (chunk,) = _chunk_files(root, key, "rates")
    os.remove(chunk)
    rates = batch.load(root)[key].arrays["rates"].compute()
    assert not rates[:16].any() and np.isfinite(rates[16:]).all() and rates[16:].any()   # block b00000: frames 0-15


def test_the_store_reader_refuses_a_stimulus_of_another_shape_and_a_bad_crop_origin(store, tmp_path):
    from napari_retina._napari._batch_reader import read_batch_layers

    root = tmp_path / "store"
    shutil.copytree(store, root)
    key = _key(root, ATTRIBUTE)
    assert len(read_batch_layers(str(root))) > 1   # the undamaged copy reads
    crop = root / key / "b00000" / "zarr.json"
    _edit(crop, lambda doc: doc["attributes"].__setitem__("crop_origin", "ab"))
    with pytest.raises(ValueError, match=rf"the batch result '{key}' .* holds offset 2 and crop_origin ab,"):
        read_batch_layers(str(root))
    _edit(crop, lambda doc: doc["attributes"].__setitem__("crop_origin", [0, 0]))
    stimulus = batch.load(root)[key].attrs["stimulus"]
    small = tmp_path / "small.npy"
    np.save(small, np.zeros((1, 4, 4), np.float32))
    for task in (key, _key(root, PREDICT)):
        _task_attr(task, "stimulus", str(small))(root)
    with pytest.raises(ValueError, match=r"has shape \(1, 4, 4\), not that of the stimulus the result was computed "
                                         r"on \(30 frames"):
        read_batch_layers(str(root))
    assert stimulus != str(small)
