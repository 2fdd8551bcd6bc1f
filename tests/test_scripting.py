"""docs/SCRIPTING.md: each of its five recipes runs as written, headless, and leaves what it says.

The ```python blocks are extracted and executed in a fresh folder with
``napari.Viewer`` made by napari's viewer fixture (so the viewer is closed and
checked for leaks after the test); nothing else in the recipe is changed.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")

import napari  # noqa: E402

DOC = Path(__file__).resolve().parents[1] / "docs" / "SCRIPTING.md"
TITLES = ["Analyse a file and show it", "Loop over cells and save screenshots",
          "Run the battery and browse its results", "Open a saved analysis",
          "Compare two models side by side, time linked"]


def recipes() -> dict[str, str]:
    """Recipe title → its code (the one ```python block under each '## N. title' heading)."""
    text = DOC.read_text(encoding="utf-8")
    out = {}
    for title, body in re.findall(r"^## \d+\. (.+?)\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S):
        (code,) = re.findall(r"```python\n(.*?)```", body, flags=re.S)
        out[title] = code
    return out


@pytest.fixture
def run(make_napari_viewer, monkeypatch, tmp_path):
    """Run recipe ``title`` in ``tmp_path`` with viewers from the fixture; returns its namespace."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(napari, "Viewer", lambda *a, **k: make_napari_viewer())
    monkeypatch.setattr(napari, "run", lambda *a, **k: None)

    def _run(title: str) -> dict:
        namespace: dict = {"__name__": "__recipe__"}
        exec(compile(recipes()[title], f"SCRIPTING.md: {title}", "exec"), namespace)
        return namespace

    return _run


def _png_shape(path) -> tuple:
    """The PNG's shape, after checking that it shows something (not one flat colour, as an undrawn canvas is)."""
    import imageio.v3 as iio

    image = iio.imread(path)
    assert image[..., :3].std() > 5, f"{path} is blank"
    return image.shape


def test_the_document_has_the_five_recipes():
    assert list(recipes()) == TITLES


def test_recipe_1_analyses_a_file_and_shows_it(run, tmp_path):
    ns = run(TITLES[0])
    viewer, res = ns["viewer"], ns["res"]
    assert viewer.layers[0].name == "noise" and viewer.layers[1].name == f"noise: {res.reduction.label(0)}"
    assert len(viewer.layers) == 1 + res.attribution.maps.shape[1]
    assert (tmp_path / "noise-analysis.h5").is_file()


def test_recipe_2_loops_over_cells_without_piling_up_layers(run, tmp_path):
    ns = run(TITLES[1])
    n_cells = ns["model"].config.n_cells
    assert len(ns["viewer"].layers) == 9  # one stimulus and 8 maps, whatever the number of cells
    assert ns["viewer"].layers[0].metadata["napari_retina"]["traces"]["title"].count(f"cell {n_cells - 1}") == 1
    assert [_png_shape(tmp_path / f"noise-cell{c}.png") for c in range(n_cells)] == [(800, 1200, 4)] * n_cells


def test_recipe_3_shows_the_battery_and_browses_it(run, tmp_path):
    ns = run(TITLES[2])
    viewer, battery = ns["viewer"], ns["battery"]
    assert [n for n in ("osr", "reversal") if n in viewer.layers] == ["osr", "reversal"]
    # the loop left the last experiment's traces in the plot: the model's response at every frame (its rates
    # minus F(0)), which is the attribution's on the attributed frames
    res = battery["results"]["reversal"]
    drawn = ns["plot"].series[0]["values"]
    np.testing.assert_allclose(drawn, res.response - res.attribution.baseline_rate, atol=1e-6)
    frames = res.attribution.frames
    np.testing.assert_allclose(drawn[frames], res.attribution.response[frames], atol=1e-5)
    assert _png_shape(tmp_path / "battery.png") == (600, 1600, 4)


def test_recipe_4_opens_the_analysis_recipe_1_saved(run):
    first = run(TITLES[0])
    ns = run(TITLES[3])
    assert ns["layers"][0].name == "noise-analysis" and ns["settings"]["cell"] == 0
    assert len(ns["layers"]) == len(first["viewer"].layers)
    assert ns["viewer"] is not first["viewer"]


def test_recipe_5_puts_two_models_side_by_side_with_one_time_slider(run, tmp_path):
    ns = run(TITLES[4])
    viewer = ns["viewer"]
    x_shipped = np.asarray(viewer.layers["shipped"].extent.world)[:, -1]
    x_untrained = np.asarray(viewer.layers["untrained"].extent.world)[:, -1]
    assert x_untrained[0] > x_shipped[1]
    assert viewer.dims.point[0] == 600.0
    assert _png_shape(tmp_path / "compare.png") == (700, 1600, 4)


def test_the_readmes_viewer_example_shows_the_maps_and_saves_its_screenshot(run, tmp_path):
    """README.md's "To look at a result in a viewer from a script" block, as written (its other blocks run in
    tests/test_readme.py, which opens no viewer); ``run`` for its viewers and folder."""
    from test_readme import block, run as run_readme

    ns = run_readme(block("python", "viewer = napari.Viewer()"), "viewer example")
    viewer, attr = ns["viewer"], ns["attr"]
    assert viewer.layers[0].name == "flashes" and len(viewer.layers) == 1 + attr.maps.shape[1]
    assert _png_shape(tmp_path / "flashes.png") == (800, 1200, 4)


NOTEBOOK_DRIVER = r"""
import queue, sys
from jupyter_client.manager import start_new_kernel

CELLS = ["%gui qt",
         "import napari, napari_retina as nr\nviewer = napari.Viewer(show=False)\n"
         "layers = nr.show(nr.stimuli.white_noise(frames=10, size=20, seed=0), viewer, name='nb')\n"
         "print([layer.name for layer in layers])",
         "print(len(viewer.layers), nr.viewer.set_time(viewer, 50))",
         "viewer.close()"]


def run_cell(client, code):
    # ipykernel's Qt loop can miss the edge-triggered wake-up of a request that arrives while it enters the
    # loop (ipython/ipykernel#559, "Run All" after %gui qt); the cell then never starts. A notebook user's
    # next request wakes it; so does ours: a kernel_info request whenever the cell has not started in 5 s.
    msg_id, started, pokes = client.execute(code), False, 0
    while True:
        try:
            msg = client.get_iopub_msg(timeout=5 if not started else 180)
        except queue.Empty:
            if started or pokes == 36:  # a started cell silent for 3 min, or 3 min of pokes unanswered
                raise SystemExit(f"cell {code!r} did not finish")
            print("kernel not woken; poking it", file=sys.stderr)
            client.kernel_info()
            pokes += 1
            continue
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        started = True
        if kind == "error":
            raise SystemExit("\n".join(content["traceback"]))
        if kind == "stream":
            print(content["text"], end="")
        if kind == "status" and content["execution_state"] == "idle":
            return


km, client = start_new_kernel(kernel_name="python3", startup_timeout=180)
try:
    for code in CELLS:
        run_cell(client, code)
finally:
    client.stop_channels()
    km.shutdown_kernel(now=True)
"""


def test_in_a_notebook_after_gui_qt_show_returns_and_the_viewer_stays_usable():
    """A Jupyter kernel with ``%gui qt`` (napari's event-loop integration): ``nr.show`` returns at once (it
    never starts the event loop) and the next cell works with the same viewer. Driven from a child process."""
    pytest.importorskip("ipykernel")
    pytest.importorskip("jupyter_client")
    done = subprocess.run([sys.executable, "-c", NOTEBOOK_DRIVER], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["['nb']", "1", "50.0"]
