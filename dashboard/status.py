"""The status panel: from the live service's ``status()`` dict to an HTML table.

The service's dict is read leniently (keys documented in docs/dashboard.md, "Status keys"); a
missing key shows as "–", never as an error. Values that need the operator's attention are
coloured: amber (``warn``) and red (``bad``).
"""

from __future__ import annotations

import html
import math

from dashboard.status_help import HELP, live_level, title
import time
from typing import Any

_MISSING = object()
#: frames that reach the analyzer this long (s) after t_acquired come from a replay or a PC with
#: another clock: latencies are then shown relative to arrival
OLD_FRAME_S = 30.0


def get(d: Any, *paths: str, default: Any = None) -> Any:
    """First value found at any of the dotted ``paths`` in nested dicts ``d`` (else ``default``)."""
    for path in paths:
        cur = d
        for key in path.split("."):
            if isinstance(cur, dict) and key in cur:
                cur = cur[key]
            else:
                cur = _MISSING
                break
        if cur is not _MISSING and cur is not None:
            return cur
    return default


def _num(v: Any, fmt: str = "{:.1f}") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    try:
        return fmt.format(v)
    except (TypeError, ValueError):
        return html.escape(str(v))


def _ms(v: Any) -> str:
    return "–" if v is None else _num(1000.0 * float(v), "{:.0f}")


def latency_rows(status: dict) -> list[tuple[str, float | None, float | None]]:
    """(stage, p50_s, p99_s) rows from ``status['latency_s']`` = {stage: {'p50': s, 'p99': s}}
    (also accepts ``{stage: (p50, p99)}``), in the order the service gives them."""
    lat = get(status, "latency_s", "latency", default={}) or {}
    rows = []
    if isinstance(lat, dict):
        for stage, v in lat.items():
            if isinstance(v, dict):
                rows.append((str(stage), v.get("p50"), v.get("p99")))
            elif isinstance(v, (list, tuple)) and len(v) >= 2:
                rows.append((str(stage), v[0], v[1]))
    return rows


def summarize(status: dict, local: dict) -> dict:
    """Flatten the service status plus the dashboard's own numbers (``local``) into display fields.

    local keys: analysed_fps, display_fps, display_p50_s, display_p99_s, latency_total_p50_s,
    latency_total_p99_s, last_frame_age_s, tabs, coalesced, paused_view (bool), series, frame_seq.
    """
    malformed = get(status, "malformed_total", "receiver.malformed_total", "stream.malformed_total")
    mal_by = get(status, "malformed", "receiver.malformed", "stream.malformed", default={})
    if malformed is None and isinstance(mal_by, dict):
        malformed = sum(mal_by.values()) if mal_by else None
    rec = get(status, "recorder", default={}) or {}
    return {
        "endpoint": get(status, "endpoint", "source.endpoint", "receiver.endpoint", "stream.endpoint"),
        "series": get(status, "series", "source.series", "receiver.series", "stream.series") or local.get("series"),
        "data_fps": get(status, "data_fps", "fps.data", "receiver.fps", "stream.fps"),
        "analysed_fps": get(status, "analysed_fps", "fps.analysed", default=local.get("analysed_fps")),
        "display_fps": local.get("display_fps"),
        "dropped": get(status, "dropped_for_analysis", "receiver.dropped_for_analysis",
                       "stream.dropped_for_analysis"),
        "gaps": get(status, "gap_count", "gaps", "receiver.gap_count", "stream.gap_count"),
        "missing": get(status, "missing_frames", "receiver.missing_frames", "stream.missing_frames"),
        "stalls": get(status, "stalls", "receiver.stalls", "stream.stalls"),
        "stalled": bool(get(status, "stalled", "receiver.stalled", "stream.stalled", default=False)),
        "malformed": malformed,
        "malformed_by": mal_by if isinstance(mal_by, dict) else {},
        "backend": get(status, "backend", "inference.backend"),
        "recording": bool(get(rec, "recording", "active", default=False)) if isinstance(rec, dict) else bool(rec),
        "rec_path": get(rec, "path") if isinstance(rec, dict) else None,
        "rec_written": get(rec, "written", "frames") if isinstance(rec, dict) else None,
        "rec_lost": get(rec, "lost") if isinstance(rec, dict) else None,
        "rec_error": get(rec, "error") if isinstance(rec, dict) else None,
        "rec_backlog": get(rec, "backlog") if isinstance(rec, dict) else None,
        "rec_backlog_bytes": get(rec, "backlog_bytes") if isinstance(rec, dict) else None,
        "rec_backlog_s": get(rec, "backlog_s") if isinstance(rec, dict) else None,
        "paused": bool(get(status, "paused", default=False)),
        "received": get(status, "frames_received", "receiver.frames_received", "stream.frames_received"),
        "latency": latency_rows(status),
        "last_frame_age_s": local.get("last_frame_age_s"),
        "health": status.get("health") if isinstance(status.get("health"), dict) else None,
    }


def _row(label: str, value: str, level: str = "", help_text: str = "") -> str:
    """One table row; ``label`` and ``value`` are trusted HTML built here (values escaped above).
    An amber or red row carries ``help_text`` as its hover text (what it means, what to do)."""
    cls = f' class="{level}"' if level else ""
    tip = title(help_text) if (level in ("warn", "bad") and help_text) else ""
    return f"<tr{tip}><th>{label}</th><td{cls}>{value}</td></tr>"


def status_html(status: dict, local: dict, now: float | None = None) -> str:
    """The status panel's HTML (a state pill and a two-column table)."""
    now = time.time() if now is None else now
    s = summarize(status or {}, local)
    age = s["last_frame_age_s"]
    pill_help: list[str] = []
    if s["paused"]:
        state, level = "ANALYSIS PAUSED", "warn"
        pill_help = [HELP["paused"]]
    elif s["stalled"] or (age is not None and age > 5.0):
        state, level = "STALLED · no frame for " + _num(age, "{:.0f}") + " s", "bad"
        pill_help = [HELP["stalled"].format(age=_num(age, "{:.0f}"), endpoint=s["endpoint"] or "the endpoint")]
    elif age is None:
        state, level = "WAITING FOR DATA", "warn"
        pill_help = [HELP["waiting"].format(endpoint=s["endpoint"] or "the endpoint")]
    else:
        state, level = "LIVE", "ok"
    view = ""
    if local.get("paused_view"):
        view = f'<div class="pill warn">viewing history · frame {local.get("frame_seq")}</div>'
    rows = []
    rows.append(_row("source", f"{html.escape(str(s['endpoint'] or '–'))}<br>"
                     f"series <b>{html.escape(str(s['series'] or '–'))}</b>"))
    af, dfps = s["analysed_fps"], s["data_fps"]
    lag = dfps is not None and af is not None and dfps > 0 and af < 0.9 * dfps
    rows.append(_row("frames/s", f"data {_num(dfps)} · analysed <span class='{'warn' if lag else ''}'>{_num(af)}</span>"
                     f" · display {_num(s['display_fps'])}", "warn" if lag else "",
                     HELP["lag"].format(af=_num(af), dfps=_num(dfps))))
    lat = list(s["latency"] or [])
    # A replayed recording keeps its original t_acquired (and a PC clock may be off). The service
    # then times its stages from arrival and reports the offset (clock_offset_s); older services
    # do not, and a "received" stage many seconds long says the same thing.
    svc_offset = float(get(status or {}, "clock_offset_s", default=0.0) or 0.0)
    recv = next((p50 for st, p50, _ in lat if st == "received" and p50 is not None), None)
    offset = svc_offset or (recv if recv is not None and recv > OLD_FRAME_S else 0.0)
    if not svc_offset and offset:                 # the service's numbers still include the offset
        lat = [(st, p50 - offset, p99 - offset) for st, p50, p99 in lat
               if st != "received" and p50 is not None and p99 is not None]
    disp = (local.get("display_p50_s"), local.get("display_p99_s"))   # this tab: from t_acquired
    if disp[0] is not None:
        lat.append(("display (this tab)", disp[0] - offset, disp[1] - offset))
    elif local.get("latency_total_p50_s") is not None and not lat:
        lat.append(("analysed", local["latency_total_p50_s"] - offset, local["latency_total_p99_s"] - offset))
    label = "latency p50/p99 ms<br><small>from t_acquired</small>"
    lines = []
    if offset:
        label = "latency p50/p99 ms<br><small>from arrival</small>"
        lines.append(f"<small>frames arrive {offset:.0f} s after t_acquired: a replay, or clocks out of "
                     "sync</small>")
    lines += [f"{html.escape(st)} {_ms(max(0.0, p50))} / {_ms(max(0.0, p99))}" for st, p50, p99 in lat
              if p50 is not None and p99 is not None]
    worst = max([p99 for _, _, p99 in lat if p99 is not None] + [0.0])
    period = 1.0 / dfps if isinstance(dfps, (int, float)) and dfps > 0 else None
    stages = [(st, p99) for st, _, p99 in lat if p99 is not None and not st.startswith("display")]
    worst_stage = max(stages, key=lambda t: t[1]) if stages else None
    disp_p99 = next((p99 for st, _, p99 in lat if st.startswith("display") and p99 is not None), None)
    slow = worst_stage is not None and period is not None and worst_stage[1] > period
    slow_display = disp_p99 is not None and period is not None and disp_p99 > period
    lat_help = (HELP["latency"].format(p99_ms=f"{1e3 * worst_stage[1]:.0f}", stage=worst_stage[0],
                                       period_ms=f"{1e3 * period:.0f}") if slow else
                HELP["display"].format(p99_ms=f"{1e3 * (disp_p99 or 0):.0f}") if slow_display else
                "p99 latency over 1 s: results reach the screen more than a second after acquisition. What to do: "
                "lower --max-display-fps, open the page on another PC, or use the GPU backend.")
    rows.append(_row(label, "<br>".join(lines) or "–", "warn" if (worst > 1.0 or slow or slow_display) else "",
                     lat_help))
    drops = s["dropped"]
    received = s["received"]
    frac = (float(drops) / float(received)) if isinstance(drops, (int, float)) and received else None
    drop_txt = _num(drops, "{:d}") if isinstance(drops, int) else _num(drops)   # the share: in the hover text
    rows.append(_row("dropped for analysis", drop_txt, "warn" if drops else "",
                     HELP["dropped"].format(pct=100.0 * (frac or 0.0))))
    gaps = s["gaps"]
    gaps_txt = _num(gaps, "{}")
    if s["missing"]:
        gaps_txt += f" ({s['missing']} frames missing)"
    rows.append(_row("gaps", gaps_txt, "warn" if gaps else "", HELP["gaps"].format(gaps=gaps)))
    rows.append(_row("stalls", _num(s["stalls"], "{}"), "bad" if s["stalled"] else ("warn" if s["stalls"] else ""),
                     HELP["stalled"].format(age=_num(age, "{:.0f}"), endpoint=s["endpoint"] or "the endpoint")
                     if s["stalled"] else "The stream stopped for a while earlier and came back (a pause in the "
                     "acquisition, or the network). Nothing to do unless it repeats."))
    mal = _num(s["malformed"], "{}")
    if s["malformed_by"]:
        top = sorted(s["malformed_by"].items(), key=lambda kv: -kv[1])[:3]
        mal += " <small>(" + ", ".join(f"{html.escape(str(k))}: {v}" for k, v in top) + ")</small>"
    rows.append(_row("malformed messages", mal, "warn" if s["malformed"] else "",
                     HELP["malformed"].format(n=s["malformed"])))
    mat = local.get("material")
    if mat:
        verdict, reason, frac = mat
        txt = f"<b>{html.escape(str(verdict))}</b><br><small>{html.escape(str(reason))}</small>"
        if verdict == "graphene" and frac < 1.0:
            txt += (f"<br><small>analysed only in the graphene region ({100 * frac:.0f} % of the field; "
                    "the rest is shown dimmed)</small>")
        rows.append(_row("material", txt, "" if verdict == "graphene" else "bad"))
    rows.append(_row("backend", html.escape(str(s["backend"] or "–"))))
    hl = (s.get("health") or {}).get("last")
    if hl:
        ps = hl.get("pixel_size_A")
        txt = f"{html.escape(str(hl.get('verdict')))} · scale {html.escape(str(hl.get('scale_source')))}"
        if ps:
            txt += f" {ps:.4g} Å/px"
        if hl.get("reasons"):
            txt += "<br><small>" + html.escape("; ".join(hl["reasons"])) + "</small>"
        rows.append(_row("frame health", txt, "" if hl.get("verdict") == "ok" else "warn"))
    if s["rec_error"]:
        rec, rl = f"ERROR: {html.escape(str(s['rec_error']))}", "bad"
    elif s["recording"]:
        rec = f"● recording {html.escape(str(s['rec_path'] or ''))}<br>{_num(s['rec_written'], '{}')} frames"
        if s["rec_lost"]:
            rec += f", <b>{s['rec_lost']} lost</b>"
        if s["rec_backlog"]:               # the recorder is behind: say by how much
            rec += f"<br>{s['rec_backlog']} queued"
            if s["rec_backlog_bytes"]:
                rec += f", {s['rec_backlog_bytes'] / 2**20:.0f} MB"
            if s["rec_backlog_s"]:
                rec += f", {s['rec_backlog_s']:.1f} s behind"
        rl = "rec" if not s["rec_lost"] else "bad"
    else:
        rec, rl = "off", ""
    rows.append(_row("recorder", rec, rl))
    rows.append(_row("dashboard", f"{local.get('tabs', 1)} tab(s) · {local.get('coalesced', 0)} frames "
                     "coalesced"))
    if level == "ok":                    # LIVE, but is it keeping up? (issue 15: amber rules)
        level, pill_help = live_level(False, age, worst_stage, period, drops if isinstance(drops, (int, float)) else 0,
                                      received if isinstance(received, (int, float)) else 0)
        if level == "warn":
            state = "LIVE · FALLING BEHIND"
    tip = title(" ".join(pill_help)) if pill_help else ""
    return (f'<div class="status"><div class="pill {level}" name="live_pill"{tip}>{state}</div> {view}'
            f'<table>{"".join(rows)}</table></div>')
