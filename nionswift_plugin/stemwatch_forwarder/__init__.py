"""stemwatch forwarder: a Nion Swift plug-in that sends every completed scan frame to stemwatch.

Swift finds it like any plug-in: it iterates the ``nionswift_plugin`` namespace package (this
directory has no ``nionswift_plugin/__init__.py``), imports ``nionswift_plugin.stemwatch_forwarder``
and calls :func:`run`. ``run`` reads the settings file (``$STEMWATCH_SWIFT_SETTINGS`` or
``~/.config/stemwatch/swift_forwarder.json``; see :class:`streamer.forwarder.ForwarderSettings`),
opens a :class:`streamer.forwarder.Forwarder` and attaches to every scanning hardware source (now
registered or registered later).

Per completed frame, Swift calls :meth:`Attachment.frame_ready` on its acquisition thread with one
data promise per enabled channel. The frame of the chosen channel is converted to plain data
(:func:`scan_frame`) and queued; the sender thread does the rest. Frames emitted by an abort
(truncated) are skipped; subscan frames are skipped unless ``send_subscan``. Drops are counted,
logged to Swift's output every few seconds while they happen, and shown by :func:`status` (type
``from nionswift_plugin import stemwatch_forwarder as f; f.status()`` in Swift's Python console).
"""

from __future__ import annotations

import datetime
import logging
import typing

from streamer.file_common import length_A
from streamer.forwarder import Forwarder, ForwarderSettings, ScanFrame, load_settings

log = logging.getLogger("stemwatch.forwarder")


def scan_frame(xdata: typing.Any, is_subscan_hint: bool = False) -> ScanFrame | None:
    """A :class:`ScanFrame` from a Swift ``DataAndMetadata`` scan image (None if it is not a
    calibrated 2-D image). Pixel size from the x calibration (nm -> A), time from the xdata
    timestamp (naive UTC), dwell/FOV/frame index/channel from ``metadata["hardware_source"]``,
    high tension from ``metadata["instrument"]`` or ``["hardware_source"]``."""
    data = getattr(xdata, "data", None)
    if data is None or data.ndim != 2:
        return None
    cals = list(getattr(xdata, "dimensional_calibrations", []) or [])
    px_A = float("nan")
    if cals:
        px_A = length_A(getattr(cals[-1], "scale", None), getattr(cals[-1], "units", None)) or float("nan")
    md = dict(getattr(xdata, "metadata", {}) or {})
    hs = dict(md.get("hardware_source", {}) or {})
    scan = dict(md.get("scan", {}) or {})
    instrument = dict(md.get("instrument", {}) or {})
    ts = getattr(xdata, "timestamp", None)
    if isinstance(ts, datetime.datetime):
        t = (ts if ts.tzinfo else ts.replace(tzinfo=datetime.timezone.utc)).timestamp()
    else:
        import time
        t = time.time()
    pixel_time_us = float(hs.get("pixel_time_us", scan.get("pixel_time_us", 0.0)) or 0.0)
    line_time_us = float(hs.get("line_time_us", scan.get("line_time_us", 0.0)) or 0.0)
    fov_nm = float(hs.get("fov_nm", scan.get("fov_nm", 0.0)) or 0.0)
    ht = instrument.get("high_tension", hs.get("high_tension", scan.get("high_tension")))
    subscan = bool(is_subscan_hint or scan.get("subscan_fractional_size") or hs.get("subscan_fractional_size"))
    extra: dict = {}
    for k in ("hardware_source_id", "hardware_source_name", "rotation_deg", "center_x_nm", "center_y_nm"):
        v = hs.get(k, scan.get(k))
        if isinstance(v, (str, int, float, bool)):
            extra[f"swift_{k}"] = v
    return ScanFrame(data=data, channel=str(hs.get("channel_name", hs.get("channel_id", ""))),
                     pixel_size_A=px_A, t_acquired=float(t), frame_index=int(hs.get("frame_index", 0) or 0),
                     dwell_s=pixel_time_us * 1e-6, fov_nm=fov_nm,
                     high_tension_V=float(ht) if isinstance(ht, (int, float)) else None,
                     frame_time_s=line_time_us * 1e-6 * data.shape[0], subscan=subscan, meta=extra)


class Attachment:
    """Listens to one scanning hardware source and hands the chosen channel's frames to the forwarder."""

    def __init__(self, hardware_source: typing.Any, forwarder: Forwarder, channel: str):
        self.hardware_source = hardware_source
        self.forwarder = forwarder
        self.channel = channel.strip().lower()
        self.skipped_aborted = 0
        self._listener = hardware_source.xdatas_available_event.listen(self.frame_ready)

    def frame_ready(self, data_promises: typing.Sequence[typing.Any]) -> None:
        """Swift's acquisition thread, once per completed frame: never block here."""
        try:
            if getattr(self.hardware_source, "is_aborted", False):
                self.skipped_aborted += 1           # the truncated frame an abort emits
                return
            for promise in data_promises:
                xdata = promise.xdata
                if xdata is None:
                    continue
                hs = (xdata.metadata or {}).get("hardware_source", {})
                name = str(hs.get("channel_name", hs.get("channel_id", ""))).strip().lower()
                # Swift names the subscan of a channel "<channel> Subscan": same detector, marked subscan
                if name in (self.channel, self.channel + " subscan"):
                    frame = scan_frame(xdata, is_subscan_hint=name != self.channel)
                    if frame is not None:
                        self.forwarder.submit(frame)
                    return
        except Exception:                           # a plug-in must never break acquisition
            log.exception("stemwatch forwarder: frame not forwarded")

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None


class ForwarderPlugIn:
    """What :func:`run` creates: the forwarder and its attachments to scanning hardware sources."""

    def __init__(self, settings: ForwarderSettings, publisher_factory=None):
        from nion.instrumentation import HardwareSource

        self.settings = settings
        self.forwarder = Forwarder(settings, publisher_factory=publisher_factory)
        self.attachments: dict[str, Attachment] = {}
        manager = HardwareSource.HardwareSourceManager()
        self._added = manager.hardware_source_added_event.listen(self._attach)
        self._removed = manager.hardware_source_removed_event.listen(self._detach)
        for hs in list(manager.hardware_sources):
            self._attach(hs)
        log.info("stemwatch forwarder: channel %s -> %s (%s)", settings.channel,
                 self.forwarder.endpoint or settings.endpoint, "bind" if settings.bind else "connect")

    def _attach(self, hardware_source: typing.Any) -> None:
        features = getattr(hardware_source, "features", {}) or {}
        if not features.get("is_scanning"):
            return
        hid = hardware_source.hardware_source_id
        if hid not in self.attachments:
            self.attachments[hid] = Attachment(hardware_source, self.forwarder, self.settings.channel)

    def _detach(self, hardware_source: typing.Any) -> None:
        a = self.attachments.pop(getattr(hardware_source, "hardware_source_id", None), None)
        if a is not None:
            a.close()

    def status(self) -> dict:
        """Forwarder counts plus aborted frames skipped and the attached scan devices."""
        s = self.forwarder.stats()
        s["skipped_aborted"] = sum(a.skipped_aborted for a in self.attachments.values())
        s["attached"] = sorted(self.attachments)
        s["channel"] = self.settings.channel
        return s

    def close(self) -> None:
        for h in (self._added, self._removed):
            h.close()
        for a in self.attachments.values():
            a.close()
        self.attachments.clear()
        self.forwarder.close()


# The one instance Swift's plug-in loader creates through run(); Swift has no other place to keep it.
_plugin: ForwarderPlugIn | None = None


def run() -> None:
    """Called by Swift's plug-in loader after import: read the settings and start forwarding."""
    global _plugin
    if _plugin is not None:
        return
    try:
        settings = load_settings()
    except ValueError as exc:
        log.error("stemwatch forwarder NOT started: %s", exc)
        return
    if not settings.enabled:
        log.info("stemwatch forwarder: disabled in its settings file")
        return
    _plugin = ForwarderPlugIn(settings)


def stop() -> None:
    """Detach and close the socket (what a test or an unloading Swift calls)."""
    global _plugin
    if _plugin is not None:
        _plugin.close()
        _plugin = None


def plugin() -> ForwarderPlugIn | None:
    """The running plug-in instance (None before :func:`run` or after :func:`stop`)."""
    return _plugin


def status() -> dict:
    """Counts of sent / dropped / skipped frames, for Swift's Python console."""
    return _plugin.status() if _plugin is not None else {"running": False}
