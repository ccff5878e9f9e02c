"""Sub-command of the engine: ``analyze`` (offline), and the analysis options it shares with ``serve``
(:mod:`dashboard.serve`, which composes the live service and the screen); ``evaluate`` is in :mod:`lab.cli`.

Light module: numpy, the network backends, Bokeh and ZeroMQ are imported inside the handlers.
"""

from __future__ import annotations

import argparse
import sys

from streamer.cli import add_file_options


def _add_engine_options(p: argparse.ArgumentParser) -> None:
    from stemwatch.config import Config, InferenceConfig, choices

    d = Config()                         # every default below is the configuration's, never repeated here
    g = p.add_argument_group("analysis")
    g.add_argument("--backend", choices=choices(InferenceConfig, "backend"), default=None,
                   help=f"inference backend (default: config, {d.inference.backend}: TensorRT when a GPU works, "
                        "else ONNX Runtime CPU)")
    g.add_argument("--model", metavar="FILE", default=None, help="ONNX model (default: the shipped one)")
    g.add_argument("--k-of-n", nargs=2, type=int, metavar=("K", "N"), default=None,
                   help="debounce: a new state must hold K of the last N frames (default: config, "
                        f"{' '.join(map(str, d.events.k_of_n))})")
    g.add_argument("--min-confidence", type=float, default=None, metavar="C",
                   help=f"events below this confidence are not raised (default: config, {d.events.min_confidence})")
    g.add_argument("--config", metavar="JSON", default=None,
                   help="JSON file of configuration overrides by section, e.g. "
                        '{"tracking": {"memory_frames": 4}, "chemistry": {"prob_threshold": 0.4}} '
                        "(`stemwatch config --show` prints the effective configuration)")


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
        ev = {}
        if getattr(args, "k_of_n", None):
            ev["k_of_n"] = tuple(args.k_of_n)
        if getattr(args, "min_confidence", None) is not None:
            ev["min_confidence"] = float(args.min_confidence)
        return cfg.replace(**{k: v for k, v in (("inference", inf), ("events", ev)) if v})
    except ConfigError as exc:
        print(f"stemwatch: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


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
    if not summary["input_complete"]:
        print(f"stemwatch analyze: the input is incomplete: {summary['source']['problem']} "
              "(summary.json: input_complete false)", file=sys.stderr)
        return 1
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
