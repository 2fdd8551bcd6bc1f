"""Per-viewer state shared by the dock widgets: the current model.

A :class:`Session` (one per viewer, :func:`session`) holds the model the
widgets use; the Model widget sets it, the Analyze and Experiments widgets
read it and follow ``model_changed``.
"""

from __future__ import annotations

import weakref
from typing import Any

from psygnal import Signal

from ..checkpoint import load_model
from ..model import RetinaCNN


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
    def model(self) -> RetinaCNN:
        """The current model (the shipped default, loaded on first use)."""
        if self._model is None:
            self._model = load_model(device=self.device)
            self.source = "shipped default"
        return self._model

    def has_model(self) -> bool:
        return self._model is not None

    def set_model(self, model: RetinaCNN, source: str) -> None:
        self._model = model
        self.source = source
        self.model_changed.emit(model)


_SESSIONS: "weakref.WeakKeyDictionary[Any, Session]" = weakref.WeakKeyDictionary()


def session(viewer) -> Session:
    """The :class:`Session` of ``viewer`` (created on first use)."""
    if viewer not in _SESSIONS:
        _SESSIONS[viewer] = Session()
    return _SESSIONS[viewer]
