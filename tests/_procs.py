"""Child processes of a command under test (Linux /proc): who they are, that they stopped with it."""

from __future__ import annotations

import os
import socket


def children(pid: int) -> list[int]:
    """The process ids whose parent is ``pid``."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as fh:
                    if int(fh.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    return out


def assert_stopped_and_port_free(kids: list[int], port: int) -> None:
    """Every one of ``kids`` is gone (or a zombie) and the TCP ``port`` on loopback can be bound again."""
    assert all(not os.path.exists(f"/proc/{k}") or open(f"/proc/{k}/stat").read().split()[2] == "Z"
               for k in kids), "the simulator child outlived the demo"
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))


def kill_all(kids: list[int]) -> None:
    """SIGKILL whatever of ``kids`` is left (a test's cleanup)."""
    for k in kids:
        try:
            os.kill(k, 9)
        except OSError:
            pass
