"""``stemwatch bench pipeline``: the same rows with the other CPU network precision (issue 20).

The pipeline bench runs the default configuration first (``cpu_precision`` auto: INT8 on CPUs where
it is faster); :func:`other_precision_rows` then repeats every size with the other precision (FP32
when auto chose INT8, INT8 when it chose FP32 and ``<model>_int8.onnx`` exists), on frames from the
same seeds, so FP32 and INT8 figures come from one run on one machine state.
"""

from __future__ import annotations

import sys


def pipeline_precision(pipe) -> str:
    """``fp32`` / ``int8`` (CPU) or ``fp16`` (TensorRT) of a Pipeline's network."""
    return str(getattr(pipe.inferencer, "precision", "fp32"))


def other_precision_rows(cfg, done: str, sizes, quick: bool, frames, offline, live) -> tuple[list[dict], str]:
    """Rows (offline + live, as the main loop) for the CPU precision not yet run; ``([], why)`` when none.
    ``frames``, ``offline``, ``live``: the pipeline bench's own frame maker and measurements."""
    from engine.pipeline import Pipeline

    other = {"int8": "fp32", "fp32": "int8"}.get(done)
    if other is None:
        return [], f"network {done}: no other CPU precision to compare"
    cfg2 = cfg.replace(inference={"cpu_precision": other})
    try:
        pipe = Pipeline(cfg2)
    except FileNotFoundError as exc:                       # no INT8 model beside the FP32 one
        return [], f"no {other} rows: {exc}"
    rows = []
    try:
        for size in sizes:
            n = 6 if quick else 12
            print(f"bench pipeline: {size}x{size} {other}: simulating {n} frames ...", file=sys.stderr, flush=True)
            off = offline(pipe, frames(size, n, seed=size), repeat=1 if quick else 2)
            rate = min(100.0, 1.5 * off["fps"])
            n_live = max(12, int(rate * (3.0 if quick else 6.0)))
            fr = frames(size, n_live, change_at=n_live // 2, seed=size + 1)
            lv = live(cfg2, fr, rate_hz=rate, change_at=n_live // 2)
            rows.append({"size": f"{size}x{size}", "precision": other, **off, **lv})
        why = pipe.backend_description
    finally:
        pipe.close()
    return rows, why
