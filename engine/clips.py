"""Evidence clips and snapshots: per action, an mp4 of the source's own packets from
`clips.pre_s` before the onset to `clips.post_s` after the offset, and a JPEG of the decision
frame at the source's resolution; retention by age and by total size.

Each PyAV stream keeps its recent encoded packets in a `stream.packets.PacketRing` (filled by
its reader). The detector tells the `ClipWriter` about every onset and offset; one writer
thread does the rest, so neither the readers nor the model ever wait on the disk:
- at an onset it opens `DIR/<stream>/<YYYY-MM-DD>/<event_id>.mp4.part`, remuxes the ring's
  packets from the newest keyframe at or before `start_s - pre_s`, and decodes the packets
  from the keyframe before the decision frame up to it for the snapshot (`<event_id>.jpg`);
- it keeps appending the stream's packets as the model gets to them (no further than the
  newest frame the detector processed, so that an offset still to come cannot find its
  post-roll already overshot), until the first packet past
  `end_s + post_s` (or the stream's connection ends, `clips.max_s` is reached, or the detector
  shuts down), then closes the file, renames it to `.mp4` and publishes a `clip` message
  (`ClipReady`), which the event store records.
Clips are never re-encoded: the source's codec parameters and packets go into the mp4 as
they are. A write that fails (disk full, folder not writable) abandons that clip with one log
line per kind of failure and a count in `actstream_clip_errors_total`; detection goes on.
`synthetic://` sources have no encoded packets: their clips are the only ones encoded (H.264,
`reencoded: true`), from the scene itself (a scene is a pure function of its seed and time),
once the model has reached the clip's end; their snapshots are rendered at the scene's size.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av

from engine.clip_files import clip_path, encode_jpeg, encode_scene, remove_partial_files, retain
from engine.loader import check_positive
from engine.wire.events import ActionEvent, ClipReady
from stream.packets import CodecInfo, PacketRing, StoredPacket
from stream.synthetic import SyntheticScene

logger = logging.getLogger(__name__)

RETENTION_EVERY_S = 30.0  # how often the clips folder is checked against the limits
POLL_S = 0.1  # how often the writer looks for new packets of the clips it is recording
SETTLE_S = 5.0  # the longest a stream's end waits for its clips' messages


@dataclass(frozen=True, kw_only=True)
class ClipsConfig:
    """Attributes:
    enabled: cut a clip and a snapshot per action (`--no-clips`: off).
    dir: clips go to DIR/<stream>/<YYYY-MM-DD>/<event_id>.mp4, snapshots beside them (.jpg).
    pre_s: seconds of video before the onset (the clip starts at the keyframe before that).
    post_s: seconds of video after the offset.
    lag_s: how long after an action's start its onset may come and still get its pre-roll:
        each stream keeps `pre_s + lag_s` seconds of packets in memory.
    max_s: longest clip; a longer action's clip is closed at this length.
    max_gb: the folder's clips and snapshots are kept under this size, oldest deleted first
        (null: no size limit).
    snapshot: also write the decision frame as a JPEG at the source's resolution.
    """

    enabled: bool = True
    dir: str = "runs/clips"
    pre_s: float = 3.0
    post_s: float = 3.0
    lag_s: float = 15.0
    max_s: float = 300.0
    max_gb: float | None = 10.0
    snapshot: bool = True

    def __post_init__(self) -> None:
        check_positive(self, "lag_s", "max_s")
        for name in ("pre_s", "post_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.max_gb is not None and self.max_gb <= 0:
            raise ValueError(f"max_gb must be positive or null, got {self.max_gb}")

    @property
    def ring_s(self) -> float:
        """Seconds of packets each stream keeps."""
        return self.pre_s + self.lag_s


class _Clip:
    """One clip being recorded (owned by the writer thread)."""

    scene: SyntheticScene | None = None  # a generated source's clip: encoded, not remuxed
    fps = 0.0  # its frame rate

    def __init__(self, event: ActionEvent, ring: PacketRing | None, connection: int,
                 codec: CodecInfo | None, first: StoredPacket | None, path: Path,
                 start_s: float = 0.0) -> None:  # fmt: skip
        self.event_id, self.stream, self.label = event.event_id, event.stream, event.label
        self.ring, self.connection, self.codec = ring, connection, codec
        self.path = path
        self.part = path.with_name(path.name + ".part")
        self.snapshot_path: Path | None = None
        self.next_seq = first.seq if first else 0
        self.base_dts = first.dts if first else 0  # the clip's timestamps start at 0
        self.first_s = first.t_s if first else start_s
        self.last_s = self.first_s
        self.end_s: float | None = None  # offset + post-roll, once the offset came
        self.decision_s = event.frame_s
        self.muxed = 0  # packets written
        self.container = None
        self.out = None


class ClipWriter:
    """Cuts clips and snapshots on its own thread (see the module doc).

    Args:
        config: the clips section.
        rings: each PyAV stream's packet ring.
        scenes: each `synthetic://` stream's scene (a copy of its own: scenes extend their
            schedule as they render) and frame rate; streams in neither get no clips.
        publish: sends a `ClipReady` message (the publisher's `publish`; any thread).
        retain_days: clips older than this are deleted (None: kept until `max_gb` needs room).
        metrics: `actstream_clip*` series; None: not counted.
    """

    def __init__(self, config: ClipsConfig, rings: dict[str, PacketRing],
                 publish: Callable[[ClipReady], None], *, retain_days: float | None = None,
                 metrics=None,
                 scenes: dict[str, tuple[SyntheticScene, float]] | None = None,
                 ) -> None:  # fmt: skip
        self.config, self.rings, self.publish = config, rings, publish
        self.scenes = scenes or {}
        self.retain_days = retain_days
        self.metrics = metrics
        self.dir = Path(config.dir)
        self._commands: queue.Queue = queue.Queue()
        self._clips: dict[str, _Clip] = {}
        self._processed_s: dict[str, float] = {}  # each stream's newest processed frame
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="clip-writer", daemon=True)
        self._last_error = ""
        self._next_retention = 0.0
        self.written = 0
        self.errors = 0
        self.cpu_s = 0.0  # CPU time of the writer thread (clip cutting's cost)

    # ---- the detector's side ------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def progress(self, stream: str, t_s: float) -> None:
        """The detector processed `stream`'s frame at stream time `t_s` (inference thread)."""
        self._processed_s[stream] = t_s

    def on_event(self, event: ActionEvent) -> None:
        """An onset or offset was published (inference thread; never blocks)."""
        if event.stream in self.rings or event.stream in self.scenes:
            self._commands.put(event)

    def settle(self, stream: str, timeout_s: float = SETTLE_S) -> None:
        """Waits until the writer has handled every event of `stream` published so far and
        made a pass over its clips (inference thread, when the stream's connection is over:
        its clips then finish, so their messages go out before the stream's status). Bounded
        by `timeout_s`; returns at once when the writer is not running."""
        if not self._thread.is_alive() or (stream not in self.rings and stream not in self.scenes):
            return
        done = threading.Event()
        self._commands.put(done)
        if not done.wait(timeout_s):
            logger.warning("clips: %s: the writer did not settle within %.0f s", stream, timeout_s)

    def close(self, timeout_s: float = 10.0) -> None:
        """Closes the clips being recorded with what their streams delivered, publishes them,
        and joins the thread (the publisher must still be open)."""
        if not self._thread.is_alive():
            return
        self._stop.set()
        self._commands.put(None)
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            logger.error("clips: the writer did not finish within %.0f s", timeout_s)

    # ---- the writer thread --------------------------------------------------------------------
    def _next_command(self):
        try:
            return self._commands.get_nowait()
        except queue.Empty:
            return None

    def _run(self) -> None:
        cpu0 = time.thread_time()
        remove_partial_files(self.dir)
        while True:
            try:
                command = self._commands.get(timeout=POLL_S)
            except queue.Empty:
                command = None
            settled: list[threading.Event] = []
            while command is not None:
                if isinstance(command, threading.Event):  # `settle`: after this pass
                    settled.append(command)
                    command = self._next_command()
                    continue
                try:
                    self._apply(command)
                except Exception:  # a bug: lose that clip, never the writer
                    logger.exception("clips: %s not recorded", command.event_id)
                command = self._next_command()
            stopping = self._stop.is_set()
            for clip in list(self._clips.values()):
                try:
                    self._advance(clip, shutdown=stopping)
                except Exception:  # a bug: lose that clip, never the writer
                    logger.exception("clips: %s abandoned", clip.event_id)
                    self._clips.pop(clip.event_id, None)
            for done in settled:
                done.set()
            if time.monotonic() >= self._next_retention:
                self._next_retention = time.monotonic() + RETENTION_EVERY_S
                self.enforce_retention()
            cpu = time.thread_time()
            self.cpu_s += cpu - cpu0
            if self.metrics is not None:
                self.metrics.clip_cpu_seconds.inc(cpu - cpu0)
            cpu0 = cpu
            if stopping:
                return

    def _apply(self, event: ActionEvent) -> None:
        if event.type == "onset":
            self._open(event)
            return
        clip = self._clips.get(event.event_id)
        if clip is not None and event.end_s is not None:
            clip.end_s = event.end_s + self.config.post_s

    def _open(self, event: ActionEvent) -> None:
        if event.stream in self.scenes:
            self._open_scene(event)
            return
        ring = self.rings[event.stream]
        # The newest connection's packets, kept until the next one (a file that has been read
        # to its end while the model catches up still has them).
        connection, codec = ring.connection, ring.codec
        first = None if codec is None else ring.keyframe_at(
            event.start_s - self.config.pre_s, connection
        )  # fmt: skip
        if first is None or first.t_s > event.frame_s:  # reconnected since, or far behind
            logger.warning(
                "clips: %s: the stream's packets of that moment are gone; no clip",
                event.event_id,
            )
            return
        clip = _Clip(event, ring, connection, codec, first, self._path(event))
        try:
            clip.path.parent.mkdir(parents=True, exist_ok=True)
            if self.config.snapshot:
                clip.snapshot_path = self._snapshot(clip, event.frame_s)
            clip.container = av.open(
                str(clip.part), mode="w", format=codec.container_format,
                options={"movflags": "+faststart"} if codec.container_format == "mp4" else {},
            )  # fmt: skip
            clip.out = clip.container.add_stream_from_template(codec.template)
        except (OSError, av.FFmpegError, ValueError) as exc:
            self._failed(clip, exc)
            return
        self._clips[event.event_id] = clip
        self._advance(clip)  # the pre-roll at once: the ring moves on while we wait

    def _open_scene(self, event: ActionEvent) -> None:
        scene, fps = self.scenes[event.stream]
        start_s = max(0.0, math.floor((event.start_s - self.config.pre_s) * fps + 1e-6) / fps)
        clip = _Clip(event, None, 0, None, None, self._path(event), start_s)
        clip.scene, clip.fps = scene, fps
        try:
            clip.path.parent.mkdir(parents=True, exist_ok=True)
            if self.config.snapshot:
                frame = av.VideoFrame.from_ndarray(scene.render(event.frame_s), format="rgb24")
                path = clip.path.with_suffix(".jpg")
                path.write_bytes(encode_jpeg(frame))
                clip.snapshot_path = path.resolve()
        except (OSError, av.FFmpegError, ValueError) as exc:
            self._failed(clip, exc)
            return
        self._clips[event.event_id] = clip

    def _advance_scene(self, clip: _Clip, *, shutdown: bool) -> None:
        """Encodes a generated stream's clip once the model has seen all of it."""
        if clip.end_s is None and not shutdown:
            return
        scene, fps = clip.scene, clip.fps
        end_s = clip.end_s if clip.end_s is not None else math.inf
        ended = "complete"
        if clip.first_s + self.config.max_s < end_s:
            end_s, ended = clip.first_s + self.config.max_s, "max_length"
        if scene.duration_s is not None and end_s > scene.duration_s - 1 / fps:
            end_s, ended = scene.duration_s - 1 / fps, "stream_ended"
        seen_s = self._processed_s.get(clip.stream, clip.first_s)
        if seen_s < end_s - 1e-6:
            if not shutdown:
                return  # the post-roll has not happened yet
            end_s, ended = seen_s, "shutdown"
        try:
            clip.last_s = encode_scene(clip.part, scene, fps, clip.first_s, end_s)
            self._finish(clip, ended, reencoded=True)
        except (OSError, av.FFmpegError, ValueError) as exc:
            self._failed(clip, exc)

    def _path(self, event: ActionEvent) -> Path:
        return clip_path(self.dir, event.stream, event.event_id, event.start_wall_s)

    def _advance(self, clip: _Clip, *, shutdown: bool = False) -> None:
        """Writes the clip's new packets; closes it once it is complete."""
        if clip.scene is not None:
            self._advance_scene(clip, shutdown=shutdown)
            return
        try:
            packets, over = clip.ring.since(clip.next_seq, clip.connection)
        except LookupError:
            if clip.muxed or not self._restart(clip):
                self._failed(clip, OSError("the writer fell behind the stream (packets gone)"))
            return
        ended = None
        horizon = None if shutdown else self._processed_s.get(clip.stream)
        try:
            for p in packets:
                if clip.end_s is not None and p.t_s > clip.end_s:
                    ended = "complete"
                    break
                if clip.end_s is None and horizon is not None and p.t_s > horizon:
                    break  # the model has not seen it yet: its offset may still come
                if p.t_s - clip.first_s > self.config.max_s:
                    ended = "max_length"
                    break
                packet = p.to_av(clip.codec.time_base)
                packet.pts -= clip.base_dts
                packet.dts -= clip.base_dts
                packet.stream = clip.out
                clip.container.mux(packet)
                clip.muxed += 1
                clip.next_seq = p.seq + 1
                clip.last_s = max(clip.last_s, p.t_s + float(p.duration * clip.codec.time_base))
            if ended is None and over and clip.end_s is not None:  # after its offset
                ended = "stream_ended"
            if ended is None and shutdown:
                ended = "shutdown"
            if ended is not None:
                self._finish(clip, ended)
        except (OSError, av.FFmpegError, ValueError) as exc:
            self._failed(clip, exc)

    def _restart(self, clip: _Clip) -> bool:
        """A clip whose first packets left the ring before it wrote any starts at the oldest
        keyframe kept instead (a shorter pre-roll); False when none is left before its
        decision."""
        first = clip.ring.keyframe_at(-math.inf, clip.connection)
        if first is None or first.t_s > clip.decision_s:
            return False
        clip.next_seq, clip.base_dts = first.seq, first.dts
        clip.first_s = clip.last_s = first.t_s
        return True

    def _finish(self, clip: _Clip, ended: str, *, reencoded: bool = False) -> None:
        if clip.container is not None:  # a remuxed clip (an encoded one is closed already)
            clip.container.close()
            clip.container = None
        os.replace(clip.part, clip.path)
        self._clips.pop(clip.event_id, None)
        size = clip.path.stat().st_size
        self.written += 1
        if self.metrics is not None:
            self.metrics.clips_written.labels(clip.stream).inc()
        self._recovered()
        self.publish(
            ClipReady(
                stream=clip.stream,
                event_id=clip.event_id,
                label=clip.label,
                clip_path=str(clip.path.resolve()),
                snapshot_path=None if clip.snapshot_path is None else str(clip.snapshot_path),
                clip_start_s=clip.first_s,
                clip_end_s=clip.last_s,
                bytes=size,
                reencoded=reencoded,
                ended=ended,
            )
        )

    def _failed(self, clip: _Clip, exc: BaseException) -> None:
        self._clips.pop(clip.event_id, None)
        if clip.container is not None:
            try:
                clip.container.close()
            except (OSError, av.FFmpegError, ValueError):
                pass
        for path in (clip.part, clip.snapshot_path):
            if path is not None:
                try:
                    path.unlink(missing_ok=True)
                except OSError:
                    pass
        self.errors += 1
        if self.metrics is not None:
            self.metrics.clip_errors.inc()
        text = _reason(exc)
        if text != self._last_error:  # one line per kind of failure, not per clip
            self._last_error = text
            logger.error(
                "clips: cannot write %s (%s); that clip is abandoned, detection goes on",
                clip.path,
                text,
            )

    def _recovered(self) -> None:
        if self._last_error:
            logger.info("clips: writing again (%s)", self.dir)
            self._last_error = ""

    # ---- snapshots ----------------------------------------------------------------------------
    def _snapshot(self, clip: _Clip, frame_s: float) -> Path | None:
        """Decodes the ring's packets from the keyframe before `frame_s` up to the frame at
        `frame_s` and writes it as a JPEG at the source's resolution."""
        chosen = clip.ring.frame_at(frame_s, clip.connection)
        if chosen is None:
            return None
        path = clip.path.with_suffix(".jpg")
        path.write_bytes(encode_jpeg(chosen))
        return path.resolve()

    # ---- retention ----------------------------------------------------------------------------
    def enforce_retention(self) -> int:
        """Applies `retain_days` and `clips.max_gb` to the folder (`clip_files.retain`);
        returns how many files were deleted."""
        deleted, total = retain(self.dir, retain_days=self.retain_days, max_gb=self.config.max_gb)
        if self.metrics is not None:
            self.metrics.clip_bytes.set(total)
        return deleted


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc).splitlines()[0] or type(exc).__name__
