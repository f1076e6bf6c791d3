"""Typed, frozen configuration and its one strict YAML loader.

Every section is a frozen dataclass. `load_config` reads YAML, applies `--set a.b=value`
overrides, and rejects unknown keys and wrong types with the key path:
`temporal.lookbak: unknown key; known: ...`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from models.action_model import ModelConfig


class ConfigError(ValueError):
    """A configuration mistake; the message names the key path and what is wrong."""


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

    def __post_init__(self) -> None:
        _positive(self, "buffer_frames", "timeout_s", "reconnect_initial_s", "reconnect_max_s")
        if not 0 <= self.reader_nice <= 19:
            raise ValueError(f"reader_nice must be in [0, 19], got {self.reader_nice}")
        if not 0 <= self.reconnect_jitter < 1:
            raise ValueError(f"reconnect_jitter must be in [0, 1), got {self.reconnect_jitter}")
        if self.reconnect_max_s < self.reconnect_initial_s:
            raise ValueError("reconnect_max_s must be >= reconnect_initial_s")


@dataclass(frozen=True, kw_only=True)
class DecodeConfig:
    """Head outputs → segments.

    Attributes:
        pre_nms_threshold: lowest class probability considered.
        pre_nms_topk: most candidates per window before NMS.
        min_duration_frames: shorter segments are dropped.
        nms_sigma: Gaussian soft-NMS width (score *= exp(-IoU² / sigma)).
        min_score: segments whose (decayed) score falls below this are dropped.
        max_segments: most segments per window after NMS.
        frame_threshold, frame_threshold_off: frame-labelling heads (FAFormer): an action of
            a class is on where its per-frame probability reaches frame_threshold, and stays
            on until it falls below frame_threshold_off (hysteresis).
    """

    pre_nms_threshold: float = 0.05
    pre_nms_topk: int = 500
    min_duration_frames: float = 2.0
    nms_sigma: float = 0.5
    min_score: float = 0.01
    max_segments: int = 50
    frame_threshold: float = 0.5
    frame_threshold_off: float = 0.2

    def __post_init__(self) -> None:
        _positive(self, "pre_nms_topk", "nms_sigma", "max_segments")
        _unit(self, "pre_nms_threshold", "min_score")
        if not 0 < self.frame_threshold_off <= self.frame_threshold < 1:
            raise ValueError(
                "need 0 < frame_threshold_off <= frame_threshold < 1, got "
                f"{self.frame_threshold_off} and {self.frame_threshold}"
            )


@dataclass(frozen=True, kw_only=True)
class TrackerConfig:
    """Segments → one onset and one offset per action.

    Attributes:
        onset_threshold: a segment needs this score to open (or be) an action.
        match_iou: a segment with at least this tIoU with a tracked action of the same label
            is that action seen again.
        open_tolerance_frames: a segment ending within this many frames of the window's end
            is still open (the action goes on).
        close_after_missed_runs: an open action not seen in this many head runs in a row is
            closed (its score fell away).
    """

    onset_threshold: float = 0.3
    match_iou: float = 0.3
    open_tolerance_frames: float = 2.0
    close_after_missed_runs: int = 2

    def __post_init__(self) -> None:
        _unit(self, "onset_threshold", "match_iou")
        _positive(self, "close_after_missed_runs")
        if self.open_tolerance_frames < 0:
            raise ValueError("open_tolerance_frames must be >= 0")


@dataclass(frozen=True, kw_only=True)
class PublisherConfig:
    """Attributes:
    endpoint: ZeroMQ PUB endpoint to bind (loopback by default).
    heartbeat_s: seconds between heartbeats (None: no heartbeats).
    send_hwm: messages queued per subscriber before ZeroMQ drops (PUB never blocks).
    curve_secret_key: the detector's CURVE key pair (NAME.key_secret from actstream keys):
        events are encrypted and subscribers need the matching NAME.key (None: no CURVE).
    curve_clients_dir: with CURVE, only subscribers whose public keys (*.key) are in this
        directory may connect (None: any subscriber that has the detector's public key).
    """

    endpoint: str = "tcp://127.0.0.1:5556"
    heartbeat_s: float | None = 1.0
    send_hwm: int = 10000
    curve_secret_key: str | None = None
    curve_clients_dir: str | None = None

    def __post_init__(self) -> None:
        if "://" not in self.endpoint:
            raise ValueError(f"endpoint must look like tcp://HOST:PORT, got {self.endpoint!r}")
        _positive(self, "heartbeat_s", "send_hwm")
        if self.curve_clients_dir and not self.curve_secret_key:
            raise ValueError("curve_clients_dir needs curve_secret_key (the detector's key pair)")


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


@dataclass(frozen=True, kw_only=True)
class EngineConfig:
    """Attributes:
    device: torch device for the model ("cpu", "cuda", "cuda:1").
    max_batch: most frames through the backbone at once (across streams).
    backend: auto | tensorrt | onnxruntime | torch (auto: the best that runs here).
    precision: auto | fp32 | fp16 (auto: fp16 for tensorrt, else fp32; fp16 needs CUDA).
    engine_dir: a compiled engine directory (actstream compile) to run instead of weights.
    torch_compile: run the torch backend through torch.compile.
    cuda_graphs: CUDA graphs for the torch backend (null: on when the device is CUDA).
    threads: ONNX Runtime intra-op threads (0: on the CPU every core but one, which is left
        to the readers; on CUDA ONNX Runtime's default).
    """

    device: str = "cpu"
    max_batch: int = 32
    backend: Literal["auto", "tensorrt", "onnxruntime", "torch"] = "auto"
    precision: Literal["auto", "fp32", "fp16"] = "auto"
    engine_dir: str | None = None
    torch_compile: bool = False
    cuda_graphs: bool | None = None
    threads: int = 0

    def __post_init__(self) -> None:
        _positive(self, "max_batch")
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0, got {self.threads}")


@dataclass(frozen=True, kw_only=True)
class AppConfig:
    """Everything `actstream run` needs.

    Attributes:
        sources: default sources when none are given on the command line (`[ID=]SOURCE`).
        weights: checkpoint to load (None: seeded random initialisation).
    """

    sources: tuple[str, ...] = ("synthetic://demo",)
    weights: str | None = None
    model: ModelConfig = field(default_factory=ModelConfig)
    stream: StreamConfig = field(default_factory=StreamConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    publisher: PublisherConfig = field(default_factory=PublisherConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)


def _positive(obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if value is not None and value <= 0:
            raise ValueError(f"{name} must be positive, got {value}")


def _unit(obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if not 0 <= value <= 1:
            raise ValueError(f"{name} must be in [0, 1], got {value}")


# ---- the strict loader ------------------------------------------------------------------------
T = typing.TypeVar("T")


def from_dict(cls: type[T], data: Any, path: str = "") -> T:
    """Builds dataclass `cls` from plain data, strictly: unknown keys and wrong types raise
    `ConfigError` naming the key path."""
    where = path or "<top level>"
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {_kind(data)}")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls) if f.init]
    for key in data:
        if key not in known:
            raise ConfigError(f"{_join(path, str(key))}: unknown key; known: {', '.join(known)}")
    kwargs = {key: _convert(hints[key], value, _join(path, key)) for key, value in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{where}: {exc}") from None


def _convert(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{path}: must not be null")
        kinds = _tagged(args)
        if kinds:
            return _convert_tagged(kinds, value, path)
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, path)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{path}: {_kind(value)} not allowed")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{path}: expected one of {list(args)}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{path}: expected a list, got {_kind(value)}")
        item = args[0]
        return tuple(_convert(item, v, f"{path}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {_kind(value)}")
        return {str(k): _convert(args[1], v, f"{path}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {_kind(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {_kind(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{path}: expected a number, got {_kind(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {_kind(value)}")
        return value
    raise AssertionError(f"{path}: config type {tp!r} not handled by the loader")


def _tagged(args: tuple) -> dict[str, type]:
    """A union of dataclasses told apart by a `type: Literal[...]` field: {tag: class}
    (first = default); empty otherwise."""
    kinds: dict[str, type] = {}
    for arg in args:
        if arg is type(None):
            continue
        hint = typing.get_type_hints(arg).get("type") if dataclasses.is_dataclass(arg) else None
        if hint is None or typing.get_origin(hint) is not Literal:
            return {}
        kinds[typing.get_args(hint)[0]] = arg
    return kinds


def _convert_tagged(kinds: dict[str, type], value: Any, path: str) -> Any:
    """A mapping with an optional `type` (default: the first kind), or just the tag."""
    tag = value if isinstance(value, str) else None
    if isinstance(value, dict):
        tag = value.get("type", next(iter(kinds)))
    if tag not in kinds:
        where = path if isinstance(value, str) else _join(path, "type")
        raise ConfigError(f"{where}: expected one of {list(kinds)}, got {tag!r}")
    return from_dict(kinds[tag], value if isinstance(value, dict) else {}, path)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def apply_overrides(data: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    """Applies `a.b=value` overrides (values parsed as YAML) to plain config data."""
    data = _deepcopy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"--set {item!r}: expected KEY=VALUE, e.g. tracker.onset_threshold=0.6"
            )
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        parts = key.strip().split(".")
        node = data
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: {'.'.join(parts[: i + 1])} is not a section")
            node = child
        node[parts[-1]] = value
    return data


def _deepcopy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _deepcopy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deepcopy(v) for v in data]
    return data


def read_yaml_mapping(path: str | Path) -> dict:
    """A YAML file's top-level mapping (empty file: {}); `ConfigError` naming the file."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror or exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: invalid YAML{where}") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {_kind(data)}")
    return data


def load_config(
    path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> AppConfig:
    """Loads an `AppConfig` from a YAML file (None: the built-in defaults) plus overrides."""
    data: Any = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        data = read_yaml_mapping(path)
    try:
        data = apply_overrides(data, overrides)
        return from_dict(AppConfig, data)
    except ConfigError as exc:
        if overrides and source == "defaults":
            raise
        raise ConfigError(f"{source}: {exc}") from None


def config_to_dict(config: Any) -> Any:
    """A config as plain data (tuples as lists), loadable again with `from_dict`."""
    if dataclasses.is_dataclass(config):
        return {f.name: config_to_dict(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, tuple | list):
        return [config_to_dict(v) for v in config]
    if isinstance(config, dict):
        return {k: config_to_dict(v) for k, v in config.items()}
    return config
