"""``stemwatch demo``: the whole chain on one computer.

Three parts, as in the lab:

* the "microscope": a subprocess publishing frames on ``--data-endpoint`` (``stemwatch simulate``,
  the built-in simulator, or ``stemwatch replay replay_data/ --loop``), in its own process so it
  competes with the analyzer only for CPU, like an acquisition PC would for the network;
* the live analyzer (:class:`engine.service.LiveService`) connected to it, on its threads;
* the dashboard (:class:`dashboard.server.DashboardServer`) subscribed to the analyzer.

It prints the URL, opens a browser when there is a display, prints a one-line summary every
5 s to stderr, and stops on Ctrl-C, SIGTERM or after ``--duration-s``, the frame source
subprocess included.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import time
from collections import Counter


def simulator_available() -> bool:
    """True when the simulator package (``engine.sim.cli``, the ``simulate`` command) is installed."""
    try:
        return importlib.util.find_spec("engine.sim.cli") is not None
    except ModuleNotFoundError:
        return False


def has_recordings(path: str | os.PathLike) -> bool:
    try:
        from streamer.replay import source_files

        return bool(source_files(path))
    except (FileNotFoundError, OSError, ImportError):
        return False


def source_command(args: argparse.Namespace) -> tuple[list[str], str]:
    """The command line of the frame source and a description of it for the operator."""
    src = args.source
    if src == "auto":
        src = "simulate" if simulator_available() else "replay"
    py = [sys.executable, "-m", "stemwatch"]
    if src == "simulate":
        if not simulator_available():
            raise SystemExit("stemwatch demo: the simulator (engine.sim) is not installed; use --source replay")
        return (py + ["simulate", "--bind", args.data_endpoint, "--frame-time", str(args.frame_time), "-q"],
                f"simulated microscope, one frame every {args.frame_time:g} s")
    if not has_recordings(args.replay_data):
        raise SystemExit(f"stemwatch demo: no recordings in {args.replay_data!r} to replay "
                         "(give --replay-data PATH, or install the simulator and use --source simulate)")
    return (py + ["replay", str(args.replay_data), "--bind", args.data_endpoint, "--loop", "--speed",
                  str(args.speed), "-q"],
            f"replay of {args.replay_data} (looping, speed {args.speed})")


def _summary_line(st: dict) -> str:
    lat = st.get("latency_s", {}) or {}
    last = list(lat.values())[-1] if lat else {}
    p50 = f"{1000 * last['p50']:.0f} ms" if last else "–"
    return (f"[demo] series {st.get('series') or '–'} · data {st.get('data_fps', 0):.1f} fps · analysed "
            f"{st.get('analysed_fps', 0):.1f} fps · frames {st.get('frames_analysed', 0)} · events "
            f"{st.get('events', 0)} · latency p50 {p50} · dropped {st.get('dropped_for_analysis', 0)}")


def run_demo(args: argparse.Namespace) -> int:
    from dashboard.cli import dashboard_config, open_browser
    from dashboard.server import DashboardServer
    from engine.service import LiveService
    from stemwatch.config import Config

    cfg = dashboard_config(Config(), args)
    if getattr(args, "scale", None):
        cfg = cfg.replace(health={"scale": args.scale})
    cmd, what = source_command(args)
    print(f"[demo] frames: {what} on {args.data_endpoint}", file=sys.stderr)
    print("[demo] loading the analyzer (network, lattice graph, tracker)…", file=sys.stderr)
    service = LiveService(cfg, endpoint=args.data_endpoint)
    dash = DashboardServer(cfg.dashboard, controller=service)
    proc = None
    events: Counter = Counter()
    analysed = [0]

    def count(result, status) -> None:          # on the analysis thread: just count
        analysed[0] += 1
        events.update(e.kind for e in result.events)

    service.add_listener(count)
    import signal
    import threading

    stop = threading.Event()

    def on_signal(signum, _frame):               # SIGTERM (and SIGINT) stop the whole demo cleanly:
        stop.set()                               # the finally below ends the simulator child too

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        url = dash.start()
        service.start()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                start_new_session=False)
        print(f"stemwatch dashboard: {url}", flush=True)
        if not args.no_browser and open_browser(url):
            print("[demo] opened it in your browser", file=sys.stderr)
        print("[demo] Ctrl-C stops" + (f"; stopping after {args.duration_s:g} s" if args.duration_s else ""),
              file=sys.stderr)
        t0 = last = time.time()
        first = False
        while (args.duration_s is None or time.time() - t0 < args.duration_s) and not stop.is_set():
            stop.wait(0.2)
            if not first and analysed[0]:
                first = True
                print(f"[demo] first frame analysed {time.time() - t0:.1f} s after start", file=sys.stderr,
                      flush=True)
            if proc.poll() is not None:
                print(f"[demo] the frame source exited with code {proc.returncode}: {' '.join(cmd)}",
                      file=sys.stderr)
                return 1
            if time.time() - last >= 5.0:
                last = time.time()
                print(_summary_line(service.status()), file=sys.stderr)
    except KeyboardInterrupt:
        print("\n[demo] stopping", file=sys.stderr)
    finally:
        if stop.is_set():
            print("\n[demo] stopping", file=sys.stderr)
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        st = service.status()
        service.stop()
        dash.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(_summary_line(st), file=sys.stderr)
    if events:
        print("[demo] events: " + ", ".join(f"{k} {v}" for k, v in events.most_common()), file=sys.stderr)
    if not st.get("frames_analysed"):
        print("[demo] no frame was analysed: is the source publishing on " + args.data_endpoint + "?",
              file=sys.stderr)
        return 1
    return 0
