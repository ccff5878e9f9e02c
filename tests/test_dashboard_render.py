"""Display conversion and status formatting (no server, no browser)."""

import numpy as np
import pytest

from _dashboard_data import Lattice
from dashboard import render
from dashboard.render import ATOM_CATEGORIES, atom_category, display_frame, to_uint8
from dashboard.status import status_html, summarize
from engine.types import SI


def test_uint8_conversion_keeps_orientation_and_maps_robust_range():
    img = np.zeros((64, 96), np.float32)
    img[5, 70] = 1.0                      # one bright pixel, top right
    img[40:, :] = 0.5                     # lower part grey
    u8, (lo, hi) = to_uint8(img)
    assert u8.dtype == np.uint8 and u8.shape == (64, 96)
    assert u8[50, 10] > u8[10, 10]        # rows stay rows (row 0 = top)
    assert lo == pytest.approx(0.0) and 0.5 <= hi <= 1.0
    b, _ = to_uint8(img, bin_factor=4)
    assert b.shape == (16, 24)
    assert b[12, 2] > b[2, 2]


def test_uint8_survives_nan_and_constant_frames():
    img = np.full((32, 32), 7.0)
    img[0, 0] = np.nan
    u8, (lo, hi) = to_uint8(img)
    assert hi > lo and u8.dtype == np.uint8
    u8, _ = to_uint8(np.full((8, 8), np.nan))
    assert (u8 == 0).all()


def test_atom_categories_follow_species_coordination_and_edge():
    sp = np.array([0, 0, 0, SI, SI, SI, 2])
    co = np.array([3, 2, 2, 3, 4, 5, 3])
    border = np.array([False, False, True, False, False, False, False])
    cat = atom_category(sp, co, border)
    names = [ATOM_CATEGORIES[c] for c in cat]
    assert names == ["C (3 bonds)", "C (other)", "C at edge", "Si 3-fold", "Si 4-fold", "Si (other)", "other heavy"]


@pytest.mark.parametrize("shape,p", [((256, 256), 0.1), ((1024, 1024), 0.1), ((2048, 1536), 0.05)])
def test_display_frame_fits_update_budget_and_places_atoms_in_angstrom(shape, p):
    lat = Lattice(shape=shape, pixel_size_A=p, n_si=3)
    res = lat.result(7)
    df = display_frame(res, idx=3, max_update_bytes=1_000_000)
    assert df.payload_bytes() < 1_000_000 - render.JSON_OVERHEAD_BYTES
    assert df.n_atoms == len(lat.xy_A)
    np.testing.assert_allclose(df.atoms["x"], lat.xy_A[:, 0], atol=1e-4)
    np.testing.assert_allclose(df.atoms["y"], lat.xy_A[:, 1], atol=1e-4)
    H, W = shape
    assert df.image.shape == (H // df.bin_factor, W // df.bin_factor)
    f = df.bin_factor
    rest = df.payload_bytes() - df.image.nbytes
    if f > 1:   # the smallest binning that fits: one less would not
        assert (H // (f - 1)) * (W // (f - 1)) + rest > 1_000_000 - render.JSON_OVERHEAD_BYTES
    else:
        assert H * W <= 256 * 256
    # the Si sites are the brightest spots of the displayed image
    k = 0
    x, y = lat.si_xy_A(k)
    r, c = int(round(y / p / df.bin_factor)), int(round(x / p / df.bin_factor))
    assert df.image[r, c] > np.percentile(df.image, 95)
    assert sorted(df.si_track.tolist()) == sorted(lat.si_track(i) for i in range(3))


def test_bonds_dropped_before_the_budget_is_exceeded():
    lat = Lattice(shape=(1024, 1024), pixel_size_A=0.1)
    res = lat.result(0)
    tight = display_frame(res, 0, max_update_bytes=len(lat.xy_A) * render.ATOM_BYTES + 150_000)
    assert tight.bonds is None                    # atoms kept, bonds dropped, image binned
    assert tight.payload_bytes() < len(lat.xy_A) * render.ATOM_BYTES + 150_000
    roomy = display_frame(res, 0)
    assert roomy.bonds is not None and roomy.bonds["x0"].shape[0] == len(res.chemistry.bonds)


def test_highlight_rings_cover_the_event_track_and_its_defect():
    lat = Lattice(n_si=2)
    ev = lat.switch(1, seq=4)
    df = display_frame(lat.result(4, events=[ev]), 0)
    hl = render.highlight_columns(df, [ev])
    members = np.flatnonzero(df.atoms["defect"] == df.atoms["defect"][df.atoms["tid"] == ev.atom_id][0])
    assert len(hl["x"]) == members.size + 1           # each member + the labelled event ring
    assert hl["label"][-1].startswith("Si 3→4-fold") and str(ev.atom_id) in hl["label"][-1]
    assert hl["x"][-1] == pytest.approx(ev.x_A)


def test_event_table_newest_first_with_readable_kinds():
    lat = Lattice(n_si=2)
    rows = [render.EventRow(k + 1, k, "s", lat.switch(k % 2, seq=10 * k), 0.0) for k in range(3)]
    cols = render.event_table_columns(rows)
    assert cols["key"] == [3, 2, 1]
    assert cols["frame"] == [20, 10, 0]
    assert cols["kind"] == ["Si 4→3-fold", "Si 3→4-fold", "Si 3→4-fold"]   # dopant 0 switched back last
    assert cols["change"][0] == "4-fold → 3-fold"


def test_log_palette_is_a_monotone_resampling():
    from dashboard.app import PALETTES, log_palette

    gray = PALETTES["gray"]
    lg = log_palette(gray)
    idx = [gray.index(c) for c in lg]
    assert len(lg) == 256 and idx[0] == 0 and idx[-1] == 255
    assert all(b >= a for a, b in zip(idx, idx[1:]))
    assert idx[25] > 25                              # dark values are stretched


def test_status_reads_nested_keys_and_flags_problems():
    status = {"receiver": {"endpoint": "tcp://10.0.0.5:5555", "series": "run42", "fps": 5.0,
                           "dropped_for_analysis": 12, "gap_count": 2, "missing_frames": 7, "stalls": 1,
                           "stalled": True, "malformed": {"bad dtype": 3}},
              "analysed_fps": 4.1, "backend": "ONNX Runtime CPU (2 threads)",
              "latency_s": {"infer": {"p50": 0.05, "p99": 0.09}, "total": {"p50": 0.12, "p99": 1.4}},
              "recorder": {"recording": True, "path": "/data/r.swrec", "written": 100, "lost": 0}}
    s = summarize(status, {"display_fps": 4.0})
    assert s["endpoint"] == "tcp://10.0.0.5:5555" and s["malformed"] == 3 and s["gaps"] == 2
    html = status_html(status, {"display_fps": 4.0, "last_frame_age_s": 9.0})
    assert "STALLED" in html and "run42" in html and "bad dtype: 3" in html
    assert "total 120 / 1400" in html and "/data/r.swrec" in html and "ONNX Runtime CPU" in html
    calm = status_html({"backend": "x"}, {"last_frame_age_s": 0.1})
    assert "LIVE" in calm and "STALLED" not in calm
    assert "WAITING FOR DATA" in status_html({}, {})
    assert "ANALYSIS PAUSED" in status_html({"paused": True}, {"last_frame_age_s": 0.1})


def test_status_shows_latency_after_arrival_for_replayed_frames():
    status = {"latency_s": {"received": {"p50": 300.0, "p99": 300.2}, "tracking": {"p50": 300.1, "p99": 300.4}}}
    html = status_html(status, {"display_p50_s": 300.3, "display_p99_s": 300.9, "last_frame_age_s": 0.1})
    assert "frames arrive 300 s after t_acquired" in html
    assert "tracking 100 / 400" in html and "display (this tab) 300 / 900" in html
    live = status_html({"latency_s": {"received": {"p50": 0.01, "p99": 0.02}}}, {"last_frame_age_s": 0.1})
    assert "received 10 / 20" in live and "replay" not in live
    # a service that already times from arrival and says by how much
    svc = {"clock_offset_s": 120.0, "latency_s": {"received": {"p50": 0.002, "p99": 0.004},
                                                   "tracking": {"p50": 0.05, "p99": 0.08}}}
    html = status_html(svc, {"display_p50_s": 120.2, "display_p99_s": 120.3, "last_frame_age_s": 0.1})
    assert "frames arrive 120 s after t_acquired" in html and "from arrival" in html
    assert "received 2 / 4" in html and "tracking 50 / 80" in html and "display (this tab) 200 / 300" in html


def test_banner_keeps_recent_events_in_view():
    lat = Lattice(n_si=2)
    rows = [render.EventRow(k + 1, k, "s", lat.switch(k, seq=10 + k), 100.0 + k) for k in range(2)]
    html = render.banner_html(rows[1], 2, 103.0, True, earlier=[rows[0]])
    assert "flash0" in html and f"#{rows[1].event.atom_id}" in html
    assert f"also: Si 3→4-fold #{rows[0].event.atom_id} (frame 10, 3 s ago)" in html
    assert "No transformation yet" in render.banner_html(None, 0, 0.0, False)
