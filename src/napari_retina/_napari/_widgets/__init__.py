"""The dock widgets (Plugins ▸ napari-retina), one module each: Stimulus, Model, Analyze, Experiments.

Widgets are thin: they gather a core function's parameters (magicgui widgets
made from its signature, :mod:`._common`), run it in a worker thread with
progress and cancel (:mod:`.._tasks`), and turn its result into layers
(:mod:`.._layers`, :mod:`.._viewer`). Bad input and failures become
one-sentence napari notifications; a cancelled or failed run adds no layers.
"""

from .analyze import AnalyzeWidget
from .experiments import ExperimentsWidget
from .model import ModelWidget
from .stimulus import StimulusWidget

__all__ = ["AnalyzeWidget", "ExperimentsWidget", "ModelWidget", "StimulusWidget"]
