"""The analysis path never imports torch._dynamo (nor, through it, triton).

Why: every CUDA build of torch ships triton, and ``import torch._dynamo``
imports triton. triton's libtriton.so carries its own LLVM; loading it into a
process where a napari viewer already drew with Mesa (which loaded the
system's libLLVM) crashes the process (SIGSEGV in LLVM's option registry).
Any torch optimiser, torch.compile or torch.func transform imports dynamo, so
the calls the Analyze and Experiments widgets make must use none of them.

Each check runs in a fresh interpreter: in this one an earlier test may
already have imported dynamo.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SRC = str(Path(__file__).resolve().parents[1] / "src")

# records who imports the watched modules first, runs the body, prints a JSON report
PRELUDE = textwrap.dedent("""
    import importlib.abc, json, sys, traceback
    WATCHED = ("torch._dynamo", "triton")
    first = {}

    class Watch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name in WATCHED and name not in first:
                first[name] = [f"{f.filename}:{f.lineno} {f.name}" for f in traceback.extract_stack()
                               if "napari_retina" in f.filename]
            return None

    sys.meta_path.insert(0, Watch())
    import numpy as np, torch
    import napari_retina as nr
    torch.manual_seed(0)
    model = nr.RetinaCNN(nr.ModelConfig(history=10, size=20, kernels=(5, 5), n_cells=2)).eval()
    stim = nr.stimuli.white_noise(frames=40, size=20, seed=1)
""")
REPORT = textwrap.dedent("""
    print("REPORT " + json.dumps({"loaded": [m for m in WATCHED if m in sys.modules], "first": first}))
""")

CORE = textwrap.dedent("""
    nr.predict(model, stim)
    attr = nr.attribute(model, stim, cell=1, steps=4)
    nr.reduce(attr, explain=0.6)
    for name in nr.experiments.names():
        nr.experiments.run(name, model, cell=0, steps=2)
""")

WIDGETS = textwrap.dedent("""
    from napari_retina import analysis
    from napari_retina._napari import _layers, _widgets
    for threshold in (0, analysis.LAZY_MAP_BYTES):  # lazy (dask) maps and full maps
        res = analysis.run_analysis(model, stim, cell=0, steps=2, explain=0.6, lazy_threshold=threshold)
        np.asarray(res.maps[20:28]) if res.lazy else None
    _layers.analysis_layer_data(res.attribution, res.reduction, _layers.layer_geometry(shape=stim.shape),
                                maps=res.maps, limit=res.limit)
""")


def _run(body: str) -> dict:
    """Run PRELUDE + body in a fresh interpreter (this checkout's src first on the path); its report."""
    path = os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH", "")) if p)
    out = subprocess.run([sys.executable, "-c", PRELUDE + body + REPORT], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": path}, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("REPORT ")][-1]
    return json.loads(line[len("REPORT "):])


def test_predict_attribute_reduce_and_experiments_import_no_dynamo():
    report = _run(CORE)
    assert report["loaded"] == [], f"imported by: {report['first']}"


def test_analyze_widget_computation_imports_no_dynamo():
    pytest.importorskip("napari")
    report = _run(WIDGETS)
    assert report["loaded"] == [], f"imported by: {report['first']}"
