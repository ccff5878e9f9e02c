"""What a soak watches in its own process: resident memory over time, open descriptors, and the trend
of the memory after warm-up (lab.soak)."""

from __future__ import annotations

import os
import threading
import time

import numpy as np


def rss_bytes(pid: int | str = "self") -> int:
    """Resident set size of a process in bytes (Linux ``/proc/PID/status`` VmRSS)."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS in /proc/{pid}/status")


def open_fds() -> int:
    """Number of open file descriptors of this process."""
    return len(os.listdir("/proc/self/fd"))


def memory_trend(t_s: np.ndarray, rss: np.ndarray, warmup_s: float) -> dict:
    """RSS trend after warm-up: samples at ``t_s`` (s from start) of ``rss`` (bytes).

    ``growth_pct``: median of the last quarter of the post-warm-up samples over the median of the
    first quarter, minus 1, in percent; ``slope_MB_per_h``: least-squares slope over all
    post-warm-up samples; ``max_MB`` and the values at the ends.
    """
    t_s, rss = np.asarray(t_s, float), np.asarray(rss, float)
    post = t_s >= warmup_s
    out = {"samples": int(len(rss)), "warmup_s": float(warmup_s),
           "start_MB": float(rss[0] / 2**20) if len(rss) else None,
           "max_MB": float(rss.max() / 2**20) if len(rss) else None,
           "end_MB": float(rss[-1] / 2**20) if len(rss) else None,
           "growth_pct": None, "slope_MB_per_h": None, "post_warmup_samples": int(post.sum())}
    if post.sum() >= 2:          # (a busy machine may give the sampler thread only a few samples)
        t, r = t_s[post], rss[post]
        q = max(1, len(r) // 4)
        first, last = float(np.median(r[:q])), float(np.median(r[-q:]))
        out["after_warmup_MB"] = first / 2**20
        out["growth_pct"] = 100.0 * (last / first - 1.0)
        if t[-1] > t[0]:
            out["slope_MB_per_h"] = float(np.polyfit(t, r / 2**20, 1)[0] * 3600.0)
    return out


def sample_rss(t_s: list, rss: list, t0: float, period_s: float, done: threading.Event) -> None:
    """Append (seconds since ``t0``, RSS bytes) every ``period_s`` until ``done`` is set."""
    while not done.is_set():
        t_s.append(time.monotonic() - t0)
        rss.append(rss_bytes())
        done.wait(period_s)
