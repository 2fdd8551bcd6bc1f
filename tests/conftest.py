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
(.ci/run).
"""

from __future__ import annotations

VIEWER_FIXTURE = "make_napari_viewer"


def _module(item) -> str:
    return item.nodeid.split("::", 1)[0]


def pytest_collection_modifyitems(session, config, items) -> None:
    """Move the modules with a viewer test after the others (each module's own order kept)."""
    viewer_modules = {_module(i) for i in items if VIEWER_FIXTURE in getattr(i, "fixturenames", ())}
    items[:] = ([i for i in items if _module(i) not in viewer_modules]
                + [i for i in items if _module(i) in viewer_modules])
