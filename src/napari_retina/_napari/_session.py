"""Per-viewer state shared by the dock widgets: the current model.

A :class:`Session` (one per viewer, :func:`session`) holds the model the
widgets use; the Model widget sets it, the Analyze and Experiments widgets
read it and follow ``model_changed``. A script hands the widgets its own
model, a RetinaCNN or a wrapped module (``nr.wrap``), the same way::

    nr.viewer.use_model(viewer, nr.wrap(net, input="NCTHW", history=30, size=20, first_layer="core.conv"))
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

from psygnal import Signal

from .._types import AnyModel
from .._wrap import model_config
from ..checkpoint import load_model

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    import napari

#: what a model handed over by a script is called in the Model widget's summary
SCRIPT_SOURCE = "set by a script"


class Session:
    """The current model of one viewer, shared by the widgets.

    ``model_changed`` fires (in the GUI thread) with the new model.
    """

    model_changed = Signal(object)

    def __init__(self) -> None:
        self._model = None
        self.source = "shipped default"
        self.device = "auto"

    @property
    def model(self) -> AnyModel:
        """The current model (the shipped default, loaded on first use; ``model_changed`` fires then too,
        so the widgets show it: the cell boxes' range, the Model widget's summary).

        Assigning a RetinaCNN or a wrapped module (``nr.wrap``) makes it the
        widgets' model, as :meth:`set_model` with source "set by a script".
        """
        if self._model is None:
            self._model = load_model(device=self.device)
            self.source = "shipped default"
            self.model_changed.emit(self._model)
        return self._model

    @model.setter
    def model(self, model: AnyModel) -> None:
        self.set_model(model, SCRIPT_SOURCE)

    def has_model(self) -> bool:
        return self._model is not None

    def set_model(self, model: AnyModel, source: str) -> None:
        """Make ``model`` the current one (``source`` says where it came from); anything else is one TypeError."""
        model_config(model)
        self._model = model
        self.source = source
        self.model_changed.emit(model)


_SESSIONS: "weakref.WeakKeyDictionary[Any, Session]" = weakref.WeakKeyDictionary()


def session(viewer) -> Session:
    """The :class:`Session` of ``viewer`` (created on first use)."""
    if viewer not in _SESSIONS:
        _SESSIONS[viewer] = Session()
    return _SESSIONS[viewer]


def use_model(viewer: "napari.Viewer", model: AnyModel, source: str = SCRIPT_SOURCE) -> None:
    """Make ``model`` the model of ``viewer``'s dock widgets (Model, Analyze, Experiments).

    ``model``: a RetinaCNN (``nr.load_model``) or a user's module adapted by
    ``nr.wrap``; ``source`` is what the Model widget's summary says it came
    from. Anything else is refused with one TypeError.

    Example
    -------
    >>> use_model(viewer, nr.wrap(net, input="NCTHW", history=30, size=20, first_layer="core.conv"))  # doctest: +SKIP
    """
    session(viewer).set_model(model, source)
