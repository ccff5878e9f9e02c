"""The network in a process of its own: :class:`ProcessInferencer` (issue 20, small frames).

With the overlap of :mod:`engine.overlap` the network of frame n+1 runs on a thread while the
caller finishes frame n. ONNX Runtime releases the GIL while it runs, but the network's own Python
(resampling, normalisation, the INT8 fallback's checks: ~0.5 ms a 256^2 frame) does not, and on two
cores the caller's atoms, graph and tracking (~6 ms of Python and small numpy calls) wait for it.
In a child process that work no longer takes the caller's GIL, and the child also finds the atoms
(``chemistry``: ~1.5 ms a frame more off the caller's thread): 256^2 frames at 0.1 A/px went from
141 to 164.5 frames/s in interleaved 48-frame passes, idle (docs/tracking.md). Larger frames lose
(their network and atoms on the child's one core outlast the rest: 512^2 66 -> 53), so
:func:`engine.overlap.network_for_overlap` routes only small model grids here.

The child is ``python -m engine.infer.process`` (a fresh interpreter: no fork of a process that
runs threads, no re-import of the caller's main script), connected by a socket pair; it builds an
:class:`engine.infer.Inferencer` from the same :class:`stemwatch.config.InferenceConfig` (the same
model file and thread count as the thread it replaces: the same numbers, byte for byte) and serves
one frame at a time. Pixels go in and probabilities come out through two memory-mapped files in
``/dev/shm`` (unlinked as soon as both processes have them open: nothing is left behind after a
crash); the socket carries only small msgpack messages (no pickle, as everywhere in stemwatch). The child ignores SIGINT (Ctrl-C stops the parent,
which closes it) and ends when its pipe closes.

Lifecycle: the child is started by the first :meth:`ProcessInferencer.predict` (frames that never
need it cost nothing) and takes over once it has loaded the model (~0.5 s); until then, and whenever
it cannot start or has died, the ``fallback`` inferencer (the thread's own session) serves the
frames, so no frame waits for it (a child that fails is not tried again; one warning). It ends with
:meth:`ProcessInferencer.close` (``timeout_s``, then killed) or when the caller's end of the socket
closes.
"""

from __future__ import annotations

import logging
import mmap
import os
import select
import signal
import struct
import tempfile
import time

import numpy as np

from engine.types import Probabilities

log = logging.getLogger(__name__)

#: seconds the child may take to load the model before it is given up (the fallback serves meanwhile)
START_TIMEOUT_S = 60.0
#: seconds :meth:`ProcessInferencer.close` waits for the child before terminating it
CLOSE_TIMEOUT_S = 5.0
#: how often a waiting :meth:`ProcessInferencer.predict` checks that the child is still alive (s)
POLL_S = 0.5
#: the atoms of this many recent frames are kept for :meth:`ProcessInferencer.atoms_for` (frames run
#: ahead by the overlap: at most two wait)
KEEP_ATOMS = 4


class _Shared:
    """A memory-mapped file of ``size`` bytes in /dev/shm (else the temporary folder), created here;
    :meth:`unlink` removes its name once the child has mapped it (the mapping stays)."""

    def __init__(self, size: int):
        folder = "/dev/shm" if os.path.isdir("/dev/shm") else None
        fd, self.path = tempfile.mkstemp(prefix="stemwatch-net-", dir=folder)
        try:
            os.ftruncate(fd, size)
            self.mm = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        self.size = int(size)
        self.linked = True

    def view(self, dtype, shape) -> np.ndarray:
        n = int(np.prod(shape))
        return np.frombuffer(self.mm, dtype=dtype, count=n).reshape(shape)

    def unlink(self) -> None:
        if self.linked:
            self.linked = False
            try:
                os.unlink(self.path)
            except OSError:
                pass

    def close(self) -> None:
        self.unlink()
        try:
            self.mm.close()
        except BufferError:          # a view still exported: the mapping goes with it
            pass


def _child_map(cache: dict, role: str, path: str, size: int):
    """The child's mapping of ``path`` for ``role`` ("in" / "out"), opened once per file."""
    old = cache.get(role)
    if old is not None and old[0] == path:
        return old[1]
    with open(path, "r+b") as f:
        mm = mmap.mmap(f.fileno(), size)
    if old is not None:
        try:
            old[1].close()
        except BufferError:
            pass
    cache[role] = (path, mm)
    return mm


class _Channel:
    """Length-prefixed msgpack messages over a stream socket (a socket pair between the two processes)."""

    def __init__(self, sock):
        self.sock = sock

    def send(self, obj) -> None:
        import msgpack

        data = msgpack.packb(obj)
        self.sock.sendall(struct.pack("!I", len(data)) + data)

    def recv(self):
        import msgpack

        (n,) = struct.unpack("!I", self._exactly(4))
        return msgpack.unpackb(self._exactly(n))

    def _exactly(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise EOFError("the other end closed the socket")
            buf += chunk
        return bytes(buf)

    def poll(self, timeout_s: float) -> bool:
        """Whether a message (or the end) is waiting, within ``timeout_s``."""
        return bool(select.select([self.sock], [], [], timeout_s)[0])

    def close(self) -> None:
        self.sock.close()


def serve(conn) -> None:
    """The child's loop: the first message is the configuration's "inference" section (and, for the
    atoms too, its "chemistry" section), as :meth:`stemwatch.config.Config.to_dict` writes them; load the model, then
    answer ``["run", ...]`` messages until ``None`` or the socket closes. Every message is msgpack;
    every reply one list: ``["ok", shape, pixel_size_A, frame_shape, frame_pixel_size_A, timings,
    atoms]`` (the maps written to the "out" file; atoms: :func:`_atoms_out` when the first message
    has a "chemistry" section, else None), ``["grow", nbytes]`` (the "out" file is too small) or
    ``["error", type name, message]``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)            # Ctrl-C is the parent's to handle
    from engine.infer import Inferencer
    from stemwatch.config import Config

    try:
        sections = conn.recv()
        cfg = Config.from_dict(sections)
        chem = cfg.chemistry if "chemistry" in sections else None
        inf = Inferencer(cfg.inference)
    except Exception as exc:  # reported to the parent, which falls back
        conn.send(["error", type(exc).__name__, str(exc)])
        return
    conn.send(["ready", str(getattr(inf.backend, "model_path", "")), inf.precision])
    maps: dict = {}
    try:
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                break
            if msg is None:
                break
            _, (in_path, in_size), (out_path, out_size), shape, dtype, ps, model_ps = msg
            shape = tuple(shape)
            try:
                src = _child_map(maps, "in", in_path, in_size)
                img = np.frombuffer(src, dtype=np.dtype(dtype), count=int(np.prod(shape))).reshape(shape)
                probs = inf.predict(img, ps) if model_ps is None else inf.predict(img, ps, model_pixel_size_A=model_ps)
                p = np.ascontiguousarray(probs.p, dtype=np.float32)
                if p.nbytes > out_size:
                    conn.send(["grow", int(p.nbytes)])
                    continue
                dst = _child_map(maps, "out", out_path, out_size)
                np.frombuffer(dst, dtype=np.float32, count=p.size)[:] = p.ravel()
                timings = {k: float(v) for k, v in inf.last_timings_s.items()}
                atoms = None
                if chem is not None:                  # the frame's atoms too, as analyze_frame would find them
                    atoms, timings["atoms"] = _find_atoms(probs, chem, img)
                conn.send(["ok", list(p.shape), float(probs.pixel_size_A), [int(v) for v in probs.frame_shape],
                           float(probs.frame_pixel_size_A), timings, atoms])
            except Exception as exc:  # the frame's error, raised in the parent
                conn.send(["error", type(exc).__name__, str(exc)])
    finally:
        inf.close()


def _find_atoms(probs, chem, img) -> tuple[list, float]:
    """``(atoms message, seconds)``: :func:`engine.chem.atoms.find_atoms` of the frame, on the frame's
    own contrast maps, exactly as :func:`engine.pipeline.analyze_frame` calls it."""
    from engine.chem.atoms import contrast_maps, find_atoms

    t0 = time.perf_counter()
    atoms = find_atoms(probs, chem, img, contrast_maps(img, float(probs.frame_pixel_size_A)))
    return _atoms_out(atoms), time.perf_counter() - t0


def _atoms_out(atoms) -> list:
    """An :class:`engine.types.Atoms` as msgpack-able fields: arrays as [dtype, shape, bytes]."""
    import dataclasses

    out = []
    for f in dataclasses.fields(atoms):
        v = getattr(atoms, f.name)
        if isinstance(v, np.ndarray):
            a = np.ascontiguousarray(v)
            v = [a.dtype.str, list(a.shape), a.tobytes()]
        elif isinstance(v, tuple):
            v = [int(x) for x in v]
        out.append(v)
    return out


def _atoms_in(fields: list):
    """:func:`_atoms_out` back to an :class:`engine.types.Atoms` (writable arrays of the same types)."""
    import dataclasses

    from engine.types import Atoms

    kw = {}
    for f, v in zip(dataclasses.fields(Atoms), fields):
        if isinstance(v, list) and len(v) == 3 and isinstance(v[2], bytes):
            v = np.frombuffer(v[2], dtype=np.dtype(v[0])).reshape(tuple(v[1])).copy()
        elif f.name == "frame_shape" and v is not None:
            v = tuple(v)
        kw[f.name] = v
    return Atoms(**kw)


class NetworkProcessError(RuntimeError):
    """The network process is not available (it did not start, or it ended)."""


class ProcessInferencer:
    """``predict(image, pixel_size_A, model_pixel_size_A=None)`` run by :func:`serve` in a child
    process built from ``cfg`` (an :class:`~stemwatch.config.InferenceConfig`); ``fallback`` (an
    inferencer on the same model and thread count, owned: closed with this one) serves the frames
    while the child starts and whenever it is not available. Used from one thread at a time (the
    overlap's network thread). ``below_grid_px``: only frames whose model grid has fewer pixels go to
    the child (None: all). ``chemistry`` (a :class:`~stemwatch.config.ChemistryConfig`): the child
    also finds the frame's atoms (:func:`engine.chem.atoms.find_atoms` on the frame's contrast maps,
    the first step of :func:`engine.pipeline.analyze_frame`), handed out by :meth:`atoms_for`.
    :attr:`last_timings_s` as :class:`engine.infer.Inferencer`'s; :attr:`frames_in_process` counts the
    frames the child ran."""

    def __init__(self, cfg, fallback, below_grid_px: int | None = None, chemistry=None,
                 start_timeout_s: float = START_TIMEOUT_S):
        self.cfg = cfg
        self.fallback = fallback
        self.below_grid_px = below_grid_px
        self.chemistry = chemistry
        self._atoms: list = []                    # (probabilities, atoms) of the last frames the child ran
        self.start_timeout_s = float(start_timeout_s)
        self.last_timings_s: dict[str, float] = {}
        self._proc = None
        self._conn = None
        self._t_start = 0.0
        self._ready = False
        self._in: _Shared | None = None
        self._out: _Shared | None = None
        self._failed = False                      # the child failed once: the fallback from then on
        self.frames_in_process = 0

    # the attributes the pipeline and the overlap read from an inferencer: the fallback's (same model)
    @property
    def backend_name(self) -> str:
        return self.fallback.backend_name

    @property
    def backend(self):
        return self.fallback.backend

    @property
    def precision(self) -> str:
        return self.fallback.precision

    @property
    def model_pixel_size_A(self) -> float:
        return self.fallback.model_pixel_size_A

    @property
    def description(self) -> str:
        return f"{self.fallback.description}, in a process of its own"

    @property
    def ready(self) -> bool:
        """Whether the child has loaded the model and serves the frames."""
        return self._ready and self._proc is not None and self._proc.poll() is None

    def start(self, wait_s: float = 0.0) -> bool:
        """Start the child now (not on the first frame) and wait up to ``wait_s`` for it to load the
        model; whether it is ready. A child that fails hands over to the fallback, as in :meth:`predict`."""
        if self._failed:
            return False
        t_end = time.monotonic() + max(0.0, float(wait_s))
        try:
            if self._proc is None:
                self._start()
            while not self._check_ready():
                if time.monotonic() >= t_end:
                    return False
                self._conn.poll(min(POLL_S, max(0.0, t_end - time.monotonic())))
            return True
        except (NetworkProcessError, OSError) as exc:
            self._give_up(exc)
            return False

    def _give_up(self, exc: Exception) -> None:
        """The child failed: it is stopped and the fallback serves every frame from now on (one warning)."""
        self._failed = True
        log.warning("%s: the network runs on its thread from now on", exc)
        self._stop(0.0)

    def _start(self) -> None:
        """Start the child (not waiting for it): ``python -m engine.infer.process --fd N``, the
        package's own folder first on its path (the same ``engine`` as this process's)."""
        import socket
        import subprocess
        import sys
        from pathlib import Path

        import engine

        mine, theirs = socket.socketpair()
        root = str(Path(engine.__file__).resolve().parent.parent)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([root] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
        try:
            self._proc = subprocess.Popen([sys.executable, "-m", "engine.infer.process", "--fd", str(theirs.fileno())],
                                          pass_fds=(theirs.fileno(),), env=env, stdin=subprocess.DEVNULL)
        finally:
            theirs.close()
        self._conn = _Channel(mine)
        self._t_start = time.monotonic()
        from stemwatch.config import plain

        sections = {"inference": plain(self.cfg)}
        if self.chemistry is not None:
            sections["chemistry"] = plain(self.chemistry)
        self._conn.send(sections)

    def _check_ready(self) -> bool:
        """Whether the child is ready now (reads its "ready" message when there is one, never waits)."""
        if self._ready:
            if self._proc.poll() is not None:
                raise NetworkProcessError(f"the network process ended (exit code {self._proc.returncode})")
            return True
        if self._conn.poll(0):
            reply = self._recv()
            if reply[0] != "ready":
                raise NetworkProcessError(f"the network process did not start: {reply[1]}: {reply[2]}")
            want = str(getattr(self.fallback.backend, "model_path", ""))
            if reply[1] != want or reply[2] != self.fallback.precision:
                raise NetworkProcessError(f"the network process loaded {reply[1]} ({reply[2]}), not {want} "
                                          f"({self.fallback.precision})")
            self._ready = True
            return True
        if self._proc.poll() is not None:
            raise NetworkProcessError(f"the network process ended while starting (exit code {self._proc.returncode})")
        if time.monotonic() - self._t_start > self.start_timeout_s:
            raise NetworkProcessError(f"the network process did not load the model within {self.start_timeout_s:.0f} s")
        return False

    def _recv(self):
        try:
            return self._conn.recv()
        except (EOFError, OSError) as exc:
            raise NetworkProcessError(f"the network process ended ({exc or type(exc).__name__})") from None

    def _reply(self):
        """The child's answer to a frame; :class:`NetworkProcessError` when it ends first."""
        while not self._conn.poll(POLL_S):
            if self._proc.poll() is not None:
                raise NetworkProcessError(f"the network process ended (exit code {self._proc.returncode})")
        return self._recv()

    def _buffer(self, which: str, nbytes: int) -> _Shared:
        buf = getattr(self, which)
        if buf is None or buf.size < nbytes:
            if buf is not None:
                buf.close()
            buf = _Shared(max(int(nbytes), 4096))
            setattr(self, which, buf)
        return buf

    def predict(self, image, pixel_size_A: float, model_pixel_size_A: float | None = None) -> Probabilities:
        a = np.asarray(image)
        if a.ndim == 2 and a.dtype.kind in "iuf" and a.size > 0 and not self._failed:
            grid = self._grid(a.shape, pixel_size_A, model_pixel_size_A)
            if self.below_grid_px is None or (grid is not None and grid[0] * grid[1] < self.below_grid_px):
                try:
                    if self._proc is None:
                        self._start()
                    if self._check_ready():
                        return self._predict(a, pixel_size_A, model_pixel_size_A, grid)
                except (NetworkProcessError, OSError) as exc:
                    self._give_up(exc)
        out = (self.fallback.predict(image, pixel_size_A) if model_pixel_size_A is None else
               self.fallback.predict(image, pixel_size_A, model_pixel_size_A=model_pixel_size_A))
        self.last_timings_s = dict(getattr(self.fallback, "last_timings_s", None) or {})
        return out

    def _grid(self, shape, pixel_size_A: float, model_pixel_size_A) -> tuple[int, int] | None:
        """The model grid ``(h, w)`` of a frame of ``shape``; None for an unusable pixel size (the
        Inferencer reports that)."""
        from engine.infer.preprocess import grid_shape

        ps = float(pixel_size_A)
        if not (np.isfinite(ps) and ps > 0):
            return None
        return grid_shape(tuple(shape), ps, float(model_pixel_size_A or self.model_pixel_size_A))

    def _predict(self, a: np.ndarray, pixel_size_A: float, model_pixel_size_A, grid) -> Probabilities:
        ps = float(pixel_size_A)
        inbuf = self._buffer("_in", a.nbytes)
        inbuf.view(a.dtype, a.shape)[...] = a
        need = 3 * grid[0] * grid[1] * 4 if grid is not None else 4096      # (a bad pixel size: the error)
        for _ in range(2):
            outbuf = self._buffer("_out", need)
            self._conn.send(["run", [inbuf.path, inbuf.size], [outbuf.path, outbuf.size], list(a.shape), a.dtype.str,
                               ps, None if model_pixel_size_A is None else float(model_pixel_size_A)])
            reply = self._reply()
            inbuf.unlink()                        # both processes have the files open now
            if reply[0] == "grow":
                need = int(reply[1])
                continue
            outbuf.unlink()
            if reply[0] == "error":
                raise _exception(reply[1], reply[2])
            _, shape, grid_ps, frame_shape, frame_ps, timings, atoms = reply
            self.last_timings_s = timings
            self.frames_in_process += 1
            probs = Probabilities(p=outbuf.view(np.float32, tuple(shape)).copy(), pixel_size_A=grid_ps,
                                  frame_shape=tuple(frame_shape), frame_pixel_size_A=frame_ps)
            if atoms is not None:
                self._atoms = (self._atoms + [(probs, _atoms_in(atoms))])[-KEEP_ATOMS:]
            return probs
        raise NetworkProcessError("the network process asked twice for a larger output")

    def atoms_for(self, probs):
        """The atoms the child found with ``probs`` (the very object :meth:`predict` returned), or None
        (no chemistry configured, a frame the fallback ran, or probabilities changed since)."""
        for p, atoms in self._atoms:
            if p is probs:
                return atoms
        return None

    def _stop(self, timeout_s: float) -> None:
        if self._proc is not None:
            try:
                self._conn.send(None)
            except (OSError, ValueError):
                pass
            try:
                self._proc.wait(max(0.0, timeout_s))
            except Exception:  # subprocess.TimeoutExpired: it does not stop
                self._proc.kill()
                self._proc.wait()
            self._conn.close()
        for buf in (self._in, self._out):
            if buf is not None:
                buf.close()
        self._proc = self._conn = self._in = self._out = None
        self._ready = False

    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """End the child (``timeout_s``, then killed) and close the fallback."""
        self._stop(timeout_s)
        self.fallback.close()


def _exception(name: str, message: str) -> Exception:
    """The child's exception as the same built-in type where there is one (a frame's error reads as
    it would without the process), else a RuntimeError naming it."""
    import builtins

    cls = getattr(builtins, name, None)
    if isinstance(cls, type) and issubclass(cls, Exception):
        try:
            return cls(message)
        except Exception:
            pass
    return RuntimeError(f"{name}: {message}")


def main(argv=None) -> int:
    """``python -m engine.infer.process --fd N``: the child's entry point (:class:`ProcessInferencer`
    starts it; not for use by hand)."""
    import argparse
    import socket

    ap = argparse.ArgumentParser(prog="python -m engine.infer.process", description=main.__doc__)
    ap.add_argument("--fd", type=int, required=True, help="the socket to the parent (inherited)")
    args = ap.parse_args(argv)
    conn = _Channel(socket.socket(fileno=args.fd))
    try:
        serve(conn)
    finally:
        conn.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
