"""Each public module's ``__all__`` (the submodules ``napari_retina`` exposes: ``nr.io``, ``nr.synthetic``, …).

``from napari_retina.io import *`` and documentation tools read a module's API from ``__all__``: every name it
lists must exist, and every public (non-underscore) function or class the module defines must be listed, or be
named below as deliberately left out, so that a new function cannot be forgotten there.
"""

from __future__ import annotations

import importlib
import inspect

import pytest

import napari_retina as nr

#: public-looking functions and classes deliberately left out of their module's ``__all__``, per module
NOT_EXPORTED = {
    # the wording of results and errors for the Analyze dock's status line and the command line's one-line errors
    "analysis": {"is_out_of_memory", "memory_sentence", "maps_note"},
}


def _defined(module) -> set[str]:
    """The public functions and classes ``module`` defines itself (not those it imports)."""
    return {name for name, obj in vars(module).items()
            if not name.startswith("_") and (inspect.isfunction(obj) or inspect.isclass(obj))
            and getattr(obj, "__module__", None) == module.__name__}


@pytest.mark.parametrize("name", nr._SUBMODULES)
def test_all_lists_names_that_exist_once(name):
    module = importlib.import_module(f"napari_retina.{name}")
    listed = module.__all__
    assert isinstance(listed, list) and all(isinstance(n, str) for n in listed)
    assert len(set(listed)) == len(listed), sorted({n for n in listed if listed.count(n) > 1})
    assert [n for n in listed if not hasattr(module, n)] == []
    namespace: dict = {}
    exec(f"from napari_retina.{name} import *", namespace)   # noqa: S102 - the star import itself
    assert set(listed) <= set(namespace)


@pytest.mark.parametrize("name", nr._SUBMODULES)
def test_every_public_function_and_class_is_listed_or_deliberately_left_out(name):
    module = importlib.import_module(f"napari_retina.{name}")
    defined, left_out = _defined(module), NOT_EXPORTED.get(name, set())
    assert left_out <= defined, f"NOT_EXPORTED names what napari_retina.{name} does not define: {left_out - defined}"
    assert left_out & set(module.__all__) == set()
    assert sorted(defined - set(module.__all__) - left_out) == []


def test_the_finder_sees_what_a_module_defines_not_what_it_imports():
    """``io`` defines ``read_stimulus`` and imports ``as_stack`` from ``_validate``: only the first counts."""
    defined = _defined(nr.io)
    assert "read_stimulus" in defined and "Dataset" in defined and "as_stack" not in defined
