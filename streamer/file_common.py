"""What the file readers of :mod:`streamer.nion_files`, :mod:`streamer.vendor_io` and
:mod:`streamer.tiff_frames` share: units, metadata flattening, the one-frame memory check, and the
frame-by-frame loop that reports which frames were read and stops cleanly on a damaged frame.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from streamer.frame import Frame

log = logging.getLogger("streamer.importers")

LENGTH_TO_A = {"a": 1.0, "å": 1.0, "\u00c5": 1.0, "\u212b": 1.0, "angstrom": 1.0, "angstroms": 1.0,
               "nm": 10.0, "nanometer": 10.0, "nanometers": 10.0, "um": 1e4, "µm": 1e4, "\u03bcm": 1e4,
               "micron": 1e4, "pm": 0.01, "m": 1e10, "mm": 1e7}
TIME_TO_S = {"s": 1.0, "sec": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "\u03bcs": 1e-6, "ns": 1e-9, "min": 60.0}


def length_A(value, unit) -> float | None:
    """``value`` in ``unit`` as angstrom (None when the unit is not a length)."""
    if unit is None:
        return None
    f = LENGTH_TO_A.get(str(unit).strip().lower()) or LENGTH_TO_A.get(str(unit).strip())
    try:
        return None if f is None else abs(float(value)) * f
    except (TypeError, ValueError):
        return None


def time_s(value, unit) -> float | None:
    """``value`` in ``unit`` as seconds (None when the unit is not a time)."""
    f = TIME_TO_S.get(str(unit or "").strip().lower())
    try:
        return None if f is None else float(value) * f
    except (TypeError, ValueError):
        return None


def flat_meta(d, prefix: str = "", out: dict | None = None, max_items: int = 400) -> dict:
    """Nested metadata flattened to ``{"a.b.c": scalar}`` (str/int/float/bool only; long strings cut)."""
    out = {} if out is None else out
    if not isinstance(d, dict):
        return out
    for k, v in d.items():
        if len(out) >= max_items:
            break
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            flat_meta(v, key + ".", out, max_items)
        elif isinstance(v, (bool, int, float)) and not isinstance(v, np.generic):
            out[key] = v
        elif isinstance(v, np.generic) and v.dtype.kind in "biuf":
            out[key] = v.item()
        elif isinstance(v, str) and len(v) <= 256:
            out[key] = v
    return out


def utc_seconds(iso: str | None, assume_utc: bool = True) -> float | None:
    """Unix seconds of an ISO date-time (naive ones taken as UTC, or local time if not ``assume_utc``)."""
    if not iso:
        return None
    try:
        dt = datetime.fromisoformat(str(iso).strip())
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc) if assume_utc else dt.astimezone()
    return dt.timestamp()


def open_zip_member(zf, info, name: str):
    """``zf.open(info)`` (a :class:`zipfile.ZipFile` member) for a reader of the file ``name``: a member flagged
    encrypted (zipfile raises RuntimeError: a password is required) or stored with a method zipfile cannot
    read (NotImplementedError) is a FileImportError saying so."""
    from streamer.importers import FileImportError

    try:
        return zf.open(info)
    except (RuntimeError, NotImplementedError) as exc:
        member = getattr(info, "filename", info)
        raise FileImportError(f"{name}: {member} cannot be read ({exc})") from None


def check_frame_bytes(name: str, shape, dtype) -> None:
    """Refuse a frame that would not fit the import memory limit (before anything is read)."""
    from streamer.importers import FileImportError, import_memory_limit

    nbytes = int(np.dtype(dtype).itemsize)
    for v in shape:
        if int(v) < 1:
            raise FileImportError(f"{name}: the file declares an empty frame shape {tuple(shape)}: damaged")
        nbytes *= int(v)
    limit = import_memory_limit()
    if nbytes > limit:
        raise FileImportError(f"{name}: one frame declares shape {tuple(shape)} {np.dtype(dtype)} = {nbytes / 2**30:.1f} GiB, "
                              f"more than the import memory limit ({limit / 2**30:.1f} GiB)")


def frames_one_by_one(name: str, n_frames: int, read: Callable[[int], np.ndarray], pixel_size_A: float | None,
                      times: Callable[[int], float], meta: dict, series: str | None = None,
                      what: str = "file") -> Iterator[Frame]:
    """Yield ``n_frames`` frames, each read by ``read(i)`` only when it is needed. A frame that cannot
    be read ends the import with a FileImportError saying which frames were read; at the end the
    frames read are logged (``<name>: read frames 0-<n-1> of <n>``)."""
    from streamer.importers import FileImportError, to_wire_dtype

    if pixel_size_A is None or not pixel_size_A > 0:
        raise FileImportError(f"{name}: the {what} has no pixel size; pass pixel_size_A (--pixel-size, A/px)")
    meta = dict(meta)
    meta.setdefault("source_file", name)
    meta["frames_in_file"] = int(n_frames)
    series = series or Path(name).stem
    for i in range(n_frames):
        try:
            data = np.ascontiguousarray(to_wire_dtype(np.asarray(read(i))))
            if data.ndim != 2 or data.size == 0:
                raise ValueError(f"frame {i} has shape {data.shape}, not (H, W) with H, W >= 1")
        except FileImportError:
            raise
        except Exception as exc:                 # damaged or truncated file: stop cleanly, say where
            done = f"frames 0-{i - 1} of {n_frames} were read" if i else f"none of its {n_frames} frames was read"
            raise FileImportError(f"{name}: damaged {what}: {done}; frame {i} cannot be read "
                                  f"({type(exc).__name__}: {exc})") from None
        t = float(times(i))
        yield Frame(data=data, series=series, seq=i, t_acquired=t, pixel_size_A=float(pixel_size_A),
                    t_received=t, meta=meta)
    log.info("%s: read frames 0-%d of %d", name, n_frames - 1, n_frames)


def special_reader(path: Path):
    """The reader of the formats added for issue 16 for this file, or None (the classic readers of
    :mod:`streamer.importers` then apply): Gatan DM3/DM4 and Velox EMD (:mod:`streamer.vendor_io`),
    Nion ``.h5``/``.ndata`` (:mod:`streamer.nion_files`), TIFF frame by frame (:mod:`streamer.tiff_frames`)."""
    suffix = path.suffix.lower()
    if suffix in (".dm3", ".dm4"):
        from streamer.vendor_io import read_dm
        return read_dm
    if suffix in (".tif", ".tiff"):
        from streamer.tiff_frames import read_tiff
        return read_tiff
    if suffix == ".ndata":
        from streamer.nion_files import read_ndata
        return read_ndata
    if suffix in (".h5", ".hdf5"):
        from streamer.nion_files import is_nion_h5, read_nion_h5
        return read_nion_h5 if is_nion_h5(path) else None
    if suffix == ".emd":
        from streamer.vendor_io import is_velox, read_velox
        return read_velox if is_velox(path) else None
    return None
