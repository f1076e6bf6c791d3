"""The event store (an SQLite file, or a PostgreSQL database with `store.url`): one row per
action (its onset, then its offset), one per stream status
change, one per detector run.

The detector never waits on the disk: `EventStore.record` queues the published payload (a
bounded queue; when it is full the message is dropped and counted), and one writer thread
commits what arrived as one transaction at least every `commit_s`. A write that fails (disk
full, read-only file) is logged in one line, counted in `actstream_store_errors_total`, and
retried at the next commit; detection and publishing go on. The database is in WAL mode, so
`actstream events` and other readers never block the writer; a detector killed with -9 loses
at most the batch it had not committed yet.

The schema and how a file is opened: `engine/store/schema.py`; queries:
`engine/store/query.py`.
"""

from __future__ import annotations

import itertools
import json
import logging
import queue
import threading
import time
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path

from engine.loader import check_positive
from engine.store.schema import Database, StoreError, is_url, open_database, shown
from engine.versions import installed_version

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class StoreConfig:
    """Attributes:
    path: the SQLite database file, created with its folder (None: keep no store).
    url: a PostgreSQL database instead (`postgresql://USER:PASSWORD@HOST:PORT/DB`), shared
        by a fleet of detectors; when set, `path` is not used.
    commit_s: what arrived is committed at least this often (a kill loses at most this).
    queue_max: messages waiting for the writer; beyond it new ones are dropped and counted.
    retain_days: events and status rows older than this are deleted while running, and so
        are evidence clips (null: kept; clips still obey `clips.max_gb`).
    """

    path: str | None = "runs/events.db"
    url: str | None = None
    commit_s: float = 1.0
    queue_max: int = 10000
    retain_days: float | None = None

    def __post_init__(self) -> None:
        check_positive(self, "commit_s", "queue_max")
        if self.retain_days is not None and self.retain_days <= 0:
            raise ValueError(f"retain_days must be positive or null, got {self.retain_days}")
        if self.url is not None and not is_url(self.url):
            raise ValueError(f"url must start with postgresql://, got {shown(self.url)!r}")

    @property
    def target(self) -> str | None:
        """The store to open: the URL if one is given, else the file (None: no store)."""
        return self.url or self.path


_CLOSE = object()
_STORED = ("onset", "offset", "status", "clip")
RETENTION_EVERY_S = 60.0  # how often rows older than retain_days are deleted


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
        assert config.target, "a store needs store.path or store.url"
        self.config, self.run_id, self.model = config, run_id, model
        self.streams = list(streams)
        self.metrics = metrics
        self.path = config.target if config.url else Path(config.target)
        self.shown = shown(str(self.path))
        self._queue: queue.Queue = queue.Queue(config.queue_max)
        self._conn: Database | None = None
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
                "INSERT INTO runs VALUES (?, ?, ?, ?, ?)",
                (
                    self.run_id,
                    time.time(),
                    self.model,
                    json.dumps(self.streams),
                    installed_version("actstream") or "unknown",
                ),
            )
        except self._conn.errors as exc:
            self._conn.close()
            raise StoreError(f"event store {self.shown}: cannot write to it ({exc})") from None
        self._thread.start()

    def record(self, payload: bytes | str) -> None:
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
                    logger.error("event store %s: writer stuck; not all events stored", self.shown)
                    return
        self._thread.join(max(0.0, deadline - time.monotonic()))

    # ---- writer thread ----------------------------------------------------------------------
    def _run(self) -> None:
        pending: list[dict] = []
        due = time.monotonic() + self.config.commit_s
        next_expiry = 0.0
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
                if message is not None and message.get("type") in _STORED:
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
                if self.config.retain_days is not None and time.monotonic() >= next_expiry:
                    next_expiry = time.monotonic() + RETENTION_EVERY_S
                    self.expire()
                due = time.monotonic() + self.config.commit_s
        assert self._conn is not None
        self._conn.close()

    def expire(self, now_s: float | None = None) -> int:
        """Deletes the events (by their end, or start while open) and status rows older than
        `retain_days`; returns how many events went. Writer thread only."""
        db = self._conn
        assert db is not None and self.config.retain_days is not None
        cutoff = (time.time() if now_s is None else now_s) - self.config.retain_days * 86400
        try:
            db.begin()
            gone = db.execute(
                "DELETE FROM events WHERE coalesce(end_wall_s, start_wall_s) < ?", (cutoff,)
            ).rowcount
            db.execute("DELETE FROM statuses WHERE wall_s < ?", (cutoff,))
            db.commit()
        except db.errors as exc:
            db.rollback()
            logger.error("event store %s: cannot delete old rows (%s)", self.shown, exc)
            return 0
        return gone

    def _commit(self, messages: list[dict]) -> bool:
        db = self._conn
        assert db is not None
        if db.broken:  # a PostgreSQL server that went away: connect again
            try:
                self._conn = db = open_database(self.path)
            except StoreError as exc:
                return self._failed(exc, len(messages))
        try:
            db.begin()
            # consecutive messages of one kind go in as one statement, in order
            for sql, group in itertools.groupby(map(self._statement, messages), key=itemgetter(0)):
                db.executemany(sql, [values for _, values in group])
            db.commit()
        except db.errors as exc:
            db.rollback()
            return self._failed(exc, len(messages))
        if self._last_error:
            logger.info("event store %s: writing again", self.shown)
            self._last_error = ""
        self.written += len(messages)
        if self.metrics is not None:
            self.metrics.store_writes.inc(len(messages))
        return True

    def _failed(self, exc: BaseException, kept: int) -> bool:
        self.errors += 1
        if self.metrics is not None:
            self.metrics.store_errors.inc()
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if text != self._last_error:  # one line per kind of failure, not per batch
            self._last_error = text
            logger.error(
                "event store %s: cannot write (%s); %d messages kept for the next try, "
                "detection goes on",
                self.shown,
                text,
                kept,
            )
        return False

    def _statement(self, m: dict) -> tuple[str, tuple]:
        """The SQL (one of a few fixed statements) and values that store message `m`."""
        kind = m["type"]
        if kind == "clip":
            return _CLIP_SQL, (m["clip_path"], m.get("snapshot_path"), m["event_id"])
        if kind == "status":
            values = (m["run_id"], m["stream"], m["state"], m.get("detail", ""), m["wall_s"])
            return _STATUS_SQL, (*values, m["seq"])
        common = (
            m["event_id"], m["run_id"], m["stream"], m["label"], m["score"], m["start_s"],
            m["start_wall_s"], int(bool(m.get("late", False))), m.get("lookahead_frames", 0),
            self.model,
        )  # fmt: skip
        if kind == "onset":
            own = (m["score"], m["frame_s"], m["frame_wall_s"], m["wall_s"], m["seq"])
            return _ONSET_SQL, common + own
        own = (m["end_s"], m["end_wall_s"], m["reason"], m["frame_s"], m["frame_wall_s"],
               m["wall_s"], m["seq"])  # fmt: skip
        return _OFFSET_SQL, common + own


def _upsert(own: tuple[str, ...], *, update: bool) -> str:
    names = (*_COMMON, *own)
    # The offset carries the action's final bounds and score; an onset comes first and once.
    keep = ("event_id", "run_id", "model")
    conflict = (
        "DO UPDATE SET " + ", ".join(f"{k} = excluded.{k}" for k in names if k not in keep)
        if update
        else "DO NOTHING"
    )
    return (
        f"INSERT INTO events ({', '.join(names)}) VALUES ({', '.join('?' * len(names))}) "
        f"ON CONFLICT (event_id) {conflict}"
    )


_COMMON = ("event_id", "run_id", "stream", "label", "score", "start_s", "start_wall_s", "late",
           "lookahead_frames", "model")  # fmt: skip
_ONSET_SQL = _upsert(
    ("onset_score", "onset_frame_s", "onset_frame_wall_s", "onset_wall_s", "onset_seq"),
    update=False,
)
_OFFSET_SQL = _upsert(
    ("end_s", "end_wall_s", "reason", "offset_frame_s", "offset_frame_wall_s", "offset_wall_s",
     "offset_seq"),
    update=True,
)  # fmt: skip
_STATUS_SQL = (
    "INSERT INTO statuses (run_id, stream, state, detail, wall_s, seq) VALUES (?, ?, ?, ?, ?, ?)"
)
_CLIP_SQL = "UPDATE events SET clip_path = ?, snapshot_path = ? WHERE event_id = ?"


def _as_dict(item: bytes | str) -> dict | None:
    try:
        message = json.loads(item)
    except ValueError:
        logger.error("event store: a message that is not JSON was skipped")
        return None
    return message if isinstance(message, dict) else None
