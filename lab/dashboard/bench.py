"""``bench_dashboard``: what the operator screen costs and how fast it shows things.

Measured (all on this machine, printed as one table):

* ``convert``: turning one FrameResult into the display record (uint8 binning + atom columns),
  done on the dashboard thread, per frame size / atom count;
* ``update bytes``: the largest single websocket message and the whole frame update;
* ``publish``: the analysis thread's cost of :meth:`DashboardServer.publish` (p50 / p99);
* with a headless Chromium when available: frames/s the browser acknowledged, latency from
  publish to the browser's acknowledgement (p50 / p99), and alert latency (publish of an event ->
  banner text in the page);
* the analysis-side slowdown: a CPU-bound numpy loop's rate alone vs with the dashboard and a
  browser consuming 20 frames/s.

Run: ``python -m lab.dashboard.bench [--quick]`` (or ``stemwatch bench dashboard`` once registered).
The test lattice comes from tests/_dashboard_data.py (plain data, no engine needed).
"""

from __future__ import annotations

import os
import sys
import threading
import time

import numpy as np


def _lattice_module():
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path.insert(0, os.path.join(here, "tests"))
    import _dashboard_data  # noqa: E402

    return _dashboard_data


def _message_sizes(result) -> tuple[int, int]:
    from bokeh.document import Document
    from bokeh.protocol import Protocol

    from dashboard.app import make_document
    from dashboard.state import DashboardHub

    hub = DashboardHub()
    doc = Document()
    tab = make_document(doc, hub)
    events = []
    doc.on_change(events.append)
    hub.publish(result)
    hub.drain()
    events.clear()
    tab._fast_tick()
    sizes = []
    for e in events:
        m = Protocol().create("PATCH-DOC", [e])
        sizes.append(len(m.header_json) + len(m.metadata_json) + len(m.content_json)
                     + sum(len(b.to_bytes()) for b in m.buffers))
    return max(sizes), sum(sizes)


def _cpu_loop(stop: threading.Event, counter: list) -> None:
    a = np.random.default_rng(0).normal(size=(256, 256)).astype(np.float32)
    while not stop.is_set():
        np.fft.irfft2(np.fft.rfft2(a))
        counter[0] += 1


def _rate(seconds: float) -> float:
    stop, counter = threading.Event(), [0]
    th = threading.Thread(target=_cpu_loop, args=(stop, counter))
    th.start()
    time.sleep(seconds)
    stop.set()
    th.join()
    return counter[0] / seconds


def bench_dashboard(quick: bool = False):
    from stemwatch.bench import BenchReport

    from dashboard.render import display_frame

    data = _lattice_module()
    rows = []
    sizes = [(256, 0.1), (512, 0.1), (1024, 0.1)] + ([] if quick else [(2048, 0.1)])
    for side, p in sizes:
        lat = data.Lattice(shape=(side, side), pixel_size_A=p, n_si=5)
        res = lat.result(1, events=[lat.switch(0, 1)])
        reps = 5 if quick else 20
        t = []
        for i in range(reps):
            t0 = time.perf_counter()
            df = display_frame(res, i)
            t.append(time.perf_counter() - t0)
        biggest, total = _message_sizes(res)
        rows.append({"case": f"{side}x{side} px, {len(lat.xy_A)} atoms", "convert ms": 1000 * float(np.median(t)),
                     "binned": f"x{df.bin_factor}", "largest msg kB": biggest / 1000, "frame update kB": total / 1000})
        print(f"[dashboard] converted {side}x{side}", file=sys.stderr)
    notes = {}
    live = _browser_run(data, seconds=4.0 if quick else 10.0)
    if live is not None:
        rows.append({"case": "browser, 512x512 fed at 20 Hz", **live["row"]})
        notes.update(live["notes"])
    else:
        notes["browser"] = "chromium/chromedriver not found: browser rows skipped"
    return BenchReport("dashboard", ["case", "convert ms", "binned", "largest msg kB", "frame update kB",
                                     "display fps", "publish->shown p50 ms", "publish->shown p99 ms"],
                       rows, notes=notes,
                       targets={"every update message < 1 MB": "PASS" if all(
                           r.get("largest msg kB", 0) < 1000 for r in rows) else "FAIL"})


def _browser_run(data, seconds: float):
    import shutil
    import tempfile

    chrome = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
    driver_path = shutil.which("chromedriver")
    if not (chrome and driver_path):
        return None
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from dashboard.server import DashboardServer
    from stemwatch.config import DashboardConfig

    lat = data.Lattice(shape=(512, 512), pixel_size_A=0.1, n_si=5)
    frames = [lat.result(i) for i in range(20)]
    base_rate = _rate(2.0)
    dash = DashboardServer(DashboardConfig(port=0))
    url = dash.start()
    opts = webdriver.ChromeOptions()
    opts.binary_location = chrome
    profile = tempfile.mkdtemp()
    for f in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
              "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
              "--window-size=1640,1000"):
        opts.add_argument(f)
    drv = webdriver.Chrome(service=Service(driver_path), options=opts)
    publish_s, stop = [], threading.Event()
    shown_latency = []
    t_pub: dict[int, float] = {}
    try:

        def feed():
            seq = 100
            while not stop.is_set():
                r = frames[seq % 20]
                r.seq = seq
                t0 = time.perf_counter()
                t_pub[seq] = time.time()
                dash.publish(r)
                publish_s.append(time.perf_counter() - t0)
                seq += 1
                time.sleep(0.05)

        th = threading.Thread(target=feed)
        th.start()
        server_only_rate = _rate(2.0)          # dashboard fed at 20 Hz, no tab open
        drv.get(url)
        time.sleep(2.0)
        stop_cpu, counter = threading.Event(), [0]
        cpu = threading.Thread(target=_cpu_loop, args=(stop_cpu, counter))
        time.sleep(1.0)
        tab = next(t for t in dash.sessions if t.pushes > 0)
        n0 = len(tab.ack_times)
        cpu.start()
        t0 = time.time()
        seen = set()
        while time.time() - t0 < seconds:
            time.sleep(0.2)
            shown = tab.shown
            if shown is not None and shown.seq not in seen and tab.acked_idx == shown.idx and shown.seq in t_pub:
                seen.add(shown.seq)
                shown_latency.append(tab.ack_times[-1] - t_pub[shown.seq])
        elapsed = time.time() - t0
        stop_cpu.set()
        cpu.join()
        loaded_rate = counter[0] / elapsed
        fps = (len(tab.ack_times) - n0) / (elapsed + 1.0)
        stop.set()
        th.join()
        # alert latency: publish an event, wait for the banner text in the page
        ev = lat.switch(1, 10_000)
        res = lat.result(10_000, events=[ev])
        t_ev = time.time()
        dash.publish(res)
        probe = ("const out=[]; const deep=(r)=>{out.push(...r.querySelectorAll('.banner'));"
                 "for (const e of r.querySelectorAll('*')) if (e.shadowRoot) deep(e.shadowRoot);}; deep(document);"
                 "return out.map(e=>e.textContent).join(' ');")
        alert_s = None
        while time.time() - t_ev < 5:
            if "frame 10000" in drv.execute_script(probe):
                alert_s = time.time() - t_ev
                break
            time.sleep(0.02)
    finally:
        stop.set()
        drv.quit()
        dash.stop()
        shutil.rmtree(profile, ignore_errors=True)
    lat_ms = 1000 * np.asarray(shown_latency) if shown_latency else np.array([np.nan])
    return {"row": {"display fps": fps, "publish->shown p50 ms": float(np.percentile(lat_ms, 50)),
                    "publish->shown p99 ms": float(np.percentile(lat_ms, 99))},
            "notes": {"publish() p50/p99 us": f"{1e6 * np.percentile(publish_s, 50):.1f} / "
                                              f"{1e6 * np.percentile(publish_s, 99):.1f}",
                      "alert publish->banner s": f"{alert_s:.2f}" if alert_s is not None else "not seen in 5 s",
                      "analysis-side CPU loop (FFT 256^2) alone / dashboard fed at 20 Hz, no tab / + Chromium tab":
                          f"{base_rate:.0f}/s / {server_only_rate:.0f}/s / {loaded_rate:.0f}/s "
                          f"(-{100 * (1 - server_only_rate / base_rate):.0f} % / -{100 * (1 - loaded_rate / base_rate):.0f} %;"
                          f" {os.cpu_count()} cores shared with the browser)"}}


if __name__ == "__main__":
    from stemwatch.bench import format_table

    print(format_table(bench_dashboard(quick="--quick" in sys.argv)))
