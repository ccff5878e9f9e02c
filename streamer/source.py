"""Frame sources: one protocol for everything that produces frames (in the spirit of LiberTEM-live's
connection / acquisition objects).

A :class:`FrameSource` is opened, read frame by frame (each a :class:`streamer.frame.Frame` with its
series, seq, times, pixel size and metadata), asked what it delivered and what was lost
(:meth:`FrameSource.report`), and closed::

    with open_source("replay_data/01_switching_256.swrec") as src:
        for frame in src.frames():
            ...
        print(src.report())            # frames, gaps, losses, complete or why not

``read(timeout_s)`` returns the next frame, ``None`` when none came within ``timeout_s`` (live
sources), and raises :class:`SourceExhausted` when there will be no more. Users:
``stemwatch analyze`` (files), :class:`engine.service.LiveService` (``serve``, ``demo``: a
socket), ``stemwatch replay`` (files it re-encodes) and ``stemwatch simulate`` (the simulator).

Sources here: :class:`FileSource` (a recording or any file :func:`streamer.importers.open_frames`
reads; a new *file format* is one reader in streamer/importers.py), :class:`ReceiverSource` (the
ZeroMQ wire protocol), and by name the simulator (``sim:SCENARIO``,
:class:`engine.sim.source.SimulatorSource`). A new *kind* of source (a vendor's live interface,
a Nion Swift plug-in) is one module with a class following the protocol, reached either by its
``scheme:`` in :data:`SOURCES` or, from another package, through the entry-point group
``stemwatch.frame_sources`` (name = scheme, value = ``module:Class``): no other module changes.
"""

from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Protocol

from streamer.frame import Frame

#: scheme -> "module:Class" of the built-in sources (imported only when used)
SOURCES: dict[str, str] = {
    "tcp": "streamer.source:ReceiverSource",
    "ipc": "streamer.source:ReceiverSource",
    "inproc": "streamer.source:ReceiverSource",
    "sim": "engine.sim.source:SimulatorSource",
    "file": "streamer.source:FileSource",
}
ENTRY_POINT_GROUP = "stemwatch.frame_sources"


class SourceExhausted(Exception):
    """The source has no more frames (the end of a file or of a finite simulation, or closed)."""


@dataclass
class SourceReport:
    """What a source delivered and what it knows was lost (plain data; :meth:`to_dict` for JSON).

    complete : every frame the source knows of was delivered and it ended properly (a live source
    is complete while nothing was lost). problem : why not, in one line. gaps : missing seq ranges
    ``[first, last]`` within series. dropped : frames received but replaced by newer ones before
    they were read (live analysis takes the newest frame). malformed : messages refused.
    """

    source: str
    frames: int = 0
    series: list = field(default_factory=list)
    complete: bool = True
    problem: str | None = None
    gaps: list = field(default_factory=list)
    missing_frames: int = 0
    dropped: int = 0
    malformed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


class FrameSource(Protocol):
    """The protocol (see the module docstring). ``description`` says what it reads, for logs."""

    description: str

    def open(self) -> "FrameSource": ...

    def read(self, timeout_s: float | None = None) -> Frame | None: ...

    def report(self) -> SourceReport: ...

    def close(self, timeout_s: float | None = None) -> None: ...   # timeout_s: for threads it joins


class BaseSource:
    """Context manager and :meth:`frames` iterator on top of ``open``/``read``/``close``."""

    description = "frames"

    def open(self):
        return self

    def close(self, timeout_s: float | None = None) -> None:
        pass

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def frames(self, timeout_s: float | None = None) -> Iterator[Frame]:
        """Every frame until the source is exhausted (live: ``timeout_s`` without one ends it too)."""
        while True:
            try:
                f = self.read(timeout_s)
            except SourceExhausted:
                return
            if f is None:
                return
            yield f


class SeqCheck:
    """Counts frames and seq gaps per series (what a file or simulator delivered)."""

    def __init__(self):
        self.frames, self.series, self.gaps, self.missing = 0, [], [], 0
        self._last: dict[str, int] = {}

    def add(self, f: Frame) -> None:
        self.frames += 1
        if f.series not in self._last:
            self.series.append(f.series)
        elif int(f.seq) > self._last[f.series] + 1:
            self.gaps.append([self._last[f.series] + 1, int(f.seq) - 1])
            self.missing += int(f.seq) - 1 - self._last[f.series]
        self._last[f.series] = int(f.seq)


class FileSource(BaseSource):
    """A recording (checksums verified; a torn or unfinished file is reported, its intact frames
    delivered) or an image file (:func:`streamer.importers.open_frames`: npy/npz/TIFF/EMD/ndata).

    Errors of the file itself (unknown type, not numeric, damaged) raise
    :class:`streamer.importers.FileImportError` / ``FileNotFoundError`` from :meth:`open`.
    """

    def __init__(self, path: str | Path, pixel_size_A: float | None = None, frame_time_s: float = 0.2,
                 key: str | None = None):
        self.path = Path(path)
        self.description = f"file {self.path.name}"
        self._args = (pixel_size_A, frame_time_s, key)
        self._it: Iterator[Frame] | None = None
        self.status: dict = {}     # input_complete / input_problem / input_skipped (streamer.importers.open_frames)
        self._next: Frame | None = None
        self._check = SeqCheck()
        self._done = False

    def open(self) -> "FileSource":
        from streamer.importers import FileImportError, open_frames

        if self._it is not None:
            return self
        pixel_size_A, frame_time_s, key = self._args
        if not self.path.exists():
            raise FileNotFoundError(f"no such file: {self.path}")
        self._it = open_frames(self.path, pixel_size_A=pixel_size_A, frame_time_s=frame_time_s, key=key,
                               status=self.status)
        self._next = next(self._it, None)       # a bad file fails here, before anything is written
        if self._next is None:
            why = f" ({self.status['input_problem']})" if self.status.get("input_problem") else ""
            raise FileImportError(f"{self.path.name}: no frames{why}")
        return self

    def read(self, timeout_s: float | None = None) -> Frame | None:
        if self._it is None:
            self.open()
        f, self._next = self._next, None
        if f is None:
            f = next(self._it, None)
        if f is None:
            self._done = True
            raise SourceExhausted(self.description)
        self._check.add(f)
        return f

    def report(self) -> SourceReport:
        c = self._check
        if not self._done:
            problem = f"not read to the end (stopped after {c.frames} frames)"
        elif self.status.get("input_complete") is False:
            problem = self.status.get("input_problem") or "damaged input"
        elif c.missing:
            problem = f"{c.missing} frames missing in {len(c.gaps)} gaps"
        else:
            problem = None
        return SourceReport(source=self.description, frames=c.frames, series=list(c.series),
                            complete=problem is None, problem=problem, gaps=c.gaps[:100], missing_frames=c.missing)

    def close(self, timeout_s: float | None = None) -> None:
        if self._it is not None and hasattr(self._it, "close"):
            self._it.close()


class ReceiverSource(BaseSource):
    """Frames from the wire protocol (:class:`streamer.receiver.Receiver`: PULL/SUB socket, bind or
    connect, CURVE, recorder). ``read`` returns the newest frame (older ones not yet read are
    dropped and counted); ``None`` after ``timeout_s`` without one. Live: never exhausted until
    closed. ``receiver`` is the underlying receiver (its ``stats()`` has every counter)."""

    def __init__(self, endpoint: str, cfg=None, bind: bool = False, recorder=None, socket_type: str = "PULL",
                 curve=None):
        from streamer.receiver import Receiver

        self.description = f"{socket_type} {endpoint}"
        self.receiver = Receiver(endpoint, cfg, bind=bind, recorder=recorder, socket_type=socket_type, curve=curve)
        self._closed = False

    def open(self) -> "ReceiverSource":
        self.receiver.start()
        return self

    def read(self, timeout_s: float | None = None) -> Frame | None:
        if self._closed:
            raise SourceExhausted(self.description)
        return self.receiver.latest(timeout_s=timeout_s)

    def report(self) -> SourceReport:
        s = self.receiver.stats()
        lost = s["missing_frames"] + s["malformed_total"]
        return SourceReport(source=self.description, frames=s["delivered_for_analysis"],
                            series=[s["series"]] if s["series"] else [], complete=lost == 0,
                            problem=None if lost == 0 else (f"{s['missing_frames']} frames missing in "
                                                            f"{s['gap_count']} gaps, {s['malformed_total']} "
                                                            "malformed messages"),
                            gaps=s["gaps"], missing_frames=s["missing_frames"], dropped=s["dropped_for_analysis"],
                            malformed=s["malformed_total"])

    def close(self, timeout_s: float | None = None) -> None:
        """Stop the receiver; its threads get ``timeout_s`` each (default: the receiver's own)."""
        self._closed = True
        if timeout_s is None:
            self.receiver.stop()
        else:
            self.receiver.stop(timeout_s=timeout_s)


def _entry_point(scheme: str) -> str | None:
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == scheme:
            return ep.value
    return None


def source_class(scheme: str):
    """The class registered for ``scheme`` (built-in or entry point); KeyError when none is."""
    target = SOURCES.get(scheme) or _entry_point(scheme)
    if target is None:
        raise KeyError(f"no frame source for {scheme!r} (known: {', '.join(sorted(SOURCES))})")
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)


def open_source(spec: str | Path, **options) -> FrameSource:
    """A frame source for ``spec``, opened: ``SCHEME://...`` or ``SCHEME:...`` (``tcp://host:5555``,
    ``sim:switching``), else a file path. ``options`` go to the source's constructor."""
    text = str(spec)
    scheme, sep, rest = text.partition(":")
    if sep and len(scheme) > 1 and scheme.isidentifier() and not Path(text).exists():
        cls = source_class(scheme)
        arg = text if cls is ReceiverSource else rest.removeprefix("//")
        return cls(arg, **options).open()
    return FileSource(text, **options).open()
