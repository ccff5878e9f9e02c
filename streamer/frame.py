"""The frame record handed from the streamer to analysis (and everything downstream)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Frame:
    """One scanned image with its identity and timing.

    data : (H, W) array, native dtype as sent (uint8/uint16/int32/float32/float64).
    series : acquisition series id (str); seq : frame number within the series (int, from 0).
    t_acquired : Unix seconds when the acquisition PC finished the frame.
    t_received : Unix seconds when the receiver took the last part off the socket.
    pixel_size_A : angstrom per pixel.
    meta : free-form instrument metadata of the series (from the ``start`` message).
    run : which run of the series id this frame belongs to: the receiver (and a recording's
        reader) counts every ``start``, so an acquisition script run twice with the same series
        id gives two runs, and analysis resets tracking between them as for a new series.
    """

    data: np.ndarray
    series: str
    seq: int
    t_acquired: float
    pixel_size_A: float
    t_received: float = 0.0
    meta: dict = field(default_factory=dict)
    run: int = 0

    @property
    def shape(self) -> tuple[int, int]:
        return self.data.shape  # type: ignore[return-value]
