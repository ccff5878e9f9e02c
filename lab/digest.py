"""A digest of ``stemwatch analyze`` outputs on the bundled recordings: "behaviour unchanged" as a test.

:func:`output_digest` reduces an analyze output folder to what the analysis decided, in a form that
does not depend on the machine or the clock: per-file SHA-256 of ``atoms.csv`` and ``frames.csv``
(already rounded by the writer), of the events (positions rounded to 1e-3 px, confidences to 1e-4)
and the count fields of ``summary.json`` (never its timings, backend or configuration). Next to the
hashes it keeps the counts and the event list in plain text, so that a mismatch says what changed.

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
#: The inference settings of the digest: the CPU backend with a fixed thread count.
INFERENCE = {"backend": "onnx", "threads": 2}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _round(value, ndigits: int):
    return round(value, ndigits) if isinstance(value, float) else value


def event_lines(out_dir: Path) -> list[str]:
    """The events of ``events.jsonl`` without times, positions rounded (one string each)."""
    lines = []
    for line in (out_dir / "events.jsonl").read_text().splitlines():
        if not line.strip():
            continue
        e = json.loads(line)
        e = {k: v for k, v in e.items() if k not in ("t_acquired", "latency_s", "series")}
        for k in ("x", "y", "x_A", "y_A"):
            e[k] = _round(e.get(k), 3)
        e["confidence"] = _round(e.get("confidence"), 4)
        lines.append(json.dumps(e, sort_keys=True))
    return lines


def output_digest(out_dir: str | Path) -> dict:
    """What an analyze output folder decided, as plain data (see the module docstring)."""
    out_dir = Path(out_dir)
    summary = json.loads((out_dir / "summary.json").read_text())
    frames = (out_dir / "frames.csv").read_text().splitlines()
    # t_acquired comes from the recording (identical on every run); kept in the hash
    events = event_lines(out_dir)
    return {
        "atoms_csv": _sha((out_dir / "atoms.csv").read_bytes()),
        "frames_csv": _sha("\n".join(frames).encode()),
        "events": _sha("\n".join(events).encode()),
        "summary": {k: summary.get(k) for k in SUMMARY_KEYS},
        "event_list": [f"{e['frame']} {e['kind']} atom {e['atom_id']}" for e in map(json.loads, events)],
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


def differences(stored: dict, now: dict) -> list[str]:
    """Human-readable differences between two digests (empty when equal)."""
    diffs = []
    for rec in sorted(set(stored) | set(now)):
        a, b = stored.get(rec), now.get(rec)
        if a is None or b is None:
            diffs.append(f"{rec}: {'new' if a is None else 'missing'}")
            continue
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                diffs.append(f"{rec}: {key}: stored {a.get(key)!r}, now {b.get(key)!r}")
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
