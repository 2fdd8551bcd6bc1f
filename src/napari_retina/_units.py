"""The physical units of every stimulus and output (the one home of these numbers).

``nr.FRAME_MS`` and ``nr.PIXEL_UM`` re-export them.
"""

FRAME_MS = 10.0
"""Duration of one stimulus frame in milliseconds."""
PIXEL_UM = 55.0
"""Size of one stimulus pixel in micrometres."""
RATE_UNIT = f"spikes per {FRAME_MS:g} ms bin"
"""The unit of a rate, a response and an attribution (the traces CSV's column names, the maps' legend)."""
RATE_UNITS = f"{RATE_UNIT}; frame t from frames t-history+1..t; NaN without full history"
"""What a stored rate (``predict``'s and ``attribute``'s files, batch results) is in: their ``units`` attribute."""
