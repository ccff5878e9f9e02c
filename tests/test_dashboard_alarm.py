"""Issue 15 criteria 1 and 5 on one tab's document (no server, no browser): only transformations
alarm, acknowledge / mute, severity colour, the log filter and series column, the slider's frame
number, and a new series clearing the banner."""

import dataclasses

import numpy as np

from bokeh.document import Document

from _dashboard_data import Lattice, click_row
from _gallery import assert_si_3_then_4_fold
from dashboard.app import make_document
from dashboard.state import DashboardHub
from stemwatch.config import DashboardConfig


def _feed(hub, tab, lat, seqs, events=None):
    events = events or {}
    for seq in seqs:
        hub.publish(lat.result(seq, events=events.get(seq, []), image=False))
        hub.drain()
        tab._fast_tick()
    tab._slow_tick()


def _bookkeeping(lat, seq):
    e = lat.switch(0, seq)
    lat.switch(0, seq)                                          # leave the lattice as it was
    return dataclasses.replace(e, kind="si_appeared", before="outside field", after="Si", category="")


def test_bookkeeping_never_raises_the_banner_and_is_hidden_from_the_log_by_default():
    hub = DashboardHub(DashboardConfig(ack_timeout_s=0.0))
    tab = make_document(Document(), hub)
    lat = Lattice(shape=(64, 64), n_si=2)
    calm = tab.banner.text
    _feed(hub, tab, lat, range(6), {3: [_bookkeeping(lat, 3)]})
    assert hub.n_events == 1
    assert "alert" not in tab.banner.text and "No unacknowledged transformation" in tab.banner.text
    assert tab.banner.tags == [] and tab.ack.disabled                # no sound trigger, nothing to acknowledge
    assert tab.event_source.data["frame"] == []                      # hidden by the default filter
    tab.show_bookkeeping.active = True
    assert tab.event_source.data["frame"] == [3] and tab.event_source.data["category"] == ["bookkeeping"]
    assert calm


def test_acknowledge_mute_severity_and_series_column():
    hub = DashboardHub(DashboardConfig(ack_timeout_s=0.0))
    tab = make_document(Document(), hub)
    lat = Lattice(shape=(64, 64), n_si=2, series="run-A")
    ev = {4: [lat.switch(0, 4)]}
    _feed(hub, tab, lat, range(8), ev)
    assert "Si 3→4-fold" in tab.banner.text and "frame 4" in tab.banner.text and "series run-A" in tab.banner.text
    assert "#ffb300" in tab.banner.text and 'data-severity="medium"' in tab.banner.text
    assert tab.banner.tags == [1] and not tab.ack.disabled
    assert tab.event_source.data["series"] == ["run-A"]
    tab._on_acknowledge()                                       # the operator clicks "Acknowledge"
    assert "No unacknowledged transformation" in tab.banner.text and tab.ack.disabled
    assert tab.event_source.data["frame"] == [4]                # still in the log
    # a high-severity event: red; then mute its kind: a second one of that kind stays silent
    ej = dataclasses.replace(lat.switch(1, 9), kind="si_lost", before="Si", after="ejected", category="")
    _feed(hub, tab, lat, range(8, 12), {9: [ej]})
    assert "Si lost" in tab.banner.text or "si lost" in tab.banner.text.lower()
    assert 'data-severity="high"' in tab.banner.text and "#ff5252" in tab.banner.text
    tab._on_mute()
    assert "No unacknowledged transformation" in tab.banner.text and "muted" in tab.banner.text
    tags = list(tab.banner.tags)
    ej2 = dataclasses.replace(ej, frame=13, atom_id=ej.atom_id + 1)
    _feed(hub, tab, lat, range(12, 15), {13: [ej2]})
    assert "No unacknowledged transformation" in tab.banner.text and tab.banner.tags == tags
    # another kind still alarms
    _feed(hub, tab, lat, range(15, 18), {16: [lat.switch(0, 16)]})
    assert "Si 4→3-fold" in tab.banner.text and "frame 16" in tab.banner.text
    # the slider's title names the frame on screen
    assert "frame 17" in tab.slider.title


def test_a_new_series_clears_the_banner_and_the_timeline():
    hub = DashboardHub(DashboardConfig(ack_timeout_s=0.0))
    tab = make_document(Document(), hub)
    a = Lattice(shape=(64, 64), n_si=2, series="run-A")
    _feed(hub, tab, a, range(6), {3: [a.switch(0, 3)]})
    assert "frame 3" in tab.banner.text
    b = Lattice(shape=(64, 64), n_si=1, series="run-B", seed=5)
    _feed(hub, tab, b, range(4))
    assert "No unacknowledged transformation" in tab.banner.text
    assert set(tab.tl_source.data["x"].tolist()) <= {0.0, 1.0, 2.0, 3.0} and tab.tl_events.data["x"] == []
    assert "series run-B" in tab.slider.title
    assert tab.event_source.data["series"] == ["run-A"]        # the log keeps the old series, labelled


def test_event_click_shows_before_and_after_crops_the_same_as_analyze_writes(tmp_path):
    import base64
    import io

    from PIL import Image

    from dashboard import gallery

    hub = DashboardHub(DashboardConfig(ack_timeout_s=0.0))
    tab = make_document(Document(), hub)
    lat = Lattice(shape=(128, 128), n_si=2, series="run-A")
    results = []
    for seq in range(10):
        ev = [lat.switch(1, seq)] if seq == 6 else []
        r = lat.result(seq, events=ev, drift_A=(0.05 * seq, 0.0))
        results.append(r)
        hub.publish(r)
        hub.drain()
        tab._fast_tick()
    tab._slow_tick()
    row = hub.events[-1]
    assert hub.gallery_png(row) is not None
    assert "click an event" in tab.gallery.text                 # drawn only when asked (~200 kB a picture)
    click_row(tab, 0)                                           # the operator clicks the row
    assert f'data-key="{row.key}"' in tab.gallery.text
    png = base64.b64decode(tab.gallery.text.split("base64,")[1].split('"')[0])
    pic = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    assert_si_3_then_4_fold(pic)          # the dopant drawn 3-fold (red) before, 4-fold (yellow) after
    # analyze's writer draws the same picture from the same results
    w = gallery.GalleryWriter(tmp_path)
    for r in results[:7]:
        w.write(r)
    assert w.written == [gallery.file_name(row.event)]
    on_disk = np.asarray(Image.open(tmp_path / "gallery" / w.written[0]).convert("RGB"))
    assert np.array_equal(on_disk, pic)
