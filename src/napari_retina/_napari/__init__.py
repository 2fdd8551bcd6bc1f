"""Everything napari: reader, sample data, widgets, result layers, demo.

This is the only package of napari-retina that imports napari, magicgui,
qtpy, psygnal, superqt or vispy. The core (``napari_retina``) never imports it.

One concept per module: ``_layers`` (core results as layer data, no viewer),
``_viewer`` (adding them to a viewer), ``_plot`` (the trace plot dock), ``_session`` (the
model the widgets share), ``_tasks`` (thread workers with progress and
cancel), ``_widgets/`` (one module per dock widget), ``_reader``,
``_sample_data`` and ``demo``.

Private: scripts use the public :mod:`napari_retina.viewer` (``nr.show``, see
docs/SCRIPTING.md), which dispatches to :mod:`._viewer`; nothing here is needed by a user::

    import napari, napari_retina as nr
    viewer = napari.Viewer()
    attr = nr.attribute(nr.load_model(), nr.stimuli.flash_train(), invariance="none")
    nr.show(attr, viewer, reduction=nr.reduce(attr))   # stimulus, channel maps; traces in a dock
    napari.run()

``napari_retina.viewer.use_model(viewer, model)`` hands the dock widgets a model of the
script's own: a RetinaCNN or a PyTorch module adapted by ``nr.wrap``.
"""

from ._layers import analysis_layer_data, map_layer_data, stimulus_layer_kwargs
from ._plot import show_traces
from ._viewer import add_analysis

__all__ = [
    "add_analysis",
    "analysis_layer_data",
    "map_layer_data",
    "show_traces",
    "stimulus_layer_kwargs",
]
