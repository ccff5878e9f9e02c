"""`stemwatch demo` (what `make demo` runs) in a process of its own: simulator -> analyzer -> dashboard.

(In its own file, apart from tests/test_dashboard_e2e.py's browser tests, so that ``make test``'s
workers can run the two at the same time: a test file stays on one worker.)
"""

import time

from lab.net import free_tcp_port


def test_demo_command_serves_the_dashboard_and_analyses():
    """`stemwatch demo` (what `make demo` runs): simulator -> analyzer -> dashboard; Ctrl-C stops it,
    its simulator process with it, and frees the data port (SIGTERM: tests/test_operator_faults.py)."""
    import re
    import signal
    import subprocess
    import sys
    import urllib.request

    from _procs import assert_stopped_and_port_free, children as _children, kill_all

    data_port = free_tcp_port()
    cmd = [sys.executable, "-m", "stemwatch", "demo", "--source", "simulate", "--port", "0", "--no-browser",
           "--data-endpoint", f"tcp://127.0.0.1:{data_port}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    err_lines, kids = [], []
    try:
        line = proc.stdout.readline()
        m = re.search(r"stemwatch dashboard: (http://127\.0\.0\.1:\d+/)", line)
        assert m, f"no URL printed: {line!r}"
        page = urllib.request.urlopen(m.group(1), timeout=120).read().decode()
        assert "stemwatch" in page
        t0 = time.time()
        for line in proc.stderr:                 # the chain works once a frame was analysed
            err_lines.append(line)
            if "first frame analysed" in line or time.time() - t0 > 300:     # a hang guard
                break
        assert "first frame analysed" in err_lines[-1], "".join(err_lines)
        kids = _children(proc.pid)               # the simulated microscope's process
        assert kids
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)          # what Ctrl-C does
        _, rest = proc.communicate(timeout=180)
        assert_stopped_and_port_free(kids, data_port)     # the simulator gone, its data port free again
    finally:
        kill_all(kids)
        if proc.poll() is None:
            proc.kill()
    err = "".join(err_lines) + rest
    assert proc.returncode == 0, err[-2000:]
    frames = [int(x) for x in re.findall(r"frames (\d+)", err)]
    assert frames and frames[-1] >= 1, err[-2000:]
    assert "simulated microscope" in err and "stopping" in err
