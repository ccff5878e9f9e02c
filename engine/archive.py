"""Re-analyse archives on a Dask cluster: ``stemwatch analyze INPUT... --out DIR --scheduler SPEC``.

Each input (a recording or an importable stack) gets its own folder ``DIR/NAME/`` with the files
of the single-process ``stemwatch analyze`` (atoms.csv, events.jsonl, frames.csv, summary.json),
and ``DIR/index.json`` lists every input with its frame count, status, reason, timings and verdict
counts (docs/scaling.md).

Work split (the same functions as :meth:`engine.pipeline.Pipeline.process`, so the results are
identical to one process by construction):

1. ``plan`` task per input, on a worker: :func:`streamer.chunks.plan_input` counts its frames
   (and indexes a recording). A bad input fails here and is reported in the index.
2. ``analyze`` task per chunk of ``chunk_frames`` frames, on the workers: the worker reads its
   frames from the input path (:func:`streamer.chunks.read_chunk`; the path must be visible to
   every worker) and runs :func:`engine.pipeline.analyze_frame` (network, atoms, lattice graph)
   on each; the network is loaded once per worker process (:class:`AnalyzerPlugin`). What a
   series carries from frame to frame (:class:`engine.pipeline.SeriesState`: the material cadence,
   the contamination region held, the last frame for the field's change) goes from one chunk to
   the next: an input's chunks run one after another, each from the state the one before left,
   and the inputs run side by side.
3. On the client, as chunks complete (:func:`distributed.as_completed`), each input's chunks are
   taken in frame order into its own :meth:`Pipeline.track <engine.pipeline.Pipeline.track>`
   (motif naming, tracking, events) and :class:`engine.analyze.ResultWriter`. When tracking finds
   the field jumped (``fov_jump``) after a frame that is not its chunk's last, the chunk is
   analysed again from the state it started from, told of the jump, as one process would have
   analysed the frames after it.

Tasks are pure functions of the input file (and of the series state they are handed), so a worker lost mid-run (killed, out of memory) costs
only its running tasks, which the scheduler runs again elsewhere; nothing is lost or duplicated.
At most a window of chunks is in flight at a time, which bounds client memory and makes Ctrl-C
prompt: futures are cancelled, each folder's summary.json and the index say "cancelled", and a
local cluster is shut down.

This module imports ``distributed`` (the ``[cluster]`` extra); nothing else imports it, so
``stemwatch analyze`` without ``--scheduler`` never loads Dask.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import signal
import sys
import threading
import time
import uuid
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from distributed import Client, LocalCluster, as_completed, get_worker
from distributed.diagnostics.plugin import WorkerPlugin

from streamer.chunks import InputPlan, chunk_plan, plan_input, read_chunk

log = logging.getLogger(__name__)

INDEX_VERSION = 1
DEFAULT_CHUNK_FRAMES = 8
INDEX_PERIOD_S = 1.0              # DIR/index.json is rewritten at most this often while frames come in


# ------------------------------------------------------------------------------------------- inputs

def parse_scheduler(spec: str) -> tuple[str, object]:
    """``"local"`` -> ("local", None); ``"local:N"`` -> ("local", N); ``"tcp://HOST:PORT"``,
    ``"tls://..."`` or ``"HOST:PORT"`` -> ("address", spec). Raises ValueError otherwise."""
    s = str(spec).strip()
    if s == "local" or s.startswith("local:"):
        if s == "local":
            return "local", None
        try:
            n = int(s.split(":", 1)[1])
        except ValueError:
            n = 0
        if n < 1:
            raise ValueError(f"--scheduler {spec!r}: local:N needs a number of workers N >= 1")
        return "local", n
    if "://" in s:
        proto, rest = s.split("://", 1)
        if proto not in ("tcp", "tls", "inproc", "ucx", "ws", "wss") or not rest:
            raise ValueError(f"--scheduler {spec!r}: expected local[:N] or tcp://HOST:PORT")
        return "address", s
    host, _, port = s.rpartition(":")
    if host and port.isdigit():
        return "address", f"tcp://{s}"
    raise ValueError(f"--scheduler {spec!r}: expected local[:N] or tcp://HOST:PORT")


def expand_inputs(patterns) -> list[Path]:
    """Files, glob patterns (``**`` recurses) and folders (every recording in them) -> absolute
    paths in the order given (each pattern's matches sorted), without duplicates. Raises
    FileNotFoundError naming a pattern that matches nothing."""
    from streamer.replay import is_recording

    out: list[Path] = []
    seen: set[Path] = set()
    for pat in patterns:
        p = Path(pat)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and is_recording(q))
            if not found:
                raise FileNotFoundError(f"{pat}: no recordings in this folder")
        elif p.is_file():
            found = [p]
        elif glob.has_magic(str(pat)):
            found = sorted(Path(q) for q in glob.glob(str(pat), recursive=True) if Path(q).is_file())
            if not found:
                raise FileNotFoundError(f"{pat}: matches no file")
        else:
            raise FileNotFoundError(f"no such file: {pat}")
        for q in found:
            q = q.resolve()
            if q not in seen:
                seen.add(q)
                out.append(q)
    return out


def output_names(paths) -> list[str]:
    """One folder name per input: its name without the suffix, ``-2``, ``-3``... when repeated."""
    names: list[str] = []
    used: set[str] = set()
    for p in paths:
        base = Path(p).stem or Path(p).name
        name, k = base, 2
        while name in used or name == "index.json":
            name, k = f"{base}-{k}", k + 1
        used.add(name)
        names.append(name)
    return names


# ------------------------------------------------------------------------------------------- workers

class AnalyzerPlugin(WorkerPlugin):
    """One inferencer per worker process, built when the plugin is set up on the worker (the network
    is loaded once per worker, not once per task) and closed with the worker. Tasks of one worker
    take turns on it."""

    idempotent = False

    def __init__(self, inference_cfg, name: str, ignore_sigint: bool = False):
        self.cfg = inference_cfg
        self.name = name
        self.ignore_sigint = ignore_sigint
        self.inferencer = None
        self.lock = None

    def setup(self, worker) -> None:
        self.lock = threading.Lock()
        if self.ignore_sigint:               # a local worker (re)started by its nanny: see _spawn_ignoring_sigint
            try:
                signal.signal(signal.SIGINT, signal.SIG_IGN)
            except ValueError:               # not the main thread of the worker process
                pass
        try:                                 # load the network now, not inside the first task
            self.get()
        except Exception as exc:             # noqa: BLE001 -- reported by the tasks, which try again
            log.warning("worker %s: the network does not load: %s", getattr(worker, "address", "?"), exc)

    def teardown(self, worker) -> None:
        if self.inferencer is not None:
            self.inferencer.close()
            self.inferencer = None

    def get(self):
        if self.inferencer is None:
            from engine.infer import Inferencer

            self.inferencer = Inferencer(self.cfg)
        return self.inferencer


@dataclass
class ChunkResult:
    """What one ``analyze`` task returns: the chunk's FrameChemistry, in frame order."""

    input_index: int
    start: int
    frames: list
    backend: str
    worker: str
    compute_s: float
    state: object = None         # the engine.pipeline.SeriesState after the chunk's last frame


def analyze_chunk(plugin_name: str, input_index: int, plan: InputPlan, start: int, stop: int,
                  cfg, first: int = 0, healths=None, state=None, jumps=()) -> ChunkResult | str:
    """Worker task: read frames ``start..stop-1`` of the (chunk) plan from its path and run
    :func:`engine.pipeline.analyze_frame` on each, in order, carrying the series state
    (:class:`engine.pipeline.SeriesState`) from frame to frame; the reason instead when the file cannot
    be read any more (changed, truncated or removed since it was planned). ``first``: the index of the
    chunk's first frame in the input. ``state``: the state the chunk before left (None: the input's
    first chunk, a new state); a copy is carried on, and returned with the result. ``jumps``: input frame
    indices after which the field jumped (a ``fov_jump`` that tracking found after their atoms)."""
    import copy

    from engine.pipeline import SeriesState, analyze_frame
    from streamer.importers import FileImportError

    worker = get_worker()
    plugin = worker.plugins[plugin_name]
    t0 = time.perf_counter()
    # (a copy: a cluster of threads hands the client's own object to the task, and a task run again
    # after a lost worker must start from the state as it was)
    state = SeriesState.new(cfg) if state is None else copy.deepcopy(state)
    jumps = frozenset(int(j) for j in jumps)
    with plugin.lock:
        inf = plugin.get()
        try:
            hs = healths if healths is not None else [None] * (stop - start)
            frames = []
            for k, (f, h) in enumerate(zip(read_chunk(plan, start, stop), hs)):
                frames.append(analyze_frame(f, inf, cfg, health=h, **state.as_kwargs()))
                if first + k in jumps:
                    state.fov_jump()
        except (OSError, FileImportError) as exc:
            return f"frames {first}-{first + stop - start - 1}: {exc}"
    desc = str(getattr(inf, "description", "") or type(inf).__name__)
    return ChunkResult(input_index, first, frames, desc, str(worker.address), time.perf_counter() - t0, state)


def plan_task(path: str, pixel_size_A, key, limit, plugin_name: str | None = None,
              health_cfg=None) -> tuple | str:
    """Worker task: :func:`streamer.chunks.plan_input` and the health pass over the whole input in
    frame order (:meth:`engine.health.HealthMonitor.before`: raw-pixel verdicts and the pixel size to
    analyse each frame at, which depend on the frames before it), as ``(plan, healths)``; or the
    reason a bad input cannot be read (a returned value, not an exception: a corrupt file is an
    expected outcome, not a worker error)."""
    from engine.health.monitor import HealthMonitor
    from streamer.importers import FileImportError

    try:
        plan = plan_input(path, pixel_size_A=pixel_size_A, key=key, limit=limit)
        model_ps = 0.2
        if plugin_name is not None:
            plugin = get_worker().plugins[plugin_name]
            with plugin.lock:
                model_ps = float(getattr(plugin.get(), "model_pixel_size_A", 0.2) or 0.2)
        monitor = HealthMonitor(health_cfg, model_ps)
        healths = [monitor.before(f) for f in read_chunk(plan, 0, plan.n_frames)]
    except (FileNotFoundError, FileImportError, OSError) as exc:
        return str(exc)
    if len(healths) != plan.n_frames:
        return f"{Path(path).name}: {len(healths)} frames read of {plan.n_frames} planned"
    return plan, healths


@contextmanager
def _spawn_ignoring_sigint():
    """Processes spawned inside ignore SIGINT (SIG_IGN survives exec and Python keeps it). Ctrl-C in
    a terminal reaches the whole process group; only the client must act on it (it cancels the run
    and closes the cluster), local worker processes must not die with a traceback of their own."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


@contextmanager
def connect(scheduler, dashboard_address: str | None = ":8787", quiet: bool = False):
    """Yield ``(client, n_local_workers or None)`` for a scheduler spec (:func:`parse_scheduler`)
    or an existing :class:`distributed.Client` (left open). A local cluster is started with
    ``threads_per_worker=1`` worker processes and shut down on exit."""
    if isinstance(scheduler, Client):
        yield scheduler, None
        return
    kind, value = parse_scheduler(scheduler)
    if kind == "local":
        from engine.infer.backends import physical_cores

        n = int(value or physical_cores())
        with _spawn_ignoring_sigint():
            # the worker processes' own log lines stay off the terminal (silence_logs): a task's error
            # reaches the client and is reported with its frame; after Ctrl-C the cluster is torn down
            # under the workers, whose heartbeat then fails and was logged with a traceback (one run in
            # four of tests/test_archive_cluster.py::test_ctrl_c_cancels_cleanly on a loaded machine)
            cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                   dashboard_address=dashboard_address, silence_logs=logging.CRITICAL)
        try:
            client = Client(cluster)
            try:
                if not quiet:
                    print(f"Dask: local cluster of {n} worker process{'es' * (n > 1)}, dashboard "
                          f"{client.dashboard_link}", file=sys.stderr, flush=True)
                yield client, n
            finally:
                client.close()
        finally:
            cluster.close()
        return
    try:
        client = Client(value, timeout="10s")
    except (OSError, TimeoutError) as exc:
        raise ConnectionError(f"cannot reach the Dask scheduler at {value}: {exc}") from None
    try:
        if not quiet:
            print(f"Dask: scheduler {value}, dashboard {client.dashboard_link}", file=sys.stderr, flush=True)
        yield client, None
    finally:
        client.close()


# ------------------------------------------------------------------------------------------- client

def _quiet_teardown() -> None:
    """After Ctrl-C the cluster is torn down mid-flight: connections closing under running
    callbacks are expected then, and Dask / tornado would log each with a traceback."""
    for name in ("distributed", "tornado.application", "asyncio"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


class _Input:
    """Client-side state of one input: its plan, the chunks taken so far, its tracker and writer."""

    def __init__(self, index: int, path: Path, name: str, out: Path):
        self.index, self.path, self.name, self.out = index, path, name, out
        self.status = "pending"                # pending | running | ok | failed | cancelled
        self.reason: str | None = None
        self.plan: InputPlan | None = None
        self.healths: list = []                # FrameHealth per frame, from the plan task's health pass
        self.n_chunks = 0
        self.next_chunk = 0
        self.state = None                      # the SeriesState the next chunk starts from (None: a new one)
        self.jumps: set = set()                # frames after which tracking found the field jumped
        self.futures: set = set()
        self.pipe = None
        self.writer = None
        self.frames_done = 0
        self.backend = ""
        self.compute_s = 0.0
        self.plan_s: float | None = None
        self.elapsed_s: float | None = None

    def entry(self, base: Path) -> dict:
        w = self.writer
        return {
            "input": str(self.path),
            "out": os.path.relpath(self.out, base),
            "status": self.status,
            "reason": self.reason,
            "frames": self.plan.n_frames if self.plan else None,
            "frames_done": self.frames_done,
            "frames_with_error": w.n_errors if w else 0,
            "verdicts": dict(w.verdicts) if w else {},
            "events": sum(w.events_by_kind.values()) if w else 0,
            "note": self.plan.note if self.plan else None,
            "backend": self.backend or None,
            "timings": {"plan_s": self.plan_s, "elapsed_s": self.elapsed_s, "worker_compute_s": self.compute_s,
                        "frames_per_s": (self.frames_done / self.elapsed_s) if self.elapsed_s else None},
        }


def analyze_archive(inputs, out_dir, cfg=None, scheduler="local", pixel_size_A: float | None = None,
                    key: str | None = None, limit: int | None = None, chunk_frames: int = DEFAULT_CHUNK_FRAMES,
                    progress: bool = True, dashboard_address: str | None = ":8787",
                    on_result: Callable | None = None, resources: dict | None = None) -> dict:
    """Analyse every input on a Dask cluster; returns the index (also written to DIR/index.json).

    inputs : files, glob patterns or folders (:func:`expand_inputs`). scheduler : ``"local"``,
    ``"local:N"``, an address, or a :class:`distributed.Client`. cfg : the Config every worker and
    tracker uses; with a local cluster and ``cfg.inference.threads`` None, each worker gets
    ``physical cores // N`` inference threads. on_result(input_index, FrameResult) : called for
    every frame, in frame order per input. resources : Dask worker resources each ``analyze`` task
    holds, e.g. ``{"GPU": 1}``: the chunks run only on workers started with ``--resources GPU=1``,
    one at a time per GPU. Ctrl-C (KeyboardInterrupt) cancels the run: the files
    and the index say so and the exception is re-raised.
    """
    from tqdm import tqdm

    from engine.analyze import ResultWriter
    from engine.pipeline import Pipeline
    from stemwatch.config import Config

    cfg = cfg or Config()
    if chunk_frames < 1:
        raise ValueError("chunk_frames must be >= 1")
    paths = expand_inputs(inputs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    states = [_Input(i, p, n, out / n) for i, (p, n) in enumerate(zip(paths, output_names(paths)))]
    t0 = time.time()
    header = {"version": INDEX_VERSION, "status": "running", "scheduler": str(scheduler), "workers": None,
              "resources": dict(resources or {}),
              "dashboard": None, "started_unix_s": t0, "elapsed_s": None, "startup_s": None, "analysis_s": None,
              "frames_per_s": None, "chunk_frames": int(chunk_frames), "frames": 0, "frames_done": 0,
              "config": cfg.to_dict()}
    index_path = out / "index.json"
    t_ready = None

    def write_index() -> dict:
        now = time.time()
        header["elapsed_s"] = now - t0
        if t_ready is not None:
            header["analysis_s"] = now - t_ready
            header["frames_per_s"] = sum(s.frames_done for s in states) / max(1e-9, now - t_ready)
        header["frames"] = sum(s.plan.n_frames for s in states if s.plan)
        header["frames_done"] = sum(s.frames_done for s in states)
        data = {**header, "inputs": [s.entry(out) for s in states]}
        tmp = index_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, indent=2, default=str))
        os.replace(tmp, index_path)
        return data

    try:
        with connect(scheduler, dashboard_address, quiet=not progress) as (client, n_local):
            write_index()
            if n_local:
                client.wait_for_workers(n_local)
                if cfg.inference.threads is None:
                    from engine.infer.backends import physical_cores

                    cfg = cfg.replace(inference={"threads": max(1, physical_cores() // n_local)})
            header["scheduler"] = "Client" if isinstance(scheduler, Client) else str(scheduler)
            header["workers"] = len(client.nthreads())
            header["dashboard"] = client.dashboard_link
            header["config"] = cfg.to_dict()
            run = uuid.uuid4().hex[:8]
            plugin = AnalyzerPlugin(cfg.inference, f"stemwatch-analyzer-{run}", ignore_sigint=bool(n_local))
            client.register_plugin(plugin)     # returns once every worker has loaded the network
            header["startup_s"] = time.time() - t0
            t_ready = time.time()
            kinds: dict = {}                     # future -> ("plan", i) | ("chunk", i, c)
            todo: deque = deque()                # (i, c) chunks not submitted yet
            ac = as_completed()
            bar = tqdm(total=0, unit="frame", desc=f"analyze {len(states)} input{'s' * (len(states) > 1)}",
                       file=sys.stderr, disable=not progress, dynamic_ncols=True)

            def finish(s: _Input, status: str, reason: str | None = None) -> None:
                s.status, s.reason = status, reason
                s.elapsed_s = time.time() - t_ready
                if s.futures:
                    client.cancel(list(s.futures))
                    for f in s.futures:
                        kinds.pop(f, None)
                    s.futures.clear()
                if s.writer is None and status != "ok":
                    s.out.mkdir(parents=True, exist_ok=True)
                if s.writer is not None:
                    # a Ctrl-C can land between writing a frame and counting it: the written files are the truth
                    s.frames_done = s.writer.n_frames
                    summary = s.writer.summary(input=str(s.path), out_dir=str(s.out), elapsed_s=s.elapsed_s,
                                               frames_per_s=s.frames_done / s.elapsed_s if s.elapsed_s else None,
                                               backend=s.backend, config=cfg.to_dict(), complete=status == "ok",
                                               status=status, reason=reason,
                                               frames_expected=s.plan.n_frames if s.plan else None)
                    s.writer.close(summary)
                else:
                    (s.out / "summary.json").write_text(json.dumps(
                        {"input": str(s.path), "frames": 0, "complete": False, "status": status, "reason": reason},
                        indent=2))
                if s.pipe is not None:
                    s.pipe.close()
                s.pipe = None
                bar.set_postfix(done=sum(x.status == "ok" for x in states),
                                failed=sum(x.status == "failed" for x in states))
                write_index()

            def submit_more() -> None:
                window = max(8, 3 * sum(client.nthreads().values()))
                while todo and sum(1 for k in kinds.values() if k[0] == "chunk") < window:
                    i, c = todo.popleft()
                    s = states[i]
                    if s.status != "running":
                        continue
                    start = c * chunk_frames
                    stop = min(start + chunk_frames, s.plan.n_frames)
                    part, a, b = chunk_plan(s.plan, start, stop)
                    jumps = sorted(j for j in s.jumps if start <= j < stop)
                    f = client.submit(analyze_chunk, plugin.name, i, part, a, b, cfg, start, s.healths[start:stop],
                                      s.state, jumps, key=f"analyze-{s.name}-{start:06d}-{len(jumps)}-{run}",
                                      retries=0, resources=resources)
                    kinds[f] = ("chunk", i, c)
                    s.futures.add(f)
                    ac.add(f)

            last_index = [time.time()]

            def take(s: _Input, res: ChunkResult) -> bool:
                """Track the chunk's frames not tracked yet, in order; False when tracking found the field
                jumped after a frame that is not the chunk's last: the frames after it were analysed with
                the old field's series state, so the chunk is analysed again from the state it started
                from, told of the jump (frames up to it come out the same and are not tracked twice)."""
                if s.pipe is None:
                    s.pipe = Pipeline.tracking_only(cfg)
                    s.writer = ResultWriter(s.out)
                s.backend = res.backend
                s.compute_s += res.compute_s
                last = res.start + len(res.frames) - 1
                for k, fc in enumerate(res.frames):
                    q = res.start + k
                    if q < s.frames_done:           # (frames are tracked in order from 0: these already were)
                        continue
                    r = s.pipe.track(fc)
                    s.writer.write(r)
                    s.frames_done += 1
                    bar.update(1)
                    if on_result is not None:
                        on_result(s.index, r)
                    if q not in s.jumps and any(e.kind == "fov_jump" for e in r.events):
                        s.jumps.add(q)
                        if q < last:
                            return False
                        res.state.fov_jump()
                if time.time() - last_index[0] >= INDEX_PERIOD_S:   # a live index for whoever watches a long run
                    write_index()
                    last_index[0] = time.time()
                s.state = res.state
                return True

            # a Ctrl-C is also remembered: the KeyboardInterrupt it raises can land inside a Dask call
            # that absorbs it (seen: a run interrupted mid-way finished with status 0); the loop
            # below raises it again at the next completed task
            interrupted = threading.Event()
            old_sigint = None
            if threading.current_thread() is threading.main_thread():
                def _on_sigint(signum, frame):
                    interrupted.set()
                    raise KeyboardInterrupt
                old_sigint = signal.signal(signal.SIGINT, _on_sigint)
            try:
                for s in states:
                    f = client.submit(plan_task, str(s.path), pixel_size_A, key, limit, plugin.name, cfg.health,
                                      key=f"plan-{s.name}-{run}", retries=0)
                    kinds[f] = ("plan", s.index)
                    s.futures.add(f)
                    ac.add(f)
                for f in ac:
                    if interrupted.is_set():
                        raise KeyboardInterrupt
                    kind = kinds.pop(f, None)
                    if kind is None:             # cancelled with its input
                        f.release()
                        continue
                    s = states[kind[1]]
                    s.futures.discard(f)
                    if f.status != "finished":
                        exc = f.exception() if f.status == "error" else None
                        why = f"{type(exc).__name__}: {exc}" if exc is not None else f"task {f.status}"
                        if isinstance(exc, ValueError):
                            why = str(exc)       # FileImportError messages name the file and the problem
                        f.release()
                        log.warning("%s failed: %s", s.path.name, why)
                        finish(s, "failed", why)
                        submit_more()
                        continue
                    res = f.result()
                    f.release()
                    if isinstance(res, str):     # plan_task / analyze_chunk: the input cannot be read
                        log.warning("%s failed: %s", s.path.name, res)
                        finish(s, "failed", res)
                        submit_more()
                        continue
                    if kind[0] == "plan":
                        s.plan, s.healths = res
                        res = s.plan
                        s.plan_s = time.time() - t_ready
                        s.status = "running"
                        s.n_chunks = -(-res.n_frames // chunk_frames)
                        if s.n_chunks:
                            todo.append((s.index, 0))
                        bar.total = sum(x.plan.n_frames for x in states if x.plan)
                        bar.refresh()
                    else:
                        # an input's chunks run one after another, each from the series state the one before
                        # left (a chain): inputs run side by side
                        if take(s, res):
                            s.next_chunk += 1
                        if s.next_chunk < s.n_chunks:
                            todo.appendleft((s.index, s.next_chunk))
                        else:
                            finish(s, "ok")
                    submit_more()
                if interrupted.is_set():
                    raise KeyboardInterrupt
                header["status"] = "complete" if all(s.status == "ok" for s in states) else "incomplete"
                write_index()
            except KeyboardInterrupt:
                _quiet_teardown()
                client.cancel(list(kinds))
                kinds.clear()
                for s in states:
                    if s.status in ("pending", "running"):
                        s.futures.clear()
                        finish(s, "cancelled", "interrupted (Ctrl-C)")
                header["status"] = "cancelled"
                write_index()
                raise
            finally:
                bar.close()
                if old_sigint is not None:
                    signal.signal(signal.SIGINT, old_sigint)
    except KeyboardInterrupt:             # while the cluster starts or stops: nothing is running
        _quiet_teardown()
        if header["status"] == "running":
            for s in states:
                if s.status in ("pending", "running"):
                    s.status, s.reason = "cancelled", "interrupted (Ctrl-C)"
            header["status"] = "cancelled"
            write_index()
        raise
    return write_index()
