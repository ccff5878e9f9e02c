"""Sub-command of the engine: ``analyze`` (offline), and the analysis options it shares with ``serve``
(:mod:`dashboard.serve`, which composes the live service and the screen); ``evaluate`` is in :mod:`lab.cli`.

Light module: numpy, the network backends, Bokeh and ZeroMQ are imported inside the handlers.
"""

from __future__ import annotations

import argparse
import sys

from streamer.cli import add_file_options


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

    cfg = Config()
    if getattr(args, "config", None):
        with open(args.config) as fh:
            overrides = json.load(fh)
        if not isinstance(overrides, dict):
            raise SystemExit(f"{args.config}: expected a JSON object of sections")
        for section, values in overrides.items():
            if section == "events" and "k_of_n" in values:
                values = {**values, "k_of_n": tuple(values["k_of_n"])}
            cfg = cfg.replace(**{section: values})
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


# ------------------------------------------------------------------------------------------- analyze
def _analyze(args) -> int:
    from engine.analyze import analyze_file

    from streamer.importers import FileImportError

    cfg = _config(args)
    try:
        summary = analyze_file(args.input, args.out, cfg, pixel_size_A=args.pixel_size, key=args.key,
                               limit=args.limit, progress=not args.quiet)
    except (FileNotFoundError, FileImportError) as exc:
        print(f"stemwatch analyze: {exc}", file=sys.stderr)
        return 2
    print(f"{summary['frames']} frames ({summary['frames_with_error']} with errors), "
          f"{summary['atoms_per_frame']:.0f} atoms/frame, {summary['tracks']} tracks, "
          f"{summary['events']} events {summary['events_by_kind']}, "
          f"{summary['frames_per_s'] or 0:.1f} frames/s on {summary['backend']}")
    print(f"wrote {args.out}/atoms.csv, events.jsonl, frames.csv, summary.json")
    return 0 if summary["frames"] > summary["frames_with_error"] else 1


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
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_engine_options(p)
    p.set_defaults(func=_analyze)


#: Public names of the shared analysis options (used by :mod:`dashboard.serve`).
add_engine_options = _add_engine_options
config_from_args = _config
