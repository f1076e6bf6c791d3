"""The detector's HTTP API (FastAPI, served by uvicorn on a thread of the detector process):
the event store's actions with their evidence clips and snapshots, each stream's state, and a
health check for supervisors.

    GET /api/events          actions, newest first (filters: stream, label, since, until,
                             open; paging: limit, offset)
    GET /api/events/{id}     one action
    GET /api/events/{id}/clip.mp4, /api/events/{id}/snapshot.jpg
                             its evidence files (from clips.dir only; 404 none yet, 410 gone)
    GET /api/streams         per stream: state, frames processed and dropped, frame rate over
                             the last seconds, open actions
    GET /api/streams/{id}, /api/streams/{id}/truth, /api/streams/{id}/live.mjpeg, /api/status,
    /api/live, /, /static/*   the web view (engine.api.web)
    GET /healthz             200 while the detector publishes, 503 once its publisher stopped
    GET /openapi.json        the OpenAPI document of all of the above

Loopback by default, like the metrics endpoint (`http.host`); off unless `http.port` or
`--http-port` is given.
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time
from dataclasses import dataclass

logger = logging.getLogger(__name__)

SEND_BUFFER_BYTES = 128 * 1024


@dataclass(frozen=True, kw_only=True)
class HttpConfig:
    """Attributes:
    port: port of the HTTP API (None: no API; 0: any free port).
    host: address to bind (loopback by default).
    token: when set, every request but /healthz must carry it (the web page: open it once
        as http://HOST:PORT/?token=TOKEN); for binds beyond loopback.
    """

    port: int | None = None
    host: str = "127.0.0.1"
    token: str | None = None

    def __post_init__(self) -> None:
        if self.port is not None and not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in [0, 65535], got {self.port}")
        if self.token is not None and len(self.token) < 8:
            raise ValueError("token must be at least 8 characters (openssl rand -hex 16)")


class HttpPortError(OSError):
    """The API's port could not be bound."""


class ApiServer:
    """Serves `app` with uvicorn on a thread; `start` binds (raising `HttpPortError`) and
    returns the port, `close` stops it."""

    def __init__(self, app, host: str, port: int) -> None:
        import uvicorn

        self.host, self.requested = host, port
        self._server = uvicorn.Server(
            uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
        )
        self._thread: threading.Thread | None = None
        self.port: int | None = None
        app.state.abort_client = self.abort_client

    @property
    def native_id(self) -> int | None:
        """The server thread's kernel id (its CPU time: /proc/self/task/ID/stat)."""
        return getattr(self._thread, "native_id", None)

    def abort_client(self, client) -> None:
        """Closes the connection from `client` (host, port) at once, unsent data dropped (a
        plain close would wait for a client that stopped reading to take it); on the
        server's event loop."""
        for conn in list(self._server.server_state.connections):
            if tuple(getattr(conn, "client", None) or ()) == tuple(client or ()):
                sock = conn.transport.get_extra_info("socket")
                if sock is not None:  # a reset: the kernel keeps no orphan with its data
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.transport.abort()

    def start(self, timeout_s: float = 10.0) -> int:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # A fixed send buffer (accepted sockets inherit it): the kernel's autotuning would
        # let a client that stopped reading swallow megabytes before its writes block and
        # the live view drops it.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
        try:
            sock.bind((self.host, self.requested))
        except OSError as exc:
            sock.close()
            raise HttpPortError(
                f"HTTP API http://{self.host}:{self.requested}: cannot bind "
                f"({exc.strerror or exc}); choose another port with --http-port, or "
                "--http-port 0 for a free one"
            ) from None
        self.port = sock.getsockname()[1]
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="http-api", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started and self._thread.is_alive():
            if time.monotonic() > deadline:
                raise HttpPortError(f"HTTP API on port {self.port}: did not start in {timeout_s} s")
            time.sleep(0.01)
        logger.info("HTTP API on http://%s:%d", self.host, self.port)
        return self.port

    def close(self, timeout_s: float = 5.0) -> None:
        if self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout_s)
            self._thread = None
