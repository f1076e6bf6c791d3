"""`actstream events`: the event store queried from the shell."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys

from engine.cli.common import fail


def add_parser(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser(
        "events",
        help="list the actions kept in the event store",
        description="Actions from the event store that actstream run writes (store.path, "
        "default runs/events.db), newest last: one line each (start, stream, label, score, "
        "duration or 'open', reason, event id), or JSON lines with every column (--json). "
        "Times: Unix seconds, ISO 8601 (2026-12-01T21:00:00, UTC unless it gives an offset) "
        "or a time ago (30s, 15m, 2h, 7d).",
    )
    ev.add_argument(
        "--store",
        default="runs/events.db",
        help="the SQLite file or postgresql:// URL (default runs/events.db)",
    )
    ev.add_argument("--stream", action="append", default=[], help="only this stream (repeatable)")
    ev.add_argument("--label", action="append", default=[], help="only this label (repeatable)")
    ev.add_argument("--since", metavar="TIME", help="actions that started at or after TIME")
    ev.add_argument("--until", metavar="TIME", help="actions that started before TIME")
    ev.add_argument("--open", action="store_true", help="only actions without an offset yet")
    ev.add_argument(
        "--limit", type=int, default=50, help="the newest N actions (default 50; 0: all)"
    )
    ev.add_argument("--json", action="store_true", help="JSON lines with every column")
    ev.set_defaults(handler=events_command)


def events_command(args: argparse.Namespace) -> int:
    from engine.store.query import parse_time, query_events
    from engine.store.schema import StoreError, open_database

    try:
        since = parse_time(args.since) if args.since else None
        until = parse_time(args.until) if args.until else None
    except ValueError as exc:
        return fail(f"--since/--until: {exc}")
    if args.limit < 0:
        return fail(f"--limit must be >= 0, got {args.limit}")
    try:
        conn = open_database(args.store, read_only=True)
    except StoreError as exc:
        return fail(str(exc))
    try:
        rows = query_events(
            conn,
            streams=args.stream,
            labels=args.label,
            since_wall_s=since,
            until_wall_s=until,
            open_only=args.open,
            limit=args.limit or None,
        )
    finally:
        conn.close()
    out = sys.stdout
    for row in reversed(rows):  # newest last, as a log reads
        if args.json:
            out.write(json.dumps(row, separators=(",", ":")) + "\n")
        else:
            out.write(event_line(row) + "\n")
    out.flush()
    return 0


def event_line(row: dict) -> str:
    """One action as a line: start time (UTC), stream, label, score, duration, reason, id,
    and `clip` when its evidence clip is written."""
    start = dt.datetime.fromtimestamp(row["start_wall_s"], dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    if row["end_s"] is None:
        length = "open"
    else:
        length = f"{row['end_s'] - row['start_s']:.1f} s"
    late = " late" if row["late"] else ""
    reason = row["reason"] or "-"
    return (
        f"{start[:-3]}Z  {row['stream']:<12} {row['label']:<10} {row['score']:.2f}  "
        f"{length:>8}  {reason:<13}{late}  {row['event_id']}"
        + ("  clip" if row.get("clip_path") else "")
    )
