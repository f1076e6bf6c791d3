"""The signal front end: derived frame rate, first-order difference, normalisation kept in
the checkpoint, and the graphs it exports."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.backends.torch_backend import TorchBackend
from engine.backends.verify import compare_backends
from engine.checkpoint import load_checkpoint, save_checkpoint
from engine.loader import ConfigError, from_dict
from models.action_model import ModelConfig, build_model
from models.signal import SignalFrontEnd, SignalInput
from stream.signals import SignalFraming, signal_frames

SIGNAL = SignalInput(channels=4, sample_rate_hz=50.0, window_samples=20, hop_samples=5)


def tiny_config(**input_overrides) -> ModelConfig:
    data = {
        "classes": ["a", "b"],
        "input": {
            "kind": "signal",
            "channels": 4,
            "sample_rate_hz": 50.0,
            "window_samples": 20,
            "hop_samples": 5,
            "encoder_channels": [16],
            "feature_dim": 16,
            **input_overrides,
        },
        "temporal": {"dim": 16, "num_layers": 1, "num_lookback_heads": 2, "lookback_frames": 8},
        "head": {"window_frames": 32, "dim": 16, "num_levels": 2, "num_heads": 2, "attn_window": 3},
    }
    return from_dict(ModelConfig, data)


def test_the_frame_rate_is_derived_from_the_signal_input():
    assert tiny_config().fps == 10.0  # 50 Hz / 5 samples per hop
    with pytest.raises(ConfigError, match="derived as input.sample_rate_hz / input.hop_samples"):
        from_dict(
            ModelConfig,
            {
                "fps": 25.0,
                "input": {
                    "channels": 4,
                    "sample_rate_hz": 50.0,
                    "window_samples": 20,
                    "hop_samples": 5,
                },
            },
        )
    assert ModelConfig().fps == 10.0  # video models keep their default
    with pytest.raises(ConfigError, match="hop_samples .* must be <= input.window_samples"):
        tiny_config(hop_samples=30)
    with pytest.raises(ConfigError, match="input.diff: expected one of"):
        tiny_config(diff="second")


@pytest.mark.parametrize("diff, width", [("concat", 8), ("only", 4), ("none", 4)])
def test_the_front_end_sees_the_signal_and_or_its_difference(diff, width):
    front = SignalFrontEnd(SignalInput(**{**SIGNAL.__dict__, "diff": diff, "normalise": False}))
    x = torch.randn(3, 21, 4)
    z = front.features_in(x)
    assert z.shape == (3, 20, width)
    d = x[:, 1:] - x[:, :-1]
    if diff == "only":
        torch.testing.assert_close(z, d)
    elif diff == "concat":
        torch.testing.assert_close(z, torch.cat([x[:, 1:], d], -1))
    else:
        torch.testing.assert_close(z, x[:, 1:])
    assert front(x).shape == (3, SIGNAL.feature_dim)
    with pytest.raises(ValueError, match=r"signal frames must be \(N, 21, 4\)"):
        front(torch.randn(3, 20, 4))


def test_streamed_frames_give_the_features_of_the_whole_recording():
    """Frames cut as a reader cuts them, then the front end: the same as the difference of
    the whole recording, window by window (causal across chunk boundaries)."""
    front = SignalFrontEnd(SignalInput(**{**SIGNAL.__dict__, "diff": "only"})).eval()
    front.set_statistics(torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([2.0, 2.0, 1.0, 0.5]))
    x = np.random.default_rng(0).normal(size=(300, 4)).astype(np.float32)
    framing = SignalFraming(channels=4, sample_rate_hz=50.0, window_samples=20, hop_samples=5)
    frames = torch.from_numpy(signal_frames(x, framing))
    norm = (torch.from_numpy(x) - front.mean) / front.std
    whole = torch.diff(norm, dim=0)  # sample i - sample i - 1, for i >= 1
    for i in range(4, len(frames)):  # frames whose window lies inside the recording
        end = (i + 1) * 5  # exclusive
        torch.testing.assert_close(
            front.features_in(frames[i : i + 1])[0], whole[end - 21 : end - 1]
        )


def test_normalisation_statistics_are_kept_in_the_checkpoint(tmp_path):
    config = tiny_config()
    model = build_model(config)
    model.backbone.set_statistics(torch.arange(4.0), torch.tensor([1.0, 2.0, 0.0, 4.0]))
    save_checkpoint(tmp_path / "s.pt", model, config, step=1)
    loaded, loaded_config, _ = load_checkpoint(tmp_path / "s.pt")
    assert loaded_config == config and loaded_config.fps == 10.0
    torch.testing.assert_close(loaded.backbone.mean, torch.arange(4.0))
    torch.testing.assert_close(loaded.backbone.std, torch.tensor([1.0, 2.0, 1e-6, 4.0]))


def test_the_signal_model_runs_the_same_in_onnxruntime(tmp_path):
    pytest.importorskip("onnxruntime")
    from engine.backends.compile import compile_engine, load_engine

    config = tiny_config()
    model = build_model(config).eval()
    model.backbone.set_statistics(torch.full((4,), 0.5), torch.full((4,), 2.0))
    compile_engine(
        model,
        config,
        tmp_path / "e",
        backend="onnxruntime",
        precision="fp32",
        max_batch=4,
        device="cpu",
    )
    ort, manifest = load_engine(tmp_path / "e", device="cpu")
    assert manifest.model == config
    diffs = compare_backends(TorchBackend(model, "cpu"), ort, config)
    assert max(diffs.values()) < 1e-4, diffs
