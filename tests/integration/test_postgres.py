"""The event store on a real PostgreSQL server (Debian's package, started by the test on
127.0.0.1): two detectors share it (one migration, both runs kept), the store holds exactly
what their real ZeroMQ subscribers received, `actstream events` and the HTTP API read it, and
a server restart in the middle loses nothing (the writers reconnect, the kept batches go in);
an unreachable server is refused at start-up in one line, its password never shown."""

import glob
import json
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest

from tests.conftest import free_port, run_cli, scaled, wait_until
from tests.integration.helpers import Running, connect_subscriber
from tests.integration.test_store import (
    ONSET_FIELDS,
    assert_row_holds,
    get,
    receive_until_exit,
)

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


def test_two_detectors_share_a_postgresql_store_through_a_restart_and_lose_nothing(postgres):
    runs, received = [], []
    for name, seed in (("north", 5), ("south", 6)):
        endpoint = f"tcp://127.0.0.1:{free_port()}"
        port = free_port() if name == "north" else None
        source = f"{name}=synthetic://?seed={seed}&duration_s=24"
        args = ["--config", "configs/demo.yaml", source, "--no-metrics", "--no-clips",
                "--zmq", endpoint, "--store", postgres.url]  # fmt: skip
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

    from_api: list[dict] = []

    def api_lists_north():
        try:
            code, rows = get(port, "/api/events?stream=north")
        except OSError:
            return False
        from_api[:] = rows if code == 200 else []
        return bool(from_api)

    north_run.wait_until(api_lists_north, "the API reading north's actions from PostgreSQL", 120)
    # The server goes away and comes back while both detectors run and publish.
    postgres.stop()

    def published() -> int:
        return sum(line.startswith("action.") for r, *_ in runs for line in list(r.lines))

    during = published()
    north_run.wait_until(lambda: published() >= during + 3,
                         "events published while the server is down", 60)  # fmt: skip
    postgres.start()
    stderr = []
    for run, sub, listener, _ in runs:
        listener.join(scaled(180))
        sub.close()
        assert run.proc.wait(scaled(30)) == 0
        stderr.append(run.proc.stderr.read())
    assert any("cannot write" in e for e in stderr) and not any("Traceback" in e for e in stderr)
    rows = stored(postgres.url)
    for run, got in zip([r[0] for r in runs], received, strict=True):
        published = [json.loads(line.split(" ", 1)[1]) for line in run.lines
                     if line.startswith("action.")]  # fmt: skip
        assert len([m for m in got if m["type"] == "onset"]) >= 2
        assert {m["event_id"] for m in published} <= set(rows)
        for message in published + got:  # nothing lost, before, during or after the restart
            assert_row_holds(rows[message["event_id"]], message)
    assert {r["stream"] for r in rows.values()} == {"north", "south"}
    onsets = {
        m["event_id"]: m
        for m in (json.loads(line.split(" ", 1)[1]) for line in north_run.lines)
        if m["type"] == "onset"
    }
    for row in from_api:  # what the API served from PostgreSQL, as north published it
        for column, key in ONSET_FIELDS.items():
            assert row[column] == onsets[row["event_id"]][key], (column, row)
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


def test_an_unreachable_postgresql_store_is_refused_at_start_up_in_one_line():
    url = f"postgresql://actstream:s3cret@127.0.0.1:{free_port()}/events"
    done = run_cli("run", "--config", "configs/demo.yaml", "--no-metrics", "--store", url,
                   "--duration-s", "1", timeout=scaled(120))  # fmt: skip
    assert done.returncode == 2
    (line,) = [x for x in done.stderr.splitlines() if "error" in x]
    assert "cannot connect" in line and "s3cret" not in done.stderr and "***" in line
