"""Type aliases of the public API, in one place (annotations only: nothing here runs code).

``PathLike`` is a file or folder path; ``ReaderPaths`` what napari hands a
reader (one path, or a list of them); ``ArrayLike`` (NumPy's) an array or
anything ``np.asarray`` turns into one; ``AnyModel`` a model the analyses accept: a
:class:`~napari_retina.model.RetinaCNN` (loaded, trained or imported from a lab
format) or a :class:`~napari_retina._wrap.WrappedModel` (``nr.wrap`` of your
own module). ``PixelUm`` is a stack's pixel size (µm: one number, a (y, x)
pair, their text, or None for the model's 55 µm) and ``FrameMs`` its frame
interval (ms: a number, its text such as "1000/60", or None for the model's
10 ms). The model classes are forward references to their modules, so
importing this module imports neither torch nor the model, and
``typing.get_type_hints`` resolves them from any module (as the dock widgets
do, to build a parameter's widget from its hint).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, ForwardRef, Optional, Sequence, Union

from numpy.typing import ArrayLike

PathLike = Union[str, os.PathLike]
ReaderPaths = Union[str, list]
PixelUm = Optional[Union[float, str, Sequence[float]]]
FrameMs = Optional[Union[float, str]]

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    from ._wrap import WrappedModel
    from .model import RetinaCNN

    AnyModel = Union[RetinaCNN, WrappedModel]
else:
    _RETINA_CNN = ForwardRef("RetinaCNN", module=f"{__package__}.model")
    _WRAPPED_MODEL = ForwardRef("WrappedModel", module=f"{__package__}._wrap")
    AnyModel = Union[_RETINA_CNN, _WRAPPED_MODEL]

__all__ = ["AnyModel", "ArrayLike", "FrameMs", "PathLike", "PixelUm", "ReaderPaths"]
