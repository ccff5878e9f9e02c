"""Soak run: a simulated microscope streams for a long time into the live analyzer; is anything lost?

``stemwatch bench soak`` (and the soak tests) run this:

* **source** (a separate process, ``python -m lab.soak source ...``): a movie with exact ground
  truth (a recording written by ``stemwatch simulate``, e.g. ``replay_data/02_field_512.swrec``) is
  streamed again and again over tcp loopback with :class:`streamer.Publisher` (PUSH), each loop a
  new series (``start``, the frames with ``seq`` 0..n-1 and ``t_acquired`` = send time, ``end``),
  each frame re-noised with a uniform integer dither (0-3 counts) so that no two series are
  byte-identical. Frames are sent at ``rate_hz`` on an absolute schedule (accelerated: faster
  than the movie's frame time, and faster than analysis when asked to: the receiver hands
  analysis the newest frame and counts the others as dropped for analysis).
* **analyzer** (this process): :class:`engine.service.LiveService` (what ``stemwatch serve``
  runs) with recording on, the events PUB socket bound, the Bokeh dashboard
  (:class:`dashboard.server.DashboardServer`) and a real headless Chromium showing it.
  The recording is rotated into segments (``LiveService.start_recording`` on a new file while
  live); each closed segment is read back (every record's checksum verified), its frames counted
  per series, and deleted, so disk use stays bounded on long runs.

Measured: RSS of the analyzer process over time (``/proc/self/status``; growth after warm-up in
percent and MB/hour), open file descriptors and threads at start and end, frames sent / received
/ recorded / lost to the recorder (per series: every ``seq`` 0..n-1 exactly once), frames
analysed and dropped for analysis, latency from ``t_acquired`` to result (p50/p99 over the whole
run, from a fixed-size histogram), and the events against the movie's ground truth (see
:func:`score_series`), plus the browser's progress.

Memory of this bookkeeping is constant (per-series counters, a histogram), so it does not
pollute the RSS trend.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lab.eventscore import EventMatch, TruthEvents, score_events
from lab.radii import END_MARGIN_FRAMES, EVENT_RADIUS_A, MAX_LATENCY_FRAMES, WARMUP_FRAMES
# the source process and the browser live in lab/soak_source.py and lab/soak_browser.py (re-exported)
from lab.soak_browser import Browser  # noqa: F401
from lab.net import free_tcp_port
from lab.soak_memory import memory_trend, open_fds, sample_rss
from lab.soak_source import (LONG_MOVIE, load_movie, long_series_movie, resolve_movie,  # noqa: F401
                             run_source, start_source_process)

log = logging.getLogger(__name__)

#: the default movie: 20 frames 512x512 uint16 with 9 scripted events and a flicker (replay_data/README.md)
DEFAULT_MOVIE = Path(__file__).resolve().parent.parent / "replay_data" / "02_field_512.swrec"
#: latency histogram: 1 ms bins up to 20 s (larger values land in the last bin)
_LAT_BIN_S = 1e-3
_LAT_BINS = 20_000


# ----------------------------------------------------------------------------------------- helpers
def _watch_page(br, shown: dict, period_s: float, done: threading.Event) -> None:
    """Read which frame the dashboard page shows every ``period_s`` until ``done``; counts the samples
    and the distinct frames in ``shown``."""
    while not done.is_set():
        s = br.shown_seq()
        if done.is_set():
            break
        shown["samples"] += 1
        if s is not None and s != shown["last"]:
            shown["last"], shown["distinct"] = s, shown["distinct"] + 1
        done.wait(period_s)


@dataclass
class MovieTruth(TruthEvents):
    """Ground truth of the source movie, indexed once for event scoring (:class:`lab.eventscore.TruthEvents`)."""

    n_frames: int = 0

    @classmethod
    def load(cls, movie: str | Path) -> "MovieTruth":
        from lab.evaluate import load_ground_truth

        truth = load_ground_truth(movie)
        return cls(**vars(TruthEvents.from_truth(truth)), n_frames=len(truth.frames))


@dataclass
class EventScore:
    """Events of many series against the truth (counts only)."""

    series: int = 0
    truth: int = 0               # countable truth events
    found: int = 0
    reported: int = 0            # reported transformation events (field enter/leave and new motifs apart)
    matched: int = 0             # reported events that match a truth event (countable or not)
    false: int = 0
    flickers: int = 0
    flicker_alarms: int = 0
    latency_frames: collections.Counter = field(default_factory=collections.Counter)  # analysed frames
    missed_by_kind: collections.Counter = field(default_factory=collections.Counter)
    false_by_kind: collections.Counter = field(default_factory=collections.Counter)

    @classmethod
    def of(cls, m: EventMatch) -> "EventScore":
        """One series' :class:`lab.eventscore.EventMatch` as counts."""
        return cls(series=1, truth=m.truth, found=m.found, reported=m.reported, matched=m.matched,
                   false=len(m.false), flickers=m.flickers, flicker_alarms=m.flicker_alarms,
                   latency_frames=collections.Counter(m.latencies),
                   missed_by_kind=collections.Counter(e["kind"] for e in m.missed),
                   false_by_kind=collections.Counter(h["kind"] for h in m.false))

    def add(self, other: "EventScore") -> None:
        for k in ("series", "truth", "found", "reported", "matched", "false", "flickers", "flicker_alarms"):
            setattr(self, k, getattr(self, k) + getattr(other, k))
        self.latency_frames.update(other.latency_frames)
        self.missed_by_kind.update(other.missed_by_kind)
        self.false_by_kind.update(other.false_by_kind)

    def summary(self) -> dict:
        lat = self.latency_frames
        n = sum(lat.values())
        return {"series_scored": self.series, "truth_events": self.truth, "found": self.found,
                "recall": self.found / self.truth if self.truth else None,
                "reported": self.reported, "precision": self.matched / self.reported if self.reported else None,
                "false_events": self.false, "flickers": self.flickers, "flicker_alarms": self.flicker_alarms,
                "latency_analysed_frames_mean": sum(k * v for k, v in lat.items()) / n if n else None,
                "latency_analysed_frames_max": max(lat) if lat else None,
                "missed_by_kind": dict(self.missed_by_kind), "false_by_kind": dict(self.false_by_kind)}


def score_series(truth: MovieTruth, analysed: np.ndarray, events: list, max_latency: int = MAX_LATENCY_FRAMES,
                 radius_A: float = EVENT_RADIUS_A, warmup: int = WARMUP_FRAMES,
                 end_margin: int = END_MARGIN_FRAMES) -> EventScore:
    """Score the events of one series against the movie truth, aware of frames dropped for analysis.

    analysed : the seqs that were analysed. events : dicts with ``frame`` (seq), ``kind``, ``x``,
    ``y`` (px), ``before``, ``after``. The rule is :func:`lab.eventscore.score_events`, the one
    ``stemwatch evaluate`` uses (latency in analysed frames; with nothing dropped the two agree
    exactly: tests/test_eventscore.py).
    """
    return EventScore.of(score_events(truth, events, analysed, max_latency, radius_A, warmup, end_margin))


# ----------------------------------------------------------------------------------------- analyzer
@dataclass
class _SeriesAcc:
    analysed: list = field(default_factory=list)
    events: list = field(default_factory=list)
    errors: int = 0


class _RecordCheck:
    """Frames found in verified recording segments, per series: count, sum and min/max of seq."""

    def __init__(self):
        self.per_series: dict[str, list] = {}       # series -> [count, sum, sumsq, min, max]
        self.segments = 0
        self.problems: list[str] = []
        self.bytes = 0

    def verify(self, path: Path, delete: bool) -> None:
        import msgpack

        from streamer.recording import RecordingReader

        r = RecordingReader(path)
        for parts, _t in r.records(verify=True):
            h = msgpack.unpackb(parts[0], raw=False)
            if h.get("type") != "frame":
                continue
            s = int(h["seq"])
            acc = self.per_series.setdefault(h["series"], [0, 0, 0, s, s])
            acc[0] += 1
            acc[1] += s
            acc[2] += s * s
            acc[3] = min(acc[3], s)
            acc[4] = max(acc[4], s)
        if not r.complete:
            self.problems.append(f"{path.name}: {r.problem}")
        self.segments += 1
        self.bytes += path.stat().st_size
        if delete:
            path.unlink()

    def exact(self, series_sent: list) -> tuple[int, int, list]:
        """(frames recorded, frames sent, series whose seqs are not exactly 0..n-1 once each)."""
        bad = []
        rec = sum(v[0] for v in self.per_series.values())
        for sid, n in series_sent:
            v = self.per_series.get(sid)
            want = [n, n * (n - 1) // 2, (n - 1) * n * (2 * n - 1) // 6, 0, n - 1]
            if n == 0 and v is None:
                continue
            if v is None or v != want:
                bad.append([sid, n, v])
        return rec, sum(n for _, n in series_sent), bad


def run_soak(movie: str | Path = DEFAULT_MOVIE, duration_s: float = 1800.0, max_frames: int | None = None,
             rate_hz: float = 28.0, browser: bool = True, warmup_s: float | None = None,
             sample_period_s: float = 2.0, segment_s: float = 120.0, workdir: str | Path | None = None,
             keep_recordings: bool = False, cfg=None, dashboard: dict | None = None,
             progress: bool = True, kill_browser_at_s: float | None = None, warmup_frames: int = 0,
             max_duration_s: float | None = None, min_frames: int = 0) -> dict:
    """Run a soak (module docstring) and return its report (plain data).

    duration_s / max_frames : the source stops at whichever comes first. rate_hz : source frame rate
    (frames/s). warmup_s : RSS samples before this are not in the trend (default: 20 % of the
    duration, at least 5 s and at most 180 s), and at least until ``warmup_frames`` frames were
    analysed (the dashboard's rings fill with analysed frames, later on a busy machine). segment_s : a new recording segment this often.
    dashboard : overrides of :class:`stemwatch.config.DashboardConfig` (e.g. a smaller
    ``history_frames`` / ``max_event_frames`` so that a short run reaches its steady state).
    kill_browser_at_s : kill the browser (SIGKILL, while frames are being pushed to it) this many
    seconds into the run (or later, once the page has shown 2 frames); the report then says how many
    frames were analysed after it. max_duration_s : run on past ``duration_s`` (at most this long, a
    hang guard) until what the run is for has happened: the dashboard's rings filled (warmup_frames)
    and, with kill_browser_at_s, the browser killed and a frame analysed after it; then the source is
    stopped (SIGTERM: it ends its series and reports). The run's clock starts with the source, once the analyzer, the
    dashboard and the browser's page are up. min_frames : with max_duration_s, the source is not
    stopped before the analyzer has received this many frames (a source starved of CPU on a busy
    machine sends fewer than ``rate_hz`` x ``duration_s`` in that time).
    """
    from dashboard.server import DashboardServer
    from engine.service import LiveService
    from stemwatch.config import Config

    cfg = cfg or Config().replace(inference={"backend": "onnx"})
    cfg = cfg.replace(dashboard={**(dashboard or {}), "port": 0})
    truth = MovieTruth.load(movie)
    if warmup_s is None:
        warmup_s = min(180.0, max(5.0, 0.2 * duration_s))
    tmp = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="stemwatch-soak-"))
    tmp.mkdir(parents=True, exist_ok=True)
    say = (lambda msg: print(f"soak: {msg}", file=sys.stderr, flush=True)) if progress else (lambda msg: None)

    queue: collections.deque = collections.deque()
    lat_hist = np.zeros(_LAT_BINS, np.int64)

    def listener(r, _status):
        lat = r.t_done - r.t_acquired
        lat_hist[min(_LAT_BINS - 1, max(0, int(lat / _LAT_BIN_S)))] += 1
        queue.append((r.series, int(r.seq), r.error is not None,
                      [{"frame": e.frame, "kind": e.kind, "x": e.x, "y": e.y, "before": e.before, "after": e.after}
                       for e in r.events]))

    score = EventScore()
    halves = [EventScore(), EventScore()]           # series finished in the first / second half of the run
    series_acc: dict[str, _SeriesAcc] = {}
    errors = 0
    complete_n = truth.n_frames

    def drain(final: bool = False):
        nonlocal errors
        while queue:
            sid, seq, err, evs = queue.popleft()
            if sid not in series_acc:
                # a new series: every older one is over
                for old in [k for k in series_acc]:
                    finish(old)
                series_acc[sid] = _SeriesAcc()
            acc = series_acc[sid]
            if err:
                acc.errors += 1
                errors += 1
            else:
                acc.analysed.append(seq)
            acc.events.extend(evs)
        if final:
            for old in list(series_acc):
                finish(old)

    finished_full: list = [0]
    sent_per_series: dict = {}

    def finish(sid):
        acc = series_acc.pop(sid)
        n = sent_per_series.get(sid)
        if n is not None and n < complete_n:
            return                      # a partial last loop: its truth is not complete
        sc = score_series(truth, np.asarray(acc.analysed), acc.events)
        score.add(sc)
        halves[0 if time.monotonic() - t_start < duration_s / 2 else 1].add(sc)
        finished_full[0] += 1

    # the analyzer, the dashboard and the browser are up before the first frame is sent: the run's
    # clock (and the browser kill time) starts with the source, not with Chromium's start-up
    endpoint = f"tcp://127.0.0.1:{free_tcp_port()}"
    source = sampler = watcher = None
    watching_done = threading.Event()
    warm_at: list = [None]               # seconds into the run when warmup_frames were analysed
    sampling_done = threading.Event()
    t_start = time.monotonic()
    svc = LiveService(cfg, endpoint, events_endpoint="tcp://127.0.0.1:*")
    svc.add_listener(listener)
    dash = DashboardServer(cfg.dashboard, controller=svc)
    checker = _RecordCheck()
    verify_threads: list = []
    rss_t, rss_v = [], []
    shown = {"last": None, "distinct": 0, "samples": 0}
    killed = {"at_s": None, "analysed_at_kill": None, "received_at_kill": None, "pids": 0}
    br = None
    seg = 0
    status = {}
    fds0 = threads0 = None
    try:
        svc.start_recording(tmp / f"soak_{seg:04d}.swrec")
        svc.start()
        url = dash.start()
        if browser:
            br = Browser(url)
            if not br.wait_ready():
                raise RuntimeError(f"the dashboard page {url} did not load in the browser")
        t_start = time.monotonic()
        source, endpoint = start_source_process(movie, rate_hz, max_frames, max_duration_s or duration_s,
                                                bind=endpoint)
        stopping = False
        # RSS is sampled on its own thread: a browser call can hold the loop below for seconds on a busy machine
        sampler = threading.Thread(target=sample_rss, args=(rss_t, rss_v, t_start, sample_period_s, sampling_done),
                                   name="soak-rss", daemon=True)
        sampler.start()
        if br is not None:              # the page is read on its own thread too, until the browser is killed
            watcher = threading.Thread(target=_watch_page, args=(br, shown, sample_period_s, watching_done),
                                       name="soak-page", daemon=True)
            watcher.start()
        fds0, threads0 = open_fds(), threading.active_count()
        say(f"source {endpoint} at {rate_hz:g} frames/s, movie {Path(movie).name} ({truth.n_frames} frames), "
            f"dashboard {url}{' + chromium' if br else ''}, recording to {tmp}")
        t_seg = t_print = time.monotonic()
        while source.poll() is None:
            time.sleep(0.2)
            now = time.monotonic()
            drain()
            if warm_at[0] is None and svc.status()["frames_analysed"] >= warmup_frames:
                warm_at[0] = now - t_start
            # (and once the page has shown 2 frames: a kill before that would test nothing)
            if br is not None and kill_browser_at_s is not None and killed["at_s"] is None \
                    and now - t_start >= kill_browser_at_s and shown["distinct"] >= 2:
                watching_done.set()
                pids = br.pids()
                st_k = svc.status()
                killed.update(at_s=now - t_start, analysed_at_kill=st_k["frames_analysed"],
                              received_at_kill=st_k["frames_received"], pids=len(pids))
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                say(f"killed the browser ({len(pids)} processes) at {killed['at_s']:.0f} s")
            if max_duration_s is not None and not stopping and now - t_start >= duration_s and warm_at[0] is not None:
                st_now = svc.status()
                if st_now["frames_received"] >= min_frames and (kill_browser_at_s is None or br is None or (
                        killed["at_s"] is not None and st_now["frames_analysed"] > killed["analysed_at_kill"])):
                    source.send_signal(signal.SIGTERM)         # it ends its series and prints its report
                    stopping = True
            if now - t_seg >= segment_s:
                old = tmp / f"soak_{seg:04d}.swrec"
                seg += 1
                svc.start_recording(tmp / f"soak_{seg:04d}.swrec")
                th = threading.Thread(target=checker.verify, args=(old, not keep_recordings), daemon=True)
                th.start()
                verify_threads.append(th)
                t_seg = now
            if progress and now - t_print >= 30:
                t_print = now
                st = svc.status()
                say(f"{now - t_start:7.0f} s: received {st['frames_received']}, analysed {st['frames_analysed']}, "
                    f"dropped {st['dropped_for_analysis']}, recorded {st['recorder']['written']} (segment {seg}), "
                    f"lost {st['recorder']['lost']}, RSS {rss_v[-1] / 2**20:.0f} MB, events {st['events']}")
        out_line = source.stdout.read().strip().splitlines()
        src = json.loads(out_line[-1]) if out_line else {"frames_sent": None, "series": []}
        sent_per_series.update({sid: n for sid, n in src["series"]})
        # wait until everything sent has been received (the end message of the last series included)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and svc.status()["frames_received"] < src["frames_sent"]:
            time.sleep(0.1)
        if killed["at_s"] is not None and svc.status()["frames_received"] > killed["received_at_kill"]:
            # the service analyses the newest frame, and one arrived after the kill
            deadline = time.monotonic() + 60    # (on a loaded machine that can take longer than the run had left)
            while time.monotonic() < deadline and svc.status()["frames_analysed"] <= killed["analysed_at_kill"]:
                time.sleep(0.1)
        time.sleep(1.0)
        status = svc.status()
        sampling_done.set()
        watching_done.set()
        sampler.join()
        if watcher is not None:
            watcher.join(30)
        fds1, threads1 = open_fds(), threading.active_count()
    finally:
        sampling_done.set()
        watching_done.set()
        if source is not None and source.poll() is None:
            source.terminate()
            source.wait(10)
        if br is not None:
            br.close()
        dash.stop()
        svc.stop()
    wall = time.monotonic() - t_start
    drain(final=True)
    for th in verify_threads:
        th.join()
    last = tmp / f"soak_{seg:04d}.swrec"
    if last.exists():
        checker.verify(last, not keep_recordings)
    recorded, sent, bad = checker.exact(src["series"])
    if not keep_recordings and workdir is None:
        shutil.rmtree(tmp, ignore_errors=True)

    cum = np.cumsum(lat_hist)
    total = int(cum[-1])

    def pct(p):
        return float((np.searchsorted(cum, p / 100 * total) + 0.5) * _LAT_BIN_S) if total else None

    report = {
        "duration_s": wall, "movie": str(movie), "movie_frames": truth.n_frames, "rate_hz": rate_hz,
        "frames_sent": sent, "series_sent": len(src["series"]), "source_late_frames": src.get("late_frames"),
        "frames_received": status.get("frames_received"), "frames_analysed": status.get("frames_analysed"),
        "dropped_for_analysis": status.get("dropped_for_analysis"), "analysis_errors": errors,
        "analysed_fps": status.get("frames_analysed", 0) / wall if wall else None,
        "gaps": status.get("gap_count"), "stalls": status.get("stalls"), "malformed": status.get("malformed_total"),
        "frames_recorded": recorded, "recorder_lost": (status.get("recorder") or {}).get("lost"),
        "recorder_error": (status.get("recorder") or {}).get("error"),
        "recording_segments": checker.segments, "recorded_bytes": checker.bytes,
        "recording_problems": checker.problems[:10], "series_not_exact": bad[:10], "series_not_exact_count": len(bad),
        "latency_p50_s": pct(50), "latency_p99_s": pct(99), "latency_max_s": pct(100),
        "rss": memory_trend(np.asarray(rss_t), np.asarray(rss_v),
                            max(warmup_s, warm_at[0] if warm_at[0] is not None else wall)),
        "rss_samples_MB": [[round(t, 1), round(v / 2**20, 1)] for t, v in zip(rss_t, rss_v)][:: max(1, len(rss_t) // 60)],
        "fds_start_end": [fds0, fds1 if status else None], "threads_start_end": [threads0, threads1 if status else None],
        "events": score.summary(), "events_published": status.get("events_published"),
        "events_first_half": {k: v for k, v in halves[0].summary().items() if k in ("series_scored", "recall", "precision")},
        "events_second_half": {k: v for k, v in halves[1].summary().items() if k in ("series_scored", "recall", "precision")},
        "browser": ({"samples": shown["samples"], "distinct_frames_seen": shown["distinct"],
                     "last_shown": shown["last"], "killed_at_s": killed["at_s"], "killed_processes": killed["pids"],
                     "analysed_after_kill": (status.get("frames_analysed", 0) - killed["analysed_at_kill"]
                                             if killed["at_s"] is not None else None),
                     "received_after_kill": (status.get("frames_received", 0) - killed["received_at_kill"]
                                             if killed["at_s"] is not None else None)} if browser else None),
        "listener_errors": status.get("listener_errors"),
        "backend": status.get("backend"),
    }
    return report


def reference_events(movie: str | Path = DEFAULT_MOVIE, cfg=None) -> dict:
    """The "short run": every frame of the movie through :class:`engine.pipeline.Pipeline` offline (no
    drops), scored with :func:`score_series`, plus the median analysis time per frame (s)."""
    from engine.pipeline import Pipeline
    from stemwatch.config import Config
    from streamer.recording import iter_frames

    cfg = cfg or Config().replace(inference={"backend": "onnx"})
    truth = MovieTruth.load(movie)
    pipe = Pipeline(cfg)
    seqs, events, times = [], [], []
    try:
        for f in iter_frames(movie):
            t0 = time.perf_counter()
            r = pipe.process(f)
            times.append(time.perf_counter() - t0)
            if r.error is None:
                seqs.append(r.seq)
            events += [{"frame": e.frame, "kind": e.kind, "x": e.x, "y": e.y, "before": e.before, "after": e.after}
                       for e in r.events]
    finally:
        pipe.close()
    return {"events": score_series(truth, np.asarray(seqs), events).summary(),
            "analysis_s_median": float(np.median(times[2:] if len(times) > 4 else times))}


# ----------------------------------------------------------------------------------------- bench
def bench_soak(quick: bool = False):
    """``stemwatch bench soak``: see the module docstring. Environment overrides:
    ``STEMWATCH_SOAK_DURATION_S`` (default 1800, quick 60), ``STEMWATCH_SOAK_FRAMES`` (default 50,000),
    ``STEMWATCH_SOAK_RATE_HZ`` (default frames / duration = 27.8 frames/s; quick 10),
    ``STEMWATCH_SOAK_MOVIE`` (default ``long``: :func:`long_series_movie`; or a recording with its
    truth, e.g. replay_data/02_field_512.swrec), ``STEMWATCH_SOAK_BROWSER``
    (1/0, default 1), ``STEMWATCH_SOAK_DIR`` (where the recording segments go; default a temp dir)."""
    from stemwatch.bench import BenchReport

    env = os.environ.get
    duration = float(env("STEMWATCH_SOAK_DURATION_S", 60 if quick else 1800))
    frames = int(env("STEMWATCH_SOAK_FRAMES", 600 if quick else 50_000))
    rate = float(env("STEMWATCH_SOAK_RATE_HZ", 10.0 if quick else frames / duration))
    movie = env("STEMWATCH_SOAK_MOVIE", LONG_MOVIE)
    movie_dir = None
    if movie == LONG_MOVIE:
        movie_dir = env("STEMWATCH_SOAK_DIR") or tempfile.mkdtemp(prefix="stemwatch-soak-movie-")
        print("bench soak: simulating the long-series movie ...", file=sys.stderr, flush=True)
        movie = str(long_series_movie(movie_dir))
    use_browser = env("STEMWATCH_SOAK_BROWSER", "1") not in ("0", "false", "no")
    print("bench soak: reference (offline, every frame) ...", file=sys.stderr, flush=True)
    ref = reference_events(movie)
    print(f"bench soak: {duration:.0f} s / {frames} frames at {rate:g} frames/s ...", file=sys.stderr, flush=True)
    try:
        r = run_soak(movie, duration_s=duration, max_frames=frames, rate_hz=rate, browser=use_browser,
                     workdir=env("STEMWATCH_SOAK_DIR"))
    finally:
        if movie_dir and not env("STEMWATCH_SOAK_DIR"):
            shutil.rmtree(movie_dir, ignore_errors=True)
    ev, rss = r["events"], r["rss"]
    row = {"duration_s": r["duration_s"], "sent": r["frames_sent"], "received": r["frames_received"],
           "recorded": r["frames_recorded"], "rec_lost": r["recorder_lost"], "analysed": r["frames_analysed"],
           "dropped": r["dropped_for_analysis"], "analysed_fps": r["analysed_fps"],
           "lat_p50_ms": 1e3 * (r["latency_p50_s"] or float("nan")), "lat_p99_ms": 1e3 * (r["latency_p99_s"] or float("nan")),
           "rss_MB_after_warmup": rss.get("after_warmup_MB"), "rss_MB_end": rss["end_MB"],
           "rss_growth_pct": rss["growth_pct"], "event_recall": ev["recall"], "event_precision": ev["precision"],
           "ref_recall": ref["events"]["recall"], "ref_precision": ref["events"]["precision"]}
    growth = rss["growth_pct"]
    targets = {
        "duration >= 1800 s and >= 50,000 frames": "PASS" if r["duration_s"] >= 1800 and r["frames_sent"] >= 50_000
        else f"not met (ran {r['duration_s']:.0f} s, {r['frames_sent']} frames)",
        "RSS growth after warm-up < 5 %": f"{growth:.2f} %: {'PASS' if growth is not None and growth < 5 else 'FAIL'}"
        if growth is not None else "too few samples",
        "no frame lost to the recorder": "PASS" if (r["frames_recorded"] == r["frames_sent"] and not r["recorder_lost"]
                                                    and not r["series_not_exact_count"]) else "FAIL",
        "events as on a short run": f"recall {ev['recall']:.3f} vs {ref['events']['recall']:.3f} with every frame "
                                    f"analysed, precision {ev['precision']:.4f} vs {ref['events']['precision']:.4f}; "
                                    f"first / second half of the run: recall {r['events_first_half']['recall']} / "
                                    f"{r['events_second_half']['recall']}",
    }
    notes = {k: r[k] for k in ("movie", "rate_hz", "series_sent", "recording_segments", "recorded_bytes",
                               "recording_problems", "series_not_exact", "gaps", "stalls", "malformed",
                               "analysis_errors", "fds_start_end", "threads_start_end", "browser", "backend",
                               "latency_max_s", "events_published")}
    notes["rss"] = rss
    notes["rss_samples_MB (t_s, MB)"] = r["rss_samples_MB"]
    notes["events"] = ev
    notes["events first / second half"] = [r["events_first_half"], r["events_second_half"]]
    notes["reference (offline, every frame)"] = ref
    cols = list(row)
    return BenchReport(name="soak", columns=cols, rows=[row], notes=notes, targets=targets)


# ----------------------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lab.soak", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("source", help="stream a movie in loops (the soak's simulated microscope)")
    s.add_argument("--movie", default=str(DEFAULT_MOVIE), help="recording to loop (default %(default)s)")
    s.add_argument("--bind", default="tcp://127.0.0.1:*", help="endpoint to bind (default %(default)s)")
    s.add_argument("--rate", type=float, default=28.0, help="frames/s (inf: as fast as possible)")
    s.add_argument("--frames", type=int, default=None, help="stop after N frames")
    s.add_argument("--duration-s", type=float, default=None, help="stop after S seconds")
    s.add_argument("--prefix", default="soak", help="series id prefix")
    s.add_argument("--seed", type=int, default=0, help="dither seed")
    s.add_argument("--no-dither", action="store_true", help="send the movie's frames unchanged")
    s.add_argument("--one-series", action="store_true", help="one series, the movie cycling (seq keeps counting)")
    r = sub.add_parser("run", help="run a soak and print its report as JSON")
    r.add_argument("--movie", default=str(DEFAULT_MOVIE),
                   help=f"recording with ground truth to loop, or '{LONG_MOVIE}' for the simulated long-series movie "
                        "(default %(default)s)")
    r.add_argument("--dir", default=None, help="working folder for recordings and the long movie (default: a temp dir)")
    r.add_argument("--duration-s", type=float, default=60.0)
    r.add_argument("--frames", type=int, default=None)
    r.add_argument("--rate", type=float, default=10.0)
    r.add_argument("--no-browser", action="store_true")
    r.add_argument("--out", default=None, help="also write the JSON report here")
    args = p.parse_args(argv)
    if args.cmd == "source":
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *a: stop.set())
        run_source(args.movie, args.bind, args.rate, args.frames, args.duration_s, args.prefix,
                   dither=not args.no_dither, seed=args.seed, stop=stop, one_series=args.one_series)
        return 0
    workdir = args.dir or tempfile.mkdtemp(prefix="stemwatch-soak-")
    try:
        movie = resolve_movie(args.movie, workdir)
        rep = run_soak(movie, duration_s=args.duration_s, max_frames=args.frames, rate_hz=args.rate,
                       browser=not args.no_browser, workdir=workdir)
    finally:
        if not args.dir:                     # our temp dir: the long movie and any kept segment go with it
            shutil.rmtree(workdir, ignore_errors=True)
    text = json.dumps(rep, indent=2, default=str)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
