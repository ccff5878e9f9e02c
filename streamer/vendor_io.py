"""Gatan DigitalMicrograph ``.dm3``/``.dm4`` and Thermo Fisher Velox ``.emd`` via rosettasciio.

rosettasciio is the optional extra ``[io]`` (``pip install 'stemwatch[io]'``) and is imported only
when such a file is opened; without it the import fails with one line naming the extra.

Both readers open the file lazily (rosettasciio's ``lazy=True``: a dask array over the file) and
read one frame at a time.

- **DM3/DM4**: single images and stacks (in-situ / time series: an (N, H, W) image whose third DM
  dimension is the frame axis). Pixel size from the x calibration (``nm``, ``Å``, ``µm``...);
  frame times from the frame axis when its unit is a time, starting at the ``DataBar`` acquisition
  date/time when present (local time of the acquisition PC); the instrument metadata
  (``ImageTags`` of the image: Microscope Info, Session Info, Acquisition, DataBar...) is kept,
  flattened, as ``dm.<path>``. ``key``: which image of the file (index, default the largest).
- **Velox EMD**: the image groups under ``/Data/Image``; ``key`` chooses a detector by name
  (e.g. ``HAADF``, ``DF4-A``), default ``HAADF`` if present, else the first. Pixel size from
  ``BinaryResult.PixelSize`` (m), frame times from ``Acquisition.AcquisitionStartDatetime`` +
  i * ``Scan.FrameTime``; Optics / Instrument / Scan / Acquisition / detector metadata kept as
  ``velox.<path>``.
"""

from __future__ import annotations

import importlib
from datetime import datetime
from pathlib import Path
from typing import Iterator

import numpy as np

from streamer.file_common import check_frame_bytes, flat_meta, frames_one_by_one, length_A, time_s
from streamer.frame import Frame

EXTRA_HINT = "pip install 'stemwatch[io]' (rosettasciio)"


def _rsciio(module: str, path: Path):
    from streamer.importers import FileImportError

    try:
        return importlib.import_module(f"rsciio.{module}")
    except ImportError as exc:
        raise FileImportError(f"{path.name}: reading {path.suffix} files needs the optional extra [io]: "
                              f"{EXTRA_HINT} ({exc})") from None


def _open(path: Path, reader, **kw) -> list:
    from streamer.importers import FileImportError

    try:
        return reader(str(path), lazy=True, **kw)
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:      # rosettasciio raises IO/struct/Key/Value/own errors on damaged files
        raise FileImportError(f"{path.name}: not a readable {path.suffix} file ({type(exc).__name__}: {exc})") from None


def _signal_axes(d: dict) -> tuple[list, list]:
    axes = sorted(d.get("axes") or [], key=lambda a: a.get("index_in_array", 0))
    return [a for a in axes if not a.get("navigate")], [a for a in axes if a.get("navigate")]


def _frames(path: Path, d: dict, pixel_size_A, frame_time_s, t0: float, meta: dict, what: str) -> Iterator[Frame]:
    from streamer.importers import FileImportError

    data = d["data"]
    shape = tuple(int(v) for v in data.shape)
    if len(shape) not in (2, 3):
        raise FileImportError(f"{path.name}: an item of shape {shape}; images (2-D) and image stacks (3-D) are read")
    sig, nav = _signal_axes(d)
    check_frame_bytes(path.name, shape[-2:], data.dtype)
    if pixel_size_A is None and sig:
        pixel_size_A = length_A(sig[-1].get("scale"), sig[-1].get("units"))
    dt = None
    if len(shape) == 3 and nav:
        dt = time_s(nav[0].get("scale"), nav[0].get("units"))
    dt = float(dt) if dt else float(frame_time_s)
    meta = dict(meta)
    meta["frame_time_s"] = dt
    n = shape[0] if len(shape) == 3 else 1
    read = (lambda i: np.asarray(data[i])) if len(shape) == 3 else (lambda i: np.asarray(data))
    yield from frames_one_by_one(path.name, n, read, pixel_size_A, lambda i: t0 + i * dt, meta, what=what)


# ----------------------------------------------------------------------------------- Gatan

def _dm_t0(tags: dict) -> float:
    bar = tags.get("DataBar") if isinstance(tags.get("DataBar"), dict) else {}
    date, clock = bar.get("Acquisition Date"), bar.get("Acquisition Time")
    if not (isinstance(date, str) and isinstance(clock, str)):
        return 0.0
    for fmt in ("%m/%d/%Y %I:%M:%S %p", "%d/%m/%Y %H:%M:%S", "%m/%d/%Y %H:%M:%S", "%Y-%m-%d %H:%M:%S"):
        try:
            return datetime.strptime(f"{date} {clock}", fmt).timestamp()     # local time of the PC
        except ValueError:
            continue
    return 0.0


def read_dm(path: Path, pixel_size_A=None, frame_time_s: float = 0.2, key=None) -> Iterator[Frame]:
    """Frames of a Gatan ``.dm3``/``.dm4`` file (module docstring)."""
    from streamer.importers import FileImportError

    dm = _rsciio("digitalmicrograph", path)
    items = _open(path, dm.file_reader)
    images = [d for d in items if getattr(d.get("data"), "ndim", 0) in (2, 3)]
    if not images:
        raise FileImportError(f"{path.name}: no image or image stack in this DM file")
    if key is not None:
        try:
            d = images[int(key)]
        except (ValueError, IndexError):
            raise FileImportError(f"{path.name}: no image {key!r}; the file has {len(images)} (0-{len(images) - 1})") from None
    else:
        d = max(images, key=lambda x: int(np.prod(x["data"].shape)))
    om = d.get("original_metadata") or {}
    imlist = om.get("ImageList") or {}
    im = next(iter(imlist.values()), {}) if isinstance(imlist, dict) else {}
    tags = im.get("ImageTags", {}) if isinstance(im, dict) else {}
    meta = {"source": "gatan-dm", "title": str((d.get("metadata") or {}).get("General", {}).get("title", ""))}
    meta.update(flat_meta(tags, "dm."))
    mi = tags.get("Microscope Info") if isinstance(tags.get("Microscope Info"), dict) else {}
    if isinstance(mi.get("Voltage"), (int, float)):
        meta["high_tension_V"] = float(mi["Voltage"])
    yield from _frames(path, d, pixel_size_A, frame_time_s, _dm_t0(tags), meta, "DM file")


# ----------------------------------------------------------------------------------- Thermo Fisher

def read_velox(path: Path, pixel_size_A=None, frame_time_s: float = 0.2, key=None) -> Iterator[Frame]:
    """Frames of a Thermo Fisher Velox ``.emd`` file (module docstring)."""
    from streamer.importers import FileImportError

    emd = _rsciio("emd", path)
    items = _open(path, emd.file_reader, select_type="images")
    images = [d for d in items if getattr(d.get("data"), "ndim", 0) in (2, 3)]
    if not images:
        raise FileImportError(f"{path.name}: no image in this Velox file")
    names = [str((d.get("metadata") or {}).get("General", {}).get("title", "")) for d in images]
    want = key if key is not None else ("HAADF" if "HAADF" in names else None)
    if want is not None and want not in names:
        raise FileImportError(f"{path.name}: no detector {want!r}; images: {names}")
    chosen = names.index(want) if want is not None else 0
    d = images[chosen]
    om = d.get("original_metadata") or {}
    meta = {"source": "velox-emd", "detector": names[chosen]}
    for group in ("Optics", "Instrument", "Scan", "Acquisition", "Stage", "DetectorMetadata", "BinaryResult"):
        if isinstance(om.get(group), dict):
            meta.update(flat_meta(om[group], f"velox.{group}.", max_items=200))
    optics = om.get("Optics") if isinstance(om.get("Optics"), dict) else {}
    try:
        meta["high_tension_V"] = float(optics["AccelerationVoltage"])
    except (KeyError, TypeError, ValueError):
        pass
    scan = om.get("Scan") if isinstance(om.get("Scan"), dict) else {}
    try:
        meta["dwell_s"] = float(scan["DwellTime"])
    except (KeyError, TypeError, ValueError):
        pass
    if pixel_size_A is None:
        br = om.get("BinaryResult") if isinstance(om.get("BinaryResult"), dict) else {}
        ps = br.get("PixelSize") if isinstance(br.get("PixelSize"), dict) else {}
        if "width" in ps:
            pixel_size_A = length_A(ps["width"], br.get("PixelUnitX", "m") or "m")
    t0 = 0.0
    try:
        t0 = float(om["Acquisition"]["AcquisitionStartDatetime"]["DateTime"])
    except (KeyError, TypeError, ValueError):
        pass
    if len(d["data"].shape) == 3:
        try:
            frame_time_s = float(scan["FrameTime"])
        except (KeyError, TypeError, ValueError):
            pass
        d = dict(d, axes=[a for a in d.get("axes", []) if not a.get("navigate")])   # FrameTime (s) is exact
    yield from _frames(path, d, pixel_size_A, frame_time_s, t0, meta, "Velox EMD file")


def is_velox(path: Path) -> bool:
    """True for a Velox EMD file (root ``Version`` dataset with format Velox/DevelopersKit); h5py only."""
    import json

    import h5py

    try:
        with h5py.File(path, "r") as f:
            v = f.get("Version")
            if v is None:
                return False
            raw = v[0]
            raw = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
            return json.loads(raw).get("format") in ("Velox", "DevelopersKit")
    except (OSError, ValueError, KeyError, IndexError, TypeError, AttributeError):
        return False
