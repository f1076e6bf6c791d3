"""The child side of a reader process: a `StreamReader` whose buffer is a shared-memory ring.

The child runs the ordinary reader (open, decode, resize, sample, pace, reconnect) on a thread;
what it would put into its frame buffer goes to the parent instead: a frame's pixels into a
free slot of the stream's shared-memory ring and its stamp over the pipe, a status change over
the pipe. The parent copies each slot out and hands the slot back (`free`), so the ring only
holds frames in transit; buffering and its drop policy stay in the parent's `FrameBuffer`.

Messages, child → parent (tuples over one `multiprocessing` connection):
    ("frame", slot, shape, pts_s, decoded_wall_s, source_clock_s, counts)
    ("status", state, wall_s, detail, counts)      a `ReaderState` value
    ("policy", policy)                             a `DropPolicy` value (a file keeps every frame)
    ("opened", first_error)                        the reader's first open is done
    ("beat", counts)                               every `BEAT_S`: the child is alive
    ("packets", header, time_base)                 a connection's codec (a Matroska start)
    ("packet", data, pts, dts, duration, keyframe)
    ("packets_end",)
    ("preview", jpeg, t_s, cpu_s)
    ("log", logger_name, level, text)
`counts` are (decoded, dropped, late, decode_errors) since the previous message.

Parent → child: first what to read (see `child_main`), then ("free", slot) once a slot is
copied out, ("preview", width) when someone watches the stream. SIGTERM asks the child to stop.
"""

from __future__ import annotations

import io
import logging
import mmap
import os
import signal
import socket
import sys
import threading
import time
from fractions import Fraction

import av
import numpy as np

from stream.buffer import BufferClosed, DropPolicy
from stream.packets import CodecInfo
from stream.preview import rgb_to_jpeg
from stream.reader import StatusEvent, StreamReader

BEAT_S = 1.0  # a child silent for `stream.reader_hang_s` is killed and restarted


class _Pipe:
    """The child's end of the connection: sends from any thread; receives on the reader's."""

    def __init__(self, conn) -> None:
        self.conn = conn
        self._lock = threading.Lock()
        self._counts = [0, 0, 0, 0]  # decoded, dropped, late, decode errors
        self.closed = False

    def count(self, which: int, n: int) -> None:
        with self._lock:
            self._counts[which] += n

    def send(self, *message, counted: bool = False) -> None:
        with self._lock:
            if counted:
                message = (*message, tuple(self._counts))
                self._counts = [0, 0, 0, 0]
            try:
                self.conn.send(message)
            except (BrokenPipeError, ConnectionError, EOFError, OSError):
                self.closed = True  # the parent is gone: nothing more to tell
                raise BufferClosed from None


class RingProducer:
    """What the child's reader takes for its frame buffer (`put`, `policy`)."""

    def __init__(self, pipe: _Pipe, slots: np.ndarray, policy: DropPolicy, stop) -> None:
        self._pipe = pipe
        self._slots = slots  # (N, slot_bytes) uint8 over the shared memory
        self._free = set(range(len(slots)))
        self._policy = policy
        self._stop = stop
        self.preview_width: int | None = None

    @property
    def policy(self) -> DropPolicy:
        return self._policy

    @policy.setter
    def policy(self, value: DropPolicy) -> None:
        self._policy = value
        self._pipe.send("policy", value.value)

    def _drain(self, wait_s: float) -> None:
        """Takes the parent's messages (freed slots, preview wishes); waits up to `wait_s`."""
        conn = self._pipe.conn
        try:
            while conn.poll(wait_s):
                kind, value = conn.recv()
                if kind == "free":
                    self._free.add(value)
                elif kind == "preview":
                    self.preview_width = value
                wait_s = 0.0
        except (EOFError, OSError):
            raise BufferClosed from None

    def put(self, item, timeout_s: float | None = None) -> int:
        if isinstance(item, StatusEvent):
            self._pipe.send("status", item.state.value, item.wall_s, item.detail, counted=True)
            return 0
        self._drain(0.0)
        while not self._free:
            if self._policy is DropPolicy.DROP_OLDEST:
                return 1  # the parent is behind by a whole ring: the newest frame is lost
            if self._stop.is_set():
                raise BufferClosed
            self._drain(0.2)
        slot = self._free.pop()
        image = np.ascontiguousarray(item.image)
        self._slots[slot, : image.nbytes] = image.reshape(-1).view(np.uint8)
        self._pipe.send(
            "frame",
            slot,
            image.shape,
            item.pts_s,
            item.decoded_wall_s,
            item.source_clock_s,
            counted=True,
        )
        return 0


class PacketsToParent:
    """The child's stand-in for the stream's `PacketRing`: each connection's codec and
    packets go to the parent's ring. The codec travels as the start of a Matroska file holding
    the connection's first packet (FFmpeg opens that; a header alone does not probe)."""

    def __init__(self, pipe: _Pipe) -> None:
        self._pipe = pipe
        self._stream = None

    def start_connection(self, stream) -> None:
        CodecInfo(stream)  # raises as the parent's ring would (a codec without a context)
        self._stream = stream

    def end_connection(self) -> None:
        self._stream = None
        self._pipe.send("packets_end")

    def add(self, packet: av.Packet) -> None:
        if packet.size == 0 or packet.time_base is None:
            return
        if self._stream is not None:
            stream, self._stream = self._stream, None
            self._pipe.send("packets", _codec_header(stream, packet), stream.time_base)
        self._pipe.send(
            "packet", bytes(packet), packet.pts, packet.dts, packet.duration, packet.is_keyframe
        )


def _codec_header(stream, packet: av.Packet) -> bytes:
    out = io.BytesIO()
    holder = av.open(out, mode="w", format="matroska")
    template = holder.add_stream_from_template(stream)
    copy = av.Packet(bytes(packet))
    copy.pts = copy.dts = 0
    copy.time_base = Fraction(1, 1000)
    copy.stream = template
    holder.mux(copy)
    holder.close()
    return out.getvalue()


class PreviewsToParent:
    """The child's stand-in for `Previews`: the parent says which width is wanted; the JPEG is
    made here, on the reader's thread, as a thread reader would."""

    def __init__(self, pipe: _Pipe, producer: RingProducer) -> None:
        self._pipe, self._producer = pipe, producer

    def due(self, stream_id: str) -> int | None:
        width, self._producer.preview_width = self._producer.preview_width, None
        return width

    def offer(self, stream_id: str, image: np.ndarray, t_s: float) -> None:
        t0 = time.thread_time()
        data = rgb_to_jpeg(image)
        self._pipe.send("preview", data, t_s, time.thread_time() - t0)


def _hang_up(conn) -> None:
    """Ends the connection so that the parent reads everything sent: our side is shut for
    writing (the parent sees the end after the last message), and what the parent still sends
    (freed slots) is read until it closes, or a second passes. Closing a Unix socket with unread
    data would reset it, and the parent could lose our last messages."""
    try:
        with socket.socket(fileno=os.dup(conn.fileno())) as sock:
            sock.shutdown(socket.SHUT_WR)
        while conn.poll(1.0):
            conn.recv()
    except (EOFError, OSError):
        pass
    finally:
        conn.close()


class _LogToParent(logging.Handler):
    """The child's log lines go to the parent's logging, which decides what is shown."""

    def __init__(self, pipe: _Pipe) -> None:
        super().__init__(logging.INFO)
        self._pipe = pipe

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._pipe.send("log", record.name, record.levelno, self.format(record))
        except BufferClosed:
            pass


def child_main(conn) -> None:
    """Runs one stream's reader until it ends or the parent asks it to stop (SIGTERM). The
    first message on `conn` says what to read: (spec, options, shm_name, slots, slot_bytes,
    policy, packets, previews)."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which stops us
    spec, options, shm_name, slots, slot_bytes, policy, packets, previews = conn.recv()
    # The parent's `SharedMemory` (POSIX shm, /dev/shm on Linux), mapped directly: attaching
    # through `SharedMemory` here would start a resource tracker that unlinks it when we exit.
    with open(f"/dev/shm/{shm_name}", "r+b") as file:
        shm = mmap.mmap(file.fileno(), slots * slot_bytes)
    pipe = _Pipe(conn)
    root = logging.getLogger()
    root.handlers[:] = [_LogToParent(pipe)]
    root.setLevel(logging.INFO)
    ring = np.ndarray((slots, slot_bytes), dtype=np.uint8, buffer=shm)
    producer = None
    try:
        producer = RingProducer(pipe, ring, DropPolicy(policy), stop)
        reader = StreamReader(
            spec,
            producer,  # type: ignore[arg-type]  (put and policy: all a reader uses)
            options,
            on_decoded=lambda n: pipe.count(0, n),
            on_drop=lambda n: pipe.count(1, n),
            on_late=lambda n: pipe.count(2, n),
            on_decode_error=lambda n: pipe.count(3, n),
            packets=PacketsToParent(pipe) if packets else None,  # type: ignore[arg-type]
            previews=PreviewsToParent(pipe, producer) if previews else None,  # type: ignore
        )
        reader.start()
        opened, next_beat = False, 0.0
        while reader.is_alive() and not pipe.closed:
            if not opened and reader.first_open_done.is_set():
                opened = True
                pipe.send("opened", reader.first_error)
            if time.monotonic() >= next_beat:
                pipe.send("beat", counted=True)
                next_beat = time.monotonic() + BEAT_S
            if stop.wait(BEAT_S if opened else 0.05):  # the first open is told at once
                reader.stop()
                break
        reader.join(2.0)
        if not opened and not pipe.closed:
            pipe.send("opened", reader.first_error)
    except BufferClosed:
        pass
    finally:
        _hang_up(conn)
        ring = producer = None  # the views on the shared memory go before it closes
        try:
            shm.close()
        except BufferError:  # a read that never returned still holds a view; the process ends
            pass


if __name__ == "__main__":  # python -m stream.reader_child FD (started by ReaderProcess)
    from multiprocessing.connection import Connection

    child_main(Connection(int(sys.argv[1])))
