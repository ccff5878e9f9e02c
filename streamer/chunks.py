"""Frames of an input by index: plan an input once, then read any chunk ``[start, stop)`` of it.

What :mod:`engine.archive` runs on Dask workers, so that each worker reads its own frames from the
input path instead of receiving pixels from the client:

>>> plan = plan_input("replay_data/01_switching_256.swrec")      # doctest: +SKIP
>>> plan.n_frames, plan.note                                     # doctest: +SKIP
(48, None)
>>> frames = list(read_chunk(plan, 8, 16))                       # frames 8..15, as open_frames yields them

The frames are exactly those :func:`streamer.importers.open_frames` yields (same pixels, series,
seq, times, pixel size), in the same order.

- Recordings are indexed once by :func:`plan_input` (one pass with
  :class:`~streamer.recording.RecordingReader`, every checksum verified; a torn or damaged tail
  ends the frames there, as in :func:`~streamer.recording.iter_frames`, and is named in
  ``plan.note``); a chunk then seeks to its records and verifies their checksums again, so a file
  changed after planning is an error, never wrong frames. Frames read this way carry no series
  ``meta`` (the analysis does not use it).
- Other formats (.npy/.npz, TIFF, EMD, .ndata) are counted by one pass of ``open_frames`` and a
  chunk skips to ``start`` through the importer: cheap for memory-mapped ``.npy`` stacks, a read of
  the frames before ``start`` for EMD, a read of the whole file for TIFF and .ndata (those readers
  load the whole stack anyway).
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from streamer.frame import Frame

#: Size limits of :func:`streamer.recording.iter_frames` (the same frames must decode here).
MAX_FRAME_BYTES = 1 << 34
MAX_SIDE = 1 << 20


@dataclass(frozen=True)
class InputPlan:
    """What a reader needs to read any chunk of one input (plain data, picklable).

    path : absolute path. n_frames : frames it yields (after ``limit``). offsets : byte offset of
    each frame's record, for recordings (None for other formats). note : a problem that ended the
    input early (a torn recording), or None.
    """

    path: str
    n_frames: int
    offsets: tuple | None = None
    pixel_size_A: float | None = None
    key: str | None = None
    note: str | None = None


def plan_input(path: str | os.PathLike, pixel_size_A: float | None = None, key: str | None = None,
               limit: int | None = None) -> InputPlan:
    """Count the frames of ``path`` (and index a recording); raises what ``open_frames`` raises
    (FileNotFoundError, :class:`~streamer.importers.FileImportError`) for a bad input."""
    from streamer.importers import FileImportError, open_frames
    from streamer.replay import is_recording

    p = Path(path).resolve()
    if not p.is_file():
        raise FileNotFoundError(f"no such file: {p}")
    if is_recording(p):
        offsets, note = _index_recording(p, limit)
        if not offsets:
            raise FileImportError(f"{p.name}: no frames" + (f" ({note})" if note else ""))
        return InputPlan(str(p), len(offsets), tuple(offsets), pixel_size_A, key, note)
    frames = open_frames(p, pixel_size_A=pixel_size_A, key=key)
    n = sum(1 for _ in (frames if limit is None else itertools.islice(frames, limit)))
    if n == 0:
        raise FileImportError(f"{p.name}: no frames")
    return InputPlan(str(p), n, None, pixel_size_A, key, None)


def chunk_plan(plan: InputPlan, start: int, stop: int) -> tuple[InputPlan, int, int]:
    """``(plan', a, b)`` with ``read_chunk(plan', a, b)`` = ``read_chunk(plan, start, stop)``, where
    ``plan'`` of a recording holds only those frames' offsets: what travels to a worker stays small
    however long the recording."""
    if plan.offsets is None:
        return plan, start, stop
    return dataclasses.replace(plan, n_frames=stop - start, offsets=plan.offsets[start:stop]), 0, stop - start


def read_chunk(plan: InputPlan, start: int, stop: int) -> Iterator[Frame]:
    """Frames ``start .. stop-1`` of the planned input (``0 <= start <= stop <= plan.n_frames``)."""
    if not 0 <= start <= stop <= plan.n_frames:
        raise ValueError(f"chunk [{start}, {stop}) outside the {plan.n_frames} frames of {plan.path}")
    if plan.offsets is not None:
        yield from _recording_frames(Path(plan.path), plan.offsets[start:stop], plan.pixel_size_A)
        return
    from streamer.importers import FileImportError, open_frames

    n = 0
    for f in itertools.islice(open_frames(plan.path, pixel_size_A=plan.pixel_size_A, key=plan.key), start, stop):
        n += 1
        yield f
    if n != stop - start:
        raise FileImportError(f"{Path(plan.path).name}: has {start + n} frames now, {plan.n_frames} when planned "
                              "(changed since)")


# ----------------------------------------------------------------------------------- recordings

def _index_recording(path: Path, limit: int | None) -> tuple[list[int], str | None]:
    """Byte offsets of the records of the frames ``iter_frames(path)`` yields, and the reader's
    problem when the file ends early (torn, damaged, or without its end marker)."""
    from streamer.protocol import ProtocolError, decode
    from streamer.recording import FILE_HEADER, RecordingReader

    reader = RecordingReader(path)
    offsets: list[int] = []
    start = FILE_HEADER.size
    for parts, t_arrival in reader.records(verify=True):
        try:
            msg = decode(parts, max_frame_bytes=MAX_FRAME_BYTES, max_side=MAX_SIDE, t_received=t_arrival)
        except ProtocolError:
            msg = None                       # iter_frames skips it too
        if msg is not None and msg.type == "frame":
            offsets.append(start)
            if limit is not None and len(offsets) >= limit:
                return offsets, None
        start = reader.good_end              # the end of this record: the next one's start
    return offsets, (None if reader.complete else reader.problem)


def _recording_frames(path: Path, offsets, pixel_size_A: float | None) -> Iterator[Frame]:
    from streamer.importers import FileImportError
    from streamer.protocol import ProtocolError, decode
    from streamer.recording import MAX_PARTS, RECORD_FIXED, RECORD_MAGIC

    with open(path, "rb") as fh:
        for pos in offsets:
            fh.seek(pos)
            fixed = fh.read(RECORD_FIXED.size)
            bad = f"{path.name}: record at byte {pos} "
            if len(fixed) < RECORD_FIXED.size:
                raise FileImportError(bad + "is missing (file truncated since it was planned)")
            magic, _kind, n_parts, t_arrival, payload_len, payload_crc = RECORD_FIXED.unpack(fixed)
            if magic != RECORD_MAGIC or not 0 < n_parts <= MAX_PARTS:
                raise FileImportError(bad + "has a corrupt header (file changed since it was planned)")
            table = fh.read(8 * n_parts + 4)
            if len(table) < 8 * n_parts + 4 or zlib.crc32(table[:-4], zlib.crc32(fixed)) != \
                    struct.unpack_from("<I", table, 8 * n_parts)[0]:
                raise FileImportError(bad + "fails its header checksum (file changed since it was planned)")
            lengths = struct.unpack_from(f"<{n_parts}Q", table)
            if sum(lengths) != payload_len:
                raise FileImportError(bad + "has a corrupt part table")
            parts = [fh.read(n) for n in lengths]
            crc = 0
            for part in parts:
                crc = zlib.crc32(part, crc)
            if [len(part) for part in parts] != list(lengths) or crc != payload_crc:
                raise FileImportError(bad + "fails its payload checksum (file changed since it was planned)")
            try:
                msg = decode(parts, max_frame_bytes=MAX_FRAME_BYTES, max_side=MAX_SIDE, t_received=t_arrival)
            except ProtocolError as exc:
                raise FileImportError(bad + f"does not decode: {exc}") from None
            if msg.type != "frame":
                raise FileImportError(bad + f"is a {msg.type!r} message, not a frame")
            frame = msg.frame
            if pixel_size_A is not None:
                frame.pixel_size_A = float(pixel_size_A)
            yield frame
