"""Replay recordings (or imported files) over a bound ZeroMQ socket, like a live microscope.

A recording is replayed message by message, **byte for byte** as it was received, so the replayed
stream enters the analyzer through the same socket path as live data. Pacing follows the frames'
``t_acquired``: frame *i* is sent at ``t0 + (t_acquired[i] - t_acquired[0]) / speed`` on the
monotonic clock (absolute schedule, so errors never accumulate); ``start``/``end``/``heartbeat``
messages go out as soon as they are reached. ``speed=inf`` sends as fast as the socket takes them.
When ``t_acquired`` goes backwards (a new series, another file, the next loop) the schedule is
re-anchored; a pause longer than ``max_pause_s`` (s of recorded time) is shortened to it.

Files that are not recordings (.npy/.npz/TIFF/EMD/.ndata, see :mod:`streamer.importers`) are
encoded on the fly into ``start``/``frame``/``end`` messages. A directory replays every recording
in it, in name order (other files are ignored).
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import msgpack

from streamer.frame import Frame
from streamer.protocol import encode_end, encode_frame, encode_start
from streamer.recording import MAGIC, RecordingReader

Message = tuple[list, float | None]     # (parts, t_acquired of a frame message or None)


def parse_speed(text: str | float) -> float:
    """``"1"`` (original pace), ``"N"`` (N times faster, any positive number) or ``"max"``."""
    if isinstance(text, (int, float)):
        value = float(text)
    elif str(text).strip().lower() in ("max", "inf"):
        return math.inf
    else:
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"speed must be a positive number or 'max', got {text!r}") from None
    if not value > 0:
        raise ValueError(f"speed must be > 0, got {value}")
    return value


def is_recording(path: str | Path) -> bool:
    """True if ``path`` is a file that starts with the recording magic."""
    p = Path(path)
    if not p.is_file():
        return False
    with open(p, "rb") as f:
        return f.read(len(MAGIC)) == MAGIC


def recorded_messages(path: str | Path, reader: RecordingReader | None = None) -> Iterator[Message]:
    """The messages of a recording exactly as recorded, with each frame's ``t_acquired``."""
    reader = reader or RecordingReader(path)
    for parts, _t_arrival in reader.records(verify=True):
        t = None
        try:
            h = msgpack.unpackb(parts[0], raw=False)
            if isinstance(h, dict) and h.get("type") == "frame":
                t = float(h["t_acquired"])
        except Exception:  # a recording only holds decodable messages; be lenient anyway
            pass
        yield parts, t


def encoded_messages(frames: Iterable[Frame], frame_time_s: float = 0.0) -> Iterator[Message]:
    """Encode frames (from an importer) into protocol messages: a ``start`` whenever the series,
    shape, dtype or pixel size changes, the frames, and an ``end`` per series."""
    key = None
    n = 0
    series = None
    for f in frames:
        k = (f.series, f.data.shape, f.data.dtype.str, f.pixel_size_A)
        if k != key:
            if series is not None:
                yield encode_end(series, n), None
            series, key = f.series, k
            meta = {k2: v for k2, v in (f.meta or {}).items() if k2 not in ("dwell_s", "frame_time_s")}
            yield encode_start(f.series, f.data.shape, f.data.dtype, f.pixel_size_A,
                               float((f.meta or {}).get("dwell_s", 0.0)),
                               float((f.meta or {}).get("frame_time_s", frame_time_s)), meta), None
            n = f.seq
        yield encode_frame(f.series, f.seq, f.t_acquired, f.data, f.pixel_size_A), f.t_acquired
        n = f.seq + 1
    if series is not None:
        yield encode_end(series, n), None


def source_files(path: str | Path) -> list[Path]:
    """The files a replay source names: the file itself, or every recording in a directory
    (sorted by name; other files, e.g. ground truth next to the recordings, are ignored)."""
    p = Path(path)
    if p.is_dir():
        files = [q for q in sorted(p.iterdir()) if q.is_file() and is_recording(q)]
        if not files:
            raise FileNotFoundError(f"no recording in {p}")
        return files
    if not p.exists():
        raise FileNotFoundError(f"no such file: {p}")
    return [p]


def messages_for(path: str | Path, pixel_size_A: float | None = None, frame_time_s: float = 0.2,
                 key: str | None = None, status: dict | None = None) -> Iterator[Message]:
    """All messages of a replay source (file or directory), in order. ``status`` (optional dict)
    receives ``input_complete`` / ``input_problem`` / ``input_skipped`` (each skip names its file)
    once the messages are exhausted."""
    from streamer.recording import input_status

    total = input_status(None)
    for f in source_files(path):
        if is_recording(f):
            reader = RecordingReader(f)
            yield from recorded_messages(f, reader=reader)
            st = input_status(reader)
        else:
            from streamer.source import FileSource

            with FileSource(f, pixel_size_A=pixel_size_A, frame_time_s=frame_time_s, key=key) as src:
                yield from encoded_messages(src.frames(), frame_time_s)
                st = src.status
        if st.get("input_complete") is False:
            total["input_complete"] = False
            total["input_problem"] = "; ".join(p for p in (total["input_problem"], f"{f.name}: {st['input_problem']}") if p)
            total["input_skipped"] += [{"file": f.name, **sk} for sk in st.get("input_skipped", [])]
    if status is not None:
        status.update(total)


#: a jump in t_acquired larger than this (s) is not waited for: pacing restarts at that frame
MAX_TIME_JUMP_S = 86400.0


@dataclass
class ReplayStats:
    """What a replay sent: messages, frames, completed loops, wall time (s)."""

    messages: int = 0
    frames: int = 0
    loops: int = 0
    wall_s: float = 0.0
    input: dict = field(default_factory=dict)   # input_complete / input_problem / input_skipped (last loop)


def replay(source: str | Path, endpoint: str, speed: float | str = 1.0, loops: int = 1,
           socket_type: str = "PUSH", bind: bool = True, curve=None, max_pause_s: float | None = None,
           pixel_size_A: float | None = None, frame_time_s: float = 0.2, key: str | None = None,
           stop: threading.Event | None = None, on_message: Callable[[int, int], None] | None = None,
           on_bound: Callable[[str], None] | None = None) -> ReplayStats:
    """Replay ``source`` (recording, importable file or directory) on ``endpoint``.

    speed : 1 original pace, N times faster, or ``"max"``/``inf``. loops : times to play it
    (0 = until ``stop`` is set). ``on_bound(endpoint)`` is called once the socket is bound
    (resolves ``tcp://host:*``); ``on_message(messages, frames)`` after every message.
    """
    from streamer.publisher import Publisher

    speed = parse_speed(speed)
    stop = stop or threading.Event()
    stats = ReplayStats()
    t_start = time.monotonic()
    with Publisher(endpoint, bind=bind, socket_type=socket_type, curve=curve, linger_s=10.0,
                   send_timeout_s=None) as pub:
        if on_bound is not None:
            on_bound(pub.endpoint)
        while not stop.is_set() and (loops == 0 or stats.loops < loops):
            anchor_wall = anchor_acq = prev_acq = None
            for parts, t_acq in messages_for(source, pixel_size_A, frame_time_s, key, status=stats.input):
                if stop.is_set():
                    break
                if t_acq is not None and math.isfinite(speed):
                    if anchor_acq is None or t_acq < prev_acq or t_acq - prev_acq > MAX_TIME_JUMP_S:
                        # the first frame, a new loop, or an implausible time (a jump of more than a day,
                        # e.g. a broken clock): pace from here on, never wait for it
                        anchor_wall, anchor_acq = None, t_acq
                    elif max_pause_s is not None and t_acq - prev_acq > max_pause_s:
                        anchor_acq += (t_acq - prev_acq) - max_pause_s
                    if anchor_wall is not None:
                        delay = anchor_wall + (t_acq - anchor_acq) / speed - time.monotonic()
                        if delay > 0 and stop.wait(delay):
                            break
                    prev_acq = t_acq
                pub.send_raw(parts)
                if t_acq is not None and anchor_wall is None:
                    anchor_wall = time.monotonic()   # the schedule starts when the first frame left
                stats.messages += 1
                stats.frames += t_acq is not None
                if on_message is not None:
                    on_message(stats.messages, stats.frames)
            else:
                stats.loops += 1
                continue
            break
    stats.wall_s = time.monotonic() - t_start
    return stats
