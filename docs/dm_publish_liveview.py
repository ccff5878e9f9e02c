# $BACKGROUND$
"""Publish DigitalMicrograph live-view frames to stemwatch (DigitalMicrograph 3.4+ Python).

NOT TESTED HERE: written from Gatan's Python documentation and example scripts for DigitalMicrograph (the
``DigitalMicrograph`` module: ``GetFrontImage``, ``Py_Image.GetNumArray``,
``GetDimensionScale`` / ``GetDimensionUnitString``, ``GetTagGroup`` / ``GetTagAsFloat``) without a
DigitalMicrograph installation. Check it on your instrument before relying on it (see
docs/instruments.md) and report what you had to change.

Setup (once, on the acquisition PC):
1. Install pyzmq and msgpack into DigitalMicrograph's Python environment (numpy is there), e.g. from
   DM's Python command prompt: ``pip install pyzmq msgpack``.
2. Copy stemwatch's ``streamer`` folder (``__init__.py``, ``protocol.py``, ``publisher.py``,
   ``frame.py``, ``security.py``) to a folder and set ``STREAMER_DIR`` below to it.
3. Start a STEM live view (DigiScan), bring its image to the front, run this script (File > Run).
   The first line ``# $BACKGROUND$`` makes DM run it on a background thread: DM stays responsive.
   Stop it with ``STOP_AFTER_S`` or by closing the live view (the script ends when the image goes).

What it does: every ``POLL_S`` it looks at the front image. DigiScan fills a live image row by row,
top to bottom, so a frame is complete when the *last row* has changed since the previous look;
then the whole image is copied and sent. Frames where the scan passed the last row twice between
two looks are missed (polling is faster than a frame for any useful frame time). The pixel size
comes from the image's x calibration (nm or A; a frame without a length calibration is not sent),
the high tension from the ``Microscope Info:Voltage`` tag. A new series starts when the shape or
pixel size changes. Frames the analyzer does not take within ``SEND_TIMEOUT_S`` are dropped and
counted (printed at the end): the script never holds up DigitalMicrograph.
"""

import sys
import time

import numpy as np

import DigitalMicrograph as DM  # only inside DigitalMicrograph

STREAMER_DIR = r"C:\stemwatch"          # the folder that holds the copied ``streamer`` package
ENDPOINT = "tcp://*:5555"                # stemwatch connects: stemwatch serve --connect tcp://THIS-PC:5555
POLL_S = 0.02
SEND_TIMEOUT_S = 0.5
STOP_AFTER_S = 8 * 3600

sys.path.insert(0, STREAMER_DIR)
from streamer.protocol import ALLOWED_DTYPES  # noqa: E402
from streamer.publisher import Publisher  # noqa: E402

_TO_A = {"nm": 10.0, "\u00c5": 1.0, "a": 1.0, "angstrom": 1.0, "pm": 0.01, "\u00b5m": 1e4, "um": 1e4}


def calibration_A(img):
    """Pixel size in A/px from the x calibration, or None when it is not a length."""
    unit = img.GetDimensionUnitString(0)
    if isinstance(unit, bytes):     # some GMS versions return the unit as bytes (b'\xb5m' for micrometre)
        unit = unit.decode("latin-1")
    unit = str(unit).strip()
    f = _TO_A.get(unit) or _TO_A.get(unit.lower())
    return abs(float(img.GetDimensionScale(0))) * f if f else None


def tag_float(img, path):
    ok, value = img.GetTagGroup().GetTagAsFloat(path)
    return float(value) if ok else None


def main():
    img = DM.GetFrontImage()
    name = img.GetName()
    pub = Publisher(ENDPOINT, send_timeout_s=SEND_TIMEOUT_S)
    key, n_series, last_row, sent = None, 0, None, 0
    t_end = time.time() + STOP_AFTER_S
    print(f"stemwatch: publishing '{name}' on {pub.endpoint}")
    try:
        while time.time() < t_end:
            try:
                arr = img.GetNumArray()                   # a view of DM's memory (H, W)
            except Exception:                             # the live view was closed
                break
            row = np.array(arr[-1], copy=True)
            if last_row is not None and not np.array_equal(row, last_row):
                frame = np.array(arr, copy=True)          # copy now: DM keeps writing into arr
                if frame.dtype.str not in ALLOWED_DTYPES:   # e.g. int16, uint32: send as float32
                    frame = frame.astype(np.float32)
                t = time.time()
                px = calibration_A(img)
                if px is not None and frame.ndim == 2:
                    k = (frame.shape, frame.dtype.str, px)
                    if k != key:
                        if key is not None:
                            pub.end_series()
                        n_series += 1
                        meta = {"source": "digitalmicrograph", "image": name,
                                "high_tension_V": tag_float(img, "Microscope Info:Voltage")}
                        pub.start_series(f"dm-{time.strftime('%Y%m%dT%H%M%S')}-{n_series}", frame.shape,
                                         frame.dtype, px, meta=meta)
                        key = k
                    sent += pub.send_frame(frame, t_acquired=t)
            last_row = row
            time.sleep(POLL_S)
    finally:
        if key is not None:
            pub.end_series()
        print(f"stemwatch: sent {sent} frames, dropped {pub.dropped}")
        pub.close()


main()
