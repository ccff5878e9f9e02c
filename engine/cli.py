"""Sub-command of the engine: ``analyze`` (offline), and the analysis options it shares with ``serve``
(:mod:`dashboard.serve`, which composes the live service and the screen); ``evaluate`` is in :mod:`lab.cli`.

Light module: numpy, the network backends, Bokeh and ZeroMQ are imported inside the handlers.
"""

from __future__ import annotations

import argparse
import sys

from streamer.cli import add_allow_partial, add_file_options


def _add_engine_options(p: argparse.ArgumentParser) -> None:
    from stemwatch.config import Config, InferenceConfig, PipelineConfig, choices

    d = Config()                         # every default below is the configuration's, never repeated here
    g = p.add_argument_group("analysis")
    g.add_argument("--backend", choices=choices(InferenceConfig, "backend"), default=None,
                   help=f"inference backend (default: config, {d.inference.backend}: TensorRT when a GPU works, "
                        "else ONNX Runtime CPU)")
    g.add_argument("--model", metavar="FILE", default=None, help="ONNX model (default: the shipped one)")
    g.add_argument("--precision", choices=choices(InferenceConfig, "cpu_precision"), default=None,
                   help=f"CPU backend network: fp32 (the reference), int8 (<model>_int8.onnx) or auto (INT8 on CPUs "
                        f"with VNNI, else FP32; default: config, {d.inference.cpu_precision}); TensorRT ignores it")
    g.add_argument("--k-of-n", nargs=2, type=int, metavar=("K", "N"), default=None,
                   help="debounce: a new state must hold K of the last N frames (default: config, "
                        f"{' '.join(map(str, d.events.k_of_n))})")
    g.add_argument("--min-confidence", type=float, default=None, metavar="C",
                   help=f"events below this confidence are not raised (default: config, {d.events.min_confidence})")
    add_scale_option(g)
    g.add_argument("--overlap", choices=choices(PipelineConfig, "overlap"), default=None,
                   help="run the network of the next frame on its own thread while this frame's atoms, graph "
                        f"and tracks are computed: the same results, more frames/s (default: config, "
                        f"{d.pipeline.overlap}: on when 2 or more CPUs are usable)")
    g.add_argument("--config", metavar="JSON", default=None,
                   help="JSON file of configuration overrides by section, e.g. "
                        '{"tracking": {"memory_frames": 4}, "chemistry": {"prob_threshold": 0.4}} '
                        "(`stemwatch config --show` prints the effective configuration)")


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = 0
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def _resources(text: str) -> dict:
    out = {}
    for item in text.split(","):
        name, _, value = item.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            name = ""
        if not name.strip() or out.get(name.strip(), 0) <= 0:
            raise argparse.ArgumentTypeError(f"expected NAME=N[,NAME=N] with N > 0, got {text!r}")
    return out


def _scale_arg(value: str) -> str:
    from engine.health.monitor import parse_scale

    try:
        parse_scale(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def add_scale_option(g) -> None:
    """``--scale auto|declared|A_PER_PX`` (engine/health; Config.health.scale)."""
    g.add_argument("--scale", type=_scale_arg, default=None, metavar="auto|declared|A/px",
                   help="pixel size to analyse at: auto (default: the declared one unless the graphene lattice "
                        "disagrees by > 5 %%, then the lattice's), declared (trust the file/stream), or a "
                        "number in A/px (override)")


def _config(args):
    """The effective configuration: the defaults, then ``--config``, then the options given.
    A bad file or value: one line on stderr and exit status 2."""
    from stemwatch.config import ConfigError, load_config

    try:
        cfg = load_config(getattr(args, "config", None))
        inf = {}
        if getattr(args, "backend", None):
            inf["backend"] = args.backend
        if getattr(args, "model", None):
            inf["model_path"] = args.model
        if getattr(args, "precision", None):
            inf["cpu_precision"] = args.precision
        ev = {}
        if getattr(args, "k_of_n", None):
            ev["k_of_n"] = tuple(args.k_of_n)
        if getattr(args, "min_confidence", None) is not None:
            ev["min_confidence"] = float(args.min_confidence)
        hl = {"scale": args.scale} if getattr(args, "scale", None) else {}
        pl = {"overlap": args.overlap} if getattr(args, "overlap", None) else {}
        return cfg.replace(**{k: v for k, v in (("inference", inf), ("events", ev), ("health", hl),
                                                ("pipeline", pl)) if v})
    except ConfigError as exc:
        where = "--config " if getattr(args, "config", None) else ""
        print(f"stemwatch: error: {where}{exc}", file=sys.stderr)
        raise SystemExit(2) from None


# ------------------------------------------------------------------------------------------- analyze
def _analyze(args) -> int:
    if getattr(args, "scheduler", None) is not None:
        return _analyze_archive(args)
    if len(args.input) > 1:
        print("stemwatch analyze: several inputs need --scheduler (local[:N] or tcp://HOST:PORT)", file=sys.stderr)
        return 2
    from engine.analyze import analyze_file

    from streamer.cli import check_pixel_size
    from streamer.importers import FileImportError

    check_pixel_size(args.pixel_size)
    cfg = _config(args)
    try:
        summary = analyze_file(args.input[0], args.out, cfg, pixel_size_A=args.pixel_size, key=args.key,
                               limit=args.limit, progress=not args.quiet, dose_e_per_A2=args.dose,
                               **getattr(args, "analyze_hooks", lambda a: {})(args))
    except (FileNotFoundError, FileImportError, ImportError) as exc:
        print(f"stemwatch analyze: {exc}", file=sys.stderr)
        return 2
    from streamer.cli import report_partial

    partial = report_partial("analyze", summary, args.allow_partial)
    print(f"{summary['frames']} frames ({summary['frames_with_error']} with errors), "
          f"{summary['atoms_per_frame']:.0f} atoms/frame, {summary['tracks']} tracks, "
          f"{summary['events']} events {summary['events_by_kind']}, "
          f"{summary['frames_per_s'] or 0:.1f} frames/s on {summary['backend']}")
    print(f"wrote {args.out}/atoms.csv, events.jsonl, frames.csv, summary.json, dopants.csv, stats.json, "
          f"transitions.csv (dose {summary['dose']['e_per_A2_per_frame'] or 'unknown'} e/A^2 per frame)")
    if partial:
        return partial
    return 0 if summary["frames"] > summary["frames_with_error"] else 1


def _analyze_archive(args) -> int:
    """``analyze INPUT... --scheduler``: every input on a Dask cluster (engine.archive)."""
    try:
        from engine.archive import analyze_archive, parse_scheduler
    except ImportError as exc:
        print(f"stemwatch analyze: --scheduler needs Dask: pip install 'stemwatch[cluster]' ({exc})", file=sys.stderr)
        return 2
    try:
        parse_scheduler(args.scheduler)
    except ValueError as exc:
        print(f"stemwatch analyze: {exc}", file=sys.stderr)
        return 2
    import logging

    if not getattr(args, "verbose", 0):      # Dask logs every worker start and stop at INFO
        logging.getLogger("distributed").setLevel(logging.WARNING)
    cfg = _config(args)
    try:
        index = analyze_archive(args.input, args.out, cfg, scheduler=args.scheduler, pixel_size_A=args.pixel_size,
                                key=args.key, limit=args.limit, chunk_frames=args.chunk_frames,
                                progress=not args.quiet, resources=args.resources)
    except (FileNotFoundError, ConnectionError) as exc:
        print(f"stemwatch analyze: {exc}", file=sys.stderr)
        return 2
    bad = 0
    for e in index["inputs"]:
        if e["status"] == "ok":
            print(f"{e['out']}: {e['frames_done']} frames ({e['frames_with_error']} with errors), {e['events']} events")
            bad += e["frames_with_error"] >= e["frames_done"]
        else:
            print(f"{e['out']}: {e['status'].upper()}: {e['reason']}")
            bad += 1
    print(f"{index['frames_done']} frames of {len(index['inputs'])} inputs in {index['elapsed_s']:.1f} s "
          f"({index['startup_s']:.1f} s to start and load the network, then {index['frames_per_s'] or 0:.1f} frames/s) "
          f"on {index['workers']} Dask workers; wrote {args.out}/index.json and one folder per input")
    return 0 if index["status"] == "complete" and not bad else 1


def register(sub) -> None:
    p = sub.add_parser("analyze", help="analyse a recording or image stack: atoms.csv, events.jsonl, summary.json",
                       description="Run the full pipeline (network -> atoms -> lattice graph -> tracks -> events) on "
                       "every frame of INPUT (a stemwatch recording, .npy/.npz, TIFF stack, EMD HDF5 or Nion .ndata) "
                       "and write atoms.csv (frame,atom_id,x,y,species,coordination,confidence; x = column, "
                       "y = row in input pixels), events.jsonl, frames.csv and summary.json to --out "
                       "(docs/tracking.md).")
    p.add_argument("input", nargs="+", help="recording or image file (several files, glob patterns or folders of "
                   "recordings with --scheduler)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    add_file_options(p, frame_time=False)
    p.add_argument("--limit", type=int, default=None, metavar="N", help="analyse at most N frames")
    add_allow_partial(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--dose", type=float, default=None, metavar="E_PER_A2",
                   help="electron dose per frame in e/A^2 for the dopant statistics (default: the series metadata, "
                        "dose_e_per_A2 or beam current x dwell / pixel area; else rates per dose are not given)")
    g = p.add_argument_group("Dask cluster (the [cluster] extra; docs/scaling.md)")
    g.add_argument("--scheduler", default=None, metavar="SPEC",
                   help="analyse on Dask: 'local' or 'local:N' starts N worker processes on this machine (default "
                        "N: the physical cores), 'tcp://HOST:PORT' joins a running scheduler. Writes one folder "
                        "per input under --out plus --out/index.json")
    g.add_argument("--chunk-frames", type=_positive_int, default=8, metavar="N",
                   help="frames per worker task (default %(default)s)")
    g.add_argument("--resources", type=_resources, default=None, metavar="NAME=N[,NAME=N]",
                   help="run the frame tasks only on workers started with these Dask resources, each task "
                        "holding them, e.g. GPU=1 for one task at a time per GPU worker")
    _add_engine_options(p)
    p.set_defaults(func=_analyze)


#: Public names of the shared analysis options (used by :mod:`dashboard.serve`).
add_engine_options = _add_engine_options
config_from_args = _config
