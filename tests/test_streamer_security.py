"""CURVE: encrypted frame socket with a client-key allow-list; keys from `stemwatch keys`."""

import os
import stat
import time

import numpy as np
import pytest
import zmq

from stemwatch.cli import main
from stemwatch.config import StreamConfig
from streamer import Publisher, Receiver
from streamer.security import Curve, SecurityError
from _wait import wait_until

pytestmark = pytest.mark.skipif(not zmq.has("curve"), reason="libzmq built without CURVE")


def _keys(tmp_path):
    for name in ("microscope", "analyzer", "intruder"):
        assert main(["keys", "--out", str(tmp_path / "keys"), "--name", name]) == 0
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "analyzer.key").write_bytes((tmp_path / "keys" / "analyzer.key").read_bytes())
    return tmp_path / "keys", allowed


def test_keys_command_writes_private_secret(tmp_path, capsys):
    keys, _ = _keys(tmp_path)
    mode = stat.S_IMODE(os.stat(keys / "analyzer.key_secret").st_mode)
    assert mode == 0o600
    assert "secret-key" not in (keys / "analyzer.key").read_text()
    assert main(["keys", "--out", str(keys), "--name", "analyzer"]) == 1      # no silent overwrite


def test_only_allow_listed_clients_receive(tmp_path):
    keys, allowed = _keys(tmp_path)
    server = Curve(str(keys / "microscope.key_secret"), allowed_clients_dir=str(allowed))
    pub = Publisher("tcp://127.0.0.1:*", curve=server)
    server_pub = str(keys / "microscope.key")
    cfg = StreamConfig()
    intruder = Receiver(pub.endpoint, cfg, curve=Curve(str(keys / "intruder.key_secret"), server_pub)).start()
    plain = Receiver(pub.endpoint, cfg).start()
    good = Receiver(pub.endpoint, cfg, curve=Curve(str(keys / "analyzer.key_secret"), server_pub)).start()
    try:
        # the allowed client's handshake is done before sending (PUSH waits only send_timeout_s for a peer)
        assert wait_until(lambda: good.stats()["peers_connected"] >= 1)
        pub.start_series("sec", (16, 16), "uint16", 0.1)
        for i in range(5):
            pub.send_frame(np.full((16, 16), i, np.uint16))
        assert wait_until(lambda: good.stats()["frames_received"] >= 5)
        time.sleep(0.3)                                    # a chance for a wrong delivery to show
        assert good.stats()["frames_received"] == 5
        assert intruder.stats()["messages"] == 0 and plain.stats()["messages"] == 0
    finally:
        for rx in (intruder, plain, good):
            rx.stop()
        pub.close()


def test_client_with_wrong_server_key_gets_nothing(tmp_path):
    keys, allowed = _keys(tmp_path)
    pub = Publisher("tcp://127.0.0.1:*", curve=Curve(str(keys / "microscope.key_secret"),
                                                     allowed_clients_dir=str(allowed)), send_timeout_s=0.5)
    rx = Receiver(pub.endpoint, StreamConfig(),
                  curve=Curve(str(keys / "analyzer.key_secret"), str(keys / "intruder.key"))).start()
    try:
        time.sleep(0.3)
        with pytest.raises(TimeoutError):                  # no peer ever completes the handshake
            pub.start_series("x", (4, 4), "uint8", 0.1)
        assert rx.stats()["messages"] == 0
    finally:
        rx.stop()
        pub.close()


def test_configuration_errors_are_explicit(tmp_path):
    keys, _ = _keys(tmp_path)
    with pytest.raises(SecurityError, match="not found"):
        Publisher("tcp://127.0.0.1:*", curve=Curve(str(tmp_path / "missing.key_secret")))
    with pytest.raises(SecurityError, match="no secret key"):
        Publisher("tcp://127.0.0.1:*", curve=Curve(str(keys / "microscope.key")))
    with pytest.raises(SecurityError, match="server_public_key_file"):
        Receiver("tcp://127.0.0.1:5", StreamConfig(), curve=Curve(str(keys / "analyzer.key_secret")))


def test_receiver_as_server_refuses_unlisted_publishers(tmp_path):
    keys, _ = _keys(tmp_path)
    allowed = tmp_path / "publishers"
    allowed.mkdir()
    (allowed / "microscope.key").write_bytes((keys / "microscope.key").read_bytes())
    rx = Receiver("tcp://127.0.0.1:*", StreamConfig(), bind=True,
                  curve=Curve(str(keys / "analyzer.key_secret"), allowed_clients_dir=str(allowed))).start()
    server_pub = str(keys / "analyzer.key")
    intruder = Publisher(rx.endpoint, bind=False, send_timeout_s=0.5,
                         curve=Curve(str(keys / "intruder.key_secret"), server_pub))
    good = Publisher(rx.endpoint, bind=False, curve=Curve(str(keys / "microscope.key_secret"), server_pub))
    try:
        assert wait_until(lambda: rx.stats()["handshake_failures"] >= 1)
        with pytest.raises(TimeoutError):
            intruder.start_series("evil", (4, 4), "uint8", 0.1)
        good.start_series("lab", (4, 4), "uint8", 0.1)
        good.send_frame(np.ones((4, 4), np.uint8))
        assert wait_until(lambda: rx.stats()["frames_received"] == 1)
        st = rx.stats()
        assert st["series"] == "lab" and st["malformed_total"] == 0 and st["peers_connected"] == 1
        assert st["messages"] == 2                       # nothing from the intruder ever arrived
    finally:
        intruder.close()
        good.close()
        rx.stop()


