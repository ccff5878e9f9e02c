"""The dashboard's "statistics" tab: the dopant statistics of the running session (the same as
``stats.json``: transition counts and rates per frame / s / e/A^2 with 95 % intervals, cross-sections,
dwell times, the Markov matrix), refreshed every few seconds, and a "Save report now" button that
writes the session report (one self-contained HTML, :mod:`dashboard.report`) into the recordings
directory.

The statistics come from the controller's ``stats`` (an :class:`engine.stats_live.LiveStats`, the
live service's); they are computed on the tab's executor, never on the Bokeh event loop.
"""

from __future__ import annotations

import html
import os
import time
from functools import partial
from typing import Any

from bokeh.layouts import column, row
from bokeh.models import Button, ColumnDataSource, DataTable, Div, TableColumn, Whisker
from bokeh.plotting import figure

TEXT_STYLE = {"color": "#eceff1"}


def _fmt(x, digits=3) -> str:
    if x is None:
        return "–"
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    return f"{v:.{digits}g}" if v == v else "–"


def _ci(t: dict, key: str) -> str:
    return f"{_fmt(t.get(key))} [{_fmt(t.get(key + '_lo'))}, {_fmt(t.get(key + '_hi'))}]"


def stats_columns(d: dict) -> dict:
    """Table columns (plain lists) of the transitions of a stats dict (``Stats.to_dict()``)."""
    tr = d.get("transitions", [])
    return {"kind": [t["kind"] for t in tr], "count": [t["count"] for t in tr],
            "exposure": [_fmt(t["exposure_frames"]) for t in tr],
            "per_frame": [_ci(t, "rate_per_frame") for t in tr], "per_s": [_ci(t, "rate_per_s") for t in tr],
            "per_dose": [_ci(t, "rate_per_e_per_A2") for t in tr], "barn": [_ci(t, "cross_section_barn") for t in tr]}


def summary_html(d: dict) -> str:
    dose = d.get("dose", {})
    fr = d.get("frames", {})
    dw = "".join(f"<tr><td>{html.escape(k)}</td><td>{_fmt(w['exposure_frames'])}</td><td>{w['exits']}</td>"
                 f"<td>{_fmt(w['mean_frames'])} [{_fmt(w['mean_frames_ci95'][0])}, {_fmt(w['mean_frames_ci95'][1])}]"
                 f"</td><td>{_fmt(w['mean_e_per_A2'])}</td></tr>" for k, w in d.get("dwell", {}).items())
    m = d.get("markov", {"states": [], "counts": []})
    mk = "<tr><th>from \\ to</th>" + "".join(f"<th>{html.escape(s)}</th>" for s in m["states"]) + "</tr>" + "".join(
        f"<tr><th>{html.escape(a)}</th>" + "".join(f"<td>{c}</td>" for c in m["counts"][i]) + "</tr>"
        for i, a in enumerate(m["states"]))
    return (f"<div style='color:#eceff1;font-size:13px'>frames {fr.get('total', 0)} (unknown "
            f"{fr.get('unknown', 0)}), dose {_fmt(dose.get('e_per_A2_per_frame'))} e/Å² per frame "
            f"({html.escape(str(dose.get('source', '')))}), dopant tracks {len(d.get('dopants', []))}"
            f"<h4>dwell per state</h4><table border=1 style='border-collapse:collapse'><tr><th>state</th>"
            f"<th>observed (frames)</th><th>exits</th><th>mean (frames) [95 %]</th><th>mean (e/Å²)</th></tr>{dw}"
            f"</table><h4>Markov matrix (counts)</h4><table border=1 style='border-collapse:collapse'>{mk}</table>"
            "</div>")


class StatsPanel:
    """The widgets of the statistics tab of one browser tab (``session``: the app's TabSession,
    for its doc, controller, executor and the recording-path field)."""

    def __init__(self, session: Any):
        self.session = session
        self.source = ColumnDataSource(stats_columns({}))
        cols = [TableColumn(field="kind", title="transition"), TableColumn(field="count", title="n"),
                TableColumn(field="exposure", title="exposure (frames)"),
                TableColumn(field="per_frame", title="per frame [95 %]"), TableColumn(field="per_s", title="per s"),
                TableColumn(field="per_dose", title="per e/Å²"), TableColumn(field="barn", title="barn [95 %]")]
        self.table = DataTable(source=self.source, columns=cols, width=1100, height=160, index_position=None,
                               name="stats_table")
        self.plot_source = ColumnDataSource({"kind": [], "v": [], "lo": [], "hi": []})
        self.plot = figure(x_range=[], width=520, height=260, title="rate per frame, 95 % interval",
                           tools="save", name="stats_rates", background_fill_color="#37474f",
                           border_fill_color="#263238")
        self.plot.title.text_color = "#eceff1"
        self.plot.axis.major_label_text_color = "#eceff1"
        self.plot.vbar(source=self.plot_source, x="kind", top="v", width=0.6, fill_color="#90caf9")
        self.plot.add_layout(Whisker(source=self.plot_source, base="kind", lower="lo", upper="hi",
                                     line_color="#eceff1"))
        self.summary = Div(text=summary_html({}), width=560, name="stats_summary")
        self.button = Button(label="Save report now", button_type="primary", width=180, name="save_report",
                             disabled=self.live_stats is None)
        self.button.on_click(self.save)
        self.msg = Div(text="", width=900, styles=TEXT_STYLE, name="report_msg")
        head = Div(text="<h3 style='color:#eceff1'>dopant statistics of this session (updated every few seconds)"
                        "</h3>" + ("" if self.live_stats is not None else
                                   "<p style='color:#ffab91'>no live statistics: not connected to a live service</p>"),
                   width=1100)
        self.layout = column(head, self.table, row(self.plot, self.summary), row(self.button, self.msg),
                             styles={"background": "#263238", "padding": "8px"}, sizing_mode="stretch_width")
        self._busy = False
        self._shown_version = -1
        self._last_tick = -1e9
        self.min_period_s = 3.0            # the statistics cost O(observations): not every status tick

    @property
    def live_stats(self):
        return getattr(self.session.controller, "stats", None)

    # ---- periodic (event loop): hand the computation to the executor
    def tick(self) -> None:
        ls = self.live_stats
        ex = self.session.executor
        if ls is None or self._busy or getattr(ls, "version", 0) == self._shown_version:
            return
        now = time.monotonic()
        if ex is not None and now - self._last_tick < self.min_period_s:
            return
        self._last_tick = now
        version = ls.version
        if ex is None:                       # no executor (a document without a server): compute here
            self._show(ls.stats().to_dict(), version)
            return
        self._busy = True
        fut = ex.submit(lambda: ls.stats().to_dict())

        def done(f) -> None:
            self._busy = False
            if not f.cancelled() and f.exception() is None:
                try:
                    self.session.doc.add_next_tick_callback(partial(self._show, f.result(), version))
                except Exception:   # the tab went away
                    pass
        fut.add_done_callback(done)

    def _show(self, d: dict, version: int) -> None:
        self._shown_version = version
        self.source.data = stats_columns(d)
        tr = d.get("transitions", [])
        self.plot.x_range.factors = [t["kind"] for t in tr]
        self.plot_source.data = {"kind": [t["kind"] for t in tr], "v": [t["rate_per_frame"] or 0.0 for t in tr],
                                 "lo": [t["rate_per_frame_lo"] or 0.0 for t in tr],
                                 "hi": [t["rate_per_frame_hi"] or 0.0 for t in tr]}
        self.summary.text = summary_html(d)

    # ---- the button
    def recordings_dir(self) -> str:
        """The service's recordings directory (``serve --recordings-dir``, where the Record control
        writes its takes); never a path typed into the page (issue 14: a peer of the dashboard must not
        choose where the analyzer writes)."""
        d = getattr(self.session.controller, "recordings_dir", None)
        return os.path.abspath(str(d) if d else "recordings")

    def save(self, event: Any = None) -> None:
        """The "Save report now" button: the report is written on the executor (here when none)."""
        ls, ex = self.live_stats, self.session.executor
        if ls is None:
            self.msg.text = "no live statistics to save"
            return
        out_dir = self.recordings_dir()
        if ex is None:
            try:
                self.msg.text = f"report saved: {html.escape(str(save_report_now(ls, out_dir, self.session.controller)))}"
            except Exception as exc:
                self.msg.text = f"report failed: {html.escape(str(exc))}"
            return
        self.msg.text = f"writing the report into {html.escape(out_dir)}…"
        fut = ex.submit(save_report_now, ls, out_dir, self.session.controller)

        def done(f) -> None:
            if f.cancelled():
                return
            text = (f"report saved: {html.escape(str(f.result()))}" if f.exception() is None
                    else f"report failed: {html.escape(str(f.exception()))}")
            try:
                self.session.doc.add_next_tick_callback(partial(setattr, self.msg, "text", text))
            except Exception:
                pass
        fut.add_done_callback(done)


def save_report_now(live_stats, recordings_dir: str, controller: Any = None):
    """The session folder (``report-SERIES-TIME/``) and its report.html under ``recordings_dir``; the
    recording being written (if any, from the controller's status) is named as the report's input."""
    from pathlib import Path

    from dashboard.report import build_report

    recording = None
    try:
        recording = ((controller.status() or {}).get("recorder") or {}).get("path") if controller else None
    except Exception:      # a report without the recording's name is still a report
        recording = None

    series = str(live_stats.acquisition.get("series", "live"))
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in series)[:60]
    d = Path(recordings_dir) / f"report-{safe}-{time.strftime('%Y%m%d-%H%M%S')}"
    live_stats.save_folder(d, recording)
    return build_report(d, d / "report.html")
