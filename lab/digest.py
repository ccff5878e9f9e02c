"""A digest of ``stemwatch analyze`` outputs on the bundled recordings: "behaviour unchanged" as a test.

:func:`output_digest` reduces an analyze output folder to what the analysis decided, in a form that
does not depend on the clock or on the last bits of the CPU's floating point:

* exact (SHA-256): every atom row's discrete content (frame, track id, species, coordination),
  every frame's counts (frames.csv without times and drift), every event's discrete content
  (frame, kind, track id, before, after, first frame) and the count fields of ``summary.json``;
* numeric, compared within :data:`TOLERANCE`: per frame the mean atom position (px) and mean
  confidence, the drift (A), and each event's position (px) and confidence. (Rounded positions
  would flip between machines whose ONNX Runtime kernels differ in the last bits; a real change of
  behaviour moves these by far more than the tolerance.)

Next to the hashes the digest keeps the counts and the event list in plain text, so that a
mismatch says what changed. ``summary.json``'s timings, backend and configuration are not part of it.

``tests/test_outputs_digest.py`` runs ``analyze`` (ONNX Runtime on the CPU, 2 threads) on
:data:`RECORDINGS` and compares with :data:`DIGEST_FILE`. When a change is *meant* to change the
outputs, refresh the stored digest on purpose and say so in the commit::

    PYTHONPATH=$PWD python -m lab.digest --write

(``python -m lab.digest`` without ``--write`` prints the differences and exits 1 when there are any.)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECORDINGS = ("replay_data/01_switching_256.swrec", "replay_data/03_lowdose_256.swrec")
DIGEST_FILE = ROOT / "tests" / "data" / "analyze_digest.json"
SUMMARY_KEYS = ("frames", "frames_with_error", "atom_rows", "species_rows", "tracks", "events", "events_by_kind")
#: The inference settings of the digest: the CPU backend with a fixed thread count, on the FP32 reference
#: network (cpu_precision auto picks INT8 by CPU flags, which would make the digest depend on the machine).
INFERENCE = {"backend": "onnx", "threads": 2, "cpu_precision": "fp32"}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


#: numeric parts of the digest: key -> largest accepted absolute difference
TOLERANCE = {"frame_mean_xy_px": 2e-3, "frame_mean_confidence": 2e-3, "drift_A": 2e-3, "event_xy_px": 2e-2,
             "event_confidence": 2e-3}


def _events(out_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "events.jsonl").read_text().splitlines() if line.strip()]


def output_digest(out_dir: str | Path) -> dict:
    """What an analyze output folder decided, as plain data (see the module docstring)."""
    import numpy as np

    out_dir = Path(out_dir)
    summary = json.loads((out_dir / "summary.json").read_text())
    atoms = np.genfromtxt(out_dir / "atoms.csv", delimiter=",", names=True, dtype=None, encoding="utf-8")
    atoms = np.atleast_1d(atoms)
    discrete = "\n".join(f"{f},{a},{sp},{c}" for f, a, sp, c in
                          zip(atoms["frame"], atoms["atom_id"], atoms["species"], atoms["coordination"]))
    frames = np.atleast_1d(np.genfromtxt(out_dir / "frames.csv", delimiter=",", names=True, dtype=None,
                                         encoding="utf-8"))
    counts = "\n".join(f"{r['frame']},{r['n_atoms']},{r['n_si']},{r['n_other']},{r['error']}" for r in frames)
    fr = atoms["frame"]
    order = np.unique(fr)
    mean_xy = [[round(float(atoms["x"][fr == f].mean()), 5), round(float(atoms["y"][fr == f].mean()), 5)]
               for f in order]
    mean_conf = [round(float(atoms["confidence"][fr == f].mean()), 5) for f in order]
    events = _events(out_dir)
    ev_keys = ("frame", "kind", "atom_id", "before", "after", "first_frame")
    return {
        "atoms": _sha(discrete.encode()),
        "frames": _sha(counts.encode()),
        "events": _sha(json.dumps([[e.get(k) for k in ev_keys] for e in events]).encode()),
        "summary": {k: summary.get(k) for k in SUMMARY_KEYS},
        "event_list": [f"{e['frame']} {e['kind']} atom {e['atom_id']}" for e in events],
        "frame_mean_xy_px": mean_xy,
        "frame_mean_confidence": mean_conf,
        "drift_A": [[round(float(r["drift_x_A"]), 5), round(float(r["drift_y_A"]), 5)] for r in frames],
        "event_xy_px": [[round(float(e["x"]), 4), round(float(e["y"]), 4)] for e in events],
        "event_confidence": [round(float(e["confidence"]), 5) for e in events],
    }


def analyze_digests(recordings=RECORDINGS, work_dir: str | Path | None = None) -> dict:
    """Run ``analyze`` on each recording with the default configuration (CPU backend) and digest it."""
    from engine.analyze import analyze_file
    from stemwatch.config import Config

    cfg = Config().replace(inference=INFERENCE)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(work_dir or tmp)
        for rec in recordings:
            folder = base / Path(rec).stem
            analyze_file(str(ROOT / rec), str(folder), cfg, progress=False)
            out[rec] = output_digest(folder)
    return out


def _close(a, b, tol: float) -> bool:
    import numpy as np

    try:
        a, b = np.asarray(a, float), np.asarray(b, float)
    except (TypeError, ValueError):
        return False
    return a.shape == b.shape and bool(np.all(np.abs(a - b) <= tol))


def differences(stored: dict, now: dict) -> list[str]:
    """Human-readable differences between two digests (empty when equal; numbers within TOLERANCE)."""
    diffs = []
    for rec in sorted(set(stored) | set(now)):
        a, b = stored.get(rec), now.get(rec)
        if a is None or b is None:
            diffs.append(f"{rec}: {'new' if a is None else 'missing'}")
            continue
        for key in sorted(set(a) | set(b)):
            va, vb = a.get(key), b.get(key)
            same = _close(va, vb, TOLERANCE[key]) if key in TOLERANCE else va == vb
            if not same:
                shown = (f"stored {va!r}, now {vb!r}" if key not in TOLERANCE or len(repr(va)) < 300
                         else f"differs by more than {TOLERANCE[key]}")
                diffs.append(f"{rec}: {key}: {shown}")
    return diffs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lab.digest", description=__doc__.split("\n\n")[0])
    p.add_argument("--write", action="store_true", help=f"store the digest in {DIGEST_FILE.relative_to(ROOT)}")
    args = p.parse_args(argv)
    now = analyze_digests()
    if args.write:
        DIGEST_FILE.parent.mkdir(parents=True, exist_ok=True)
        DIGEST_FILE.write_text(json.dumps(now, indent=1, sort_keys=True) + "\n")
        print(f"wrote {DIGEST_FILE}")
        return 0
    stored = json.loads(DIGEST_FILE.read_text()) if DIGEST_FILE.exists() else {}
    diffs = differences(stored, now)
    print("\n".join(diffs) if diffs else "analyze outputs match the stored digest")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
