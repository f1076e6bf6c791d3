import dataclasses

import pytest
import torch

from engine.backbones import BackboneError, load_backbone
from models.backbone import BackboneConfig
from models.fastback_clip import AddCLSFrames, ClipClassifier, FastBack, FastBackConfig
from models.frame_encoder import BackboneFrameEncoder

SMALL = BackboneConfig(image_size=16, channels=(8, 8), feature_dim=24)


def make(lookahead=0, ahead_heads=0, layers=2, seed=0, **kw):
    torch.manual_seed(seed)
    model = FastBack(
        backbone_loader=load_backbone,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_lookahead_heads=ahead_heads,
        num_lookback_heads=4 - ahead_heads,
        image_size=16,
        backbone_name=kw.pop("backbone_name", "builtin"),
        hidden_size=32,
        lookback_frames=6,
        lookahead_frames=lookahead,
        backbone=SMALL,
        freeze_backbone=kw.pop("freeze_backbone", False),
        spatial_grid=kw.pop("spatial_grid", 1),
        **kw,
    ).eval()
    with torch.no_grad():
        for block in model.encoder.blocks:
            block.attn.bias_back.normal_()
            block.attn.bias_ahead.normal_()
    return model


def video(B=2, T=20, H=24, W=20, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (B, T, H, W, 3), generator=g, dtype=torch.uint8)


def stream(model, clip):
    state = model.init_stream(clip.shape[0])
    outs = []
    with torch.no_grad():
        for t in range(clip.shape[1]):
            y, state = model.step(clip[:, t], state)
            outs.append(y)
    return torch.stack(outs, 1)


def frames_of(model, clip, valid=None):
    """The streaming form's per-frame outputs (B, T, C), which `step` equals."""
    with torch.no_grad():
        out, _ = model(clip, valid, causal=True)
    return model.frame_outputs(out)


def test_forward_shapes_and_frame_resizing():
    model = make()
    with torch.no_grad():
        out, cls = model(video(B=3, T=7, H=30, W=17))
    assert out.shape == (3, 9, 1, 32) and cls.shape == (3, 64)  # CLS frames included; (B, 2C)
    assert model.frame_outputs(out).shape == (3, 7, 32)
    assert torch.isfinite(out).all() and torch.isfinite(cls).all()


def test_step_equals_forward_without_lookahead():
    model = make()
    clip = video()
    torch.testing.assert_close(stream(model, clip), frames_of(model, clip), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("k", [1, 3])
def test_lookahead_k_delays_step_outputs_by_k_and_matches_forward(k):
    model = make(lookahead=k, ahead_heads=2)
    assert model.delay_frames == k
    clip = video()
    ref = frames_of(model, clip)
    steps = stream(model, clip)
    torch.testing.assert_close(steps[:, k:], ref[:, :-k], atol=1e-4, rtol=1e-4)


def test_streaming_form_cls_token_sees_the_whole_clip_and_frames_never_see_the_end_cls():
    model = make()
    clip = video(B=1, T=30)
    other = clip.clone()
    other[:, 0] = 255 - other[:, 0]  # far outside every frame's lookback from the end
    with torch.no_grad():
        out_a, cls_a = model(clip, causal=True)
        out_b, cls_b = model(other, causal=True)
        model.add_cls.end.add_(1.0)  # a different end CLS frame changes no frame's output
        out_c, _ = model(clip, causal=True)
    assert not torch.allclose(cls_a, cls_b)
    torch.testing.assert_close(out_a[:, 21:-1], out_b[:, 21:-1])
    torch.testing.assert_close(out_a[:, :-1], out_c[:, :-1])


def test_global_cls_frames_read_every_frame_and_every_frame_reads_them():
    model = make()  # lookback heads only, 6 frames of lookback
    clip = video(B=1, T=30)
    other = clip.clone()
    other[:, -1] = 255 - other[:, -1]  # the last frame: outside the start CLS's lookback band
    unrelated = video(B=1, T=30, seed=5)
    with torch.no_grad():
        out_a, cls_a = model(clip)
        out_b, _ = model(other)
        out_u, _ = model(unrelated)
    # the start CLS output differs between videos (it is not a learned constant) and
    # reaches the last frame; the first frame sees the last one through the CLS frames
    assert not torch.allclose(out_a[:, 0], out_u[:, 0])
    assert not torch.allclose(out_a[:, 0], out_b[:, 0])
    assert not torch.allclose(out_a[:, 1], out_b[:, 1])


def test_padding_is_invisible_to_frames_and_cls_token():
    model = make()
    clip = video(B=1, T=10)
    padded = torch.cat([clip, video(B=1, T=4, seed=9)], dim=1)
    valid = torch.tensor([[True] * 10 + [False] * 4])
    for causal in (False, True):
        with torch.no_grad():
            out, cls = model(clip, causal=causal)
            out_p, cls_p = model(padded, valid, causal=causal)
        torch.testing.assert_close(out_p[:, :11], out[:, :11], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out_p[:, -1], out[:, -1], atol=1e-5, rtol=1e-5)  # end CLS
        torch.testing.assert_close(cls_p, cls, atol=1e-5, rtol=1e-5)


def test_add_cls_frames_wraps_the_sequence():
    add = AddCLSFrames(8)
    x, valid = add(torch.zeros(2, 5, 1, 8), torch.zeros(2, 5, dtype=torch.bool))
    assert x.shape == (2, 7, 1, 8) and valid[:, 0].all() and valid[:, -1].all()
    torch.testing.assert_close(x[0, 0], add.start.detach())
    torch.testing.assert_close(x[1, -1], add.end.detach())


def test_config_checks_the_head_split():
    with pytest.raises(ValueError, match="must equal num_attention_heads"):
        FastBackConfig(num_attention_heads=4, num_lookahead_heads=1, num_lookback_heads=2)


def test_hugging_face_backbone_from_a_local_folder(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.ResNetConfig(
        num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic"
    )
    torch.manual_seed(0)
    transformers.ResNetModel(cfg).save_pretrained(tmp_path / "tiny")
    encoder = BackboneFrameEncoder(
        backbone_name=f"hf:{tmp_path / 'tiny'}", image_size=32, loader=load_backbone
    )
    assert encoder.kind == "hf" and encoder.feature_dim == 16
    # a plain folder is recognised from its config.json
    model = make(backbone_name=str(tmp_path / "tiny"))
    assert model.frames.kind == "hf"
    clip = video(B=2, T=6)
    with torch.no_grad():
        ref, cls = model(clip)
    assert ref.shape == (2, 8, 1, 32) and cls.shape == (2, 64)
    torch.testing.assert_close(stream(model, clip), frames_of(model, clip), atol=1e-4, rtol=1e-4)
    # trainable end to end when asked: gradients reach the Hugging Face weights
    clf = ClipClassifier(model.config, num_classes=3, backbone_loader=load_backbone)
    clf(clip).sum().backward()
    assert any(p.grad is not None for p in clf.fastback.frames.net.parameters())
    # frozen by default, as FastBack runs its backbone
    frozen = FastBack(
        dataclasses.replace(model.config, freeze_backbone=True), backbone_loader=load_backbone
    ).train()
    assert not any(p.requires_grad for p in frozen.frames.net.parameters())
    assert not frozen.frames.net.training and frozen.encoder.training


@pytest.mark.parametrize("name", ["facebook/resnet-18", "/no/such/folder", "timm:/nope"])
def test_backbone_names_that_are_not_local_folders_are_refused(name):
    with pytest.raises(BackboneError, match="local"):
        BackboneFrameEncoder(backbone_name=name, loader=load_backbone)
    with pytest.raises(ValueError, match="give a loader"):  # models/ itself reads no files
        BackboneFrameEncoder(backbone_name=name)


def test_a_broken_model_folder_is_one_clear_error(tmp_path):
    pytest.importorskip("transformers")
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "resnet"}')  # and no weights
    with pytest.raises(BackboneError, match="cannot load the hf model"):
        load_backbone(str(folder))


SEED_EXAMPLE = dict(
    num_hidden_layers=12,
    num_attention_heads=12,
    num_lookahead_heads=6,
    num_lookback_heads=6,
    image_size=224,
)


def test_the_fastback_seed_example_runs_as_written_with_the_built_in_backbone():
    torch.manual_seed(0)
    model = FastBack(**SEED_EXAMPLE, backbone_name="builtin").eval()
    clip = video(B=1, T=5, H=240, W=320)
    with torch.no_grad():
        outputs, cls_token = model(clip)
    # every position of the CNN's last map (14 x 14 at 224²) is a token; the width is the
    # backbone's (96 channels, 12 heads of 8)
    assert outputs.shape == (1, 7, 196, 96) and cls_token.shape == (1, 192)
    assert torch.isfinite(outputs).all() and torch.isfinite(cls_token).all()
    # unbounded lookahead within the clip: the first frame's output sees the last frame
    later = clip.clone()
    later[:, -1] = 255 - later[:, -1]
    with torch.no_grad():
        changed, _ = model(later)
    assert not torch.allclose(changed[:, 1], outputs[:, 1])
    with pytest.raises(ValueError, match="no streaming step"):
        model.init_stream(1)


def test_the_fastback_seed_example_runs_with_a_local_dinov2_folder(tmp_path):
    transformers = pytest.importorskip("transformers")
    # the seed's backbone family, tiny: 1 layer of width 48 (12 heads of 4), patches of 14
    cfg = transformers.Dinov2Config(
        hidden_size=48,
        num_hidden_layers=1,
        num_attention_heads=12,
        intermediate_size=96,
        image_size=224,
        patch_size=14,
    )
    transformers.Dinov2Model(cfg).save_pretrained(tmp_path / "dinov2")
    torch.manual_seed(0)
    model = FastBack(
        **SEED_EXAMPLE, backbone_name=f"hf:{tmp_path / 'dinov2'}", backbone_loader=load_backbone
    ).eval()
    with torch.no_grad():
        outputs, cls_token = model(video(B=2, T=3, H=64, W=64))
    assert model.frames.kind == "hf" and model.width == 48  # the backbone's width
    # the seed's contract: every patch token (16 x 16) of every frame, CLS frames included
    assert outputs.shape == (2, 5, 256, 48) and cls_token.shape == (2, 96)
    assert not any(p.requires_grad for p in model.frames.net.parameters())  # frozen backbone


def test_a_spatial_grid_pools_the_map_and_tokens_of_a_frame_see_each_other():
    model = make(spatial_grid=2)
    clip = video(B=2, T=6)
    with torch.no_grad():
        out, cls = model(clip)
        out_c, _ = model(clip, causal=True)
    assert out.shape == (2, 8, 4, 32) and cls.shape == (2, 64)
    assert model.num_tokens == 4 and model.position.shape == (4, 32)
    # the tokens of one frame differ (where things are is kept) ...
    assert not torch.allclose(out_c[:, 3, 0], out_c[:, 3, 1])
    # ... and a change in one quadrant of the last frame reaches the other tokens of that frame
    other = clip.clone()
    other[:, -1, :12, :10] = 255 - other[:, -1, :12, :10]
    with torch.no_grad():
        out_o, _ = model(other, causal=True)
    assert not torch.allclose(out_o[:, -2, 3], out_c[:, -2, 3])
    with pytest.raises(ValueError, match="one token per frame"):
        model.init_stream(1)


def test_a_clip_model_without_lookahead_heads_still_streams():
    model = make()  # lookahead_frames 0, no lookahead heads
    assert model.encoder.config.streams
    model = FastBack(num_attention_heads=4, image_size=16, backbone=SMALL)  # defaults
    assert model.encoder.config.lookahead_frames == 0 and model.width == 8  # the map's width
    odd = FastBack(num_attention_heads=3, num_lookback_heads=3, image_size=16, backbone=SMALL)
    assert odd.width == 192  # 8 channels do not split into 3 heads: 64 per head
