"""``stemwatch simulate``: the simulated microscope (a recording with ground truth, or a live stream).

Light module: numpy, the simulator and pyzmq are imported only inside the handler.
"""

from __future__ import annotations

import argparse
import sys

SCENARIOS = ("switching", "field", "lowdose", "random")     # engine.sim.movie.SCENARIOS (not imported here)
MATERIAL_CHOICES = ("graphene", "MoS2", "WS2", "hBN", "amorphous", "vacuum", "graphene_grains")  # engine.sim.materials

DESCRIPTION = """\
Simulate HAADF-STEM frames of Si-doped graphene with events at known frames (docs/simulator.md).

  --out FILE     write a recording (docs/recording.md) and its ground truth FILE-stem.truth.npz
  --bind EP      publish live over the wire protocol (docs/protocol.md), one frame every --frame-time s,
                 until Ctrl-C or --frames N (what `make demo` runs)

Both may be given (publish and record). Scenarios: switching (256x256, a Si switching 3 <-> 4-fold),
field (512x512, several dopants, a dimer forming/breaking, a rotor, drift), lowdose (256x256 at
3e3 e/A^2), random (512x512, random events; endless when live). Options override the scenario.
"""


def _spec(args):
    from engine.sim.movie import scenario

    over = {}
    if args.frames is not None:
        over["n_frames"] = int(args.frames)
    elif args.bind and not args.out:
        over["n_frames"] = None                       # live: forever
    elif args.scenario == "random":
        over["n_frames"] = 60
    if args.size is not None:
        over["shape_px"] = (int(args.size[0]), int(args.size[-1]))
    if args.pixel_size is not None:
        over["pixel_size_A"] = float(args.pixel_size)
    if args.dose is not None:
        over["dose_e_per_A2"] = float(args.dose)
    if args.drift is not None:
        over["drift_A_per_frame"] = (float(args.drift[0]), float(args.drift[1]))
    if args.seed is not None:
        over["seed"] = int(args.seed)
    if args.event_rate is not None:
        over["event_rate_per_frame"] = float(args.event_rate)
    if args.random_imaging:
        over["imaging"] = "random"
    if args.float32:
        over["output"] = "float32"
    over["frame_time_s"] = float(args.frame_time)
    spec = scenario(args.scenario, **over)
    if spec.n_frames is None and args.out:
        raise SystemExit("stemwatch simulate: --out needs a finite movie: give --frames N")
    return spec


def _cmd_simulate(args: argparse.Namespace) -> int:
    import time

    from tqdm import tqdm

    from engine.sim.source import SimulatorSource
    from engine.sim.truth import save_truth
    from streamer.protocol import encode_end, encode_frame, encode_start

    if not args.out and not args.bind:
        raise SystemExit("stemwatch simulate: give --out FILE and/or --bind ENDPOINT")
    series = args.series or None
    try:
        spec = _spec(args)
        source = SimulatorSource(args.scenario, spec=spec, series=series, keep_truth=bool(args.out),
                                 material=getattr(args, "material", "graphene"))
    except ValueError as exc:
        from stemwatch.errors import UserError

        msg = str(exc)
        if "no room" in msg:                  # say what to change with options this command has
            msg = (msg.split(":")[0] + f" ({args.scenario} scenario, {spec.shape_px[0]}x{spec.shape_px[1]} px at "
                   f"{spec.pixel_size_A:g} A/px): give a larger field (--size 512, or a larger --pixel-size) "
                   "or use --scenario random, whose dopant count scales with the field")
        raise UserError(msg) from None
    h, w = spec.shape_px
    dtype = source.meta["counts"]
    series = source.series
    meta = dict(source.meta)
    dwell = spec.frame_time_s / (h * w)
    writer = pub = None
    if args.out:
        from pathlib import Path

        from streamer.recording import RecordingWriter
        from engine.sim.truth import truth_path

        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        meta["truth"] = truth_path(args.out).name
        writer = RecordingWriter(args.out)
    if args.bind:
        from streamer.publisher import Publisher

        pub = Publisher(args.bind, bind=True, socket_type="PUB" if args.pub else "PUSH",
                        send_timeout_s=args.send_timeout)
        time.sleep(args.startup_wait)                  # let receivers connect before the series starts
    start = encode_start(series, (h, w), dtype, spec.pixel_size_A, dwell, spec.frame_time_s, meta)
    t0 = time.time()
    if writer:
        writer.write(start, t0)
    if pub:
        pub.send_raw(start, copy=True)
    n = 0
    slow = dropped = 0
    deadline = t0
    bar = tqdm(total=spec.n_frames, unit="frame", desc=f"simulate {args.scenario}", file=sys.stderr,
               disable=args.quiet)
    try:
        for frame in source.open().frames():
            t_acq = t0 + n * spec.frame_time_s
            if pub:                                   # real time: one frame per frame time
                deadline += spec.frame_time_s
                wait = deadline - time.time()
                if wait > 0:
                    time.sleep(wait)
                elif wait < -spec.frame_time_s:        # late by more than a frame: count it, re-anchor
                    slow += 1
                    deadline = time.time()
                t_acq = time.time()
            parts = encode_frame(series, n, t_acq, frame.data, spec.pixel_size_A)
            if writer:
                writer.write(parts, t_acq)
            if pub:
                if not pub.send_raw(parts):
                    dropped += 1
            n += 1
            bar.update(1)
            truth = source.last_truth
            if truth.events and not args.quiet:
                bar.write(" ".join(f"[frame {e['frame']}] {e['kind']} atom {e['atom_id']} at "
                                   f"({e['x']:.0f}, {e['y']:.0f}) px" for e in truth.events), file=sys.stderr)
    except KeyboardInterrupt:
        print("\nstemwatch simulate: stopped", file=sys.stderr)
    finally:
        bar.close()
        source.close()
        end = encode_end(series, n)
        if pub:
            pub.send_raw(end, copy=True)
            pub.close()
        if writer:
            writer.write(end, time.time() if pub else t0 + n * spec.frame_time_s)
            writer.close()
            p = save_truth(source.ground_truth(), args.out)
            print(f"wrote {args.out} ({n} frames {h}x{w} {dtype}) and {p} ({len(source.simulator.events)} events)",
                  file=sys.stderr)
    if dropped:
        print(f"stemwatch simulate: {dropped} frames dropped (no receiver took them within --send-timeout)",
              file=sys.stderr)
    if slow:
        print(f"stemwatch simulate: {slow} times a frame came more than one frame time late (simulation slower than "
              f"--frame-time {spec.frame_time_s:g} s)", file=sys.stderr)
    return 0


def register(sub) -> None:
    p = sub.add_parser("simulate", help="simulated microscope: a recording with ground truth, or a live stream",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", metavar="FILE", help="write a recording (e.g. movie.swrec) and movie.truth.npz beside it")
    p.add_argument("--bind", metavar="ENDPOINT", help="publish live on this endpoint, e.g. tcp://127.0.0.1:5555")
    p.add_argument("--pub", action="store_true", help="PUB socket (many subscribers) instead of PUSH")
    p.add_argument("--scenario", choices=SCENARIOS, default="random",
                   help="what happens in the movie (default %(default)s; see docs/simulator.md)")
    p.add_argument("--frames", type=int, metavar="N",
                   help="number of frames (default: the scenario's; live: forever; random --out: 60)")
    p.add_argument("--frame-time", type=float, default=0.2, metavar="S",
                   help="seconds per frame: live pacing and recorded t_acquired (default %(default)s)")
    p.add_argument("--size", type=int, nargs="+", metavar="PX", help="frame size: N (square) or H W")
    p.add_argument("--pixel-size", type=float, metavar="A", help="angstrom per pixel, 0.05-0.2 (default 0.1)")
    p.add_argument("--dose", type=float, metavar="E_PER_A2", help="electrons per A^2 per frame, 1e3-1e6 (default 1e5)")
    p.add_argument("--drift", type=float, nargs=2, metavar=("DX", "DY"),
                   help="field-of-view drift in A per frame (|drift| <= 1)")
    p.add_argument("--event-rate", type=float, metavar="P", help="probability of a random event per frame")
    p.add_argument("--random-imaging", action="store_true",
                   help="draw the imaging parameters over the simulator's full ranges (from the seed)")
    p.add_argument("--float32", action="store_true", help="float32 counts instead of rounded uint16")
    p.add_argument("--seed", type=int, help="random seed (the same seed gives the same movie)")
    p.add_argument("--series", help="series id (default sim-SCENARIO-SEED-TIME)")
    p.add_argument("--send-timeout", type=float, default=1.0, metavar="S",
                   help="live: drop a frame nobody takes within S seconds instead of stalling (default %(default)s)")
    p.add_argument("--startup-wait", type=float, default=0.3, metavar="S",
                   help="live: wait S seconds after binding before the series starts (default %(default)s)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or event lines")
    p.add_argument("--material", default="graphene", choices=MATERIAL_CHOICES,
                   help="what is in the beam (default %(default)s): other materials are static samples with the "
                        "same imaging and drift and no events (docs/simulator.md §6)")
    p.set_defaults(func=_cmd_simulate)
