"""Peak RSS of a lossless receiver behind a 20 MB/s sink, 2 MiB frames from a separate sender process.
usage: PYTHONPATH=. python -m lab.recorder_rss N_FRAMES WINDOW_S   (issue 14, criterion 7; docs/recording.md)"""
import os, socket, subprocess, sys, time
from stemwatch.config import StreamConfig
from streamer import Receiver

n, window = int(sys.argv[1]), float(sys.argv[2])
MiB = 1 << 20
def rss_mib(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024
class Sink:                                   # a 20 MB/s disk
    written = 0
    def write(self, parts, t):
        nb = sum(len(getattr(p, "buffer", p)) for p in parts)
        time.sleep(nb / 20e6); Sink.written += 1
k = socket.socket(); k.bind(("127.0.0.1", 0)); port = k.getsockname()[1]; k.close()
ep = f"tcp://127.0.0.1:{port}"
sender = subprocess.Popen([sys.executable, "-c", f"""
import numpy as np, sys
from streamer import Publisher
f = np.ones((1024, 512), np.float32)
with Publisher("{ep}", send_timeout_s=None, linger_s=0) as pub:
    pub.start_series("rss", f.shape, f.dtype, 0.1)
    for i in range({n}):
        pub.send_frame(f)
        if i % 100 == 0: print(i, flush=True)
"""], stdout=subprocess.PIPE, text=True, env=os.environ)
base = rss_mib("VmRSS:")
rx = Receiver(ep, StreamConfig(recorder_policy="block"), recorder=Sink()).start()
t0 = time.monotonic(); peak_backlog = 0
while time.monotonic() - t0 < window:
    time.sleep(0.2)
    st = rx.stats()
    peak_backlog = max(peak_backlog, st["recorder"]["backlog_bytes"])
st = rx.stats()
print(f"frames received {st['frames_received']} of {n} in {window:.0f} s, written {Sink.written}; "
      f"RSS before {base:.0f} MiB, peak RSS (VmHWM) {rss_mib('VmHWM:'):.0f} MiB; "
      f"recorder backlog peak {peak_backlog / MiB:.0f} MiB, peak_bytes {st['recorder'].get('peak_bytes', 0) / MiB:.0f} MiB, "
      f"socket_hwm {st['recorder'].get('socket_hwm')}")
sender.kill(); rx.stop(drain_recorder=False)
