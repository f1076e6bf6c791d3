"""A pretrained frame backbone from a local folder (a tiny Hugging Face ResNet the test saves)
through the whole path, by the commands a user runs: `actstream train` → `actstream
compile` (torch, onnxruntime) → `actstream run --engine`, events included; `run --weights`
straight from the checkpoint; a hub name that is not a folder is one line."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import CMD, scaled
from tests.integration.helpers import small_model
from training.synth import write_synthetic_dataset

transformers = pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[2]
# Every segment opens an action: these tests are about the path, not the model's quality.
ANY_SEGMENT = [
    "decode.pre_nms_threshold=0",
    "decode.min_score=0",
    "tracker.onset_threshold=0",
    "tracker.keep_threshold=0",
    "tracker.confirm_runs=1",
]


def actstream(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*CMD, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def sets(overrides: list[str]) -> list[str]:
    return [x for o in overrides for x in ("--set", o)]


@pytest.fixture(scope="session")  # once, however the tests are ordered or distributed
def hf_folder(tmp_path_factory) -> Path:
    import torch

    cfg = transformers.ResNetConfig(
        num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic"
    )
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("backbones") / "tiny-resnet"
    transformers.ResNetModel(cfg).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def trained(tmp_path_factory, hf_folder) -> tuple[Path, Path]:
    """(checkpoint, data folder): a few steps of `actstream train` with the folder's ResNet."""
    data = tmp_path_factory.mktemp("hf-data")
    write_synthetic_dataset(data, videos=4, seed=5, duration_s=8, fps=10, size=32)
    out = tmp_path_factory.mktemp("hf-run")
    result = actstream(
        "train",
        str(ROOT / "configs" / "train_synthetic.yaml"),
        *sets(
            [
                *small_model(32),
                f"model.backbone.name=hf:{hf_folder}",
                "model.backbone.feature_dim=16",
                "model.backbone.motion_input=false",
                "loss.regression_ranges=[[0, 8], [8, 16], [16, .inf]]",
                f"out_dir={out}",
                f"data.annotations={data / 'annotations.json'}",
                f"data.root={data}",
                "data.cache_dir=null",
                "data.val_subset=test",
                "optim.steps=6",
                "optim.batch_size=2",
                "optim.warmup_steps=2",
                "optim.eval_every=6",
                "optim.checkpoint_every=6",
            ]
        ),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out / "last.pt", data


def events(stdout: str) -> list[dict]:
    rows = [line.split(" ", 1) for line in stdout.splitlines() if line.startswith("action.")]
    return [json.loads(payload) for _, payload in rows]


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_train_compile_and_run_with_a_local_hugging_face_backbone(trained, tmp_path, backend):
    checkpoint, data = trained
    engine = tmp_path / f"engine-{backend}"
    result = actstream(
        "compile", str(checkpoint), "--backend", backend, "--max-batch", "4", "--out", str(engine)
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "max |compiled - eager|" in result.stderr
    video = sorted(data.glob("*.mp4"))[0]
    result = actstream(
        "run",
        str(video),
        "--engine",
        str(engine),
        "--fast",
        "--no-metrics",
        "--zmq",
        "tcp://127.0.0.1:*",
        *sets(ANY_SEGMENT),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"backend: {backend} fp32 on cpu" in result.stderr
    found = events(result.stdout)
    assert {e["type"] for e in found} == {"onset", "offset"}
    assert len([e for e in found if e["type"] == "onset"]) == len(
        [e for e in found if e["type"] == "offset"]
    )


@pytest.mark.slow
@pytest.mark.integration
def test_run_straight_from_the_weights_with_a_local_hugging_face_backbone(trained):
    checkpoint, data = trained
    result = actstream(
        "run",
        str(sorted(data.glob("*.mp4"))[0]),
        "--weights",
        str(checkpoint),
        "--backend",
        "torch",
        "--fast",
        "--no-metrics",
        "--zmq",
        "tcp://127.0.0.1:*",
        *sets(ANY_SEGMENT),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert any(e["type"] == "onset" for e in events(result.stdout))


def test_a_hub_name_that_is_not_a_local_folder_is_one_line_saying_to_download_it():
    result = actstream(
        "run",
        "synthetic://x",
        "--no-metrics",
        *sets(
            [
                "model.backbone.name=facebook/dinov2-base",
                "model.backbone.motion_input=false",
            ]
        ),
        timeout=scaled(120),
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "download it first" in lines[0], result.stderr
    assert "facebook/dinov2-base" in lines[0] and "Traceback" not in result.stderr
