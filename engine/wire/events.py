"""What the detector publishes: action events, stream status and heartbeats, their topics and
their JSON form on the wire (schema in `EVENT_SCHEMA`, documented in the README).

Topics put the widest useful filter first, so ZeroMQ prefix subscriptions select:
`action.` (all actions), `action.cam1.` (one stream), `action.cam1.onset.` (one stream's
onsets), `status.cam1.`, `clip.cam1.`, `heartbeat`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

SCHEMA = "actstream.event/1"
MESSAGE_TYPES = ("onset", "offset", "status", "clip", "heartbeat")
EVENT_SCHEMA: dict[str, Any] = json.loads(
    (Path(__file__).with_name("event_schema.json")).read_text()
)


@dataclass(frozen=True, slots=True)
class ActionEvent:
    """An action's onset or offset (an onset and its offset share `event_id`).

    Times are in the stream's own clock (`*_s`) and in wall-clock Unix time (`*_wall_s`).
    The decision was taken on the newest frame at stream time `frame_s`, decoded at
    `frame_wall_s`. `lookahead_frames`: future frames the model waits for (its output for a
    frame comes that many frames later; 0 for a causal model). `late`: the action was found
    only well after its start (`tracker.late_after_s`): its onset is not news of a fresh start.
    `sample_rate_hz`: set for a signal stream, whose events also give their times as sample
    indices (`start_sample`, `frame_sample`, `end_sample`). `source_clock_s`: the source's own
    clock at the decision frame, for sources that have one (LSL timestamps).
    """

    type: Literal["onset", "offset"]
    event_id: str
    stream: str
    label: str
    score: float
    start_s: float
    start_wall_s: float
    frame_s: float
    frame_wall_s: float
    end_s: float | None = None
    end_wall_s: float | None = None
    reason: str | None = None
    lookahead_frames: int = 0
    late: bool = False
    sample_rate_hz: float | None = None
    source_clock_s: float | None = None

    @property
    def topic(self) -> str:
        return f"action.{self.stream}.{self.type}.{self.label}"

    def sample(self, t_s: float) -> int:
        """The sample index at stream time `t_s` (signal streams)."""
        assert self.sample_rate_hz is not None
        return max(0, round(t_s * self.sample_rate_hz))

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": self.type,
            "stream": self.stream,
            "event_id": self.event_id,
            "label": self.label,
            "score": round(self.score, 6),
            # Action bounds come from regression: sub-millisecond digits are numeric noise
            # (they differ between backends), so stream times are given to the millisecond.
            "start_s": round(self.start_s, 3),
            "start_wall_s": round(self.start_wall_s, 6),
            "frame_s": round(self.frame_s, 6),
            "frame_wall_s": round(self.frame_wall_s, 6),
            "lookahead_frames": self.lookahead_frames,
            "late": self.late,
        }
        if self.type == "offset":
            assert self.end_s is not None and self.end_wall_s is not None and self.reason
            body.update(
                end_s=round(self.end_s, 3),
                end_wall_s=round(self.end_wall_s, 6),
                duration_s=round(self.end_s - self.start_s, 3),
                reason=self.reason,
            )
        if self.sample_rate_hz is not None:
            body.update(
                sample_rate_hz=self.sample_rate_hz,
                start_sample=self.sample(self.start_s),
                frame_sample=self.sample(self.frame_s),
            )
            if self.end_s is not None:
                body["end_sample"] = self.sample(self.end_s)
        if self.source_clock_s is not None:
            body["source_clock_s"] = round(self.source_clock_s, 6)
        return body


@dataclass(frozen=True, slots=True)
class StreamStatus:
    """A stream's state change: connected, disconnected, reconnecting, ended, failed, stopped."""

    stream: str
    state: str
    detail: str = ""

    @property
    def topic(self) -> str:
        return f"status.{self.stream}.{self.state}"

    def body(self) -> dict[str, Any]:
        return {"type": "status", "stream": self.stream, "state": self.state, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Sent every `publisher.heartbeat_s`: the detector is alive; each stream's state."""

    uptime_s: float
    streams: dict[str, str]

    topic = "heartbeat"

    def body(self) -> dict[str, Any]:
        return {
            "type": "heartbeat",
            "stream": None,
            "uptime_s": round(self.uptime_s, 3),
            "streams": dict(self.streams),
        }


@dataclass(frozen=True, slots=True)
class ClipReady:
    """An action's evidence clip file is complete (sent after its offset, once the post-roll
    has been recorded). `clip_start_s` / `clip_end_s`: the stream times the clip covers (it
    starts at a keyframe); `snapshot_path`: the decision frame's JPEG (None: none was made);
    `reencoded`: False when the clip holds the source's own packets; `ended`: why recording
    stopped ("complete", "stream_ended", "max_length", "shutdown")."""

    stream: str
    event_id: str
    label: str
    clip_path: str
    snapshot_path: str | None
    clip_start_s: float
    clip_end_s: float
    bytes: int
    reencoded: bool
    ended: str

    @property
    def topic(self) -> str:
        return f"clip.{self.stream}.{self.label}"

    def body(self) -> dict[str, Any]:
        return {
            "type": "clip",
            "stream": self.stream,
            "event_id": self.event_id,
            "label": self.label,
            "clip_path": self.clip_path,
            "snapshot_path": self.snapshot_path,
            "clip_start_s": round(self.clip_start_s, 3),
            "clip_end_s": round(self.clip_end_s, 3),
            "bytes": self.bytes,
            "reencoded": self.reencoded,
            "ended": self.ended,
        }


Message = ActionEvent | StreamStatus | ClipReady | Heartbeat


def encode(
    message: Message, *, run_id: str, seq: int, wall_s: float, snapshot: bool = False
) -> tuple[bytes, bytes]:
    """The multipart frames [topic, JSON payload] of one message (`snapshot`: state re-sent to
    a subscriber that just joined, marked `"snapshot": true`)."""
    body = {"schema": SCHEMA, "run_id": run_id, "seq": seq, "wall_s": round(wall_s, 6)}
    body.update(message.body())
    if snapshot:
        body["snapshot"] = True
    return message.topic.encode(), json.dumps(body, separators=(",", ":")).encode()


def decode(frames: list[bytes]) -> tuple[str, dict[str, Any]]:
    """[topic, payload] → (topic, message dict); raises ValueError on a malformed message."""
    if len(frames) != 2:
        raise ValueError(f"expected 2 frames [topic, payload], got {len(frames)}")
    message = json.loads(frames[1])
    if not isinstance(message, dict) or message.get("schema") != SCHEMA:
        raise ValueError(f"not an {SCHEMA} message")
    return frames[0].decode(), message
