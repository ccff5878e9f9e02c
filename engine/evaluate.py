"""``stemwatch evaluate OUT_DIR GROUND_TRUTH``: score an ``analyze`` output against simulator truth.

Per frame, ground-truth atoms and detections are matched one to one within ``match_radius_A``
(sparse minimum-cost matching on KD-tree candidates; a pair that continues the previous frame's
correspondence is preferred, as in CLEAR MOT). Atoms within ``edge_ignore_A`` of the frame edge
form an ignore region (an atom cut by the edge is where truth and detector legitimately disagree):
there, a truth atom is not a miss, a detection is not false, and pairs are not counted. From the
matches:

* detection: precision, recall, F1; localisation RMSE / median / p95 in angstrom;
* species: confusion C/Si/other, Si precision and recall; coordination correct for matched Si;
* tracking (CLEAR MOT, Bernardin & Stiefelhagen 2008; IDF1, Ristani et al. 2016): MOTA =
  1 - (FN + FP + IDSW) / GT, identity switches (a truth atom matched to a different track id than
  the last time it was matched) and per 10,000 atom-frames, IDF1 = 2 IDTP / (GT + detections) with
  IDTP from the best one-to-one truth-id <-> track-id assignment;
* events: a truth event is found when an event of the same kind is reported 0..``max_latency_frames``
  frames after it within ``event_radius_A`` of the atom (each report used once); truth events in
  the first ``warmup_frames`` or the last ``end_margin_frames`` analysed frames cannot be confirmed
  inside the movie by an online k-of-n detector: they are matched but counted apart; recall per kind,
  precision, latency in frames, false events per 1,000 frames, and alarms near a truth "flicker"
  (which must raise none). Events about atoms entering or leaving the field of view (``before`` =
  "outside field" / ``after`` = "left field") are field bookkeeping, not transformations: they are
  counted separately and not held against precision. The simulator has no notion of motifs: a
  ``new_motif`` report on a truth defect (an atom labelled other than pristine lattice) is counted
  as plausible, elsewhere as false.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from engine.track import assign
from engine.types import GT_ONLY_KINDS, SPECIES

FIELD_BEFORE = ("outside field",)
FIELD_AFTER = ("left field",)


@dataclass
class TruthFrame:
    """One frame of ground truth: (N, 2) positions in px (x, y), species codes, atom ids, coordination."""

    seq: int
    xy_px: np.ndarray
    species: np.ndarray
    ids: np.ndarray
    coordination: np.ndarray | None = None
    label: np.ndarray | None = None       # defect label per atom, 0 = pristine lattice


@dataclass
class Truth:
    frames: list            # list[TruthFrame]
    events: list            # dicts: frame, atom_id, kind, (before, after)
    pixel_size_A: float
    shape_px: tuple | None = None   # (H, W) of the frames
    origins: dict | None = None     # seq -> (2,) sample coordinate (A) of pixel (0, 0): the field's drift


# ----------------------------------------------------------------------------------------- loading
def _get(obj, *names, default=None):
    for n in names:
        if isinstance(obj, dict) and n in obj:
            return obj[n]
        if hasattr(obj, n):
            return getattr(obj, n)
    return default


def load_ground_truth(path: str | Path) -> Truth:
    """The simulator's ground truth (``engine.sim.truth.load_truth``), normalised to :class:`Truth`.

    ``path`` may be the truth file or the recording it belongs to.
    """
    from engine.sim.truth import load_truth

    return as_truth(load_truth(path))


def as_truth(gt) -> Truth:
    """Normalise an :class:`engine.sim.truth.GroundTruth` (or anything shaped like it) to :class:`Truth`."""
    ps = float(_get(gt, "pixel_size_A", "pixel_size"))
    frames_src = _get(gt, "frames")
    frames = []
    if frames_src is None:                       # per-frame accessors
        n = int(_get(gt, "n_frames"))
        frames_src = [gt.frame(i) for i in range(n)]
    for i, fr in enumerate(frames_src):
        xy = _get(fr, "xy_px")
        if xy is None:
            xy = np.asarray(_get(fr, "xy_A")) / ps
        frames.append(TruthFrame(seq=int(_get(fr, "frame", "seq", "index", default=i)),
                                 xy_px=np.asarray(xy, np.float64).reshape(-1, 2),
                                 species=np.asarray(_get(fr, "species"), np.int64),
                                 ids=np.asarray(_get(fr, "ids", "atom_ids", "id"), np.int64),
                                 coordination=None if _get(fr, "coordination") is None
                                 else np.asarray(_get(fr, "coordination"), np.int64),
                                 label=None if _get(fr, "label") is None else np.asarray(_get(fr, "label"), np.int64)))
    events = [dict(e) if isinstance(e, dict) else {k: getattr(e, k) for k in ("frame", "atom_id", "kind")}
              for e in _get(gt, "events", default=[])]
    meta = _get(gt, "meta", default={}) or {}
    shape = meta.get("shape_px") if isinstance(meta, dict) else None
    origins = {f.seq: np.asarray(_get(fr, "origin_A"), float) for f, fr in zip(frames, frames_src)
               if _get(fr, "origin_A") is not None}
    return Truth(frames=frames, events=events, pixel_size_A=ps,
                 shape_px=tuple(int(v) for v in shape) if shape is not None else None, origins=origins or None)


def read_atoms_csv(path: str | Path) -> dict:
    """atoms.csv -> dict of arrays (frame, atom_id, x, y, species code, coordination, confidence)."""
    path = Path(path)
    num = np.loadtxt(path, delimiter=",", skiprows=1, usecols=(0, 1, 2, 3, 5, 6), ndmin=2)
    names = np.loadtxt(path, delimiter=",", skiprows=1, usecols=(4,), dtype=str, ndmin=1)
    sp = np.select([names == SPECIES[0], names == SPECIES[1]], [0, 1], 2)
    return {"frame": num[:, 0].astype(np.int64), "atom_id": num[:, 1].astype(np.int64), "x": num[:, 2],
            "y": num[:, 3], "species": sp.astype(np.int64), "coordination": num[:, 4].astype(np.int64),
            "confidence": num[:, 5]}


def read_events(path: str | Path) -> list:
    p = Path(path)
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


# ----------------------------------------------------------------------------------------- scoring
def _match_frame(g_xy, h_xy, r_px, g_ids, h_ids, last: dict):
    """One-to-one matching within r_px, preferring last frame's correspondences. Returns (gi, hj, d)."""
    if not len(g_xy) or not len(h_xy):
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    sdm = cKDTree(g_xy).sparse_distance_matrix(cKDTree(h_xy), r_px, output_type="ndarray")
    if not len(sdm):
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    gi, hj, d = sdm["i"].astype(np.int64), sdm["j"].astype(np.int64), sdm["v"]
    prev = np.array([last.get(int(g), -2) for g in g_ids[gi]]) if last else np.full(len(gi), -2)
    cost = (d / r_px) ** 2 + np.where(prev == h_ids[hj], 0.0, 0.5)
    mg, mh = assign.match(len(g_xy), len(h_xy), gi, hj, cost, 0.75, 0.75)
    dist = np.linalg.norm(g_xy[mg] - h_xy[mh], axis=1)
    return mg, mh, dist


def _idf1(pairs_g: np.ndarray, pairs_h: np.ndarray, n_gt: int, n_hyp: int) -> tuple[float, int]:
    """IDF1 and IDTP from per-frame matched (gt id, track id) pairs (one entry per frame)."""
    if not len(pairs_g):
        return 0.0, 0
    ug, gi = np.unique(pairs_g, return_inverse=True)
    uh, hi = np.unique(pairs_h, return_inverse=True)
    key = gi.astype(np.int64) * len(uh) + hi
    uk, cnt = np.unique(key, return_counts=True)
    a, b = uk // len(uh), uk % len(uh)
    big = float(cnt.max()) + 1.0
    mg, mh = assign.match(len(ug), len(uh), a, b, big - cnt, big / 2, big / 2)
    lookup = dict(zip(zip(a.tolist(), b.tolist()), cnt.tolist()))
    idtp = int(sum(lookup[(x, y)] for x, y in zip(mg.tolist(), mh.tolist())))
    return 2.0 * idtp / max(1, n_gt + n_hyp), idtp


def evaluate(out_dir: str | Path, ground_truth, match_radius_A: float = 0.5, max_latency_frames: int = 3,
             event_radius_A: float = 2.5, warmup_frames: int = 2, end_margin_frames: int = 2,
             edge_ignore_A: float = 0.5) -> dict:
    """Score ``out_dir`` (from ``stemwatch analyze``) against ``ground_truth`` (a path, or a
    :class:`Truth`). Returns a JSON-serialisable report (see the module docstring)."""
    out_dir = Path(out_dir)
    truth = ground_truth if isinstance(ground_truth, Truth) else load_ground_truth(ground_truth)
    hyp = read_atoms_csv(out_dir / "atoms.csv")
    events = read_events(out_dir / "events.jsonl")
    ps = truth.pixel_size_A
    r_px = match_radius_A / ps
    order = np.argsort(hyp["frame"], kind="stable")
    hf = hyp["frame"][order]
    analysed = set(np.unique(hf).tolist())
    frames_csv = out_dir / "frames.csv"
    if frames_csv.exists():
        fr = np.loadtxt(frames_csv, delimiter=",", skiprows=1, usecols=(0,), ndmin=1)
        analysed |= set(fr.astype(int).tolist())

    if truth.shape_px is not None:
        H, W = truth.shape_px
    else:
        allxy = np.concatenate([f.xy_px for f in truth.frames]) if truth.frames else np.zeros((1, 2))
        W, H = np.ceil(allxy.max(0)) + 1

    def inner(xy: np.ndarray) -> np.ndarray:
        e = edge_ignore_A / ps
        return np.all((xy >= e) & (xy <= np.array([W - 1, H - 1]) - e), axis=1)

    tp = fp = fn = idsw = 0
    n_gt = n_hyp = 0
    loc = []
    conf = np.zeros((3, 3), np.int64)              # truth species x detected species
    si_coord_ok = si_coord_n = 0
    last: dict[int, int] = {}
    pg, ph = [], []
    gt_pos: dict[tuple[int, int], np.ndarray] = {}
    defect_xy: dict[int, np.ndarray] = {}
    for tf in truth.frames:
        if tf.seq not in analysed:
            continue
        a, b = np.searchsorted(hf, tf.seq), np.searchsorted(hf, tf.seq, side="right")
        rows = order[a:b]
        h_xy = np.c_[hyp["x"][rows], hyp["y"][rows]]
        h_ids, h_sp = hyp["atom_id"][rows], hyp["species"][rows]
        mg, mh, d = _match_frame(tf.xy_px, h_xy, r_px, tf.ids, h_ids, last)
        # atoms in the edge strip are neither required nor held against (an ignore region): a
        # truth atom there is not a miss, a detection there is not false, pairs there do not count
        g_in, h_in = inner(tf.xy_px), inner(h_xy)
        keep = g_in[mg]
        h_used = np.zeros(len(h_xy), bool)
        h_used[mh] = True
        n_gt += int(g_in.sum())
        n_hyp += int((h_in & ~h_used).sum()) + int(keep.sum())
        tp += int(keep.sum())
        fn += int(g_in.sum() - keep.sum())
        fp += int((h_in & ~h_used).sum())
        mg, mh, d = mg[keep], mh[keep], d[keep]
        loc.append(d * ps)
        np.add.at(conf, (np.clip(tf.species[mg], 0, 2), np.clip(h_sp[mh], 0, 2)), 1)
        if tf.coordination is not None:
            si = tf.species[mg] == 1
            si_coord_n += int(si.sum())
            si_coord_ok += int((tf.coordination[mg][si] == hyp["coordination"][rows][mh][si]).sum())
        gids, hids = tf.ids[mg], h_ids[mh]
        ok = hids >= 0
        for g, h in zip(gids[ok].tolist(), hids[ok].tolist()):
            if g in last and last[g] != h:
                idsw += 1
            last[g] = h
        pg.append(gids[ok])
        ph.append(hids[ok])
        for g, xy in zip(tf.ids.tolist(), tf.xy_px):
            gt_pos[(tf.seq, g)] = xy
        if tf.label is not None:
            defect_xy[tf.seq] = tf.xy_px[tf.label != 0]
    loc_A = np.concatenate(loc) if loc else np.zeros(0)
    idf1, idtp = _idf1(np.concatenate(pg) if pg else np.zeros(0, np.int64),
                       np.concatenate(ph) if ph else np.zeros(0, np.int64), n_gt, n_hyp)
    prec = tp / max(1, tp + fp)
    rec = tp / max(1, tp + fn)
    n_frames = len([f for f in truth.frames if f.seq in analysed])
    report = {
        "frames": n_frames,
        "atom_frames": n_gt,
        "detection": {"precision": prec, "recall": rec, "f1": 2 * prec * rec / max(1e-12, prec + rec),
                      "tp": tp, "fp": fp, "fn": fn, "match_radius_A": match_radius_A,
                      "edge_ignore_A": edge_ignore_A},
        "localisation_A": {"rmse": float(np.sqrt(np.mean(loc_A ** 2))) if len(loc_A) else None,
                           "median": float(np.median(loc_A)) if len(loc_A) else None,
                           "p95": float(np.percentile(loc_A, 95)) if len(loc_A) else None},
        "species": {"confusion_truth_x_detected": conf.tolist(), "labels": list(SPECIES),
                    "si_precision": float(conf[1, 1] / max(1, conf[:, 1].sum())),
                    "si_recall": float(conf[1, 1] / max(1, conf[1, :].sum())),
                    "si_coordination_correct": si_coord_ok / si_coord_n if si_coord_n else None},
        "tracking": {"mota": 1.0 - (fn + fp + idsw) / max(1, n_gt), "idf1": idf1, "idtp": idtp,
                     "id_switches": idsw, "id_switches_per_10k_atom_frames": 1e4 * idsw / max(1, n_gt)},
        "events": _score_events(truth, events, gt_pos, analysed, ps, max_latency_frames, event_radius_A, n_frames,
                                warmup_frames, end_margin_frames, defect_xy),
    }
    return report


def _truth_event_position(ev: dict, gt_pos: dict, seqs: list) -> np.ndarray | None:
    """Where the event's atom is: at the event frame, else the nearest frame (earlier first: an
    ejected atom exists only before its event)."""
    if ev.get("x") is not None and ev.get("y") is not None:     # the simulator records where it happened
        return np.array([float(ev["x"]), float(ev["y"])])
    g, f = int(ev["atom_id"]), int(ev["frame"])
    for df in [0] + [s * k for k in range(1, 31) for s in (-1, 1)]:
        xy = gt_pos.get((f + df, g))
        if xy is not None:
            return xy
    return None


def _at_frame(ev: dict, xy, frame: int, gt_pos: dict, truth: Truth):
    """Where the event's atom is in ``frame`` (a report comes a few frames later and the field
    drifts): the truth atom's position then, else the event position moved with the field."""
    here = gt_pos.get((frame, int(ev["atom_id"])))
    if here is not None:
        return here
    if xy is None:
        return None
    o = truth.origins
    f0 = int(ev["frame"])
    if o is not None and f0 in o and frame in o:
        return np.asarray(xy, float) - (o[frame] - o[f0]) / truth.pixel_size_A
    return xy


def _score_events(truth: Truth, events: list, gt_pos: dict, analysed: set, ps: float, max_lat: int,
                  radius_A: float, n_frames: int, warmup: int = 2, end_margin: int = 2,
                  defect_xy: dict | None = None) -> dict:
    seqs = sorted(analysed)
    r_px = radius_A / ps
    field = [e for e in events if e.get("before") in FIELD_BEFORE or e.get("after") in FIELD_AFTER
             or e.get("category") == "bookkeeping"]        # bookkeeping is never a transformation
    hyp = [e for e in events if e not in field]
    # The simulator's truth has no notion of motifs: a "new motif" report is judged plausible when
    # it sits on a truth defect (an atom whose label is not pristine lattice), false otherwise.
    motifs = [e for e in hyp if e["kind"] == "new_motif"]
    hyp = [e for e in hyp if e["kind"] != "new_motif"]
    motif_ok = 0
    for e in motifs:
        dx = (defect_xy or {}).get(int(e["frame"]))
        if dx is not None and len(dx) and np.min(np.hypot(dx[:, 0] - e["x"], dx[:, 1] - e["y"])) <= r_px:
            motif_ok += 1
        else:
            hyp.append(e)
    used = np.zeros(len(hyp), bool)
    gt = [e for e in truth.events if e["kind"] not in GT_ONLY_KINDS and int(e["frame"]) in analysed]
    flick = [e for e in truth.events if e["kind"] in GT_ONLY_KINDS and int(e["frame"]) in analysed]
    per_kind: dict[str, dict] = {}
    latencies = []
    missed = []
    # An online detector needs a few frames to know the state before a change (warm-up) and after
    # it (debounce): truth events in the first `warmup` or last `end_margin` analysed frames cannot
    # be confirmed inside the movie. They are matched (a report of one is not false) but counted
    # apart, not in recall.
    lo, hi = (seqs[0] + warmup, seqs[-1] - end_margin) if seqs else (0, -1)
    edge_found = edge_total = 0
    for e in sorted(gt, key=lambda v: (not lo <= int(v["frame"]) <= hi, int(v["frame"]))):
        k = e["kind"]
        countable = lo <= int(e["frame"]) <= hi
        pk = per_kind.setdefault(k, {"truth": 0, "found": 0, "reported": 0})
        if countable:
            pk["truth"] += 1
        else:
            edge_total += 1
        xy = _truth_event_position(e, gt_pos, seqs)
        best, best_key = -1, None
        for i, h in enumerate(hyp):
            if used[i] or h["kind"] != k:
                continue
            lat = int(h["frame"]) - int(e["frame"])
            if not 0 <= lat <= max_lat:
                continue
            at = _at_frame(e, xy, int(h["frame"]), gt_pos, truth)
            dist = np.hypot(h["x"] - at[0], h["y"] - at[1]) if at is not None else 0.0
            if dist > r_px:
                continue
            key = (lat, dist)
            if best_key is None or key < best_key:
                best, best_key = i, key
        if best >= 0:
            used[best] = True
            if countable:
                pk["found"] += 1
                latencies.append(best_key[0])
            else:
                edge_found += 1
        elif countable:
            missed.append({"frame": int(e["frame"]), "kind": k, "atom_id": int(e["atom_id"])})
    for h in hyp:
        per_kind.setdefault(h["kind"], {"truth": 0, "found": 0, "reported": 0})["reported"] += 1
    false = [h for h, u in zip(hyp, used) if not u]
    alarms = 0
    for e in flick:
        xy = _truth_event_position(e, gt_pos, seqs)
        def near(h):
            at = _at_frame(e, xy, int(h["frame"]), gt_pos, truth)
            return at is None or np.hypot(h["x"] - at[0], h["y"] - at[1]) <= r_px

        if any(0 <= int(h["frame"]) - int(e["frame"]) <= max_lat and near(h) for h in hyp):
            alarms += 1
    n_gt = len(gt) - edge_total
    found = int(used.sum()) - edge_found
    return {
        "truth_events": n_gt, "reported": len(hyp), "found": found,
        "recall": found / n_gt if n_gt else None,
        "unconfirmable_truth_events": edge_total, "unconfirmable_found": edge_found,
        "warmup_frames": warmup, "end_margin_frames": end_margin,
        "precision": used.sum() / len(hyp) if hyp else None,
        "latency_frames_mean": float(np.mean(latencies)) if latencies else None,
        "latency_frames_max": int(np.max(latencies)) if latencies else None,
        "false_events": len(false), "false_per_1000_frames": 1e3 * len(false) / max(1, n_frames),
        "flickers": len(flick), "flicker_alarms": alarms,
        "field_events": len(field), "new_motif_reports": len(motifs), "new_motif_on_truth_defect": motif_ok,
        "per_kind": per_kind,
        "missed": missed[:50],
        "false": [{k: h[k] for k in ("frame", "kind", "atom_id", "x", "y", "before", "after")} for h in false[:50]],
        "max_latency_frames": max_lat, "event_radius_A": radius_A,
    }


def format_report(r: dict) -> str:
    """A human-readable summary of :func:`evaluate`'s report."""
    d, loc, sp, t, ev = r["detection"], r["localisation_A"], r["species"], r["tracking"], r["events"]

    def f(v, fmt="{:.4f}"):
        return "-" if v is None else fmt.format(v)

    lines = [
        f"frames {r['frames']}, truth atom-frames {r['atom_frames']}",
        f"detection   precision {f(d['precision'])}  recall {f(d['recall'])}  F1 {f(d['f1'])}  "
        f"(TP {d['tp']}, FP {d['fp']}, FN {d['fn']}, radius {d['match_radius_A']} A)",
        f"localisation RMSE {f(loc['rmse'], '{:.3f}')} A  median {f(loc['median'], '{:.3f}')} A  "
        f"p95 {f(loc['p95'], '{:.3f}')} A",
        f"species     Si precision {f(sp['si_precision'])}  Si recall {f(sp['si_recall'])}  "
        f"Si coordination correct {f(sp['si_coordination_correct'])}",
        f"tracking    MOTA {f(t['mota'])}  IDF1 {f(t['idf1'])}  ID switches {t['id_switches']} "
        f"({f(t['id_switches_per_10k_atom_frames'], '{:.2f}')} per 10,000 atom-frames)",
        f"events      truth {ev['truth_events']}  reported {ev['reported']}  found {ev['found']}  "
        f"recall {f(ev['recall'])}  precision {f(ev['precision'])}  latency mean/max "
        f"{f(ev['latency_frames_mean'], '{:.2f}')}/{ev['latency_frames_max']} frames",
        f"            not confirmable in the movie (first {ev['warmup_frames']} / last {ev['end_margin_frames']} "
        f"frames): {ev['unconfirmable_truth_events']} truth events, {ev['unconfirmable_found']} found\n"
        f"            false {ev['false_events']} ({f(ev['false_per_1000_frames'], '{:.2f}')} per 1,000 frames)  "
        f"flickers {ev['flickers']} -> alarms {ev['flicker_alarms']}  field enter/leave events {ev['field_events']}  "
        f"new motifs {ev['new_motif_reports']} ({ev['new_motif_on_truth_defect']} on a truth defect)",
    ]
    for k, v in sorted(ev["per_kind"].items()):
        lines.append(f"            {k:16s} truth {v['truth']:3d}  found {v['found']:3d}  reported {v['reported']:3d}")
    for m in ev["missed"][:10]:
        lines.append(f"  missed: frame {m['frame']} {m['kind']} atom {m['atom_id']}")
    for h in ev["false"][:10]:
        lines.append(f"  false:  frame {h['frame']} {h['kind']} track {h['atom_id']} at ({h['x']:.1f}, {h['y']:.1f}) "
                     f"{h.get('before')} -> {h.get('after')}")
    return "\n".join(lines)
