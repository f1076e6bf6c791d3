"""The last seconds of a stream's own encoded packets, kept for evidence clips and snapshots.

A reader hands every demuxed video packet of a PyAV source to its stream's `PacketRing`
(copied: the demuxer reuses nothing we keep). The ring holds the packets of the current
connection from the newest keyframe at least `keep_s` before the newest packet, so that a
clip can start at a keyframe `clips.pre_s` before an onset the detector published a little
after the action began. Each connection's codec parameters travel with its packets
(`CodecInfo`), so that clips are remuxed, not re-encoded, even after the source's container
is closed.

Thread safety: one reader thread adds; any thread reads through `since` / `keyframe_at`.
"""

from __future__ import annotations

import io
import threading
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from itertools import islice

import av


class CodecInfo:
    """One connection's video codec parameters, independent of the source's container.

    The parameters are copied into a stream of a never-started in-memory output container
    (FFmpeg keeps codec parameters on a stream): clip writers take it as their template, and
    snapshot decoders take its extradata, after the source itself is closed.
    """

    def __init__(
        self, stream: av.video.stream.VideoStream, time_base: Fraction | None = None
    ) -> None:
        ctx = stream.codec_context
        if ctx is None:  # a codec FFmpeg lacks: nothing to remux (the reader says why)
            raise ValueError("no codec context for this stream")
        self.decoder = ctx.name  # the decoder's name: "h264", "hevc", "mpeg4", ...
        # the packets' time base (`time_base`: the source's, where `stream` is a copy of it)
        self.time_base: Fraction = time_base or stream.time_base
        self.extradata = bytes(ctx.extradata or b"")
        self._holder = av.open(io.BytesIO(), mode="w", format="mp4")
        try:
            self.template = self._holder.add_stream_from_template(stream)
        except ValueError:  # a codec mp4 cannot hold (e.g. raw video): matroska takes more
            self._holder = av.open(io.BytesIO(), mode="w", format="matroska")
            self.template = self._holder.add_stream_from_template(stream)
        self.container_format = self._holder.format.name.split(",")[0]

    def decoder_context(self) -> av.CodecContext:
        """A fresh decoder for this connection's packets."""
        ctx = av.CodecContext.create(self.decoder, "r")
        if self.extradata:
            ctx.extradata = self.extradata
        return ctx


@dataclass(frozen=True, slots=True)
class StoredPacket:
    """One encoded packet. `seq` counts the ring's packets from 0 (over all connections);
    `connection` numbers the connection it came in; `t_s` is its presentation time in
    seconds (the same clock as the frames' `pts_s`)."""

    seq: int
    connection: int
    data: bytes
    pts: int
    dts: int
    duration: int
    keyframe: bool
    t_s: float

    def to_av(self, time_base: Fraction) -> av.Packet:
        packet = av.Packet(self.data)
        packet.pts, packet.dts, packet.duration = self.pts, self.dts, self.duration
        packet.time_base = time_base
        packet.is_keyframe = self.keyframe
        return packet


class PacketRing:
    """The recent encoded packets of one stream (see the module doc).

    Args:
        keep_s: seconds of packets kept behind the newest (from a keyframe at or before).
    """

    def __init__(self, keep_s: float) -> None:
        if keep_s <= 0:
            raise ValueError(f"keep_s must be positive, got {keep_s}")
        self.keep_s = keep_s
        self._lock = threading.Lock()
        self._packets: deque[StoredPacket] = deque()
        self._seq = 0
        self.connection = 0  # 0: no connection yet
        self.codec: CodecInfo | None = None
        self.open = False
        self.bytes = 0
        self._last: tuple[int, int] | None = None  # (pts, step) of the newest packet

    # ---- the reader's side --------------------------------------------------------------------
    def start_connection(
        self, stream: av.video.stream.VideoStream, time_base: Fraction | None = None
    ) -> None:
        """A new connection: its codec parameters (and the time base of its packets, where
        `stream` is a copy in another container); the previous connection's packets go."""
        codec = CodecInfo(stream, time_base)
        with self._lock:
            self.connection += 1
            self._last = None
            self.codec = codec
            self.open = True
            self._packets.clear()
            self.bytes = 0

    def end_connection(self) -> None:
        with self._lock:
            self.open = False

    def add(self, packet: av.Packet) -> None:
        """Keeps a copy of a demuxed packet. A packet without timestamps (an RTSP stream's
        first, before its clock is known) is placed one frame step after the previous one,
        or at 0 as the first of its connection (where its frame's time falls back to, too)."""
        if packet.size == 0 or packet.time_base is None:
            return
        pts = packet.pts if packet.pts is not None else packet.dts
        if pts is None:
            pts = 0 if self._last is None else self._last[0] + self._last[1]
        dts = packet.dts if packet.dts is not None else pts
        if self._last is not None and pts > self._last[0]:
            self._last = (pts, packet.duration or pts - self._last[0])
        elif self._last is None:
            self._last = (pts, packet.duration or 0)
        stored = StoredPacket(
            seq=self._seq,
            connection=self.connection,
            data=bytes(packet),
            pts=pts,
            dts=dts,
            duration=packet.duration or 0,
            keyframe=packet.is_keyframe,
            t_s=float(pts * packet.time_base),
        )
        with self._lock:
            self._seq += 1
            self._packets.append(stored)
            self.bytes += len(stored.data)
            self._trim(stored.t_s - self.keep_s)

    def _trim(self, cutoff_s: float) -> None:
        """Drops packets before the newest keyframe at or before `cutoff_s`."""
        packets = self._packets
        keep_from = None
        for i, p in enumerate(packets):
            if p.t_s > cutoff_s:
                break
            if p.keyframe:
                keep_from = i
        for _ in range(keep_from or 0):
            self.bytes -= len(packets.popleft().data)

    # ---- the clip writer's side ---------------------------------------------------------------
    def keyframe_at(self, t_s: float, connection: int) -> StoredPacket | None:
        """The newest keyframe at or before `t_s` of `connection` (the oldest kept keyframe
        when the ring does not reach back that far; None: no keyframe of it is kept)."""
        with self._lock:
            best = first = None
            for p in self._packets:
                if p.connection != connection or not p.keyframe:
                    continue
                first = first or p
                if p.t_s <= t_s:
                    best = p
                else:
                    break
            return best or first

    def frame_at(self, t_s: float, connection: int) -> av.VideoFrame | None:
        """The decoded frame at stream time `t_s` (decoding from the keyframe before it; the
        newest frame up to `t_s` when none is exactly there); None when its packets are gone."""
        key = self.keyframe_at(t_s, connection)
        if key is None or self.codec is None:
            return None
        try:
            packets, _ = self.since(key.seq, connection)
        except LookupError:  # gone meanwhile
            return None
        decoder = self.codec.decoder_context()
        chosen = None
        for p in packets:
            if p.t_s > t_s + 1e-6:
                break
            for frame in decoder.decode(p.to_av(self.codec.time_base)):
                chosen = frame
        if chosen is None:
            for frame in decoder.decode(None):  # frames the decoder still holds
                chosen = chosen or frame
        return chosen

    def since(self, seq: int, connection: int) -> tuple[list[StoredPacket], bool]:
        """Packets of `connection` from `seq` on, and whether the connection is over (no more
        will come). Raises `LookupError` when packet `seq` is no longer kept."""
        with self._lock:
            packets = self._packets
            if packets and packets[0].seq > seq and packets[0].connection == connection:
                raise LookupError(f"packet {seq} is gone (the ring starts at {packets[0].seq})")
            start = max(0, seq - packets[0].seq) if packets else 0  # seqs are contiguous
            out = [p for p in islice(packets, start, None) if p.connection == connection]
            over = connection != self.connection or not self.open
            return out, over
