"""The physical units of every stimulus and output (the one home of these numbers).

``nr.FRAME_MS`` and ``nr.PIXEL_UM`` re-export them.
"""

FRAME_MS = 10.0
"""Duration of one stimulus frame in milliseconds."""
PIXEL_UM = 55.0
"""Size of one stimulus pixel in micrometres."""
