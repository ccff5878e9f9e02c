"""When the status panel's LIVE indicator turns amber or red, and the hover text that says why.

Rules (issue 15): **amber** when the p99 latency from ``t_acquired`` of any analysis stage is longer
than the frame period (1 / data frames per second: results fall behind the microscope), or when
more than 20 % of the received frames were dropped for analysis (the analysis takes the newest
frame; the rest are recorded but not analysed); **red** when the stream is stalled. Every amber or
red figure carries a hover text (an HTML ``title``) saying what it means and what to do.
"""

from __future__ import annotations

import html

#: more than this fraction of received frames dropped for analysis turns the indicator amber
DROPPED_FRACTION_WARN = 0.20

HELP = {
    "stalled": ("STALLED: no frame has arrived for {age} s. The acquisition stopped, the network link is down, "
                "or the publisher hangs. What to do: check that the microscope PC is acquiring and publishing to "
                "{endpoint}; the dashboard resumes by itself when frames arrive."),
    "latency": ("Slow: p99 latency {p99_ms} ms (stage {stage}) is longer than the frame period {period_ms} ms, so "
                "results lag behind the microscope. What to do: lower --max-display-fps, close dashboard tabs or "
                "open the page on another PC (the browser shares this PC's CPU), use the GPU backend "
                "(--backend tensorrt), or analyse binned frames."),
    "dropped": ("{pct:.0f} % of the received frames were not analysed (the analysis takes the newest frame and "
                "drops the older ones; the recording keeps every frame). The analysis is slower than the data. "
                "What to do: use the GPU backend, lower --max-display-fps, open the page on another PC, or scan "
                "more slowly. `stemwatch analyze` on the recording analyses every frame afterwards."),
    "lag": ("Analysed {af} frames/s of {dfps} frames/s received: analysis is behind and skips frames. "
            "What to do: as for dropped frames (GPU backend, fewer tabs, page on another PC)."),
    "display": ("This tab shows a frame {p99_ms} ms (p99) after it was acquired, longer than the frame period: "
                "the browser or its PC is slow (nothing is lost: newer frames replace older ones). What to do: "
                "lower --max-display-fps, close other tabs, or open the page on another PC."),
    "gaps": ("{gaps} gap(s) in the frame numbers: frames were lost before they reached this PC (network or the "
             "acquisition side). What to do: check the link and the publisher's queue; a recording made here lacks "
             "them too."),
    "malformed": ("{n} message(s) could not be read (see the reasons). What to do: check the publisher's protocol "
                  "version and frame header (docs/protocol.md)."),
    "waiting": "No frame yet. What to do: start the acquisition, or check the endpoint {endpoint}.",
    "paused": "Analysis is paused (frames are still received and recorded). Resume it with the button on the right.",
}


def title(text: str) -> str:
    """An HTML attribute with ``text`` as hover help."""
    return f' title="{html.escape(text, quote=True)}"'


def live_level(stalled: bool, age_s, worst: tuple[str, float] | None, period_s, dropped, received) -> tuple[str, list]:
    """("ok" | "warn" | "bad", [help texts]) for the LIVE indicator.

    worst : (stage, p99 seconds) of the slowest analysis stage, or None; period_s : 1 / data fps
    (None when unknown); dropped, received : frames dropped for analysis / received so far.
    """
    reasons: list[str] = []
    if stalled:
        return "bad", [HELP["stalled"].format(age="?" if age_s is None else f"{age_s:.0f}", endpoint="the endpoint")]
    level = "ok"
    if worst is not None and period_s and worst[1] > period_s:
        level = "warn"
        reasons.append(HELP["latency"].format(p99_ms=f"{1e3 * worst[1]:.0f}", stage=worst[0],
                                              period_ms=f"{1e3 * period_s:.0f}"))
    if dropped and received and dropped / received > DROPPED_FRACTION_WARN:
        level = "warn"
        reasons.append(HELP["dropped"].format(pct=100.0 * dropped / received))
    return level, reasons
