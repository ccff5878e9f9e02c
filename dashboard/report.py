"""The session report: one self-contained HTML file (Bokeh standalone, BokehJS inline, no server,
opens offline) from an ``analyze`` output folder (or a recording, analysed first).

Sections: acquisition (instrument metadata, pixel size and its source, dose), frame health counts, a
time-line of every dopant's state, the statistics table (rates per frame / s / e/A^2, cross-sections,
dwell times, 95 % intervals) with a cross-section plot with error bars, the Markov transition matrix,
the event gallery (before/after crops with atoms and bonds) and the overlay of a representative frame.
Images are embedded as PNG (zlib) data URLs, so a 1,000-frame session stays a few MB.

    stemwatch report DIR_OR_RECORDING [--out report.html] [--dose E_PER_A2]

Plain-data pieces, usable on their own: :func:`png_data_url` (an image -> compressed data URL) and
:func:`crop_figure` (an image + atom positions/species (+ bonds) -> a Bokeh figure, the representative
frame). The event gallery is cut by :mod:`engine.gallery` and drawn by :func:`dashboard.gallery.render`,
the same pictures as the dashboard's and ``analyze --gallery``'s.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import os
from pathlib import Path

import numpy as np

from dashboard.gallery import png_bytes, render
from dashboard.render import to_uint8
from engine import stats as S
from engine.gallery import BOND_CUTOFF_A, GalleryFrame, bonds_by_distance, gallery_item, load_gallery, segments

STATE_COLORS = {"3-fold": "#1e88e5", "4-fold": "#e53935", "dimer": "#8e24aa", "cluster": "#fb8c00",
                "2-fold": "#43a047", "other": "#757575"}
SPECIES_COLORS = {"C": "#4dd0e1", "Si": "#ff9800", "other": "#d500f9"}
GALLERY_MAX_EVENTS = 24

REPRESENTATIVE_MAX_PX = 512      # the representative frame is shown at most this size (block-averaged)
MAX_CLUSTER_ROWS = 50            # clusters listed in the report (all are in stats.json)


class ReportError(ValueError):
    """Bad input for a report (one clear line for the CLI)."""


# ------------------------------------------------------------------------------ images
def png_data_url(img: np.ndarray) -> str:
    """Any 2-D image -> ``data:image/png;base64,...`` (contrast-stretched to uint8)."""
    g = img if np.asarray(img).dtype == np.uint8 else to_uint8(img)[0]
    return "data:image/png;base64," + base64.b64encode(png_bytes(g, compress_level=9)).decode("ascii")


def display_bonds(xy_px: np.ndarray, pixel_size_A: float, cutoff_A: float = BOND_CUTOFF_A) -> np.ndarray:
    """(M, 2) index pairs of atoms closer than ``cutoff_A`` (for drawing only; the analysis's own bond
    graph is not stored in the output files)."""
    return bonds_by_distance(xy_px, cutoff_A / pixel_size_A)


def crop_figure(image: np.ndarray, xy_px: np.ndarray, species: list | np.ndarray, title: str = "",
                bonds: np.ndarray | None = None, size_px: int = 210, pixel_size_A: float | None = None,
                highlight_xy: tuple | None = None, name: str | None = None):
    """A Bokeh figure of ``image`` (y down, pixel centres at integers, as the frame) with the atoms
    (``xy_px`` (N, 2) in the crop's pixels, ``species`` names) and bonds ((M, 2) index pairs; computed
    by distance when None and ``pixel_size_A`` is given) drawn on top."""
    from bokeh.models import ColumnDataSource
    from bokeh.plotting import figure

    h, w = np.asarray(image).shape
    fig = figure(width=size_px, height=max(60, int(size_px * h / max(w, 1))), title=title, name=name,
                 x_range=(-0.5, w - 0.5), y_range=(h - 0.5, -0.5), tools="pan,wheel_zoom,reset",
                 toolbar_location=None, match_aspect=True)
    fig.axis.visible = False
    fig.grid.visible = False
    fig.image_url(url=[png_data_url(image)], x=-0.5, y=-0.5, w=w, h=h, anchor="top_left")
    xy = np.asarray(xy_px, np.float64).reshape(-1, 2)
    sp = np.asarray(species, object).reshape(-1)
    if bonds is None and pixel_size_A:
        bonds = display_bonds(xy, pixel_size_A)
    if bonds is not None and len(bonds):
        b = np.asarray(bonds, np.int64)
        fig.segment(xy[b[:, 0], 0], xy[b[:, 0], 1], xy[b[:, 1], 0], xy[b[:, 1], 1], line_color="#b0bec5",
                    line_width=1, line_alpha=0.8)
    if len(xy):
        col = [SPECIES_COLORS.get(str(s), "#ffffff") for s in sp]
        fig.scatter(source=ColumnDataSource({"x": xy[:, 0], "y": xy[:, 1], "c": col, "s": [str(s) for s in sp],
                                             "size": np.where(sp == "C", 4, 8).tolist()}),
                    x="x", y="y", fill_color="c", line_color="black", size="size", line_width=0.5)
    if highlight_xy is not None:
        fig.scatter([highlight_xy[0]], [highlight_xy[1]], marker="circle", size=26, fill_alpha=0,
                    line_color="#ffeb3b", line_width=2)
    return fig


# ------------------------------------------------------------------------------ inputs
def _read_frames_csv(path: Path) -> list:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _read_events(path: Path) -> list:
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def _atoms_of_frames(path: Path, wanted: set) -> dict:
    """{seq: dict of xy (N, 2) px, species (N,) names, ids (N,) track ids, coordination (N,), edge (N,)}
    for the wanted frames of atoms.csv (one pass)."""
    out: dict = {s: [] for s in wanted}
    keys = {f"{s}," for s in wanted}
    with open(path) as fh:
        header = next(fh, "").strip().split(",")
        for line in fh:
            k = line[: line.find(",") + 1]
            if k in keys:
                out[int(k[:-1])].append(line.rstrip("\n").split(","))
    col = {c: header.index(c) for c in ("atom_id", "x", "y", "species", "coordination", "edge") if c in header}
    res = {}
    for s, rows in out.items():
        n = len(rows)
        num = (lambda c, dt: np.array([r[col[c]] for r in rows], float).astype(dt) if c in col and n
               else np.full(n, -1 if dt is np.int64 else 0, dt))
        res[s] = {"xy": np.array([[float(r[col["x"]]), float(r[col["y"]])] for r in rows]).reshape(-1, 2),
                  "species": np.array([r[col["species"]] for r in rows], object),
                  "ids": num("atom_id", np.int64), "coordination": num("coordination", np.int64),
                  "edge": num("edge", np.int64) > 0}
    return res


def _gallery_frame(seq: int, image: np.ndarray, atoms: dict, ps: float, series: str) -> GalleryFrame:
    """A frame of the analysis as the gallery needs it (bonds by distance: atoms.csv has none)."""
    xy = np.asarray(atoms["xy"], np.float64).reshape(-1, 2) * ps
    n = len(xy)
    return GalleryFrame(seq=seq, series=series, image=image, step_A=ps, xy_A=xy, species=atoms["species"],
                        coordination=atoms.get("coordination", np.full(n, -1)),
                        edge=atoms.get("edge", np.zeros(n, bool)), track=atoms.get("ids", np.full(n, -1)),
                        bonds_A=segments(xy, bonds_by_distance(xy, BOND_CUTOFF_A)))


def _images_of_frames(input_path: str | None, wanted: set, pixel_size_A: float | None) -> dict:
    """{seq: image} read from the analysed input (empty when it is not there any more)."""
    if not input_path or not wanted or not Path(input_path).exists():
        return {}
    from streamer.importers import open_frames

    out = {}
    last = max(wanted)
    try:
        for fr in open_frames(Path(input_path), pixel_size_A=pixel_size_A):
            if fr.seq in wanted:
                out[int(fr.seq)] = np.asarray(fr.data)
            if fr.seq >= last and len(out) == len(wanted):
                break
    except Exception:     # a report without pictures is still a report
        return out
    return out


# ------------------------------------------------------------------------------ sections
def _table(rows: list, header: list) -> str:
    th = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table class='sw'><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(x, digits=3):
    if x is None:
        return "–"
    if isinstance(x, (int, np.integer)):
        return f"{int(x):,}"
    x = float(x)
    if not np.isfinite(x):
        return "–"
    return f"{x:.{digits}g}"


def _ci(row, key):
    return f"{_fmt(row.get(key))} [{_fmt(row.get(key + '_lo'))}, {_fmt(row.get(key + '_hi'))}]"


CSS = """<style>
body { font-family: sans-serif; margin: 16px; }
table.sw { border-collapse: collapse; font-size: 12px; margin: 4px 0 10px 0; }
table.sw th, table.sw td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
table.sw th { background: #eceff1; }
h2 { margin: 14px 0 4px 0; font-size: 17px; }
.note { color: #555; font-size: 12px; max-width: 1100px; }
</style>"""


def _timeline(h: S.Histories, name="timeline"):
    """Rects per run of one known state of each dopant; unknown frames are left blank."""
    from bokeh.models import ColumnDataSource, HoverTool
    from bokeh.plotting import figure

    seq = h.frames.seq
    T = len(h.tracks)
    x0, x1, y, st, tid = [], [], [], [], []
    if T and len(seq):
        r, c, v = h.known()
        brk = np.zeros(len(r), bool)
        brk[1:] = (r[1:] != r[:-1]) | (c[1:] != c[:-1] + 1)
        s, ln = S.runs(v, brk)
        e = s + ln - 1
        x0 = (seq[c[s]] - 0.5).tolist()
        x1 = (seq[c[e]] + 0.5).tolist()
        y = r[s].tolist()
        st = [S.STATES[k] for k in v[s]]
        tid = h.tracks[r[s]].tolist()
    src = ColumnDataSource({"left": x0, "right": x1, "bottom": [k + 0.1 for k in y], "top": [k + 0.9 for k in y],
                            "state": st, "track": tid, "color": [STATE_COLORS[k] for k in st]})
    height = int(min(700, max(160, 40 + 16 * T)))
    fig = figure(width=1100, height=height, title="dopant states over time (blank: unknown, i.e. not observed or "
                 "frame not usable)", x_axis_label="frame", y_axis_label="dopant (track)", name=name,
                 tools="xpan,xwheel_zoom,reset,save", y_range=(-0.1, max(T, 1) + 0.1))
    fig.quad(source=src, left="left", right="right", bottom="bottom", top="top", fill_color="color",
             line_color=None, legend_field="state")
    fig.add_tools(HoverTool(tooltips=[("track", "@track"), ("state", "@state"), ("frames", "@left{0}–@right{0}")]))
    fig.yaxis.ticker = [k + 0.5 for k in range(T)] if T <= 40 else fig.yaxis.ticker
    if T <= 40:
        fig.yaxis.major_label_overrides = {k + 0.5: str(t) for k, t in enumerate(h.tracks.tolist())}
    if fig.legend:
        fig.add_layout(fig.legend[0], "right")       # beside the lanes, never over them
    return fig


def _rates_plot(trans: list, name="cross_sections"):
    from bokeh.models import ColumnDataSource, Whisker
    from bokeh.plotting import figure

    use_dose = bool(trans) and all(t.get("cross_section_barn") is not None for t in trans)
    key, label = ("cross_section_barn", "cross-section (barn)") if use_dose else ("rate_per_frame", "rate per frame")
    kinds = [t["kind"] for t in trans] or ["(none)"]
    val = [t.get(key) or 0.0 for t in trans]
    lo = [t.get(key + "_lo") or 0.0 for t in trans]
    hi = [t.get(key + "_hi") or 0.0 for t in trans]
    src = ColumnDataSource({"kind": kinds[:len(val)], "v": val, "lo": lo, "hi": hi,
                            "n": [t["count"] for t in trans]})
    log = bool(trans) and all((t.get(key + "_lo") or 0) > 0 for t in trans)
    top = max(hi + [1e-12]) * (2.0 if log else 1.1)
    bottom = min(lo) / 2.0 if log else 0.0
    fig = figure(x_range=kinds, width=520, height=300, title=f"{label}, 95 % interval", name=name,
                 tools="save", y_axis_label=label, y_axis_type="log" if log else "linear", y_range=(bottom, top))
    fig.scatter(source=src, x="kind", y="v", size=9, fill_color="#1e88e5", line_color="#0d47a1")
    fig.add_layout(Whisker(source=src, base="kind", lower="lo", upper="hi", line_width=1.5))
    fig.xaxis.major_label_orientation = 0.5
    return fig


def _markov_plot(m: dict, name="markov"):
    from bokeh.models import ColumnDataSource
    from bokeh.plotting import figure

    states = m["states"] or ["(none)"]
    xs, ys, cnt, p, col = [], [], [], [], []
    for i, a in enumerate(m["states"]):
        for j, b in enumerate(m["states"]):
            xs.append(b)
            ys.append(a)
            cnt.append(m["counts"][i][j])
            pp = m["probability_per_step"][i][j]
            p.append(f"{cnt[-1]}\n({pp:.3f})")
            g = int(255 - 200 * min(1.0, pp))
            col.append(f"#{g:02x}{g:02x}ff")
    src = ColumnDataSource({"to": xs, "from": ys, "label": p, "color": col})
    fig = figure(x_range=states, y_range=list(reversed(states)), width=380, height=300, name=name,
                 title="Markov matrix: counts (per-step probability)", x_axis_label="to", y_axis_label="from",
                 tools="save", toolbar_location=None)
    fig.rect(source=src, x="to", y="from", width=1, height=1, fill_color="color", line_color="white")
    fig.text(source=src, x="to", y="from", text="label", text_align="center", text_baseline="middle",
             text_font_size="11px")
    return fig


def gallery_layout(items: list, per_row: int = 2) -> list:
    """Rows of the gallery items' before/after pictures (:func:`dashboard.gallery.render`, PNG)."""
    from bokeh.models import Div

    cells = []
    for it in items:
        e = it.event
        url = "data:image/png;base64," + base64.b64encode(png_bytes(render(it), compress_level=9)).decode("ascii")
        cells.append(f"<div class='gallery-item' style='display:inline-block;margin:0 12px 10px 0;"
                     f"vertical-align:top'><b>{html.escape(str(e.get('kind')))}</b> track {e.get('atom_id')} at "
                     f"frame {e.get('frame')}: {html.escape(str(e.get('before')))} → "
                     f"{html.escape(str(e.get('after')))}, confidence {_fmt(e.get('confidence'), 2)}<br>"
                     f"<img src='{url}' width='518' alt='before / after frame {e.get('frame')}'></div>")
    if not cells:
        return [Div(text="<p class='note'>No event crops: no events, or the analysed input is not readable "
                         "any more (the gallery reads the frames from it).</p>")]
    return [Div(text="".join(cells[i:i + per_row]), width=1100, name="gallery" if i == 0 else None)
            for i in range(0, len(cells), per_row)]


def build_report(out_dir: str | os.PathLike, html_path: str | os.PathLike | None = None,
                 dose_e_per_A2: float | None = None, max_gallery: int = GALLERY_MAX_EVENTS) -> Path:
    """Write the report of the analyze folder ``out_dir``; returns the HTML path (default
    ``out_dir/report.html``). Raises :class:`ReportError` for a folder that is not an analysis."""
    from bokeh.layouts import column, row
    from bokeh.models import Div

    d = Path(out_dir)
    for need in ("frames.csv",):
        if not (d / need).exists():
            raise ReportError(f"{d}: no {need} (give a `stemwatch analyze` output folder or a recording)")
    summary = json.loads((d / "summary.json").read_text()) if (d / "summary.json").exists() else {}
    try:
        st, hist = S.stats_from_dir(d, dose_e_per_A2, "--dose option" if dose_e_per_A2 is not None else None)
    except (ValueError, KeyError) as exc:
        raise ReportError(f"{d}: {exc}") from None
    sd = st.to_dict()
    acq = summary.get("acquisition") or {}
    ps = float(acq.get("pixel_size_A") or (summary.get("config") or {}).get("pixel_size_A") or 0.1)
    frames = _read_frames_csv(d / "frames.csv")
    events = _read_events(d / "events.jsonl")
    seqs = np.array([int(r["frame"]) for r in frames], np.int64)
    errors = [r for r in frames if r.get("error")]

    # ---- acquisition and health
    meta = acq.get("meta") or {}
    dose = sd["dose"]
    acq_rows = [["series", html.escape(str(acq.get("series", "–")))],
                ["input", html.escape(str(summary.get("input", "–")))],
                ["frame size", " × ".join(str(x) for x in acq.get("shape_px", [])) + " px" if acq else "–"],
                ["pixel size", f"{ps:.4g} Å/px ({html.escape(str(acq.get('pixel_size_source', 'unknown source')))})"],
                ["frame time", f"{_fmt(sd['frame_time_s'])} s"],
                ["dose per frame", f"{_fmt(dose['e_per_A2_per_frame'])} e/Å² ({html.escape(str(dose['source']))})"],
                ["session dose", f"{_fmt(dose['session_e_per_A2'])} e/Å²"],
                ["backend", html.escape(str(summary.get("backend", "–")))]]
    acq_rows += [[html.escape(str(k)), html.escape(json.dumps(v, default=str))[:200]] for k, v in sorted(meta.items())]
    health = [["frames analysed", _fmt(len(frames))], ["usable (ok)", _fmt(sd["frames"]["usable"])],
              ["unknown (not ok)", _fmt(sd["frames"]["unknown"])], ["with a pipeline error", _fmt(len(errors))],
              ["events", _fmt(len(events))], ["dopant tracks", _fmt(len(sd["dopants"]))]]
    for col in ("verdict", "health"):               # a frame-health verdict column, when the analysis has one
        if frames and col in frames[0]:
            vals, counts = np.unique([str(r[col]) for r in frames], return_counts=True)
            health += [[f"{col}: {html.escape(v)}", _fmt(int(c))] for v, c in zip(vals.tolist(), counts.tolist())]
    incomplete = "" if sd["complete"] else f"<p style='color:#c62828'><b>Incomplete:</b> {html.escape(sd['note'])}</p>"
    head = Div(text=CSS + f"<h1>stemwatch session report</h1>{incomplete}<h2>Acquisition</h2>"
               + _table(acq_rows, ["", ""]) + "<h2>Frame health</h2>" + _table(health, ["", ""]), width=1100,
               name="acquisition")

    # ---- statistics
    trans = sd["transitions"]
    trows = [[html.escape(t["kind"]), _fmt(t["count"]), _fmt(t["exposure_frames"]), _ci(t, "rate_per_frame"),
              _ci(t, "rate_per_s"), _ci(t, "rate_per_e_per_A2"), _ci(t, "cross_section_barn")] for t in trans]
    drows = []
    for name, w in sd["dwell"].items():
        drows.append([name, _fmt(w["exposure_frames"]), _fmt(w["exits"]),
                      f"{_fmt(w['mean_frames'])} [{_fmt(w['mean_frames_ci95'][0])}, {_fmt(w['mean_frames_ci95'][1])}]",
                      f"{_fmt(w['mean_s'])} [{_fmt(w['mean_s_ci95'][0])}, {_fmt(w['mean_s_ci95'][1])}]",
                      f"{_fmt(w['mean_e_per_A2'])} [{_fmt(w['mean_e_per_A2_ci95'][0])}, "
                      f"{_fmt(w['mean_e_per_A2_ci95'][1])}]"])
    erows = [[html.escape(t["kind"]), _fmt(t["count"]), _ci(t, "rate_per_frame"), _ci(t, "rate_per_e_per_A2"),
              _ci(t, "cross_section_barn")] for t in sd["events"]]
    crows = [[_fmt(c["id"]), c["kind"], f"{c['first_frame']}–{c['last_frame']}", _fmt(c["frames_known"]),
              _fmt(c["frames_unknown"]), html.escape(", ".join(str(t) for t in c["members"][:12])
                                                     + (" …" if len(c["members"]) > 12 else "")),
              html.escape(" → ".join(f"{h['formula'] or '?'} ({h['size']} Si, frames {h['from_frame']}–{h['to_frame']})"
                                     for h in c["history"][:8]) + (" …" if len(c["history"]) > 8 else ""))]
             for c in sd.get("clusters", [])[:MAX_CLUSTER_ROWS]]
    more = len(sd.get("clusters", [])) - len(crows)
    clusters_html = ("<h2>Dimers and clusters (followed as one object; full list in stats.json)</h2>"
                     + _table(crows, ["id", "kind", "frames", "known", "unknown", "member tracks",
                                      "history (formula, members observed)"])
                     + (f"<p class='note'>{more} more in stats.json.</p>" if more > 0 else "")) if crows else ""
    stats_div = Div(text=CSS + "<h2>Dopant transitions (95 % intervals, exact Poisson; exposure censored at each "
                    "track's end)</h2>" + _table(trows, ["transition", "n", "exposure (frames)", "per frame",
                                                         "per s", "per e/Å²", "cross-section (barn)"])
                    + "<h2>Dwell times per state</h2>" + _table(drows, ["state", "observed (frames)", "exits",
                                                                       "mean (frames)", "mean (s)", "mean (e/Å²)"])
                    + "<h2>Events by kind (rates over all dopants' observed exposure)</h2>"
                    + _table(erows, ["event", "n", "per frame", "per e/Å²", "cross-section (barn)"])
                    + clusters_html
                    + "<p class='note'>A dopant is a tracked Si; its state is its number of bonded C (3-fold, "
                      "4-fold), or dimer / cluster when bonded to heavy atoms. Frames whose verdict is not ok "
                      "are unknown"
                      + (f"; so are runs shorter than {sd['method']['min_run_frames']} frames"
                         if sd['method']['min_run_frames'] > 1 else "")
                      + f"; gaps longer than {sd['method']['max_gap_frames']} frames end a run of observation. "
                      f"1 barn = 1e-8 Å².</p>",
                    width=1100, name="statistics")

    # ---- gallery and representative frame: frames to read
    ev_sorted = sorted(events, key=lambda e: (-(e.get("confidence") or 0), e.get("frame", 0)))[:max_gallery]
    ev_sorted.sort(key=lambda e: e.get("frame", 0))
    before_of = {}                                 # the newest frame before the event's first change
    for k, e in enumerate(ev_sorted):
        f0 = int(e.get("first_frame", -1)) if int(e.get("first_frame", -1)) >= 0 else int(e["frame"])
        prev = seqs[seqs < f0]
        before_of[k] = int(prev[-1]) if len(prev) else None
    ok_seqs = seqs[[not r.get("error") for r in frames]] if len(frames) else seqs
    rep_seq = None
    if len(hist.tracks) and len(ok_seqs):
        known = np.bincount(hist.known()[1], minlength=len(hist.frames))
        okcol = np.isin(hist.frames.seq, ok_seqs)
        rep_seq = int(hist.frames.seq[np.argmax(np.where(okcol, known, -1))])
    elif len(ok_seqs):
        rep_seq = int(ok_seqs[len(ok_seqs) // 2])
    wanted = ({int(e["frame"]) for e in ev_sorted} | {b for b in before_of.values() if b is not None}
              | ({rep_seq} if rep_seq is not None else set()))
    if (d / "gallery.npz").exists():               # written live (engine.stats_live): crops kept at the time
        items = load_gallery(d / "gallery.npz")[:max_gallery]
        wanted = {rep_seq} if rep_seq is not None else set()
    else:
        items = None
    atoms = _atoms_of_frames(d / "atoms.csv", wanted) if (d / "atoms.csv").exists() else {}
    images = _images_of_frames(summary.get("input"), wanted, ps if acq.get("pixel_size_source") == "--pixel-size option"
                               else None)
    if (d / "representative.npz").exists():
        with np.load(d / "representative.npz", allow_pickle=False) as z:
            rep_seq = int(z["seq"])
            images[rep_seq] = z["image"]
            atoms[rep_seq] = {"xy": z["xy"], "species": z["species"].astype(object)}
    if items is None:
        series = str(acq.get("series", ""))
        gf = {s: _gallery_frame(s, images[s], atoms[s], ps, series) for s in images if s in atoms}
        items = [gallery_item(e, gf.get(before_of[k]), gf[int(e["frame"])]) for k, e in enumerate(ev_sorted)
                 if int(e["frame"]) in gf]
    gallery = gallery_layout(items)
    rep = []
    if rep_seq is not None and rep_seq in images:
        img = images[rep_seq]
        a = atoms.get(rep_seq, {"xy": np.zeros((0, 2)), "species": np.zeros(0, object)})
        xy, sp = a["xy"], a["species"]
        f = max(1, int(np.ceil(max(img.shape) / REPRESENTATIVE_MAX_PX)))
        if f > 1:
            hh, ww = (img.shape[0] // f) * f, (img.shape[1] // f) * f
            img = img[:hh, :ww].reshape(hh // f, f, ww // f, f).mean((1, 3))
            xy = (xy + 0.5) / f - 0.5
        rep = [crop_figure(img, xy, sp, f"frame {rep_seq}", pixel_size_A=ps * f,
                           size_px=min(700, max(520, img.shape[1])), name="representative"),
               Div(text="<p class='note'>The frame with the most dopants in a known state; atoms as analysed "
                        "(C cyan, Si orange, other magenta), bonds drawn between atoms closer than "
                        f"{BOND_CUTOFF_A} Å.</p>", width=1100)]
    else:
        rep = [Div(text="<p class='note'>No representative frame: the analysed input is not readable.</p>")]

    layout = column(head, stats_div, row(_rates_plot(trans), _markov_plot(sd["markov"])),
                    Div(text=CSS + "<h2>Dopant state time-line</h2>", width=1100), _timeline(hist),
                    Div(text=CSS + f"<h2>Event gallery ({len(items)} of {len(events)} events; before / "
                        "after, atoms coloured as on the dashboard: C cyan, C not 3-bonded orange, Si 3-fold red, "
                        f"Si 4-fold yellow; bonds between atoms closer than {BOND_CUTOFF_A} Å)</h2>", width=1100),
                    *gallery, Div(text=CSS + "<h2>Representative frame</h2>", width=1100), *rep)
    out = Path(html_path) if html_path else d / "report.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    text = standalone_html(layout, title=f"stemwatch report {acq.get('series', d.name)}")
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, out)
    return out


def report_command(target: str, html_out: str | None = None, dose_e_per_A2: float | None = None,
                   analysis_dir: str | None = None, progress: bool = True, pixel_size_A: float | None = None) -> Path:
    """``stemwatch report``: an analyze folder -> report; a recording / image file -> analyse into
    ``analysis_dir`` (default ``NAME.analysis/`` beside it) first."""
    p = Path(target)
    if not p.exists():
        raise ReportError(f"no such file or folder: {target}")
    if p.is_dir() and (p / "frames.csv").exists():
        return build_report(p, html_out, dose_e_per_A2)
    if p.is_dir():
        raise ReportError(f"{target}: not an analyze output folder (no frames.csv)")
    from engine.analyze import analyze_file

    out_dir = Path(analysis_dir) if analysis_dir else p.with_name(p.name.split(".")[0] + ".analysis")
    analyze_file(p, out_dir, progress=progress, dose_e_per_A2=dose_e_per_A2, pixel_size_A=pixel_size_A)
    return build_report(out_dir, html_out, dose_e_per_A2)


def standalone_html(layout, title: str) -> str:
    """``bokeh.embed.file_html`` of ``layout`` with its own current document.

    ``file_html`` asks ``bokeh.io.curdoc()``, which returns the top of a process-wide stack of
    patched documents. Bokeh's ``patch_curdoc`` does not pop its entry when the code inside it
    raises, so one failed server callback (a session closed under load, in the live dashboard of
    the same process) leaves a dead document there for good and every later report failed with
    "Patched curdoc has been previously destroyed". A live document of our own on top makes the
    report independent of that."""
    from bokeh.document import Document
    from bokeh.embed import file_html
    from bokeh.io.doc import patch_curdoc
    from bokeh.resources import INLINE

    own = Document()
    with patch_curdoc(own):
        return file_html(layout, resources=INLINE, title=title)
