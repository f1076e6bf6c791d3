"""The event store's schema and how a database file is opened: versioned migrations
(`PRAGMA user_version`; `MIGRATIONS[i]` takes version i to i + 1, applied in one transaction
when a store is opened), WAL mode, and one-line refusals of a file that is not an SQLite
database or was written by a newer actstream."""

from __future__ import annotations

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


def open_database(path: str | Path, *, read_only: bool = False) -> sqlite3.Connection:
    """Opens (creating unless `read_only`) and migrates the store at `path`; `StoreError`
    with one line when the file cannot serve as one."""
    path = Path(path)
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
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{what}: schema version {version} was written by a newer actstream (this "
                f"one knows {SCHEMA_VERSION}); upgrade, or give store.path another file"
            )
        if read_only:
            if version < SCHEMA_VERSION:
                raise StoreError(f"{what}: schema version {version}; open it with actstream run")
            return conn
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
    return conn
