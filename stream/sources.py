"""Source strings → `SourceSpec`: what kind of source, how PyAV opens it, how it is named.

Accepted forms (optionally prefixed by `ID=` to name the stream, e.g. `cam1=rtsp://...`):
a file path, `rtsp://`, `rtsps://`, `rtmp://`, `http(s)://`, `udp://`, `/dev/videoN`
(v4l2; options as a query: `/dev/video0?video_size=640x480&framerate=30&input_format=mjpeg`)
and `synthetic://` (the generated live source; `synthetic://?seed=3&fps=10`); recorded
sensor signals: a `.npy` or `.csv` path, with the sampling rate as a query
(`imu.npy?rate=50`; default the model's); live sensor streams: `lsl://NAME` (a Lab
Streaming Layer stream found by name), `zmq+tcp://HOST:PORT` (sample chunks from a
ZeroMQ publisher, read by `engine/sample_feed.py`) and `serial:///dev/ttyUSB0?baud=115200` (a
sensor writing a line per sample to a serial port).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit, urlunsplit

STREAM_ID_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
_ID_PREFIX_RE = re.compile(r"^([A-Za-z][A-Za-z0-9_-]{0,63})=(.+)$")
V4L2_OPTIONS = ("video_size", "framerate", "input_format", "pixel_format")
HTTP_PLAY = ("live", "file")  # an http(s) URL's `#live` / `#file` overrides what it looks like
SIGNAL_SUFFIXES = (".npy", ".csv")
SIGNAL_OPTIONS = ("rate",)
SYNTHETIC_OPTIONS = ("seed", "fps", "width", "height", "duration_s", "actors", "distractors")


class SourceError(ValueError):
    """A source that cannot be used; the message names it and says what to do."""


class SourceKind(enum.Enum):
    FILE = "file"
    RTSP = "rtsp"
    RTMP = "rtmp"
    HTTP = "http"
    UDP = "udp"
    DEVICE = "device"
    SYNTHETIC = "synthetic"
    SIGNAL_FILE = "signal_file"  # a recorded sensor signal (.npy / .csv)
    LSL = "lsl"  # a live Lab Streaming Layer sample stream
    ZMQ_SAMPLES = "zmq"  # live sample chunks from a ZeroMQ publisher
    SERIAL = "serial"  # a sensor on a serial port, a line per sample


SIGNAL_KINDS = frozenset(
    {SourceKind.SIGNAL_FILE, SourceKind.LSL, SourceKind.ZMQ_SAMPLES, SourceKind.SERIAL}
)
LIVE_KINDS = frozenset(k for k in SourceKind if k not in (SourceKind.FILE, SourceKind.SIGNAL_FILE))
_SCHEMES = {
    "rtsp": SourceKind.RTSP,
    "rtsps": SourceKind.RTSP,
    "rtmp": SourceKind.RTMP,
    "rtmps": SourceKind.RTMP,
    "http": SourceKind.HTTP,
    "https": SourceKind.HTTP,
    "udp": SourceKind.UDP,
    "synthetic": SourceKind.SYNTHETIC,
    "file": SourceKind.FILE,
    "lsl": SourceKind.LSL,
    "zmq+tcp": SourceKind.ZMQ_SAMPLES,
    "serial": SourceKind.SERIAL,
}


@dataclass(frozen=True, kw_only=True)
class SourceSpec:
    """A parsed source.

    Attributes:
        stream_id: the name used in events, metrics and logs.
        kind: what the source is.
        url: what PyAV opens (credentials included; never log it, log `display`).
        display: the URL with any password replaced by `***`.
        params: source parameters (v4l2 device options, synthetic scene settings).
    """

    stream_id: str
    kind: SourceKind
    url: str
    display: str
    params: dict[str, str] = field(default_factory=dict)

    @property
    def signal(self) -> bool:
        """Whether the source gives sensor samples (for a signal model) rather than video."""
        return self.kind in SIGNAL_KINDS

    @property
    def live(self) -> bool:
        """Whether the source may be a live one (an `http(s)://` URL is decided when it opens:
        a finite duration makes it a file, unless `#live` / `#file` says)."""
        if self.kind is SourceKind.HTTP:
            return self.params.get("play") != "file"
        return self.kind in LIVE_KINDS


def redact(url: str) -> str:
    """The URL with its password (and user name) hidden: `rtsp://***@host/path`."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, parts.fragment))


def _sanitize(name: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-_") or "stream"
    if not name[0].isalpha():
        name = "s" + name
    return name[:64]


def parse_source(text: str, stream_id: str | None = None) -> SourceSpec:
    """Parses one source string; raises `SourceError` naming it when it cannot be used."""
    text = text.strip()
    if not text:
        raise SourceError("empty source: give a file path, a URL or synthetic://")
    m = _ID_PREFIX_RE.match(text)
    if (
        m
        and stream_id is None
        and ("://" in m.group(2) or m.group(2).startswith(("/", ".")) or Path(m.group(2)).exists())
    ):
        stream_id, text = m.group(1), m.group(2)
    if stream_id is not None and not STREAM_ID_RE.match(stream_id):
        raise SourceError(
            f"stream id {stream_id!r}: use a letter then letters, digits, '_' or '-' (max 64)"
        )
    display = redact(text)

    if text.startswith("/dev/video"):
        path, _, query = text.partition("?")
        params = dict(parse_qsl(query, keep_blank_values=True))
        unknown = sorted(set(params) - set(V4L2_OPTIONS))
        if unknown:
            raise SourceError(
                f"{display}: unknown camera option(s) {unknown}; known: {list(V4L2_OPTIONS)}"
            )
        return SourceSpec(
            stream_id=stream_id or _sanitize(Path(path).name),
            kind=SourceKind.DEVICE,
            url=path,
            display=display,
            params=params,
        )

    if "://" in text:
        scheme = text.split("://", 1)[0].lower()
        kind = _SCHEMES.get(scheme)
        if kind is None:
            raise SourceError(
                f"{display}: unsupported URL scheme {scheme!r}; use a file path or one of "
                + ", ".join(f"{s}://" for s in sorted(_SCHEMES))
            )
        parts = urlsplit(text)
        if kind is SourceKind.LSL:
            name = text.split("://", 1)[1]
            if not name or "?" in name or "/" in name:
                raise SourceError(f"{display}: give the LSL stream's name, lsl://NAME")
            return SourceSpec(
                stream_id=stream_id or _sanitize(name),
                kind=kind,
                url=text,
                display=display,
                params={"name": name},
            )
        if kind is SourceKind.SERIAL:
            return _serial_spec(parts, stream_id, display)
        if kind is SourceKind.FILE:
            return _file_spec(parts.path, stream_id)
        if kind is SourceKind.SYNTHETIC:
            params = dict(parse_qsl(parts.query, keep_blank_values=True))
            unknown = sorted(set(params) - set(SYNTHETIC_OPTIONS))
            if unknown:
                raise SourceError(
                    f"{display}: unknown option(s) {unknown}; known: {list(SYNTHETIC_OPTIONS)}"
                )
            name = parts.netloc or "synthetic"
            return SourceSpec(
                stream_id=stream_id or _sanitize(name),
                kind=kind,
                url=text,
                display=display,
                params=params,
            )
        if kind is SourceKind.ZMQ_SAMPLES and (not parts.hostname or parts.port is None):
            raise SourceError(f"{display}: expected zmq+tcp://HOST:PORT (the sender's PUB)")
        if not parts.hostname and kind is not SourceKind.UDP:
            raise SourceError(f"{display}: URL has no host; expected {scheme}://HOST[:PORT]/PATH")
        params = {}
        if kind is SourceKind.HTTP and parts.fragment in HTTP_PLAY:
            # `#live` / `#file`: how to play it (a fragment never reaches the server)
            params["play"] = parts.fragment
            text, display = text[: text.rindex("#")], display[: display.rindex("#")]
        return SourceSpec(
            stream_id=stream_id or _sanitize(parts.hostname or scheme),
            kind=kind,
            url=text,
            display=display,
            params=params,
        )
    return _file_spec(text, stream_id)


def _serial_spec(parts, stream_id: str | None, display: str) -> SourceSpec:
    """`serial:///dev/ttyUSB0?baud=115200` (the port's path after `serial://`)."""
    if parts.netloc or not parts.path:
        raise SourceError(f"{display}: expected serial:///dev/PORT[?baud=N] (three slashes)")
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(set(params) - {"baud"})
    if unknown:
        raise SourceError(f"{display}: unknown option(s) {unknown}; known: ['baud']")
    baud = params.get("baud", "115200")
    if not baud.isdigit() or int(baud) < 1:
        raise SourceError(f"{display}: baud must be a positive whole number, not {baud!r}")
    return SourceSpec(
        stream_id=stream_id or _sanitize(Path(parts.path).name),
        kind=SourceKind.SERIAL,
        url=parts.path,
        display=display,
        params={"path": parts.path, "baud": baud},
    )


def _file_spec(path_text: str, stream_id: str | None) -> SourceSpec:
    base, _, query = path_text.partition("?")
    if Path(base).suffix.lower() in SIGNAL_SUFFIXES:
        return _signal_file_spec(base, query, stream_id, display=path_text)
    path = Path(path_text).expanduser()
    if not path.exists():
        raise SourceError(f"{path_text}: no such file; give an existing video file or a URL")
    if not path.is_file():
        raise SourceError(f"{path_text}: not a regular file; give a video file")
    if path.stat().st_size == 0:
        raise SourceError(f"{path_text}: file is empty; give a video file")
    return SourceSpec(
        stream_id=stream_id or _sanitize(path.stem),
        kind=SourceKind.FILE,
        url=str(path),
        display=str(path_text),
    )


def _signal_file_spec(path_text: str, query: str, stream_id: str | None, *, display: str):
    params = dict(parse_qsl(query, keep_blank_values=True))
    unknown = sorted(set(params) - set(SIGNAL_OPTIONS))
    if unknown:
        raise SourceError(f"{display}: unknown option(s) {unknown}; known: {list(SIGNAL_OPTIONS)}")
    if "rate" in params:
        try:
            rate = float(params["rate"])
        except ValueError:
            rate = 0.0
        if not rate > 0 or rate == float("inf"):
            raise SourceError(f"{display}: rate must be a positive sampling rate in Hz")
    path = Path(path_text).expanduser()
    if not path.is_file():
        what = "no such file" if not path.exists() else "not a regular file"
        raise SourceError(f"{display}: {what}; give an existing .npy or .csv recording")
    return SourceSpec(
        stream_id=stream_id or _sanitize(path.stem),
        kind=SourceKind.SIGNAL_FILE,
        url=str(path),
        display=display,
        params=params,
    )


def parse_sources(texts: list[str] | tuple[str, ...]) -> list[SourceSpec]:
    """Parses several sources, giving repeated names a numeric suffix (`cam`, `cam-2`)."""
    specs: list[SourceSpec] = []
    seen: set[str] = set()
    for text in texts:
        spec = parse_source(text)
        name, n = spec.stream_id, 2
        explicit = _ID_PREFIX_RE.match(text.strip()) is not None and "://" in text
        if name in seen and explicit:
            raise SourceError(f"{spec.display}: stream id {name!r} is used twice")
        while name in seen:
            name, n = f"{spec.stream_id}-{n}", n + 1
        seen.add(name)
        if name != spec.stream_id:
            spec = SourceSpec(
                stream_id=name,
                kind=spec.kind,
                url=spec.url,
                display=spec.display,
                params=spec.params,
            )
        specs.append(spec)
    return specs


def av_open_args(
    spec: SourceSpec, *, timeout_s: float, rtsp_transport: str = "tcp"
) -> tuple[str | None, dict[str, str]]:
    """The (format, options) pair for `av.open` for this source.

    Live network sources get FFmpeg's socket timeout in microseconds (`stimeout` is silently
    ignored by FFmpeg >= 5 and would hang on a stalled camera). RTSP uses a tiny probe: the
    SDP already carries the stream parameters, and probing would delay the first frame ~1 s.
    """
    us = str(int(timeout_s * 1_000_000))
    if spec.kind is SourceKind.RTSP:
        return None, {"rtsp_transport": rtsp_transport, "timeout": us, "probesize": "32"}
    if spec.kind is SourceKind.RTMP:
        return None, {"rw_timeout": us}
    if spec.kind is SourceKind.HTTP:
        return None, {"rw_timeout": us}
    if spec.kind is SourceKind.UDP:
        return None, {"timeout": us}
    if spec.kind is SourceKind.DEVICE:
        return "v4l2", {k: v for k, v in spec.params.items() if k in V4L2_OPTIONS}
    return None, {}
