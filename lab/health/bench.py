"""``stemwatch bench health``: what frame health costs per frame (engine/health, issue 13).

On simulated 256^2, 512^2 and 1024^2 frames at 0.1 A/px (1e5 e/A^2): the per-frame checks on the raw
pixels (:meth:`HealthMonitor.before` once the series' scale is settled), one lattice pixel-size estimate,
the C-atom SNR estimate, and the amortised total (checks + SNR + one estimate every
``scale_recheck_frames`` frames). Times are CPU time of this process (``time.process_time``, one
thread), so that a machine loaded by other work does not inflate them; the load average is reported.

Target (issue 13): <= 2 ms per 512^2 frame for the pixel size from the lattice (amortised).
"""

from __future__ import annotations

import os
import time

import numpy as np


def _cpu_ms(fn, n: int) -> float:
    fn()
    ts = []
    for _ in range(n):
        t = time.process_time()
        fn()
        ts.append(time.process_time() - t)
    return 1e3 * float(np.median(ts))


def bench_health(quick: bool = False):
    from engine.chem.chemistry import chemistry_from_positions
    from engine.health.atoms import estimate_snr
    from engine.health.monitor import HealthMonitor
    from engine.health.scale import estimate_pixel_size
    from engine.sim.movie import MovieSpec, run_movie
    from stemwatch.bench import BenchReport
    from stemwatch.config import ChemistryConfig, HealthConfig
    from streamer.frame import Frame

    cfg = HealthConfig()
    rows, targets = [], {}
    n = 5 if quick else 20
    for size in (256, 512, 1024):
        frames, truth = run_movie(MovieSpec(n_frames=3, shape_px=(size, size), pixel_size_A=0.1, seed=size))
        mon = HealthMonitor(cfg)
        for i in range(3):                      # settle the series' scale
            mon.before(Frame(frames[i], "b", i, float(i), 0.1))
        k = [3]

        def before():
            mon.before(Frame(frames[k[0] % 3], "b", k[0], float(k[0]), 0.1))
            k[0] += 1

        t = truth.frame(0)
        c = chemistry_from_positions(t.xy_A, t.species, ChemistryConfig())
        c.atoms.xy_px = t.xy_px
        c.atoms.pixel_size_A = 0.1
        checks = _cpu_ms(before, n)
        scale = _cpu_ms(lambda: estimate_pixel_size(frames[0]), max(3, n // 4))
        snr = _cpu_ms(lambda: estimate_snr(frames[0], c), n)
        amort = checks + snr + scale / cfg.scale_recheck_frames
        rows.append({"size": f"{size}x{size}", "checks_ms": checks, "scale_estimate_ms": scale,
                     "scale_amortised_ms": scale / cfg.scale_recheck_frames, "snr_ms": snr, "total_amortised_ms": amort})
    r = next(r for r in rows if r["size"] == "512x512")
    targets["512x512 lattice pixel size, amortised"] = (f"{r['scale_amortised_ms']:.2f} ms <= 2 ms: "
                                                        f"{'PASS' if r['scale_amortised_ms'] <= 2 else 'FAIL'}")
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return BenchReport(name="health", columns=["size", "checks_ms", "scale_estimate_ms", "scale_amortised_ms", "snr_ms",
                                               "total_amortised_ms"], rows=rows, targets=targets,
                       notes={"time": "CPU ms of this process, median", "recheck": f"every {cfg.scale_recheck_frames} frames",
                              "load average": " ".join(f"{v:.1f}" for v in load)})
