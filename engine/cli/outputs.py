"""Where `actstream run` sends what it publishes besides the ZeroMQ socket — the event store,
MQTT, the printed lines, the --show-truth monitor — and the HTTP API beside them: the message
sinks in order, and each started part's close, in one place."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

Sink = Callable[[str, bytes, object], None]  # (topic, payload, message), on the publisher thread


@dataclass
class Outputs:
    """`sinks` get every sent message in order; `closers` undo what was started (last first)."""

    sinks: list[Sink] = field(default_factory=list)
    closers: list[Callable[[], None]] = field(default_factory=list)
    store_path: str | None = None
    mqtt_shown: str = "off"
    api_url: str = "off"
    page_url: str | None = None

    def on_sent(self, topic: str, payload: bytes, message: object) -> None:
        for sink in self.sinks:
            sink(topic, payload, message)

    def close(self) -> None:
        while self.closers:
            self.closers.pop()()


def start_event_outputs(outputs: Outputs, config, streams: list[str], run_id: str, model: str,
                        metrics) -> None:  # fmt: skip
    """Starts the event store and the MQTT client the config asks for, ahead of the other
    sinks (they only queue); raises `StoreError` for a store that cannot be opened."""
    from engine.store.events import EventStore

    if config.store.target:
        store = EventStore(
            config.store, run_id=run_id, model=model, streams=streams, metrics=metrics
        )
        store.start()
        outputs.closers.append(store.close)
        outputs.sinks.insert(0, lambda _topic, payload, _message: store.record(payload))
        outputs.store_path = store.shown
    if config.mqtt.url:
        from engine.wire.mqtt import MqttPublisher

        mqtt = MqttPublisher(config.mqtt, run_id=run_id, streams=streams, metrics=metrics)
        mqtt.start()
        outputs.closers.append(mqtt.close)
        outputs.sinks.insert(0, lambda _topic, payload, message: mqtt.record(payload, message))
        outputs.mqtt_shown = mqtt.shown


def start_api(outputs: Outputs, config, detector, metrics, *, previews=None, specs=(),
              info=None) -> None:  # fmt: skip
    """Serves the HTTP API and web view when `http.port` is set (its live feed becomes a
    sink; `info` adds to what the page's health shows); raises `HttpPortError` when it cannot
    bind."""
    if config.http.port is None:
        return
    from engine.api import ApiServer
    from engine.api.app import DetectorView, build_app
    from engine.versions import installed_version
    from stream.sources import SourceError

    try:
        scenes = synthetic_scenes(specs, config)  # the ground truth beside the events
    except SourceError:
        scenes = {}  # its reader reports the bad option at start-up
    info = {
        **(info or {}),
        "classes": list(config.model.classes),
        "timeout_s": config.stream.timeout_s,
        "versions": {p: installed_version(p) for p in ("actstream", "torch", "av")},
    }

    publisher = detector.publisher
    view = DetectorView(
        publisher.current,
        publisher.is_alive,
        metrics.registry,
        previews=previews,
        info=info,
        clock=detector.clock,
        scenes=scenes,
    )
    clips_dir = config.clips.dir if config.clips.enabled else None
    if not config.http.token and not _loopback(config.http.host):
        logging.getLogger("engine.api").warning(
            "http.host %s reaches beyond this machine and http.token is not set: whoever "
            "reaches the port sees every stream, event and clip",
            config.http.host,
        )
    app = build_app(config.store.target, view, clips_dir, token=config.http.token)
    api = ApiServer(app, config.http.host, config.http.port)
    api.start()
    outputs.closers.append(api.close)
    outputs.sinks.append(app.state.hub.on_sent)
    host = f"[{config.http.host}]" if ":" in config.http.host else config.http.host
    outputs.api_url = f"http://{host}:{api.port}/api/events"
    outputs.page_url = f"http://{host}:{api.port}/"


def synthetic_scenes(specs, config) -> dict:
    """A copy of each `synthetic://` stream's scene (its ground truth), by stream id; raises
    `SourceError` for a bad option."""
    from engine.build import reader_options
    from stream.frame_sources import synthetic_scene
    from stream.sources import SourceKind

    options = reader_options(config)
    return {
        s.stream_id: synthetic_scene(s, options) for s in specs if s.kind is SourceKind.SYNTHETIC
    }


def _loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
