import pytest
import torch

from models.action_model import DEFAULT_CLASSES, ModelConfig, build_model
from models.actionformer import ActionFormerHead, HeadConfig, make_points
from stream.synthetic import CLASSES


def tiny_head(**kw):
    cfg = HeadConfig(window_frames=32, dim=16, num_levels=3, num_heads=2, attn_window=5, **kw)
    torch.manual_seed(0)
    return ActionFormerHead(cfg, in_dim=8, num_classes=4).eval()


def test_points_cover_every_level_with_its_stride():
    pts = make_points(8, (1, 2, 4))
    assert pts.tolist() == [
        [0, 1],
        [1, 1],
        [2, 1],
        [3, 1],
        [4, 1],
        [5, 1],
        [6, 1],
        [7, 1],
        [0, 2],
        [2, 2],
        [4, 2],
        [6, 2],
        [0, 4],
        [4, 4],
    ]


def test_head_output_shapes():
    head = tiny_head()
    out = head(torch.randn(2, 32, 8))
    n = 32 + 16 + 8
    assert out.cls_logits.shape == (2, n, 4)
    assert out.offsets.shape == (2, n, 2)
    assert out.valid.shape == (2, n) and out.valid.all()
    assert (out.offsets >= 0).all()


def test_initial_class_probability_is_the_prior():
    head = tiny_head(prior_prob=0.01)
    probs = head(torch.zeros(1, 32, 8)).cls_logits.sigmoid()
    assert probs.mean().item() == pytest.approx(0.01, rel=0.5)


def test_padding_does_not_change_outputs_on_real_steps():
    head = tiny_head()
    x = torch.randn(1, 32, 8)
    valid = torch.arange(32) >= 8  # the first 8 steps are padding (stream just started)
    y = x.clone()
    y[:, :8] = 1000.0
    with torch.no_grad():
        a = head(x, valid[None])
        b = head(y, valid[None])
    keep = a.valid[0]
    assert not keep[:8].any() and keep[8:32].all()
    torch.testing.assert_close(a.cls_logits[0, keep], b.cls_logits[0, keep], atol=1e-4, rtol=1e-4)


def test_length_must_be_a_multiple_of_the_coarsest_stride():
    with pytest.raises(ValueError, match="multiple of 4 steps"):
        tiny_head()(torch.randn(1, 31, 8))


def test_head_is_local_so_a_longer_input_gives_the_same_outputs_inside():
    head = tiny_head()
    x = torch.randn(1, 96, 8)
    with torch.no_grad():
        whole = head(x)
        window = head(x[:, 32:64])
    # level-0 outputs of steps deep inside the window (beyond the receptive field) agree
    torch.testing.assert_close(
        whole.cls_logits[0, 44:52], window.cls_logits[0, 12:20], atol=1e-4, rtol=1e-4
    )


def test_head_config_checks_divisibility():
    with pytest.raises(ValueError, match="multiple of"):
        HeadConfig(window_frames=30, num_levels=3)


def test_default_classes_are_the_synthetic_classes():
    assert DEFAULT_CLASSES == CLASSES


def test_whole_model_runs_on_clips_and_init_is_seeded():
    cfg = ModelConfig()
    a, b = build_model(cfg), build_model(cfg)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    clips = torch.rand(1, cfg.head.window_frames, 3, 64, 64)
    with torch.no_grad():
        out = a.eval()(clips)
    assert out.cls_logits.shape[-1] == len(cfg.classes)


def test_banded_attention_equals_the_masked_matrix_on_every_valid_step() -> None:
    from models.actionformer import banded_attention, masked_attention

    torch.manual_seed(3)
    for T, radius in ((300, 4), (17, 4), (64, 1), (40, 0)):
        q, k, v = (torch.randn(2, 4, 8, T) for _ in range(3))
        valid = torch.rand(2, T) > 0.3
        valid[1, T // 2 :] = False  # a padded tail, as a short video's last window has
        a = masked_attention(q, k, v, valid, radius)
        b = banded_attention(q, k, v, valid, radius)
        keep = valid[:, None, None, :]
        assert torch.allclose(a * keep, b * keep, atol=1e-5), (T, radius)


def test_long_sequences_take_the_band_and_give_the_masked_head_outputs(monkeypatch) -> None:
    import models.actionformer as af

    torch.manual_seed(4)
    head = af.ActionFormerHead(af.HeadConfig(dim=32, num_heads=2), in_dim=16, num_classes=3)
    head.eval()
    x = torch.randn(1, 512, 16)
    valid = torch.ones(1, 512, dtype=torch.bool)
    valid[0, 400:] = False
    with torch.no_grad():
        banded = head(x, valid)
        monkeypatch.setattr(af, "MASKED_MAX_STEPS", 10**9)
        masked = head(x, valid)
    keep = banded.valid[..., None]
    for a, b in ((banded.cls_logits, masked.cls_logits), (banded.offsets, masked.offsets)):
        assert torch.allclose(a * keep, b * keep, atol=1e-4)
