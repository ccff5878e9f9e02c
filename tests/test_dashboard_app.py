"""The hub (publish/drain/history) and one tab's document, without a server or browser."""

import threading

import numpy as np
from bokeh.document import Document
from bokeh.protocol import Protocol

from _dashboard_data import Lattice, click_row
from dashboard.app import make_document
from dashboard.state import DashboardHub
from stemwatch.config import DashboardConfig


def _message_bytes(event) -> int:
    msg = Protocol().create("PATCH-DOC", [event])
    n = len(msg.header_json) + len(msg.metadata_json) + len(msg.content_json)
    return n + sum(len(b.to_bytes()) for b in msg.buffers)


def test_publish_coalesces_when_the_display_lags_but_keeps_event_frames():
    hub = DashboardHub(DashboardConfig(history_frames=20))
    lat = Lattice(shape=(64, 64), n_si=2)
    ev_seqs = []
    for seq in range(100):
        ev = []
        if seq in (5, 50):
            ev = [lat.switch(0, seq)]
            ev_seqs.append(seq)
        hub.publish(lat.result(seq, events=ev, image=False), {"seq": seq})
    assert hub.published == 100 and hub.coalesced == 80       # nothing drained: only the newest 20 wait
    assert hub.status()[0] == {"seq": 99}
    hub.drain()
    assert [df.seq for df in hub.history] == list(range(80, 100))
    assert hub.newest().seq == 99
    assert [r.event.frame for r in hub.events] == ev_seqs       # no event lost with its frame
    for r in hub.events:
        assert hub.frame(r.idx).seq == r.event.frame


def test_history_ring_lookup_and_event_frames_outlive_the_ring():
    hub = DashboardHub(DashboardConfig(history_frames=10, max_event_frames=4))
    lat = Lattice(shape=(64, 64), n_si=2)
    for seq in range(30):
        hub.publish(lat.result(seq, events=[lat.switch(1, seq)] if seq == 3 else [], image=False))
        hub.drain()
    lo, hi = hub.idx_range()
    assert hi - lo == 9 and hub.frame(hi).seq == 29 and hub.frame(lo).seq == 20
    ev = hub.events[0]
    assert ev.idx < lo and hub.frame(ev.idx).seq == 3          # kept although it left the ring
    assert hub.frame(5) is None                                # an ordinary old frame is gone


def test_publish_from_many_threads_while_draining():
    hub = DashboardHub(DashboardConfig(history_frames=50))
    lat = Lattice(shape=(64, 64), n_si=1)
    results = [lat.result(i, image=False) for i in range(200)]
    stop = threading.Event()
    errors = []

    def drainer():
        while not stop.is_set():
            try:
                hub.drain()
            except Exception as exc:  # pragma: no cover - the assertion below reports it
                errors.append(exc)

    d = threading.Thread(target=drainer)
    d.start()
    workers = [threading.Thread(target=lambda k=k: [hub.publish(r) for r in results[k::4]]) for k in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    stop.set()
    d.join()
    hub.drain()
    assert not errors
    assert hub.published == 200
    assert hub.next_idx + hub.coalesced == 200
    assert len(hub.history) == min(50, hub.next_idx)


def test_every_update_message_stays_under_one_megabyte():
    hub = DashboardHub(DashboardConfig(max_update_bytes=1_000_000))
    doc = Document()
    tab = make_document(doc, hub)
    events = []
    doc.on_change(events.append)
    for shape, p in (((1024, 1024), 0.1), ((2048, 2048), 0.06)):
        lat = Lattice(shape=shape, pixel_size_A=p, n_si=4)
        hub.publish(lat.result(1, events=[lat.switch(0, 1)]))
        hub.drain()
        events.clear()
        tab.sent_idx = None                                     # as if the browser had acknowledged
        tab._fast_tick()
        sizes = {getattr(getattr(e, "model", None), "name", None): _message_bytes(e) for e in events}
        assert sizes["image_source"] > 100_000                  # the image really went out
        assert sizes["atom_source"] > 10 * len(lat.xy_A)
        assert max(sizes.values()) < 1_000_000
        assert sum(sizes.values()) < 1_000_000                  # the whole frame, too


def test_tab_waits_for_the_browser_acknowledgement_newest_wins():
    hub = DashboardHub(DashboardConfig(ack_timeout_s=60.0))
    doc = Document()
    tab = make_document(doc, hub)
    lat = Lattice(shape=(64, 64), n_si=1)
    hub.publish(lat.result(0))
    hub.drain()
    tab._fast_tick()
    assert tab.pushes == 1 and tab.shown.seq == 0
    for seq in range(1, 6):
        hub.publish(lat.result(seq))
        hub.drain()
        tab._fast_tick()
    assert tab.pushes == 1                                      # no ack yet: nothing more queued
    tab.meta.tags = [tab.shown.idx, tab.shown.seq, 0]           # what the browser's CustomJS sends
    tab._fast_tick()
    assert tab.pushes == 2 and tab.shown.seq == 5               # skipped straight to the newest


def test_event_click_shows_its_frame_highlighted_then_back_to_live():
    hub = DashboardHub(DashboardConfig(ack_timeout_s=0.0))
    doc = Document()
    tab = make_document(doc, hub)
    lat = Lattice(shape=(128, 128), n_si=2)
    for seq in range(40):
        ev = [lat.switch(1, seq)] if seq == 12 else []
        hub.publish(lat.result(seq, events=ev, drift_A=(0.01 * seq, 0.0)))
        hub.drain()
        tab._fast_tick()
    tab._slow_tick()
    assert tab.shown.seq == 39 and tab.live.active
    assert tab.event_source.data["frame"] == [12]
    assert "Si 3→4-fold" in tab.banner.text
    click_row(tab, 0)                                           # the operator clicks the row
    assert not tab.live.active and tab.shown.seq == 12
    assert tab.meta.data["seq"] == [12] and tab.slider.value == tab.shown.idx
    hl = tab.hl_source.data
    assert any(str(lat.si_track(1)) in lab for lab in hl["label"])
    si_x = lat.si_xy_A(1)[0] + 0.12                             # the dopant where frame 12 has it (drift)
    assert min(abs(x - si_x) for x in hl["x"]) < 1e-4
    assert len(hl["x"]) == 1 + 1 + 4                            # event ring + Si + its 4 neighbours
    # live data keeps coming while the operator looks at frame 12
    for seq in range(40, 45):
        hub.publish(lat.result(seq))
        hub.drain()
        tab._fast_tick()
    assert tab.shown.seq == 12
    tab._slow_tick()
    assert tab.slider.end == hub.newest().idx and tab.slider.value == tab.shown.idx
    tab.slider.trigger("value_throttled", None, tab.shown.idx - 5)   # the browser drags the slider back
    assert tab.shown.seq == 7
    tab.live.active = True                                      # "back to live"
    assert tab.shown.seq == 44


def test_click_jumps_to_the_event_the_page_showed_in_that_row_although_rows_moved_meanwhile():
    """The table is newest first: a new event moves every row down. A click computed against the rows the
    page still shows, arriving after the server re-rendered the table, must jump to the event that was
    in that row on the page (it once jumped to whichever event had moved into that row on the server)."""
    hub = DashboardHub(DashboardConfig(ack_timeout_s=0.0))
    tab = make_document(Document(), hub)
    lat = Lattice(shape=(128, 128), n_si=2)
    script = {8: 0, 14: 1, 20: 0}                               # frame -> dopant that switches
    seen = None
    for seq in range(26):
        ev = [lat.switch(script[seq], seq)] if seq in script else []
        hub.publish(lat.result(seq, events=ev))
        hub.drain()
        tab._fast_tick()
        if seq == 16:                                           # the page's table: frames 14, 8
            seen = {k: list(v) for k, v in tab.event_source.data.items()}
    assert seen["frame"] == [14, 8]
    assert tab.event_source.data["frame"] == [20, 14, 8]        # the server has re-rendered since
    aimed = next(r for r in hub.events if r.key == seen["key"][1])
    click_row(tab, 1, seen)                                     # the operator clicks "frame 8" on the page
    assert not tab.live.active
    assert tab.shown.seq == 8 and tab.shown.idx == aimed.idx    # that event's frame, not frame 14's
    assert tab.selected_key == aimed.key
    assert any(f"#{lat.si_track(0)}" in lab for lab in tab.hl_source.data["label"])
    assert f'data-key="{aimed.key}"' in tab.gallery.text
    sel = tab.event_source.selected.indices                     # its row is highlighted in the server's rows
    assert [tab.event_source.data["key"][i] for i in sel] == [aimed.key]
    # the selection's indices alone (resolved against rows that may have moved) never change the view
    tab.event_source.selected.indices = [0]
    assert tab.shown.seq == 8 and tab.selected_key == aimed.key


def test_timeline_has_one_lane_per_dopant_with_its_coordination():
    hub = DashboardHub()
    lat = Lattice(shape=(128, 128), n_si=2)
    for seq in range(10):
        ev = [lat.switch(0, seq)] if seq == 4 else []
        hub.publish(lat.result(seq, events=ev, image=False))
    hub.drain()
    tl = hub.timeline_columns()
    assert set(np.unique(tl["tid"]).tolist()) == {lat.si_track(0), lat.si_track(1)}
    first = tl["tid"] == lat.si_track(0)
    coord_by_frame = dict(zip(tl["x"][first].astype(int).tolist(), tl["coord"][first].tolist()))
    assert coord_by_frame == {s: (3 if s < 4 else 4) for s in range(10)}
    assert hub.timeline_events() == {"x": [4.0], "lane": [float(hub.lanes[lat.si_track(0)])],
                                     "kind": ["si_3_to_4"]}
    lat.series = "next-series"                      # a new series: lanes start again
    hub.publish(lat.result(0, image=False))
    hub.drain()
    tl = hub.timeline_columns()
    assert tl["x"].tolist() == [0.0, 0.0] and hub.timeline_events()["x"] == []


def test_publish_does_not_convert_or_copy():
    hub = DashboardHub()
    lat = Lattice(shape=(512, 512))
    res = lat.result(0)
    hub.publish(res)
    assert hub._pending[-1] is res                              # a reference, converted later on drain
    assert len(hub.history) == 0
    hub.drain()
    assert hub.newest().image.dtype == np.uint8 and not hub._pending


def test_tab_timeline_streams_the_same_cells_as_the_hub():
    hub = DashboardHub()
    tab = make_document(Document(), hub)
    lat = Lattice(shape=(128, 128), n_si=2)
    for seq in range(12):
        ev = [lat.switch(1, seq)] if seq == 5 else []
        hub.publish(lat.result(seq, events=ev, image=False))
        hub.drain()
        if seq % 3 == 0:
            tab._slow_tick()
    tab._slow_tick()
    full = hub.timeline_columns()
    got = tab.tl_source.data
    assert sorted(zip(np.asarray(got["x"]).tolist(), np.asarray(got["tid"]).tolist(), np.asarray(got["coord"]).tolist())) \
        == sorted(zip(full["x"].tolist(), full["tid"].tolist(), full["coord"].tolist()))
    assert len(got["x"]) == 24
    assert tab.tl_events.data["x"] == [5.0]
    assert tab.timeline.yaxis.major_label_overrides == {v: f"Si #{k}" for k, v in hub.lanes.items()}
