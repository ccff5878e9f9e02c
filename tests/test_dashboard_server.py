"""The Bokeh server on its own thread: HTTP, websocket origins, several tabs, stalled clients."""

import threading
import time
import urllib.request

import pytest
from bokeh.client import pull_session

from _dashboard_data import Lattice
from _wait import wait_until
from _ws import ws_status
from dashboard.server import DashboardServer, websocket_origins
from stemwatch.config import DashboardConfig


def test_serves_the_page_and_checks_websocket_origins():
    with DashboardServer(DashboardConfig(port=0, allow_origins=("operator-pc.lab:8080",))) as dash:
        assert dash.url == f"http://127.0.0.1:{dash.port}/" and dash.port > 0
        page = urllib.request.urlopen(dash.url, timeout=120).read().decode()
        assert "bokeh" in page.lower() and "stemwatch" in page
        assert ws_status("127.0.0.1", dash.port, "http://evil.example") == 403
        assert ws_status("127.0.0.1", dash.port, "http://operator-pc.lab:8080") == 101
        assert ws_status("127.0.0.1", dash.port, f"http://localhost:{dash.port}") == 101


def test_origins_default_to_local_names_and_reject_bad_values():
    assert websocket_origins("127.0.0.1", 5006) == ["localhost:5006", "127.0.0.1:5006"]
    assert "10.1.2.3:5006" in websocket_origins("10.1.2.3", 5006)
    assert "scope.lab:80" in websocket_origins("0.0.0.0", 5006, ("scope.lab",))
    with pytest.raises(ValueError):
        websocket_origins("127.0.0.1", 5006, ("a:b:c",))


def test_port_in_use_gives_a_clear_error():
    with DashboardServer(DashboardConfig(port=0)) as first:
        with pytest.raises(RuntimeError, match=f"{first.port}"):
            DashboardServer(DashboardConfig(port=first.port)).start()


def test_stalled_tabs_and_a_blocked_event_loop_never_slow_publish():
    """Two tabs that never read (a frozen browser) and a 1 s stall of the server's event loop:
    publish() keeps returning at once, every result is taken, and the frozen tabs are not flooded."""
    cfg = DashboardConfig(port=0, ack_timeout_s=0.5)
    lat = Lattice(shape=(256, 256), n_si=2)
    results = [lat.result(i) for i in range(20)]
    with DashboardServer(cfg) as dash:
        tabs = [pull_session(url=dash.url), pull_session(url=dash.url)]   # then never read again
        try:
            assert len(dash.sessions) == 2
            durations = []
            blocked = threading.Event()

            block_span = []

            def block_loop():
                block_span.append(time.monotonic())
                blocked.set()
                time.sleep(1.0)
                block_span.append(time.monotonic())

            def feed():
                for i in range(150):
                    if i == 40:
                        dash.call_soon(block_loop)
                        blocked.wait(60)                    # publish on while the loop is blocked
                    dash.publish(results[i % 20], {"i": i})
                    durations.append(time.monotonic())      # when this publish returned
                    time.sleep(0.01)

            t0 = time.time()
            th = threading.Thread(target=feed)
            th.start()
            th.join()
            assert blocked.is_set()
            assert dash.hub.published == 150
            # the server's loop takes every result (drained on its own clock: waited for, not slept for)
            assert wait_until(lambda: len(block_span) == 2 and dash.hub.next_idx + dash.hub.coalesced == 150)
            # publish() never waits for the event loop: calls returned while the loop was blocked
            # (an ordering check, not a wall-clock threshold)
            assert any(block_span[0] < t < block_span[1] for t in durations)
            assert wait_until(lambda: all(tab.pushes >= 1 for tab in dash.sessions))
            elapsed = time.time() - t0
            for tab in dash.sessions:                     # no acknowledgement: about one push per timeout
                assert 1 <= tab.pushes <= 2 + elapsed / cfg.ack_timeout_s
        finally:
            for s in tabs:
                s.close()


def test_stop_is_idempotent_and_frees_the_port():
    dash = DashboardServer(DashboardConfig(port=0))
    dash.start()
    port = dash.port
    dash.stop()
    dash.stop()
    again = DashboardServer(DashboardConfig(port=port))
    assert again.start().endswith(f":{port}/")
    again.stop()


def test_command_line_options_map_to_the_config():
    import argparse

    from dashboard.cli import add_dashboard_arguments, dashboard_config
    from stemwatch.config import Config

    p = argparse.ArgumentParser()
    add_dashboard_arguments(p)
    args = p.parse_args(["--port", "0", "--address", "0.0.0.0", "--allow-origin", "scope.lab:5006",
                         "--allow-origin", "ops.lab", "--history", "50", "--max-display-fps", "4"])
    d = dashboard_config(Config(), args).dashboard
    assert (d.port, d.address, d.history_frames) == (0, "0.0.0.0", 50)
    assert d.allow_origins == ("scope.lab:5006", "ops.lab") and d.display_period_s == 0.25
    default = dashboard_config(Config(), p.parse_args([])).dashboard
    assert default == Config().dashboard
