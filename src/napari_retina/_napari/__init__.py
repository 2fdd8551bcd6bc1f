"""Everything napari: reader, sample data, widgets, result layers, demo.

This is the only package of napari-retina that imports napari, magicgui,
qtpy or vispy. The core (``napari_retina``) never imports it.

Scripting a viewer::

    import napari, napari_retina as nr
    from napari_retina._napari import add_analysis
    viewer = napari.Viewer()
    attr = nr.attribute(nr.load_model(), nr.stimuli.flash_train(), invariance="none")
    add_analysis(viewer, attr, nr.reduce(attr))   # stimulus, channel maps, traces, time cursor
    napari.run()
"""

from ._layers import (
    add_analysis,
    add_result_layers,
    analysis_layer_data,
    map_layer_data,
    stimulus_layer_kwargs,
    trace_layer_data,
)

__all__ = [
    "add_analysis",
    "add_result_layers",
    "analysis_layer_data",
    "map_layer_data",
    "stimulus_layer_kwargs",
    "trace_layer_data",
]
