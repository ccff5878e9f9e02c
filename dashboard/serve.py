"""``stemwatch serve``: live analysis of a frame stream (:class:`engine.service.LiveService`), events on a
ZeroMQ PUB socket, and the operator dashboard.

It lives in the dashboard package because it composes the engine with the screen: the engine never
imports the dashboard (docs/architecture.md). Light module: the service, Bokeh and ZeroMQ are
imported inside the handler.
"""

from __future__ import annotations

import sys

from engine.cli import add_engine_options, config_from_args
from streamer.cli import ENDPOINT_HELP, add_record_mode


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
    cfg = config_from_args(args)
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

        if args.lossless:
            from streamer.lossless import check_lossless_endpoint

            check_lossless_endpoint(args.connect or args.bind)
        check_target(args.record, args.append, args.overwrite)
    svc = LiveService(cfg, args.connect or args.bind, record_path=args.record,
                      events_endpoint=args.events or None, bind=bool(args.bind),
                      socket_type="SUB" if args.sub else "PULL", curve=curve, events_curve=events_curve,
                      dose_e_per_A2=args.dose,
                      record_mode="append" if args.append else "overwrite" if args.overwrite else "new",
                      recordings_dir=args.recordings_dir)
    dash = None
    stop = threading.Event()
    log_fh = None
    # SIGTERM stops like Ctrl-C; the previous handler comes back when serve returns (a caller in the
    # same process keeps its own), and only the main thread may set one
    old_term = (signal.signal(signal.SIGTERM, lambda *a: stop.set())
                if threading.current_thread() is threading.main_thread() else None)
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
        last_stats = time.time()
        while not stop.is_set():
            if args.stats_dir and time.time() - last_stats >= args.stats_every_s:
                last_stats = time.time()
                try:
                    svc.stats.write(args.stats_dir)
                except OSError as exc:
                    print(f"stemwatch serve: cannot write statistics to {args.stats_dir}: {exc}", file=sys.stderr)
            if args.duration_s is not None and time.time() - t0 >= args.duration_s:
                break
            if args.until_end and series_done(svc.status()):
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
        if log_fh is not None:
            log_fh.close()
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
        if args.stats_dir:
            try:
                svc.stats.write(args.stats_dir)
            except OSError as exc:
                print(f"stemwatch serve: cannot write statistics to {args.stats_dir}: {exc}", file=sys.stderr)
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


def series_done(st: dict) -> bool:
    """A series has ended (its ``end`` arrived) and the analysis has caught up: every frame received
    was analysed, failed, or was dropped or skipped for analysis."""
    settled = st["frames_analysed"] + st["errors"] + st["dropped_for_analysis"] + st["paused_skipped"]
    return st["receiver"]["series_ended"] > 0 and settled >= st["frames_received"]


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


def register(sub) -> None:
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
    p.add_argument("--until-end", action="store_true",
                   help="stop once a series has ended and every frame received was analysed or dropped "
                        "(a scripted acquisition: analyse one series, then exit)")
    p.add_argument("--no-dashboard", action="store_true", help="run headless (no Bokeh server)")
    p.add_argument("--stats-dir", metavar="DIR", default=None,
                   help="keep the dopant statistics (stats.json, transitions.csv) of the session up to date in DIR")
    p.add_argument("--stats-every-s", type=float, default=5.0, metavar="S",
                   help="how often --stats-dir is rewritten (default %(default)s s)")
    p.add_argument("--dose", type=float, default=None, metavar="E_PER_A2",
                   help="electron dose per frame in e/A^2 for the statistics (default: the series metadata)")
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
    add_engine_options(p)
    try:
        from dashboard.cli import add_dashboard_arguments

        add_dashboard_arguments(p)
    except ImportError:  # dashboard package absent: headless only
        p.set_defaults(no_dashboard=True, no_browser=True)
    p.set_defaults(func=_serve)
