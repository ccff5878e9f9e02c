"""``stemwatch demo`` and the dashboard's command-line options (shared with ``stemwatch serve``).

Light module: Bokeh, the engine and the simulator are imported only inside the handler.
"""

from __future__ import annotations

import argparse

DEMO_HELP = "simulated microscope -> live analyzer -> operator dashboard in the browser (what `make demo` runs)"


def add_dashboard_arguments(p: argparse.ArgumentParser, default_port: int | None = None) -> None:
    """Options of the operator screen: ``--port``, ``--address``, ``--allow-origin``, ``--no-browser``.

    Used by ``stemwatch demo`` and ``stemwatch serve`` (dashboard/serve.py); turn them into a config
    with :func:`dashboard_config`. Defaults are the configuration's (:class:`stemwatch.config.DashboardConfig`).
    """
    from stemwatch.config import DashboardConfig

    d = DashboardConfig()
    g = p.add_argument_group("dashboard (Bokeh server, docs/dashboard.md)")
    g.add_argument("--port", type=int, default=default_port,
                   help=f"HTTP port of the dashboard (default: config, {d.port}; 0 = any free port)")
    g.add_argument("--address", default=None,
                   help=f"address to listen on (default: config, {d.address}: this computer only; 0.0.0.0 opens "
                        "it to the network, then also give --allow-origin)")
    g.add_argument("--allow-origin", action="append", default=[], metavar="HOST[:PORT]",
                   help="extra websocket origin allowed to open the page (repeatable), e.g. "
                        "operator-pc.lab:5006; localhost and 127.0.0.1 are always allowed")
    g.add_argument("--history", type=int, default=None, metavar="N",
                   help=f"frames kept for the history slider (default: config, {d.history_frames})")
    g.add_argument("--max-display-fps", type=float, default=None, metavar="F",
                   help=f"most frames per second sent to each browser tab (default {1 / d.display_period_s:g}). Lower it when the "
                        "browser runs on the analysis computer and CPU is short")
    g.add_argument("--no-browser", action="store_true", help="do not open a browser; just print the URL")


def dashboard_config(cfg, args: argparse.Namespace):
    """``cfg`` (a :class:`stemwatch.config.Config`) with the dashboard options of ``args`` applied."""
    changes = {"allow_origins": tuple(cfg.dashboard.allow_origins) + tuple(args.allow_origin or ())}
    if getattr(args, "port", None) is not None:
        changes["port"] = int(args.port)
    if getattr(args, "address", None) is not None:
        changes["address"] = str(args.address)
    if getattr(args, "history", None):
        changes["history_frames"] = int(args.history)
    fps = getattr(args, "max_display_fps", None)
    if fps:
        if not fps > 0:
            raise ValueError(f"--max-display-fps must be positive, got {fps}")
        changes["display_period_s"] = 1.0 / float(fps)
    return cfg.replace(dashboard=changes)


def open_browser(url: str) -> bool:
    """Open ``url`` in a graphical browser when this session has a display; never a text browser
    that would take over the terminal. Returns True when a browser was asked to open it."""
    import os
    import sys
    import webbrowser

    graphical = sys.platform in ("darwin", "win32") or bool(os.environ.get("DISPLAY") or
                                                              os.environ.get("WAYLAND_DISPLAY"))
    if not graphical:
        return False
    try:
        browser = webbrowser.get()
    except webbrowser.Error:
        return False
    if type(browser).__name__ in ("GenericBrowser",) and any(
            t in getattr(browser, "name", "") for t in ("lynx", "w3m", "links", "elinks", "www-browser")):
        return False
    try:
        return bool(browser.open(url, new=2))
    except Exception:
        return False


def register(sub) -> None:
    p = sub.add_parser("demo", help=DEMO_HELP, description=DEMO_HELP + ". Starts the simulator (or replays "
                       "replay_data/) on a local socket, the live analyzer on it, and the dashboard; prints the URL "
                       "and opens a browser when there is a display. Runs until Ctrl-C or --duration-s.")
    p.add_argument("--source", choices=("auto", "simulate", "replay"), default="auto",
                   help="frames from the built-in simulator (simulate), from recordings (replay), or the simulator "
                        "when it is installed and replay_data/ otherwise (auto, the default)")
    p.add_argument("--replay-data", default="replay_data", metavar="PATH",
                   help="recording or directory of recordings for --source replay (default %(default)s)")
    p.add_argument("--data-endpoint", default="tcp://127.0.0.1:5555", metavar="ENDPOINT",
                   help="local ZeroMQ endpoint between the microscope side and the analyzer (default %(default)s)")
    p.add_argument("--frame-time", type=float, default=0.2, metavar="S", help="simulated frame time in seconds (default %(default)s)")
    p.add_argument("--speed", default="1", help="replay pace: 1 = original (default), N = N times faster")
    p.add_argument("--duration-s", type=float, default=None, metavar="S",
                   help="stop after S seconds (default: run until Ctrl-C)")
    from engine.cli import add_scale_option

    add_scale_option(p)
    add_dashboard_arguments(p)
    p.set_defaults(func=_demo)

    p = sub.add_parser("report", help="one self-contained HTML session report (statistics, time-line, gallery)",
                       description="Write one self-contained HTML file (Bokeh standalone, opens offline) from a "
                       "`stemwatch analyze` output folder, or from a recording / image file (analysed first into "
                       "NAME.analysis/): acquisition, frame health, dopant state time-line, transition rates and "
                       "cross-sections with 95 % intervals, Markov matrix, event gallery, a representative frame.")
    p.add_argument("target", metavar="DIR_OR_RECORDING", help="analyze output folder, or a recording to analyse")
    p.add_argument("--out", metavar="HTML", default=None, help="report file (default DIR/report.html)")
    p.add_argument("--dose", type=float, default=None, metavar="E_PER_A2",
                   help="electron dose per frame in e/A^2 (default: what the analysis found in the metadata)")
    p.add_argument("--analysis-dir", metavar="DIR", default=None,
                   help="where a recording is analysed first (default NAME.analysis beside it)")
    p.add_argument("--pixel-size", type=float, default=None, metavar="A",
                   help="angstrom per pixel of a recording / image file without a calibration")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_report)


def _report(args: argparse.Namespace) -> int:
    import sys

    from dashboard.report import ReportError, report_command
    from streamer.importers import FileImportError

    if args.dose is not None and not args.dose > 0:
        print(f"stemwatch report: --dose must be positive, got {args.dose}", file=sys.stderr)
        return 2
    try:
        out = report_command(args.target, args.out, args.dose, args.analysis_dir, progress=not args.quiet,
                             pixel_size_A=args.pixel_size)
    except (ReportError, FileImportError, FileNotFoundError) as exc:
        print(f"stemwatch report: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from dashboard.demo import run_demo

    return run_demo(args)
