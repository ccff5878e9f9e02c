"""Sub-command of the inference area: ``doctor`` (``train``, ``export`` and ``eval-model`` are in :mod:`lab.cli`).

Light module: heavy imports (torch, onnxruntime, tensorrt) happen inside the handlers only.
"""

from __future__ import annotations

import argparse
import json
import sys


def doctor_report() -> dict:
    """Versions, GPU, and which backends can run here (with the reasons for those that cannot)."""
    import platform

    from engine.infer.backends import physical_cores
    from engine.infer.probe import probe_gpu

    rep: dict = {"python": sys.version.split()[0], "platform": platform.platform(),
                 "physical_cores": physical_cores()}
    for mod in ("numpy", "scipy", "onnxruntime", "onnx", "torch", "tensorrt", "pycuda"):
        if mod in NOT_IMPORTED:
            rep[mod] = _installed_version(mod)
            continue
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


#: libraries the analyzer never imports, reported from the installed package's metadata: torch is
#: used by ``stemwatch train``/``export`` only (lab), and importing it took 2-3 s of the command
NOT_IMPORTED = ("torch",)


def _installed_version(dist: str) -> str:
    """The installed version of ``dist`` (the same string as its ``__version__``), without importing it."""
    from importlib import metadata, util

    try:
        if util.find_spec(dist) is None:
            return f"not available (ModuleNotFoundError: No module named '{dist}')"
        return metadata.version(dist)
    except Exception as exc:
        return f"not available ({type(exc).__name__}: {exc})"


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


def register(sub) -> None:
    p = sub.add_parser("doctor", help="versions, GPU, available inference backends and why others are not",
                       description="Probe the inference stack: library versions, the GPU, whether TensorRT and "
                                   "ONNX Runtime can run (with the reason when not) and which backend auto picks.")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_doctor)
