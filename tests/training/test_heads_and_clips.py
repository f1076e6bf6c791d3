"""Training the FAFormer head and FastBack clip recognition on tiny synthetic sets, through
the same commands the README gives."""

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.checkpoint import load_checkpoint
from models.faformer import FAFormerConfig, FAFormerHead
from tests.conftest import CMD, scaled
from tests.integration.helpers import small_model
from training.clips import load_clip_checkpoint, write_clip_dataset
from training.config import load_train_config
from training.detection import train
from training.synth import write_synthetic_dataset

ROOT = Path(__file__).resolve().parents[2]
FAFORMER = [
    *(o for o in small_model(32) if not o.startswith("model.head")),
    "model.head={type: faformer, window_frames: 32, dim: 32, num_tokens: 4, num_heads: 2, "
    "blocks: [i, u, U]}",
]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    write_synthetic_dataset(out, videos=4, seed=5, duration_s=20, fps=10, size=32)
    return out


def test_faformer_head_trains_runs_in_the_detector_and_is_evaluated(tiny_data, tmp_path):
    config = load_train_config(
        ROOT / "configs" / "train_synthetic_faformer.yaml",
        [
            *FAFORMER,
            "init_from=null",
            f"out_dir={tmp_path / 'run'}",
            f"data.annotations={tiny_data / 'annotations.json'}",
            f"data.root={tiny_data}",
            "data.cache_dir=null",
            "data.val_subset=test",
            "optim.mode=end_to_end",
            "optim.steps=60",
            "optim.batch_size=2",
            "optim.warmup_steps=5",
            "optim.eval_every=60",
            "optim.checkpoint_every=60",
        ],
    )
    path = train(config, progress=False)
    history = json.loads(
        torch.load(tmp_path / "run" / "train_state.pt", weights_only=True)["history"]
    )
    losses = [h for h in history if "loss" in h]
    assert {"seg", "smooth", "token"} <= set(losses[0])
    assert np.mean([h["loss"] for h in losses[-10:]]) < 0.8 * np.mean(
        [h["loss"] for h in losses[:10]]
    )
    model, model_config, _ = load_checkpoint(path)
    assert isinstance(model_config.head, FAFormerConfig) and isinstance(model.head, FAFormerHead)
    out = tmp_path / "eval"
    result = subprocess.run(
        [*CMD, "eval", str(path), str(tiny_data), "--out", str(out), "--timelines", "0"],
        capture_output=True,
        text=True,
        timeout=scaled(180),
    )
    assert result.returncode == 0, result.stderr
    assert "offline segmentation: frame_accuracy" in result.stdout
    results = json.loads((out / "results.json").read_text())
    assert results["head"] == "faformer" and results["head_ms_per_window"] > 0
    for part in ("offline_segmentation", "streaming_segmentation"):
        assert set(results[part]) == {
            *("frame_accuracy", "edit", "f1@10", "f1@25", "f1@50"),
            *("sample_precision", "sample_recall", "sample_f1"),
        }
        assert all(0.0 <= v <= 100.0 for v in results[part].values())


def test_faformer_init_from_an_actionformer_checkpoint_takes_backbone_and_encoder(
    tiny_data, tmp_path
):
    base = [
        f"data.annotations={tiny_data / 'annotations.json'}",
        f"data.root={tiny_data}",
        "data.cache_dir=null",
        "data.val_subset=test",
        "optim.steps=2",
        "optim.eval_every=1000",
        "optim.checkpoint_every=2",
        "optim.mode=end_to_end",
    ]
    first = train(
        load_train_config(
            ROOT / "configs" / "train_synthetic.yaml",
            [
                *small_model(32),
                "loss.regression_ranges=[[0, 8], [8, 16], [16, .inf]]",
                f"out_dir={tmp_path / 'af'}",
                *base,
            ],
        ),
        progress=False,
    )
    second = train(
        load_train_config(
            ROOT / "configs" / "train_synthetic_faformer.yaml",
            [
                *FAFORMER,
                f"init_from={first}",
                f"out_dir={tmp_path / 'fa'}",
                *base,
                "optim.steps=1",
                "optim.lr=1.0e-12",
                "optim.min_lr=1.0e-13",
                "optim.warmup_steps=1",
            ],
        ),
        progress=False,
    )
    a, _, _ = load_checkpoint(first)
    b, _, _ = load_checkpoint(second)
    for part in ("backbone", "temporal"):  # weights (batch-norm statistics move in a step)
        theirs = dict(getattr(b, part).named_parameters())
        for key, value in getattr(a, part).named_parameters():
            torch.testing.assert_close(theirs[key], value)


def test_clip_recognition_synth_train_eval_commands(tmp_path):
    data = tmp_path / "clips"
    result = subprocess.run(
        [*CMD, "synth", str(data), "--clips", "24", "--size", "32", "--seed", "2"],
        capture_output=True,
        text=True,
        timeout=scaled(120),
    )
    assert result.returncode == 0, result.stderr
    db = json.loads((data / "annotations.json").read_text())["database"]
    assert len(db) == 24 and all(len(v["annotations"]) == 1 for v in db.values())
    assert {v["annotations"][0]["label"] for v in db.values()} == {
        "jump",
        "spin",
        "wave",
        "pulse",
        "flash",
        "dash",
    }
    run = tmp_path / "run"
    overrides = [
        f"root={data}",
        f"out_dir={run}",
        "cache_dir=null",
        "val_subset=test",
        "model.max_frames=12",
        "model.fastback.image_size=32",
        "model.fastback.hidden_size=32",
        "model.fastback.backbone.image_size=32",
        "model.fastback.backbone.channels=[8, 16]",
        "model.fastback.backbone.feature_dim=32",
        "model.fastback.lookback_frames=8",
        "optim.steps=30",
        "optim.eval_every=30",
        "optim.batch_size=4",
    ]
    result = subprocess.run(
        [
            *CMD,
            "train",
            str(ROOT / "configs" / "train_clips.yaml"),
            *(x for o in overrides for x in ("--set", o)),
        ],
        capture_output=True,
        text=True,
        timeout=scaled(300),
    )
    assert result.returncode == 0, result.stderr
    assert "step 30: validation top1 " in result.stderr  # shown at the default log level
    model, config, step = load_clip_checkpoint(run / "last.pt")
    assert step == 30 and config.max_frames == 12
    # the same loop as detection: --resume continues from train_state.pt
    more = [*(x for o in overrides for x in ("--set", o)), "--set", "optim.steps=40"]
    result = subprocess.run(
        [*CMD, "train", str(ROOT / "configs" / "train_clips.yaml"), *more, "--resume"],
        capture_output=True,
        text=True,
        timeout=scaled(300),
    )
    assert result.returncode == 0, result.stderr
    assert load_clip_checkpoint(run / "last.pt")[2] == 40
    history = json.loads(torch.load(run / "train_state.pt", weights_only=True)["history"])
    assert [h["step"] for h in history if "loss" in h] == list(range(1, 41))
    assert [h["step"] for h in history if "top1" in h] == [30, 40]
    result = subprocess.run(
        [*CMD, "eval", str(run / "last.pt"), str(data), "--out", str(tmp_path / "ev")],
        capture_output=True,
        text=True,
        timeout=scaled(120),
    )
    assert result.returncode == 0, result.stderr
    assert "clip top-1 accuracy" in result.stdout
    report = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert 0.0 <= report["top1"] <= 1.0 and report["clips"] == 4
    assert np.array(report["confusion"]).sum() == 4
    # a clip checkpoint is not a detector: one clear line, exit 2
    result = subprocess.run(
        [*CMD, "run", "--weights", str(run / "last.pt"), "synthetic://"],
        capture_output=True,
        text=True,
        timeout=scaled(60),
    )
    assert result.returncode == 2
    assert "clip recognition" in result.stderr and "Traceback" not in result.stderr


def test_clip_dataset_clips_each_show_one_whole_action(tmp_path):
    write_clip_dataset(tmp_path, clips=6, seed=1, size=32)
    db = json.loads((tmp_path / "annotations.json").read_text())["database"]
    for entry in db.values():
        ((start, end),) = [a["segment"] for a in entry["annotations"]]
        assert start == 0.0 and end == pytest.approx(entry["duration"]) and end >= 0.5
