"""Nion Swift's own files: ``.h5`` (HDF5) and ``.ndata`` (zip), read frame by frame without Nion.

Both hold one data item: the array and its *properties* (JSON): ``dimensional_calibrations``
(``spatial_calibrations`` in old files; ``{offset, scale, units}`` per axis), ``is_sequence`` /
``data_descriptor``, ``created`` (UTC), ``metadata`` (``hardware_source``: channel, dwell,
``frame_index``...; ``instrument``: ``high_tension``...), ``title``.

- ``.h5``: a root dataset ``data`` with the properties JSON in its attribute ``properties``.
- ``.ndata``: an uncompressed zip of ``data.npy`` and ``metadata.json``; ``data.npy`` is
  memory-mapped inside the zip when stored uncompressed (only one frame in memory).

A 3-D item is a sequence of frames only when the properties say so (``is_sequence``); a 3-D item
that is not (a spectrum image, a collection) is refused. The pixel size is the last axis'
calibration (nm or A); frame times are ``created`` + the sequence axis' calibration when it is a
time, else ``created + i * frame_time_s``.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Iterator

import numpy as np

from streamer.file_common import (check_frame_bytes, flat_meta, frames_one_by_one, length_A, open_zip_member, time_s,
                                  utc_seconds)
from streamer.frame import Frame

MAX_PROPERTIES_BYTES = 64 << 20


def is_nion_h5(path: str | Path) -> bool:
    """True for a Nion Swift HDF5 file (root dataset ``data`` with a ``properties`` attribute)."""
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            d = h5.get("data")
            return isinstance(d, h5py.Dataset) and "properties" in d.attrs
    except (OSError, ValueError):
        return False


def _properties(raw, name: str) -> dict:
    from streamer.importers import FileImportError

    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    if not isinstance(raw, str) or len(raw) > MAX_PROPERTIES_BYTES:
        raise FileImportError(f"{name}: the Nion properties are missing or too large")
    try:
        props = json.loads(raw)
    except ValueError as exc:
        raise FileImportError(f"{name}: the Nion properties are not valid JSON ({exc})") from None
    if not isinstance(props, dict):
        raise FileImportError(f"{name}: the Nion properties are not a JSON object")
    return props


def _layout(props: dict, shape: tuple, name: str, pixel_size_A, frame_time_s):
    """(n_frames, pixel_size_A, times(i), meta) from Nion properties for an array of ``shape``."""
    from streamer.importers import FileImportError

    desc = props.get("data_descriptor") or {}
    is_sequence = bool(props.get("is_sequence", desc.get("is_sequence", len(shape) == 3)))
    collection = int(props.get("collection_dimension_count", desc.get("collection_dimension_count", 0)) or 0)
    if len(shape) == 3 and (not is_sequence or collection):
        raise FileImportError(f"{name}: a 3-D Nion item that is not a sequence of images (a spectrum image or "
                              f"collection, shape {shape})")
    if len(shape) not in (2, 3):
        raise FileImportError(f"{name}: a {len(shape)}-D Nion item; images (2-D) and image sequences (3-D) are read")
    cals = props.get("dimensional_calibrations") or props.get("spatial_calibrations") or []
    cals = [c if isinstance(c, dict) else {} for c in cals]
    if pixel_size_A is None and cals:
        pixel_size_A = length_A(cals[-1].get("scale"), cals[-1].get("units"))
    md = props.get("metadata") if isinstance(props.get("metadata"), dict) else {}
    hs = md.get("hardware_source", {}) if isinstance(md.get("hardware_source"), dict) else {}
    t0 = utc_seconds(props.get("created")) or 0.0
    dt = None
    if len(shape) == 3 and len(cals) == 3:
        dt = time_s(cals[0].get("scale"), cals[0].get("units"))
    if not dt:
        dt = float(frame_time_s)
    meta = {k: props[k] for k in ("title", "created", "timezone", "timezone_offset") if isinstance(props.get(k), str)}
    meta.update(flat_meta(md, "nion_"))
    meta["source"] = "nionswift-file"
    meta["frame_time_s"] = float(dt)
    for k, v in (("channel", hs.get("channel_name")), ("dwell_s", _us(hs.get("pixel_time_us"))),
                 ("high_tension_V", (md.get("instrument") or {}).get("high_tension") if isinstance(md.get("instrument"), dict) else None)):
        if v is not None:
            meta[k] = v
    n = shape[0] if len(shape) == 3 else 1
    return n, pixel_size_A, (lambda i: t0 + i * dt), meta


def _us(v):
    try:
        return float(v) * 1e-6 if v is not None else None
    except (TypeError, ValueError):
        return None


def read_nion_h5(path: Path, pixel_size_A=None, frame_time_s: float = 0.2, key=None) -> Iterator[Frame]:
    """Frames of a Nion Swift ``.h5`` file (module docstring)."""
    import h5py

    from streamer.importers import FileImportError

    try:
        h5 = h5py.File(path, "r")
    except OSError as exc:
        raise FileImportError(f"{path.name}: not a readable HDF5 file ({exc})") from None
    with h5:
        d = h5.get("data")
        if not isinstance(d, h5py.Dataset) or "properties" not in d.attrs:
            raise FileImportError(f"{path.name}: not a Nion Swift HDF5 file (no root 'data' with 'properties')")
        props = _properties(d.attrs["properties"], path.name)
        shape = tuple(int(v) for v in d.shape)
        n, px, times, meta = _layout(props, shape, path.name, pixel_size_A, frame_time_s)
        check_frame_bytes(path.name, shape[-2:], d.dtype)
        read = (lambda i: d[i]) if len(shape) == 3 else (lambda i: d[()])
        yield from frames_one_by_one(path.name, n, read, px, times, meta, what="Nion HDF5 file")


def _stored_npy(path: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo):
    """A read-only view of ``data.npy`` inside the zip: memory-mapped when stored uncompressed, else
    read (after the size check). Returns the array (or memmap)."""
    from numpy.lib import format as npf

    from streamer.importers import FileImportError

    with open_zip_member(zf, info, path.name) as fh:
        try:
            version = npf.read_magic(fh)
            reader = npf.read_array_header_1_0 if version == (1, 0) else npf.read_array_header_2_0
            shape, fortran, dtype = reader(fh, max_header_size=1 << 16)
        except Exception as exc:
            raise FileImportError(f"{path.name}: data.npy is not a valid .npy array ({exc})") from None
        head = fh.tell()
    if dtype.hasobject:
        raise FileImportError(f"{path.name}: data.npy holds Python objects: refused (no pickle)")
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize if shape else dtype.itemsize
    if nbytes > info.file_size - head:
        raise FileImportError(f"{path.name}: data.npy declares {nbytes:,} bytes but holds {info.file_size - head:,}: "
                              f"truncated or damaged")
    if len(shape) >= 2:
        check_frame_bytes(path.name, shape[-2:], dtype)
    if info.compress_type == zipfile.ZIP_STORED and not fortran:
        with open(path, "rb") as raw:
            raw.seek(info.header_offset)
            local = raw.read(30)
            if len(local) < 30 or local[:4] != b"PK\x03\x04":
                raise FileImportError(f"{path.name}: damaged zip entry for data.npy")
            n_name = int.from_bytes(local[26:28], "little")
            n_extra = int.from_bytes(local[28:30], "little")
        offset = info.header_offset + 30 + n_name + n_extra + head
        if offset + nbytes > path.stat().st_size:
            raise FileImportError(f"{path.name}: data.npy runs past the end of the file: truncated")
        return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=tuple(shape))
    check_frame_bytes(path.name, shape, dtype)                   # compressed: the whole array is read
    with open_zip_member(zf, info, path.name) as fh:
        return np.load(fh, allow_pickle=False)


def read_ndata(path: Path, pixel_size_A=None, frame_time_s: float = 0.2, key=None) -> Iterator[Frame]:
    """Frames of a Nion Swift ``.ndata`` file (module docstring)."""
    from streamer.importers import FileImportError

    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise FileImportError(f"{path.name}: not a Nion .ndata file (not a readable zip archive: {exc})") from None
    with zf:
        names = zf.namelist()
        if "data.npy" not in names:
            raise FileImportError(f"{path.name}: no data.npy inside; entries {names[:10]}")
        props = {}
        if "metadata.json" in names:
            mi = zf.getinfo("metadata.json")
            if mi.file_size > MAX_PROPERTIES_BYTES:
                raise FileImportError(f"{path.name}: metadata.json declares more than {MAX_PROPERTIES_BYTES} bytes")
            with open_zip_member(zf, mi, path.name) as fh:
                props = _properties(fh.read(), path.name)
        arr = _stored_npy(path, zf, zf.getinfo("data.npy"))
    shape = tuple(int(v) for v in arr.shape)
    n, px, times, meta = _layout(props, shape, path.name, pixel_size_A, frame_time_s)
    read = (lambda i: arr[i]) if len(shape) == 3 else (lambda i: arr)
    yield from frames_one_by_one(path.name, n, read, px, times, meta, what="Nion .ndata file")
