"""The event store on a real PostgreSQL server (Debian's package, started by the test on
127.0.0.1): two detectors share it (one migration, both runs kept), the store holds exactly
what a real ZeroMQ subscriber received, `actstream events` and the HTTP API read it, and a
server restart in the middle loses nothing (the writer reconnects, the kept batch goes in)."""

import glob
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import free_port, run_cli, scaled, wait_until
from tests.integration.helpers import Running, connect_subscriber
from tests.integration.test_store import assert_row_holds, get, receive_until_exit

pytestmark = pytest.mark.integration


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))  # Debian's layout
    if not found:
        pytest.fail(
            f"PostgreSQL's {name} not found: install the test servers "
            "(sudo .ci/install_test_servers.sh, Debian package postgresql)"
        )
    return found[-1]


class PostgresServer:
    """A throw-away cluster in `root` (initdb, trust auth on loopback), run as the
    `postgres` user when we are root (the server refuses to run as root)."""

    def __init__(self, root) -> None:
        self.dir, self.port = root / "pgdata", free_port()
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        root.mkdir(exist_ok=True)
        if self.as_user:
            shutil.chown(root, "postgres")
        subprocess.run(
            [*self.as_user, _bin("initdb"), "-D", str(self.dir), "-A", "trust", "-U",
             "actstream", "--no-sync", "-E", "UTF8"],
            check=True, capture_output=True, timeout=scaled(120),
        )  # fmt: skip
        self.running = False
        self.start()
        subprocess.run(
            [_bin("psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "actstream", "-d",
             "postgres", "-c", "CREATE DATABASE events"],
            check=True, capture_output=True, timeout=scaled(30),
        )  # fmt: skip
        self.url = f"postgresql://actstream@127.0.0.1:{self.port}/events"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._ctl("start", "-o", options, "-l", str(self.dir / "server.log"))
        self.running = True
        wait_until(self.ready, "PostgreSQL accepting connections", timeout_s=60, every_s=0.1)

    def _ctl(self, *args: str) -> None:
        subprocess.run(
            [*self.as_user, _bin("pg_ctl"), "-D", str(self.dir), "-w", "-t", "60", *args],
            check=True, capture_output=True, timeout=scaled(90),
        )  # fmt: skip

    def ready(self) -> bool:
        done = subprocess.run(
            [_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-q"], timeout=30
        )
        return done.returncode == 0

    def stop(self) -> None:
        """A fast shutdown: clients are disconnected, the server is gone when it returns."""
        if self.running:
            self._ctl("stop", "-m", "fast")
            self.running = False


@pytest.fixture
def postgres():
    # Not under pytest's tmp_path: that is private to root, and the server runs as postgres.
    root = Path(tempfile.mkdtemp(prefix="actstream-pg-"))
    os.chmod(root, 0o755)
    try:
        server = PostgresServer(root / "cluster")
        yield server
        server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def stored(url: str) -> dict[str, dict]:
    out = run_cli("events", "--store", url, "--json", "--limit", "0", timeout=scaled(60))
    assert out.returncode == 0, out.stderr
    return {r["event_id"]: r for r in map(json.loads, out.stdout.splitlines())}


def test_two_detectors_share_a_postgresql_store_that_holds_what_subscribers_received(postgres):
    runs, received = [], []
    for name, seed in (("north", 5), ("south", 6)):
        endpoint = f"tcp://127.0.0.1:{free_port()}"
        port = free_port() if name == "north" else None
        args = ["--config", "configs/demo.yaml", f"{name}=synthetic://?seed={seed}&duration_s=15",
                "--no-metrics", "--zmq", endpoint, "--store", postgres.url]  # fmt: skip
        run = Running(*args, *(["--http-port", str(port)] if port else []))
        sub = connect_subscriber(endpoint, timeout_s=180)
        got: list[dict] = []
        listener = threading.Thread(
            target=lambda s=sub, r=run, g=got: g.extend(receive_until_exit(s, r))
        )
        listener.start()
        runs.append((run, sub, listener, port))
        received.append(got)
    north_run, _, _, port = runs[0]

    def api_lists_north():
        try:
            code, rows = get(port, "/api/events?stream=north")
        except OSError:
            return False
        return code == 200 and bool(rows)

    north_run.wait_until(api_lists_north, "the API reading north's actions from PostgreSQL", 120)
    for run, sub, listener, _ in runs:
        listener.join(scaled(180))
        sub.close()
        assert run.proc.wait(scaled(30)) == 0, run.proc.stderr.read()
    rows = stored(postgres.url)
    for run, got in zip([r[0] for r in runs], received, strict=True):
        published = [json.loads(line.split(" ", 1)[1]) for line in run.lines
                     if line.startswith("action.")]  # fmt: skip
        assert len([m for m in got if m["type"] == "onset"]) >= 2
        ids = {m["event_id"] for m in published}
        assert ids <= set(rows)
        for message in published + got:
            assert_row_holds(rows[message["event_id"]], message)
    assert {r["stream"] for r in rows.values()} == {"north", "south"}
    assert all(r["end_s"] is not None for r in rows.values())
    import psycopg

    with psycopg.connect(postgres.url) as conn:
        assert conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 2
        assert conn.execute("SELECT version FROM actstream_schema").fetchall() == [(1,)]
        types = dict(conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = 'events'"
        ).fetchall())  # fmt: skip
    assert types["start_wall_s"] == "double precision"  # wall-clock times need 8 bytes


def test_a_postgresql_restart_mid_run_loses_no_event(postgres):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    run = Running(
        "--config", "configs/demo.yaml", "cam=synthetic://?seed=5", "--no-metrics", "--quiet",
        "--zmq", endpoint, "--store", postgres.url,
    )  # fmt: skip
    sub = connect_subscriber(endpoint, timeout_s=180)
    got: list[dict] = []

    def receive_until(count: int) -> None:
        deadline = time.monotonic() + scaled(120)
        while len([m for m in got if m["type"] == "onset"]) < count:
            assert time.monotonic() < deadline, f"fewer than {count} onsets"
            item = sub.receive(0.2)
            if item is not None and item[1]["type"] in ("onset", "offset"):
                got.append(item[1])

    try:
        receive_until(2)
        postgres.stop()  # the writer's commits fail; it keeps the messages
        before = len(got)
        receive_until(len([m for m in got if m["type"] == "onset"]) + 2)
        assert len(got) > before, "no events while the server was down"
        postgres.start()
        receive_until(len([m for m in got if m["type"] == "onset"]) + 1)
        code, stderr, _ = run.stop(signal.SIGINT)
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
    while (item := sub.receive(1.0)) is not None:  # what was sent during the shutdown
        if item[1]["type"] in ("onset", "offset"):
            got.append(item[1])
    sub.close()
    assert code == 0, stderr
    assert "cannot write" in stderr and "Traceback" not in stderr
    rows = stored(postgres.url)
    for message in got:
        assert message["event_id"] in rows, message
        assert_row_holds(rows[message["event_id"]], message)
