"""Sub-commands of the streamer: record, replay, import, convert (export to EMD), info, monitor, keys.

This module only builds argparse parsers; each handler imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import sys

ENDPOINT_HELP = "ZeroMQ endpoint, e.g. tcp://127.0.0.1:5555, tcp://acq-pc:5555 or ipc:///tmp/frames"


def _add_source(p: argparse.ArgumentParser, replay: bool = False) -> None:
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--connect", metavar="ENDPOINT", help="connect to a publisher that binds (" + ENDPOINT_HELP + ")")
    g.add_argument("--bind", metavar="ENDPOINT", help="bind and let publishers connect")
    if replay:
        g.add_argument("--replay", metavar="SOURCE",
                       help="replay SOURCE (a recording or a directory of recordings, e.g. replay_data) in a "
                            "background thread over tcp loopback, in a loop, and monitor it")
    p.add_argument("--sub", action="store_true", help="use a SUB socket (publisher uses PUB) instead of PULL")
    from stemwatch.config import StreamConfig

    p.add_argument("--stall-timeout", type=float, default=StreamConfig().stall_timeout_s, metavar="S",
                   help="report a stall after this many seconds without a frame in an open series (default %(default)s)")


def check_pixel_size(value) -> None:
    """``--pixel-size`` must be a positive, finite number of angstrom per pixel (UserError)."""
    import math

    from stemwatch.errors import UserError

    if value is not None and not (math.isfinite(value) and value > 0):
        raise UserError(f"invalid pixel size {value}: give a positive number of angstrom per pixel")


def add_file_options(p: argparse.ArgumentParser, frame_time: bool = True) -> None:
    """``--pixel-size``, ``--frame-time`` (optional) and ``--key``: how to read an image file that has
    no calibration, no frame times, or several arrays (shared by replay/import/convert/analyze)."""
    p.add_argument("--pixel-size", type=float, default=None, metavar="A",
                   help="angstrom per pixel (needed for files without a calibration; overrides the file's)")
    if frame_time:
        p.add_argument("--frame-time", type=float, default=0.2, metavar="S",
                       help="s between frames for files without times (default %(default)s)")
    p.add_argument("--key", default=None, help="array name in an .npz, the data group of an EMD file, the image index of a "
                   "DM3/DM4 file, or the detector of a Velox EMD file (default HAADF)")


def add_record_mode(p: argparse.ArgumentParser, option: str) -> None:
    """``--append`` / ``--overwrite``: what to do when the recording file exists (default: refuse)."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--append", action="store_true",
                   help=f"continue an existing {option} recording (a torn tail is cut; `info` shows both parts)")
    g.add_argument("--overwrite", action="store_true",
                   help=f"replace an existing {option} file (default: refuse to start if it exists)")


#: exit status when the input was damaged or truncated (the output says what was skipped)
EXIT_INCOMPLETE = 3


def add_allow_partial(p: argparse.ArgumentParser) -> None:
    p.add_argument("--allow-partial", action="store_true",
                   help=f"exit 0 even when the input recording is damaged or truncated (default: exit "
                        f"{EXIT_INCOMPLETE}; the intact records are used either way and the outputs say what was skipped)")


def report_partial(cmd: str, status: dict, allow: bool) -> int:
    """Warn about an incomplete input (one line on stderr); the exit status it calls for."""
    if status.get("input_complete", True) is not False:
        return 0
    skipped = status.get("input_skipped") or []
    print(f"stemwatch {cmd}: warning: the input is incomplete: {status.get('input_problem')}"
          + (f" ({len(skipped)} damaged stretch(es) skipped)" if skipped else ""), file=sys.stderr)
    return 0 if allow else EXIT_INCOMPLETE


def _add_stop_options(p: argparse.ArgumentParser) -> None:
    """--duration / --frames / --until-end, shared by the receiving commands (record, monitor)."""
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    p.add_argument("--frames", type=int, metavar="N", help="stop after N frames")
    p.add_argument("--until-end", action="store_true", help="stop after the next end-of-series message")


def _add_curve(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("CURVE encryption (optional; keys from `stemwatch keys`, see docs/protocol.md)")
    g.add_argument("--curve-secret", metavar="FILE", help="this side's NAME.key_secret file: enables CURVE")
    g.add_argument("--curve-server-key", metavar="FILE",
                   help="when connecting: the server's public NAME.key file")
    g.add_argument("--curve-allow", metavar="DIR",
                   help="when binding: directory of client public *.key files allowed to connect")


def _curve(args):
    check_curve_options(args)
    if not getattr(args, "curve_secret", None):
        return None
    from streamer.security import Curve

    return Curve(secret_key_file=args.curve_secret, server_public_key_file=args.curve_server_key,
                 allowed_clients_dir=args.curve_allow)


def check_curve_options(args) -> None:
    """Half-configured security is refused (UserError): --curve-server-key or --curve-allow
    without --curve-secret would otherwise run without any encryption at all."""
    from stemwatch.errors import UserError

    if not getattr(args, "curve_secret", None):
        given = [o for o, a in (("--curve-server-key", "curve_server_key"), ("--curve-allow", "curve_allow"))
                 if getattr(args, a, None)]
        if given:
            raise UserError(f"{' and '.join(given)} given without --curve-secret: refusing to run unencrypted "
                            "(add --curve-secret THIS_SIDE.key_secret, or drop the CURVE options)")


def _receiver(args, recorder=None, policy="drop"):
    from stemwatch.config import StreamConfig
    from streamer.receiver import Receiver

    cfg = StreamConfig(stall_timeout_s=args.stall_timeout, recorder_policy=policy)
    endpoint = args.connect or args.bind
    return Receiver(endpoint, cfg, bind=bool(args.bind), recorder=recorder,
                    socket_type="SUB" if args.sub else "PULL", curve=_curve(args))


def format_stats(st: dict, elapsed_s: float, frame=None) -> str:
    """One status line from :meth:`Receiver.stats` (what ``monitor`` and ``record`` print)."""
    rec = st["recorder"]
    parts = [f"[{elapsed_s:7.1f}s]", f"series={st['series'] or '-'}",
             f"frames={st['frames_received']} ({st['fps']:.1f}/s)",
             f"dropped_for_analysis={st['dropped_for_analysis']}",
             f"gaps={st['gap_count']} (missing {st['missing_frames']})",
             f"series_changes={st['series_changes']}", f"restarts={st['restarts']}",
             f"stalls={st['stalls']}{' STALLED' if st['stalled'] else ''}",
             f"malformed={st['malformed_total']}"]
    if st.get("handshake_failures"):
        parts.append(f"refused_handshakes={st['handshake_failures']}")
    if rec["enabled"]:
        r = f"rec: written={rec['written']} backlog={rec['backlog']} lost={rec['lost']}"
        if rec["error"]:
            r += " ERROR"
        parts.append(r)
    if frame is not None:
        import time

        latency = time.time() - frame.t_acquired
        parts.append(f"latest: {frame.series}#{frame.seq} {frame.data.shape[0]}x{frame.data.shape[1]} "
                     f"{frame.data.dtype} {frame.pixel_size_A:.3g} A/px"
                     + (f", latency {1000 * latency:.0f} ms" if 0 <= latency < 60 else ""))
    return "  ".join(parts)


def _watch(args, rx, out_json: bool, duration: float | None, max_frames: int | None,
           until_end: bool, take_frames: bool) -> dict:
    import json
    import time

    t0 = time.monotonic()
    next_print = t0 + 1.0
    frame = None
    try:
        while True:
            if take_frames:
                frame = rx.latest(timeout_s=max(0.0, next_print - time.monotonic())) or frame
            if not take_frames:
                time.sleep(max(0.0, min(0.2, next_print - time.monotonic())))
            now = time.monotonic()
            st = rx.stats()
            done = ((duration is not None and now - t0 >= duration)
                    or (max_frames is not None and st["frames_received"] >= max_frames)
                    or (until_end and st["series_ended"] > 0))
            if now >= next_print or done:
                next_print += 1.0
                if out_json:
                    print(json.dumps({"elapsed_s": round(now - t0, 3), **st}), flush=True)
                else:
                    print(format_stats(st, now - t0, frame), flush=True)
            if done:
                break
    except KeyboardInterrupt:
        print("stopping", file=sys.stderr)
    return rx.stats()


# ------------------------------------------------------------------------------------- handlers

def _cmd_monitor(args) -> int:
    check_curve_options(args)
    writer = None
    if args.record:
        from streamer.recording import RecordingWriter, check_target

        check_target(args.record, args.append, args.overwrite)
        writer = RecordingWriter(args.record, append=args.append, overwrite=args.overwrite)
    player = stop_player = None
    if args.replay:
        import threading

        from streamer.replay import parse_speed, replay, source_files

        source_files(args.replay)                      # fail now if there is nothing to replay
        speed = parse_speed(args.speed)
        bound = threading.Event()
        stop_player = threading.Event()
        where: dict = {}

        def play():
            try:
                replay(args.replay, "tcp://127.0.0.1:*", speed=speed, loops=0, stop=stop_player,
                       max_pause_s=5.0, on_bound=lambda ep: (where.setdefault("ep", ep), bound.set()))
            except Exception as exc:                   # shown, not swallowed
                where["error"] = exc
                bound.set()

        player = threading.Thread(target=play, name="stemwatch-replay", daemon=True)
        player.start()
        bound.wait(30)
        if "ep" not in where:
            print(f"error: replay failed: {where.get('error')}", file=sys.stderr)
            return 1
        args.connect = where["ep"]
        print(f"replaying {args.replay} (loop, speed {args.speed}) on {args.connect}", file=sys.stderr, flush=True)
    rx = _receiver(args, writer).start()
    print(f"monitoring {rx.endpoint} (Ctrl-C to stop)", file=sys.stderr, flush=True)
    try:
        st = _watch(args, rx, args.json, args.duration, args.frames, args.until_end, take_frames=True)
    finally:
        if stop_player is not None:
            stop_player.set()
        rx.stop()
        if writer is not None:
            writer.close()
    st = rx.stats()
    if st["recorder"]["error"]:
        print(f"error: {st['recorder']['error']}", file=sys.stderr)
        return 1
    return 0


def _cmd_record(args) -> int:
    from streamer.recording import RecordingWriter, check_target

    check_curve_options(args)
    if args.lossless:
        from streamer.lossless import check_lossless_endpoint

        check_lossless_endpoint(args.connect or args.bind)
    check_target(args.out, args.append, args.overwrite)
    writer = RecordingWriter(args.out, append=args.append, sync_every_s=args.sync_every, overwrite=args.overwrite)
    rx = _receiver(args, writer, policy="block" if args.lossless else "drop").start()
    print(f"recording {rx.endpoint} -> {args.out} (Ctrl-C to stop)", file=sys.stderr, flush=True)
    try:
        _watch(args, rx, False, args.duration, args.frames, args.until_end, take_frames=False)
    finally:
        rx.stop()
        writer.close()
    st = rx.stats()
    rec = st["recorder"]
    print(f"wrote {rec['written']} messages ({st['frames_received']} frames received, {rec['lost']} lost "
          f"to the recorder) to {args.out}", file=sys.stderr)
    if rec["error"]:
        print(f"error: {rec['error']}", file=sys.stderr)
        return 1
    return 0 if rec["lost"] == 0 else 3


def _cmd_replay(args) -> int:
    import threading

    from tqdm import tqdm

    from streamer.replay import parse_speed, replay

    check_pixel_size(args.pixel_size)
    speed = parse_speed(args.speed)
    bar = tqdm(unit="frame", desc="replay", file=sys.stderr, disable=args.quiet)
    stop = threading.Event()

    def on_message(n_msgs, n_frames):
        bar.n = n_frames
        bar.refresh() if n_frames % 10 == 0 else None

    try:
        stats = replay(args.file, args.bind, speed=speed, loops=0 if args.loop else args.loops,
                       socket_type="PUB" if args.pub else "PUSH", curve=_curve(args),
                       max_pause_s=args.max_pause, pixel_size_A=args.pixel_size, frame_time_s=args.frame_time,
                       key=args.key, stop=stop, on_message=on_message,
                       on_bound=lambda ep: print(f"replaying {args.file} on {ep}", file=sys.stderr, flush=True))
    except KeyboardInterrupt:
        stop.set()
        bar.close()
        return 130
    bar.close()
    print(f"sent {stats.messages} messages ({stats.frames} frames, {stats.loops} loop(s)) in {stats.wall_s:.2f} s",
          file=sys.stderr)
    return report_partial("replay", stats.input, args.allow_partial)


def convert(src: str, out: str, pixel_size_A=None, frame_time_s: float = 0.2, key=None,
            series: str | None = None, progress: bool = True, status: dict | None = None) -> int:
    """Convert ``src`` (anything :func:`streamer.importers.open_frames` reads) to ``out``:
    EMD for ``.emd/.h5/.hdf5``, otherwise a recording. Returns the number of frames written.

    ``status`` (optional dict) receives ``input_complete`` / ``input_problem`` / ``input_skipped``.
    They are also written into the output when the input was damaged: as attributes of the EMD
    data group, or for a recording as a final ``heartbeat`` message with those extra keys
    (protocol v1 receivers ignore unknown keys; ``stemwatch info`` shows them)."""
    import json
    from pathlib import Path

    from tqdm import tqdm

    from streamer.importers import FileImportError, export_emd, open_frames
    from streamer.recording import RecordingReader, input_status
    from streamer.replay import encoded_messages, is_recording, recorded_messages

    status = {} if status is None else status
    frames = open_frames(src, pixel_size_A=pixel_size_A, frame_time_s=frame_time_s, key=key, status=status)
    first = next(frames, None)              # a bad input fails here, before an output file exists
    if first is None:
        raise FileImportError(f"{Path(src).name}: no frames")
    frames = (_check_meta(f, Path(src).name) for f in _prepend(first, frames))
    _check_meta(first, Path(src).name)
    if Path(out).suffix.lower() in (".emd", ".h5", ".hdf5"):
        if series is None:
            series = first.series
        sel = (f for f in frames if f.series == series)
        n = export_emd(sel, out, progress=progress)
        for f in frames:                        # read to the end: the input's status is known then
            pass
        if status.get("input_complete") is False:
            import h5py

            with h5py.File(out, "a") as h5:
                g = h5["data/frames"]
                g.attrs["input_complete"] = False
                g.attrs["input_problem"] = str(status.get("input_problem"))
                g.attrs["input_skipped_json"] = json.dumps(status.get("input_skipped", []))
        return n
    from streamer.protocol import PROTOCOL_VERSION
    from streamer.recording import RecordingWriter

    n = 0
    import msgpack
    import time

    with RecordingWriter(out) as w:
        if is_recording(src) and pixel_size_A is None and series is None:
            reader = RecordingReader(src)
            msgs = recorded_messages(src, reader=reader)          # copy messages byte for byte
        else:
            reader = None
            sel = frames if series is None else (f for f in frames if f.series == series)
            msgs = encoded_messages(sel, frame_time_s)
        for parts, t in tqdm(msgs, unit="msg", desc="convert", file=sys.stderr, disable=not progress):
            w.write(parts, t if t is not None else time.time())
            n += t is not None
        if reader is not None:
            status.update(input_status(reader))
        if status.get("input_complete") is False:
            note = {"version": PROTOCOL_VERSION, "type": "heartbeat", "t_sent": time.time(),
                    "input_complete": False, "input_problem": str(status.get("input_problem")),
                    "input_skipped": status.get("input_skipped", [])}
            w.write([msgpack.packb(note, use_bin_type=True)], time.time())
    return n


#: metadata nested deeper than this is refused when converting (instrument metadata is never that
#: deep; a broken or hostile file can be, and would make the JSON/HDF5 writers recurse)
MAX_META_DEPTH = 32


def _meta_depth(v, depth: int = 0) -> int:
    while True:
        if depth > MAX_META_DEPTH:
            return depth
        if isinstance(v, dict):
            return max([_meta_depth(x, depth + 1) for x in v.values()] or [depth + 1])
        if isinstance(v, (list, tuple)):
            return max([_meta_depth(x, depth + 1) for x in v] or [depth + 1])
        return depth


def _check_meta(f, src):
    from streamer.importers import FileImportError

    if _meta_depth(f.meta or {}) > MAX_META_DEPTH:
        raise FileImportError(f"{src}: the metadata of series {f.series!r} is nested deeper than {MAX_META_DEPTH} "
                              "levels (a damaged or hostile file); not converted")
    return f


def _prepend(first, it):
    yield first
    yield from it


def _cmd_convert(args) -> int:
    check_pixel_size(args.pixel_size)
    status: dict = {}
    n = convert(args.file, args.out, args.pixel_size, args.frame_time, args.key, args.series, not args.quiet,
                status=status)
    print(f"wrote {n} frames to {args.out}", file=sys.stderr)
    return report_partial(args.command, status, args.allow_partial)


def describe(path: str) -> dict:
    """What a recording (or importable file) holds: series, frames, gaps, times, integrity."""
    from pathlib import Path

    from streamer.protocol import ProtocolError, decode
    from streamer.recording import RecordingReader
    from streamer.replay import is_recording

    p = Path(path)
    info: dict = {"file": str(p), "bytes": p.stat().st_size}
    series: dict[str, dict] = {}
    current: dict[str, str] = {}      # series id -> key in ``series`` (a replayed id gets "id #2")
    seen_seqs: dict[str, set] = {}

    def open_series(name):
        key, k = name, 1
        while key in series:
            k += 1
            key = f"{name} #{k}"
        current[name] = key

    def add_frame(f):
        if f.series not in current:
            open_series(f.series)
        key = current[f.series]
        s = series.setdefault(key, {"frames": 0, "first_seq": f.seq, "last_seq": f.seq, "missing": [],
                                    "shape": list(f.data.shape), "dtype": f.data.dtype.str,
                                    "pixel_size_A": f.pixel_size_A, "t_first": f.t_acquired,
                                    "t_last": f.t_acquired, "ended": None, "duplicates": [], "out_of_order": []})
        seen = seen_seqs.setdefault(key, set())
        if f.seq in seen:
            s["duplicates"].append(f.seq)          # the same seq again (not counted as a frame)
            return
        seen.add(f.seq)
        if f.seq < s["last_seq"] and s["frames"]:
            s["out_of_order"].append(f.seq)        # arrived after a later seq (fills a reported gap)
            s["missing"] = _remove_seq(s["missing"], f.seq)
        elif f.seq > s["last_seq"] + 1 and s["frames"]:
            s["missing"].append([s["last_seq"] + 1, f.seq - 1])
        s["frames"] += 1
        s["last_seq"] = max(s["last_seq"], f.seq)
        s["t_last"] = f.t_acquired

    if is_recording(p):
        r = RecordingReader(p)
        counts = {"start": 0, "frame": 0, "end": 0, "heartbeat": 0, "undecodable": 0}
        notes: list = []                  # "this file was converted from a damaged input" notes
        for parts, _t in r.records(verify=True):
            try:
                m = decode(parts, max_frame_bytes=1 << 40, max_side=1 << 20)
            except ProtocolError:
                counts["undecodable"] += 1
                continue
            counts[m.type] += 1
            if m.type == "heartbeat" and m.header.get("input_complete") is False:
                notes.append({k: m.header.get(k) for k in ("input_problem", "input_skipped")})
            if m.type == "start" and m.header["series"] in current:
                if series[current[m.header["series"]]]["ended"] is not None:
                    open_series(m.header["series"])
            if m.type == "frame":
                add_frame(m.frame)
            elif m.type == "end" and m.header["series"] in current:
                s = series[current[m.header["series"]]]
                s["ended"] = m.header["n_frames"]
                if m.header["n_frames"] > s["last_seq"] + 1:
                    s["missing"].append([s["last_seq"] + 1, m.header["n_frames"] - 1])
        info.update(kind="recording", records=r.n_records, messages=counts, complete=r.complete, problem=r.problem,
                    skipped=r.skipped, notes=notes)
        if notes and info["complete"]:
            info["complete"] = False
            info["problem"] = f"converted from an incomplete input: {notes[0]['input_problem']}"
    else:
        from streamer.importers import FileImportError, open_frames

        try:
            next(open_frames(p), None)
            px = None
        except FileImportError as exc:
            if "pixel" not in str(exc):
                raise
            px = float("nan")             # no calibration in the file: report it as unknown
        for f in open_frames(p, pixel_size_A=px if px is None else 1.0):
            if px is not None:
                f.pixel_size_A = px
            add_frame(f)
        info.update(kind=p.suffix.lower().lstrip("."), complete=True, problem=None)
    for s in series.values():
        dt = s["t_last"] - s["t_first"]
        s["duration_s"] = dt
        s["mean_fps"] = (s["frames"] - 1) / dt if dt > 0 else None
    info["series"] = series
    return info


def _remove_seq(ranges: list, seq: int) -> list:
    """The missing ranges without ``seq`` (a late frame filled it)."""
    out = []
    for a, b in ranges:
        if a <= seq <= b:
            out += [r for r in ([a, seq - 1], [seq + 1, b]) if r[0] <= r[1]]
        else:
            out.append([a, b])
    return out


def _cmd_info(args) -> int:
    import json

    info = describe(args.file)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0 if info["complete"] else 1
    print(f"{info['file']}: {info['kind']}, {info['bytes']:,} bytes")
    if info["kind"] == "recording":
        m = info["messages"]
        print(f"  {info['records']} records: {m['start']} start, {m['frame']} frame, {m['end']} end, "
              f"{m['heartbeat']} heartbeat" + (f", {m['undecodable']} undecodable" if m["undecodable"] else ""))
    for name, s in info["series"].items():
        miss = sum(b - a + 1 for a, b in s["missing"])
        print(f"  series {name!r}: {s['frames']} frames (seq {s['first_seq']}..{s['last_seq']}), "
              f"{s['shape'][0]}x{s['shape'][1]} {s['dtype']}, "
              + (f"{s['pixel_size_A']:.4g} A/px, " if s["pixel_size_A"] == s["pixel_size_A"] else "pixel size unknown, ")
              + f"{s['duration_s']:.2f} s" + (f", {s['mean_fps']:.2f} frames/s" if s["mean_fps"] else "")
              + (f", ended after {s['ended']}" if s["ended"] is not None else ", no end message"))
        if miss:
            print(f"    missing {miss} frame(s): " + ", ".join(f"{a}-{b}" if a != b else f"{a}" for a, b in s["missing"][:20])
                  + (" ..." if len(s["missing"]) > 20 else ""))
        for what in ("duplicates", "out_of_order"):
            if s.get(what):
                print(f"    {len(s[what])} {dict(duplicates='duplicate', out_of_order='out-of-order')[what]} frame(s): seq "
                      + ", ".join(map(str, s[what][:20])) + (" ..." if len(s[what]) > 20 else ""))
    for sk in info.get("skipped", []):
        print(f"  skipped {sk['bytes']:,} damaged bytes at byte {sk['at_byte']:,} (after record {sk['after_record']}): "
              f"{sk['reason']}")
    for note in info.get("notes", []):
        print(f"  converted from an incomplete input: {note['input_problem']}")
    print("  complete: yes" if info["complete"] else f"  complete: NO - {info['problem']}")
    return 0 if info["complete"] else 1


def _cmd_keys(args) -> int:
    from pathlib import Path

    from streamer.security import generate_keypair

    d = Path(args.out)
    if not args.force and ((d / f"{args.name}.key").exists() or (d / f"{args.name}.key_secret").exists()):
        print(f"error: {d / args.name}.key* exists (use --force to overwrite)", file=sys.stderr)
        return 1
    public, secret = generate_keypair(d, args.name)
    print(f"public key: {public}  (give this file to the other side)")
    print(f"secret key: {secret}  (keep it here, mode 0600)")
    print("server (binds):   --curve-secret SERVER.key_secret --curve-allow DIR_WITH_CLIENT_KEYS")
    print("client (connects): --curve-secret CLIENT.key_secret --curve-server-key SERVER.key")
    return 0


# ------------------------------------------------------------------------------------- register

def register(sub) -> None:
    p = sub.add_parser("record", help="record a live stream losslessly to a file",
                       description="Receive protocol-v1 messages and append them, checksummed, to a recording "
                                   "(docs/recording.md). Prints live stats once a second. Exit code 0: all "
                                   "written; 1: write error (e.g. disk full); 3: messages lost to the recorder.")
    _add_source(p)
    p.add_argument("--out", required=True, metavar="FILE", help="recording to write (e.g. session.swrec)")
    add_record_mode(p, "--out")
    p.add_argument("--lossless", action="store_true",
                   help="never drop: when the disk falls behind, slow the sender (PUSH back-pressure) instead; TCP only (over ipc libzmq can lose a closing sender's last messages)")
    p.add_argument("--sync-every", type=float, default=1.0, metavar="S",
                   help="fdatasync at most every S seconds (default %(default)s; durability on power loss)")
    _add_stop_options(p)
    _add_curve(p)
    p.set_defaults(func=_cmd_record)

    p = sub.add_parser("replay", help="replay a recording (or an image file) over a bound socket",
                       description="Send a recording's messages byte for byte (or an imported file's frames) on "
                                   "a bound socket, paced from t_acquired. FILE may be a directory: every "
                                   "recording in it, in name order (other files are ignored).")
    p.add_argument("file", metavar="FILE", help="recording, .npy/.npz/.tif/.emd/.ndata file, or a directory of recordings")
    p.add_argument("--bind", required=True, metavar="ENDPOINT", help=ENDPOINT_HELP)
    p.add_argument("--speed", default="1", help="1 = original pace, N = N times faster, max = no waiting")
    p.add_argument("--loop", action="store_true", help="play again and again until Ctrl-C")
    p.add_argument("--loops", type=int, default=1, metavar="N", help="play N times (default %(default)s)")
    p.add_argument("--pub", action="store_true", help="PUB socket (many subscribers) instead of PUSH")
    p.add_argument("--max-pause", type=float, default=None, metavar="S",
                   help="shorten recorded pauses longer than S seconds to S")
    add_file_options(p)
    add_allow_partial(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _add_curve(p)
    p.set_defaults(func=_cmd_replay)

    for name, helptext, default_note in [
        ("import", "convert an image file (npy/npz/TIFF/EMD/Nion h5, ndata/DM3, DM4/Velox EMD) into a recording",
         "OUT ending in .swrec (or anything but .emd/.h5) gets a recording"),
        ("convert", "convert a recording (or image file) to EMD HDF5 or to a recording",
         "OUT ending in .emd/.h5/.hdf5 gets Berkeley EMD v0.2 with pixel size and frame times, anything else "
         "a recording (this is the recording -> EMD export; `stemwatch export` exports ONNX models)"),
    ]:
        p = sub.add_parser(name, help=helptext, description=helptext + ". " + default_note + ".")
        p.add_argument("file", metavar="FILE")
        p.add_argument("--out", required=True, metavar="OUT")
        add_file_options(p)
        p.add_argument("--series", help="only this series (EMD export takes the first series by default)")
        p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
        add_allow_partial(p)
        p.set_defaults(func=_cmd_convert)

    p = sub.add_parser("info", help="what a recording holds, and whether it is complete",
                       description="Summarise a recording (series, frames, missing seqs, times, checksums, "
                                   "truncation) or an image file. Exit code 1 if the recording is incomplete.")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("monitor", help="receive a stream and print live stats once a second",
                       description="A receiver that prints frames/s, drops, gaps, series changes, stalls, "
                                   "malformed messages and recorder state once a second. With --replay it "
                                   "also plays recordings into itself (what `make demo` runs until the "
                                   "engine exists).")
    _add_source(p, replay=True)
    p.add_argument("--speed", default="1", help="with --replay: 1 = original pace, N, or max (default %(default)s)")
    p.add_argument("--record", metavar="FILE", help="also record to FILE")
    add_record_mode(p, "--record")
    _add_stop_options(p)
    p.add_argument("--json", action="store_true", help="print one JSON object per second")
    _add_curve(p)
    p.set_defaults(func=_cmd_monitor)

    p = sub.add_parser("keys", help="generate a CURVE key pair for encrypted, allow-listed sockets",
                       description="Write NAME.key (public) and NAME.key_secret (secret, mode 0600) into DIR. "
                                   "The binding side is the CURVE server; put the public keys of the clients "
                                   "it accepts into one directory and pass it with --curve-allow.")
    p.add_argument("--out", default="keys", metavar="DIR", help="directory (default %(default)s)")
    p.add_argument("--name", required=True, help="key pair name, e.g. microscope or analyzer")
    p.add_argument("--force", action="store_true", help="overwrite an existing key pair")
    p.set_defaults(func=_cmd_keys)
