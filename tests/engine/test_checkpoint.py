import os
import pickle

import pytest
import torch

from engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from models.action_model import ModelConfig, build_model
from models.actionformer import HeadConfig
from models.backbone import BackboneConfig
from models.fastback import TemporalConfig

TINY = ModelConfig(
    classes=("a", "b"),
    backbone=BackboneConfig(image_size=16, channels=(4, 8), feature_dim=8),
    temporal=TemporalConfig(dim=8, num_layers=1, num_lookback_heads=2, lookback_frames=4),
    head=HeadConfig(window_frames=8, dim=8, num_levels=2, num_heads=2, attn_window=3),
)


def test_checkpoint_round_trip_restores_weights_config_and_step(tmp_path):
    model = build_model(TINY)
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, model, TINY, step=42)
    loaded, config, step = load_checkpoint(path)
    assert config == TINY and step == 42
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    payload = torch.load(path, weights_only=True)
    assert set(payload) == {"model", "config", "classes", "step", "versions"}
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch on random bytes
def test_missing_and_corrupt_checkpoints_are_refused_by_name(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "none.pt")
    bad = tmp_path / "bad.pt"
    for _ in range(300):  # random bytes break the unpickler in many ways (IndexError, KeyError)
        bad.write_bytes(os.urandom(2000))
        with pytest.raises(CheckpointError, match=r"bad.pt: not a readable checkpoint"):
            load_checkpoint(bad)
    good = tmp_path / "good.pt"
    save_checkpoint(good, build_model(TINY), TINY, step=1)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated.pt: not a readable checkpoint"):
        load_checkpoint(truncated)


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_checkpoint_that_needs_code_to_be_unpickled_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": Evil()}, path)
    with pytest.raises(CheckpointError, match="refused: the checkpoint needs code"):
        load_checkpoint(path)
    assert pickle  # the refusal comes from weights_only loading, not from a name check


def test_checkpoint_of_another_model_shape_is_refused(tmp_path):
    path = tmp_path / "other.pt"
    model = build_model(TINY)
    save_checkpoint(path, model, TINY, step=1)
    payload = torch.load(path, weights_only=True)
    payload["config"]["temporal"]["dim"] = 16
    payload["config"]["temporal"]["num_lookback_heads"] = 2
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="weights do not fit the model shape"):
        load_checkpoint(path)


def test_checkpoint_without_the_required_keys_is_refused(tmp_path):
    path = tmp_path / "plain.pt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(CheckpointError, match="not an actstream checkpoint"):
        load_checkpoint(path)


def test_half_precision_weights_load_back_into_float32_models(tmp_path):
    config = ModelConfig()  # the real default size: weights dominate the file
    model = build_model(config)
    save_checkpoint(tmp_path / "half.pt", model, config, step=3, weights_dtype=torch.float16)
    full = tmp_path / "full.pt"
    save_checkpoint(full, model, config, step=3)
    assert (tmp_path / "half.pt").stat().st_size < 0.55 * full.stat().st_size
    loaded, _, _ = load_checkpoint(tmp_path / "half.pt")
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert b.dtype == a.dtype, name
        torch.testing.assert_close(b, a, atol=2e-3, rtol=2e-3)
