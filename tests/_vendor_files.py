"""Minimal valid vendor files built by the tests (no vendor file is committed).

- :func:`write_dm`: a Gatan DigitalMicrograph file, version 3 or 4, written from the published tag
  file layout (header: version, size, byte order; then a tree of tag groups and data tags, each data
  tag ``%%%%`` + type info + value; DM4 widens lengths to 8 bytes and stores each tag's size).
  One image (2-D) or a stack (3-D, DM dimension order X, Y, Z), its calibrations and ImageTags.
- :func:`write_velox`: a Thermo Fisher Velox EMD (HDF5): root ``Version`` JSON, images under
  ``/Data/Image/<uuid>/Data`` (H, W, N) with one JSON metadata column per frame in ``Metadata``.
"""

from __future__ import annotations

import json
import struct
import uuid

import numpy as np

_DM_ELTYPE = {np.dtype("int16"): 2, np.dtype("int32"): 3, np.dtype("uint16"): 4, np.dtype("uint32"): 5,
              np.dtype("float32"): 6, np.dtype("float64"): 7, np.dtype("int8"): 9, np.dtype("uint8"): 10}
_DM_DATATYPE = {np.dtype("int16"): 1, np.dtype("float32"): 2, np.dtype("uint8"): 6, np.dtype("int32"): 7,
                np.dtype("int8"): 9, np.dtype("uint16"): 10, np.dtype("uint32"): 11, np.dtype("float64"): 12}


class _DMWriter:
    def __init__(self, version: int):
        self.v = version
        self.L = ">Q" if version == 4 else ">L"

    def _n(self, x: int) -> bytes:
        return struct.pack(self.L, x)

    def group(self, entries) -> bytes:
        items = entries.items() if isinstance(entries, dict) else (("", e) for e in entries)
        body = [self.tag(k, v) for k, v in items]
        return b"\x00\x00" + self._n(len(body)) + b"".join(body)

    def _data(self, value) -> bytes:
        if isinstance(value, bool):
            info, payload = [8], struct.pack("<B", value)
        elif isinstance(value, int):
            info, payload = [3], struct.pack("<l", value)
        elif isinstance(value, float):
            info, payload = [7], struct.pack("<d", value)
        elif isinstance(value, str):
            info, payload = [20, 4, len(value)], value.encode("utf-16-le")
        elif isinstance(value, np.ndarray):
            a = np.ascontiguousarray(value).astype(value.dtype.newbyteorder("<"))
            info, payload = [20, _DM_ELTYPE[value.dtype], a.size], a.tobytes()
        else:
            raise TypeError(type(value))
        return b"%%%%" + self._n(len(info)) + b"".join(self._n(i) for i in info) + payload

    def tag(self, name: str, value) -> bytes:
        nm = name.encode("latin-1")
        group = isinstance(value, (dict, list))
        body = self.group(value) if group else self._data(value)
        head = (b"\x14" if group else b"\x15") + struct.pack(">H", len(nm)) + nm
        if self.v == 4:
            head += struct.pack(">Q", len(body))
        return head + body

    def file(self, root: dict) -> bytes:
        body = self.group(root) + b"\x00" * 8
        size = len(body) + (16 if self.v == 4 else 12)
        return struct.pack(">L", self.v) + self._n(size) + struct.pack(">L", 1) + body


def write_dm(path, data: np.ndarray, version: int = 3, scale: float = 0.01, units: str = "nm",
             frame_scale: float | None = None, frame_units: str = "s", tags: dict | None = None,
             title: str = "HAADF") -> None:
    """A DM3/DM4 file holding ``data`` ((H, W) or (N, H, W)) with pixel calibration ``scale`` ``units``
    and, for a stack, a frame-axis calibration ``frame_scale`` ``frame_units``."""
    data = np.asarray(data)
    dims = [data.shape[-1], data.shape[-2]] + ([data.shape[0]] if data.ndim == 3 else [])
    cal = [{"Origin": 0.0, "Scale": float(scale), "Units": units}, {"Origin": 0.0, "Scale": float(scale), "Units": units}]
    if data.ndim == 3:
        cal.append({"Origin": 0.0, "Scale": float(frame_scale or 1.0), "Units": frame_units if frame_scale else ""})
    image = {
        "ImageData": {
            "Calibrations": {"Brightness": {"Origin": 0.0, "Scale": 1.0, "Units": "counts"},
                             "Dimension": cal, "DisplayCalibratedUnits": True},
            "Data": data.ravel(),
            "DataType": _DM_DATATYPE[data.dtype],
            "Dimensions": [int(d) for d in dims],
            "PixelDepth": int(data.dtype.itemsize),
        },
        "ImageTags": tags or {},
        "Name": title,
    }
    root = {"ApplicationBounds": [0, 0, 1000, 1000], "ImageList": [image], "DocumentObjectList": []}
    with open(path, "wb") as fh:
        fh.write(_DMWriter(version).file(root))


def write_velox(path, images: dict, pixel_size_m: float, frame_time_s: float, start_unix_s: float,
                voltage_V: float = 60000.0, dwell_s: float = 2e-6) -> None:
    """A Velox EMD file with one image group per detector: ``images`` = {detector name: (N, H, W) array}."""
    import h5py

    with h5py.File(path, "w") as f:
        f.create_dataset("Version", data=np.array([json.dumps({"format": "Velox", "version": "11"}).encode()]))
        g = f.create_group("Data/Image")
        for index, (det, stack) in enumerate(images.items()):
            stack = np.asarray(stack)
            n, h, w = stack.shape
            sub = g.create_group(uuid.uuid4().hex)
            sub.create_dataset("Data", data=np.moveaxis(stack, 0, -1), chunks=(h, w, 1))
            cols = []
            for i in range(n):
                md = {
                    "Acquisition": {"AcquisitionStartDatetime": {"DateTime": str(int(start_unix_s))}},
                    "BinaryResult": {"PixelSize": {"width": repr(pixel_size_m), "height": repr(pixel_size_m)},
                                     "PixelUnitX": "m", "PixelUnitY": "m", "Offset": {"x": "0", "y": "0"},
                                     "DetectorIndex": str(index)},
                    "Detectors": {f"Detector-{index}": {"DetectorName": det, "DetectorType": "ScanningDetector"}},
                    "Instrument": {"Manufacturer": "FEI Company", "InstrumentModel": "Test STEM", "InstrumentClass": "Titan"},
                    "Optics": {"AccelerationVoltage": str(voltage_V)},
                    "Scan": {"DwellTime": repr(dwell_s), "FrameTime": repr(frame_time_s), "ScanSize": {"width": str(w), "height": str(h)}},
                    "CustomProperties": {},
                    "Stage": {"AlphaTilt": "0", "BetaTilt": "0", "Position": {"x": "0", "y": "0", "z": "0"}},
                }
                cols.append(np.frombuffer(json.dumps(md).encode(), np.uint8))
            L = max(len(c) for c in cols) + 16
            meta = np.zeros((L, n), np.uint8)
            for i, c in enumerate(cols):
                meta[: len(c), i] = c
            sub.create_dataset("Metadata", data=meta)
