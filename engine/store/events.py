"""SQLite event store: one row per action (its onset, then its offset), one per stream status
change, one per detector run.

The detector never waits on the disk: `EventStore.record` queues the published payload (a
bounded queue; when it is full the message is dropped and counted), and one writer thread
commits what arrived as one transaction at least every `commit_s`. A write that fails (disk
full, read-only file) is logged in one line, counted in `actstream_store_errors_total`, and
retried at the next commit; detection and publishing go on. The database is in WAL mode, so
`actstream events` and other readers never block the writer; a detector killed with -9 loses
at most the batch it had not committed yet.

The schema is versioned (`PRAGMA user_version`); `MIGRATIONS[i]` takes version i to i + 1,
applied in one transaction when a store is opened. A database written by a newer actstream,
or a file that is not an SQLite database, is refused with one line.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import queue
import re
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.loader import check_positive
from engine.versions import installed_version

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class StoreConfig:
    """Attributes:
    path: the SQLite database file, created with its folder (None: keep no store).
    commit_s: what arrived is committed at least this often (a kill loses at most this).
    queue_max: messages waiting for the writer; beyond it new ones are dropped and counted.
    """

    path: str | None = "runs/events.db"
    commit_s: float = 1.0
    queue_max: int = 10000

    def __post_init__(self) -> None:
        check_positive(self, "commit_s", "queue_max")


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
DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
BUSY_TIMEOUT_S = 5.0  # several detectors may share one file: wait for each other's commits
_CLOSE = object()


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


class EventStore:
    """Writes what the publisher sends into the store (see the module doc).

    Args:
        config: the store section (its `path` must be set).
        run_id: this detector run's id (every message carries it).
        model: the weights or engine the detector runs (kept per run and per event).
        streams: the run's stream ids.
        metrics: `actstream_store_*` series (writes, errors, drops); None: not counted.
    """

    def __init__(
        self,
        config: StoreConfig,
        *,
        run_id: str,
        model: str,
        streams: list[str] | tuple[str, ...] = (),
        metrics=None,
    ) -> None:
        assert config.path, "a store needs store.path"
        self.config, self.run_id, self.model = config, run_id, model
        self.streams = list(streams)
        self.metrics = metrics
        self.path = Path(config.path)
        self._queue: queue.Queue = queue.Queue(config.queue_max)
        self._conn: sqlite3.Connection | None = None
        self._thread = threading.Thread(target=self._run, name="event-store", daemon=True)
        self.written = 0  # messages committed
        self.dropped = 0  # messages that found the queue full
        self.errors = 0  # failed commits
        self._last_error = ""

    def start(self) -> None:
        """Opens the database (raising `StoreError`), records this run, starts the writer."""
        self._conn = open_database(self.path)
        try:
            self._conn.execute(
                "INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?, ?)",
                (
                    self.run_id,
                    time.time(),
                    self.model,
                    json.dumps(self.streams),
                    installed_version("actstream") or "unknown",
                ),
            )
        except sqlite3.Error as exc:
            self._conn.close()
            raise StoreError(f"event store {self.path}: cannot write to it ({exc})") from None
        self._thread.start()

    def record(self, payload: bytes | str | dict) -> None:
        """Queues one published message (its JSON payload); never blocks."""
        try:
            self._queue.put_nowait(payload)
        except queue.Full:
            self.dropped += 1
            if self.metrics is not None:
                self.metrics.store_dropped.inc()

    def close(self, timeout_s: float = 5.0) -> None:
        """Commits everything queued, then closes the database."""
        if not self._thread.is_alive():
            return
        deadline = time.monotonic() + timeout_s
        while True:  # the close marker must not be dropped by a full queue
            try:
                self._queue.put(_CLOSE, timeout=0.1)
                break
            except queue.Full:
                if time.monotonic() > deadline:
                    logger.error("event store %s: writer stuck; not all events stored", self.path)
                    return
        self._thread.join(max(0.0, deadline - time.monotonic()))

    # ---- writer thread ----------------------------------------------------------------------
    def _run(self) -> None:
        pending: list[dict] = []
        due = time.monotonic() + self.config.commit_s
        closing = False
        while not closing:
            try:
                item = self._queue.get(timeout=max(0.0, due - time.monotonic()))
            except queue.Empty:
                item = None
            if item is _CLOSE:
                closing = True
            elif item is not None:
                message = _as_dict(item)
                if message is not None and message.get("type") in ("onset", "offset", "status"):
                    pending.append(message)
            if closing or time.monotonic() >= due:
                if pending and self._commit(pending):
                    pending = []
                elif len(pending) > self.config.queue_max:  # failing for long: bounded
                    lost = len(pending) - self.config.queue_max
                    self.dropped += lost
                    if self.metrics is not None:
                        self.metrics.store_dropped.inc(lost)
                    pending = pending[lost:]
                due = time.monotonic() + self.config.commit_s
        assert self._conn is not None
        self._conn.close()

    def _commit(self, messages: list[dict]) -> bool:
        conn = self._conn
        assert conn is not None
        try:
            conn.execute("BEGIN IMMEDIATE")
            for m in messages:
                self._apply(conn, m)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            self.errors += 1
            if self.metrics is not None:
                self.metrics.store_errors.inc()
            if str(exc) != self._last_error:  # one line per kind of failure, not per batch
                self._last_error = str(exc)
                logger.error(
                    "event store %s: cannot write (%s); %d messages kept for the next try, "
                    "detection goes on",
                    self.path,
                    exc,
                    len(messages),
                )
            return False
        if self._last_error:
            logger.info("event store %s: writing again", self.path)
            self._last_error = ""
        self.written += len(messages)
        if self.metrics is not None:
            self.metrics.store_writes.inc(len(messages))
        return True

    def _apply(self, conn: sqlite3.Connection, m: dict) -> None:
        if m["type"] == "status":
            conn.execute(
                "INSERT INTO statuses (run_id, stream, state, detail, wall_s, seq) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (m["run_id"], m["stream"], m["state"], m.get("detail", ""), m["wall_s"], m["seq"]),
            )
            return
        common = {
            "event_id": m["event_id"],
            "run_id": m["run_id"],
            "stream": m["stream"],
            "label": m["label"],
            "score": m["score"],
            "start_s": m["start_s"],
            "start_wall_s": m["start_wall_s"],
            "late": int(bool(m.get("late", False))),
            "lookahead_frames": m.get("lookahead_frames", 0),
            "model": self.model,
        }
        if m["type"] == "onset":
            row = common | {
                "onset_score": m["score"],
                "onset_frame_s": m["frame_s"],
                "onset_frame_wall_s": m["frame_wall_s"],
                "onset_wall_s": m["wall_s"],
                "onset_seq": m["seq"],
            }
            update = ()  # an onset comes first and once
        else:
            row = common | {
                "end_s": m["end_s"],
                "end_wall_s": m["end_wall_s"],
                "reason": m["reason"],
                "offset_frame_s": m["frame_s"],
                "offset_frame_wall_s": m["frame_wall_s"],
                "offset_wall_s": m["wall_s"],
                "offset_seq": m["seq"],
            }
            # the offset carries the action's final bounds and score
            update = tuple(k for k in row if k not in ("event_id", "run_id", "model"))
        names = ", ".join(row)
        marks = ", ".join("?" * len(row))
        conflict = (
            "DO UPDATE SET " + ", ".join(f"{k} = excluded.{k}" for k in update)
            if update
            else "DO NOTHING"
        )
        conn.execute(
            f"INSERT INTO events ({names}) VALUES ({marks}) ON CONFLICT (event_id) {conflict}",
            tuple(row.values()),
        )


def _as_dict(item: Any) -> dict | None:
    if isinstance(item, dict):
        return item
    try:
        message = json.loads(item)
    except ValueError:
        logger.error("event store: a message that is not JSON was skipped")
        return None
    return message if isinstance(message, dict) else None


def query_events(
    conn: sqlite3.Connection,
    *,
    streams: list[str] | tuple[str, ...] = (),
    labels: list[str] | tuple[str, ...] = (),
    since_wall_s: float | None = None,
    until_wall_s: float | None = None,
    open_only: bool = False,
    event_ids: list[str] | tuple[str, ...] = (),
    limit: int = 50,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Events (dicts of `EVENT_COLUMNS`, `late` as bool) whose start lies in [since, until),
    of the given streams and labels (none given: all), newest first, `offset` newest ones
    skipped; `open_only`: actions whose offset has not been stored; `event_ids`: only
    these."""
    where, args = [], []
    if event_ids:
        where.append(f"event_id IN ({', '.join('?' * len(event_ids))})")
        args += list(event_ids)
    if streams:
        where.append(f"stream IN ({', '.join('?' * len(streams))})")
        args += list(streams)
    if labels:
        where.append(f"label IN ({', '.join('?' * len(labels))})")
        args += list(labels)
    if since_wall_s is not None:
        where.append("start_wall_s >= ?")
        args.append(since_wall_s)
    if until_wall_s is not None:
        where.append("start_wall_s < ?")
        args.append(until_wall_s)
    if open_only:
        where.append("end_s IS NULL")
    sql = f"SELECT {', '.join(EVENT_COLUMNS)} FROM events"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY start_wall_s DESC, event_id DESC LIMIT ? OFFSET ?"
    rows = conn.execute(sql, (*args, limit, offset)).fetchall()
    out = [dict(zip(EVENT_COLUMNS, row, strict=True)) for row in rows]
    for r in out:
        r["late"] = bool(r["late"])
    return out


def parse_time(text: str, now: float | None = None) -> float:
    """Unix seconds from Unix seconds, ISO 8601 or a time ago; ValueError naming the text."""
    now = time.time() if now is None else now
    text = text.strip()
    ago = DURATION.match(text)
    if ago:
        return now - float(ago.group(1)) * UNIT_S[ago.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{text!r}: not a time; give Unix seconds, ISO 8601 (2026-12-01T21:00:00) or a "
            "time ago (30s, 15m, 2h, 7d)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()
