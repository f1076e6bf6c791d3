"""The API's routes and response models (`engine.api` documents the endpoints); imported
only when the API is served."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel

from engine.store.query import parse_time, query_events
from engine.store.schema import StoreError, is_url, open_database

MAX_PAGE = 1000
RATE_WINDOW_S = 10.0  # /api/streams' frame rate: frames processed over about this long


class Event(BaseModel):
    """One action from the event store (its onset, completed by its offset)."""

    event_id: str
    run_id: str
    stream: str
    label: str
    score: float
    onset_score: float | None
    start_s: float
    start_wall_s: float
    end_s: float | None
    end_wall_s: float | None
    reason: str | None
    late: bool
    lookahead_frames: int
    onset_frame_s: float | None
    onset_frame_wall_s: float | None
    onset_wall_s: float | None
    onset_seq: int | None
    offset_frame_s: float | None
    offset_frame_wall_s: float | None
    offset_wall_s: float | None
    offset_seq: int | None
    model: str
    clip_path: str | None
    snapshot_path: str | None


class OpenAction(BaseModel):
    event_id: str
    label: str
    score: float
    start_s: float
    start_wall_s: float
    late: bool


class StreamInfo(BaseModel):
    stream: str
    state: str
    frames_processed: int
    frames_dropped: int
    fps: float
    open_actions: list[OpenAction]


class Health(BaseModel):
    ok: bool
    uptime_s: float
    streams: dict[str, str]


@dataclass
class DetectorView:
    """What the API reads from the running detector: `current()` → (state per stream, open
    onsets) as the publisher last sent them; `alive()`: whether it still publishes; the
    metrics registry for frame counts."""

    current: Callable[[], tuple[dict[str, str], list]]
    alive: Callable[[], bool]
    registry: object


def build_app(store_path: str | None, view: DetectorView, clips_dir: str | None = None) -> FastAPI:
    """The API over the store at `store_path` (None: no store), the running detector, and the
    evidence files under `clips_dir` (None: none are served)."""
    app = FastAPI(
        title="actstream",
        summary="Actions detected in live streams: the event store and each stream's state.",
        version="1",
        docs_url=None,  # the interactive pages load scripts from a CDN; the document is here
        redoc_url=None,
    )
    started = time.monotonic()
    samples: deque[tuple[float, dict[str, float]]] = deque(maxlen=256)

    def store():
        if store_path is None:
            raise HTTPException(404, "no event store (store.path is null)")
        if not is_url(store_path) and not Path(store_path).exists():
            raise HTTPException(503, "the event store is not written yet")
        try:
            return open_database(store_path, read_only=True)
        except StoreError as exc:
            raise HTTPException(503, str(exc)) from None

    def when(text: str | None, name: str) -> float | None:
        try:
            return parse_time(text) if text else None
        except ValueError as exc:
            raise HTTPException(422, f"{name}: {exc}") from None

    @app.get("/api/events", response_model=list[Event])
    def events(
        stream: list[str] = Query(default=[], description="only these streams"),
        label: list[str] = Query(default=[], description="only these labels"),
        since: str | None = Query(None, description="start at or after: Unix s, ISO 8601, 15m"),
        until: str | None = Query(None, description="start before: Unix s, ISO 8601, 15m"),
        open: bool = Query(False, description="only actions without an offset yet"),
        limit: int = Query(50, ge=1, le=MAX_PAGE),
        offset: int = Query(0, ge=0),
    ):
        """Actions, newest first."""
        conn = store()
        try:
            return query_events(
                conn,
                streams=stream,
                labels=label,
                since_wall_s=when(since, "since"),
                until_wall_s=when(until, "until"),
                open_only=open,
                limit=limit,
                offset=offset,
            )
        finally:
            conn.close()

    @app.get("/api/events/{event_id}", response_model=Event)
    def event(event_id: str):
        """One action by its event id."""
        conn = store()
        try:
            found = query_events(conn, event_ids=[event_id], limit=1)
        finally:
            conn.close()
        if not found:
            raise HTTPException(404, f"no event {event_id!r}")
        return found[0]

    def evidence(event_id: str, column: str, what: str, media_type: str) -> FileResponse:
        found = event(event_id)
        path = found[column]
        if not path:
            raise HTTPException(
                404,
                f"event {event_id!r} has no {what}: it is written once the action's "
                "post-roll is recorded, and only for sources with encoded video",
            )
        file = Path(path)
        root = Path(clips_dir).resolve() if clips_dir else None
        if root is None or not file.resolve().is_relative_to(root):
            raise HTTPException(404, f"event {event_id!r}: its {what} is not in this detector's "
                                "clips.dir")  # fmt: skip
        if not file.is_file():
            raise HTTPException(410, f"event {event_id!r}: its {what} was deleted (retention)")
        return FileResponse(file, media_type=media_type, filename=f"{event_id}{file.suffix}")

    @app.get("/api/events/{event_id}/clip.mp4", response_class=FileResponse)
    def clip(event_id: str):
        """The action's evidence clip (mp4 of the source's own packets)."""
        return evidence(event_id, "clip_path", "clip", "video/mp4")

    @app.get("/api/events/{event_id}/snapshot.jpg", response_class=FileResponse)
    def snapshot(event_id: str):
        """The decision frame of the action's onset, at the source's resolution."""
        return evidence(event_id, "snapshot_path", "snapshot", "image/jpeg")

    @app.get("/api/streams", response_model=list[StreamInfo])
    def streams():
        """Each stream: state, frame counts, frame rate over the last seconds, open actions."""
        states, open_onsets = view.current()
        now = time.monotonic()
        counts = {
            sid: _sample(view.registry, "actstream_frames_processed_total", stream=sid)
            for sid in states
        }
        samples.append((now, counts))
        past = [s for s in samples if now - s[0] >= 1.0 and now - s[0] <= RATE_WINDOW_S]
        then, before = past[0] if past else (started, {})
        out = []
        for sid, state in states.items():
            dropped = sum(
                _sample(view.registry, "actstream_frames_dropped_total", stream=sid, reason=r)
                for r in ("buffer_full", "late")
            )
            elapsed = max(now - then, 1e-6)
            out.append(
                StreamInfo(
                    stream=sid,
                    state=state,
                    frames_processed=int(counts[sid]),
                    frames_dropped=int(dropped),
                    fps=round((counts[sid] - before.get(sid, 0.0)) / elapsed, 2),
                    open_actions=[  # as the wire gives them (rounded alike)
                        OpenAction(**{k: b[k] for k in OpenAction.model_fields})
                        for b in (o.body() for o in open_onsets if o.stream == sid)
                    ],
                )
            )
        return out

    @app.get("/healthz", response_model=Health, responses={503: {"model": Health}})
    def healthz():
        """200 while the detector publishes; 503 once its publisher has stopped."""
        states, _ = view.current()
        body = Health(
            ok=view.alive(), uptime_s=round(time.monotonic() - started, 3), streams=states
        )
        return JSONResponse(body.model_dump(), status_code=200 if body.ok else 503)

    return app


def _sample(registry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0
