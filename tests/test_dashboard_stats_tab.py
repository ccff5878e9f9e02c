"""The dashboard's statistics tab and its "Save report now" button, on a document without a server."""

from __future__ import annotations

from bokeh.document import Document

from _dashboard_data import Lattice
from dashboard.app import make_document
from dashboard.state import DashboardHub
from engine.stats_live import LiveStats


class _Controller:
    """What the tab needs of the live service: its statistics and a status with the recorder."""

    def __init__(self):
        self.stats = LiveStats(dose_e_per_A2=1e5)

    def status(self):
        return {"recorder": {"recording": False, "path": None}}

    def set_paused(self, p):
        pass


def test_statistics_tab_follows_the_session_and_saves_the_report(tmp_path):
    ctl = _Controller()
    hub = DashboardHub()
    tab = make_document(Document(), hub, controller=ctl)
    lat = Lattice(shape=(128, 128), n_si=2)
    for seq in range(30):
        ev = [lat.switch(1, seq)] if seq in (10, 20) else []
        r = lat.result(seq, events=ev)
        ctl.stats.add(r, {"dose_e_per_A2": 1e5})
        hub.publish(r)
    tab._slow_tick()
    panel = tab.stats_panel
    got = dict(zip(panel.source.data["kind"], panel.source.data["count"]))
    assert got == {"3-fold->4-fold": 1, "4-fold->3-fold": 1}
    assert panel.plot.x_range.factors == ["3-fold->4-fold", "4-fold->3-fold"]
    assert "1e+05" in panel.summary.text and "Markov" in panel.summary.text
    # more frames: the tab updates on the next tick
    for seq in range(30, 40):
        ev = [lat.switch(1, seq)] if seq == 32 else []
        ctl.stats.add(lat.result(seq, events=ev), {"dose_e_per_A2": 1e5})
    tab._slow_tick()
    assert dict(zip(panel.source.data["kind"], panel.source.data["count"]))["3-fold->4-fold"] == 2
    # "Save report now" writes into the service's recordings directory, never where the page says
    ctl.recordings_dir = tmp_path / "recs"
    tab.rec_path.value = str(tmp_path / "elsewhere" / "session.swrec")
    panel.save()
    assert not (tmp_path / "elsewhere").exists()
    assert panel.msg.text.startswith("report saved"), panel.msg.text
    reports = list((tmp_path / "recs").glob("report-*/report.html"))
    assert len(reports) == 1
    text = reports[0].read_text()
    assert "3-fold-&gt;4-fold" in text or "3-fold->4-fold" in text
    assert (reports[0].parent / "stats.json").exists() and (reports[0].parent / "gallery.npz").exists()
