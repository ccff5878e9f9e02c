"""Sub-commands of the inference area: ``train``, ``export``, ``doctor``, ``eval-model``.

Light module: heavy imports (torch, onnxruntime, tensorrt) happen inside the handlers only.
"""

from __future__ import annotations

import argparse
import json
import sys


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
    from engine.train.training import TrainConfig, train

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
    if args.low_dose_fraction is not None:
        cfg.low_dose_fraction = args.low_dose_fraction
    if args.new_per_step is not None:
        cfg.new_per_step = args.new_per_step
    summary = train(cfg, resume=args.resume, progress=not args.no_progress)
    print(json.dumps(summary, indent=2))
    if args.install:
        for name in ("stemwatch_fcn.onnx", "stemwatch_fcn_fp16.onnx"):
            shutil.copy2(Path(args.out) / name, MODELS_DIR / name)
        print(f"installed the model into {MODELS_DIR}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from engine.infer.preprocess import NORMALISATION
    from engine.train.export import export_both
    from engine.train.training import load_checkpoint

    net, meta = load_checkpoint(args.checkpoint)
    cfg = meta.get("config", {})
    extra = {"training": {"checkpoint": Path(args.checkpoint).name, "step": meta.get("step"),
                          "seed": cfg.get("seed"), "val": meta.get("val")}}
    p32, p16 = export_both(net, args.out, float(cfg.get("model_px_A", 0.2)), NORMALISATION, extra_metadata=extra)
    print(f"wrote {p32} ({p32.stat().st_size / 1e6:.2f} MB) and {p16} ({p16.stat().st_size / 1e6:.2f} MB)")
    return 0


def doctor_report() -> dict:
    """Versions, GPU, and which backends can run here (with the reasons for those that cannot)."""
    import platform

    from engine.infer.backends import physical_cores
    from engine.infer.probe import probe_gpu

    rep: dict = {"python": sys.version.split()[0], "platform": platform.platform(),
                 "physical_cores": physical_cores()}
    for mod in ("numpy", "scipy", "onnxruntime", "onnx", "torch", "tensorrt", "pycuda"):
        try:
            m = __import__(mod)
            rep[mod] = str(getattr(m, "__version__", "installed"))
        except Exception as exc:
            rep[mod] = f"not available ({type(exc).__name__}: {exc})"
    rep["gpu"] = _gpu_names()
    backends = {}
    try:
        import onnxruntime as ort

        backends["onnx"] = {"available": True, "reason": f"ONNX Runtime {ort.__version__}, providers "
                                                          f"{ort.get_available_providers()}"}
    except Exception as exc:
        backends["onnx"] = {"available": False, "reason": f"{type(exc).__name__}: {exc}"}
    ok, why = probe_gpu()
    backends["tensorrt"] = {"available": ok, "reason": why}
    rep["backends"] = backends
    try:
        from engine.infer.model import ModelContract

        c = ModelContract.load()
        rep["model"] = {"path": str(c.path), "sha256": c.sha256[:16], "pixel_size_A": c.pixel_size_A,
                        "classes": list(c.classes), "multiple": c.multiple}
    except Exception as exc:
        rep["model"] = f"not usable ({type(exc).__name__}: {exc})"
    try:
        from engine.infer.probe import select_backend

        backend, reason = select_backend("auto")
        rep["auto_selects"] = {"backend": backend.description, "reason": reason}
        backend.close()
    except Exception as exc:
        rep["auto_selects"] = f"failed ({type(exc).__name__}: {exc})"
    return rep


def _gpu_names() -> str:
    """NVIDIA GPUs as pycuda or ``nvidia-smi -L`` see them (a string; never raises)."""
    try:
        import pycuda.driver as cuda

        cuda.init()
        names = [cuda.Device(i).name() for i in range(cuda.Device.count())]
        return ", ".join(names) if names else "pycuda sees no CUDA device"
    except Exception as exc:
        pycuda_err = f"{type(exc).__name__}: {exc}"
    import shutil
    import subprocess

    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10)
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip().replace("\n", "; ")
        except Exception:
            pass
    return f"none found (pycuda: {pycuda_err}; nvidia-smi: {'no GPU listed' if smi else 'not installed'})"


def _cmd_doctor(args: argparse.Namespace) -> int:
    rep = doctor_report()
    if args.json:
        print(json.dumps(rep, indent=2))
        return 0
    for k, v in rep.items():
        if isinstance(v, dict):
            print(f"{k}:")
            for k2, v2 in v.items():
                print(f"  {k2}: {v2}")
        else:
            print(f"{k}: {v}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from engine.infer.heldout import accuracy_table, format_table

    from stemwatch.config import InferenceConfig

    cfg = InferenceConfig(backend=args.backend, model_path=args.model)
    table = accuracy_table(cfg, frames_per_cell=args.frames, quick=args.quick, progress=True)
    print(format_table(table))
    if args.snr:
        from engine.infer.heldout import format_snr_breakdown, snr_breakdown
        from engine.infer.inferencer import Inferencer

        with Inferencer(cfg) as inf:
            table["snr_breakdown"] = snr_breakdown(inf, frames=args.frames)
        print("\nplain frames by C-atom signal-to-noise ratio (ImagingParams.atom_snr):\n")
        print(format_snr_breakdown(table["snr_breakdown"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(table, f, indent=2)
    return 0


def register(sub) -> None:
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
    p.add_argument("--install", action="store_true", help="copy the exported ONNX files into engine/models")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("export", help="export a training checkpoint to the FP32 and FP16 ONNX models",
                       description="Fold BatchNorm, add softmax, write <out>/stemwatch_fcn.onnx (opset 18, dynamic "
                                   "H/W, metadata contract) and stemwatch_fcn_fp16.onnx.")
    p.add_argument("checkpoint", help="ckpt_best.npz or ckpt_last.npz from `stemwatch train`")
    p.add_argument("--out", default="engine/models", help="output folder (default: %(default)s)")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("doctor", help="versions, GPU, available inference backends and why others are not",
                       description="Probe the inference stack: library versions, the GPU, whether TensorRT and "
                                   "ONNX Runtime can run (with the reason when not) and which backend auto picks.")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_doctor)

    p = sub.add_parser("eval-model", help="accuracy table of the network on the held-out simulated set",
                       description="Detection F1, Si precision/recall, heavy-atom recall and localisation RMSE of "
                                   "the model (threshold + centre-of-mass finder) per dose x pixel size, on frames "
                                   "generated from the held-out seed (never used in training).")
    p.add_argument("--backend", default="onnx", choices=["auto", "tensorrt", "onnx"])
    p.add_argument("--model", default=None, help="ONNX model (default: the shipped one)")
    p.add_argument("--frames", type=int, default=6, help="frames per table cell (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="fewer cells")
    p.add_argument("--snr", action="store_true",
                   help="also split the 1e3 and 1e4 e/A^2 cells by each frame's C-atom signal-to-noise ratio")
    p.add_argument("--json", default=None, help="also write the table as JSON to this file")
    p.set_defaults(func=_cmd_eval)
