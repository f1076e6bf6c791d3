"""How readers open and pace sources: the `stream` config section (`StreamConfig`) and, with
the model's frame size and rate, a reader's options (`ReaderOptions`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from stream.reconnect import Backoff
from stream.signals import SignalFraming


@dataclass(frozen=True, kw_only=True)
class StreamConfig:
    """How sources are read.

    Attributes:
        buffer_frames: frames buffered per stream between its reader and the model.
        timeout_s: a live source silent for this long is a disconnect (and the open timeout).
        rtsp_transport: "tcp" (no loss, no reordering) or "udp".
        realtime: play files at their own frame rate, as a camera would (False: as fast as
            the model takes them; `actstream run --fast`).
        reconnect_initial_s, reconnect_max_s, reconnect_jitter: capped exponential back-off.
        retry_first_open: keep retrying a live source unreachable at start-up instead of
            refusing to start.
        reader_nice: added to the reader threads' nice value (Linux; 0-19): decoding yields the
            cores to the model when both want them, and fills them when the model waits.
        readers: "thread" decodes each stream on a thread of the detector's process; "process"
            in a child process of its own, handing frames over through shared memory (video
            sources; sensor streams stay on threads): decoding off the model's GIL, and a
            decoder that crashes or hangs takes only its own process down.
        reader_hang_s: a reader process silent this long (it beats every second, also while a
            source is quiet) is killed and started again, as a reconnect.
        hwaccel: "none" decodes in software; "cuda" (NVDEC) or "vaapi" decodes on that device,
            "auto" on the first of them that works here; a device that does not work means
            software decoding, the reason logged once (`stream.hwaccel`).
        rotate: "auto" turns frames upright as the video's display matrix says (phone
            footage); 0, 90, 180 or 270 turns every frame that many degrees clockwise instead
            (0: as decoded, ignoring the metadata).
    """

    buffer_frames: int = 32
    timeout_s: float = 5.0
    rtsp_transport: Literal["tcp", "udp"] = "tcp"
    realtime: bool = True
    reconnect_initial_s: float = 0.5
    reconnect_max_s: float = 10.0
    reconnect_jitter: float = 0.2
    retry_first_open: bool = False
    reader_nice: int = 5
    readers: Literal["thread", "process"] = "thread"
    reader_hang_s: float = 5.0
    hwaccel: Literal["none", "auto", "cuda", "vaapi"] = "none"
    rotate: Literal["auto", 0, 90, 180, 270] = "auto"

    def __post_init__(self) -> None:
        for name in (
            "buffer_frames",
            "timeout_s",
            "reconnect_initial_s",
            "reconnect_max_s",
            "reader_hang_s",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
            if getattr(self, name) == float("inf"):
                raise ValueError(f"{name} must be finite, got .inf")
        if self.reader_hang_s < 2:
            raise ValueError(
                f"reader_hang_s must be at least 2 (reader processes beat every second), "
                f"got {self.reader_hang_s}"
            )
        if not 0 <= self.reader_nice <= 19:
            raise ValueError(f"reader_nice must be in [0, 19], got {self.reader_nice}")
        if not 0 <= self.reconnect_jitter < 1:
            raise ValueError(f"reconnect_jitter must be in [0, 1), got {self.reconnect_jitter}")
        if self.reconnect_max_s < self.reconnect_initial_s:
            raise ValueError("reconnect_max_s must be >= reconnect_initial_s")

    @property
    def backoff(self) -> Backoff:
        """Reconnect delays for live sources."""
        return Backoff(
            initial_s=self.reconnect_initial_s,
            max_s=self.reconnect_max_s,
            jitter=self.reconnect_jitter,
        )


@dataclass(frozen=True, kw_only=True)
class ReaderOptions:
    """What a reader needs: the frames the model takes (size and rate, from the model) and
    the `stream` settings (the config's `stream` section, one type for both).

    Attributes:
        width, height: frame size delivered to the model (resized inside PyAV).
        fps: the model's frame rate; faster sources are sampled down to it.
        stream: how sources are opened, paced and reconnected.
        signal: how a signal model frames samples (None: the model takes video frames).
    """

    width: int = 64
    height: int = 64
    fps: float = 10.0
    stream: StreamConfig = field(default_factory=StreamConfig)
    signal: SignalFraming | None = None
