"""The Nion Swift plug-in against Nion's simulated STEM (nionswift-usim), headless (issue 16).

Swift is started the way it starts itself (``Application(ui).initialize(load_plug_ins=True)``, with
nionui's headless TestUI): its plug-in manager iterates the ``nionswift_plugin`` namespace package,
loads ``stemwatch_forwarder`` next to usim and the instrumentation kit, and calls its ``run()``,
which reads the settings file named by ``STEMWATCH_SWIFT_SETTINGS``. The usim scan then runs and
stemwatch Receivers take the frames.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import sys
import time

import numpy as np
import pytest

pytest.importorskip("nion.usim_device", reason="the [nion] extra is not installed "
                    "(pip install 'stemwatch[nion]': nionswift, nionswift-instrumentation, nionswift-usim)")

from streamer.receiver import Receiver  # noqa: E402
from streamer.recording import RecordingWriter, iter_frames  # noqa: E402

FOV_NM, SHAPE = 3.2, (48, 64)          # 0.5 A/px over 64 columns


def _wait(cond, timeout_s=60.0, what="condition"):
    """A hang guard: never shorter than tests/_wait.py's MIN_WAIT_S (a busy machine must not fail it)."""
    from _wait import MIN_WAIT_S

    timeout_s = max(float(timeout_s), MIN_WAIT_S)
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class Swift:
    """A headless Nion Swift with all installed plug-ins loaded (module fixture)."""

    def __init__(self):
        self.app = self.hs = self.plugin_module = None

    def start(self, root: pathlib.Path) -> None:
        from nion.instrumentation import HardwareSource
        from nion.swift import Application, Facade
        from nion.ui import TestUI

        class UI(TestUI.UserInterface):
            proxy = None

            def get_data_location(self):
                return str(root)

            def get_document_location(self):
                return str(root)

            def get_configuration_location(self):
                return root

            def get_temporary_location(self):
                return str(root)

        Facade.initialize()
        self.app = Application.Application(UI())
        self.app.initialize(load_plug_ins=True)           # Swift's own plug-in loading
        self.hs = HardwareSource.HardwareSourceManager().get_hardware_source_for_hardware_source_id("usim_scan_device")
        from nionswift_plugin import stemwatch_forwarder
        self.plugin_module = stemwatch_forwarder

    @property
    def plugin(self):
        return self.plugin_module.plugin()

    def configure(self, shape, fov_nm, channels=(0, 1)):
        fp = self.hs.get_current_frame_parameters()
        fp.pixel_size = shape
        fp.fov_nm = fov_nm
        fp.pixel_time_us = 1
        self.hs.set_current_frame_parameters(fp)
        for i in range(4):
            self.hs.set_channel_enabled(i, i in channels)

    def close(self):
        """Stop whatever started (also after a failed start: usim's cameras run non-daemon threads
        that would keep the interpreter alive)."""
        if self.app is None:
            return
        from nionswift_plugin import nion_instrumentation_ui, usim

        if self.hs is not None and self.hs.is_playing:
            self.hs.abort_playing(sync_timeout=5.0)
        usim.stop()
        if self.plugin_module is not None:
            self.plugin_module.stop()
        nion_instrumentation_ui.stop()
        self.app.deinitialize()


class SwiftFrames:
    """What Swift itself delivered (the test's own listener on the same event as the plug-in)."""

    def __init__(self, hs, channel="HAADF"):
        self.hs, self.channel, self.frames = hs, channel, []
        self._l = hs.xdatas_available_event.listen(self._on)

    def _on(self, promises):
        if self.hs.is_aborted:
            return
        for p in promises:
            x = p.xdata
            if x.metadata["hardware_source"]["channel_name"] == self.channel:
                self.frames.append(x)

    def close(self):
        self._l.close()


@pytest.fixture(scope="module")
def swift(tmp_path_factory):
    root = tmp_path_factory.mktemp("swift")
    settings = root / "stemwatch_forwarder.json"
    settings.write_text(json.dumps({"endpoint": "tcp://127.0.0.1:*", "channel": "HAADF",
                                    "queue_frames": 16, "send_timeout_s": 0.2}))
    old = os.environ.get("STEMWATCH_SWIFT_SETTINGS")
    os.environ["STEMWATCH_SWIFT_SETTINGS"] = str(settings)
    # Swift's Application sets the root logger to INFO with its own handler and adds its PlugIns
    # folder to sys.path: put those back afterwards, for the tests that run later in this process
    root_logger = logging.getLogger()
    saved = (root_logger.level, list(root_logger.handlers), list(sys.path))
    # Swift takes the main thread's asyncio loop; an earlier test in this process (a Bokeh/Tornado
    # server) may have left none set (run order differs under pytest-xdist): give it its own
    import asyncio

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    s = Swift()
    try:
        s.start(root)
        assert s.hs is not None, "usim's scan device was not registered"
        assert s.plugin is not None, "Swift did not run the stemwatch plug-in"
        yield s
    finally:
        s.close()
        if not loop.is_closed():
            loop.close()
        asyncio.set_event_loop(asyncio.new_event_loop())     # a usable loop for whatever runs next here
        root_logger.setLevel(saved[0])
        root_logger.handlers[:] = saved[1]
        sys.path[:] = saved[2]
        if old is None:
            os.environ.pop("STEMWATCH_SWIFT_SETTINGS", None)
        else:
            os.environ["STEMWATCH_SWIFT_SETTINGS"] = old


def _connected(rx):
    _wait(lambda: rx.stats()["peers_connected"] >= 1, 10.0, "the receiver to connect")


def test_swift_loads_the_plugin_and_a_receiver_gets_every_haadf_frame(swift, tmp_path):
    assert "usim_scan_device" in swift.plugin.status()["attached"]
    swift.configure(SHAPE, FOV_NM, channels=(0, 1))            # HAADF and MAADF on; HAADF forwarded
    before = swift.plugin.forwarder.stats()
    own = SwiftFrames(swift.hs)
    rec = tmp_path / "swift.swrec"
    writer = RecordingWriter(rec)
    rx = Receiver(swift.plugin.forwarder.endpoint, recorder=writer).start()
    try:
        _connected(rx)
        swift.hs.start_playing()
        _wait(lambda: len(own.frames) >= 12, 30.0, "12 scan frames")
        swift.hs.stop_playing(sync_timeout=10.0)
        _wait(lambda: not swift.hs.is_playing, 10.0, "the scan to stop")
        n_swift = len(own.frames)
        _wait(lambda: swift.plugin.forwarder.stats()["sent"] - before["sent"] >= n_swift, 20.0, "the sender")
        _wait(lambda: rx.stats()["frames_received"] >= n_swift, 20.0, "the receiver")
    finally:
        own.close()
        rx.stop()
        writer.close()
    st = swift.plugin.forwarder.stats()
    assert st["dropped"] - before["dropped"] == 0
    got = list(iter_frames(rec))
    assert len(got) == n_swift
    assert len({f.series for f in got}) == 1
    first_index = got[0].meta["swift_first_frame_index"]
    assert [f.seq for f in got] == list(range(n_swift))                    # order, no gap
    for f, x in zip(got, own.frames):
        hs_md = x.metadata["hardware_source"]
        assert first_index + f.seq == hs_md["frame_index"]
        assert f.data.shape == SHAPE and f.data.dtype == np.float32
        np.testing.assert_array_equal(f.data, x.data)                       # the HAADF pixels themselves
        cal = x.dimensional_calibrations[-1]
        assert cal.units == "nm" and f.pixel_size_A == pytest.approx(cal.scale * 10.0)
        assert f.pixel_size_A == pytest.approx(FOV_NM * 10.0 / SHAPE[1])
        assert f.t_acquired == pytest.approx(x.timestamp.replace(tzinfo=__import__("datetime").timezone.utc).timestamp())
        assert abs(f.t_acquired - time.time()) < 3600                      # UTC, not local time
    m = got[0].meta
    assert m["channel"] == "HAADF" and m["source"] == "nionswift"
    assert m["dwell_s"] == pytest.approx(1e-6) and m["fov_nm"] == pytest.approx(FOV_NM)
    assert m["high_tension_V"] == pytest.approx(own.frames[0].metadata["instrument"]["high_tension"])
    # the MAADF channel was acquired too but is not what was forwarded
    assert not np.array_equal(got[0].data, np.zeros(SHAPE, np.float32))


def test_graphene_si_rendered_through_usim_scan_is_found_by_the_live_service(swift):
    """usim's scan renders stemwatch's sample; the plug-in forwards it; the service `stemwatch serve`
    runs (LiveService: Receiver -> Pipeline, ONNX Runtime) finds both Si with their coordination."""
    from nion.utils import Registry

    from engine.service import LiveService
    from engine.sim.usim_scan import LatticeScanData, install
    from engine.types import SI
    from stemwatch.config import Config

    source = LatticeScanData(seed=3)
    instrument = Registry.get_component("stem_controller")
    install(instrument, source)
    shape, fov_nm = (256, 256), 2.56                                       # 0.1 A/px
    swift.configure(shape, fov_nm, channels=(0,))
    results = []
    svc = LiveService(Config().replace(inference={"backend": "onnx"}), swift.plugin.forwarder.endpoint)
    svc.add_listener(lambda r, status: results.append(r))
    try:
        svc.start()
        _connected(svc.receiver)
        swift.hs.start_playing()
        _wait(lambda: len(results) >= 2, 60.0, "two analysed frames")
        swift.hs.stop_playing(sync_timeout=10.0)
    finally:
        svc.stop()
        del instrument.scan_data_generator.generate_scan_data                # usim's own sample again
    assert source.frames_rendered >= 2
    truth = source.si_positions_px(shape, 0.1)
    for r in results[:2]:
        assert r.error is None and r.frame_shape == shape and r.pixel_size_A == pytest.approx(0.1)
        atoms, coord = r.chemistry.atoms, r.chemistry.coordination
        assert len(atoms) > 200
        for kind, want in (("si3", 3), ("si4", 4)):
            d = np.hypot(*(atoms.xy_px - np.asarray(truth[kind])).T)
            i = int(np.argmin(d))
            assert d[i] < 3.0, f"{kind}: no atom within 0.3 A of the Si"
            assert atoms.species[i] == SI, f"{kind}: the atom there is not read as Si"
            assert coord[i] == want, f"{kind}: coordination {coord[i]}, want {want}"
        assert int((atoms.species == SI).sum()) == 2


def test_analyzer_stopped_mid_scan_acquisition_continues_and_drops_are_counted(swift):
    swift.configure(SHAPE, FOV_NM, channels=(0,))
    own = SwiftFrames(swift.hs)
    before = swift.plugin.forwarder.stats()
    rx = Receiver(swift.plugin.forwarder.endpoint).start()
    try:
        _connected(rx)
        swift.hs.start_playing()
        _wait(lambda: rx.stats()["frames_received"] >= 3, 30.0, "3 frames at the analyzer")
    finally:
        rx.stop()                                                           # the analyzer goes away mid-scan
    n_at_stop = len(own.frames)
    _wait(lambda: len(own.frames) >= n_at_stop + 30, 60.0, "30 more scan frames after the analyzer stopped")
    swift.hs.abort_playing(sync_timeout=10.0)                               # emits one truncated frame
    _wait(lambda: not swift.hs.is_playing, 10.0, "the scan to stop")
    own.close()
    swift.plugin.forwarder.flush(10.0)
    _wait(lambda: (lambda s: s["sent"] + s["dropped"] == s["submitted"])(swift.plugin.forwarder.stats()), 10.0,
          "the sender to finish")
    st = swift.plugin.forwarder.stats()
    status = swift.plugin.status()
    submitted = st["submitted"] - before["submitted"]
    dropped = st["dropped"] - before["dropped"]
    sent = st["sent"] - before["sent"]
    assert submitted == len(own.frames)                                     # every completed frame, none blocked
    assert status["skipped_aborted"] >= 1                                   # the abort's truncated frame: not sent
    assert dropped >= 20 and st["dropped_queue"] > before["dropped_queue"]
    assert sent + dropped == submitted
    # the drops are shown: in the status Swift's console prints and in the log
    assert status["dropped"] == st["dropped"]


def test_subscan_frames_are_not_sent(swift):
    swift.configure(SHAPE, FOV_NM, channels=(0,))
    own = SwiftFrames(swift.hs, channel="HAADF Subscan")           # Swift's name for the subscan of HAADF
    before = swift.plugin.forwarder.stats()
    swift.hs.subscan_enabled = True
    try:
        swift.hs.start_playing()
        _wait(lambda: len(own.frames) >= 5, 30.0, "5 subscan frames")
        swift.hs.stop_playing(sync_timeout=10.0)
        _wait(lambda: not swift.hs.is_playing, 10.0, "the scan to stop")
    finally:
        swift.hs.subscan_enabled = False
        own.close()
    assert own.frames[0].metadata["scan"]["subscan_fractional_size"]
    st = swift.plugin.forwarder.stats()
    assert st["skipped_subscan"] - before["skipped_subscan"] == len(own.frames)
    assert st["submitted"] == before["submitted"] and st["sent"] == before["sent"]
