"""``stemwatch bench NAME``: benchmarks that print a table and write JSON.

A benchmark is a function ``bench_xxx(quick: bool) -> BenchReport`` registered in :data:`BENCHES`
as ``"module:function"``; it is imported only when run. Speed is measured here, never in unit tests.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

BENCHES: dict[str, str] = {
    "ingest": "lab.streamer.bench:bench_ingest",
    "sim": "lab.sim.bench:bench_sim",
    "infer": "lab.infer.bench:bench_infer",
    "chemistry": "lab.chem.bench:bench_chemistry",
    "track": "lab.track.bench:bench_track",
    "pipeline": "lab.bench_pipeline:bench_pipeline",
    "dashboard": "lab.dashboard.bench:bench_dashboard",
    "soak": "lab.bench_pipeline:bench_soak",
    "cluster": "lab.bench_cluster:bench_cluster",
    "health": "lab.health.bench:bench_health",
}


@dataclass
class BenchReport:
    """What one benchmark measured: a table (``columns`` x ``rows``) plus free-form ``notes``."""

    name: str
    columns: list[str]
    rows: list[dict]
    notes: dict = field(default_factory=dict)
    targets: dict = field(default_factory=dict)   # e.g. {"512x512 float32 fps": ">= 1000: PASS"}


def format_table(report: BenchReport) -> str:
    """Render a report as a fixed-width text table."""
    def fmt(v):
        if isinstance(v, float):
            return f"{v:,.3g}" if abs(v) < 100 else f"{v:,.0f}"
        return str(v)

    cells = [[fmt(r.get(c, "")) for c in report.columns] for r in report.rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(report.columns)]
    lines = [f"== stemwatch bench {report.name} =="]
    lines.append("  ".join(c.rjust(w) for c, w in zip(report.columns, widths)))
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells]
    for k, v in report.notes.items():
        lines.append(f"  {k}: {v}")
    for k, v in report.targets.items():
        lines.append(f"  target {k}: {v}")
    return "\n".join(lines)


def machine_info() -> dict:
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def run_bench(name: str, quick: bool, out_dir: Path) -> BenchReport:
    module_name, func_name = BENCHES[name].split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    report = func(quick=quick)
    print(format_table(report), flush=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"bench_{name}.json"
    path.write_text(json.dumps({"machine": machine_info(), **asdict(report)}, indent=2, default=str))
    print(f"  wrote {path}")
    return report


def _cmd(args: argparse.Namespace) -> int:
    names = list(BENCHES) if args.name == "all" else [args.name]
    if args.name == "all":
        names.remove("soak")
    for name in names:
        run_bench(name, args.quick, Path(args.out))
    return 0


def register(sub) -> None:
    p = sub.add_parser("bench", help="run a benchmark: print a table, write JSON",
                       description="Benchmarks: " + ", ".join(BENCHES) + " (or 'all', without soak).")
    p.add_argument("name", choices=list(BENCHES) + ["all"])
    p.add_argument("--out", default="bench_results", help="folder for bench_NAME.json (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="fewer repetitions (for smoke tests)")
    p.set_defaults(func=_cmd)
