#!/usr/bin/env bash
# Regenerates the bundled recordings (each NAME.swrec with NAME.truth.npz and, when the truth
# module writes one, NAME.events.json) from the simulator. Deterministic for the seeds of the
# scenarios (engine.sim.movie.scenario); only the wall-clock times in the headers differ.
# Usage: replay_data/make_replay_data.sh [PYTHON]   (default .venv/bin/python, run from the repo root)
set -euo pipefail
PY=${1:-.venv/bin/python}
cd "$(dirname "$0")/.."
rm -f replay_data/*.swrec replay_data/*.truth.npz replay_data/*.events.json
"$PY" -m stemwatch simulate --scenario switching --out replay_data/01_switching_256.swrec --frame-time 0.2 -q
"$PY" -m stemwatch simulate --scenario field     --out replay_data/02_field_512.swrec     --frame-time 0.2 -q
"$PY" -m stemwatch simulate --scenario lowdose   --out replay_data/03_lowdose_256.swrec   --frame-time 0.2 -q
du -ch replay_data/*.swrec replay_data/*.npz | tail -1
