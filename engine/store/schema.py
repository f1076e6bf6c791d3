"""The event store's schema and how a store is opened: an SQLite file (WAL mode) or a
PostgreSQL database shared by a fleet (`store.url`, through psycopg). Versioned migrations:
`MIGRATIONS[i]` takes version i to i + 1, applied in one transaction when a store is opened
(the version is SQLite's `PRAGMA user_version`, or PostgreSQL's `actstream_schema` table under
an advisory lock); one-line refusals of a file that is not an SQLite database, a server that
cannot be reached, or a store written by a newer actstream."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path


class StoreError(Exception):
    """The store cannot be opened (one line naming the file and what to do)."""


# One tuple of statements per schema version; never edit a released one, append a new one.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE runs (
            run_id TEXT PRIMARY KEY,
            started_wall_s REAL NOT NULL,
            model TEXT NOT NULL,
            streams TEXT NOT NULL,
            version TEXT NOT NULL
        )""",
        """CREATE TABLE events (
            event_id TEXT PRIMARY KEY,
            run_id TEXT NOT NULL,
            stream TEXT NOT NULL,
            label TEXT NOT NULL,
            score REAL NOT NULL,
            onset_score REAL,
            start_s REAL NOT NULL,
            start_wall_s REAL NOT NULL,
            end_s REAL,
            end_wall_s REAL,
            reason TEXT,
            late INTEGER NOT NULL,
            lookahead_frames INTEGER NOT NULL,
            onset_frame_s REAL,
            onset_frame_wall_s REAL,
            onset_wall_s REAL,
            onset_seq INTEGER,
            offset_frame_s REAL,
            offset_frame_wall_s REAL,
            offset_wall_s REAL,
            offset_seq INTEGER,
            model TEXT NOT NULL,
            clip_path TEXT,
            snapshot_path TEXT
        )""",
        "CREATE INDEX events_by_time ON events (start_wall_s)",
        "CREATE INDEX events_by_stream ON events (stream, start_wall_s)",
        "CREATE INDEX events_by_label ON events (label, start_wall_s)",
        """CREATE TABLE statuses (
            id INTEGER PRIMARY KEY,
            run_id TEXT NOT NULL,
            stream TEXT NOT NULL,
            state TEXT NOT NULL,
            detail TEXT NOT NULL,
            wall_s REAL NOT NULL,
            seq INTEGER NOT NULL
        )""",
        "CREATE INDEX statuses_by_stream ON statuses (stream, wall_s)",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)
EVENT_COLUMNS = (
    "event_id",
    "run_id",
    "stream",
    "label",
    "score",
    "onset_score",
    "start_s",
    "start_wall_s",
    "end_s",
    "end_wall_s",
    "reason",
    "late",
    "lookahead_frames",
    "onset_frame_s",
    "onset_frame_wall_s",
    "onset_wall_s",
    "onset_seq",
    "offset_frame_s",
    "offset_frame_wall_s",
    "offset_wall_s",
    "offset_seq",
    "model",
    "clip_path",
    "snapshot_path",
)
BUSY_TIMEOUT_S = 5.0  # several detectors may share one file: wait for each other's commits


class Database:
    """One connection to an event store, SQLite or PostgreSQL: statements are written once,
    with `?` placeholders, and the few differences between the two live here.

    Attributes:
        kind: "sqlite" or "postgresql".
        where: what to name in messages (the file, or the URL without its password).
        errors: the exception classes a failing statement raises.
    """

    def __init__(self, conn, kind: str, where: str, errors: tuple[type[BaseException], ...]):
        self.conn, self.kind, self.where, self.errors = conn, kind, where, errors

    def execute(self, sql: str, args: tuple | list = ()):
        if self.kind == "postgresql":
            sql = sql.replace("?", "%s")
        return self.conn.execute(sql, tuple(args))

    def executemany(self, sql: str, rows: list[tuple]) -> None:
        if self.kind == "postgresql":
            with self.conn.cursor() as cur:
                cur.executemany(sql.replace("?", "%s"), rows)
        else:
            self.conn.executemany(sql, rows)

    def begin(self) -> None:
        """Starts a write transaction (SQLite: taking the write lock at once)."""
        self.conn.execute("BEGIN IMMEDIATE" if self.kind == "sqlite" else "BEGIN")

    def commit(self) -> None:
        self.conn.execute("COMMIT")

    def rollback(self) -> None:
        try:
            self.conn.execute("ROLLBACK")
        except self.errors:
            pass

    @property
    def broken(self) -> bool:
        """The connection is lost (a PostgreSQL server restarted); SQLite files never are."""
        return self.kind == "postgresql" and bool(self.conn.closed or self.conn.broken)

    def close(self) -> None:
        self.conn.close()


def is_url(target: str) -> bool:
    return target.startswith(("postgresql://", "postgres://"))


def shown(target: str) -> str:
    """The store's name for messages: a URL without its password."""
    if is_url(target):
        return re.sub(r"^(\w+://[^:/@]*):[^@]*@", r"\1:***@", target)
    return target


def open_database(target: str | Path, *, read_only: bool = False) -> Database:
    """Opens (creating unless `read_only`) and migrates the store at `target`, an SQLite file
    or a `postgresql://` URL; `StoreError` with one line when it cannot serve as one."""
    if isinstance(target, str) and is_url(target):
        return _open_postgresql(target, read_only=read_only)
    return _open_sqlite(Path(target), read_only=read_only)


def _open_sqlite(path: Path, *, read_only: bool) -> Database:
    what = f"event store {path}"
    if read_only and not path.exists():
        raise StoreError(f"{what}: no such file (actstream run writes it at store.path)")
    try:
        if not read_only:
            path.parent.mkdir(parents=True, exist_ok=True)
        uri = f"file:{path.resolve()}?mode={'ro' if read_only else 'rwc'}"
        conn = sqlite3.connect(
            uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
    except (OSError, sqlite3.Error) as exc:
        raise StoreError(f"{what}: cannot open it ({exc}); give store.path another file") from None
    try:
        if conn.execute("PRAGMA quick_check").fetchone()[0] != "ok":
            raise sqlite3.DatabaseError("integrity check failed")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        _check_version(what, version, read_only)
        if not read_only:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")  # WAL: durable against a killed process
            if version < SCHEMA_VERSION:
                conn.execute("BEGIN IMMEDIATE")
                version = conn.execute("PRAGMA user_version").fetchone()[0]  # another may have
                for statements in MIGRATIONS[version:]:
                    for sql in statements:
                        conn.execute(sql)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                conn.execute("COMMIT")
    except StoreError:
        conn.close()
        raise
    except sqlite3.Error as exc:
        conn.close()
        raise StoreError(
            f"{what}: not a usable event store ({exc}); move it away or give store.path "
            "another file"
        ) from None
    return Database(conn, "sqlite", str(path), (sqlite3.Error,))


def _check_version(what: str, version: int, read_only: bool) -> None:
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{what}: schema version {version} was written by a newer actstream (this "
            f"one knows {SCHEMA_VERSION}); upgrade, or give the store another database"
        )
    if read_only and version < SCHEMA_VERSION:
        raise StoreError(f"{what}: schema version {version}; open it with actstream run")


def postgresql_statement(sql: str) -> str:
    """A migration statement in PostgreSQL's dialect (REAL is 4 bytes there: wall-clock
    times need 8; row ids count themselves)."""
    sql = sql.replace("id INTEGER PRIMARY KEY", "id BIGSERIAL PRIMARY KEY")
    return re.sub(r"\bREAL\b", "DOUBLE PRECISION", sql)


# Several detectors opening one PostgreSQL store migrate it one at a time.
_MIGRATION_LOCK = 0x61637473  # "acts"


def _open_postgresql(url: str, *, read_only: bool) -> Database:
    what = f"event store {shown(url)}"
    try:
        import psycopg
    except ImportError:
        raise StoreError(
            f"{what}: psycopg is not installed (pip install 'psycopg[binary]')"
        ) from None
    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise StoreError(
            f"{what}: cannot connect ({reason}); check store.url and that the server is up"
        ) from None
    try:
        if not read_only:
            conn.execute("CREATE TABLE IF NOT EXISTS actstream_schema (version INTEGER NOT NULL)")
        if read_only:
            found = conn.execute("SELECT to_regclass('actstream_schema')").fetchone()[0]
            if found is None:
                raise StoreError(f"{what}: no event store in this database yet (actstream run "
                                 "creates it)")  # fmt: skip
        row = conn.execute("SELECT version FROM actstream_schema").fetchone()
        _check_version(what, row[0] if row else 0, read_only)
        if not read_only and (row is None or row[0] < SCHEMA_VERSION):
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
                row = conn.execute("SELECT version FROM actstream_schema").fetchone()
                version = row[0] if row else 0  # another detector may have migrated it
                for statements in MIGRATIONS[version:]:
                    for sql in statements:
                        conn.execute(postgresql_statement(sql))
                conn.execute("DELETE FROM actstream_schema")
                conn.execute("INSERT INTO actstream_schema VALUES (%s)", (SCHEMA_VERSION,))
    except StoreError:
        conn.close()
        raise
    except psycopg.Error as exc:
        conn.close()
        raise StoreError(f"{what}: not a usable event store ({str(exc).strip()})") from None
    return Database(conn, "postgresql", shown(url), (psycopg.Error,))
