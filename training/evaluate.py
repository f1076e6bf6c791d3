"""`actstream eval`: offline and streaming evaluation.

* offline: each video is encoded whole (backbone, causal temporal encoder, then the head over
  the whole video at once), decoded and de-duplicated with soft-NMS;
* streaming: each video is replayed through the real `Detector` with files read as fast as
  the model takes them (stream time advances with the frames, nothing sleeps); the segments
  are what the onset/offset events say, so only causally emitted segments count; the event
  table (`training.event_metrics`: one-to-one precision / recall / F1, splits, false events,
  retroactive onsets, onset / offset delays from the ground truth to the frame on which the
  event was decided) comes first.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass

import numpy as np
import torch

from engine.backends.base import Backend
from engine.backends.compile import load_engine
from engine.backends.manifest import EngineError, weights_sha256
from engine.backends.torch_backend import TorchBackend
from engine.build import build_detector
from engine.config import AppConfig
from engine.detector import Detector
from engine.wire.events import ActionEvent
from engine.wire.memory import MemoryPublisher
from models.action_model import ActionModel
from models.backbone import previous_frames, to_images
from models.heads import head_family
from models.intervals import Interval
from models.postprocess import DecodeConfig, frame_runs
from stream.sources import parse_source
from training.data import VideoItem
from training.event_metrics import ReportedAction, event_metrics
from training.metrics import MapResult, detection_map
from training.seg_metrics import segmentation_scores


@torch.inference_mode()
def backbone_features(
    model: ActionModel, frames: np.ndarray, device: str, batch: int = 256
) -> torch.Tensor:
    """(T, H, W, 3) uint8 frames of one video (or (T, W + 1, C_s) signal frames) → (T, C_f)
    backbone features (on the device)."""
    x = torch.from_numpy(frames).to(device)
    if x.is_floating_point():  # signal frames: the front end takes them as they are
        return torch.cat([model.backbone(x[i : i + batch]) for i in range(0, len(x), batch)])
    prev = previous_frames(x[None])[0]
    return torch.cat(
        [
            model.backbone(to_images(x[i : i + batch]), to_images(prev[i : i + batch]))
            for i in range(0, len(x), batch)
        ]
    )


@torch.inference_mode()
def encode_video(
    model: ActionModel, item: VideoItem, *, from_features: bool, device: str, chunk: int = 512
) -> torch.Tensor:
    """(T_v, C) temporal features of a whole video, computed in chunks (the encoder is
    causal with a bounded receptive field, so chunks with enough context are exact)."""
    if from_features:
        feats = torch.from_numpy(item.data).float().to(device)
    else:
        feats = backbone_features(model, item.data, device)
    t = model.temporal.config
    out = []
    for s in range(0, len(feats), chunk):
        lo = max(0, s - t.past_frames)
        hi = min(len(feats), s + chunk + t.delay_frames)
        h = model.temporal(feats[lo:hi][None])[0]
        out.append(h[s - lo : s - lo + min(chunk, len(feats) - s)])
    return torch.cat(out)


@torch.inference_mode()
def offline_frame_probs(
    model: ActionModel, item: VideoItem, *, from_features: bool, device: str
) -> np.ndarray:
    """(T_v, K) per-frame class probabilities of a frame-labelling head (FAFormer) over a
    whole video (`models.heads`: its windows averaged where they overlap)."""
    frame_probs = head_family(model.head.config).frame_probs
    assert frame_probs is not None, "the head labels no frames"
    h = encode_video(model, item, from_features=from_features, device=device)
    return frame_probs(model.head, h).numpy()


@torch.inference_mode()
def offline_detections(
    model: ActionModel,
    item: VideoItem,
    classes: tuple[str, ...],
    decode: DecodeConfig,
    *,
    from_features: bool,
    device: str,
) -> list[Interval]:
    """Detections in a whole video: the video encoded whole, then the head family's offline
    decoding (`models.heads`: ActionFormer's local head once over the whole video, FAFormer
    window by window)."""
    h = encode_video(model, item, from_features=from_features, device=device)
    return [
        Interval(
            float(item.to_seconds(s)), float(item.to_seconds(e)), classes[k], sc, item.video_id
        )
        for s, e, k, sc in head_family(model.head.config).video_segments(model.head, h, decode)
    ]


def offline_segmentation(
    model: ActionModel,
    videos: list[VideoItem],
    classes: tuple[str, ...],
    decode: DecodeConfig,
    from_features: bool,
) -> dict[str, float]:
    """Frame accuracy, edit score and F1@10/25/50 of a frame-labelling head's offline labels."""
    probs = {
        v.video_id: offline_frame_probs(model, v, from_features=from_features, device="cpu")
        for v in videos
    }
    segments = {
        v.video_id: [
            Interval(float(v.to_seconds(s)), float(v.to_seconds(e)), classes[k], sc, v.video_id)
            for s, e, k, sc in frame_runs(
                torch.from_numpy(probs[v.video_id]),
                torch.ones(len(probs[v.video_id]), dtype=torch.bool),
                decode,
            )
        ]
        for v in videos
    }
    return segmentation_scores(
        segments,
        {v.video_id: ground_truth([v], classes) for v in videos},
        classes,
        {v.video_id: len(v.data) for v in videos},
        videos[0].step_s,
        scores=probs,
        threshold=decode.frame_threshold,
    )


@torch.inference_mode()
def head_latency_ms(model: ActionModel, repeats: int = 30) -> float:
    """Median time of one head run on one window (torch eager, CPU, one thread: with several
    threads the number measures whatever else shares the cores as much as the head)."""
    T = model.head.config.window_frames
    window = torch.randn(1, T, model.temporal.out_dim)
    valid = torch.ones(1, T, dtype=torch.bool)
    model.eval()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(3):
            model.head(window, valid)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            model.head(window, valid)
            times.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)
    return 1000 * float(np.median(times))


def ground_truth(videos: list[VideoItem], classes: tuple[str, ...]) -> list[Interval]:
    return [
        Interval(
            float(v.to_seconds(b[0])),
            float(v.to_seconds(b[1])),
            classes[int(lab)],
            video_id=v.video_id,
        )
        for v in videos
        for b, lab in zip(v.bounds, v.labels, strict=True)
    ]


def evaluate_offline(
    model: ActionModel,
    videos: list[VideoItem],
    classes: tuple[str, ...],
    decode: DecodeConfig,
    *,
    from_features: bool,
    device: str = "cpu",
) -> MapResult:
    model.eval()
    dets = [
        d
        for v in videos
        for d in offline_detections(
            model, v, classes, decode, from_features=from_features, device=device
        )
    ]
    return detection_map(dets, ground_truth(videos, classes))


def replay_backend(model: ActionModel, config: AppConfig) -> Backend:
    """What the replay runs the model on: eager PyTorch fp32, or the compiled engine
    directory `engine.engine_dir` (`--set engine.engine_dir=DIR`: the events of a backend
    and precision), which must hold the same weights."""
    if not config.engine.engine_dir:
        return TorchBackend(model, config.engine.device)
    backend, manifest = load_engine(
        config.engine.engine_dir, device=config.engine.device, threads=config.engine.threads
    )
    if manifest.weights_sha256 != weights_sha256(model.state_dict()):
        raise EngineError(
            f"{config.engine.engine_dir}: compiled from other weights than the checkpoint "
            "evaluated; compile this checkpoint into it"
        )
    return backend


def replay(
    model: ActionModel,
    video_path: str,
    config: AppConfig,
    *,
    segmenter=None,
    backend: Backend | None = None,
) -> list[ActionEvent]:
    """Runs one video file (stream id "v") through the real detector, as fast as it goes
    (no metrics port, no evidence clips); returns its action events in emission order.
    `segmenter`: instead of the model's head; `backend`: default `replay_backend`."""
    app = dataclasses.replace(
        config,
        stream=dataclasses.replace(config.stream, realtime=False),
        metrics=dataclasses.replace(config.metrics, port=None),
        clips=dataclasses.replace(config.clips, enabled=False),  # measuring cuts no clips
    )
    backend = backend or replay_backend(model, app)
    sink = MemoryPublisher()  # in-process: the replay needs no sockets
    detector: Detector = build_detector(
        [parse_source(video_path, stream_id="v")],
        app,
        backend,
        run_id="eval",
        publisher=sink,
        segmenter=segmenter,
    )
    detector.start()
    try:
        detector.run(threading.Event())
    finally:
        detector.close()
    return [m for m in sink.messages if isinstance(m, ActionEvent)]


def reported_actions(events, video_id: str) -> list[ReportedAction]:
    """Onset/offset pairs (ActionEvents or TrackEvents with frame_s) → reported actions."""
    onsets = {e.event_id: e for e in events if e.type == "onset"}
    return [
        ReportedAction(
            Interval(e.start_s, e.end_s, e.label, e.score, video_id),
            onset_s=onsets[e.event_id].frame_s,
            offset_s=e.frame_s,
            onset_score=onsets[e.event_id].score,
            late=onsets[e.event_id].late,
            onset_start_s=onsets[e.event_id].start_s,
        )
        for e in events
        if e.type == "offset"
    ]


@dataclass(frozen=True)
class StreamingResult:
    """The event table (`training.event_metrics`), the streaming mAP of the reported
    actions, and per video the reported actions and onsets (for timelines)."""

    events: dict
    map_result: MapResult
    actions: dict[str, list[ReportedAction]]

    @property
    def segments(self) -> dict[str, list[Interval]]:
        return {v: [a.interval for a in acts] for v, acts in self.actions.items()}

    @property
    def onsets(self) -> dict[str, list[tuple[float, str]]]:
        return {
            v: [(a.onset_s, a.interval.label) for a in acts] for v, acts in self.actions.items()
        }


def streaming_events(
    actions: dict[str, list[ReportedAction]],
    videos: list[VideoItem],
    classes: tuple[str, ...],
    *,
    with_map: bool = True,
) -> dict:
    """The event table of the videos' reported actions."""
    truth = ground_truth(videos, classes)
    everything = [a for v in videos for a in actions[v.video_id]]
    minutes = sum(len(v.data) * v.step_s for v in videos) / 60.0
    return event_metrics(everything, truth, minutes=minutes, with_map=with_map)


def streaming_result(
    actions: dict[str, list[ReportedAction]], videos: list[VideoItem], classes: tuple[str, ...]
) -> StreamingResult:
    everything = [a.interval for v in videos for a in actions[v.video_id]]
    return StreamingResult(
        streaming_events(actions, videos, classes),
        detection_map(everything, ground_truth(videos, classes)),
        actions,
    )


def evaluate_streaming(
    model: ActionModel,
    videos: list[VideoItem],
    paths: dict[str, str],
    classes: tuple[str, ...],
    config: AppConfig,
    progress=None,
) -> StreamingResult:
    """Replays every video through the detector; the event table of what it published.
    `progress(i, n)` is called after each video."""
    actions = {}
    backend = replay_backend(model, config)
    for i, v in enumerate(videos, 1):
        events = replay(model, paths[v.video_id], config, backend=backend)
        actions[v.video_id] = reported_actions(events, v.video_id)
        if progress is not None:
            progress(i, len(videos))
    return streaming_result(actions, videos, classes)
