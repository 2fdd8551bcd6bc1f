"""README.md's examples, as written: what a newcomer copies from it runs and does what its comments say.

Each ```python block is executed unchanged in a fresh folder, after making the files and objects
it names (the lab's checkpoints, built by test_formats' writers; a module with the path the
``nr.wrap`` example gives). The one call of a block that needs a viewer is bound to its
function's signature instead (the README's viewer example itself runs in test_scripting.py,
which opens viewers). The batch spec is one that ``nr.batch.parse_spec`` accepts and plans, and
every command and option of the command-line block is one the parser knows.
"""

from __future__ import annotations

import inspect
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import napari_retina as nr
from test_formats import keras_weights, save_keras, save_tdr, tdr_state

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def block(language: str, marker: str) -> str:
    """The one fenced block of ``language`` in the README that contains ``marker``."""
    found = [code for code in re.findall(rf"^```{language}\n(.*?)^```", README.read_text(encoding="utf-8"),
                                         flags=re.M | re.S) if marker in code]
    assert len(found) == 1, f"{len(found)} ```{language} blocks of README.md contain {marker!r}"
    return found[0]


def run(code: str, name: str, **namespace) -> dict:
    """Execute README code in a namespace holding ``namespace``; returns the namespace."""
    namespace = {"__name__": "__readme__", **namespace}
    exec(compile(code, f"README.md: {name}", "exec"), namespace)
    return namespace


def without_line(code: str, start: str) -> tuple[str, str]:
    """``code`` less its one line that starts with ``start``, and that line."""
    lines = code.splitlines()
    (line,) = [ln for ln in lines if ln.startswith(start)]
    return "\n".join(ln for ln in lines if ln is not line) + "\n", line


def test_the_scripting_example_runs_and_gives_the_shapes_its_comments_give(capsys):
    ns = run(block("python", "nr.stimuli.flash_train(period=6)"), "Scripting")
    stim, model, rates, attr = ns["stim"], ns["model"], ns["rates"], ns["attr"]
    assert stim.dtype == np.float32 and stim.shape[1:] == (50, 50)
    history, n_cells = model.config.history, model.config.n_cells
    assert rates.shape == (len(stim), n_cells)
    assert np.isnan(rates[:history - 1]).all() and np.isfinite(rates[history - 1:]).all()
    assert attr.channels.shape == (len(stim), 8)
    assert attr.completeness_error <= 1e-3                       # "to tol=1e-3"
    assert capsys.readouterr().out.startswith(f"({len(stim)}, 8) ")
    assert 1 <= len(ns["red"].kept) <= 8
    assert isinstance(ns["res"].readout["present"], bool)


def test_the_lab_formats_example_imports_each_file_it_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    save_tdr(tmp_path / "15-10-07_naturalscene.pt", "BNCNN", tdr_state("BNCNN")[0])
    save_tdr(tmp_path / "15-11-21a_naturalscene.pt", "LinearStackedBNCNN",
             tdr_state("LinearStackedBNCNN", ksizes=(7, 5))[0])
    save_keras(tmp_path / "bn_cnn_weights.h5", keras_weights())
    ns = run(block("python", "15-10-07_naturalscene.pt"), "Your own model", nr=nr)
    assert nr.load_model("15-10-07_naturalscene.pt").config.norm["units"] == "raw"     # its comment
    collapsed = nr.load_model("collapsed.pt")
    assert collapsed.config.kernels == (7, 5)                                          # one kxk kernel a layer
    assert ns["model"].config.norm["units"] == "contrast"                              # "takes contrast units"


class _Layer(nn.Module):
    def __init__(self, history: int):
        super().__init__()
        self.conv = nn.Conv3d(1, 2, (history, 9, 9))


class _Features(nn.Module):
    def __init__(self, history: int):
        super().__init__()
        self.layer0 = _Layer(history)


class _Core(nn.Module):
    def __init__(self, history: int):
        super().__init__()
        self.features = _Features(history)

    def forward(self, x):
        return F.elu(self.features.layer0.conv(x))


class OpenretinaShaped(nn.Module):
    """(N, 1, history, size, size) → (N, cells): a Conv3d core at ``core.features.layer0.conv``, a linear readout."""

    def __init__(self, history: int = 50, size: int = 40, cells: int = 3):
        super().__init__()
        self.core = _Core(history)
        self.readout = nn.Linear(2 * (size - 8) ** 2, cells)

    def forward(self, x):
        return F.softplus(self.readout(self.core(x).flatten(1)))


def test_the_wrap_example_runs_on_a_module_of_the_shape_it_names():
    torch.manual_seed(0)
    code, viewer_line = without_line(block("python", "nr.wrap(my_module"), "nr.viewer.use_model(")
    stim = np.random.default_rng(0).normal(size=(80, 40, 40)).astype(np.float32)
    names = ["a", "b", "c"]
    ns = run(code, "Your own model: nr.wrap", nr=nr, my_module=OpenretinaShaped().eval(), stim=stim, names=names)
    assert ns["rates"].shape == (80, 3) and np.isnan(ns["rates"][:49]).all()
    assert np.isfinite(ns["rates"][49:]).all()
    assert ns["attr"].channels.shape == (80, 2) and ns["attr"].completeness_error <= 1e-3
    assert ns["wrapped"].config.cell_names == names
    assert isinstance(ns["res"].readout["present"], bool)
    from napari_retina import viewer

    call = re.fullmatch(r"nr\.viewer\.use_model\((\w+), (\w+)\)\s*(#.*)?", viewer_line.strip())
    assert call, viewer_line
    inspect.signature(viewer.use_model).bind(*call.group(1, 2))


def test_the_batch_spec_is_accepted_and_planned_as_its_text_says(tmp_path):
    pytest.importorskip("zarr")
    (tmp_path / "models").mkdir()
    nr.save_model(nr.load_model(device="cpu"), tmp_path / "models" / "seed1.pt")
    (tmp_path / "recordings").mkdir()
    shutil.copy(ROOT / "sample_data" / "synthetic_recording.h5", tmp_path / "recordings" / "r1.h5")
    shutil.copy(ROOT / "sample_data" / "naturalistic_movie.tif", tmp_path / "movie.tif")
    (tmp_path / "spec.json").write_text(block("json", '"analyses"'))
    from napari_retina import batch

    spec = batch.parse_spec(tmp_path / "spec.json")
    assert spec.out == (tmp_path / "results").resolve()        # relative to the spec file
    assert len(spec.models) == 2 and len(spec.stimuli) == 2 and spec.steps == 8 and spec.block_frames == 2048
    tasks = batch.plan(spec)
    # one task per (model, stimulus) for predict, per (model, stimulus, cell) for attribute and reduce,
    # and per (model, experiment, cell)
    assert len(tasks) == 2 * 2 + 2 * 2 * 2 * 2 + 2 * 2 * 2


def test_every_command_and_option_of_the_command_line_block_is_one_the_parser_knows():
    from napari_retina.cli import build_parser

    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.dest == "command"]
    usage = block("text", "napari-retina demo") + block("bash", "napari-retina batch spec.json")
    seen = []
    for line in usage.splitlines():
        usage_line = line.split("#")[0]
        words = usage_line.split("  ")[0].split()        # the usage, not the description after it
        if words[:1] != ["napari-retina"]:
            continue
        # the word after the program is the command; "synth / train / evaluate" names three
        commands = [w for w in words[1:] if w != "/"] if "/" in words else words[1:2]
        options = re.findall(r"--[a-z][a-z-]*", usage_line)
        for command in commands:
            assert command in sub.choices, f"README's {command!r} is not a command"
            known = {o for a in sub.choices[command]._actions for o in a.option_strings}
            assert set(options) <= known, f"{command}: {sorted(set(options) - known)} unknown"
            seen.append(command)
    assert set(seen) == set(sub.choices), f"commands the README's block leaves out: {set(sub.choices) - set(seen)}"
