"""``python -m napari_retina.cli``: the ``napari-retina`` command."""

import sys

from . import command

if __name__ == "__main__":  # pragma: no cover
    sys.exit(command())
