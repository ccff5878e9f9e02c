"""Benchmark and screenshot of the session report (``stemwatch report``).

    python -m lab.report_bench --frames 1000 --size 512 --work /tmp/rb     # simulate, analyse, time the report
    python -m lab.report_bench --frames 150 --size 256 --work /tmp/rs --screenshot docs/report.png

A simulated session (Si dopants switching 3 <-> 4-fold at known cross-sections, as in
:mod:`lab.dose_rates`; instrument metadata in the stream's start message) is written as a recording,
analysed with ``stemwatch analyze`` (not timed), and its report built with
:func:`dashboard.report.build_report`, timed: the issue's target is <= 30 s for 1,000 frames of 512^2
on 2 cores, and an HTML <= 25 MB. ``--screenshot`` opens the report in headless Chromium (Debian
``chromium`` + ``chromedriver``, selenium) and saves the top of the page.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

TARGET_S = 30.0
TARGET_MB = 25.0


def make_session(path: Path, n_frames: int, size: int, seed: int = 9200) -> Path:
    """A recording of a simulated session with dose-driven switching (and its truth beside it)."""
    import dataclasses

    from engine.sim.movie import MovieSimulator
    from engine.sim.truth import save_truth
    from lab.dose_rates import movie_spec
    from streamer.protocol import encode_end, encode_frame, encode_start
    from streamer.recording import RecordingWriter

    spec = movie_spec(seed, n_frames)
    if size != 256:
        spec = dataclasses.replace(spec, shape_px=(size, size), dopants=("si3", "si4", "si3", "si4", "si3", "si4"))
    sim = MovieSimulator(spec)
    dose = float(sim.imaging.dose_e_per_A2)
    h, w = spec.shape_px
    dwell = spec.frame_time_s / (h * w)
    meta = {"source": "lab.report_bench (simulated)", "instrument": "simulated aberration-corrected STEM",
            "high_tension_V": 60000, "detector": "HAADF", "dose_e_per_A2": dose,
            "beam_current_pA": round(dose * 1.602176634e-19 * spec.pixel_size_A ** 2 / dwell * 1e12, 3),
            "truth": path.name.replace(".swrec", ".truth.npz")}
    path.parent.mkdir(parents=True, exist_ok=True)
    series = f"report-bench-{seed}"
    t0 = 1.7e9
    with RecordingWriter(path) as wr:
        wr.write(encode_start(series, (h, w), "uint16", spec.pixel_size_A, dwell, spec.frame_time_s, meta), t0)
        n = 0
        for img, _truth in sim.frames(keep=True):
            t = t0 + n * spec.frame_time_s
            wr.write(encode_frame(series, n, t, img, spec.pixel_size_A), t)
            n += 1
        wr.write(encode_end(series, n), t0 + n * spec.frame_time_s)
    save_truth(sim.ground_truth(), path)
    return path


def screenshot(html: Path, png: Path, width: int = 1180, height: int = 1500, scroll_px: int = 0) -> None:
    import shutil
    import tempfile

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chrome = shutil.which("chromium") or "/usr/bin/chromium"
    driver = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    prof = tempfile.mkdtemp(prefix="stemwatch-report-shot-")
    o = webdriver.ChromeOptions()
    o.binary_location = chrome
    for f in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", f"--user-data-dir={prof}",
              f"--window-size={width},{height}"):
        o.add_argument(f)
    drv = webdriver.Chrome(service=Service(driver), options=o)
    try:
        drv.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        drv.get(html.resolve().as_uri())
        deadline = time.time() + 60
        while time.time() < deadline:
            if drv.execute_script("return document.querySelectorAll('.bk-Column, .bk-Figure').length > 0 && "
                                  "window.Bokeh && Bokeh.documents.length > 0"):
                break
            time.sleep(0.5)
        time.sleep(3.0)                                   # let every canvas paint
        if scroll_px:
            drv.execute_script(f"window.scrollTo(0, {int(scroll_px)});")
            time.sleep(1.0)
        png.parent.mkdir(parents=True, exist_ok=True)
        drv.save_screenshot(str(png))
    finally:
        drv.quit()
        shutil.rmtree(prof, ignore_errors=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m lab.report_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=1000)
    p.add_argument("--size", type=int, default=512, help="frame size in px (square)")
    p.add_argument("--work", default="bench_results/report_bench", help="working folder")
    p.add_argument("--screenshot", metavar="PNG", default=None)
    p.add_argument("--shot-size", type=int, nargs=2, default=(1180, 1500), metavar=("W", "H"),
                   help="screenshot viewport in px (default 1180 1500)")
    p.add_argument("--scroll-px", type=int, default=0, help="scroll the page down this far before the screenshot")
    p.add_argument("--reuse", action="store_true", help="reuse an existing analysis in --work")
    a = p.parse_args(argv)
    from dashboard.report import build_report
    from engine.analyze import analyze_file

    work = Path(a.work)
    rec = work / f"session_{a.frames}x{a.size}.swrec"
    out = work / f"session_{a.frames}x{a.size}.analysis"
    if not (a.reuse and (out / "summary.json").exists()):
        t = time.time()
        make_session(rec, a.frames, a.size)
        print(f"simulated {a.frames} frames of {a.size}^2 in {time.time() - t:.0f} s", file=sys.stderr)
        t = time.time()
        analyze_file(rec, out, progress=True)
        print(f"analysed in {time.time() - t:.0f} s", file=sys.stderr)
    t = time.time()
    cpu = time.process_time()
    html = build_report(out, out / "report.html")
    wall, cpu = time.time() - t, time.process_time() - cpu
    mb = html.stat().st_size / 1e6
    res = {"frames": a.frames, "size_px": a.size, "report_s": round(wall, 2), "report_cpu_s": round(cpu, 2),
           "html_MB": round(mb, 2), "target_s": TARGET_S, "target_MB": TARGET_MB,
           "events": sum(1 for _ in open(out / "events.jsonl")),
           "transitions": json.loads((out / "stats.json").read_text())["transitions"].__len__()}
    print(json.dumps(res))
    if a.screenshot:
        screenshot(html, Path(a.screenshot), *a.shot_size, scroll_px=a.scroll_px)
        print(f"wrote {a.screenshot}", file=sys.stderr)
    return 0 if wall <= TARGET_S and mb <= TARGET_MB else 1


if __name__ == "__main__":
    sys.exit(main())
