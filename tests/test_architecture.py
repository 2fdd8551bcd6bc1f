"""The package's import graph: every import points down (no module imports one that imports it back).

The graph is read from the source with ``ast``, so it sees every import a module can run:
top-level ones, function-level ones, and ``importlib.import_module`` calls whose name is
a string or an f-string completed by one of the module's own string constants. Imports
under ``if TYPE_CHECKING:`` never run and are left out; so is the implicit import of a
module's parent package (``a.b.c`` runs ``a/b/__init__``), which every submodule has.
"""

from __future__ import annotations

import ast
from pathlib import Path

import napari_retina

PACKAGE = "napari_retina"

def _modules() -> dict[str, tuple[Path, bool]]:
    """Dotted module name → (file, is a package ``__init__``), for every module of the package."""
    root = Path(napari_retina.__file__).parent
    out = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return out


def _owner(name: str, modules: dict) -> str | None:
    """The deepest module of the package that ``name`` (a module or ``module.attribute``) lives in."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or \
        (isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _runtime_nodes(tree: ast.AST):
    """Every node of ``tree`` except those under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                stack.extend(child.orelse)
            else:
                stack.append(child)


def _dynamic_targets(call: ast.Call, me: str, constants: set[str], modules: dict) -> set[str]:
    """Modules an ``importlib.import_module(...)`` call can import."""
    if not call.args:
        return set()
    arg = call.args[0]
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return {arg.value}
    if not isinstance(arg, ast.JoinedStr):
        return set()
    prefix = ""
    for part in arg.values:
        if isinstance(part, ast.Constant):
            prefix += str(part.value)
        elif isinstance(part, ast.FormattedValue) and isinstance(part.value, ast.Name) \
                and part.value.id == "__name__" and not prefix:
            prefix = me
        else:
            break
    return {prefix + c for c in constants if prefix + c in modules}


def import_graph() -> dict[str, set[str]]:
    """Module → the package's modules it imports (directly, anywhere in its code)."""
    modules = _modules()
    graph = {}
    for me, (path, is_pkg) in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        here = me if is_pkg else me.rpartition(".")[0]
        constants = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
        names: set[str] = set()
        for node in _runtime_nodes(tree):
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    pkg = here
                    for _ in range(node.level - 1):
                        pkg = pkg.rpartition(".")[0]
                    base = f"{pkg}.{base}" if base else pkg
                # `from pkg import name`: the submodule pkg.name if there is one, else pkg itself
                names.update(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names)
            elif isinstance(node, ast.Call) and isinstance(node.func, (ast.Attribute, ast.Name)) and \
                    getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module":
                names.update(_dynamic_targets(node, me, constants, modules))
        deps = {_owner(n, modules) for n in names if n == PACKAGE or n.startswith(PACKAGE + ".")}
        graph[me] = {d for d in deps if d and d != me}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components with more than one module (Tarjan), i.e. the import cycles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_function_level_and_dynamic_imports():
    """The reader finds what the package is known to hold, so an empty answer below means something."""
    g = import_graph()
    assert "napari_retina.experiments.registry" in g["napari_retina.experiments.battery"]   # top level
    assert "napari_retina.io" in g["napari_retina.synthetic"]                                 # in record_dataset
    assert "napari_retina.cli.core" in g["napari_retina.cli"]                                 # a package's module
    assert "napari_retina.stimuli" in g["napari_retina"]                                      # import_module(f"...")


def test_the_cycle_finder_finds_a_function_level_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_one_that_imports_it_back():
    found = [sorted(c) for c in cycles(import_graph())]
    assert found == [], f"import cycles (function-level imports included): {found}"


def test_synthetic_imports_nothing_above_it():
    """The ground truth is the circuit and its recordings; what is measured on it imports it, not the reverse."""
    g = import_graph()
    above = {m for m in g if m.startswith("napari_retina.experiments") or m.startswith("napari_retina._napari")}
    above |= {"napari_retina.training", "napari_retina.reduction", "napari_retina.attribution", "napari_retina.cli"}
    assert g["napari_retina.synthetic"] & above == set()


def test_metrics_imports_numpy_only():
    path = Path(napari_retina.__file__).parent / "metrics.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {"." for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level}
    assert imported <= {"numpy", "__future__", "typing"}, imported



def test_the_type_aliases_import_nothing_of_the_package():
    """``_types`` is a leaf: every module may import its aliases without importing anything else of ours."""
    assert import_graph()["napari_retina._types"] == set()


def test_the_model_hint_resolves_at_run_time():
    """``AnyModel`` names the model classes lazily, yet ``typing.get_type_hints`` resolves it in any module: the
    dock widgets read the hints of ``nr.attribute`` and ``nr.experiments.run`` to build their parameters'
    widgets, and one unresolvable hint would leave every parameter of the function without its type."""
    import typing

    import napari_retina as nr
    from napari_retina.model import RetinaCNN

    for func in (nr.predict, nr.attribute, nr.experiments.run, nr.experiments.battery):
        hints = typing.get_type_hints(func)
        assert typing.get_args(hints["model"]) == (RetinaCNN, nr.WrappedModel), func.__name__
    assert typing.get_args(typing.get_type_hints(nr.attribute)["invariance"]) == nr.attribution.INVARIANCES


def test_the_conv1_engine_sits_below_everything_that_uses_it():
    """first_layer is imported by the model, predict, attribution and reduction; it imports none of them
    (the model only for type hints), and experiments sit above attribution and reduction."""
    g = import_graph()
    users = {"napari_retina.model", "napari_retina._predict", "napari_retina.reduction",
             "napari_retina.attribution._attribute"}
    assert all("napari_retina.first_layer" in g[m] for m in users)
    above = {m for m in g if m.startswith(("napari_retina.attribution", "napari_retina.experiments",
                                           "napari_retina._napari"))}
    above |= {"napari_retina.model", "napari_retina._predict", "napari_retina.reduction", "napari_retina.training"}
    assert g["napari_retina.first_layer"] & above == set()
    for low in ("napari_retina.reduction", *[m for m in g if m.startswith("napari_retina.attribution")]):
        assert not any(d.startswith("napari_retina.experiments") for d in g[low]), low


#: what only the napari skin (``napari_retina._napari`` and its public face ``napari_retina.viewer``) may import
GUI_PACKAGES = {"napari", "qtpy", "magicgui", "psygnal", "superqt", "vispy"}
#: the napari skin: the private package and the public scripting module (``nr.show``)
SKIN = (f"{PACKAGE}._napari", f"{PACKAGE}.viewer")


def in_skin(module: str) -> bool:
    """Whether ``module`` belongs to the napari skin (:data:`SKIN`)."""
    return any(module == s or module.startswith(s + ".") for s in SKIN)
#: napari's private Qt objects; the public API has what the plugin needs (viewer.window, viewer.canvas, ...)
NAPARI_PRIVATE = ("_qt_window", "_qt_viewer")


def imported_packages(source: str) -> set[str]:
    """Top-level packages a module's source imports anywhere (function level and ``import_module`` included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names.add(node.module or "")
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) in (
                "import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
            names.add(str(node.args[0].value))
    return {n.split(".")[0] for n in names if n}


def napari_private_uses(source: str) -> list[str]:
    """Uses of napari's private API in a module's source: ``x._qt_…`` attributes (or their names in
    ``getattr`` strings) and imports of private napari modules (``napari._qt``, ``napari.utils._magicgui``)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and (node.attr.startswith("_qt_") or node.attr in NAPARI_PRIVATE):
            found.append(f".{node.attr}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in NAPARI_PRIVATE:
            found.append(repr(node.value))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            found += [m for m in mods if m.split(".")[0] == "napari" and any(p.startswith("_") for p in m.split("."))]
    return found


def test_the_gui_import_and_private_api_finders_find_what_they_look_for():
    src = ("import numpy\nfrom magicgui.widgets import Label\n"
           "def f(v):\n    import napari.layers\n    from qtpy import QtCore\n"
           "    importlib.import_module('vispy')\n    from . import io\n"
           "    v.window._qt_window.resize(1, 2)\n    getattr(v.window, '_qt_viewer')\n"
           "    from napari._qt.qt_main_window import Window\n")
    assert imported_packages(src) == {"numpy", "magicgui", "napari", "qtpy", "vispy"}
    assert sorted(napari_private_uses(src)) == ["'_qt_viewer'", "._qt_window", "napari._qt.qt_main_window"]


def test_only_the_napari_skin_imports_gui_packages_and_nothing_uses_napari_private_api():
    """The core never imports napari, Qt, magicgui, psygnal, superqt or vispy, not even inside a function;
    the skin uses napari's public API only."""
    gui, private = {}, {}
    for name, (path, _) in _modules().items():
        source = path.read_text(encoding="utf-8")
        if not in_skin(name):
            gui[name] = sorted(imported_packages(source) & GUI_PACKAGES)
        private[name] = napari_private_uses(source)
    assert {m: p for m, p in gui.items() if p} == {}
    assert {m: p for m, p in private.items() if p} == {}


def test_the_core_never_imports_the_skin():
    """No core module imports ``napari_retina._napari`` or ``napari_retina.viewer``; only the package's
    lazy ``__getattr__`` names the viewer module (``nr.show``, loaded on first use) and the command line
    (``napari-retina demo``) opens the demo."""
    g = import_graph()
    assert "napari_retina.viewer" in g[PACKAGE]   # the lazy nr.show / nr.viewer: the reader sees it
    core = {m: sorted(d for d in deps if in_skin(d)) for m, deps in g.items()
            if not in_skin(m) and m != PACKAGE and not m.startswith(f"{PACKAGE}.cli")}
    assert {m: d for m, d in core.items() if d} == {}
