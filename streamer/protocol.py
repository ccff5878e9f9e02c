"""Wire protocol v1: encode and decode the multipart ZeroMQ messages of a STEM acquisition.

Every message is a ZeroMQ multipart message. Part 0 is a msgpack map with at least ``version``
(int, :data:`PROTOCOL_VERSION`) and ``type`` (str). Types:

- ``start``     (1 part): ``series`` str, ``shape`` [H, W] ints (pixels), ``dtype`` str,
  ``pixel_size_A`` float (angstrom/pixel), ``dwell_s`` float (s per pixel), ``frame_time_s`` float
  (s per frame), ``meta`` map (free-form instrument metadata), ``t_sent`` float (Unix s).
- ``frame``     (2 parts): ``series`` str, ``seq`` int >= 0, ``t_acquired`` float (Unix s),
  ``shape`` [H, W], ``dtype`` str with explicit byte order (``|u1 <u2 >u2 <i4 >i4 <f4 >f4 <f8 >f8``),
  ``pixel_size_A`` float. Part 1 is the raw C-contiguous pixel buffer, ``H*W*itemsize`` bytes.
- ``end``       (1 part): ``series`` str, ``n_frames`` int >= 0, ``t_sent`` float.
- ``heartbeat`` (1 part): ``t_sent`` float.

The full specification (field by field, with error reasons) is ``docs/protocol.md``.

:func:`decode` never allocates memory for pixel data: the frame array is a zero-copy, read-only
view of part 1, created only after the declared shape x dtype has been checked against the size
limits and the actual buffer length. Nothing here uses pickle. This module needs only msgpack and
numpy, so a vendor script can import it on the acquisition PC.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import msgpack
import numpy as np

from streamer.frame import Frame

PROTOCOL_VERSION = 1

#: Message types of protocol v1 and the number of parts each must have.
MESSAGE_PARTS = {"start": 1, "frame": 2, "end": 1, "heartbeat": 1}

#: The pixel types accepted on the wire (numpy ``dtype.str`` spelling, explicit byte order).
ALLOWED_DTYPES = frozenset({"|u1", "<u2", ">u2", "<i4", ">i4", "<f4", ">f4", "<f8", ">f8"})

#: Largest accepted header (part 0) in bytes: headers carry metadata, never pixels.
MAX_HEADER_BYTES = 1 << 20

#: Defaults of the decoder limits (the receiver passes ``StreamConfig`` values).
DEFAULT_MAX_FRAME_BYTES = 2048 * 2048 * 8
DEFAULT_MAX_SIDE = 8192


class ProtocolError(ValueError):
    """A message that does not follow protocol v1. ``reason`` is a short machine-readable tag
    (``bad_msgpack``, ``missing_field:seq``, ``size_mismatch``, ...; see docs/protocol.md)."""

    def __init__(self, reason: str, detail: str = ""):
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


@dataclass
class Message:
    """One decoded message. ``type`` is ``start|frame|end|heartbeat``; ``header`` the part-0 map;
    ``frame`` the :class:`~streamer.frame.Frame` for ``frame`` messages (else None)."""

    type: str
    header: dict
    frame: Frame | None = None
    parts: list = field(default_factory=list, repr=False)


# --------------------------------------------------------------------------------------- encode

def wire_dtype(dtype: Any) -> str:
    """The wire spelling of a numpy dtype (explicit byte order), or ProtocolError("unknown_dtype")."""
    dt = np.dtype(dtype)
    s = dt.str
    if s not in ALLOWED_DTYPES:
        raise ProtocolError("unknown_dtype", f"{dt} is not one of uint8/uint16/int32/float32/float64")
    return s


def _pack(header: dict) -> bytes:
    return msgpack.packb(header, use_bin_type=True)


def _shape2(shape: Sequence[int]) -> list[int]:
    shape = [int(s) for s in shape]
    if len(shape) != 2 or min(shape) < 1:
        raise ProtocolError("bad_shape", f"frames are 2-D with positive sides, got {shape}")
    return shape


def encode_start(series: str, shape: Sequence[int], dtype: Any, pixel_size_A: float,
                 dwell_s: float, frame_time_s: float, meta: dict | None = None) -> list[bytes]:
    """The ``start`` message of a series: shape (H, W) in pixels, pixel size in A/px, dwell time in
    s per pixel, frame time in s. ``meta`` must be msgpack-serialisable (str keys)."""
    header = {
        "version": PROTOCOL_VERSION, "type": "start", "series": str(series),
        "shape": _shape2(shape), "dtype": wire_dtype(dtype), "pixel_size_A": float(pixel_size_A),
        "dwell_s": float(dwell_s), "frame_time_s": float(frame_time_s),
        "meta": dict(meta or {}), "t_sent": time.time(),
    }
    return [_pack(header)]


def encode_frame(series: str, seq: int, t_acquired: float, array: np.ndarray,
                 pixel_size_A: float) -> list:
    """The ``frame`` message: ``[header bytes, array]``. Part 1 is the array itself (C-contiguous;
    a non-contiguous array is copied once) so that ``send_multipart(parts, copy=False)`` sends the
    pixels without copying. Do not modify the array until ZeroMQ has sent it."""
    array = np.asarray(array)
    if array.ndim != 2:
        raise ProtocolError("bad_shape", f"frames are 2-D, got shape {array.shape}")
    dt = wire_dtype(array.dtype)
    if not array.flags.c_contiguous:
        array = np.ascontiguousarray(array)
    header = {
        "version": PROTOCOL_VERSION, "type": "frame", "series": str(series), "seq": int(seq),
        "t_acquired": float(t_acquired), "shape": [int(array.shape[0]), int(array.shape[1])],
        "dtype": dt, "pixel_size_A": float(pixel_size_A),
    }
    return [_pack(header), array]


def encode_end(series: str, n_frames: int) -> list[bytes]:
    """The ``end`` message: the series is over after ``n_frames`` frames (seq 0..n_frames-1)."""
    header = {"version": PROTOCOL_VERSION, "type": "end", "series": str(series),
              "n_frames": int(n_frames), "t_sent": time.time()}
    return [_pack(header)]


def encode_heartbeat() -> list[bytes]:
    """The ``heartbeat`` message: the acquisition PC is alive (even when idle)."""
    return [_pack({"version": PROTOCOL_VERSION, "type": "heartbeat", "t_sent": time.time()})]


# --------------------------------------------------------------------------------------- decode

def _buffer(part: Any) -> memoryview:
    """A flat byte memoryview of a message part (bytes, bytearray, memoryview, numpy array or
    zmq.Frame), without copying."""
    buf = getattr(part, "buffer", part)          # zmq.Frame exposes .buffer
    mv = memoryview(buf)
    if mv.ndim != 1 or mv.itemsize != 1 or not mv.c_contiguous:
        mv = mv.cast("B") if mv.c_contiguous else memoryview(bytes(mv))
    return mv


def _field(h: dict, name: str, kinds: tuple, *, finite: bool = False, minimum: float | None = None):
    if name not in h:
        raise ProtocolError(f"missing_field:{name}")
    v = h[name]
    # bool is an int subclass: never accept it for a numeric field.
    if isinstance(v, bool) or not isinstance(v, kinds):
        raise ProtocolError(f"bad_field:{name}", f"{type(v).__name__} is not {'/'.join(k.__name__ for k in kinds)}")
    if finite and not math.isfinite(v):
        raise ProtocolError(f"bad_field:{name}", "not finite")
    if minimum is not None and v < minimum:
        raise ProtocolError(f"bad_field:{name}", f"{v} < {minimum}")
    return v


def _shape_dtype(h: dict, max_frame_bytes: int, max_side: int) -> tuple[tuple[int, int], np.dtype, int]:
    shape = _field(h, "shape", (list, tuple))
    if len(shape) != 2 or any(isinstance(s, bool) or not isinstance(s, int) for s in shape):
        raise ProtocolError("bad_shape", f"shape must be [H, W] of ints, got {shape!r}"[:200])
    if min(shape) < 1:
        raise ProtocolError("bad_shape", f"sides must be >= 1, got {shape}")
    if max(shape) > max_side:
        raise ProtocolError("shape_too_large", f"{shape} has a side > {max_side} px")
    dt_s = _field(h, "dtype", (str,))
    if dt_s not in ALLOWED_DTYPES:
        raise ProtocolError("unknown_dtype", repr(dt_s)[:60])
    dt = np.dtype(dt_s)
    nbytes = shape[0] * shape[1] * dt.itemsize   # Python ints: no overflow
    if nbytes > max_frame_bytes:
        raise ProtocolError("frame_too_large", f"{nbytes} bytes > limit {max_frame_bytes}")
    return (shape[0], shape[1]), dt, nbytes


def decode(parts: Sequence[Any], max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
           max_side: int = DEFAULT_MAX_SIDE, t_received: float | None = None) -> Message:
    """Decode and validate one multipart message.

    ``parts``: the message parts (bytes-like or zmq.Frame). Size limits: a frame's pixel buffer may
    hold at most ``max_frame_bytes`` bytes and a side at most ``max_side`` pixels; both are checked
    from the header before anything is touched, and no memory is ever allocated for pixels (the
    frame's ``data`` is a read-only view of part 1). Raises :class:`ProtocolError` with a reason.
    """
    if len(parts) == 0:
        raise ProtocolError("wrong_part_count", "empty message")
    head = _buffer(parts[0])
    if len(head) > MAX_HEADER_BYTES:
        raise ProtocolError("header_too_large", f"{len(head)} bytes > {MAX_HEADER_BYTES}")
    try:
        h = msgpack.unpackb(head, raw=False, strict_map_key=False, use_list=True)
    except Exception as exc:  # msgpack raises many types (ExtraData, ValueError, UnicodeDecodeError...)
        raise ProtocolError("bad_msgpack", type(exc).__name__) from None
    if not isinstance(h, dict):
        raise ProtocolError("header_not_map", type(h).__name__)
    version = _field(h, "version", (int,))
    if version != PROTOCOL_VERSION:
        raise ProtocolError("unknown_version", f"version {version}, this receiver speaks {PROTOCOL_VERSION}")
    mtype = _field(h, "type", (str,))
    if mtype not in MESSAGE_PARTS:
        raise ProtocolError("unknown_type", repr(mtype)[:60])
    if len(parts) != MESSAGE_PARTS[mtype]:
        raise ProtocolError("wrong_part_count", f"{mtype} has {MESSAGE_PARTS[mtype]} part(s), got {len(parts)}")

    if mtype == "heartbeat":
        _field(h, "t_sent", (float, int), finite=True)
        return Message("heartbeat", h, parts=list(parts))
    series = _field(h, "series", (str,))
    if not series or len(series) > 256:
        raise ProtocolError("bad_field:series", "empty or longer than 256 characters")
    if mtype == "end":
        _field(h, "n_frames", (int,), minimum=0)
        return Message("end", h, parts=list(parts))
    if mtype == "start":
        _shape_dtype(h, max_frame_bytes, max_side)
        _field(h, "pixel_size_A", (float, int), finite=True, minimum=0.0)
        _field(h, "dwell_s", (float, int), finite=True, minimum=0.0)
        _field(h, "frame_time_s", (float, int), finite=True, minimum=0.0)
        if not isinstance(h.get("meta", {}), dict):
            raise ProtocolError("bad_field:meta", "meta must be a map")
        return Message("start", h, parts=list(parts))

    # frame
    seq = _field(h, "seq", (int,), minimum=0)
    if seq >= 1 << 63:
        raise ProtocolError("bad_field:seq", "seq does not fit in int64")
    t_acq = _field(h, "t_acquired", (float, int), finite=True)
    px = _field(h, "pixel_size_A", (float, int), finite=True, minimum=0.0)
    shape, dt, nbytes = _shape_dtype(h, max_frame_bytes, max_side)
    buf = _buffer(parts[1])
    if len(buf) != nbytes:
        raise ProtocolError("size_mismatch", f"buffer has {len(buf)} bytes, {shape} {dt.str} needs {nbytes}")
    data = np.frombuffer(buf, dtype=dt).reshape(shape)
    if data.flags.writeable:
        data.flags.writeable = False
    frame = Frame(data=data, series=series, seq=seq, t_acquired=float(t_acq), pixel_size_A=float(px),
                  t_received=time.time() if t_received is None else t_received)
    return Message("frame", h, frame=frame, parts=list(parts))
