"""ZeroMQ CURVE for the event socket: key pairs (`actstream keys`), the publisher as a CURVE
server that accepts either any client with the server's public key or only clients whose
public keys sit in a directory, and subscribers as CURVE clients.

Key files are ZeroMQ certificates as pyzmq writes them: `NAME.key` (public key: give it to
the other side) and `NAME.key_secret` (public and secret key: keep it; mode 0600).
"""

from __future__ import annotations

import os
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator


class KeyFileError(ValueError):
    """A key file or directory that cannot be used; the message names it."""


def generate_keypair(directory: str | Path, name: str) -> tuple[Path, Path]:
    """Writes `NAME.key` and `NAME.key_secret` into `directory` (created; existing files are
    never overwritten). Returns (public, secret) paths."""
    d = Path(directory)
    if not name or "/" in name or name.startswith("."):
        raise KeyFileError(f"key name {name!r}: use a plain name such as 'server' or 'client1'")
    public, secret = d / f"{name}.key", d / f"{name}.key_secret"
    for path in (public, secret):
        if path.exists():
            raise KeyFileError(f"{path}: exists; choose another --name or directory")
    d.mkdir(parents=True, exist_ok=True)
    pub, sec = zmq.auth.create_certificates(str(d), name)
    os.chmod(sec, 0o600)
    return Path(pub), Path(sec)


def load_keys(path: str | Path, *, secret: bool) -> tuple[bytes, bytes | None]:
    """(public, secret) keys of a certificate file; `secret=True` requires the secret part."""
    p = Path(path)
    if not p.is_file():
        raise KeyFileError(f"{p}: no such key file; create one with actstream keys DIR --name NAME")
    try:
        public, secret_key = zmq.auth.load_certificate(str(p))
    except (ValueError, OSError) as exc:
        raise KeyFileError(f"{p}: not a ZeroMQ key file ({exc})") from None
    if public is None or (secret and secret_key is None):
        kind = "secret key file (NAME.key_secret)" if secret else "key file"
        raise KeyFileError(f"{p}: not a {kind}")
    return public, secret_key


class CurveServer:
    """Makes a socket a CURVE server; with `clients_dir`, only clients whose public key
    (`*.key`) is in that directory may connect (ZAP authenticator on the socket's context)."""

    def __init__(self, secret_key_file: str | Path, clients_dir: str | Path | None = None):
        self.public, self.secret = load_keys(secret_key_file, secret=True)
        self.clients_dir = None if clients_dir is None else Path(clients_dir)
        if self.clients_dir is not None and not any(self.clients_dir.glob("*.key")):
            raise KeyFileError(
                f"{self.clients_dir}: no client public keys (*.key); copy each subscriber's "
                "NAME.key there"
            )
        self._auth: ThreadAuthenticator | None = None

    def apply(self, ctx: zmq.Context, sock: zmq.Socket) -> None:
        self._auth = ThreadAuthenticator(ctx)
        self._auth.start()
        location = str(self.clients_dir) if self.clients_dir else zmq.auth.CURVE_ALLOW_ANY
        self._auth.configure_curve(domain="*", location=location)
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_server = True

    def close(self) -> None:
        if self._auth is not None:
            self._auth.stop()
            self._auth = None


def make_client(sock: zmq.Socket, server_key_file: str | Path, client_key_file: str | Path) -> None:
    """Makes a socket a CURVE client of the server whose public key is in `server_key_file`."""
    server_public, _ = load_keys(server_key_file, secret=False)
    public, secret = load_keys(client_key_file, secret=True)
    sock.curve_serverkey = server_public
    sock.curve_publickey = public
    sock.curve_secretkey = secret
