"""Training loop for the shipped network (``stemwatch train``).

Data: a *streaming bank* of simulated frames on the model grid (:mod:`lab.train.data`): the bank
starts with ``bank_initial`` frames and every step simulates ``new_per_step`` more (oldest dropped
beyond ``bank_max``), so simulation cost is spread over training and no frame is reused for long.
Each batch is ``batch`` random augmented crops of ``crop_px`` model pixels.

Loss: class-weighted cross-entropy (background, C, Si/heavy) on disc labels. Optimiser: AdamW with
a one-cycle schedule (linear warm-up, cosine decay). Validation every ``val_every`` steps on a fixed
set of frames (its own seed), with the simple finder of :mod:`lab.infer.evaluate`.

Reproducible: every random stream derives from ``seed`` through ``numpy.random.SeedSequence``
(spawn keys 1 = bank, 2 = augmentation, 3 = validation) and ``torch.manual_seed(seed)``; with the same
thread count the run is bitwise repeatable. Checkpoints (``ckpt_last.npz``, ``ckpt_best.npz``) are
plain npz files (no pickle): weights, optimiser moments, step, and JSON metadata.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Everything that defines a training run (written to ``config.json`` in the run folder)."""

    out_dir: str = "runs/train"
    seed: int = 0
    model_px_A: float = 0.2                 # model grid pixel size (A/px)
    widths: tuple = (12, 24, 32, 48)
    convs: int = 2
    steps: int = 7000
    batch: int = 16
    crop_px: int = 128                       # model px (25.6 A at 0.2 A/px)
    bank_side_px: int = 192                  # model px per simulated frame
    bank_initial: int = 600
    bank_max: int = 3000
    new_per_step: float = 0.75              # simulated frames added per step (fractional: every k steps)
    pixel_size_range_A: tuple = (0.05, 0.2)  # frame pixel sizes drawn log-uniformly
    zoom_range: tuple = (0.9, 1.12)         # model-grid scale jitter (pixel-size calibration error)
    label_radius_A: float = 0.4
    class_weights: tuple = (1.0, 1.0, 4.0)   # Si rare (~1 % of atom pixels): recall at low dose
    lr: float = 3e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 200
    threads: int = 2
    val_every: int = 500
    val_frames: int = 24
    checkpoint_every: int = 250
    max_minutes: float = 0.0                 # stop early (and export) after this wall time; 0 = no limit
    si_per_nm2_range: tuple = (0.05, 1.2)   # Si site density drawn log-uniformly per frame (more Si to learn)
    low_dose_fraction: float = 0.4          # share of bank frames drawn from low_dose_range_e_per_A2 instead
    low_dose_range_e_per_A2: tuple = (1e3, 3e4)  # of the simulator's full 1e3-1e6 (the hard, informative frames)
    sim_overrides: dict = field(default_factory=dict)
    # hole emphasis (issue 13 criterion 3; off by default, so the shipped recipe is unchanged):
    hole_fraction: float = 0.0              # share of bank frames simulated with a hole (0: as drawn, ~25 %)
    hole_weight: float = 1.0                # loss weight of pixels in a hole's zone (lab.train.data.hole_zone)
    time_schedule: bool = False             # with max_minutes: the cosine decay follows the larger of the step
                                            # and wall-time fractions, so a run cut by time still anneals
                                            # (not bitwise reproducible: depends on the machine's speed)
    # contamination supervision (issue 21 criterion 2; off by default, so the shipped recipe is unchanged):
    contamination_fraction: float = 0.0     # share of bank frames simulated with contamination (0: as drawn, ~30 %)
    contamination_labels: str = "ignore"    # "ignore": no loss within IGNORE_RADIUS_A of a contamination atom;
                                            # "background": the contamination's atoms are background and the
                                            # lattice atoms under them keep their class (C under a patch is C)
    init_from: str = ""                     # start (step 0, fresh optimiser) from these weights: an ONNX model
                                            # (lab.train.from_onnx) or an npz checkpoint


def recipe(config: dict, init_sha256: str | None = None) -> dict:
    """What a run changed from the default recipe (a :class:`TrainConfig` as a dict, e.g. a checkpoint's
    ``config``): the fields that differ, for the model's provenance metadata, with ``init_from`` named by
    file and by ``init_sha256`` (hashed when training started: the file may have been replaced since).
    Bookkeeping fields (output folder, threads, logging cadence) are left out."""
    default = asdict(TrainConfig())
    skip = {"out_dir", "threads", "val_every", "checkpoint_every", "max_minutes", "time_schedule"}
    out = {}
    for k, v in config.items():
        if k in skip or k not in default:
            continue
        d = default[k]
        if (list(v) if isinstance(v, (list, tuple)) else v) != (list(d) if isinstance(d, (list, tuple)) else d):
            out[k] = list(v) if isinstance(v, tuple) else v
    if out.get("init_from"):
        out["init_from"] = {"file": Path(out["init_from"]).name, **({"sha256": init_sha256} if init_sha256 else {})}
    return out


# ----------------------------------------------------------------------------- checkpoints (npz)

def save_checkpoint(path: Path, net, opt, step: int, meta: dict) -> None:
    """Weights + optimiser state as npz (no pickle), written atomically."""
    import os
    import tempfile

    arrays = {f"model/{k}": v.detach().cpu().numpy() for k, v in net.state_dict().items()}
    st = opt.state_dict()
    for pid, s in st["state"].items():
        for k, v in s.items():
            arrays[f"opt/{pid}/{k}"] = v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v)
    meta = {**meta, "step": step, "opt_param_groups": st["param_groups"]}
    arrays["meta_json"] = np.array(json.dumps(meta, default=str))
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp.npz")
    os.close(fd)
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path, opt=None):
    """Rebuild the network (and optionally restore ``opt``) from an npz checkpoint.

    Returns ``(net, meta)``; ``meta`` holds the training config, step and validation metrics.
    """
    import torch

    from lab.train.network import StemFCN

    with np.load(str(path), allow_pickle=False) as z:
        meta = json.loads(str(z["meta_json"]))
        arch = meta["arch"]
        net = StemFCN(tuple(arch["widths"]), int(arch["convs"]))
        sd = {k[6:]: torch.from_numpy(np.array(z[k])) for k in z.files if k.startswith("model/")}
        net.load_state_dict(sd)
        if opt is not None:
            st = opt.state_dict()
            state = {}
            for k in z.files:
                if k.startswith("opt/"):
                    _, pid, name = k.split("/", 2)
                    state.setdefault(int(pid), {})[name] = torch.from_numpy(np.array(z[k]))
            st["state"] = state
            st["param_groups"] = meta["opt_param_groups"]
            opt.load_state_dict(st)
    return net.eval(), meta


# ----------------------------------------------------------------------------- validation

def validation_set(cfg: TrainConfig):
    """Fixed validation frames (seed spawn key 3): ``[(image, xy_px, species, pixel_size_A, dose, ignore_xy)]``."""
    from lab.infer.heldout import sim_overrides
    from engine.sim import make_training_example
    from engine.sim.sample import contamination_mask

    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 3]))
    out = []
    doses = [1e3, 1e4, 1e5]
    for i in range(cfg.val_frames):
        px = float(rng.choice([0.06, 0.1, 0.16]))
        n = int(round(25.6 / px))
        ex = make_training_example(rng, shape_px=(n, n), pixel_size_A=px, **sim_overrides(doses[i % 3], "plain"))
        contam = contamination_mask(ex.species, getattr(ex, "lattice", None))
        out.append((np.asarray(ex.image), np.asarray(ex.xy_px)[~contam], np.asarray(ex.species)[~contam],
                    float(ex.pixel_size_A), doses[i % 3], np.asarray(ex.xy_px)[contam]))
    return out


def evaluate_torch(net, frames, model_px_A: float) -> dict:
    """Run the torch net (eval mode) through the inference preprocessing and score the frames."""
    import torch

    from lab.infer.evaluate import Counts, find_atoms_simple, score_frame
    from engine.infer.preprocess import NORMALISATION, Resampler, normalise, pad_to_multiple
    from engine.types import Probabilities

    net.eval()
    by_dose: dict[float, Counts] = {}
    with torch.no_grad():
        for image, xy, species, px, dose, ignore_xy in frames:
            r = Resampler(image.shape, px, model_px_A)
            g = normalise(r(image), NORMALISATION)
            gp, (h, w) = pad_to_multiple(g, net.multiple)
            p = torch.softmax(net(torch.from_numpy(gp[None, None].copy())), 1)[0, :, :h, :w].numpy()
            probs = Probabilities(p, r.grid_px_A, image.shape, px)
            pxy, psp = find_atoms_simple(probs)
            by_dose.setdefault(dose, Counts()).add(score_frame(pxy, psp, xy, species, image.shape, px,
                                                               ignore_xy_px=ignore_xy))
    net.train()
    out = {}
    for dose, c in sorted(by_dose.items()):
        s = c.summary()
        out[f"{dose:.0e}"] = {k: round(v, 4) if isinstance(v, float) else v
                              for k, v in s.items() if k in ("f1", "si_precision", "si_recall", "rmse_A")}
    return out


# ----------------------------------------------------------------------------- training

def hole_weighted_loss(logits, labels, zone, class_weights, hole_weight: float):
    """Class-weighted cross-entropy with every pixel in a hole's zone (``zone``, bool (B, h, w)) weighted
    ``hole_weight`` times more: the weighted mean over non-ignored pixels, normalised like
    ``F.cross_entropy(weight=class_weights, ignore_index=-1)`` (equal to it where ``zone`` is empty)."""
    import torch.nn.functional as F

    per = F.cross_entropy(logits, labels, weight=class_weights, ignore_index=-1, reduction="none")
    valid = labels >= 0
    cw = class_weights[labels.clamp(min=0)] * valid
    pw = 1.0 + (float(hole_weight) - 1.0) * zone.to(per.dtype)
    return (per * pw).sum() / (cw * pw).sum().clamp(min=1e-12)


def train(cfg: TrainConfig, resume: str | None = None, progress: bool = True) -> dict:
    """Train, checkpoint, validate and export. Returns a summary dict (also ``summary.json``)."""
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    from engine.infer.preprocess import NORMALISATION
    from lab.train.data import make_bank_item, make_batch
    from lab.train.export import export_both
    from lab.train.network import StemFCN, macs_per_pixel

    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    bank_rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 1]))
    aug_rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 2]))

    net = StemFCN(tuple(cfg.widths), cfg.convs)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start_step = 0
    if resume and cfg.init_from:
        raise ValueError("give either resume or init_from, not both")
    init_onnx = bool(cfg.init_from) and str(cfg.init_from).endswith(".onnx")
    if cfg.init_from:
        if init_onnx:
            from lab.train.from_onnx import net_from_onnx

            net = net_from_onnx(cfg.init_from)
        else:
            net, _ = load_checkpoint(cfg.init_from)
        if tuple(net.widths) != tuple(cfg.widths) or net.convs != cfg.convs:
            raise ValueError(f"init_from {cfg.init_from}: architecture {net.widths}x{net.convs} is not the "
                             f"configured {tuple(cfg.widths)}x{cfg.convs}")
        opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        net.train()
    if resume:
        net, meta = load_checkpoint(resume)
        opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        net, meta = load_checkpoint(resume, opt)
        start_step = int(meta["step"])
        net.train()
    arch = {"widths": list(cfg.widths), "convs": cfg.convs}

    t_sched = [None]        # wall-clock start of the decay (time_schedule)

    def lr_at(step):
        if step < cfg.warmup_steps:
            return cfg.lr * (step + 1) / cfg.warmup_steps
        t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        if cfg.time_schedule and cfg.max_minutes:
            now = time.time()
            if t_sched[0] is None:
                t_sched[0] = now
            left = cfg.max_minutes * 60 - (t_sched[0] - t_start)
            t = max(t, (now - t_sched[0]) / max(1.0, left))
        return cfg.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))

    def new_item():
        zoom = float(np.exp(bank_rng.uniform(np.log(cfg.zoom_range[0]), np.log(cfg.zoom_range[1]))))
        lo, hi = cfg.si_per_nm2_range
        si = float(np.exp(bank_rng.uniform(np.log(lo), np.log(hi))))
        over = {"si_per_nm2": si, **cfg.sim_overrides}
        if cfg.low_dose_fraction > 0 and bank_rng.random() < cfg.low_dose_fraction:
            over["dose_range"] = tuple(cfg.low_dose_range_e_per_A2)
        if cfg.hole_fraction > 0 and bank_rng.random() < cfg.hole_fraction:
            over["holes"] = True
        if cfg.contamination_fraction > 0 and bank_rng.random() < cfg.contamination_fraction:
            over["contamination"] = True
        return make_bank_item(bank_rng, cfg.model_px_A * zoom, cfg.bank_side_px, tuple(cfg.pixel_size_range_A),
                              **over)

    t_start = time.time()
    log_f = open(out / "log.jsonl", "a")
    bank = []
    it = range(cfg.bank_initial)
    if progress:
        it = tqdm(it, desc="simulating training bank", unit="frame", file=sys.stderr)
    for _ in it:
        bank.append(new_item())
    t_bank = time.time() - t_start
    print(json.dumps({"event": "bank_ready", "frames": len(bank), "seconds": round(t_bank, 1)}), file=log_f, flush=True)
    val = validation_set(cfg)
    if init_onnx:       # BatchNorm statistics of the folded model's activations (eval function unchanged)
        from lab.train.from_onnx import calibrate_batchnorm

        cal_rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 5]))
        calibrate_batchnorm(net, [make_batch(cal_rng, bank, cfg.batch, cfg.crop_px,
                                             cfg.label_radius_A / cfg.model_px_A)[0] for _ in range(8)])
        net.train()
    weights = torch.tensor(cfg.class_weights, dtype=torch.float32)
    if cfg.contamination_labels not in ("ignore", "background"):
        raise ValueError(f"contamination_labels must be 'ignore' or 'background', not {cfg.contamination_labels!r}")
    ignore_contam = cfg.contamination_labels == "ignore"
    radius_px = cfg.label_radius_A / cfg.model_px_A
    best = (-1.0, None)
    meta_base = {"arch": arch, "config": asdict(cfg)}
    if cfg.init_from:                     # provenance: the starting weights as they were when training began
        import hashlib

        meta_base["init_sha256"] = hashlib.sha256(Path(cfg.init_from).read_bytes()).hexdigest()
    net.train()
    steps = range(start_step, cfg.steps)
    bar = tqdm(steps, desc="training", unit="step", file=sys.stderr, initial=start_step, total=cfg.steps) \
        if progress else steps
    owed = 0.0
    ema = None
    last_step = start_step
    stopped_early = False
    for step in bar:
        owed += cfg.new_per_step
        while owed >= 1.0:
            bank.append(new_item())
            owed -= 1.0
            if len(bank) > cfg.bank_max:
                bank.pop(0)
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        if cfg.hole_weight != 1.0:
            xb, yb, zb = make_batch(aug_rng, bank, cfg.batch, cfg.crop_px, radius_px, with_zone=True,
                                    ignore_contamination=ignore_contam)
            logits = net(torch.from_numpy(xb))
            loss = hole_weighted_loss(logits, torch.from_numpy(yb), torch.from_numpy(zb), weights, cfg.hole_weight)
        else:
            xb, yb = make_batch(aug_rng, bank, cfg.batch, cfg.crop_px, radius_px, ignore_contamination=ignore_contam)
            logits = net(torch.from_numpy(xb))
            loss = F.cross_entropy(logits, torch.from_numpy(yb), weight=weights, ignore_index=-1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        lv = loss.item()
        ema = lv if ema is None else 0.98 * ema + 0.02 * lv
        last_step = step + 1
        if progress:
            bar.set_postfix(loss=f"{ema:.4f}", lr=f"{lr_at(step):.2e}", bank=len(bank))
        rec = {"step": step + 1, "loss": round(lv, 5), "loss_ema": round(ema, 5), "lr": lr_at(step),
               "elapsed_s": round(time.time() - t_start, 1)}
        if (step + 1) % cfg.val_every == 0 or step + 1 == cfg.steps:
            metrics = evaluate_torch(net, val, cfg.model_px_A)
            rec["val"] = metrics
            score = float(np.nanmean([m["f1"] for m in metrics.values()] +
                                      [m["si_recall"] for m in metrics.values()] +
                                      [m["si_precision"] for m in metrics.values()]))
            rec["val_score"] = score
            if score >= best[0]:
                best = (score, step + 1)
                save_checkpoint(out / "ckpt_best.npz", net, opt, step + 1, {**meta_base, "val": metrics})
        if (step + 1) % 10 == 0 or "val" in rec:
            print(json.dumps(rec), file=log_f, flush=True)
        if (step + 1) % cfg.checkpoint_every == 0:
            save_checkpoint(out / "ckpt_last.npz", net, opt, step + 1, meta_base)
        if cfg.max_minutes and time.time() - t_start > cfg.max_minutes * 60:
            stopped_early = True
            break
    save_checkpoint(out / "ckpt_last.npz", net, opt, last_step, meta_base)
    train_s = time.time() - t_start
    final_metrics = evaluate_torch(net, val, cfg.model_px_A)
    net.eval()
    extra = {"training": {"seed": cfg.seed, "steps": last_step, "batch": cfg.batch, "crop_px": cfg.crop_px,
                          "train_minutes": round(train_s / 60, 1), "val": final_metrics,
                          "pixel_size_range_A": list(cfg.pixel_size_range_A), "label_radius_A": cfg.label_radius_A,
                          "recipe": recipe(asdict(cfg), meta_base.get("init_sha256"))}}
    p32, p16 = export_both(net, out, cfg.model_px_A, NORMALISATION, extra_metadata=extra)
    summary = {"steps": last_step, "stopped_early": stopped_early, "train_seconds": round(train_s, 1),
               "bank_seconds": round(t_bank, 1), "params": net.n_params(),
               "gmac_512": round(macs_per_pixel(net) * 512 * 512 / 1e9, 3), "val_final": final_metrics,
               "best_step": best[1], "onnx": str(p32), "onnx_fp16": str(p16)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps({"event": "done", **summary}), file=log_f, flush=True)
    log_f.close()
    return summary
