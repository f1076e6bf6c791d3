"""Prometheus metrics: one `Metrics` object owns its registry and declares every metric.

Names follow Prometheus conventions: prefix `actstream_`, base units (seconds), `_total` on
counters (added by the client library), histograms with buckets that resolve milliseconds.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


@dataclass(frozen=True, kw_only=True)
class MetricsConfig:
    """Attributes:
    port: HTTP port of /metrics (None: no metrics endpoint).
    host: address to bind (loopback by default).
    """

    port: int | None = 9400
    host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        if self.port is not None and not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {self.port}")


logger = logging.getLogger(__name__)

LATENCY_BUCKETS_S = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.02,
    0.033,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)


class MetricsPortError(OSError):
    """The metrics endpoint could not bind its port."""


class Metrics:
    """Every metric of one detector process, in its own registry."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.frames_decoded = Counter(
            "actstream_frames_decoded",
            "Frames decoded by a stream's reader.",
            ["stream"],
            registry=r,
        )
        self.frames_processed = Counter(
            "actstream_frames_processed",
            "Frames that went through the model.",
            ["stream"],
            registry=r,
        )
        self.frames_dropped = Counter(
            "actstream_frames_dropped",
            "Frames dropped before the model (reason: buffer_full).",
            ["stream", "reason"],
            registry=r,
        )
        self.decode_errors = Counter(
            "actstream_decode_errors",
            "Packets that could not be decoded (damaged media), skipped.",
            ["stream"],
            registry=r,
        )
        self.sample_gaps = Counter(
            "actstream_sample_gaps",
            "Gaps in a live signal stream's sample clock (samples lost or late).",
            ["stream"],
            registry=r,
        )
        self.reconnects = Counter(
            "actstream_stream_reconnects",
            "Reconnect attempts of a live stream.",
            ["stream"],
            registry=r,
        )
        self.stream_up = Gauge(
            "actstream_stream_up", "1 while a stream is connected, else 0.", ["stream"], registry=r
        )
        self.buffer_frames = Gauge(
            "actstream_buffer_frames",
            "Frames waiting in a stream's buffer.",
            ["stream"],
            registry=r,
        )
        self.stage_seconds = Histogram(
            "actstream_stage_duration_seconds",
            "Time spent in one pipeline stage per call.",
            ["stage"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.frame_to_event_seconds = Histogram(
            "actstream_frame_to_event_latency_seconds",
            "From the decode of the newest frame behind an event to its publication.",
            ["stream"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.frame_to_decision_seconds = Histogram(
            "actstream_frame_to_decision_latency_seconds",
            "From the decode of a head run's newest frame to the end of its decision (head and "
            "tracker): the latency every event of that run has before publication, events or not.",
            ["stream"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.events = Counter(
            "actstream_events_published",
            "Action events published.",
            ["stream", "type", "label"],
            registry=r,
        )
        self.messages_dropped = Counter(
            "actstream_messages_dropped",
            "Messages the publisher could not queue or send.",
            registry=r,
        )
        self.messages_unheard = Counter(
            "actstream_messages_unheard",
            "Messages published while no subscription matched them (nobody received them).",
            registry=r,
        )
        self.store_writes = Counter(
            "actstream_store_writes",
            "Messages committed to the event store.",
            registry=r,
        )
        self.store_errors = Counter(
            "actstream_store_errors",
            "Event store commits that failed (disk full, read-only); retried.",
            registry=r,
        )
        self.store_dropped = Counter(
            "actstream_store_dropped",
            "Messages the event store could not keep (its queue was full).",
            registry=r,
        )
        self.clips_written = Counter(
            "actstream_clips",
            "Evidence clips completed.",
            ["stream"],
            registry=r,
        )
        self.clip_errors = Counter(
            "actstream_clip_errors",
            "Evidence clips abandoned because they could not be written (disk full, "
            "folder not writable).",
            registry=r,
        )
        self.clip_cpu_seconds = Counter(
            "actstream_clip_cpu_seconds",
            "CPU time of the clip writer thread (remuxing, snapshots, retention).",
            registry=r,
        )
        self.clip_bytes = Gauge(
            "actstream_clip_folder_bytes",
            "Size of the clips folder's clips and snapshots (after retention).",
            registry=r,
        )
        self.batch_size = Histogram(
            "actstream_backbone_batch_size",
            "Frames per backbone batch.",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=r,
        )
        self._server = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None

    def add_stream(self, stream: str, buffer_depth: Callable[[], float]) -> None:
        """Creates a stream's series (so they read 0 before anything happens)."""
        self.frames_decoded.labels(stream)
        self.frames_processed.labels(stream)
        self.frames_dropped.labels(stream, "buffer_full")
        self.reconnects.labels(stream)
        self.decode_errors.labels(stream)
        self.sample_gaps.labels(stream)
        self.stream_up.labels(stream).set(0)
        self.buffer_frames.labels(stream).set_function(buffer_depth)
        self.frame_to_event_seconds.labels(stream)
        self.frame_to_decision_seconds.labels(stream)

    def serve(self, host: str, port: int) -> int:
        """Starts the /metrics HTTP endpoint; returns the bound port."""
        try:
            self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise MetricsPortError(
                f"metrics endpoint http://{host}:{port}/metrics: cannot bind "
                f"({exc.strerror or exc});"
                " choose another port with --metrics-port, or --metrics-port 0 for a free one"
            ) from None
        self.port = self._server.server_address[1]
        logger.info("metrics on http://%s:%d/metrics", host, self.port)
        return self.port

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            if self._thread is not None:
                self._thread.join(5)
            self._server = None
