"""Sub-commands of the engine: ``analyze`` (offline), ``serve`` (live), ``evaluate`` (vs ground truth).

Light module: numpy, the network backends, Bokeh and ZeroMQ are imported inside the handlers.
"""

from __future__ import annotations

import argparse
import sys

from streamer.cli import ENDPOINT_HELP, add_allow_partial, add_file_options, add_record_mode


def _add_engine_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("analysis")
    g.add_argument("--backend", choices=("auto", "tensorrt", "onnx"), default="auto",
                   help="inference backend (default %(default)s: TensorRT when a GPU works, else ONNX Runtime CPU)")
    g.add_argument("--model", metavar="FILE", default=None, help="ONNX model (default: the shipped one)")
    g.add_argument("--k-of-n", nargs=2, type=int, metavar=("K", "N"), default=None,
                   help="debounce: a new state must hold K of the last N frames (default: config, 3 4)")
    g.add_argument("--min-confidence", type=float, default=None, metavar="C",
                   help="events below this confidence are not raised (default: config, 0.5)")
    g.add_argument("--config", metavar="JSON", default=None,
                   help="JSON file of configuration overrides by section, e.g. "
                        '{"tracking": {"memory_frames": 4}, "chemistry": {"prob_threshold": 0.4}}')


def _config(args):
    import json

    from stemwatch.config import Config

    from stemwatch.errors import UserError

    cfg = Config()
    if getattr(args, "config", None):
        with open(args.config) as fh:
            try:
                overrides = json.load(fh)
            except (ValueError, UnicodeDecodeError) as exc:
                raise UserError(f"--config {args.config}: not valid JSON ({exc})") from None
        if not isinstance(overrides, dict):
            raise UserError(f"--config {args.config}: expected a JSON object of sections")
        for section, values in overrides.items():
            _check_overrides(args.config, cfg, section, values)
            if section == "events" and "k_of_n" in values:
                values = {**values, "k_of_n": tuple(values["k_of_n"])}
            try:
                cfg = cfg.replace(**{section: values})
            except (TypeError, ValueError, KeyError, AttributeError) as exc:
                raise UserError(f"--config {args.config}: section {section!r}: {exc}") from None
    inf = {"backend": args.backend}
    if args.model:
        inf["model_path"] = args.model
    cfg = cfg.replace(inference=inf)
    ev = {}
    if args.k_of_n:
        ev["k_of_n"] = tuple(args.k_of_n)
    if args.min_confidence is not None:
        ev["min_confidence"] = float(args.min_confidence)
    if ev:
        cfg = cfg.replace(events=ev)
    k, n = cfg.events.k_of_n
    if not 1 <= k <= n:
        raise SystemExit(f"--k-of-n: need 1 <= K <= N, got {k} {n}")
    return cfg


def _check_overrides(path, cfg, section, values) -> None:
    """A ``--config`` section: known section, known fields, values of the field's type (a number
    for a number, finite). One clear line (UserError) otherwise; the ranges are Config's business."""
    import dataclasses
    import math

    from stemwatch.errors import UserError

    if not dataclasses.is_dataclass(getattr(cfg, section, None)):
        known = ", ".join(f.name for f in dataclasses.fields(cfg))
        raise UserError(f"--config {path}: unknown section {section!r} (known: {known})")
    if not isinstance(values, dict):
        raise UserError(f"--config {path}: section {section!r} must be a JSON object of settings")
    current = getattr(cfg, section)
    names = {f.name for f in dataclasses.fields(current)}
    for key, value in values.items():
        if key not in names:
            raise UserError(f"--config {path}: unknown setting {section}.{key} (known: {', '.join(sorted(names))})")
        default = getattr(current, key)
        bad = False
        if isinstance(default, bool):
            bad = not isinstance(value, bool)
        elif isinstance(default, (int, float)):
            bad = (isinstance(value, bool) or not isinstance(value, (int, float))
                   or (isinstance(default, int) and not isinstance(default, bool) and isinstance(value, float)
                       and not value.is_integer()) or not math.isfinite(value))
        elif isinstance(default, str):
            bad = not isinstance(value, str)
        elif isinstance(default, (tuple, list)):
            bad = not isinstance(value, (list, tuple))
        if bad:
            raise UserError(f"--config {path}: {section}.{key} = {json_short(value)} is not a valid value "
                            f"(expected {type(default).__name__}, like the default {default!r})")


def json_short(v) -> str:
    import json

    text = json.dumps(v)
    return text if len(text) <= 40 else text[:37] + "..."


# ------------------------------------------------------------------------------------------- analyze
def _analyze(args) -> int:
    from engine.analyze import analyze_file

    from streamer.cli import check_pixel_size
    from streamer.importers import FileImportError

    check_pixel_size(args.pixel_size)
    cfg = _config(args)
    try:
        summary = analyze_file(args.input, args.out, cfg, pixel_size_A=args.pixel_size, key=args.key,
                               limit=args.limit, progress=not args.quiet)
    except (FileNotFoundError, FileImportError) as exc:
        print(f"stemwatch analyze: {exc}", file=sys.stderr)
        return 2
    from streamer.cli import report_partial

    partial = report_partial("analyze", summary, args.allow_partial)
    print(f"{summary['frames']} frames ({summary['frames_with_error']} with errors), "
          f"{summary['atoms_per_frame']:.0f} atoms/frame, {summary['tracks']} tracks, "
          f"{summary['events']} events {summary['events_by_kind']}, "
          f"{summary['frames_per_s'] or 0:.1f} frames/s on {summary['backend']}")
    print(f"wrote {args.out}/atoms.csv, events.jsonl, frames.csv, summary.json")
    if partial:
        return partial
    return 0 if summary["frames"] > summary["frames_with_error"] else 1


# ------------------------------------------------------------------------------------------- serve
def _serve(args) -> int:
    import json
    import logging
    import signal
    import threading
    import time

    from engine.service import LiveService

    from stemwatch.errors import UserError
    from streamer.cli import check_curve_options

    check_curve_options(args)
    cfg = _config(args)
    if args.lossless:
        cfg = cfg.replace(stream={"recorder_policy": "block"})
    curve = events_curve = None
    if args.curve_secret or args.events_curve_secret or args.events_curve_allow:
        from streamer.security import Curve
    if args.curve_secret:
        curve = Curve(secret_key_file=args.curve_secret, server_public_key_file=args.curve_server_key,
                      allowed_clients_dir=args.curve_allow)
        if args.bind and not args.curve_allow:
            print("stemwatch serve: warning: CURVE on the frame socket without --curve-allow: encrypted, but any "
                  "publisher that knows this server's public key may send", file=sys.stderr)
    if args.events_curve_secret or args.events_curve_allow:
        secret = args.events_curve_secret or args.curve_secret
        if not secret:
            raise UserError("--events-curve-allow needs --events-curve-secret (or --curve-secret)")
        if not args.events:
            raise UserError("events CURVE options given but --events is ''")
        events_curve = Curve(secret_key_file=secret, allowed_clients_dir=args.events_curve_allow)
        if not args.events_curve_allow:
            print("stemwatch serve: warning: CURVE on the events socket without --events-curve-allow: encrypted, but "
                  "any subscriber that knows this server's public key may listen", file=sys.stderr)
    if args.record:
        from streamer.recording import check_target

        check_target(args.record, args.append, args.overwrite)
    svc = LiveService(cfg, args.connect or args.bind, record_path=args.record,
                      events_endpoint=args.events or None, bind=bool(args.bind),
                      socket_type="SUB" if args.sub else "PULL", curve=curve, events_curve=events_curve,
                      record_mode="append" if args.append else "overwrite" if args.overwrite else "new",
                      recordings_dir=args.recordings_dir)
    dash = None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    try:
        svc.start()
        print(f"analysing {svc.endpoint} on {svc.pipeline.backend_description}", file=sys.stderr)
        if svc.events_endpoint:
            print(f"events: PUB {svc.events_endpoint} (topic 'event', msgpack; docs/tracking.md)", file=sys.stderr)
        if not args.no_dashboard:
            from dashboard.cli import dashboard_config, open_browser
            from dashboard.server import DashboardServer

            dcfg = dashboard_config(cfg, args).dashboard
            dash = DashboardServer(dcfg, controller=svc)
            try:
                url = dash.start()
            except RuntimeError as exc:       # the port is busy, or the address cannot be bound
                from stemwatch.errors import UserError

                dash = None
                raise UserError(f"{exc} (choose another --port)") from None
            print(f"dashboard: {url}", file=sys.stderr, flush=True)
            if not args.no_browser:
                open_browser(url)
        if args.events_log:
            log_fh = open(args.events_log, "a")

            def write_events(result, _status):
                for e in result.events:
                    log_fh.write(json.dumps({"series": result.series, **e.to_dict()}) + "\n")
                if result.events:
                    log_fh.flush()

            svc.add_listener(write_events)
        t0 = time.time()
        last = 0.0
        while not stop.is_set():
            if args.duration_s is not None and time.time() - t0 >= args.duration_s:
                break
            stop.wait(0.2)
            if args.quiet or time.time() - last < 2.0:
                continue
            last = time.time()
            st = svc.status()
            lat = st["latency_s"].get("tracking", {})
            print(f"[{last - t0:7.1f}s] series={st['series'] or '-'} data {st['data_fps']:.1f} fps, analysed "
                  f"{st['analysed_fps']:.1f} fps, latency p50/p99 {1e3 * lat.get('p50', float('nan')):.0f}/"
                  f"{1e3 * lat.get('p99', float('nan')):.0f} ms, dropped {st['dropped_for_analysis']}, "
                  f"gaps {st['gap_count']}, events {st['events']}, tracks {st['tracks']}"
                  + (f", REC {st['recorder']['written']}" if st["recorder"]["recording"] else "")
                  + "".join(f", {name} {n}" for name, n in (
                      ("REC LOST", st["recorder"]["lost"]), ("malformed", st["malformed_total"]),
                      ("refused handshakes", st["receiver"].get("handshake_failures", 0)),
                      ("analysis errors", st["errors"])) if n),
                  file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        if dash is not None:
            dash.stop()
        svc.stop()
        logging.getLogger(__name__).info("stopped")
    st = svc.status()
    print(final_account(st), file=sys.stderr)
    rec = st["recorder"]
    if rec.get("path") and (rec["lost"] or rec["error"]):          # a recording was made and is incomplete
        print("stemwatch serve: the recording is incomplete: "
              + (f"{rec['lost']} message(s) lost by the recorder" if rec["lost"] else "")
              + (f"; {rec['error']}" if rec["error"] else "")
              + ("" if args.lossless else " (use --lossless to slow the sender instead of losing)"), file=sys.stderr)
        return 3
    return 0


def final_account(st: dict) -> str:
    """What ``serve`` says at exit: everything received, analysed, dropped or lost, by reason."""
    rx = st.get("receiver", {})
    rec = st["recorder"]
    malformed = ", ".join(f"{k} {v}" for k, v in sorted(st.get("malformed", {}).items())) or "none"
    lines = [
        "final account:",
        f"  frames received {st['frames_received']}, analysed {st['frames_analysed']}, "
        f"dropped for analysis {st['dropped_for_analysis']} (only the newest frame is analysed)"
        + (f", skipped while paused {st['paused_skipped']}" if st.get("paused_skipped") else ""),
        f"  gaps {st['gap_count']} (missing frames {st['missing_frames']}), stalls {st['stalls']}",
        f"  malformed messages {st['malformed_total']}: {malformed}",
        f"  refused handshakes {rx.get('handshake_failures', 0)}, peer disconnects {rx.get('peer_disconnects', 0)}",
        f"  analysis errors {st['errors']}" + (f" (last: {st['last_error']})" if st.get("last_error") else ""),
        f"  events {st['events']} (published {st['events_published']})",
    ]
    if rec.get("path") or rec.get("written") or rec.get("lost"):
        lines.append(f"  recorder: written {rec['written']} message(s) to {rec.get('path')}, LOST {rec['lost']}"
                     + (f", error: {rec['error']}" if rec.get("error") else ""))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- evaluate
def _evaluate(args) -> int:
    import json

    from engine.evaluate import evaluate, format_report

    report = evaluate(args.out_dir, args.ground_truth, match_radius_A=args.match_radius,
                      max_latency_frames=args.max_latency, warmup_frames=args.warmup, end_margin_frames=args.end_margin)
    print(format_report(report))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)
        print(f"wrote {args.json}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("analyze", help="analyse a recording or image stack: atoms.csv, events.jsonl, summary.json",
                       description="Run the full pipeline (network -> atoms -> lattice graph -> tracks -> events) on "
                       "every frame of INPUT (a stemwatch recording, .npy/.npz, TIFF stack, EMD HDF5 or Nion .ndata) "
                       "and write atoms.csv (frame,atom_id,x,y,species,coordination,confidence; x = column, "
                       "y = row in input pixels), events.jsonl, frames.csv and summary.json to --out "
                       "(docs/tracking.md).")
    p.add_argument("input", help="recording or image file")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    add_file_options(p, frame_time=False)
    p.add_argument("--limit", type=int, default=None, metavar="N", help="analyse at most N frames")
    add_allow_partial(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_engine_options(p)
    p.set_defaults(func=_analyze)

    p = sub.add_parser("serve", help="live analysis of a frame stream, events on a ZeroMQ PUB socket, dashboard",
                       description="Receive frames (protocol v1), analyse the newest one continuously, publish "
                       "events (msgpack on a PUB socket, topic 'event'; docs/tracking.md) and show the operator "
                       "dashboard. Ctrl-C stops. At exit it prints a final account of what was received, analysed, "
                       "dropped and lost; exit status 3 if the recorder lost anything.")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--connect", metavar="ENDPOINT", help="connect to a publisher that binds (" + ENDPOINT_HELP + ")")
    g.add_argument("--bind", metavar="ENDPOINT", help="bind and let publishers connect")
    p.add_argument("--sub", action="store_true", help="SUB socket (publisher uses PUB) instead of PULL")
    p.add_argument("--events", default="tcp://127.0.0.1:5557", metavar="ENDPOINT",
                   help="bind the events PUB socket here (default %(default)s; '' = none)")
    p.add_argument("--events-log", metavar="FILE", default=None, help="also append every event as JSON lines here")
    p.add_argument("--record", metavar="FILE", default=None, help="record every message to FILE from the start")
    add_record_mode(p, "--record")
    p.add_argument("--lossless", action="store_true",
                   help="the recorder never drops: when the disk falls behind, slow the sender (PUSH back-pressure) "
                        "instead (analysis always takes the newest frame)")
    p.add_argument("--recordings-dir", metavar="DIR", default="recordings",
                   help="the dashboard's Record control writes only here, under names it generates "
                        "(default %(default)s)")
    p.add_argument("--duration-s", type=float, default=None, metavar="S", help="stop after S seconds")
    p.add_argument("--no-dashboard", action="store_true", help="run headless (no Bokeh server)")
    p.add_argument("--quiet", action="store_true", help="no periodic status line")
    c = p.add_argument_group("CURVE encryption of the frame socket (keys from `stemwatch keys`)")
    c.add_argument("--curve-secret", metavar="FILE", help="this side's secret key file: enables CURVE")
    c.add_argument("--curve-server-key", metavar="FILE", help="when connecting: the server's public key file")
    c.add_argument("--curve-allow", metavar="DIR", help="when binding: directory of allowed client public keys")
    c = p.add_argument_group("CURVE encryption of the events PUB socket (docs/security.md)")
    c.add_argument("--events-curve-secret", metavar="FILE",
                   help="secret key file of the events socket (the CURVE server): enables CURVE on it "
                        "(default with --events-curve-allow: the --curve-secret key)")
    c.add_argument("--events-curve-allow", metavar="DIR",
                   help="directory of the public keys (*.key) of the subscribers allowed on the events socket")
    _add_engine_options(p)
    try:
        from dashboard.cli import add_dashboard_arguments

        add_dashboard_arguments(p)
    except ImportError:  # dashboard package absent: headless only
        p.set_defaults(no_dashboard=True, no_browser=True)
    p.set_defaults(func=_serve)

    p = sub.add_parser("evaluate", help="score an analyze output folder against simulator ground truth",
                       description="Detection precision/recall, localisation error, species, MOTA, IDF1, identity "
                       "switches, event precision/recall and latency of OUT_DIR (from `stemwatch analyze`) "
                       "against GROUND_TRUTH (the simulator's truth file next to a recording).")
    p.add_argument("out_dir", help="folder written by `stemwatch analyze`")
    p.add_argument("ground_truth", help="ground-truth file (or the recording it sits next to)")
    p.add_argument("--match-radius", type=float, default=0.5, metavar="A",
                   help="an atom is found when a detection lies within this distance (default %(default)s A)")
    p.add_argument("--max-latency", type=int, default=3, metavar="FRAMES",
                   help="an event counts when reported at most this many frames late (default %(default)s)")
    p.add_argument("--warmup", type=int, default=2, metavar="FRAMES",
                   help="truth events in the first FRAMES analysed frames are not counted in recall (the "
                        "state before them is not established yet; default %(default)s)")
    p.add_argument("--end-margin", type=int, default=2, metavar="FRAMES",
                   help="truth events in the last FRAMES frames are not counted in recall (no frames left to "
                        "confirm them; default %(default)s)")
    p.add_argument("--json", metavar="FILE", default=None, help="also write the report as JSON")
    p.set_defaults(func=_evaluate)
