"""What the operator is alarmed about: the banner's event, acknowledgement, muted kinds, the log filter.

Plain logic over the hub's :class:`dashboard.render.EventRow` list, one :class:`AlarmState` per
browser tab (acknowledging or muting in one tab does not silence another operator's screen).

* Only **transformations** (``engine.track.categories``) of the **current series** can raise the
  banner or the sound; bookkeeping (an atom drifted in or out of the field, a track reset) never does.
* The banner shows the newest transformation that is neither acknowledged nor of a muted kind, in
  the colour of its severity (1 low, 2 medium, 3 high).
* *Acknowledge* clears the banner's event and every older one; *mute* silences a kind for the rest of
  the tab's session (its events stay in the log).
* The log hides bookkeeping unless the operator ticks *show bookkeeping*.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field

from engine.track.categories import BOOKKEEPING, SEVERITY_NAMES, category_of, severity_of

#: banner background per severity (text stays dark on all of them)
SEVERITY_COLOURS = {1: "#fff176", 2: "#ffb300", 3: "#ff5252"}


def category(row) -> str:
    e = row.event
    return getattr(e, "category", "") or category_of(e.kind, e.before, e.after)


def severity(row) -> int:
    e = row.event
    return severity_of(e.kind, e.before, e.after)


@dataclass
class AlarmState:
    """One tab's acknowledgements and muted kinds (see the module docstring)."""

    acked_upto: int = 0                          # every event key <= this is acknowledged
    muted: set = field(default_factory=set)      # event kinds muted for this session

    def alarms(self, rows, series: str | None) -> list:
        """Transformations of ``series`` that may alarm (not acknowledged, kind not muted), oldest first."""
        return [r for r in rows if (series is None or r.series == series) and category(r) != BOOKKEEPING
                and r.key > self.acked_upto and r.event.kind not in self.muted]

    def banner_row(self, rows, series: str | None):
        """The newest alarm, or None."""
        a = self.alarms(rows, series)
        return a[-1] if a else None

    def acknowledge(self, key: int) -> None:
        """Acknowledge the event ``key`` and everything older."""
        self.acked_upto = max(self.acked_upto, int(key))

    def mute(self, kind: str) -> None:
        self.muted.add(str(kind))

    def unmute_all(self) -> None:
        self.muted.clear()


def log_rows(rows, show_bookkeeping: bool) -> list:
    """The rows the event log shows (bookkeeping hidden unless asked for)."""
    return list(rows) if show_bookkeeping else [r for r in rows if category(r) != BOOKKEEPING]


def banner_html(row, alarms: int, n_events: int, now: float, flash: bool, earlier=None, muted=()) -> str:
    """The banner: the newest unacknowledged transformation in its severity colour, or a calm line.

    ``alarms``: how many transformations wait to be acknowledged; ``earlier``: other recent alarms
    (newest first); ``muted``: the kinds muted in this tab (listed so that nobody forgets them).
    """
    from dashboard.render import event_label
    mute_note = ""
    if muted:
        mute_note = (f' <span class="muted">· muted: {html.escape(", ".join(event_label(k) for k in sorted(muted)))}'
                     '</span>')
    if row is None:
        return ('<div class="banner calm">No unacknowledged transformation · watching the dopants '
                f'<span class="muted">({n_events} event{"s" if n_events != 1 else ""} in the log; '
                f'atoms entering or leaving the field are bookkeeping and never alarm)</span>{mute_note}</div>')
    e = row.event
    sev = severity(row)
    age = max(0.0, now - row.t_seen)
    cls = f"banner alert sev{sev} {'flash' + str(row.key % 2) if flash else 'steady'}"
    style = f"background: {SEVERITY_COLOURS.get(sev, SEVERITY_COLOURS[2])};"
    more = ""
    if earlier:
        items = [f"{event_label(r.event.kind)} #{r.event.atom_id} (frame {r.event.frame})" for r in earlier]
        more = f'<div class="muted">also unacknowledged: {html.escape(" · ".join(items))}</div>'
    return (f'<div class="{cls}" style="{style}" data-severity="{SEVERITY_NAMES.get(sev, "")}">'
            f'<b>⚠ {html.escape(event_label(e.kind))}</b> <span class="sev">[{SEVERITY_NAMES.get(sev, "")}]</span> · '
            f'track #{e.atom_id} · {html.escape(str(e.before))} → {html.escape(str(e.after))} · frame {e.frame} · '
            f'series {html.escape(str(row.series))} · at ({e.x_A:.1f}, {e.y_A:.1f}) Å · confidence {e.confidence:.2f} '
            f'<span class="muted">· {age:.0f} s ago · {alarms} unacknowledged</span>{mute_note}{more}</div>')
