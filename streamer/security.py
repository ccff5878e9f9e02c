"""Optional CURVE encryption and authentication of the frame socket (ZeroMQ CurveZMQ).

The side that **binds** is the CURVE server, the side that **connects** the CURVE client, whatever
their role (publisher or receiver). Keys are Z85 text files written by ``stemwatch keys`` (the
ZeroMQ certificate format: ``NAME.key`` holds the public key, ``NAME.key_secret`` both keys).

- Server: ``Curve(secret_key_file="server.key_secret", allowed_clients_dir="clients/")``. Only
  clients whose public key file (``*.key``) lies in ``allowed_clients_dir`` may connect (ZAP
  allow-list); every other handshake is refused by libzmq and no message reaches the application.
- Client: ``Curve(secret_key_file="analyzer.key_secret", server_public_key_file="server.key")``.
  The handshake fails unless the server holds the matching secret key.

Everything on the wire is then encrypted and authenticated (Curve25519 + XSalsa20-Poly1305).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import zmq


class SecurityError(RuntimeError):
    """A CURVE configuration that cannot work (missing key file, libzmq without CURVE...)."""

    user_error = True          # the command line shows it as one line, exit 2 (stemwatch.errors)


@dataclass(frozen=True)
class Curve:
    """CURVE settings of one socket. See the module docstring for server/client roles."""

    secret_key_file: str
    server_public_key_file: str | None = None     # clients: the server's public key
    allowed_clients_dir: str | None = None        # servers: directory of allowed client *.key files


def _load(path: str, secret: bool) -> tuple[bytes, bytes | None]:
    import zmq.auth

    p = Path(path)
    if not p.is_file():
        raise SecurityError(f"CURVE key file not found: {p}")
    try:
        public, sec = zmq.auth.load_certificate(str(p))
    except Exception as exc:
        raise SecurityError(f"cannot read CURVE key file {p}: {exc}") from exc
    if secret and not sec:
        raise SecurityError(f"{p} holds no secret key (use the NAME.key_secret file)")
    return public, sec


def check_allow_list(directory: str | Path) -> list[Path]:
    """Every ``*.key`` file of an allow-list folder, each checked (a Z85 public key of 32 bytes).
    A malformed file is reported by name (SecurityError) instead of being skipped or failing later
    inside the authenticator; a folder without any key is refused (nobody could connect). The
    list is read once, when the socket starts: a key removed later takes effect on restart."""
    from zmq.utils import z85

    d = Path(directory)
    files = sorted(d.glob("*.key"))
    if not files:
        raise SecurityError(f"allowed clients directory {d} holds no *.key file: no client could connect "
                            "(copy the clients' public NAME.key files there)")
    for p in files:
        public, _ = _load(str(p), secret=False)
        try:
            ok = public is not None and len(z85.decode(public)) == 32
        except Exception:
            ok = False
        if not ok:
            raise SecurityError(f"malformed CURVE public key file in the allow-list: {p} "
                                "(expected a public-key file written by `stemwatch keys`)")
    return files


def generate_keypair(directory: str | Path, name: str) -> tuple[Path, Path]:
    """Write ``NAME.key`` (public) and ``NAME.key_secret`` (secret, mode 0600) into ``directory``."""
    import zmq.auth

    if not zmq.has("curve"):
        raise SecurityError("this libzmq was built without CURVE support")
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    public, secret = zmq.auth.create_certificates(str(d), name)
    Path(secret).chmod(0o600)
    return Path(public), Path(secret)


def apply_curve(ctx: zmq.Context, sock: zmq.Socket, curve: Curve | None, server: bool):
    """Configure ``sock`` (before bind/connect). Returns a started authenticator for servers with
    an allow-list (the caller must ``stop()`` it), else None."""
    if curve is None:
        return None
    if not zmq.has("curve"):
        raise SecurityError("this libzmq was built without CURVE support")
    public, secret = _load(curve.secret_key_file, secret=True)
    sock.curve_publickey = public
    sock.curve_secretkey = secret
    if server:
        auth = None
        if curve.allowed_clients_dir:
            from zmq.auth.thread import ThreadAuthenticator

            d = Path(curve.allowed_clients_dir)
            if not d.is_dir():
                raise SecurityError(f"allowed clients directory not found: {d}")
            check_allow_list(d)
            auth = ThreadAuthenticator(ctx)
            auth.start()
            auth.configure_curve(domain="*", location=str(d))
        sock.curve_server = True
        return auth
    if not curve.server_public_key_file:
        raise SecurityError("a CURVE client needs server_public_key_file (the server's NAME.key)")
    server_public, _ = _load(curve.server_public_key_file, secret=False)
    sock.curve_serverkey = server_public
    return None
