"""What the dock widgets share: parameter widgets made from core signatures, the stimulus-layer picker.

A widget that gathers a core function's parameters takes each one's default
and type from the function itself (:func:`parameter_widget`), so the widget
and a script calling the function start from the same values.
"""

from __future__ import annotations

import inspect
import typing
from typing import Any, Callable, Optional

import napari.layers
from magicgui.widgets import create_widget
from magicgui.widgets.bases import CategoricalWidget, ValueWidget

from .._layers import META

_FROM_SIGNATURE: Any = object()


def _type_hint(func: Callable, name: str, default: Any) -> Any:
    """The type hint of ``func``'s parameter ``name``, else the type of its default."""
    try:
        hint = typing.get_type_hints(func).get(name)
    except NameError:  # a hint of the function imported for type checkers only
        hint = None
    return type(default) if hint is None else hint


def parameter_widget(func: Callable, name: str, *, value: Any = _FROM_SIGNATURE,
                     annotation: Any = _FROM_SIGNATURE, label: Optional[str] = None, **options) -> ValueWidget:
    """A magicgui widget for the parameter ``name`` of the core function ``func``.

    Its value is the parameter's default and its type the parameter's type
    hint (a ``Literal`` becomes a combo box of its values), unless ``value``
    or ``annotation`` is given (for a default of None, or a hint wider than
    what the widget offers); ``options`` go to magicgui (``min``, ``max``,
    ``step``, ...). The widget's ``name`` is ``name``.

    Example
    -------
    >>> parameter_widget(nr.attribute, "invariance").choices      # doctest: +SKIP
    ('auto', 'none', 'x', 'y', 'space')
    """
    param = inspect.signature(func).parameters[name]
    value = param.default if value is _FROM_SIGNATURE else value
    annotation = _type_hint(func, name, value) if annotation is _FROM_SIGNATURE else annotation
    return create_widget(value=value, annotation=annotation, name=name, label=label or name, options=options)


def stimulus_layers(viewer) -> list:
    """Image layers of ``viewer`` that can be stimuli (not the plugin's own attribution maps)."""
    return [layer for layer in viewer.layers if isinstance(layer, napari.layers.Image)
            and layer.metadata.get(META, {}).get("role") != "map"]


def layer_picker(viewer, label: str = "stimulus layer") -> CategoricalWidget:
    """A ``napari.layers.Image`` picker listing the stimulus layers of ``viewer``.

    The choices are :func:`stimulus_layers` (the viewer's image layers without
    the attribution maps); napari refreshes them as layers come and go once
    the widget is docked, and the first one is chosen when none was.
    """
    picker = create_widget(annotation=napari.layers.Image, label=label)
    picker.choices = lambda _widget: [(layer.name, layer) for layer in stimulus_layers(viewer)]
    return picker
