"""The soak's headless Chromium showing the dashboard (selenium), with the pids to kill it mid-run.
Split out of :mod:`lab.soak` (which re-exports :class:`Browser`)."""

from __future__ import annotations

import os
import shutil
import tempfile

class Browser:
    """Headless Chromium (Debian ``chromium`` + ``chromedriver``, selenium) showing ``url``."""

    def __init__(self, url: str):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        chrome = shutil.which("chromium") or shutil.which("chromium-browser")
        driver = shutil.which("chromedriver") or next(
            (p for p in ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver") if os.path.exists(p)), None)
        if not (chrome and driver):
            raise RuntimeError("chromium and chromedriver are needed for the browser (apt-get install chromium "
                               "chromium-driver)")
        self.profile = tempfile.mkdtemp(prefix="stemwatch-soak-chromium-")
        opts = webdriver.ChromeOptions()
        opts.binary_location = chrome
        for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                     f"--user-data-dir={self.profile}", "--window-size=1640,1000"):
            opts.add_argument(flag)
        self.driver = webdriver.Chrome(service=Service(driver), options=opts)
        self.driver.set_script_timeout(10)
        self.driver.get(url)

    def wait_ready(self, timeout_s: float = 120.0) -> bool:
        """Wait until the page's Bokeh document exists (Chromium's first start and the page's scripts
        can take many seconds on a cold or busy machine); True when it does."""
        import time

        t_end = time.monotonic() + timeout_s
        while time.monotonic() < t_end:
            try:
                if self.driver.execute_script("return !!(window.Bokeh && Bokeh.documents && Bokeh.documents.length)"):
                    return True
            except Exception:
                pass
            time.sleep(0.2)
        return False

    def shown_seq(self) -> tuple[int, int] | None:
        """(display index, seq) of the frame the page shows now (the index grows with every frame the
        dashboard took), or None before the first one."""
        try:
            r = self.driver.execute_script(
                "const d = Bokeh.documents[0]; if (!d) return null;"
                "const m = [...(d.all_models || d._all_models.values())].find(m => m.name === 'frame_meta');"
                "if (!m || !m.data.seq || !m.data.seq.length) return null;"
                "return [Number(m.data.idx[0]), Number(m.data.seq[0])];")
        except Exception:
            return None
        return None if r is None or r[0] < 0 else (int(r[0]), int(r[1]))

    def pids(self) -> list[int]:
        """Process ids of the browser (children of chromedriver)."""
        root = self.driver.service.process.pid
        kids, frontier = [], [root]
        ppid = {}
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    with open(f"/proc/{d}/stat") as fh:
                        ppid[int(d)] = int(fh.read().rsplit(")", 1)[1].split()[1])
                except (OSError, ValueError, IndexError):
                    pass
        while frontier:
            p = frontier.pop()
            for c, pp in ppid.items():
                if pp == p:
                    kids.append(c)
                    frontier.append(c)
        return kids

    def close(self) -> None:
        try:
            self.driver.quit()
        except Exception:
            pass
        shutil.rmtree(self.profile, ignore_errors=True)
