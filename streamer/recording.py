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


class RecordingExistsError(FileExistsError):
    """The recording to create exists already (and neither append nor overwrite was asked for)."""


def check_target(path: str | os.PathLike, append: bool = False, overwrite: bool = False) -> Path:
    """Check that a recording may be written at ``path`` before anything is received: an existing
    file is refused unless ``append`` or ``overwrite``; a missing folder is created; a folder, a
    device or an unwritable place is refused. Raises :class:`RecordingExistsError` or
    :class:`OSError` with a one-line message naming the path."""
    p = Path(path)
    if append and overwrite:
        raise ValueError("--append and --overwrite exclude each other")
    if p.is_dir():
        raise IsADirectoryError(errno.EISDIR, f"{p} is a directory: give a file name, e.g. {p / 'run.swrec'}")
    if p.exists() and not p.is_file():
        raise OSError(errno.EINVAL, f"{p} is not a regular file (a device or a pipe): give a file name")
    if p.exists() and not (append or overwrite):
        raise RecordingExistsError(errno.EEXIST, f"{p} exists ({p.stat().st_size:,} bytes): use --append to "
                                                 "continue it or --overwrite to replace it")
    parent = p.parent if str(p.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot record to {p}: cannot create the folder {parent}: {exc.strerror}") from None
    if not os.access(parent, os.W_OK | os.X_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise PermissionError(errno.EACCES, f"{p}: not writable (permission denied)")
    return p


def take_path(directory: str | os.PathLike, name: str | None = None) -> Path:
    """A new, not yet existing recording path inside ``directory`` for one take of the dashboard's
    Record control. ``name`` (optional) is a plain file name: no path separator, not hidden; it
    gets ``.swrec`` if it has no suffix. Without a name the take is named by the time
    (``stemwatch-YYYYmmdd-HHMMSS.swrec``). An existing name gets ``-2``, ``-3``, ... appended:
    a take never replaces another. Raises ValueError for a name that is not a plain file name."""
    import datetime

    d = Path(directory)
    name = (name or "").strip()
    if not name:
        name = datetime.datetime.now().strftime("stemwatch-%Y%m%d-%H%M%S.swrec")
    if ("/" in name or "\\" in name or os.sep in name or (os.altsep and os.altsep in name) or "\0" in name
            or name.startswith(".") or len(name) > 200):
        raise ValueError(f"{name[:60]!r} is not a plain file name: takes are written only inside {d}/, "
                         "give a name without a path (no '/', not starting with '.')")
    if not Path(name).suffix:
        name += ".swrec"
    stem, suffix = Path(name).stem, Path(name).suffix
    cand, k = d / name, 1
    while cand.exists():
        k += 1
        cand = d / f"{stem}-{k}{suffix}"
    return cand


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
    overwrite : False refuses an existing file (:class:`RecordingExistsError`; the command-line
        tools and the live service always pass False unless told ``--overwrite``).
    sync_every_s : if set, ``fdatasync`` at most this often (durability against power loss; a
        killed process never loses complete records either way).

    Writes go straight to the file descriptor with ``writev`` (no copies, no user-space buffer),
    so every complete record is in the kernel as soon as :meth:`write` returns. On a write error
    (disk full, RLIMIT_FSIZE, I/O error) the partial record is cut off again, the writer becomes
    unusable and :class:`RecordingError` is raised with a clear message.
    """

    def __init__(self, path: str | os.PathLike, append: bool = False, sync_every_s: float | None = None,
                 overwrite: bool = True):
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
            flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
            try:
                self._fd = os.open(self.path, flags, 0o644)
            except FileExistsError:
                raise RecordingExistsError(errno.EEXIST, f"{self.path} exists: not overwritten") from None
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
        self.skipped: list[dict] = []

    def __iter__(self) -> Iterator[tuple[list[bytes], float]]:
        return self.records(verify=True)

    def scan(self) -> "RecordingReader":
        """Read the whole file once (checksums verified) to fill in the status fields."""
        for _ in self.records(verify=True):
            pass
        return self

    def records(self, verify: bool = True) -> Iterator[tuple[list[bytes], float]]:
        """Yield ``(parts, t_arrival)``; parts are ``bytes``. ``verify=False`` skips the payload
        checksum (headers are always checked).

        A damaged record (bad magic, header or payload checksum, part table) is skipped: the
        reader resynchronises on the next record whose header checksum holds and goes on. Each
        skip is listed in :attr:`skipped` (``{"at_byte", "bytes", "after_record", "reason"}``);
        :attr:`complete` is then False and :attr:`problem` names the first one."""
        self.complete, self.problem, self.n_records, self.ended = False, None, 0, False
        self.skipped = []
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
                    self._set_problem(f"no end-of-recording marker after record {self.n_records} at byte {pos}: "
                                      "the recorder did not close (crash or still recording)"
                                      + ("; all records are intact" if not self.skipped else ""))
                    return
                f.seek(pos)
                rec = self._read_record(f, pos, size, verify)
                if isinstance(rec, str):                         # damaged here
                    if rec.startswith("truncated"):
                        self._set_problem(rec)
                        return
                    nxt = self._resync(f, pos + 1, size)
                    self.skipped.append({"at_byte": pos, "bytes": (nxt if nxt is not None else size) - pos,
                                         "after_record": self.n_records, "reason": rec})
                    if nxt is None:
                        self._set_problem(f"{rec}; no intact record after it ({size - pos} bytes skipped)")
                        return
                    pos = nxt
                    continue
                kind, parts, t_arrival, rec_end = rec
                if kind == KIND_END:
                    self.ended = True
                    if rec_end == size and not self.skipped:
                        self.complete = True
                    elif rec_end != size:
                        self._set_problem(f"{size - rec_end} unexpected bytes after the end marker at byte {rec_end}")
                    else:
                        self._set_problem("")
                    return
                self.n_records += 1
                pos = rec_end
                if not self.skipped:
                    self.good_end = pos
                yield parts, t_arrival

    def _set_problem(self, last: str) -> None:
        if self.skipped:
            first = self.skipped[0]
            n = sum(s["bytes"] for s in self.skipped)
            self.problem = (f"{first['reason']}; {len(self.skipped)} damaged stretch(es), {n} bytes skipped, "
                            f"reading resumed at the next intact record" + (f"; then {last}" if last else ""))
        else:
            self.problem = last

    def _read_record(self, f, pos: int, size: int, verify: bool):
        """The record at ``pos``: ``(kind, parts, t_arrival, end)`` or a string saying what is wrong."""
        fixed = f.read(RECORD_FIXED.size)
        if len(fixed) < RECORD_FIXED.size:
            return self._torn(pos, size)
        rmagic, kind, n_parts, t_arrival, payload_len, payload_crc = RECORD_FIXED.unpack(fixed)
        if rmagic != RECORD_MAGIC or n_parts > MAX_PARTS or payload_len > MAX_PAYLOAD or kind > KIND_END:
            return f"corrupt record header after record {self.n_records} at byte {pos}"
        table = f.read(8 * n_parts + 4)
        if len(table) < 8 * n_parts + 4:
            return self._torn(pos, size)
        (hcrc,) = struct.unpack_from("<I", table, 8 * n_parts)
        if zlib.crc32(table[:-4], zlib.crc32(fixed)) != hcrc:
            return f"header checksum mismatch in record {self.n_records + 1} at byte {pos}"
        lengths = struct.unpack_from(f"<{n_parts}Q", table)
        if sum(lengths) != payload_len:
            return f"corrupt part table in record {self.n_records + 1} at byte {pos}"
        rec_end = pos + RECORD_FIXED.size + len(table) + payload_len
        if rec_end > size:
            return self._torn(pos, size)
        parts = [f.read(n) for n in lengths] if kind == KIND_MESSAGE else []
        if verify and kind == KIND_MESSAGE and _crc(parts) != payload_crc:
            return f"payload checksum mismatch in record {self.n_records + 1} at byte {pos}"
        return kind, parts, t_arrival, rec_end

    def _resync(self, f, start: int, size: int) -> int | None:
        """The byte offset of the next record at or after ``start`` whose header checksum holds."""
        chunk = 1 << 20
        pos = start
        while pos < size:
            f.seek(pos)
            buf = f.read(chunk + len(RECORD_MAGIC) - 1)
            i = buf.find(RECORD_MAGIC)
            while i >= 0:
                cand = pos + i
                f.seek(cand)
                fixed = f.read(RECORD_FIXED.size)
                if len(fixed) == RECORD_FIXED.size:
                    _m, kind, n_parts, _t, payload_len, _c = RECORD_FIXED.unpack(fixed)
                    if n_parts <= MAX_PARTS and kind <= KIND_END and payload_len <= MAX_PAYLOAD:
                        table = f.read(8 * n_parts + 4)
                        if (len(table) == 8 * n_parts + 4 and zlib.crc32(table[:-4], zlib.crc32(fixed))
                                == struct.unpack_from("<I", table, 8 * n_parts)[0]):
                            return cand
                i = buf.find(RECORD_MAGIC, i + 1)
            pos += chunk
        return None

    def _torn(self, pos: int, size: int) -> str:
        return (f"truncated tail after record {self.n_records} at byte {pos} "
                f"({size - pos} bytes of a torn record)")


def input_status(reader: "RecordingReader | None") -> dict:
    """What analysis/convert/replay outputs record about their input: ``input_complete``,
    ``input_problem`` and ``input_skipped`` (the damaged stretches of a recording that were
    skipped, each ``{"at_byte", "bytes", "after_record", "reason"}``). ``None``: a complete input
    (an image file: its importer refuses a damaged one)."""
    if reader is None:
        return {"input_complete": True, "input_problem": None, "input_skipped": []}
    return {"input_complete": bool(reader.complete), "input_problem": reader.problem,
            "input_skipped": [dict(s) for s in reader.skipped]}


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
