"""Screenshot of the dashboard during a transformation (what docs/dashboard.png shows).

Replays a recording (simulated data only: replay_data/) through the live service into the
dashboard, opens it in headless Chromium, waits until the page alerts on an event of ``--kind``
and saves a screenshot ``--delay-s`` later, with the live view showing the ringed dopant::

    python -m lab.dashboard.screenshot --source replay_data/02_field_512.swrec --kind si_3_to_4 \\
        --out docs/dashboard.png

Needs Debian ``chromium`` + ``chromedriver`` and selenium.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time

from lab.net import free_tcp_port


def take(source: str, out: str, kind: str = "si_3_to_4", delay_s: float = 0.3, width: int = 1640,
         height: int = 880, timeout_s: float = 120.0) -> dict:
    """Run the chain and save the screenshot; returns what was shown (event, frame, alert time)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from dashboard.server import DashboardServer
    from engine.service import LiveService
    from stemwatch.config import Config
    from streamer.replay import replay

    cfg = Config().replace(dashboard={"port": 0})
    endpoint = f"tcp://127.0.0.1:{free_tcp_port()}"
    service = LiveService(cfg, endpoint=endpoint)
    dash = DashboardServer(cfg.dashboard, controller=service)
    url = dash.start()
    service.start()
    stop = threading.Event()
    profile = tempfile.mkdtemp(prefix="stemwatch-shot-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
                 f"--window-size={width},{height}", "--hide-scrollbars"):
        opts.add_argument(flag)
    drv = webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"), options=opts)
    th = None
    try:
        drv.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        drv.get(url)
        time.sleep(1.5)
        th = threading.Thread(target=replay, args=(source, endpoint), daemon=True,
                              kwargs={"speed": 1.0, "loops": 1, "stop": stop})
        th.start()
        from dashboard.render import event_label

        probe = ("const out = []; const walk = (r) => { out.push(...r.querySelectorAll('.banner'));"
                 "for (const e of r.querySelectorAll('*')) { if (e.shadowRoot) { walk(e.shadowRoot); } } };"
                 "walk(document); return out.map(e => e.textContent).join(' ');")
        t0 = time.time()
        while time.time() - t0 < timeout_s:             # until the page alerts on that kind
            time.sleep(0.03)
            if event_label(kind) in drv.execute_script(probe):
                break
        else:
            seen = [(r.event.frame, r.event.kind) for r in dash.hub.events]
            raise RuntimeError(f"no {kind} alert on the page within {timeout_s} s of {source} "
                               f"(events seen: {seen}; banner: {drv.execute_script(probe)!r})")
        row = next(r for r in reversed(dash.hub.events) if r.event.kind == kind)
        time.sleep(delay_s)
        drv.save_screenshot(out)
        return {"event": row.event.to_dict(), "url": url}
    finally:
        stop.set()
        drv.quit()
        service.stop()
        dash.stop()
        if th is not None:
            th.join(10)
        shutil.rmtree(profile, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lab.dashboard.screenshot", description=__doc__.split("\n\n")[0])
    p.add_argument("--source", default="replay_data/02_field_512.swrec", help="recording (simulated data only)")
    p.add_argument("--kind", default="si_3_to_4", help="event kind to wait for (default %(default)s)")
    p.add_argument("--delay-s", type=float, default=0.3, help="seconds after the event (default %(default)s)")
    p.add_argument("--out", default="docs/dashboard.png")
    p.add_argument("--width", type=int, default=1920, help="window width, px (default %(default)s)")
    p.add_argument("--height", type=int, default=1080, help="window height, px (default %(default)s)")
    args = p.parse_args(argv)
    info = take(args.source, args.out, args.kind, args.delay_s, width=args.width, height=args.height)
    e = info["event"]
    print(f"saved {args.out}: {e['kind']} track {e['atom_id']} on frame {e['frame']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
