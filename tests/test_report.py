"""stemwatch report: one self-contained offline HTML from an analysis; headless Chromium opens it
without console errors."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

from tests._browser import chromium, js, severe_console_errors, wait_for
from tests._gallery import assert_si_3_then_4_fold


@pytest.fixture(scope="module")
def analysis(tmp_path_factory):
    """The bundled switching movie, frames 0-13 (the Si goes 3 -> 4-fold at frame 8), analysed once."""
    from engine.analyze import analyze_file

    out = tmp_path_factory.mktemp("report") / "a"
    analyze_file("replay_data/01_switching_256.swrec", out, limit=14, progress=False)
    return out


@pytest.fixture(scope="module")
def report_html(analysis):
    """`stemwatch report DIR --out r.html` on the analysis (built once for the tests below)."""
    from stemwatch.cli import main

    html_path = analysis.parent / "r.html"
    assert main(["report", str(analysis), "--out", str(html_path), "--quiet"]) == 0
    return html_path


def test_report_is_one_self_contained_file_with_every_section(report_html):
    text = report_html.read_text()
    assert len(text) < 25e6
    # offline: BokehJS inline, no script or stylesheet fetched from anywhere
    assert not re.search(r"<script[^>]+src=", text) and "cdn.bokeh.org" not in text
    for name in ("acquisition", "statistics", "timeline", "cross_sections", "markov", "representative"):
        assert f'"name":"{name}"' in text.replace(" ", ""), name
    assert "3-fold-&gt;4-fold" in text or "3-fold->4-fold" in text
    assert text.count("data:image/png;base64,") >= 3       # gallery crops (before/after) + the frame
    assert "100000" in text or "1e+05" in text             # the dose from the recording's metadata


def test_report_gallery_is_the_dashboards_before_after_picture(report_html):
    """One gallery: the report embeds the picture dashboard.gallery.render draws (as the dashboard and
    `analyze --gallery`), atoms coloured by coordination: the switching Si 3-fold (red) before, 4-fold
    (yellow) after (the old report drew its own crops, coloured by species only)."""
    import base64
    import io

    from PIL import Image

    text = report_html.read_text().replace("\\u0027", "'")
    cells = text.split("class='gallery-item'")[1:]
    assert cells and "si_3_to_4" in cells[0]
    png = base64.b64decode(re.search(r"base64,([A-Za-z0-9+/=]+)", cells[0]).group(1))
    assert_si_3_then_4_fold(np.asarray(Image.open(io.BytesIO(png)).convert("RGB")))


@pytest.mark.slow
def test_report_of_a_recording_analyses_it_first(tmp_path):
    from stemwatch.cli import main

    rec = tmp_path / "sw.swrec"
    shutil.copy("replay_data/01_switching_256.swrec", rec)
    out = tmp_path / "sw.html"
    assert main(["report", str(rec), "--out", str(out), "--quiet", "--dose", "5e4"]) == 0
    stats = json.loads((tmp_path / "sw.analysis" / "stats.json").read_text())
    assert stats["dose"]["source"] == "--dose option"
    assert {t["kind"]: t["count"] for t in stats["transitions"]} == {"3-fold->4-fold": 2, "4-fold->3-fold": 2}
    assert out.stat().st_size > 100_000


def test_report_bad_input_is_one_line_and_status_2(tmp_path, capsys):
    from stemwatch.cli import main

    assert main(["report", str(tmp_path / "missing")]) == 2
    assert main(["report", str(tmp_path)]) == 2                # a folder that is not an analysis
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(x.startswith("stemwatch report: ") for x in err)


def test_report_opens_in_headless_chromium_without_console_errors(report_html, tmp_path):
    path = report_html
    with chromium(1200, 1600) as drv:
        drv.get(path.resolve().as_uri())
        wait_for(lambda: js(drv, "return Bokeh.documents.length > 0 && model('timeline') !== undefined"),
                 timeout_s=60, what="the report's Bokeh document")
        # every figure has rendered a canvas
        wait_for(lambda: js(drv, "return deep('canvas').length >= 6"), timeout_s=60, what="figures drawn")
        quads = js(drv, "return model('timeline').renderers[0].data_source.data['state'].length")
        assert quads >= 2                          # 3-fold, then 4-fold runs of the switching Si
        shot = tmp_path / "report.png"
        drv.save_screenshot(str(shot))
        errors = severe_console_errors(drv)
    assert errors == []
    assert shot.stat().st_size > 20_000


def test_report_of_a_folder_with_a_frame_health_verdict(tmp_path):
    """frames.csv with a `usable` / `verdict` column (what the frame-health stage will write): frames not
    usable are unknown for the dopants and the verdicts are counted; no atoms.csv or input needed."""
    from dashboard.report import build_report

    d = tmp_path / "a"
    d.mkdir()
    rows = ["frame,t_acquired,error,usable,verdict"]
    for f in range(20):
        bad = f in (5, 6)
        rows.append(f"{f},{f * 0.2:.1f},,{0 if bad else 1},{'blurred' if bad else 'ok'}")
    (d / "frames.csv").write_text("\n".join(rows) + "\n")
    dop = ["frame,track,state,x,y,formula"] + [f"{f},7,{'3-fold' if f < 10 else '4-fold'},50.0,60.0,Si1C3"
                                               for f in range(20)]
    (d / "dopants.csv").write_text("\n".join(dop) + "\n")
    (d / "summary.json").write_text(json.dumps({"acquisition": {"series": "s", "pixel_size_A": 0.1,
                                                                "pixel_size_source": "test", "meta": {"x": 1}}}))
    text = build_report(d, dose_e_per_A2=1e5).read_text()
    assert "verdict: blurred" in text and "verdict: ok" in text
    from engine import stats as S

    st, h = S.stats_from_dir(d, 1e5)
    assert st.frames_usable == 18
    assert h.dense()[0, 5] == S.UNKNOWN
    assert [(t["kind"], t["count"]) for t in st.transitions()] == [("3-fold->4-fold", 1)]
    assert "No event crops" in text and "No representative frame" in text


def test_report_survives_a_dead_patched_curdoc_left_by_a_failed_bokeh_callback():
    """bokeh's patch_curdoc does not pop its entry when the callback inside it raises: one failed
    dashboard callback in the process left a dead document on bokeh's stack and every later report
    (the CLI's and the dashboard's "Save report now") failed with "Patched curdoc has been
    previously destroyed" (seen in `make test` with both cores busy)."""
    import weakref

    from bokeh.io import doc as bokeh_doc
    from bokeh.document import Document
    from bokeh.layouts import column
    from bokeh.models import Div

    from dashboard.report import standalone_html

    dead = Document()
    bokeh_doc._PATCHED_CURDOCS.append(weakref.ref(dead))
    del dead
    try:
        html = standalone_html(column(Div(text="dopant statistics")), "t")
    finally:
        bokeh_doc._PATCHED_CURDOCS.pop()
    assert "dopant statistics" in html and html.lstrip().lower().startswith("<!doctype html>")
