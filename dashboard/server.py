"""``DashboardServer``: the Bokeh server for the operator screen, on its own thread and event loop.

Usage (what ``stemwatch serve`` and ``stemwatch demo`` do)::

    dash = DashboardServer(cfg.dashboard, controller=service)   # service: engine.service.LiveService
    url = dash.start()                                          # prints nothing; returns the URL
    ...                                                         # service calls dash.publish(result, status)
    dash.stop()

Threads: ``start()`` launches one daemon thread that owns a fresh asyncio loop + tornado IOLoop,
the HTTP/websocket server, and every tab's document. The analysis thread only ever calls
:meth:`publish`, which appends a reference to a bounded deque (O(1), never waits for a browser).
Controller calls made from the page (pause, record, thresholds) run on a single worker thread,
so neither the event loop nor the analysis waits on the other.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from dashboard.state import DashboardHub
from engine.types import FrameResult
from stemwatch.config import DashboardConfig

log = logging.getLogger(__name__)


def websocket_origins(address: str, port: int, extra: tuple | list = ()) -> list[str]:
    """Origins allowed to open the websocket: this host by its usual local names, plus ``extra``
    (``host`` or ``host:port``; a bare host means port 80, ``*`` allows any)."""
    from bokeh.server.util import create_hosts_allowlist

    hosts = [f"localhost:{port}", f"127.0.0.1:{port}"]
    if address and address not in ("localhost", "127.0.0.1", "0.0.0.0", "::", ""):
        hosts.append(f"{address}:{port}")
    hosts.extend(str(h) for h in extra)
    return create_hosts_allowlist(hosts, port)


def _restrict_hosts(tornado_app, allowed: list[str]) -> None:
    """Answer 403 to any request (page, websocket) whose ``Host`` header is not an allowed origin.

    Tornado >= 6.6 accepts a websocket whose Origin equals its Host (same origin) before asking
    Bokeh's origin list; so, without this, a dashboard listening on 0.0.0.0 is usable from any
    computer without ``--allow-origin``, and a localhost dashboard is open to DNS rebinding (a web
    page whose name resolves to 127.0.0.1 is same-origin with itself)."""
    import tornado.web
    from bokeh.server.util import check_allowlist

    class HostNotAllowed(tornado.web.RequestHandler):
        def prepare(self):
            self.set_status(403)
            self.finish(f"host {self.request.host!r} is not allowed: open the dashboard with "
                        f"--allow-origin {self.request.host}")

    find = tornado_app.find_handler

    def find_handler(request, **kwargs):
        if not check_allowlist(request.host.lower(), allowed):
            return tornado_app.get_handler_delegate(request, HostNotAllowed)
        return find(request, **kwargs)

    tornado_app.find_handler = find_handler


class DashboardServer:
    """The operator screen (a Bokeh server app) fed by :meth:`publish`.

    cfg : :class:`stemwatch.config.DashboardConfig` (port 0 picks a free port; address
        ``127.0.0.1`` by default; ``allow_origins`` extra websocket origins).
    controller : the live service (``set_paused``, ``start_take`` (Record: a new file in its
        recordings folder), ``stop_recording``, ``update_config``, ``status``, ``add_listener``) or
        None (controls disabled). When it has ``add_listener``, :meth:`start` subscribes :meth:`publish` to it.
    status_poll_s : how often the controller's ``status()`` is polled (off the event loop) so that
        the status panel stays current when no frame arrives (a stall).
    """

    def __init__(self, cfg: DashboardConfig | None = None, controller: Any = None, status_poll_s: float = 1.0):
        self.cfg = cfg or DashboardConfig()
        self.controller = controller
        self.hub = DashboardHub(self.cfg)
        self.status_poll_s = float(status_poll_s)
        self.sessions: set = set()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop = None
        self._server = None
        self._port: int | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._subscribed = False
        self._poll_pending = False

    # ------------------------------------------------------------------ API
    def publish(self, result: FrameResult, status: dict | None = None) -> None:
        """Hand a result to the screen. Called from the analysis thread; O(1), never blocks."""
        self.hub.publish(result, status)

    @property
    def port(self) -> int | None:
        return self._port

    @property
    def url(self) -> str | None:
        if self._port is None:
            return None
        host = self.cfg.address
        if host in ("0.0.0.0", "::", ""):
            host = "localhost"
        return f"http://{host}:{self._port}/"

    def start(self, timeout_s: float = 20.0) -> str:
        """Start the server thread; returns the URL once it accepts connections."""
        if self._thread is not None:
            raise RuntimeError("DashboardServer already started")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dashboard-control")
        self._thread = threading.Thread(target=self._run, name="dashboard-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise RuntimeError(f"dashboard server did not start within {timeout_s} s")
        if self._error is not None:
            self._thread.join(5)
            self._thread = None
            raise RuntimeError(f"dashboard server failed to start on {self.cfg.address}:{self.cfg.port}: "
                               f"{self._error}") from self._error
        if self.controller is not None and hasattr(self.controller, "add_listener") and not self._subscribed:
            self.controller.add_listener(self.publish)
            self._subscribed = True
        return self.url  # type: ignore[return-value]

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the server and its thread (idempotent). Open tabs lose their connection."""
        if self._subscribed and hasattr(self.controller, "remove_listener"):
            try:
                self.controller.remove_listener(self.publish)
            except Exception:  # pragma: no cover - the service may be gone already
                pass
        self._subscribed = False
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            loop.add_callback(self._shutdown)
            thread.join(timeout_s)
        self._thread = None
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def __enter__(self) -> "DashboardServer":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def call_soon(self, fn, *args) -> None:
        """Run ``fn(*args)`` on the server's event loop (thread-safe); for tests and tools."""
        if self._loop is None:
            raise RuntimeError("DashboardServer not started")
        self._loop.add_callback(fn, *args)

    # ------------------------------------------------------------------ server thread
    def _run(self) -> None:
        from bokeh.application import Application
        from bokeh.application.handlers.function import FunctionHandler
        from bokeh.server.server import BaseServer
        from bokeh.server.tornado import BokehTornado
        from bokeh.server.util import bind_sockets
        from tornado.httpserver import HTTPServer
        from tornado.ioloop import IOLoop, PeriodicCallback

        from dashboard.app import make_document

        aio = asyncio.new_event_loop()
        asyncio.set_event_loop(aio)
        try:
            self._loop = IOLoop.current()
            sockets, port = bind_sockets(self.cfg.address, self.cfg.port)
            self._port = port
            host = "localhost" if self.cfg.address in ("0.0.0.0", "::", "") else self.cfg.address

            def modify(doc) -> None:
                make_document(doc, self.hub, self.controller, self._executor, self.sessions)

            app = Application(FunctionHandler(modify))
            origins = websocket_origins(self.cfg.address, port, self.cfg.allow_origins)
            tornado_app = BokehTornado(
                {"/": app}, extra_websocket_origins=origins,
                absolute_url=f"http://{host}:{port}",
                websocket_max_message_size_bytes=4 * max(self.cfg.max_update_bytes, 1 << 20),
                keep_alive_milliseconds=10_000, check_unused_sessions_milliseconds=2_000,
                unused_session_lifetime_milliseconds=10_000)
            _restrict_hosts(tornado_app, origins)
            http = HTTPServer(tornado_app, xheaders=False)
            http.add_sockets(sockets)
            self._server = BaseServer(self._loop, tornado_app, http)
            self._server.start()
            self._drain_cb = PeriodicCallback(self._drain, 1000 * min(0.04, self.cfg.display_period_s))
            self._drain_cb.start()
            if self.controller is not None and hasattr(self.controller, "status") and self.status_poll_s > 0:
                self._poll_cb = PeriodicCallback(self._poll_status, 1000 * self.status_poll_s)
                self._poll_cb.start()
        except BaseException as exc:  # report to start()
            self._error = exc
            self._ready.set()
            aio.close()
            return
        self._ready.set()
        try:
            self._loop.start()
        finally:
            try:
                aio.run_until_complete(asyncio.sleep(0))
            except Exception:  # pragma: no cover
                pass
            aio.close()

    def _drain(self) -> None:
        try:
            self.hub.drain()
        except Exception:  # a malformed result must not kill the display loop
            log.exception("dashboard: could not convert a result for display")

    def _poll_status(self) -> None:
        if self._poll_pending or self._executor is None:
            return
        self._poll_pending = True
        t0 = time.time()

        def done(fut) -> None:
            self._poll_pending = False
            if fut.exception() is None and isinstance(fut.result(), dict):
                # only take the polled status when no fresher one came with a frame meanwhile
                _, t_status = self.hub.status()
                if t_status < t0:
                    self.hub.set_status(fut.result())

        try:
            self._executor.submit(self.controller.status).add_done_callback(done)
        except RuntimeError:  # executor shut down
            self._poll_pending = False

    def _shutdown(self) -> None:
        try:
            for cb in ("_drain_cb", "_poll_cb"):
                if hasattr(self, cb):
                    getattr(self, cb).stop()
            if self._server is not None:
                self._server.stop()
                self._server.unlisten()
        finally:
            self._loop.stop()
