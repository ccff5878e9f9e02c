"""The Bokeh document of one browser tab: layout, client-side display options, and the per-tab
update loop that pulls from the shared :class:`~dashboard.state.DashboardHub`.

Update model (one tab): a periodic callback every ``display_period_s`` pushes the newest frame if
the tab has shown the previous one (the browser acknowledges each frame it received by setting
``meta.tags``; a tab that has not acknowledged within ``ack_timeout_s`` gets the next one
anyway). A slow or stalled browser therefore receives fewer frames (newest wins) and never
queues an unbounded backlog on the server; nothing it does reaches the analysis thread.
A second periodic callback every ``status_period_s`` refreshes the status panel, the timeline
and the slider. New events are checked on every fast tick, so an alert reaches the page within
one display period plus the network.
"""

from __future__ import annotations

import collections
import logging
import time
from concurrent.futures import Executor
from functools import partial
from typing import Any

import numpy as np
from bokeh.document import Document
from bokeh.layouts import column, row
from bokeh.models import HTMLTemplateFormatter
from bokeh.models import (Button, Checkbox, ColumnDataSource, CustomJS, CustomJSHover, DataTable, Div,
                          FixedTicker, GlobalInlineStyleSheet, HoverTool, InlineStyleSheet, LinearColorMapper, Metric, Range1d, RangeSlider,
                          ScaleBar, Select, Slider, Span, Spinner, TableColumn, TextInput, Toggle)
from bokeh.palettes import Greys256, Inferno256, Magma256, Viridis256
from bokeh.plotting import figure
from bokeh.transform import linear_cmap

from dashboard import alarm, render
from dashboard.render import ATOM_CATEGORIES, ATOM_COLORS, DisplayFrame
from dashboard.state import DashboardHub
from dashboard.status import get, status_html
from stemwatch.config import DashboardConfig, EventConfig

log = logging.getLogger(__name__)

PALETTES = {"gray": list(Greys256), "viridis": list(Viridis256), "inferno": list(Inferno256),
            "magma": list(Magma256)}
#: Events this recent (s) are listed under the newest one in the banner.
RECENT_ALERT_S = 10.0
#: Coordination colours on the timeline: same colours as the Si atoms on the image.
COORD_PALETTE = ["#9e9e9e", "#9e9e9e", ATOM_COLORS[2], ATOM_COLORS[3], ATOM_COLORS[4]]   # <=1,2,3,4,>=5


def log_palette(palette: list[str], k: float = 50.0) -> list[str]:
    """The same colours re-spaced so that a linear mapper shows log(1 + k t) of the value t."""
    n = len(palette)
    t = np.linspace(0.0, 1.0, n)
    idx = np.round((n - 1) * np.log1p(k * t) / np.log1p(k)).astype(int)
    return [palette[i] for i in idx]


CSS = """
:host { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
.banner { padding: 8px 14px; border-radius: 6px; font-size: 17px; line-height: 1.35; }
.banner.calm { background: #1e2a33; color: #b0bec5; }
.banner.alert { color: #111; background: #ffb300; }
.banner.steady { }
.banner .sev { font-size: 13px; font-weight: 600; text-transform: uppercase; }
.banner .muted { opacity: 0.75; font-size: 14px; }
.banner.flash0 { animation: flash0 2.4s ease-out 1 forwards; }
.banner.flash1 { animation: flash1 2.4s ease-out 1 forwards; }
@keyframes flash0 { 0%, 20%, 40% { background: #ff1744; color: #fff; } 10%, 30% { background: #ffd600; color: #111; }
                    100% { color: #111; } }
@keyframes flash1 { 0%, 20%, 40% { background: #ff1744; color: #fff; } 10%, 30% { background: #ffd600; color: #111; }
                    100% { color: #111; } }
.status { font-size: 13px; color: #ddd; }
.status .pill { display: inline-block; padding: 3px 10px; border-radius: 10px; font-weight: 600;
                margin-bottom: 6px; }
.pill.ok { background: #1b5e20; color: #e8f5e9; }
.pill.warn { background: #ff8f00; color: #111; }
.pill.bad { background: #c62828; color: #fff; }
.status table { border-collapse: collapse; width: 100%; }
.status th { text-align: left; font-weight: 500; color: #90a4ae; padding: 3px 8px 3px 0;
             vertical-align: top; width: 38%; }
.status td { padding: 3px 0; }
.status td.warn, .status span.warn { color: #ffb300; font-weight: 600; }
.status td.bad { color: #ff5252; font-weight: 700; }
.status td.rec { color: #ff5252; }
.info { font-size: 13px; color: #cfd8dc; }
.msg { font-size: 13px; color: #ffb300; min-height: 1.2em; }
.legend { font-size: 12px; color: #eceff1; display: flex; flex-wrap: wrap; gap: 4px 14px; }
.legend .item { display: inline-flex; align-items: center; gap: 5px; }
.legend .sw { display: inline-block; }
h4 { margin: 6px 0 2px 0; color: #90a4ae; font-weight: 600; font-size: 13px; text-transform: uppercase;
     letter-spacing: 0.05em; }
"""

BEEP_JS = """
if (!sound.active) { return; }
const AC = window.AudioContext || window.webkitAudioContext;
if (!AC) { return; }
window._stemwatch_ac = window._stemwatch_ac || new AC();
const ac = window._stemwatch_ac;
const o = ac.createOscillator(), g = ac.createGain();
o.frequency.value = 880; o.connect(g); g.connect(ac.destination);
g.gain.setValueAtTime(0.25, ac.currentTime);
g.gain.exponentialRampToValueAtTime(0.001, ac.currentTime + 0.5);
o.start(); o.stop(ac.currentTime + 0.5);
"""


#: Runs in the page when the event table's selection changes: the operator's click is resolved there,
#: against the rows the page shows, and its event key (not the row index) goes to the server on
#: ``event_pick.tags`` = [key, counter]. A row index could name another event by the time the
#: server reads it: the table is newest first and re-rendered as events arrive, so rows move down.
#: ``event_pick.data.key`` is the event the server has selected (0: none): the server's own
#: highlighting of that row changes the selection too, and is not echoed back as a click.
PICK_JS = """
const i = cb_obj.indices;
if (i.length === 0) { return; }
const key = src.data.key[i[0]];
if (key === undefined || key === pick.data.key[0]) { return; }
pick.tags = [key, (pick.tags.length > 1 ? pick.tags[1] : 0) + 1];
"""


def legend_html(items: list[tuple[str, str | None, float]]) -> str:
    """A compact HTML legend: (label, colour, marker size px; -1 square swatch) per entry;
    colour None draws a dashed square (defect), "ring" a red ring (event), "tri" a triangle."""
    parts = []
    for label, color, size in items:
        if color is None:
            sw = '<span class="sw" style="border:1.5px dashed #fff;width:11px;height:11px"></span>'
        elif color == "ring":
            sw = '<span class="sw" style="border:2.5px solid #ff1744;border-radius:50%;width:10px;height:10px"></span>'
        elif color == "tri":
            sw = '<span class="sw" style="color:#fff">▼</span>'
        elif size < 0:
            sw = f'<span class="sw" style="background:{color};width:12px;height:12px"></span>'
        else:
            d = max(6, int(size * 0.75))
            sw = (f'<span class="sw" style="background:{color};border:1px solid #000;border-radius:50%;'
                  f'width:{d}px;height:{d}px"></span>')
        parts.append(f'<span class="item">{sw}{label}</span>')
    return f'<div class="legend">{"".join(parts)}</div>'


class TabSession:
    """One browser tab's document and its update loop (runs on the server's event-loop thread).

    hub : the shared state; controller : the live service or None (controls disabled);
    executor : where controller calls run, so that the event loop never waits on the service.
    """

    def __init__(self, doc: Document, hub: DashboardHub, controller: Any = None,
                 executor: Executor | None = None, cfg: DashboardConfig | None = None,
                 registry: set | None = None):
        self.doc = doc
        self.hub = hub
        self.controller = controller
        self.executor = executor
        self.cfg = cfg or hub.cfg
        self.registry = registry
        self.shown: DisplayFrame | None = None
        self.shown_events_version = -1
        self.shown_timeline_version = -1
        self.tl_series: str | None = None
        self.tl_last_idx = -1
        self.tl_events_version = -1
        self.tl_lanes_key: tuple = (None, -1)
        self.field: tuple[float, float, float] | None = None
        self.sent_idx: int | None = None
        self.sent_t = 0.0
        self.acked_idx: int | None = None
        self.ack_times: collections.deque = collections.deque(maxlen=200)
        self.ack_latency: collections.deque = collections.deque(maxlen=200)
        self.pushes = 0
        self.last_event_key = 0
        self.selected_key: int | None = None
        self.alarm = alarm.AlarmState()       # this tab's acknowledgements and muted kinds
        self.last_alarm_key = 0               # newest alarm that flashed the banner (and beeped)
        self.banner_key = 0                   # the event the banner shows (0: none)
        self._quiet = False            # True while the server itself sets widget values
        self._seen_thresholds: tuple = ((), None)
        self._build()
        if registry is not None:
            registry.add(self)
        doc.on_session_destroyed(self._destroyed)
        self._fast_cb = doc.add_periodic_callback(self._fast_tick, int(1000 * self.cfg.display_period_s))
        self._slow_cb = doc.add_periodic_callback(self._slow_tick, int(1000 * self.cfg.status_period_s))
        self._fast_tick()
        self._slow_tick()

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        css = InlineStyleSheet(css=CSS)
        doc = self.doc
        doc.title = "stemwatch · live lattice"
        self.image_source = ColumnDataSource({"image": [np.zeros((1, 1), np.uint8)], "x": [0.0], "y": [0.0],
                                              "dw": [1.0], "dh": [1.0], "seq": [-1], "idx": [-1]},
                                             name="image_source")
        self.atom_source = ColumnDataSource({k: np.zeros(0, np.float32) for k in
                                             ("x", "y", "cat", "sp", "coord", "tid", "conf", "defect", "size", "alpha")},
                                            name="atom_source")
        self.bond_source = ColumnDataSource({k: np.zeros(0, np.float32) for k in ("x0", "y0", "x1", "y1")},
                                            name="bond_source")
        self.defect_source = ColumnDataSource({"x": [], "y": [], "kind": [], "formula": [], "motif": [], "n": [],
                                               "label": []},
                                              name="defect_source")
        self.hl_source = ColumnDataSource({"x": [], "y": [], "label": [], "r": [], "lx": [], "ly": [], "align": []},
                                          name="highlight_source")
        # updated last in every frame push; the browser echoes its seq/idx in tags = acknowledgement
        self.meta = ColumnDataSource({"seq": [-1], "idx": [-1], "t": [0.0]}, name="frame_meta")
        self.meta.js_on_change("data", CustomJS(args={"m": self.meta}, code=
                                                "m.tags = [m.data.idx[0], m.data.seq[0], Date.now()];"))
        self.meta.on_change("tags", self._on_ack)
        self.image_source.tags = [self.meta]           # keeps meta in the document

        self.mapper = LinearColorMapper(palette=PALETTES["gray"], low=0, high=255, name="image_mapper")
        p = figure(name="frame_plot", frame_width=600, frame_height=600, x_range=Range1d(0, 1),
                   y_range=Range1d(1, 0), tools="pan,wheel_zoom,box_zoom,reset,save", active_scroll="wheel_zoom",
                   match_aspect=True, x_axis_label="x (Å)", y_axis_label="y (Å)", title="waiting for frames…",
                   background_fill_color="#111", border_fill_color="#263238", outline_line_color=None)
        p.title.text_color = "#eceff1"
        p.title.text_font_size = "14px"
        for ax in (p.xaxis, p.yaxis):
            ax.axis_label_text_color = "#b0bec5"
            ax.major_label_text_color = "#b0bec5"
        p.grid.visible = False
        p.toolbar.logo = None
        self.plot = p
        p.image(image="image", x="x", y="y", dw="dw", dh="dh", color_mapper=self.mapper, source=self.image_source,
                name="frame_image")
        self.bond_r = p.segment("x0", "y0", "x1", "y1", source=self.bond_source, line_color="#b2ebf2",
                                line_alpha=0.45, line_width=1.2, name="bonds")
        atom_r = p.scatter("x", "y", source=self.atom_source, size="size", name="atoms",
                           fill_color=linear_cmap("cat", list(ATOM_COLORS), -0.5, len(ATOM_COLORS) - 0.5),
                           line_color="#000", line_width=0.6, fill_alpha="alpha", line_alpha="alpha")
        self.atom_r = atom_r
        p.scatter("x", "y", source=self.defect_source, marker="square", size=30, fill_alpha=0,
                  line_color="#ffffff", line_width=1.5, line_dash="dashed", name="defects")
        p.text("x", "y", text="label", source=self.defect_source, x_offset=17, y_offset=-17,
               text_color="#ffffff", text_font_size="12px", text_font_style="bold",
               background_fill_color="#000", background_fill_alpha=0.45)
        p.circle("x", "y", radius="r", source=self.hl_source, fill_alpha=0, line_color="#ff1744", line_width=2.5,
                 name="highlight")
        p.text("lx", "ly", text="label", source=self.hl_source, text_color="#d50000", text_baseline="bottom",
               text_align="align",
               text_font_size="13px", text_font_style="bold", background_fill_color="#fff",
               background_fill_alpha=0.85)
        sp_fmt = CustomJSHover(code="return ['C','Si','other'][value] || '?';")
        def_fmt = CustomJSHover(args={"d": self.defect_source}, code=(
            "if (value < 0 || value >= d.data.kind.length) { return '—'; }"
            "return d.data.kind[value] + ' ' + d.data.formula[value] + (d.data.motif[value] ? ' (' + "
            "d.data.motif[value] + ')' : '');"))
        p.add_tools(HoverTool(renderers=[atom_r], tooltips=[
            ("track", "@tid"), ("species", "@sp{custom}"), ("bonds", "@coord"), ("confidence", "@conf{0.00}"),
            ("x, y (Å)", "@x{0.0}, @y{0.0}"), ("defect", "@defect{custom}")],
            formatters={"@sp": sp_fmt, "@defect": def_fmt}))
        p.add_layout(ScaleBar(range=p.x_range, unit="Å", location="bottom_right", bar_length=0.22,
                              dimensional=Metric(base_unit="Å", include=["Å"],
                                                 ticks=[1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]),
                              background_fill_color="#000", background_fill_alpha=0.55,
                              bar_line_color="#fff", bar_line_width=3, label_text_color="#fff",
                              label_text_font_size="13px", border_line_color=None))

        # ---- history slider
        self.slider = Slider(start=0, end=1, value=0, step=1, title="history (frame index)", width=500,
                             name="history_slider", disabled=True)
        self.slider.on_change("value_throttled", self._on_slider)
        self.live = Toggle(label="● Live", active=True, button_type="success", width=110, name="live_toggle")
        self.live.on_change("active", self._on_live)
        self.info = Div(text="", width=640, stylesheets=[css], name="frame_info")
        self.gallery = Div(text=self._gallery_html(None), width=640, stylesheets=[css], name="gallery")
        self.gallery_key = 0

        # ---- display options (client side only)
        self.cmap = Select(title="colour map", value="gray", options=list(PALETTES), width=110)
        self.contrast = RangeSlider(title="contrast limits (% of frame range)", start=0, end=100, value=(0, 100),
                                    step=1, width=230)
        self.logscale = Checkbox(label="log", active=False)
        self.show_atoms = Checkbox(label="atoms", active=True)
        self.show_bonds = Checkbox(label="bonds", active=True)
        self.sound = Checkbox(label="sound on alert", active=False, name="sound")
        pal_js = CustomJS(args={"m": self.mapper, "sel": self.cmap, "lg": self.logscale,
                                "pals": PALETTES, "logpals": {k: log_palette(v) for k, v in PALETTES.items()}},
                          code="m.palette = (lg.active ? logpals : pals)[sel.value];")
        self.cmap.js_on_change("value", pal_js)
        self.logscale.js_on_change("active", pal_js)
        self.contrast.js_on_change("value", CustomJS(args={"m": self.mapper}, code=
                                                     "m.low = cb_obj.value[0] * 2.55; m.high = cb_obj.value[1] * 2.55;"))
        self.show_atoms.js_on_change("active", CustomJS(args={"r": atom_r}, code="r.visible = cb_obj.active;"))
        self.show_bonds.js_on_change("active", CustomJS(args={"r": self.bond_r}, code="r.visible = cb_obj.active;"))

        # ---- banner + status
        self.banner = Div(text=alarm.banner_html(None, 0, 0, time.time(), False), sizing_mode="stretch_width",
                          stylesheets=[css], name="banner")
        self.banner.js_on_change("tags", CustomJS(args={"sound": self.sound}, code=BEEP_JS))
        self.ack = Button(label="✓ Acknowledge", width=130, name="acknowledge", disabled=True)
        self.ack.on_click(self._on_acknowledge)
        self.mute = Button(label="Mute this kind", width=150, name="mute", disabled=True)
        self.mute.on_click(self._on_mute)
        self.show_bookkeeping = Checkbox(label="show bookkeeping (atoms entering / leaving the field)", active=False,
                                         name="show_bookkeeping")
        self.show_bookkeeping.on_change("active", lambda attr, old, new: self._update_events())
        self.status = Div(text="", width=440, stylesheets=[css], name="status")

        # ---- controls
        ctl = self.controller is not None
        ev_cfg = EventConfig()
        self.pause = Toggle(label="Pause analysis", active=False, width=150, disabled=not ctl, name="pause")
        self.pause.on_change("active", self._on_pause)
        # a file name only: the service writes takes inside its recordings folder, never elsewhere,
        # and never over an existing take (empty: a time-stamped name per take)
        self.rec_path = TextInput(value="", width=280, disabled=not ctl, placeholder="(time-stamped name)",
                                  title="recording name (saved in the recordings folder)")
        self.rec = Toggle(label="● Record", active=False, button_type="danger", width=110, disabled=not ctl,
                          name="record")
        self.rec.on_change("active", self._on_record)
        self.k = Spinner(title="debounce k", low=1, high=20, step=1, value=ev_cfg.k_of_n[0], width=90,
                         disabled=not ctl)
        self.n = Spinner(title="of n frames", low=1, high=20, step=1, value=ev_cfg.k_of_n[1], width=90,
                         disabled=not ctl)
        self.conf = Slider(title="min. event confidence", start=0, end=1, step=0.05, value=ev_cfg.min_confidence,
                           width=200, disabled=not ctl)
        self.apply = Button(label="Apply thresholds", width=140, disabled=not ctl, name="apply")
        self.apply.on_click(self._on_apply)
        self.msg = Div(text="" if ctl else "controls need a live service (stemwatch serve / demo)",
                       width=440, stylesheets=[css], name="control_msg")

        # ---- event log
        self.event_source = ColumnDataSource(render.event_table_columns([]), name="event_source")
        # every cell wraps and carries its full text as a tooltip: nothing is cut off
        wrap = HTMLTemplateFormatter(template='<div class="cell" title="<%- value %>" style="white-space: normal; '
                                              'line-height: 1.15; overflow-wrap: anywhere;"><%- value %></div>')
        cols = [TableColumn(field="series", title="series", width=54, formatter=wrap),
                TableColumn(field="frame", title="frame", width=40),
                TableColumn(field="time", title="time", width=58, formatter=wrap),
                TableColumn(field="kind", title="event", width=86, formatter=wrap),
                TableColumn(field="track", title="track", width=38),
                TableColumn(field="change", title="change", width=92, formatter=wrap),
                TableColumn(field="where", title="x, y (Å)", width=62, formatter=wrap),
                TableColumn(field="conf", title="conf.", width=36)]
        self.table = DataTable(source=self.event_source, columns=cols, width=470, height=290, index_position=None,
                               selectable=True, sortable=False, name="event_table", row_height=36)
        # a click is resolved to its event key in the page (PICK_JS), never from an index on the server
        self.event_pick = ColumnDataSource({"key": [0]}, name="event_pick")
        self.event_source.selected.js_on_change("indices", CustomJS(
            args={"src": self.event_source, "pick": self.event_pick}, code=PICK_JS))
        self.event_pick.on_change("tags", self._on_pick)

        # ---- per-dopant timeline
        self.tl_source = ColumnDataSource({"x": np.zeros(0, np.float32), "lane": np.zeros(0, np.float32),
                                           "coord": np.zeros(0, np.int8), "tid": np.zeros(0, np.int32)},
                                          name="timeline_source")
        self.tl_events = ColumnDataSource({"x": [], "lane": [], "kind": []}, name="timeline_events")
        t = figure(name="timeline", width=470, height=260, title="dopant coordination over the history",
                   x_axis_label="frame", tools="xpan,xwheel_zoom,reset", toolbar_location="right",
                   background_fill_color="#1e2a33", border_fill_color="#263238", outline_line_color=None)
        t.title.text_color = "#eceff1"
        for ax in (t.xaxis, t.yaxis):
            ax.axis_label_text_color = "#b0bec5"
            ax.major_label_text_color = "#b0bec5"
        t.grid.grid_line_alpha = 0.15
        t.toolbar.logo = None
        t.rect("x", "lane", width=1, height=0.75, source=self.tl_source, line_color=None,
               fill_color=linear_cmap("coord", COORD_PALETTE, 0.5, 5.5))
        t.scatter("x", "lane", source=self.tl_events, marker="inverted_triangle", size=13, fill_color="#ffffff",
                  line_color="#000")
        t.add_tools(HoverTool(tooltips=[("Si track", "@tid"), ("frame", "@x{0}"), ("bonds", "@coord")],
                              renderers=[t.renderers[0]]))
        self.tl_ticker = FixedTicker(ticks=[])
        t.yaxis.ticker = self.tl_ticker
        t.y_range.flipped = True
        self.now_span = Span(location=0, dimension="height", line_color="#ffffff", line_dash="dashed", line_width=1.5)
        t.add_layout(self.now_span)
        self.timeline = t

        h = partial(Div, stylesheets=[css])
        legend = h(text=legend_html([(n, c, sz) for n, c, sz in zip(ATOM_CATEGORIES, ATOM_COLORS, render.ATOM_SIZES)]
                                    + [("defect", None, 0), ("event", "ring", 0)]), width=660)
        tl_legend = h(text=legend_html([("3-fold", ATOM_COLORS[2], -1), ("4-fold", ATOM_COLORS[3], -1),
                                        ("other", "#9e9e9e", -1), ("event", "tri", 0)]), width=420)
        left = column(p, legend, row(self.live, self.slider), self.info, self.gallery, width=670)
        controls = column(h(text="<h4>display</h4>"), row(self.cmap, self.contrast),
                          row(self.logscale, self.show_atoms, self.show_bonds, self.sound),
                          h(text="<h4>acquisition &amp; analysis</h4>"), row(self.pause, self.rec),
                          self.rec_path, row(self.k, self.n, self.conf), self.apply, self.msg, width=440)
        events = column(h(text="<h4>event log · click a row to see its frame</h4>"), self.table, self.show_bookkeeping,
                        t, tl_legend, width=470, name="events_panel")
        middle = column(self.status, controls, width=440, name="controls_panel")
        top = row(self.banner, self.ack, self.mute, sizing_mode="stretch_width")
        # three panels that wrap (CSS flex-wrap) instead of overflowing: one row at 1920 px, the event
        # log under the image and controls at 1280 px; never a horizontal scroll bar (issue 15)
        main = row(left, middle, events, sizing_mode="stretch_width", styles={"flex-wrap": "wrap", "gap": "10px"},
                   name="main_panels")
        body = column(top, main, sizing_mode="stretch_width",
                      styles={"background": "#263238", "padding": "8px"},
                      stylesheets=[GlobalInlineStyleSheet(css="body { background: #263238; margin: 0; }")])
        from bokeh.models import TabPanel, Tabs

        from dashboard.stats_tab import StatsPanel

        self.stats_panel = StatsPanel(self)          # the "statistics" tab (issue 18)
        doc.add_root(Tabs(tabs=[TabPanel(child=body, title="live"),
                                TabPanel(child=self.stats_panel.layout, title="statistics")],
                          name="tabs", sizing_mode="stretch_width", styles={"background": "#eceff1"}))

    # ------------------------------------------------------------------ periodic updates
    def _fast_tick(self) -> None:
        if self.hub.events_version != self.shown_events_version:
            self._update_events()
        if not self.live.active:
            return
        df = self.hub.newest()
        if df is None or (self.shown is not None and df.idx == self.shown.idx):
            return
        now = time.time()
        waiting = self.sent_idx is not None and self.acked_idx != self.sent_idx
        if waiting and now - self.sent_t < self.cfg.ack_timeout_s:
            return                                    # the browser has not shown the last one yet
        self._show(df)

    def _slow_tick(self) -> None:
        now = time.time()
        rng = self.hub.idx_range()
        if rng is not None:
            self._quiet = True
            try:
                lo, hi = rng
                self.slider.disabled = hi <= lo
                self.slider.start, self.slider.end = lo, max(hi, lo + 1)
                if self.live.active and self.shown is not None:
                    self.slider.value = self.shown.idx
            finally:
                self._quiet = False
        if self.hub.version != self.shown_timeline_version:
            self._update_timeline()
        if self.shown is not None:
            self.now_span.location = self.shown.seq
        if self.hub.n_events or self.banner_key:
            self._refresh_banner(now, flash=False)
        self._update_status(now)
        self._sync_controls()
        self.stats_panel.tick()

    def _update_timeline(self) -> None:
        """Stream the new frames' cells (a full replace only when the series, hence the lanes, change)."""
        hub = self.hub
        self.shown_timeline_version = hub.version
        newest = hub.newest()
        if newest is None:
            return
        lanes = hub.lanes
        if hub.lanes_series != self.tl_series:
            self.tl_series = hub.lanes_series
            self.tl_source.data = hub.timeline_columns()
        else:
            new = hub.timeline_columns(since_idx=self.tl_last_idx)
            if new["x"].size:
                self.tl_source.stream(new, rollover=self.cfg.history_frames * max(1, len(lanes)))
        self.tl_last_idx = newest.idx
        lanes_key = (hub.lanes_series, len(lanes))
        if hub.events_version != self.tl_events_version or lanes_key != self.tl_lanes_key:
            self.tl_events_version = hub.events_version
            self.tl_events.data = hub.timeline_events()
        if lanes_key != self.tl_lanes_key:
            self.tl_lanes_key = lanes_key
            self.tl_ticker.ticks = sorted(lanes.values())
            self.timeline.yaxis.major_label_overrides = {int(v): f"Si #{k}" for k, v in lanes.items()}

    # ------------------------------------------------------------------ frame display
    def _show(self, df: DisplayFrame, highlight: list | None = None) -> None:
        """Push frame ``df`` to the browser (image, bonds, atoms, defects, highlights, then meta)."""
        field = (df.pixel_size_A, *df.field_A)
        if field != self.field:
            self.field = field
            p, W, H = field
            self.plot.x_range.update(start=-0.5 * p, end=W - 0.5 * p)
            self.plot.y_range.update(start=H - 0.5 * p, end=-0.5 * p)
            self.plot.frame_height = int(round(600 * H / W)) if W > 0 else 600
        if highlight is None:
            highlight = self._recent_events(df)
        self.image_source.data = render.image_columns(df)
        self.bond_source.data = df.bonds if df.bonds is not None else {
            k: np.zeros(0, np.float32) for k in ("x0", "y0", "x1", "y1")}
        self.atom_source.data = df.atoms
        self.defect_source.data = df.defects
        self.hl_source.data = render.highlight_columns(df, highlight)
        self.plot.title.text = (f"frame {df.seq} · series {df.series} · {df.n_atoms} atoms · "
                                f"{int(df.si_track.size)} Si tracked"
                                + (f" · ANALYSIS FAILED: {df.error[:80]}" if df.error else ""))
        n_si = int(np.count_nonzero(df.atoms["sp"] == 1))
        self.info.text = (f'<div class="info">acquired {time.strftime("%H:%M:%S", time.localtime(df.t_acquired))}'
                          f' · {df.frame_shape[1]}×{df.frame_shape[0]} px at {df.pixel_size_A:.3f} Å/px'
                          f'{f" (shown binned ×{df.bin_factor})" if df.bin_factor > 1 else ""}'
                          f' · {n_si} Si, {len(df.defects["x"])} defects'
                          f' · drift ({df.drift_px[0] * df.pixel_size_A:+.2f}, {df.drift_px[1] * df.pixel_size_A:+.2f}) Å/frame'
                          f' · display range {df.intensity_range[0]:.3g}–{df.intensity_range[1]:.3g}</div>')
        self.slider.title = f"history · frame {df.seq} · series {df.series}"   # the slider's index is the history
        self.meta.data = {"seq": [df.seq], "idx": [df.idx], "t": [df.t_acquired]}
        self.shown = df
        self.sent_idx = df.idx
        self.sent_t = time.time()
        self.pushes += 1

    def _recent_events(self, df: DisplayFrame, frames: int = 15, most: int = 4) -> list:
        """The newest ``most`` events of the last ``frames`` frames before ``df`` (ringed live)."""
        out = []
        for r in reversed(self.hub.events):
            if df.idx - r.idx >= frames or len(out) >= most:
                break
            if 0 <= df.idx - r.idx and r.series == df.series:
                out.append(r.event)
        return out[::-1]

    def _on_ack(self, attr: str, old: Any, new: Any) -> None:
        if not new:
            return
        idx = int(new[0])
        now = time.time()
        self.acked_idx = idx
        self.ack_times.append(now)
        if self.shown is not None and self.shown.idx == idx and self.live.active:
            self.ack_latency.append(now - self.shown.t_acquired)

    # ------------------------------------------------------------------ events
    def _update_events(self) -> None:
        self.shown_events_version = self.hub.events_version
        rows = alarm.log_rows(self.hub.events, bool(self.show_bookkeeping.active))[-200:]
        data = render.event_table_columns(rows)
        self._quiet = True
        try:
            if list(data["key"]) != list(self.event_source.data.get("key", [])):
                self.event_source.data = data          # only when the visible rows changed (bookkeeping
        finally:                                       # hidden by the filter does not redraw the table)
            self._quiet = False
        self._mark_selected()
        self.last_event_key = self.hub.events[-1].key if self.hub.events else 0
        newest = self.alarm.banner_row(self.hub.events, self._series())
        if newest is not None and newest.key > self.last_alarm_key:
            # only a transformation of the current series, not acknowledged, of a kind not muted
            self.last_alarm_key = newest.key
            self._refresh_banner(time.time(), flash=True)
            self.banner.tags = [newest.key]               # triggers the optional sound in the browser
        else:
            self._refresh_banner(time.time(), flash=False, force=True)

    def _series(self) -> str | None:
        newest = self.hub.newest()
        return newest.series if newest is not None else None

    def _refresh_banner(self, now: float, flash: bool, force: bool = False) -> None:
        alarms = self.alarm.alarms(self.hub.events, self._series())
        row_ = alarms[-1] if alarms else None
        if row_ is not None and not flash and not force and now - row_.t_seen < 2.5 and row_.key == self.banner_key:
            return                                        # let the flash animation finish
        earlier = [r for r in alarms[-4:-1][::-1] if now - r.t_seen <= RECENT_ALERT_S]
        self.banner_key = row_.key if row_ is not None else 0
        self.ack.disabled = self.mute.disabled = row_ is None
        # the label stays "Mute this kind" (the kind is the banner's): a label that changed with every
        # alarm would redraw the button under the operator's pointer
        text = alarm.banner_html(row_, len(alarms), self.hub.n_events, now, flash, earlier, self.alarm.muted)
        if text != self.banner.text:
            self.banner.text = text

    def _gallery_html(self, row_) -> str:
        import base64
        import html as _html
        if row_ is None:
            return ('<div class="info"><b>before / after</b> · click an event in the log to see crops of the '
                    'frame before and the frame after it</div>')
        png = self.hub.gallery_png(row_)
        if png is None:
            return (f'<div class="info"><b>before / after</b> · no picture for '
                    f'{_html.escape(render.event_label(row_.event.kind))} (bookkeeping, frames no longer kept, '
                    'or Pillow missing)</div>')
        b64 = base64.b64encode(png).decode("ascii")
        return (f'<div class="info gallery" data-key="{row_.key}"><b>before / after</b> · '
                f'{_html.escape(render.event_label(row_.event.kind))} · frame {row_.event.frame}<br>'
                f'<img alt="before and after event {row_.key}" style="max-width: 100%; height: auto;" '
                f'src="data:image/png;base64,{b64}"></div>')

    def _set_gallery(self, row_) -> None:
        if row_ is None or row_.key == self.gallery_key:
            return
        self.gallery_key = row_.key
        self.gallery.text = self._gallery_html(row_)

    def _on_acknowledge(self) -> None:
        if self.banner_key:
            self.alarm.acknowledge(self.banner_key)
        self._refresh_banner(time.time(), flash=False, force=True)

    def _on_mute(self) -> None:
        row_ = next((r for r in self.hub.events if r.key == self.banner_key), None)
        if row_ is not None:
            self.alarm.mute(row_.event.kind)
        self._refresh_banner(time.time(), flash=False, force=True)

    def _mark_selected(self) -> None:
        """Tell the page which event is selected (``event_pick.data``), then highlight its row in the
        table's current rows. In this order: the page then recognises the highlight as the server's own
        selection and sends no click for it (PICK_JS)."""
        key = self.selected_key or 0
        if list(self.event_pick.data["key"]) != [key]:
            self.event_pick.data = {"key": [key]}
        keys = list(self.event_source.data.get("key", []))
        self._quiet = True
        try:
            self.event_source.selected.indices = [keys.index(key)] if key in keys else []
        finally:
            self._quiet = False

    def _on_pick(self, attr: str, old: Any, new: Any) -> None:
        """The operator clicked a row: ``new`` = [event key, click counter] (PICK_JS). Shows that event's
        frame; the selection (event_pick.data) is updated last, after the frame or the message."""
        if self._quiet or not new:
            return
        key = int(new[0])
        row_ = next((r for r in self.hub.events if r.key == key), None)
        if row_ is None:
            return
        self.selected_key = key
        self._set_gallery(row_)
        df = self.hub.frame(row_.idx)
        self._set_live(False)
        if df is None or df.idx != row_.idx:
            self.msg.text = f'<div class="msg">frame {row_.event.frame} is no longer in the history</div>'
        else:
            self._show(df, highlight=[row_.event])
            self._quiet = True
            try:
                self.slider.value = df.idx
            finally:
                self._quiet = False
        self._mark_selected()

    # ------------------------------------------------------------------ history
    def _set_live(self, live: bool) -> None:
        self._quiet = True
        try:
            self.live.active = live
            self.live.label = "● Live" if live else "▶ Back to live"
            self.live.button_type = "success" if live else "warning"
        finally:
            self._quiet = False

    def _on_live(self, attr: str, old: Any, new: Any) -> None:
        if self._quiet:
            return
        self._set_live(bool(new))
        if new:
            self.selected_key = None
            self._mark_selected()
            self._fast_tick()

    def _on_slider(self, attr: str, old: Any, new: Any) -> None:
        if self._quiet or new is None:
            return
        df = self.hub.frame(int(new))
        if df is None:
            return
        rng = self.hub.idx_range()
        if rng is not None and int(new) >= rng[1]:
            self._set_live(True)
            self._show(df)
            return
        self._set_live(False)
        self._show(df)

    # ------------------------------------------------------------------ status
    def local_stats(self, now: float) -> dict:
        acks = [t for t in self.ack_times if now - t <= 2.0]
        lat = np.fromiter(self.ack_latency, float) if self.ack_latency else None
        newest = self.hub.newest()
        return {
            "analysed_fps": self.hub.analysed_fps(),
            "display_fps": len(acks) / 2.0,
            "display_p50_s": float(np.percentile(lat, 50)) if lat is not None else None,
            "display_p99_s": float(np.percentile(lat, 99)) if lat is not None else None,
            "latency_total_p50_s": self.hub.latency_total.pct(50),
            "latency_total_p99_s": self.hub.latency_total.pct(99),
            "last_frame_age_s": (now - newest.t_shown_ready) if newest is not None else None,
            "tabs": len(self.registry) if self.registry is not None else 1,
            "coalesced": self.hub.coalesced,
            "paused_view": not self.live.active,
            "frame_seq": self.shown.seq if self.shown is not None else None,
            "material": getattr(self.shown, "material", None) if self.shown is not None else None,
            "series": newest.series if newest is not None else None,
        }

    def _update_status(self, now: float) -> None:
        status, _ = self.hub.status()
        text = status_html(status, self.local_stats(now), now)
        if text != self.status.text:
            self.status.text = text

    def _sync_controls(self) -> None:
        """Reflect the service's state (possibly changed from another tab) in this tab's controls."""
        if self.controller is None:
            return
        status, _ = self.hub.status()
        paused = bool(get(status, "paused", default=False))
        rec = get(status, "recorder", default={}) or {}
        recording = bool(get(rec, "recording", "active", default=False)) if isinstance(rec, dict) else False
        self._quiet = True
        try:
            if self.pause.active != paused:
                self.pause.active = paused
            self.pause.label = "Resume analysis" if paused else "Pause analysis"
            if self.rec.active != recording:
                self.rec.active = recording
            self.rec.label = "■ Stop recording" if recording else "● Record"
            cfg = get(status, "config", default={}) or {}
            seen = (tuple(cfg.get("k_of_n", ())), cfg.get("min_confidence"))
            if seen != self._seen_thresholds and len(seen[0]) == 2 and seen[1] is not None:
                self._seen_thresholds = seen          # the service's values (this or another tab set them)
                self.k.value, self.n.value = int(seen[0][0]), int(seen[0][1])
                self.conf.value = float(seen[1])
        finally:
            self._quiet = False

    # ------------------------------------------------------------------ controls
    def _call(self, what: str, fn, *args, **kwargs) -> None:
        """Run a controller call off the event loop; report the outcome in the message line."""
        if self.controller is None or self.executor is None:
            return
        self.msg.text = f'<div class="msg">{what}…</div>'
        fut = self.executor.submit(fn, *args, **kwargs)

        def done(f) -> None:
            exc = f.exception()
            text = f"{what} failed: {exc}" if exc is not None else (
                f"{what}: {f.result()}" if isinstance(f.result(), str) else f"{what}: done")
            try:
                self.doc.add_next_tick_callback(partial(self._set_msg, text))
            except Exception:  # the tab went away meanwhile
                pass
        fut.add_done_callback(done)

    def _set_msg(self, text: str) -> None:
        import html
        self.msg.text = f'<div class="msg">{html.escape(text)}</div>'

    def _on_pause(self, attr: str, old: Any, new: Any) -> None:
        if self._quiet:
            return
        self.pause.label = "Resume analysis" if new else "Pause analysis"
        self._call("pause analysis" if new else "resume analysis", self.controller.set_paused, bool(new))

    def _on_record(self, attr: str, old: Any, new: Any) -> None:
        if self._quiet:
            return
        if new:
            name = self.rec_path.value.strip() or None
            if name is not None and ("/" in name or "\\" in name or name.startswith(".")):
                self._set_msg("give a file name without a folder: takes are saved in the recordings folder")
                self._quiet = True
                self.rec.active = False
                self._quiet = False
                return
            self.rec.label = "■ Stop recording"
            self._call(f"record {name or 'a new take'}", self.controller.start_take, name)
        else:
            self.rec.label = "● Record"
            self._call("stop recording", self.controller.stop_recording)

    def _on_apply(self) -> None:
        k, n, c = int(self.k.value), int(self.n.value), float(self.conf.value)
        if k > n:
            self._set_msg(f"debounce k ({k}) cannot exceed n ({n})")
            return
        self._call(f"thresholds k={k} of n={n}, confidence ≥ {c:.2f}", self.controller.update_config,
                   events={"k_of_n": (k, n), "min_confidence": c})

    def _destroyed(self, session_context: Any) -> None:
        if self.registry is not None:
            self.registry.discard(self)


def make_document(doc: Document, hub: DashboardHub, controller: Any = None, executor: Executor | None = None,
                  registry: set | None = None) -> TabSession:
    """Build the operator screen into ``doc`` (a Bokeh server session's document)."""
    return TabSession(doc, hub, controller, executor, hub.cfg, registry)
