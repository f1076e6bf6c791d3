"""The API's routes and response models (`engine.api` documents the endpoints); imported
only when the API is served."""

from __future__ import annotations

import hmac
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel

from engine.api.web import TOKEN_COOKIE, add_web_routes
from engine.store.query import parse_time, query_events
from engine.store.schema import StoreError, is_url, open_database

MAX_PAGE = 1000
MAX_QUERY_CHARS = 4096  # longer query strings are refused (400)
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
    previews: object = None  # stream.preview.Previews: the live view's frames (None: none)
    info: dict = field(default_factory=dict)  # backend, precision, model, versions, ...
    clock: Callable[[str], tuple[float, float] | None] = lambda _sid: None
    scenes: dict = field(default_factory=dict)  # stream -> SyntheticScene (ground truth)


def build_app(
    store_path: str | None,
    view: DetectorView,
    clips_dir: str | None = None,
    token: str | None = None,
) -> FastAPI:
    """The API and web view over the store at `store_path` (None: no store), the running
    detector, and the evidence files under `clips_dir` (None: none are served). With `token`,
    every request but /healthz must carry it (`Authorization: Bearer`, `?token=`, or the
    cookie the page sets). `app.state.hub.on_sent` is the live view's message sink."""
    app = FastAPI(
        title="actstream",
        summary="Actions detected in live streams: the event store and each stream's state.",
        version="1",
        docs_url=None,  # the interactive pages load scripts from a CDN; the document is here
        redoc_url=None,
    )
    started = time.monotonic()

    @app.exception_handler(RequestValidationError)
    async def bad_request(_request: Request, exc: RequestValidationError):
        reasons = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'request'}: {e.get('msg')}"
            for e in exc.errors()
        )
        return JSONResponse({"detail": reasons[:500]}, status_code=400)

    app.add_middleware(Guard, token=token)

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
            raise HTTPException(400, f"{name}: {exc}") from None

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

    def stream_infos() -> list[StreamInfo]:
        states, open_onsets = view.current()
        now = time.monotonic()
        frames = _per_stream(view.registry)
        counts = {sid: frames.get(("processed", sid), 0.0) for sid in states}
        samples.append((now, counts))
        past = [s for s in samples if now - s[0] >= 1.0 and now - s[0] <= RATE_WINDOW_S]
        then, before = past[0] if past else (started, {})
        out = []
        for sid, state in states.items():
            dropped = frames.get(("dropped", sid), 0.0)
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

    @app.get("/api/streams", response_model=list[StreamInfo])
    def streams():
        """Each stream: state, frame counts, frame rate over the last seconds, open actions."""
        return stream_infos()

    def known(stream_id: str) -> None:
        if stream_id not in view.current()[0]:
            raise HTTPException(404, f"no stream {stream_id!r}")

    @app.get("/api/streams/{stream_id}", response_model=StreamInfo)
    def one_stream(stream_id: str):
        """One stream's state, frame counts, frame rate and open actions."""
        known(stream_id)
        return next(s for s in stream_infos() if s.stream == stream_id)

    add_web_routes(
        app,
        view,
        stream_infos=stream_infos,
        known=known,
        started=started,
        token=token,
        store_path=store_path,
        clips_dir=clips_dir,
    )

    @app.get("/healthz", response_model=Health, responses={503: {"model": Health}})
    def healthz():
        """200 while the detector publishes; 503 once its publisher has stopped."""
        states, _ = view.current()
        body = Health(
            ok=view.alive(), uptime_s=round(time.monotonic() - started, 3), streams=states
        )
        return JSONResponse(body.model_dump(), status_code=200 if body.ok else 503)

    return app


def _per_stream(registry) -> dict[tuple[str, str], float]:
    """{("processed" | "dropped", stream): frames} in one pass over the registry (each
    `get_sample_value` would walk all of it)."""
    out: dict[tuple[str, str], float] = {}
    for family in registry.collect():
        if family.name not in ("actstream_frames_processed", "actstream_frames_dropped"):
            continue
        kind = "processed" if family.name.endswith("processed") else "dropped"
        for sample in family.samples:
            if sample.name.endswith("_total"):
                key = (kind, sample.labels.get("stream", ""))
                out[key] = out.get(key, 0.0) + sample.value
    return out


class Guard:
    """Refuses an oversized query string (400) and, with a token, every request but /healthz
    that does not carry it (401). Plain ASGI: streamed responses pass through untouched (a
    `BaseHTTPMiddleware` would copy every chunk through a stream of its own)."""

    def __init__(self, app, token: str | None) -> None:
        self.app, self.token = app, token

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            request = Request(scope)
            refusal = self.refusal(request)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def refusal(self, request: Request) -> JSONResponse | None:
        if len(request.url.query) > MAX_QUERY_CHARS:
            return JSONResponse(
                {"detail": f"query string over {MAX_QUERY_CHARS} characters"}, status_code=400
            )
        if self.token and request.url.path != "/healthz":
            given = (
                request.headers.get("authorization", "").removeprefix("Bearer ").strip()
                or request.query_params.get("token")
                or request.cookies.get(TOKEN_COOKIE)
                or ""
            )
            if not hmac.compare_digest(given.encode(), self.token.encode()):
                return JSONResponse(
                    {"detail": "a token is required: add ?token=... (http.token)"},
                    status_code=401,
                )
        return None
