"""Reading the event store: actions by stream, label, time and state (`actstream events`
and the HTTP API), and the times those queries take."""

from __future__ import annotations

import datetime as dt
import re
import time
from typing import Any

from engine.store.schema import EVENT_COLUMNS, Database

DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def query_events(
    conn: Database,
    *,
    streams: list[str] | tuple[str, ...] = (),
    labels: list[str] | tuple[str, ...] = (),
    since_wall_s: float | None = None,
    until_wall_s: float | None = None,
    open_only: bool = False,
    event_ids: list[str] | tuple[str, ...] = (),
    limit: int | None = 50,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Events (dicts of `EVENT_COLUMNS`, `late` as bool) whose start lies in [since, until),
    of the given streams and labels (none given: all), newest first, `offset` newest ones
    skipped (`limit` None: all); `open_only`: actions whose offset has not been stored;
    `event_ids`: only these."""
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
    everything = 2**62  # `limit` None: no limit (OFFSET needs a LIMIT in SQLite)
    rows = conn.execute(sql, (*args, everything if limit is None else limit, offset)).fetchall()
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
