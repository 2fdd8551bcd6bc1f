"""Shared test-session setup: the test modules that open napari viewers run after all others.

Why: a process in which a napari viewer has drawn (Mesa's GL loads the
system's libLLVM) is killed (SIGSEGV) when triton is imported afterwards
(triton's libtriton.so carries its own LLVM). On every CUDA build of torch,
building a torch optimiser imports torch._dynamo and with it triton, and the
training tests legitimately build one in this process. Running the viewer
modules last keeps every order of test files on the command line safe
(``pytest tests/test_napari_layers.py tests/test_training.py`` crashed).
The package itself never imports triton next to a viewer: the analysis path
uses no optimiser (tests/test_no_dynamo.py) and the Model widget trains in a
child process; the napari modules are also run alone with triton importable
(scripts/test.sh, which CI runs).
"""

from __future__ import annotations

import gc

import pytest

VIEWER_FIXTURE = "make_napari_viewer"


def _module(item) -> str:
    return item.nodeid.split("::", 1)[0]


def pytest_configure(config) -> None:
    """Keep freed memory for reuse in every test process, as the ``napari-retina`` command does.

    With glibc's defaults the truths' and the attribution's tens of megabytes of
    temporaries are faulted back in page by page on every batch: the version-6
    battery test spent 20 s of its 38 s in the kernel (8.7 million minor page
    faults), 18.6 s with the thresholds held (1.5 million). A process-wide
    choice, made here for the test processes only; the numbers the tests check
    do not depend on it, and tests/test_malloc.py probes glibc's defaults in
    fresh subprocesses, which mallopt does not reach.
    """
    from napari_retina._malloc import hold_freed_memory

    hold_freed_memory()


def pytest_collection_modifyitems(session, config, items) -> None:
    """Move the modules with a viewer test after the others (each module's own order kept)."""
    viewer_modules = {_module(i) for i in items if VIEWER_FIXTURE in getattr(i, "fixturenames", ())}
    items[:] = ([i for i in items if _module(i) not in viewer_modules]
                + [i for i in items if _module(i) in viewer_modules])



@pytest.fixture
def oom_above_256(monkeypatch):
    """nr.attribution.attribute that runs out of (CUDA) memory above 256 frames a batch.

    Returns the list of batch sizes asked for, in order (None: the default);
    ``oom_above_256.real`` is the real function.
    """
    import torch

    import napari_retina as nr

    real = nr.attribution.attribute
    sizes: list = []

    def fake(*args, batch_size=None, **kwargs):
        sizes.append(batch_size)
        if batch_size is None or batch_size > 256:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(*args, batch_size=batch_size, **kwargs)

    monkeypatch.setattr(nr.attribution, "attribute", fake)
    return sizes


@pytest.fixture(scope="module")
def tiny():
    """A small untrained RetinaCNN (history 10 frames, 20×20 px, kernels 5 and 5, 2 cells), seed 0, eval mode.

    Modules that need another shape define their own ``tiny``, which overrides this one.
    """
    import torch

    import napari_retina as nr

    torch.manual_seed(0)
    return nr.RetinaCNN(nr.ModelConfig(history=10, size=20, kernels=(5, 5), n_cells=2)).eval()


@pytest.fixture
def wrapped_tiny():
    """A small user module through ``nr.wrap``: Conv2d(6 → 3, 5) on 12×12 frames of a 6-frame history, a linear
    readout of 2 cells, softplus; seed 0, eval mode."""
    import torch

    import napari_retina as nr

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(6, 3, 5)
            self.readout = torch.nn.Linear(3 * 8 * 8, 2)

        def forward(self, x):
            return torch.nn.functional.softplus(self.readout(torch.relu(self.conv(x)).flatten(1)))

    torch.manual_seed(0)
    return nr.wrap(Net().eval(), history=6, size=12, first_layer="conv")


@pytest.fixture
def notes(monkeypatch):
    """Every notification the plugin's widgets raise, as (level, message), instead of napari's toasts."""
    from napari_retina._napari import _tasks

    got: list = []
    for level in ("error", "warning", "info"):
        monkeypatch.setattr(_tasks, f"show_{level}", lambda msg, level=level: got.append((level, msg)))
    return got


@pytest.fixture(autouse=True)
def _frozen_survivors():
    """Freeze what has survived until this test (imports, module fixtures) out of the cyclic GC.

    napari's canvas runs a full gc.collect() on every layer removal, and CPython
    runs full collections as objects accumulate; each traverses every tracked
    object, most of them torch's, napari's and Qt's, which never become garbage.
    Frozen (gc.freeze, after one collection so that no garbage is frozen), they
    are skipped, and the collections traverse what the running test makes.
    """
    gc.collect()
    gc.freeze()
    yield


@pytest.fixture(scope="module")
def plugin():
    """The napari-retina manifest, registered from the source tree unless it was discovered (its name)."""
    from pathlib import Path

    from npe2 import PluginManager, PluginManifest

    import napari_retina

    pm = PluginManager.instance()
    try:
        pm.get_manifest("napari-retina")
    except KeyError:
        pm.register(PluginManifest.from_file(Path(napari_retina.__file__).parent / "napari.yaml"))
    return "napari-retina"
