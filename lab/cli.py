"""Sub-commands of the laboratory: ``train``, ``export``, ``eval-model`` (the network) and ``evaluate``
(an ``analyze`` output against simulator ground truth).

Registered by :mod:`stemwatch.cli` through its list of command modules (a name, imported when the
parser is built), so no runtime package imports :mod:`lab`. Light module: torch, onnxruntime and the
simulator are imported inside the handlers only.
"""

from __future__ import annotations

import argparse
import json
import sys

from lab import radii
from stemwatch.config import InferenceConfig, choices


def _cmd_train(args: argparse.Namespace) -> int:
    try:
        import torch  # noqa: F401
    except ImportError:
        print("stemwatch train needs torch: pip install 'stemwatch[train]' (CPU build: pip install torch==2.13.0)",
              file=sys.stderr)
        return 2
    import shutil
    from pathlib import Path

    from engine.infer.model import MODELS_DIR
    from lab.train.training import TrainConfig, train

    cfg = TrainConfig(out_dir=args.out, seed=args.seed, steps=args.steps, threads=args.threads,
                      max_minutes=args.minutes, batch=args.batch)
    if args.bank is not None:
        cfg.bank_initial = args.bank
    if args.val_frames is not None:
        cfg.val_frames = args.val_frames
        cfg.val_every = max(1, min(cfg.val_every, args.steps))
    if args.steps < cfg.warmup_steps * 2:
        cfg.warmup_steps = max(1, args.steps // 4)
    if args.widths:
        cfg.widths = tuple(int(w) for w in args.widths.split(","))
    for option, field_name in (("low_dose_fraction", "low_dose_fraction"), ("new_per_step", "new_per_step"),
                               ("hole_fraction", "hole_fraction"), ("hole_weight", "hole_weight"), ("lr", "lr"),
                               ("contamination_fraction", "contamination_fraction"),
                               ("contamination_labels", "contamination_labels"),
                               ("warmup", "warmup_steps")):
        if getattr(args, option) is not None:            # given on the command line: overrides the default
            setattr(cfg, field_name, getattr(args, option))
    if args.time_schedule:
        if not args.minutes:
            print("stemwatch train: --time-schedule needs --minutes", file=sys.stderr)
            return 2
        cfg.time_schedule = True
    if args.init:
        if args.resume:
            print("stemwatch train: give --init or --resume, not both", file=sys.stderr)
            return 2
        cfg.init_from = args.init
    summary = train(cfg, resume=args.resume, progress=not args.no_progress)
    print(json.dumps(summary, indent=2))
    if args.install:
        for name in ("stemwatch_fcn.onnx", "stemwatch_fcn_fp16.onnx"):
            shutil.copy2(Path(args.out) / name, MODELS_DIR / name)
        print(f"installed the model into {MODELS_DIR}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    if args.interpolate:
        return _export_interpolated(args)
    if args.checkpoint is None and not args.int8:
        print("stemwatch export: give a CHECKPOINT (and/or --int8 to quantise an FP32 model)", file=sys.stderr)
        return 2
    if args.checkpoint is None:
        return _export_int8(args, Path(args.model) if args.model else None)
    from engine.infer.preprocess import NORMALISATION
    from lab.train.export import export_both
    from lab.train.training import load_checkpoint, recipe

    net, meta = load_checkpoint(args.checkpoint)
    cfg = meta.get("config", {})
    extra = {"training": {"checkpoint": Path(args.checkpoint).name, "step": meta.get("step"),
                          "seed": cfg.get("seed"), "val": meta.get("val"), "recipe": recipe(cfg, meta.get("init_sha256"))}}
    p32, p16 = export_both(net, args.out, float(cfg.get("model_px_A", 0.2)), NORMALISATION, extra_metadata=extra)
    print(f"wrote {p32} ({p32.stat().st_size / 1e6:.2f} MB) and {p16} ({p16.stat().st_size / 1e6:.2f} MB)")
    return _export_int8(args, p32) if args.int8 else 0


def _export_interpolated(args: argparse.Namespace) -> int:
    """``export --interpolate BASE TUNED --alpha A``: WiSE-FT weights (lab.train.interpolate), FP32 + FP16."""
    from pathlib import Path

    from engine.infer.preprocess import NORMALISATION
    from lab.train.export import export_both
    from lab.train.interpolate import interpolate_nets

    if args.checkpoint is not None:
        print("stemwatch export: give a CHECKPOINT or --interpolate, not both", file=sys.stderr)
        return 2
    missing = [p for p in args.interpolate if not Path(p).is_file()]
    if missing:
        print(f"stemwatch export: model {missing[0]} not found", file=sys.stderr)
        return 2
    try:
        net, provenance, px = interpolate_nets(*args.interpolate, args.alpha)
    except ValueError as exc:
        print(f"stemwatch export --interpolate: {exc}", file=sys.stderr)
        return 2
    p32, p16 = export_both(net, args.out, px, NORMALISATION, extra_metadata={"training": provenance})
    print(f"wrote {p32} and {p16}: {args.alpha:g} x {args.interpolate[1]} + {1 - args.alpha:g} x {args.interpolate[0]}")
    return _export_int8(args, p32) if args.int8 else 0


def _export_int8(args: argparse.Namespace, fp32) -> int:
    """``export --int8``: the static QDQ INT8 variant of an FP32 model (lab.train.quantize)."""
    from pathlib import Path

    from engine.infer.cpu_precision import int8_path
    from engine.infer.model import DEFAULT_MODEL

    fp32 = Path(fp32) if fp32 is not None else DEFAULT_MODEL
    if not fp32.is_file():
        print(f"stemwatch export: FP32 model {fp32} not found", file=sys.stderr)
        return 2
    try:
        import onnx  # noqa: F401
        from onnxruntime import quantization  # noqa: F401
    except ImportError as exc:
        print(f"stemwatch export --int8 needs onnx and onnxruntime ({exc}): pip install 'stemwatch[train]'",
              file=sys.stderr)
        return 2
    from lab.train.quantize import quantize_int8

    out = Path(args.out) / int8_path(fp32).name
    exclude = tuple(x for x in args.float_convs.split(",") if x)
    if any(x not in ("first", "last") for x in exclude):
        print(f"stemwatch export: --float-convs takes first, last or both, got {args.float_convs!r}", file=sys.stderr)
        return 2
    if args.calibration_frames < 1:
        print("stemwatch export: --calibration-frames must be >= 1", file=sys.stderr)
        return 2
    import logging

    logging.getLogger().setLevel(logging.ERROR)        # onnxruntime.quantization's pre-processing advice
    recipe = quantize_int8(fp32, out, n_frames=args.calibration_frames, method=args.calibration_method,
                           per_channel=not args.per_tensor, exclude=exclude, seed=args.calibration_seed,
                           percentile=args.percentile,
                           progress=lambda i, n: print(f"\rsimulating calibration frames {i}/{n}", end="",
                                                       file=sys.stderr, flush=True))
    print(file=sys.stderr)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB): {json.dumps(recipe)}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from lab.infer.heldout import accuracy_table, format_table

    from stemwatch.config import InferenceConfig

    if args.compare_int8:
        from lab.infer.int8_eval import compare_table, format_compare

        try:
            cmp = compare_table(frames_per_cell=args.frames, model_path=args.model, progress=True)
        except FileNotFoundError as exc:   # no (matching) INT8 model beside the FP32 one
            print(f"stemwatch eval-model: {exc}", file=sys.stderr)
            return 2
        print(format_compare(cmp))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(cmp, f, indent=2)
        return 0 if cmp["within"] else 1
    if args.seed is not None and args.snr:
        print("stemwatch eval-model: --snr scores the held-out seed only; drop --seed", file=sys.stderr)
        return 2
    cfg = InferenceConfig(backend=args.backend, model_path=args.model, cpu_precision=args.precision)
    table = accuracy_table(cfg, frames_per_cell=args.frames, quick=args.quick, progress=True,
                           **({} if args.seed is None else {"seed": args.seed}))
    print(format_table(table))
    if args.snr:
        from lab.infer.heldout import format_snr_breakdown, snr_breakdown
        from engine.infer.inferencer import Inferencer

        with Inferencer(cfg) as inf:
            table["snr_breakdown"] = snr_breakdown(inf, frames=args.frames)
        print("\nplain frames by C-atom signal-to-noise ratio (ImagingParams.atom_snr):\n")
        print(format_snr_breakdown(table["snr_breakdown"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(table, f, indent=2)
    return 0


# ------------------------------------------------------------------------------------------- evaluate
def _evaluate_heldout(args) -> int:
    from lab.alarm_eval import format_heldout, run_heldout, write_json

    def progress(m):
        if not args.quiet and m.get("skipped"):
            print(f"  {m['contrast']} {m['dose']:.0e} seed {m['seed']}: skipped ({m['why']})", file=sys.stderr)
        elif not args.quiet:
            print(f"  {m['contrast']} {m['dose']:.0e} seed {m['seed']}: {m['found']}/{m['truth']} found, "
                  f"{m['false']} false ({m['glitch_false']} after a glitch, {m['duplicates']} duplicates)",
                  file=sys.stderr)

    report = run_heldout(seeds=args.seeds, n_frames=args.frames, doses=args.doses or (3e4, 1e5, 3e5, 1e6),
                         progress=progress, seed0=args.seed0, work_dir=args.keep,
                         jobs=args.jobs)
    print(format_heldout(report))
    if args.json:
        write_json(report, args.json)
        print(f"wrote {args.json}")
    return 0


def _evaluate(args) -> int:
    import json

    from lab.evaluate import evaluate, format_report

    if args.heldout:
        return _evaluate_heldout(args)
    if not args.out_dir or not args.ground_truth:
        print("stemwatch evaluate: give OUT_DIR and GROUND_TRUTH (or --heldout)", file=sys.stderr)
        return 2
    report = evaluate(args.out_dir, args.ground_truth, match_radius_A=args.match_radius,
                      max_latency_frames=args.max_latency, warmup_frames=args.warmup, end_margin_frames=args.end_margin)
    print(format_report(report))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)
        print(f"wrote {args.json}")
    return 0


def register(sub) -> None:
    from lab.alarm_eval import HELDOUT_SEED0

    p = sub.add_parser("train", help="train the atom-finding network on simulated frames (needs torch)",
                       description="Train the network on the simulator (seeded; progress bar; checkpoints and "
                                   "a JSONL loss/metric log in --out), then export FP32 and FP16 ONNX files.")
    p.add_argument("--out", default="runs/train", help="run folder (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="training seed (default: %(default)s)")
    p.add_argument("--steps", type=int, default=7000, help="optimiser steps (default: %(default)s)")
    p.add_argument("--batch", type=int, default=16, help="crops per step (default: %(default)s)")
    p.add_argument("--widths", default="", help="channels per U-Net level, e.g. 12,24,32 (default: 12,24,32,48)")
    p.add_argument("--low-dose-fraction", type=float, default=None,
                   help="share of training frames drawn at 1e3-3e4 e/A^2 instead of 1e3-1e6 (default 0.4)")
    p.add_argument("--new-per-step", type=float, default=None,
                   help="simulated frames added to the bank per step (default 0.75)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: %(default)s)")
    p.add_argument("--minutes", type=float, default=0.0, help="stop after this wall time and export (0 = no limit)")
    p.add_argument("--bank", type=int, default=None, help="simulated frames before the first step (default 600)")
    p.add_argument("--val-frames", type=int, default=None, help="validation frames (default 24)")
    p.add_argument("--resume", default=None, help="continue from a checkpoint (ckpt_last.npz)")
    p.add_argument("--init", default=None, metavar="MODEL",
                   help="fine-tune: start at step 0 with a fresh optimiser from these weights, an FP32 ONNX model "
                        "(e.g. engine/models/stemwatch_fcn.onnx; BatchNorm re-calibrated) or an npz checkpoint")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default 3e-3)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps (default 200)")
    p.add_argument("--time-schedule", action="store_true",
                   help="with --minutes: decay the learning rate by the larger of the step and wall-time fractions, "
                        "so a run stopped by time still ends annealed (not bitwise reproducible)")
    p.add_argument("--hole-fraction", type=float, default=None,
                   help="share of training frames simulated with a hole (default 0: as the simulator draws, ~25 %%)")
    p.add_argument("--hole-weight", type=float, default=None,
                   help="loss weight of the pixels in and around a hole (the hole and 2.5 A around it: the band "
                        "inside the rim, labelled background, and the rim atoms; default 1: off)")
    p.add_argument("--contamination-fraction", type=float, default=None,
                   help="share of training frames simulated with contamination (default 0: as the simulator draws, "
                        "~30 %%)")
    p.add_argument("--contamination-labels", choices=("ignore", "background"), default=None,
                   help="ignore (default): no loss within 1 A of a contamination atom; background: its atoms are "
                        "background and the lattice atoms under it keep their class")
    p.add_argument("--install", action="store_true", help="copy the exported ONNX files into engine/models")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("export", help="export a training checkpoint to the FP32 and FP16 ONNX models",
                       description="Fold BatchNorm, add softmax, write <out>/stemwatch_fcn.onnx (opset 18, dynamic "
                                   "H/W, metadata contract) and stemwatch_fcn_fp16.onnx.")
    p.add_argument("checkpoint", nargs="?", default=None,
                   help="ckpt_best.npz or ckpt_last.npz from `stemwatch train` (optional with --int8)")
    p.add_argument("--out", default="engine/models", help="output folder (default: %(default)s)")
    g = p.add_argument_group("weight interpolation (WiSE-FT)")
    g.add_argument("--interpolate", nargs=2, metavar=("BASE", "TUNED"), default=None,
                   help="instead of a CHECKPOINT: export (1 - alpha) x BASE + alpha x TUNED, two FP32 ONNX models of "
                        "one architecture (e.g. the shipped model and a fine-tune from it)")
    g.add_argument("--alpha", type=float, default=0.5, help="weight of TUNED, 0..1 (default: %(default)s)")
    g = p.add_argument_group("INT8 (issue 20)")
    g.add_argument("--int8", action="store_true",
                   help="also (without CHECKPOINT: only) write <model>_int8.onnx, a static QDQ INT8 variant for the "
                        "ONNX Runtime CPU backend, calibrated on simulated frames over the training ranges")
    g.add_argument("--model", default=None, metavar="FILE",
                   help="--int8 without CHECKPOINT: the FP32 model to quantise (default: the shipped one)")
    g.add_argument("--calibration-frames", type=int, default=24, metavar="N",
                   help="simulated calibration frames (default: %(default)s)")
    g.add_argument("--calibration-method", default="percentile", choices=("minmax", "entropy", "percentile"),
                   help="activation range calibration (default: %(default)s, at --percentile)")
    g.add_argument("--percentile", type=float, default=99.999,
                   help="percentile calibration: share of each activation's values inside its range (default: "
                        "%(default)s)")
    g.add_argument("--calibration-seed", type=int, default=0, help="calibration stream seed (default: %(default)s)")
    g.add_argument("--per-tensor", action="store_true", help="one weight scale per tensor (default: per channel)")
    g.add_argument("--float-convs", default="first,last", metavar="first,last",
                   help="convolutions kept in float: the stem (its input is the raw normalised frame) and/or the "
                        "head (its output the logits); '' for none (default: %(default)s)")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("eval-model", help="accuracy table of the network on the held-out simulated set",
                       description="Detection F1, Si precision/recall, heavy-atom recall and localisation RMSE of "
                                   "the model (threshold + centre-of-mass finder) per dose x pixel size, on frames "
                                   "generated from the held-out seed (never used in training).")
    p.add_argument("--backend", default="onnx", choices=choices(InferenceConfig, "backend"),
                   help="inference backend (default %(default)s: the CPU reference, not the config's auto)")
    p.add_argument("--model", default=None, help="ONNX model (default: the shipped one)")
    p.add_argument("--precision", default="fp32", choices=choices(InferenceConfig, "cpu_precision"),
                   help="CPU backend: the FP32 model, its INT8 variant, or auto (default %(default)s: the reference)")
    p.add_argument("--compare-int8", action="store_true",
                   help="instead: FP32 and INT8 side by side on the plain dose x pixel-size cells (exit 1 when a "
                        "cell's F1 or Si precision/recall differs by more than 0.002)")
    p.add_argument("--frames", type=int, default=6, help="frames per table cell (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="fewer cells")
    p.add_argument("--seed", type=int, default=None,
                   help="frames from another seed than the held-out one (development checks; not with --snr)")
    p.add_argument("--snr", action="store_true",
                   help="also split the 1e3 and 1e4 e/A^2 cells by each frame's C-atom signal-to-noise ratio")
    p.add_argument("--json", default=None, help="also write the table as JSON to this file")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("evaluate", help="score an analyze output folder against simulator ground truth",
                       description="Detection precision/recall, localisation error, species, MOTA, IDF1, identity "
                       "switches, event precision/recall and latency of OUT_DIR (from `stemwatch analyze`) "
                       "against GROUND_TRUTH (the simulator's truth file next to a recording).")
    p.add_argument("out_dir", nargs="?", help="folder written by `stemwatch analyze`")
    p.add_argument("ground_truth", nargs="?", help="ground-truth file (or the recording it sits next to)")
    p.add_argument("--heldout", action="store_true",
                   help="instead: simulate held-out movies (HAADF and MAADF, 3e4-1e6 e/A^2, drift up to 2 A/frame, "
                        "one-frame glitches, every transformation kind), analyse them and print the alarm confusion "
                        "table per kind and per dose (issue 15; takes minutes)")
    p.add_argument("--seeds", type=int, default=1, metavar="N", help="--heldout: movies per contrast and dose")
    p.add_argument("--frames", type=int, default=60, metavar="N", help="--heldout: frames per movie")
    p.add_argument("--doses", type=float, nargs="+", default=None, metavar="E_PER_A2",
                   help="--heldout: doses (default 3e4 1e5 3e5 1e6)")
    p.add_argument("--quiet", action="store_true", help="--heldout: no per-movie lines")
    p.add_argument("--seed0", type=int, default=HELDOUT_SEED0, metavar="SEED",
                   help="--heldout: movie i has seed SEED + i (default %(default)s, the reported held-out set; "
                        "915000 is the development set the fixes were tuned on)")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="--heldout: movies analysed at once, in N processes (default %(default)s)")
    p.add_argument("--keep", metavar="DIR", default=None,
                   help="--heldout: keep each movie, its truth and its analyze output in DIR (default: removed)")
    p.add_argument("--match-radius", type=float, default=radii.ATOM_MATCH_RADIUS_A, metavar="A",
                   help="an atom is found when a detection lies within this distance (default %(default)s A)")
    p.add_argument("--max-latency", type=int, default=radii.MAX_LATENCY_FRAMES, metavar="FRAMES",
                   help="an event counts when reported at most this many frames late (default %(default)s)")
    p.add_argument("--warmup", type=int, default=radii.WARMUP_FRAMES, metavar="FRAMES",
                   help="truth events in the first FRAMES analysed frames are not counted in recall (the "
                        "state before them is not established yet; default %(default)s)")
    p.add_argument("--end-margin", type=int, default=radii.END_MARGIN_FRAMES, metavar="FRAMES",
                   help="truth events in the last FRAMES frames are not counted in recall (no frames left to "
                        "confirm them; default %(default)s)")
    p.add_argument("--json", metavar="FILE", default=None, help="also write the report as JSON")
    p.set_defaults(func=_evaluate)
