"""The model-family seam (models/heads.py): every family builds, exports and decodes through
its table entry, and no other module tests for a head's type."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from models.actionformer import HeadConfig
from models.faformer import FAFormerConfig
from models.heads import HEADS, build_head, graph_outputs, head_family
from models.postprocess import DecodeConfig

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = {
    "actionformer": HeadConfig(window_frames=16, dim=16, num_levels=3, num_heads=2, attn_window=5),
    "faformer": FAFormerConfig(window_frames=16, dim=16, num_heads=2, blocks=("i", "u", "U")),
}
HEAD_TYPES = {"HeadConfig", "FAFormerConfig", "HeadOutput", "FrameLabels", "ActionFormerHead"}
HEAD_TYPES |= {"FAFormerHead"}


def test_every_family_has_a_config_to_test():
    assert set(HEADS) == set(CONFIGS)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_a_family_builds_and_its_graph_outputs_wrap_back_into_its_output(name):
    config = CONFIGS[name]
    family = head_family(config)
    head = build_head(config, in_dim=8, num_classes=3).eval()
    window, valid = torch.randn(2, 16, 8), torch.ones(2, 16, dtype=torch.bool)
    valid[1, :4] = False
    with torch.no_grad():
        out = head(window, valid)
    outs = graph_outputs(config, out)
    shapes = family.output_shapes(config, 3)
    assert [tuple(t.shape[1:]) for t in outs] == [tuple(s) for s in shapes]
    wrapped = family.wrap(config, outs, valid)
    assert type(wrapped) is type(out)
    for field in family.output_names:
        torch.testing.assert_close(getattr(wrapped, field), getattr(out, field))
    torch.testing.assert_close(wrapped.valid, out.valid)


def test_actionformer_segments_are_decoded_points_on_the_window_grid():
    config = CONFIGS["actionformer"]
    family = head_family(config)
    points = sum(16 // s for s in config.strides)  # 16 + 8 + 4
    cls = torch.full((1, points, 2), -20.0)
    offsets = torch.zeros(1, points, 2)
    cls[0, 5, 1] = 5.0  # point at frame 5 (stride 1), class 1
    offsets[0, 5] = torch.tensor([2.0, 3.0])  # from frame 3 to frame 8
    out = family.wrap(config, (cls, offsets), torch.ones(1, 16, dtype=torch.bool))
    (segment,) = family.window_segments(config, out, 0, DecodeConfig(), 0.5)
    assert segment[:3] == (3.0, 8.0, 1)
    assert segment[3] == pytest.approx(torch.sigmoid(torch.tensor(5.0)).item())


def test_faformer_segments_are_runs_of_frame_labels():
    config = CONFIGS["faformer"]
    family = head_family(config)
    logits = torch.full((1, 16, 2), -10.0)
    logits[0, 4:9, 0] = 10.0  # class 0 on frames 4..8
    out = family.wrap(config, (logits,), torch.ones(1, 16, dtype=torch.bool))
    (segment,) = family.window_segments(config, out, 0, DecodeConfig())
    assert segment[:3] == (4, 9, 0) and segment[3] == pytest.approx(1.0, abs=1e-4)


def test_only_the_seam_tests_for_a_head_family():
    """No `isinstance(x, <head type>)` and no `….type == "actionformer"` outside
    models/heads.py: a new family is one entry in HEADS."""
    found = []
    for package in ("engine", "models", "training", "benchmarks", "stream"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path == ROOT / "models" / "heads.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "isinstance":
                    names = {n.id for n in ast.walk(node.args[1]) if isinstance(n, ast.Name)}
                    if names & HEAD_TYPES:
                        found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
                if isinstance(node, ast.Compare):
                    consts = {
                        c.value
                        for c in [node.left, *node.comparators]
                        if isinstance(c, ast.Constant)
                    }
                    if consts & set(HEADS):
                        found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert found == []
