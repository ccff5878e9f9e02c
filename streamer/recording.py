"""Lossless recordings of the raw message stream (format: docs/recording.md).

A recording stores the exact multipart messages as they arrived, each with its arrival time, in an
append-only file of checksummed records. Byte layout (all integers little-endian)::

    file header (16 bytes):  b"STEMWREC" | u16 format version (1) | u16 flags (0) | u32 reserved (0)
    record:                  b"SWRC" | u16 kind | u16 n_parts | f64 t_arrival | u64 payload_len
                             | u32 payload_crc32 | n_parts x u64 part length | u32 header_crc32
                             | payload (the parts, concatenated)

``kind`` 0 is a message, 1 the end-of-recording marker written by :meth:`RecordingWriter.close`
(0 parts). ``header_crc32`` covers every header byte before it; ``payload_crc32`` the payload.
A writer killed mid-write leaves a torn last record: readers return every complete record and
report the tail (:attr:`RecordingReader.problem`). Appending to an existing recording first cuts
off a torn tail or the end marker, so a file can be continued after a crash.

No pickle: parts are raw bytes (msgpack headers and pixel buffers).
"""

from __future__ import annotations

import errno
import os
import struct
import time
import zlib
from pathlib import Path
from typing import Iterator, Sequence

from streamer.frame import Frame

MAGIC = b"STEMWREC"
FORMAT_VERSION = 1
FILE_HEADER = struct.Struct("<8sHHI")          # 16 bytes
RECORD_MAGIC = b"SWRC"
RECORD_FIXED = struct.Struct("<4sHHdQI")       # 28 bytes: magic kind n_parts t_arrival payload_len payload_crc
KIND_MESSAGE = 0
KIND_END = 1
MAX_PARTS = 64                                 # sanity limit when reading
MAX_PAYLOAD = 1 << 34                          # 16 GiB: larger declared payloads are corruption


class RecordingError(OSError):
    """Writing a recording failed (disk full, file too large, I/O error). The file is left valid
    up to the last complete record."""


def _crc(views: Sequence, crc: int = 0) -> int:
    for v in views:
        crc = zlib.crc32(v, crc)
    return crc


def _views(parts: Sequence) -> list[memoryview]:
    out = []
    for p in parts:
        mv = memoryview(getattr(p, "buffer", p))
        if mv.ndim != 1 or mv.itemsize != 1:
            mv = mv.cast("B")
        out.append(mv)
    return out


def encode_record_header(kind: int, t_arrival: float, views: Sequence[memoryview]) -> bytes:
    """The header bytes of one record holding ``views`` (used by the writer and by tests)."""
    lengths = [len(v) for v in views]
    fixed = RECORD_FIXED.pack(RECORD_MAGIC, kind, len(views), float(t_arrival), sum(lengths), _crc(views))
    table = struct.pack(f"<{len(lengths)}Q", *lengths)
    return fixed + table + struct.pack("<I", zlib.crc32(table, zlib.crc32(fixed)))


class RecordingWriter:
    """Append messages to a recording.

    path : file to create (or to continue if ``append=True`` and it exists).
    sync_every_s : if set, ``fdatasync`` at most this often (durability against power loss; a
        killed process never loses complete records either way).

    Writes go straight to the file descriptor with ``writev`` (no copies, no user-space buffer),
    so every complete record is in the kernel as soon as :meth:`write` returns. On a write error
    (disk full, RLIMIT_FSIZE, I/O error) the partial record is cut off again, the writer becomes
    unusable and :class:`RecordingError` is raised with a clear message.
    """

    def __init__(self, path: str | os.PathLike, append: bool = False, sync_every_s: float | None = None):
        self.path = Path(path)
        self.records = 0
        self.bytes_written = 0
        self.error: str | None = None
        self._sync_every_s = sync_every_s
        self._last_sync = time.monotonic()
        if append and self.path.exists() and self.path.stat().st_size > 0:
            reader = RecordingReader(self.path)
            n = sum(1 for _ in reader.records(verify=True))
            end = reader.good_end  # byte just after the last complete message record
            if end < FILE_HEADER.size:
                raise RecordingError(errno.EINVAL, f"cannot append to {self.path}: {reader.problem}")
            self._fd = os.open(self.path, os.O_WRONLY)
            os.ftruncate(self._fd, end)
            os.lseek(self._fd, end, os.SEEK_SET)
            self.records = n
            self._offset = end
        else:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            self._offset = 0
            self._write_all([FILE_HEADER.pack(MAGIC, FORMAT_VERSION, 0, 0)])

    def _write_all(self, bufs: list) -> None:
        start = self._offset
        views = _views(bufs)
        total = sum(len(v) for v in views)
        done = 0
        try:
            while done < total:
                n = os.writev(self._fd, views)
                if n <= 0:
                    raise OSError(errno.EIO, "write returned 0")
                done += n
                while views and n >= len(views[0]):
                    n -= len(views[0])
                    views.pop(0)
                if views and n:
                    views[0] = views[0][n:]
        except OSError as exc:
            # Cut the torn record off so the file stays valid up to the last complete record.
            try:
                os.ftruncate(self._fd, start)
            except OSError:
                pass
            why = {errno.ENOSPC: "disk full", errno.EFBIG: "file size limit reached",
                   errno.EDQUOT: "disk quota exceeded"}.get(exc.errno, os.strerror(exc.errno or errno.EIO))
            self.error = (f"recording stopped: {why} while writing record {self.records + 1} "
                          f"to {self.path}; the file is valid up to record {self.records} "
                          f"({start} bytes)")
            self._close_fd()
            raise RecordingError(exc.errno or errno.EIO, self.error) from exc
        self._offset += total

    def write(self, parts: Sequence, t_arrival: float) -> None:
        """Append one message (its raw parts, bytes-like or zmq.Frame) with its arrival time
        (Unix s)."""
        if self._fd is None:
            raise RecordingError(errno.EBADF, self.error or f"recording {self.path} is closed")
        views = _views(parts)
        if len(views) > MAX_PARTS:
            raise ValueError(f"a message has at most {MAX_PARTS} parts")
        header = encode_record_header(KIND_MESSAGE, t_arrival, views)
        self._write_all([header, *views])
        self.records += 1
        self.bytes_written += len(header) + sum(len(v) for v in views)
        if self._sync_every_s is not None and time.monotonic() - self._last_sync >= self._sync_every_s:
            os.fdatasync(self._fd)
            self._last_sync = time.monotonic()

    def _close_fd(self) -> None:
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)
            self._fd = None

    def close(self) -> None:
        """Write the end-of-recording marker, sync and close. Safe to call twice."""
        if getattr(self, "_fd", None) is None:
            return
        try:
            self._write_all([encode_record_header(KIND_END, time.time(), [])])
            os.fsync(self._fd)
        finally:
            self._close_fd()

    @property
    def closed(self) -> bool:
        return self._fd is None

    def __enter__(self) -> "RecordingWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class RecordingReader:
    """Read a recording: iterate ``(parts, t_arrival)`` for every complete message record.

    After iteration (or :meth:`scan`): :attr:`complete` is True when every record is intact and
    the file ends with the end-of-recording marker; otherwise :attr:`problem` says what is wrong,
    e.g. ``"truncated tail after record 812 at byte 851443712 (3 bytes of a torn record)"``.
    Records before the problem are always returned, each verified against its checksums.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.complete = False
        self.problem: str | None = None
        self.n_records = 0
        self.good_end = FILE_HEADER.size
        self.ended = False

    def __iter__(self) -> Iterator[tuple[list[bytes], float]]:
        return self.records(verify=True)

    def scan(self) -> "RecordingReader":
        """Read the whole file once (checksums verified) to fill in the status fields."""
        for _ in self.records(verify=True):
            pass
        return self

    def records(self, verify: bool = True) -> Iterator[tuple[list[bytes], float]]:
        """Yield ``(parts, t_arrival)``; parts are ``bytes``. ``verify=False`` skips the payload
        checksum (headers are always checked)."""
        self.complete, self.problem, self.n_records, self.ended = False, None, 0, False
        with open(self.path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(FILE_HEADER.size)
            if len(head) < FILE_HEADER.size:
                self.problem = f"not a recording: file is {len(head)} bytes, shorter than the header"
                self.good_end = 0
                return
            magic, version, _flags, _ = FILE_HEADER.unpack(head)
            if magic != MAGIC:
                self.problem = "not a stemwatch recording (bad magic)"
                self.good_end = 0
                return
            if version != FORMAT_VERSION:
                self.problem = f"recording format version {version} is not supported (this reads {FORMAT_VERSION})"
                self.good_end = 0
                return
            pos = FILE_HEADER.size
            self.good_end = pos
            while True:
                if pos == size:
                    self.problem = (f"no end-of-recording marker after record {self.n_records} at byte {pos}: "
                                    "the recorder did not close (crash or still recording); all records are intact")
                    return
                fixed = f.read(RECORD_FIXED.size)
                if len(fixed) < RECORD_FIXED.size:
                    self.problem = self._torn(pos, size)
                    return
                rmagic, kind, n_parts, t_arrival, payload_len, payload_crc = RECORD_FIXED.unpack(fixed)
                if rmagic != RECORD_MAGIC or n_parts > MAX_PARTS or payload_len > MAX_PAYLOAD or kind > KIND_END:
                    self.problem = f"corrupt record header after record {self.n_records} at byte {pos}"
                    return
                table = f.read(8 * n_parts + 4)
                if len(table) < 8 * n_parts + 4:
                    self.problem = self._torn(pos, size)
                    return
                (hcrc,) = struct.unpack_from("<I", table, 8 * n_parts)
                if zlib.crc32(table[:-4], zlib.crc32(fixed)) != hcrc:
                    self.problem = f"header checksum mismatch in record {self.n_records + 1} at byte {pos}"
                    return
                lengths = struct.unpack_from(f"<{n_parts}Q", table)
                if sum(lengths) != payload_len:
                    self.problem = f"corrupt part table in record {self.n_records + 1} at byte {pos}"
                    return
                rec_end = pos + RECORD_FIXED.size + len(table) + payload_len
                if rec_end > size:
                    self.problem = self._torn(pos, size)
                    return
                if kind == KIND_END:
                    self.ended = True
                    if rec_end == size:
                        self.complete = True
                    else:
                        self.problem = f"{size - rec_end} unexpected bytes after the end marker at byte {rec_end}"
                    return
                parts = [f.read(n) for n in lengths]
                if verify and _crc(parts) != payload_crc:
                    self.problem = f"payload checksum mismatch in record {self.n_records + 1} at byte {pos}"
                    return
                self.n_records += 1
                pos = rec_end
                self.good_end = pos
                yield parts, t_arrival

    def _torn(self, pos: int, size: int) -> str:
        return (f"truncated tail after record {self.n_records} at byte {pos} "
                f"({size - pos} bytes of a torn record)")


def iter_frames(path: str | os.PathLike, max_frame_bytes: int = 1 << 34, max_side: int = 1 << 20,
                reader: RecordingReader | None = None) -> Iterator[Frame]:
    """The frames of a recording, in order, as :class:`Frame` (``t_received`` = arrival time,
    ``meta`` = the series' start metadata plus ``dwell_s``/``frame_time_s``). Messages that do
    not decode are skipped (they cannot be in a file written by the receiver)."""
    from streamer.protocol import ProtocolError, decode

    reader = reader or RecordingReader(path)
    metas: dict[str, dict] = {}
    run = 0
    for parts, t_arrival in reader.records(verify=True):
        try:
            msg = decode(parts, max_frame_bytes=max_frame_bytes, max_side=max_side, t_received=t_arrival)
        except ProtocolError:
            continue
        if msg.type == "start":
            h = msg.header
            metas[h["series"]] = {**h.get("meta", {}), "dwell_s": h["dwell_s"], "frame_time_s": h["frame_time_s"]}
            run += 1                                # every start is a new run (Frame.run)
        elif msg.type == "frame":
            msg.frame.meta = metas.get(msg.frame.series, {})
            msg.frame.run = run
            yield msg.frame
