"""Import what microscopists have on disk into the frame iterator the replayer uses; export EMD.

``open_frames(path)`` yields :class:`~streamer.frame.Frame` objects from

- recordings (``stemwatch record`` / :class:`~streamer.recording.RecordingWriter`),
- ``.npy`` (one (H, W) frame or an (N, H, W) stack, memory-mapped) and ``.npz`` (``--key``, or the
  array named ``frames``/``data``/``images``, or the only 2-D/3-D array, or every 2-D array),
- TIFF stacks (tifffile; ImageJ ``unit`` + resolution and ``finterval`` are used when present),
- HDF5 in the Berkeley EMD v0.2 convention (the first ``emd_group_type == 1`` group; ``dim``
  vectors give the pixel size and frame times),
- Nion Swift ``.ndata`` (an uncompressed zip of ``data.npy`` + ``metadata.json``; read with zipfile
  and numpy, ``allow_pickle=False``).

Gatan DM3/DM4, Thermo Fisher Velox EMD (rosettasciio, extra ``[io]``), Nion Swift ``.h5``/``.ndata``
and TIFF stacks frame by frame are read by :func:`streamer.file_common.special_reader`'s modules.

Pixel sizes are angstrom per pixel; formats without a calibration need ``pixel_size_A``. Frame
times are Unix seconds when the file has them, else ``i * frame_time_s``. Pixel types other than
the wire types are converted losslessly where possible (int8/int16 -> int32, float16 -> float32,
uint32 -> float64; 64-bit integers -> float64 with a warning). No pickle anywhere.

Damaged or hostile files: every size a file declares (npy/npz headers, TIFF tags, HDF5 dataset
shapes, zip members) is checked *before* anything is allocated, against what the file holds (when
uncompressed) and against :func:`import_memory_limit` (half the available memory, at most 16 GiB,
within RLIMIT_AS): a file claiming a 30 GiB stack is refused with :class:`FileImportError`, not
allocated. ``.npy`` stacks are memory-mapped and EMD stacks read frame by frame, so only one frame
must fit.
"""

from __future__ import annotations

import json
import logging
import math
import zipfile
from pathlib import Path
from struct import error as struct_error
from typing import Iterable, Iterator

import numpy as np

from streamer.frame import Frame
from streamer.protocol import ALLOWED_DTYPES

log = logging.getLogger(__name__)

SUFFIXES = {".npy", ".npz", ".tif", ".tiff", ".emd", ".h5", ".hdf5", ".ndata", ".swrec", ".dm3", ".dm4"}
_LENGTH_TO_A = {"a": 1.0, "å": 1.0, "angstrom": 1.0, "angstroms": 1.0, "\u00c5": 1.0, "nm": 10.0,
                "nanometer": 10.0, "um": 1e4, "µm": 1e4, "\u03bcm": 1e4, "micron": 1e4, "m": 1e10, "pm": 0.01}
_TIME_TO_S = {"s": 1.0, "sec": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


class FileImportError(ValueError):
    """A file that cannot be imported (unknown format, no frames, missing pixel size...)."""

    user_error = True          # the command line shows it as one line, exit 2 (stemwatch.errors)


MAX_IMPORT_BYTES = 16 << 30          # the most one array read into memory may take (bytes)
MAX_METADATA_BYTES = 64 << 20        # JSON metadata inside a file (bytes)


def import_memory_limit() -> int:
    """Bytes one import may allocate for an array: the smallest of :data:`MAX_IMPORT_BYTES`, half
    of the available physical memory (``MemAvailable``) and half of what RLIMIT_AS leaves."""
    import resource

    limit = MAX_IMPORT_BYTES
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    limit = min(limit, int(line.split()[1]) * 1024 // 2)
                    break
    except (OSError, ValueError):
        pass
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft != resource.RLIM_INFINITY:
            used = 0
            with open("/proc/self/status") as fh:
                for line in fh:
                    if line.startswith("VmSize:"):
                        used = int(line.split()[1]) * 1024
            limit = min(limit, max(0, soft - used) // 2)
    except (OSError, ValueError, AttributeError):
        pass
    return int(limit)


def _declared(name: str, what: str, shape, dtype, holds: int | None = None) -> int:
    """Check a declared array size before allocating it; returns its bytes or raises FileImportError.
    ``holds``: the bytes the file actually has for it (uncompressed storage), if known."""
    try:
        shape = tuple(int(v) for v in shape)
        itemsize = np.dtype(dtype).itemsize
    except (TypeError, ValueError) as exc:
        raise FileImportError(f"{name}: {what} has an unreadable shape/type ({exc})") from None
    if any(v < 0 for v in shape):
        raise FileImportError(f"{name}: {what} declares a negative size {shape}")
    nbytes = itemsize
    for v in shape:
        nbytes *= v                                  # Python ints: no overflow
    if holds is not None and nbytes > holds:
        raise FileImportError(f"{name}: {what} declares shape {shape} ({nbytes:,} bytes) but the file holds only "
                              f"{holds:,} bytes for it: truncated or damaged")
    limit = import_memory_limit()
    if nbytes > limit:
        raise FileImportError(f"{name}: {what} declares shape {shape} {np.dtype(dtype)} = {nbytes / 2**30:.1f} GiB, "
                              f"more than the import memory limit ({limit / 2**30:.1f} GiB); split the file or use "
                              f".npy (memory-mapped) / EMD (read frame by frame)")
    return nbytes


def _npy_header(fh, name: str, what: str):
    """(shape, dtype, fortran_order, header bytes) of an .npy stream positioned at its start."""
    from numpy.lib import format as npf

    start = fh.tell() if hasattr(fh, "tell") else 0
    try:
        version = npf.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = npf.read_array_header_1_0(fh, max_header_size=1 << 16)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = npf.read_array_header_2_0(fh, max_header_size=1 << 16)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except MemoryError:
        raise
    except Exception as exc:       # numpy's header parser raises Value/Syntax/Token/EOF errors on damaged bytes
        raise FileImportError(f"{name}: {what} is not a valid .npy array ({type(exc).__name__}: {exc})") from None
    if dtype.hasobject:
        raise FileImportError(f"{name}: {what} holds Python objects: not a plain numeric array, refused (no pickle)")
    return shape, dtype, fortran, (fh.tell() if hasattr(fh, "tell") else 0) - start


def to_wire_dtype(a: np.ndarray) -> np.ndarray:
    """``a`` itself if its dtype is a wire type, else a lossless (where possible) conversion."""
    if a.dtype.str in ALLOWED_DTYPES:
        return a
    k, size = a.dtype.kind, a.dtype.itemsize
    if k == "b":
        return a.astype(np.uint8)
    if k in "iu" and size <= 2:
        return a.astype(np.uint16 if k == "u" else np.int32)
    if k in "iu" and size == 4:
        return a.astype(np.int32 if k == "i" else np.float64)
    if k == "f" and size <= 4:
        return a.astype(np.float32)
    if k == "f" and size == 8:
        return a.astype(np.float64)              # big/little-endian mismatch: native order
    if k in "iu" and size == 8:
        log.warning("64-bit integer frames converted to float64 (exact up to 2**53)")
        return a.astype(np.float64)
    raise FileImportError(f"pixel type {a.dtype} cannot be streamed (complex or non-numeric)")


def _length_A(value: float, unit: str | None) -> float | None:
    if unit is None:
        return None
    f = _LENGTH_TO_A.get(str(unit).strip().lower())
    return None if f is None else float(value) * f


def _frames_from_stack(stack: np.ndarray, name: str, pixel_size_A: float | None, times: np.ndarray | None,
                       frame_time_s: float, meta: dict | None = None, series: str | None = None,
                       seqs: np.ndarray | None = None) -> Iterator[Frame]:
    if stack.ndim == 2:
        stack = stack[None]
    if stack.ndim != 3 or min(stack.shape) < 1:
        raise FileImportError(f"{name}: expected an (H, W) frame or an (N, H, W) stack, got shape {stack.shape}")
    if pixel_size_A is None or not pixel_size_A > 0:
        raise FileImportError(f"{name}: the file has no pixel size; pass pixel_size_A (--pixel-size, A/px)")
    meta = dict(meta or {})
    meta.setdefault("frame_time_s", float(frame_time_s))
    meta.setdefault("source_file", name)
    for i in range(stack.shape[0]):
        t = float(times[i]) if times is not None else i * float(frame_time_s)
        data = np.ascontiguousarray(to_wire_dtype(np.asarray(stack[i])))
        yield Frame(data=data, series=series or Path(name).stem, seq=int(seqs[i]) if seqs is not None else i,
                    t_acquired=t, pixel_size_A=float(pixel_size_A),
                    t_received=t, meta=meta)


# ----------------------------------------------------------------------------------- formats

def _npy(path: Path, pixel_size_A, frame_time_s, key) -> Iterator[Frame]:
    with open(path, "rb") as fh:
        shape, dtype, fortran, head = _npy_header(fh, path.name, "the array")
    if len(shape) == 3 and shape[0] and not fortran:
        frame_bytes = _declared(path.name, "one frame", shape[1:], dtype)
        whole = (path.stat().st_size - head) // frame_bytes if frame_bytes else shape[0]
        if whole < shape[0]:               # a truncated stack: its whole frames, then where it ends
            yield from _npy_truncated(path, shape, dtype, head, int(whole), pixel_size_A, frame_time_s)
            return
    nbytes = _declared(path.name, "the array", shape, dtype, holds=path.stat().st_size - head)
    if len(shape) == 3 and shape[0]:
        _declared(path.name, "one frame", shape[1:], dtype)   # memory-mapped: one frame at a time in memory
    elif nbytes:
        _declared(path.name, "the frame", shape, dtype)
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:     # object arrays would need pickle: refused
        raise FileImportError(f"{path.name}: not a plain numeric array, refused (no pickle): {exc}") from exc
    yield from _frames_from_stack(arr, path.name, pixel_size_A, None, frame_time_s)


def _npy_truncated(path: Path, shape, dtype, head: int, whole: int, pixel_size_A, frame_time_s) -> Iterator[Frame]:
    from streamer.file_common import frames_one_by_one

    arr = np.memmap(path, dtype=dtype, mode="r", offset=head, shape=(whole,) + tuple(shape[1:])) if whole else None

    def read(i: int):
        if i >= whole:
            raise EOFError(f"the file ends inside frame {i} (it declares {shape[0]} frames of {shape[1:]})")
        return arr[i]

    yield from frames_one_by_one(path.name, int(shape[0]), read, pixel_size_A, lambda i: i * float(frame_time_s),
                                 {"frame_time_s": float(frame_time_s)}, what=".npy stack")


def _npz_headers(path: Path) -> dict:
    """name -> (shape, dtype) of every array of an .npz, from the member headers (nothing loaded);
    each declared size checked against the memory limit (and the stored bytes, when uncompressed)."""
    from streamer.file_common import open_zip_member

    out = {}
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                continue
            what = f"array {info.filename[:-4]!r}"
            with open_zip_member(zf, info, path.name) as fh:
                shape, dtype, _, head = _npy_header(fh, path.name, what)
            holds = info.file_size - head
            _declared(path.name, what, shape, dtype, holds=holds)
            out[info.filename[:-4]] = (tuple(shape), dtype)
    return out


def _npz(path: Path, pixel_size_A, frame_time_s, key) -> Iterator[Frame]:
    headers = _npz_headers(path)
    with np.load(path, allow_pickle=False) as z:
        names = list(z.files)
        if key is not None:
            if key not in names:
                raise FileImportError(f"{path.name}: no array {key!r}; it holds {names}")
            chosen = [key]
        else:
            preferred = [n for n in ("frames", "data", "images") if n in names]
            images = [n for n in names if n in headers and len(headers[n][0]) in (2, 3)
                      and headers[n][1].kind in "biuf" and min(headers[n][0][-2:]) >= 8]
            chosen = preferred[:1] or (images if images else [])
            if not chosen:
                raise FileImportError(f"{path.name}: no image array found; arrays: {names}")
        if pixel_size_A is None and "pixel_size_A" in names:
            pixel_size_A = float(z["pixel_size_A"])
        times = None
        for tkey in ("t_acquired", "times_s"):
            if tkey in names:
                times = np.asarray(z[tkey], dtype=np.float64)
        seq = 0
        for n in chosen:
            arr = z[n]
            for f in _frames_from_stack(arr, path.name, pixel_size_A, times if len(chosen) == 1 else None,
                                        frame_time_s, {"array": n}):
                f.seq = seq
                if times is None or len(chosen) > 1:
                    f.t_acquired = f.t_received = seq * float(frame_time_s)
                seq += 1
                yield f


def _emd_group(h5):
    found = []

    def visit(name, obj):
        if hasattr(obj, "attrs") and obj.attrs.get("emd_group_type") == 1 and "data" in obj:
            found.append(obj)

    h5.visititems(visit)
    return found


def _dim(group, i):
    d = group.get(f"dim{i}")
    if d is None:
        return None, None, None
    if d.size > (1 << 24):
        raise FileImportError(f"dim{i} declares {d.size:,} values: damaged file")
    name = d.attrs.get("name", b"")
    units = d.attrs.get("units", b"")
    name = name.decode() if isinstance(name, bytes) else str(name)
    units = units.decode() if isinstance(units, bytes) else str(units)
    return np.asarray(d[()], dtype=np.float64).ravel(), name, units


def _emd(path: Path, pixel_size_A, frame_time_s, key) -> Iterator[Frame]:
    try:
        yield from _emd_frames(path, pixel_size_A, frame_time_s, key)
    except (FileImportError, MemoryError):
        raise
    except Exception as exc:       # h5py raises Runtime/Type/Key/OS errors on damaged files
        raise FileImportError(f"{path.name}: not a readable EMD/HDF5 file ({type(exc).__name__}: {exc})") from exc


def _emd_frames(path: Path, pixel_size_A, frame_time_s, key) -> Iterator[Frame]:
    import h5py

    with h5py.File(path, "r") as h5:
        groups = _emd_group(h5)
        if key is not None:
            groups = [g for g in groups if g.name.strip("/").endswith(key)]
        if not groups:
            raise FileImportError(f"{path.name}: no EMD data group (emd_group_type = 1) found")
        g = groups[0]
        data = g["data"]
        if data.ndim not in (2, 3):
            raise FileImportError(f"{path.name}: EMD data has {data.ndim} dimensions; 2 or 3 are supported")
        _declared(path.name, "one frame" if data.ndim == 3 else "the frame", data.shape[-2:], data.dtype)
        for extra in ("seq", "t_acquired_unix_s"):
            if extra in g and hasattr(g[extra], "size"):
                _declared(path.name, extra, g[extra].shape, g[extra].dtype)
        times = None
        first_spatial = 1
        if data.ndim == 3:
            t, _, tu = _dim(g, 1)
            if t is not None and tu.strip().lower() in _TIME_TO_S and len(t) == data.shape[0]:
                times = t * _TIME_TO_S[tu.strip().lower()]
            first_spatial = 2
        if pixel_size_A is None:
            x, _, xu = _dim(g, first_spatial + 1)
            if x is not None and len(x) > 1:
                pixel_size_A = _length_A(x[1] - x[0], xu)
        t0 = float(g.attrs.get("t0_unix_s", 0.0))
        if times is not None:
            times = times + t0
        meta = {}
        if "meta_json" in g.attrs:
            try:
                meta = json.loads(g.attrs["meta_json"])
            except (TypeError, ValueError):
                meta = {}
        series = g.attrs.get("series")
        series = series.decode() if isinstance(series, bytes) else (str(series) if series is not None else None)
        seqs = np.asarray(g["seq"][()]) if "seq" in g and data.ndim == 3 and len(g["seq"]) == data.shape[0] else None
        if "t_acquired_unix_s" in g and data.ndim == 3 and len(g["t_acquired_unix_s"]) == data.shape[0]:
            times = np.asarray(g["t_acquired_unix_s"][()], dtype=np.float64)   # exact, not t0 + offset
        stack = data if data.ndim == 3 else data[()]      # an h5py dataset is read frame by frame
        yield from _frames_from_stack(stack, path.name, pixel_size_A, times, frame_time_s, meta, series, seqs)


def open_frames(path: str | Path, pixel_size_A: float | None = None, frame_time_s: float = 0.2,
                key: str | None = None, status: dict | None = None) -> Iterator[Frame]:
    """Frames of a recording or an image file (see the module docstring).

    pixel_size_A : A/px, overrides (or supplies) the file's calibration.
    frame_time_s : s between frames when the file holds no frame times.
    key : the array of an .npz, or the data group of an EMD file.
    status : optional dict, filled in once the frames are exhausted (see :func:`input_status`):
        ``input_complete`` (bool), ``input_problem`` (str or None), ``input_skipped`` (list of
        the damaged stretches of a recording that were skipped).
    """
    from streamer.recording import RecordingReader, input_status, iter_frames
    from streamer.replay import is_recording

    p = Path(path)
    if pixel_size_A is not None and not (math.isfinite(float(pixel_size_A)) and float(pixel_size_A) > 0):
        raise FileImportError(f"invalid pixel size {pixel_size_A!r}: give a positive number of angstrom per pixel")
    if p.is_dir():
        raise IsADirectoryError(f"{p} is a directory, not a file")
    if not p.is_file():
        raise FileNotFoundError(f"no such file: {p}")
    if p.stat().st_size == 0:
        raise FileImportError(f"{p.name}: the file is empty")
    if status is not None:
        status.update(input_status(None))
    if is_recording(p):
        reader = RecordingReader(p)
        for f in iter_frames(p, reader=reader):
            if pixel_size_A is not None:
                f.pixel_size_A = float(pixel_size_A)
            yield f
        if status is not None:
            status.update(input_status(reader))
        return
    suffix = p.suffix.lower()
    from streamer.file_common import special_reader

    # TIFF, Nion .ndata/.h5 and the vendor formats are read frame by frame by streamer.file_common's readers
    reader = special_reader(p) or {".npy": _npy, ".npz": _npz, ".emd": _emd, ".h5": _emd, ".hdf5": _emd}.get(suffix)
    if reader is None:
        raise FileImportError(f"{p.name}: unknown file type {suffix!r}; supported: {sorted(SUFFIXES)}")
    delivered = 0
    try:
        for f in reader(p, pixel_size_A, frame_time_s, key):
            delivered += 1
            yield f
    except (FileImportError, ValueError, KeyError, IndexError, OverflowError, OSError, EOFError, struct_error,
            NotImplementedError, zipfile.BadZipFile, zipfile.LargeZipFile) as exc:
        # damaged or unexpected content (the parsers of tifffile, h5py, zipfile and numpy raise all
        # of these on hostile bytes): one explicit error type for callers
        err = exc if isinstance(exc, FileImportError) else FileImportError(
            f"{p.name}: cannot import ({type(exc).__name__}: {exc})")
        if status is None or not delivered:
            raise err from (None if err is exc else exc)
        # frames were delivered before the damage: stop cleanly and say so (the caller records
        # input_complete false and exits with the damaged-input status, as for a torn recording)
        log.warning("%s", err)
        status.update(input_complete=False, input_problem=f"{err} (after {delivered} frame(s))", input_skipped=[])
    except MemoryError as exc:     # last resort: a size that passed the checks still did not fit
        raise FileImportError(f"{p.name}: not enough memory to import it ({exc})") from exc


# ----------------------------------------------------------------------------------- export

def export_emd(frames: Iterable[Frame], path: str | Path, name: str = "frames",
               progress: bool = False) -> int:
    """Write frames to an EMD v0.2 HDF5 file; returns the number of frames written.

    Layout: root attrs ``version_major=0, version_minor=2``; group ``/data/NAME`` with
    ``emd_group_type=1``, dataset ``data`` (N, H, W) in the frames' dtype, ``dim1`` = frame time
    in s relative to the first frame (``name="time"``, ``units="s"``; attr ``t0_unix_s`` on the
    group gives the absolute start), ``dim2`` = y and ``dim3`` = x in angstrom (``units="A"``),
    plus ``seq`` (int64) and ``t_acquired_unix_s`` (float64) datasets and the series metadata as
    JSON in the group attr ``meta_json``. All frames must share shape, dtype and pixel size.
    """
    import h5py

    it = iter(frames)
    if progress:
        from tqdm import tqdm

        it = iter(tqdm(it, unit="frame", desc="export"))
    first = next(it, None)
    if first is None:
        raise FileImportError("nothing to export: no frames")
    H, W = first.data.shape
    dt = first.data.dtype
    px = float(first.pixel_size_A)
    with h5py.File(path, "w") as h5:
        h5.attrs["version_major"] = 0
        h5.attrs["version_minor"] = 2
        h5.create_group("microscope")
        h5.create_group("sample")
        h5.create_group("user")
        h5.create_group("comments")
        g = h5.create_group(f"data/{name}")
        g.attrs["emd_group_type"] = 1
        g.attrs["series"] = first.series
        g.attrs["t0_unix_s"] = float(first.t_acquired)
        g.attrs["meta_json"] = json.dumps(first.meta or {}, default=str)
        data = g.create_dataset("data", shape=(0, H, W), maxshape=(None, H, W), dtype=dt, chunks=(1, H, W))
        seqs, times = [], []
        n = 0
        for f in _chain([first], it):
            if f.data.shape != (H, W) or f.data.dtype != dt or float(f.pixel_size_A) != px:
                raise FileImportError(f"frame {f.seq} of series {f.series}: shape/dtype/pixel size differ from the "
                                   f"first frame ({(H, W)}, {dt}, {px} A); export one series at a time")
            data.resize(n + 1, axis=0)
            data[n] = f.data
            seqs.append(f.seq)
            times.append(f.t_acquired)
            n += 1
        t = np.asarray(times, dtype=np.float64)
        for i, (vec, nm, un) in enumerate([(t - t[0], "time", "s"), (np.arange(H) * px, "y", "A"),
                                           (np.arange(W) * px, "x", "A")], start=1):
            d = g.create_dataset(f"dim{i}", data=vec)
            d.attrs["name"] = nm
            d.attrs["units"] = un
        g.create_dataset("seq", data=np.asarray(seqs, dtype=np.int64))
        g.create_dataset("t_acquired_unix_s", data=t)
    return n


def _chain(*iterables):
    for it in iterables:
        yield from it
