"""``stemwatch bench infer``: inference speed per frame on the CPU backend (and the GPU where one exists).

CPU rows: frames of 256x256, 512x512 and 1024x1024 pixels at 0.1 A/px (the model grid is then
half that size per side at 0.2 A/px) through :meth:`Inferencer.predict` (resampling,
normalisation, padding, network), median of N runs; the network alone; GMAC of the network on
that grid and the GFLOP/s achieved (2 FLOP per MAC). GPU rows (only when the TensorRT probe
passes): CUDA events around ``execute_async_v3``, host->device and device->host copies timed
separately, FP32 and FP16 engines.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from stemwatch.bench import BenchReport

FRAME_PX_A = 0.1


def _median_ms(fn, n: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts) * 1e3)


def _frame(side: int, rng) -> np.ndarray:
    """A graphene-like test frame (Poisson counts on a hexagonal lattice) at FRAME_PX_A."""
    try:
        from engine.sim import make_training_example

        return np.asarray(make_training_example(rng, shape_px=(side, side), pixel_size_A=FRAME_PX_A).image)
    except Exception:
        yy, xx = np.mgrid[0:side, 0:side] * FRAME_PX_A
        k = 2 * np.pi / 2.13
        lat = sum(np.cos(k * (np.cos(a) * xx + np.sin(a) * yy)) for a in (0, 2 * np.pi / 3, 4 * np.pi / 3))
        return rng.poisson(20 * (lat - lat.min() + 0.2)).astype(np.uint16)


def _interleaved_ms(fns: dict, n: int, warmup: int = 2) -> dict:
    """Median ms per call of each callable, measured interleaved (one of each per round), so a loaded
    machine's slow spells hit all of them alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    ts = {k: [] for k in fns}
    for _ in range(n):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            ts[k].append(time.perf_counter() - t0)
    return {k: float(np.median(v) * 1e3) for k, v in ts.items()}


def _cpu_inferencers():
    """``{precision: Inferencer}``: FP32 always, INT8 where ``<model>_int8.onnx`` exists (issue 20)."""
    from engine.infer.inferencer import Inferencer
    from stemwatch.config import InferenceConfig

    infs = {"fp32": Inferencer(InferenceConfig(backend="onnx", cpu_precision="fp32"))}
    try:
        infs["int8"] = Inferencer(InferenceConfig(backend="onnx", cpu_precision="int8"))
    except FileNotFoundError as exc:
        print(f"bench infer: no INT8 row: {exc}", file=sys.stderr)
    return infs


def bench_infer(quick: bool = False) -> BenchReport:
    from engine.infer import cpu_precision as cp
    from engine.infer.probe import probe_gpu
    from stemwatch.config import InferenceConfig

    rng = np.random.default_rng(0)
    n = 5 if quick else 20
    rows = []
    notes = {}
    targets = {}
    infs = _cpu_inferencers()
    cpu_net_ms: dict[int, float] = {}         # model-grid side -> CPU network ms (the default precision)
    try:
        inf = infs["fp32"]
        mpp = float(inf.contract.metadata.get("stemwatch.macs_per_pixel", "nan"))
        notes["backend"] = "; ".join(f"{k}: {v.description}" for k, v in infs.items())
        notes["model"] = f"{inf.contract.path.name} ({inf.contract.metadata.get('stemwatch.params', '?')} params, " \
                         f"{inf.contract.pixel_size_A} A/px)"
        flags = cp.cpu_flags()
        notes["cpu flags"] = " ".join(sorted(f for f in flags if f.startswith(("avx", "amx", "fma")))) or "(none read)"
        from engine.infer.probe import select_backend

        be, why = select_backend("onnx", InferenceConfig(backend="onnx"))
        default_precision = be.precision
        be.close()
        notes["auto precision"] = why.split("; ", 1)[-1]
        notes["timing"] = "FP32 and INT8 measured interleaved in one process, medians"
        for side in (256, 512, 1024):
            frame = _frame(side, rng)
            print(f"bench infer: CPU {side}x{side}", file=sys.stderr, flush=True)
            reps = n if side < 1024 else max(3, n // 3)
            total = _interleaved_ms({k: (lambda i=i: i.predict(frame, FRAME_PX_A)) for k, i in infs.items()}, reps)
            x, _ = inf.preprocess(frame, FRAME_PX_A)
            pre = _median_ms(lambda: inf.preprocess(frame, FRAME_PX_A), n)
            net = _interleaved_ms({k: (lambda i=i: i.run_grid(x)) for k, i in infs.items()}, reps)
            gh, gw = x.shape
            ph, pw = -(-gh // inf.multiple) * inf.multiple, -(-gw // inf.multiple) * inf.multiple
            gmac = mpp * ph * pw / 1e9
            for k in infs:
                rows.append({"device": f"cpu {k}", "frame": f"{side}x{side}", "grid": f"{gh}x{gw}",
                             "ms/frame": total[k], "preprocess ms": pre, "network ms": net[k], "GMAC": gmac,
                             "GFLOP/s": 2 * gmac / (net[k] / 1e3), "fps": 1e3 / total[k],
                             "vs fp32": net["fp32"] / net[k]})
            cpu_net_ms[ph] = net.get(default_precision, net["fp32"])
            if side == 512:
                for k in infs:
                    targets[f"512x512 @0.1 A/px on CPU {k} <= 35 ms"] = \
                        f"{total[k]:.1f} ms: {'PASS' if total[k] <= 35 else 'FAIL'}"
    finally:
        for i in infs.values():
            i.close()
    ok, why = probe_gpu()
    notes["gpu"] = why
    if ok:
        rows += gpu_rows(mpp, cpu_net_ms, n, notes)
    else:
        notes["gpu not run"] = ("TensorRT FP32 (batch 1) and FP16 (batch 1 and 4) engines, CUDA-event timing of "
                                "h2d / execute / d2h, ratio to the CPU network: no usable GPU here")
    columns = ["device", "frame", "grid", "ms/frame", "preprocess ms", "network ms", "GMAC", "GFLOP/s", "fps",
               "vs fp32"]
    if any("h2d ms" in r for r in rows):
        columns += ["batch", "h2d ms", "d2h ms", "x cpu"]
    return BenchReport(name="infer", columns=columns, rows=rows, notes=notes, targets=targets)


def gpu_rows(mpp: float, cpu_net_ms: dict, n: int, notes: dict, sides=(128, 256, 512, 1024), make_backend=None) -> list:
    """TensorRT rows (issue 20, criterion 6): the FP32 engine at batch 1 and the FP16 engine (built from
    the FP16 twin of the FP32 graph; never from the INT8 file) at batch 1 and 4, each timed with CUDA
    events around ``execute_async_v3`` with the host->device and device->host copies timed apart
    (:meth:`TensorRTBackend.benchmark`). ``network ms`` and ``ms/frame`` are per frame (a batch's
    time / batch); ``x cpu``: the CPU backend's network ms at the same grid (``cpu_net_ms``, by side)
    over the GPU's execute ms per frame."""
    from engine.infer.model import DEFAULT_MODEL, DEFAULT_MODEL_FP16, ModelContract
    from engine.infer.tensorrt_backend import TensorRTBackend

    make_backend = make_backend or TensorRTBackend
    rows = []
    for precision, path, batches in (("fp32", DEFAULT_MODEL, (1,)), ("fp16", DEFAULT_MODEL_FP16, (1, 4))):
        c = ModelContract.load(path)
        if c.metadata.get("stemwatch.precision") == "int8":
            raise ValueError(f"{path.name} is an INT8 model: TensorRT builds from the FP32/FP16 graphs only")
        print(f"bench infer: building/loading TensorRT {precision} engine (batch <= {max(batches)})",
              file=sys.stderr, flush=True)
        be = make_backend(c.path, onnx_sha256=c.sha256, precision=precision, multiple=c.multiple,
                          min_side_px=32, opt_side_px=512, max_side_px=max(sides),
                          input_name=c.input_name, output_name=c.output_name, max_batch=max(batches))
        try:
            notes[f"tensorrt {precision}"] = f"{be.description}; engine {be.engine_source}; model {path.name}"
            for b in batches:
                for side in sides:
                    r = be.benchmark((side, side), n_iter=n * 5, batch=b)
                    gmac = mpp * side * side / 1e9
                    comp = r["compute_ms"] / b
                    rows.append({"device": f"gpu {precision}", "frame": f"(grid {side})", "grid": f"{side}x{side}",
                                 "batch": b, "ms/frame": r["run_wall_ms"] / b, "network ms": comp,
                                 "preprocess ms": float("nan"), "h2d ms": r["h2d_ms"] / b, "d2h ms": r["d2h_ms"] / b,
                                 "GMAC": gmac, "GFLOP/s": 2 * gmac / (comp / 1e3), "fps": 1e3 * b / r["run_wall_ms"],
                                 "x cpu": cpu_net_ms.get(side, float("nan")) / comp})
        finally:
            be.close()
    return rows
