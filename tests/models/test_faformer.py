import pytest
import torch

from engine.loader import ConfigError, from_dict
from models.action_model import ModelConfig, build_model
from models.faformer import FAFormerConfig, FAFormerHead
from models.postprocess import frame_segments


def make(**kw):
    torch.manual_seed(0)
    config = FAFormerConfig(window_frames=32, dim=32, num_tokens=4, num_heads=2, **kw)
    return FAFormerHead(config, in_dim=16, num_classes=3).eval()


def test_outputs_per_frame_and_per_token():
    head = make()
    valid = torch.ones(2, 32, dtype=torch.bool)
    out = head(torch.randn(2, 32, 16), valid)
    assert out.frame_logits.shape == (2, 32, 3)
    assert out.token_logits.shape == (2, 4, 4)  # 3 classes + "no action"
    assert out.token_masks.shape == (2, 4, 32)
    assert [b.kind for b in head.blocks] == ["i", "u", "U", "u", "U"]


def test_padding_content_never_reaches_real_frames():
    head = make(blocks=("i", "U", "u", "U"))
    x = torch.randn(1, 32, 16)
    y = x.clone()
    y[:, :13] = torch.randn(1, 13, 16) * 100  # 13: not a multiple of segment_frames
    valid = torch.arange(32)[None] >= 13
    with torch.no_grad():
        a, b = head(x, valid), head(y, valid)
    torch.testing.assert_close(a.frame_logits[:, 13:], b.frame_logits[:, 13:], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(a.token_logits, b.token_logits, atol=1e-4, rtol=1e-4)


def test_fully_padded_window_gives_finite_outputs():
    head = make()
    out = head(torch.randn(1, 32, 16), torch.zeros(1, 32, dtype=torch.bool))
    assert all(torch.isfinite(t).all() for t in out[:3])


def test_u_blocks_see_further_than_frame_layers():
    """A U block attends over segments: one frame's change reaches frames further away than a
    u block's dilated neighbourhood does."""
    reach = {}
    for blocks in (("i", "u"), ("i", "U")):
        head = make(blocks=blocks, attn_radius=1)
        for block in head.blocks:  # isolate the frame branch's reach
            block.couple.frames_from_tok.out.weight.data.zero_()
            block.couple.frames_from_tok.out.bias.data.zero_()
        x = torch.randn(1, 32, 16)
        y = x.clone()
        y[:, 16] += 5.0
        with torch.no_grad():
            d = (
                (
                    head(x, torch.ones(1, 32, dtype=torch.bool)).frame_logits
                    - head(y, torch.ones(1, 32, dtype=torch.bool)).frame_logits
                )
                .abs()
                .sum(-1)[0]
            )
        reach[blocks[1]] = int((d > 1e-6).nonzero().max() - (d > 1e-6).nonzero().min())
    assert reach["U"] > reach["u"]


@pytest.mark.parametrize(
    ("blocks", "message"),
    [(("u", "U"), "blocks must be 'i'"), (("i", "x"), "blocks must be 'i'")],
)
def test_config_checks_the_block_sequence(blocks, message):
    with pytest.raises(ValueError, match=message):
        FAFormerConfig(blocks=blocks)


def test_head_faformer_in_a_model_config():
    config = from_dict(ModelConfig, {"head": "faformer"})
    assert isinstance(config.head, FAFormerConfig)
    config = from_dict(ModelConfig, {"head": {"type": "faformer", "blocks": ["i", "U"]}})
    assert config.head.blocks == ("i", "U")
    assert isinstance(build_model(config).head, FAFormerHead)
    with pytest.raises(ConfigError, match="head.type: expected one of"):
        from_dict(ModelConfig, {"head": {"type": "nope"}})
    with pytest.raises(ConfigError, match="head.num_levels: unknown key"):
        from_dict(ModelConfig, {"head": {"type": "faformer", "num_levels": 3}})


def test_frame_segments_are_the_runs_above_the_threshold():
    probs = torch.zeros(12, 2)
    probs[2:5, 0] = 0.9
    probs[4:11, 1] = torch.tensor([0.6, 0.8, 0.3, 0.7, 0.7, 0.9, 0.6])
    valid = torch.ones(12, dtype=torch.bool)
    runs = frame_segments(probs, valid, 0.5)
    assert [(s, e, k) for s, e, k, _ in runs] == [(2, 5, 0), (4, 6, 1), (7, 11, 1)]
    assert runs[0][3] == pytest.approx(0.9)
    assert frame_segments(probs, valid, 0.5, min_frames=3) == [runs[0], runs[2]]
    valid[:3] = False
    assert frame_segments(probs, valid, 0.5)[0][:3] == (3, 5, 0)


def test_hysteresis_keeps_an_action_whole_through_a_dip():
    probs = torch.tensor([[0.1], [0.7], [0.8], [0.4], [0.9], [0.35], [0.2], [0.45], [0.1]])
    valid = torch.ones(9, dtype=torch.bool)
    assert [r[:2] for r in frame_segments(probs, valid, 0.5)] == [(1, 3), (4, 5)]
    # on at 0.5, off below 0.3: the dip to 0.4 does not split it; 0.45 alone never starts one
    assert [r[:2] for r in frame_segments(probs, valid, 0.5, off_threshold=0.3)] == [(1, 6)]


def test_token_decided_labels_follow_the_token_branch():
    x, valid = torch.randn(2, 32, 16), torch.ones(2, 32, dtype=torch.bool)
    for decide in ("frames", "tokens"):
        head = make(decide=decide)
        with torch.no_grad():
            before = head(x, valid)
            head.token_cls.weight.add_(torch.randn_like(head.token_cls.weight))  # tokens only
            after = head(x, valid)
        torch.testing.assert_close(after.branch_logits, before.branch_logits)
        changed = not torch.allclose(after.frame_logits, before.frame_logits)
        assert changed == (decide == "tokens"), decide


def test_token_decided_labels_by_hand():
    from models.faformer import token_decided

    frames = torch.zeros(1, 2, 2)  # the frame branch: 0.5 everywhere
    # token 0 is class 0 (probability ~1), token 1 class 1; token 0 covers frame 0 only
    tokens = torch.tensor([[[20.0, 0.0, 0.0], [0.0, 20.0, 0.0]]])
    masks = torch.tensor([[[20.0, -20.0], [20.0, 20.0]]])
    p = token_decided(frames, tokens, masks, 0.9).sigmoid()
    torch.testing.assert_close(p[0, 0], torch.tensor([0.95, 0.95]), atol=1e-4, rtol=0)
    torch.testing.assert_close(p[0, 1], torch.tensor([0.05, 0.95]), atol=1e-4, rtol=0)


def test_the_frame_branch_losses_supervise_the_frame_branch():
    from models.seg_losses import faformer_losses

    head = make(decide="tokens")
    x, valid = torch.randn(1, 32, 16), torch.ones(1, 32, dtype=torch.bool)
    out = head(x, valid)
    labels = torch.zeros(1, 32, 3)
    labels[0, 4:12, 1] = 1
    segments = [torch.tensor([[4.0, 12.0, 1.0]])]
    losses = faformer_losses(out, labels, segments, smooth_weight=0.15, token_weight=1.0)
    assert out.frame_branch is not None and torch.isfinite(losses["total"])
    (g,) = torch.autograd.grad(losses["seg"], out.frame_branch, retain_graph=True)
    assert g.abs().sum() > 0
