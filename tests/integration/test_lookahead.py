"""FastBack lookahead in the detector: a model with k frames of lookahead delays every
decision by exactly k frames, and its events say so."""

import pytest

from engine.wire.events import ActionEvent
from models.action_model import build_model
from tests.integration.helpers import ScriptedHead, small_config
from tests.media import scene_frames, write_h264_mp4
from training.evaluate import replay

FPS = 10
ACTIONS = [(1.5, 3.0, "jump", 0.9), (4.2, 5.5, "wave", 0.8)]


def onsets_and_offsets(video: str, lookahead: int, *more: str) -> list[ActionEvent]:
    heads = 2 if lookahead else 0
    config = small_config(
        *more,
        "stream.realtime=false",
        f"model.fps={FPS}",
        "model.head.stride_frames=1",
        f"model.temporal.num_lookahead_heads={heads}",
        f"model.temporal.num_lookback_heads={4 - heads}",
        f"model.temporal.lookahead_frames={lookahead}",
    )
    return replay(build_model(config.model), video, config, segmenter=ScriptedHead({"v": ACTIONS}))


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = tmp_path_factory.mktemp("lookahead") / "v.mp4"
    write_h264_mp4(path, scene_frames(70, fps=FPS, width=64, height=64), fps=FPS)
    return str(path)


@pytest.mark.parametrize("k", [1, 3])
def test_lookahead_delays_every_decision_by_exactly_k_frames(video, k):
    causal = onsets_and_offsets(video, 0)
    ahead = onsets_and_offsets(video, k)
    assert [e.type for e in causal] == ["onset", "offset", "onset", "offset"]
    assert [(e.type, e.label, e.start_s) for e in ahead] == [
        (e.type, e.label, e.start_s) for e in causal
    ]
    for a, c in zip(ahead, causal, strict=True):
        assert a.frame_s == pytest.approx(c.frame_s + k / FPS, abs=1e-6)
        assert a.lookahead_frames == k and c.lookahead_frames == 0
        assert a.body()["lookahead_frames"] == k


def test_a_replay_cuts_no_evidence_clips(video, tmp_path):
    events = onsets_and_offsets(video, 0, f"clips.dir={tmp_path / 'clips'}", "clips.enabled=true")
    assert [e.type for e in events] == ["onset", "offset", "onset", "offset"]
    assert not (tmp_path / "clips").exists() or not any((tmp_path / "clips").rglob("*.*"))


def test_engine_head_stride_runs_the_head_every_n_frames_of_the_same_model(video):
    ends: list[float] = []
    head = ScriptedHead({"v": ACTIONS})

    def counting(window):
        ends.append(round(window.end_s, 3))
        return head(window)

    config = small_config("stream.realtime=false", f"model.fps={FPS}", "engine.head_stride=3")
    assert config.model.head.stride_frames != 3
    events = replay(build_model(config.model), video, config, segmenter=counting)
    gaps = {round(b - a, 3) for a, b in zip(ends[:-1], ends[1:-1], strict=False)}
    assert gaps == {0.3}  # every third frame at 10 fps (the last run: at the stream's end)
    assert [e.type for e in events] == ["onset", "offset", "onset", "offset"]
