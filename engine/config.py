"""Typed, frozen configuration and its one strict YAML loader.

Every section is a frozen dataclass. `load_config` reads YAML, applies `--set a.b=value`
overrides, and rejects unknown keys and wrong types with the key path:
`temporal.lookbak: unknown key; known: ...`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.api import HttpConfig
from engine.backends.choice import EngineConfig
from engine.clips import ClipsConfig
from engine.loader import ConfigError, apply_overrides, from_dict, read_yaml_mapping
from engine.metrics import MetricsConfig
from engine.store.events import StoreConfig
from engine.tracker import TrackerConfig
from engine.wire.mqtt import MqttConfig
from engine.wire.publisher import PublisherConfig
from models.action_model import ModelConfig
from models.postprocess import DecodeConfig
from stream.settings import StreamConfig

BUNDLED = "bundled"
BUNDLED_WEIGHTS = Path(__file__).resolve().parents[1] / "configs" / "weights" / "demo.pt"


@dataclass(frozen=True, kw_only=True)
class AppConfig:
    """Everything `actstream run` needs.

    Attributes:
        sources: default sources when none are given on the command line (`[ID=]SOURCE`).
        weights: checkpoint to load; "bundled" (the default): the bundled demo model
            (`configs/weights/demo.pt`), whose model section is the default one; None:
            seeded random initialisation, only by explicit choice (`weights: null`,
            `--random-init`).
    """

    sources: tuple[str, ...] = ("synthetic://demo",)
    weights: str | None = BUNDLED
    model: ModelConfig = field(default_factory=ModelConfig)
    stream: StreamConfig = field(default_factory=StreamConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    publisher: PublisherConfig = field(default_factory=PublisherConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    clips: ClipsConfig = field(default_factory=ClipsConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)


def resolve_weights(config: AppConfig) -> tuple[str | None, str | None]:
    """The checkpoint `config` asks for (None: random initialisation) and, when that was not
    asked for explicitly, one line saying why: "bundled" weights fit only the default model
    section, so a config that changes the model without naming weights starts random."""
    if config.weights != BUNDLED:
        return config.weights, None
    if config.model != ModelConfig():
        return None, (
            "the model section differs from the bundled model's and no weights are given: "
            "seeded random initialisation (give --weights CHECKPOINT, or --random-init to "
            "say so)"
        )
    return str(BUNDLED_WEIGHTS), None


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
