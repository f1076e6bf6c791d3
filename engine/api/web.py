"""The web view's routes (the page, its live feeds, ground truth and health), added to the
API's app by `engine.api.app.build_app`; `engine.api.live` holds the feeds' machinery."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel

from engine.api.live import BOUNDARY, HistogramWindow, LiveHub, PushResponse, mjpeg_frames
from stream.preview import MAX_FPS, MAX_WIDTH

logger = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
TOKEN_COOKIE = "actstream_token"


class TruthAction(BaseModel):
    label: str
    actor: int
    start_s: float
    end_s: float
    start_wall_s: float
    end_wall_s: float
    done: bool


def add_web_routes(
    app: FastAPI,
    view,
    *,
    stream_infos: Callable[[], list],
    known: Callable[[str], None],
    started: float,
    token: str | None,
    store_path: str | None,
    clips_dir: str | None,
) -> None:
    """/, /static/*, /api/live, /api/streams/{id}/live.mjpeg, /api/streams/{id}/truth and
    /api/status on `app`; `app.state.hub` becomes the live feed's message sink."""
    truth_lock = threading.Lock()

    @app.get("/api/streams/{stream_id}/truth", response_model=list[TruthAction])
    def truth(stream_id: str, since_s: float = Query(0.0, ge=0, le=1e9)):
        """Ground truth of a `synthetic://` stream (empty for other sources): its true
        actions that began after stream time `since_s` and before the newest processed frame,
        with wall-clock times by that frame's clock."""
        known(stream_id)
        scene, clock = view.scenes.get(stream_id), view.clock(stream_id)
        if scene is None or clock is None:
            return []
        now_s, wall_s = clock
        offset = wall_s - now_s
        with truth_lock:  # the scene draws its schedule lazily
            actions = scene.segments(now_s)
        return [
            TruthAction(
                label=a.label,
                actor=a.actor,
                start_s=a.start_s,
                end_s=a.end_s,
                start_wall_s=round(a.start_s + offset, 3),
                end_wall_s=round(a.end_s + offset, 3),
                done=a.end_s <= now_s,
            )
            for a in actions
            if a.end_s > since_s
        ]

    quantiles = HistogramWindow(view.registry)

    def health() -> dict:
        q = quantiles.quantiles(
            {
                "actstream_stage_duration_seconds": "stage",
                "actstream_frame_to_event_latency_seconds": "stream",
                "actstream_backbone_batch_size": "",
            }
        )

        def ms(values):  # p50, p99 in milliseconds
            return [None if v is None else round(v * 1000, 2) for v in values[:2]]

        batch = q["actstream_backbone_batch_size"].get("", [None, None, None])[2]
        return {
            "ok": view.alive(),
            "uptime_s": round(time.monotonic() - started, 1),
            "stages_ms": {
                k: ms(v) for k, v in sorted(q["actstream_stage_duration_seconds"].items())
            },
            "frame_to_event_ms": {
                k: ms(v) for k, v in sorted(q["actstream_frame_to_event_latency_seconds"].items())
            },
            "batch_size_mean": None if batch is None else round(batch, 2),
            "live_clients": hub.clients,
            "live_dropped": dropped_pages[0],
            **view.info,
        }

    @app.get("/api/status")
    def status():
        """Health at a glance: per-stage latency p50/p99 (ms, over about the last minute),
        frame-to-event latency per stream, backbone batch size, the model, its backend and
        precision, uptime and versions."""
        return health()

    dropped_pages = [0]

    def count_drop() -> None:
        dropped_pages[0] += 1
        logger.info("web view: a client that stopped reading was dropped")

    def hello() -> dict:
        return {
            "wall_s": time.time(),
            "streams": [s.model_dump() for s in stream_infos()],
            "synthetic": sorted(view.scenes),
            "store": store_path is not None,
            "clips": clips_dir is not None,
            "live_frames": view.previews is not None,
            "status": health(),
        }

    last_stats: list = [0.0, None]

    def stats() -> dict:  # one computation a second, whoever many pages ask
        now = time.monotonic()
        if last_stats[1] is None or now - last_stats[0] >= 0.9:
            last_stats[:] = [now, {
                "wall_s": time.time(),
                "streams": [s.model_dump() for s in stream_infos()],
                "status": health(),
            }]  # fmt: skip
        return last_stats[1]

    hub = LiveHub(hello, stats, count_drop)
    app.state.hub = hub

    @app.get("/api/live", responses={200: {"content": {"text/event-stream": {}},
                                           "description": "the feed"}})  # fmt: skip
    async def live():
        """Server-Sent Events for the web view: `hello` (streams, status), then every message
        the detector sends as `message` (its wire JSON) and `stats` every second."""
        return hub.response()

    @app.get(
        "/api/streams/{stream_id}/live.mjpeg",
        responses={200: {"content": {"multipart/x-mixed-replace": {}}, "description": "frames"}},
    )
    async def live_frames(
        stream_id: str,
        width: int = Query(320, ge=16, le=MAX_WIDTH, description="frame width in pixels"),
        fps: float = Query(2.0, gt=0, le=MAX_FPS, description="frames a second"),
    ):
        """The stream's current frames as MJPEG (multipart/x-mixed-replace), at most `width`
        pixels wide and `fps` frames a second."""
        known(stream_id)
        if view.previews is None:
            raise HTTPException(404, "no live frames in this detector")
        return PushResponse(
            mjpeg_frames(view.previews, stream_id, width=width, fps=fps, watcher=object()),
            f"multipart/x-mixed-replace; boundary={BOUNDARY}",
            lambda why: why == "not reading" and count_drop(),
        )

    @app.get("/", include_in_schema=False)
    def page(request: Request):
        response = FileResponse(STATIC / "index.html", media_type="text/html")
        given = request.query_params.get("token")
        if token and given:  # the page's images, clips and feeds then carry it as a cookie
            response.set_cookie(TOKEN_COOKIE, given, httponly=True, samesite="strict")
        return response

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str):
        file = STATIC / name
        if "/" in name or name.startswith(".") or not file.is_file():
            raise HTTPException(404, f"no file {name!r}")
        media = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
        return FileResponse(file, media_type=media.get(file.suffix, "application/octet-stream"))
