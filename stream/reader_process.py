"""Readers in child processes (`stream.readers: process`): decoding and synthetic rendering
off the inference process's GIL, and a decoder that crashes or hangs inside FFmpeg takes only
its own process with it.

A `ReaderProcess` looks to the detector like a `StreamReader` (start, stop, join, states,
counters). A supervising thread in this process starts the child (`stream.reader_child`), copies
each frame out of the stream's shared-memory ring into the stream's `FrameBuffer` (so the buffer
policy and drop counts are those of a thread reader), relays status changes in order with the
frames, and forwards the child's log lines, packets (evidence clips) and previews.

A child that dies, or says nothing (not even its heartbeat) for `stream.reader_hang_s`, is killed
and, for a live source, started again as a reconnect: `disconnected` (with the reason),
`reconnecting` (after the back-off), `connecting`, then the new child's `connected`. A file whose
reader process dies fails, as a file that breaks does. Frames keep counting across restarts.
"""

from __future__ import annotations

import io
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from fractions import Fraction
from multiprocessing import shared_memory
from multiprocessing.connection import Connection
from pathlib import Path

import av
import numpy as np

from stream.buffer import BufferClosed, DropPolicy, FrameBuffer
from stream.frames import Frame
from stream.hwaccel import chosen
from stream.packets import PacketRing
from stream.preview import Previews
from stream.reader import FINAL_STATES, ReaderState, put_state
from stream.settings import ReaderOptions
from stream.sources import SourceKind, SourceSpec

logger = logging.getLogger(__name__)

RING_SLOTS = 8  # frames in transit per stream (the buffer itself is the parent's)
STARTUP_S = 30.0  # a child's first word may take this long (many interpreters starting at once)
STOP_GRACE_S = 1.0  # a child asked to stop is killed after this
PREVIEW_WAIT_S = 1.0  # a preview asked of a child and not received is asked again after this


# The child imports this very package (`-P`: not whatever `stream` the working directory holds).
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[1])


def _child_env() -> dict[str, str]:
    path = os.pathsep.join(filter(None, [_PACKAGE_ROOT, os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


def runs_in_process(spec: SourceSpec) -> bool:
    """Which sources a reader process takes: video (PyAV and synthetic scenes). Sensor samples
    are light and some come through the detector's own transports: they stay on threads."""
    return not spec.signal and spec.kind is not SourceKind.ZMQ_SAMPLES


class ReaderProcess:
    """Reads one source in a child process into a `FrameBuffer` of `Frame | StatusEvent`.

    Args: as `StreamReader` (no `opener`: a child opens its source itself).
    """

    def __init__(
        self,
        spec: SourceSpec,
        buffer: FrameBuffer,
        options: ReaderOptions,
        *,
        on_decoded: Callable[[int], None] | None = None,
        on_drop: Callable[[int], None] | None = None,
        on_late: Callable[[int], None] | None = None,
        on_decode_error: Callable[[int], None] | None = None,
        rng: random.Random | None = None,
        packets: PacketRing | None = None,
        previews: Previews | None = None,
    ) -> None:
        if not runs_in_process(spec):
            raise ValueError(f"{spec.display}: sensor streams are read on threads")
        self.spec, self.buffer, self.options = spec, buffer, options
        self.packets, self.previews = packets, previews
        self._counters = (on_decoded, on_drop, on_late, on_decode_error)
        self._rng = rng or random.Random()
        self._stop = threading.Event()
        self.first_open_done = threading.Event()
        self.first_error: str | None = None
        self.state = ReaderState.CONNECTING
        self.frames_decoded = self.frames_delivered = self.frames_late = 0
        self.reconnects = 0
        self.restarts = 0  # children killed or dead and started again
        self._proc: subprocess.Popen | None = None  # the current child
        self._slot_bytes = options.width * options.height * 3
        self._shm: shared_memory.SharedMemory | None = None
        self._preview_asked = 0.0
        self._packet_tb: Fraction | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"reader-{spec.stream_id}", daemon=True
        )

    # ---- lifecycle (as StreamReader) ---------------------------------------------------------
    def start(self) -> None:
        self._shm = shared_memory.SharedMemory(create=True, size=RING_SLOTS * self._slot_bytes)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()  # the child's reader stops and says so; its supervisor relays it

    @property
    def pid(self) -> int | None:
        """The current child's process id (None before the first starts)."""
        return self._proc.pid if self._proc is not None else None

    def join(self, timeout_s: float | None = None) -> None:
        if self._thread.ident is not None:
            self._thread.join(timeout_s)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    # ---- states ------------------------------------------------------------------------------
    def _set_state(
        self, new: ReaderState, detail: str = "", wall_s: float | None = None, *, log: bool = True
    ) -> None:
        """A state change into the buffer, logged as a thread reader logs it (`log`: False for
        the child's own, which its log lines carry)."""
        self.state = new
        put_state(
            self.buffer,
            self.spec.stream_id,
            new,
            detail,
            start_up_error=self.first_error,
            wall_s=wall_s,
            log=log,
        )

    def _run(self) -> None:
        attempt = 0
        try:
            while not self._stop.is_set():
                done, reason, delivered = self._one_child(resumed=self.restarts > 0)
                if done or self._stop.is_set():
                    break
                message = f"reader process {reason}"
                if not self.spec.live or not self.first_open_done.is_set():
                    self.first_error = self.first_error or f"{self.spec.display}: {message}"
                    self._set_state(ReaderState.FAILED, message)
                    break
                self._set_state(ReaderState.DISCONNECTED, message)
                attempt = 0 if delivered else attempt
                delay = self.options.stream.backoff.delay_s(attempt, self._rng)
                attempt += 1
                self.reconnects += 1
                self.restarts += 1
                self._set_state(ReaderState.RECONNECTING, f"retry in {delay:.1f} s")
                if self._stop.wait(delay):
                    break
                self._set_state(ReaderState.CONNECTING)
        except BufferClosed:
            pass
        except Exception as exc:  # a bug: report it as a failed stream, never die silently
            logger.exception("stream %s: reader process supervisor crashed", self.spec.stream_id)
            self.first_error = self.first_error or f"{self.spec.display}: reader error: {exc}"
            self._set_state(ReaderState.FAILED, str(exc))
        finally:
            if self.state not in FINAL_STATES:
                self._set_state(ReaderState.STOPPED)
            self.first_open_done.set()
            if self._shm is not None:
                self._shm.close()
                self._shm.unlink()

    # ---- one child ---------------------------------------------------------------------------
    def _one_child(self, *, resumed: bool) -> tuple[bool, str, bool]:
        """Runs a child until it ends (True), or dies or hangs (False, why); and whether it
        delivered frames."""
        # The device is chosen here, once for every child (a fallback is logged once).
        stream = replace(self.options.stream, hwaccel=chosen(self.options.stream.hwaccel) or "none")
        if resumed:  # a restarted child reconnects, as a reader does, instead of failing
            stream = replace(stream, retry_first_open=True)
        options = replace(self.options, stream=stream)
        ours, theirs = socket.socketpair()
        with ours, theirs:
            # A fresh interpreter that imports only the reader (no torch, no threads of ours).
            proc = subprocess.Popen(
                [sys.executable, "-P", "-m", "stream.reader_child", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                env=_child_env(),
            )
            theirs.close()
            conn = Connection(ours.detach())
        self._proc = proc
        try:
            conn.send(
                (
                    self.spec,
                    options,
                    self._shm.name,
                    RING_SLOTS,
                    self._slot_bytes,
                    self.buffer.policy.value,
                    self.packets is not None,
                    self.previews is not None,
                )
            )
            return self._relay(proc, conn)
        except (BrokenPipeError, ConnectionError):  # it died before it could listen
            return (*self._relay_end(proc, ended=False), False)
        finally:
            conn.close()
            if proc.poll() is None:
                proc.kill()
            proc.wait()

    def _relay(self, proc: subprocess.Popen, conn: Connection) -> tuple[bool, str, bool]:
        hang_s = self.options.stream.reader_hang_s
        slots = np.ndarray((RING_SLOTS, self._slot_bytes), np.uint8, buffer=self._shm.buf)
        last = time.monotonic() + STARTUP_S  # until its first message, it is starting
        stop_by = None
        delivered = ended = False
        try:
            while True:
                now = time.monotonic()
                if self._stop.is_set() and stop_by is None:
                    proc.terminate()  # the child's reader stops and says so
                    stop_by = now + STOP_GRACE_S
                if stop_by is not None and now > stop_by:
                    return True, "stopped", delivered
                if not conn.poll(0.5):  # (few wake-ups: the model's thread wants the GIL)
                    if time.monotonic() - last > hang_s:
                        proc.kill()
                        return False, f"hung (silent for {hang_s:g} s); killed", delivered
                    continue
                try:
                    message = conn.recv()
                except (EOFError, OSError):
                    break
                last = time.monotonic()
                kind = message[0]
                if kind == "frame":
                    self._frame(message, slots, conn)
                    delivered = True
                elif kind == "status":
                    ended = self._status(message) or ended
                else:
                    self._other(message)
        finally:
            del slots  # the view goes before the shared memory can close
        conn.close()  # the child, reading until we hang up, may exit now
        done, reason = self._relay_end(proc, ended=ended)
        return done, reason, delivered

    def _relay_end(self, proc: subprocess.Popen, *, ended: bool) -> tuple[bool, str]:
        try:
            code = proc.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        if ended or self._stop.is_set():
            return True, "ended"
        if code < 0:
            return False, f"died ({signal.Signals(-code).name})"
        return False, f"exited (code {code})"

    def _count(self, counts) -> None:
        decoded, dropped, late, errors = counts
        self.frames_decoded += decoded
        self.frames_late += late
        # frames the child could not hand over (its ring full: this side stalled) are the
        # buffer's drops, as a thread reader's would be
        self.buffer.dropped += dropped
        for callback, n in zip(self._counters, counts, strict=True):
            if n and callback is not None:
                callback(n)

    def _frame(self, message, slots: np.ndarray, conn) -> None:
        _, slot, shape, pts_s, wall_s, clock_s, counts = message
        size = int(np.prod(shape))
        image = slots[slot, :size].reshape(shape).copy()
        try:
            conn.send(("free", slot))
        except OSError:  # the child is gone (the frame is ours already); its end follows
            pass
        self._count(counts)
        sid = self.spec.stream_id
        # A first frame is a first open done (as a thread reader says it): set here, before a
        # full buffer can hold back the child's own word behind its frames.
        if not self.first_open_done.is_set():
            self.first_open_done.set()
        frame = Frame(sid, self.frames_delivered, pts_s, wall_s, image, clock_s)
        dropped = self.buffer.put(frame)
        self.frames_delivered += 1
        if dropped and self._counters[1] is not None:
            self._counters[1](dropped)
        if self.previews is not None and time.monotonic() - self._preview_asked > PREVIEW_WAIT_S:
            if width := self.previews.due(sid):
                self._preview_asked = time.monotonic()
                try:
                    conn.send(("preview", width))
                except OSError:
                    pass

    def _status(self, message) -> bool:
        _, value, wall_s, detail, counts = message
        self._count(counts)
        state = ReaderState(value)
        if state is ReaderState.RECONNECTING:
            self.reconnects += 1
        self._set_state(state, detail, wall_s, log=False)
        return state in FINAL_STATES

    def _other(self, message) -> None:
        kind = message[0]
        if kind == "beat":
            self._count(message[1])
        elif kind == "opened":
            if message[1]:
                self.first_error = self.first_error or message[1]
            self.first_open_done.set()
        elif kind == "policy":
            self.buffer.policy = DropPolicy(message[1])
        elif kind == "log":
            _, name, level, text = message
            logging.getLogger(name).log(level, "%s", text)
        elif kind == "preview" and self.previews is not None:
            _, jpeg, t_s, cpu_s = message
            self.previews.store(self.spec.stream_id, jpeg, t_s, cpu_s)
            self._preview_asked = 0.0
        elif kind == "packets" and self.packets is not None:
            _, header, self._packet_tb = message
            with av.open(io.BytesIO(header)) as copy:
                self.packets.start_connection(copy.streams.video[0], self._packet_tb)
        elif kind == "packet" and self.packets is not None and self._packet_tb is not None:
            _, data, pts, dts, duration, keyframe = message
            packet = av.Packet(data)
            packet.pts, packet.dts, packet.duration = pts, dts, duration
            packet.time_base = self._packet_tb
            packet.is_keyframe = keyframe
            self.packets.add(packet)
        elif kind == "packets_end" and self.packets is not None:
            self.packets.end_connection()
            self._packet_tb = None
