"""Training on a tiny synthetic set: the loss falls, the checkpoint loads in the detector,
evaluation runs; datasets in the THUMOS14 feature layout; checkpoints survive a kill."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.checkpoint import load_checkpoint, save_checkpoint
from tests.conftest import CMD, scaled
from tests.integration.helpers import small_model
from training.config import DataConfig, load_train_config
from training.data import WindowSampler, load_videos
from training.detection import train
from training.synth import plan_scenes, write_synthetic_dataset

ROOT = Path(__file__).resolve().parents[2]
TINY = [*small_model(32), "loss.regression_ranges=[[0, 8], [8, 16], [16, .inf]]"]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    write_synthetic_dataset(out, videos=5, seed=3, duration_s=20, fps=10, size=32)
    return out


def tiny_config(data: Path, out: Path, *extra: str):
    return load_train_config(
        ROOT / "configs" / "train_synthetic.yaml",
        [
            *TINY,
            f"out_dir={out}",
            f"data.annotations={data / 'annotations.json'}",
            f"data.root={data}",
            "data.cache_dir=null",
            "data.val_subset=test",
            "optim.steps=80",
            "optim.batch_size=2",
            "optim.warmup_steps=5",
            "optim.eval_every=80",
            "optim.checkpoint_every=40",
            *extra,
        ],
    )


def test_synth_writes_videos_and_activitynet_annotations_deterministically(tmp_path):
    a = write_synthetic_dataset(tmp_path / "a", videos=3, seed=7, duration_s=5, size=32)
    # encoded in parallel processes: the same files, byte for byte
    b = write_synthetic_dataset(tmp_path / "b", videos=3, seed=7, duration_s=5, size=32, jobs=2)
    assert a.read_text() == b.read_text()
    for video in sorted((tmp_path / "a").glob("*.mp4")):
        assert video.read_bytes() == (tmp_path / "b" / video.name).read_bytes()
    db = json.loads(a.read_text())["database"]
    assert len(db) == 3 and {v["subset"] for v in db.values()} <= {"train", "validation", "test"}
    for vid, entry in db.items():
        assert (tmp_path / "a" / f"{vid}.mp4").stat().st_size > 0
        assert entry["duration"] == 5 and entry["fps"] == 10
        for ann in entry["annotations"]:
            s, e = ann["segment"]
            assert 0 <= s < e <= 5 and isinstance(ann["label_id"], int)


def test_training_lowers_the_loss_and_writes_a_checkpoint_the_detector_loads(tiny_data, tmp_path):
    config = tiny_config(tiny_data, tmp_path / "run")
    path = train(config, progress=False)
    state = torch.load(tmp_path / "run" / "train_state.pt", weights_only=True)
    losses = [h["loss"] for h in json.loads(state["history"]) if "loss" in h]
    assert len(losses) == 80
    assert np.mean(losses[-15:]) < 0.8 * np.mean(losses[:15])
    assert (tmp_path / "run" / "curves.png").stat().st_size > 1000
    model, model_config, step = load_checkpoint(path)
    assert step == 80 and model_config == config.model
    result = subprocess.run(
        [
            *CMD,
            "run",
            "--weights",
            str(path),
            "synthetic://?seed=1",
            "--duration-s",
            "2",
            "--no-metrics",
            "--zmq",
            "tcp://127.0.0.1:0",
        ],
        capture_output=True,
        text=True,
        timeout=scaled(60),
    )
    assert result.returncode == 0, result.stderr
    assert f"weights: {path}" in result.stderr
    assert "status.synthetic.connected" in result.stdout


def test_resume_continues_from_the_saved_step(tiny_data, tmp_path):
    first = tiny_config(tiny_data, tmp_path / "run", "optim.steps=40")
    train(first, progress=False)
    more = tiny_config(tiny_data, tmp_path / "run", "optim.steps=60")
    train(more, resume=True, progress=False)
    state = torch.load(tmp_path / "run" / "train_state.pt", weights_only=True)
    history = [h for h in json.loads(state["history"]) if "loss" in h]
    assert [h["step"] for h in history] == list(range(1, 61))
    assert state["step"] == 60


def test_eval_command_reports_offline_and_streaming_results(tiny_data, tmp_path):
    ckpt = train(tiny_config(tiny_data, tmp_path / "run", "optim.steps=20"), progress=False)
    out = tmp_path / "eval"
    result = subprocess.run(
        [*CMD, "eval", str(ckpt), str(tiny_data), "--out", str(out), "--timelines", "1"],
        capture_output=True,
        text=True,
        timeout=scaled(120),
    )
    assert result.returncode == 0, result.stderr
    assert "offline mAP" in result.stdout and "streaming mAP" in result.stdout
    results = json.loads((out / "results.json").read_text())
    for kind in ("offline", "streaming"):  # the test subset has actions: finite, in [0, 1]
        per_tiou = list(results[f"{kind}_map"].values())
        assert all(0.0 <= m <= 1.0 for m in per_tiou)
        assert results[f"{kind}_average_map"] == pytest.approx(np.mean(per_tiou))
    assert results["streaming_over_offline"] == pytest.approx(
        results["streaming_average_map"] / max(results["offline_average_map"], 1e-9)
    )
    assert list(results["offline_map"]) == ["0.3", "0.4", "0.5", "0.6", "0.7"]
    assert results["head"] == "actionformer" and results["head_ms_per_window"] > 0
    assert set(results["streaming_segmentation"]) == {
        "frame_accuracy",
        "edit",
        "f1@10",
        "f1@25",
        "f1@50",
        "sample_precision",
        "sample_recall",
        "sample_f1",
    }
    assert len(list(out.glob("timeline_*.png"))) == 1


def test_thumos_feature_layout_loads_on_the_feature_grid(tmp_path):
    fps, stride, num_frames = 30.0, 4, 16
    db = {
        "video_validation_1": {
            "subset": "validation",
            "duration": 20.0,
            "fps": fps,
            "annotations": [
                {"segment": [2.0, 4.0], "label": "Diving", "label_id": 7},
                {"segment": [6.0, 9.0], "label": "Billiards", "label_id": 1},
            ],
        },
        "video_test_1": {"subset": "test", "duration": 10.0, "fps": fps, "annotations": []},
    }
    (tmp_path / "thumos14.json").write_text(json.dumps({"database": db}))
    feats = tmp_path / "i3d_features"
    feats.mkdir()
    np.save(
        feats / "video_validation_1.npy",
        np.random.default_rng(0).normal(size=(150, 48)).astype(np.float32),
    )
    np.save(feats / "video_test_1.npy", np.zeros((75, 48), np.float32))
    config = DataConfig(
        kind="features",
        annotations=str(tmp_path / "thumos14.json"),
        root=str(feats),
        file_ext=".npy",
        feature_stride=stride,
        num_frames=num_frames,
        cache_dir=None,
        train_subset="validation",
        val_subset="test",
    )
    videos, classes = load_videos(config, "validation", fps=10.0, image_size=64)
    assert classes == ("Billiards", "Diving")
    v = videos[0]
    assert v.data.shape == (150, 48)
    # feature i is at (i * 4 + 16 / 2) / 30 s, so 2.0 s → (60 - 8) / 4 = 13
    assert v.bounds[0].tolist() == pytest.approx([13.0, 28.0])
    assert v.labels.tolist() == [1, 0]
    assert v.to_seconds(13.0) == pytest.approx(2.0)
    sampler = WindowSampler(
        videos,
        window=32,
        context=4,
        strides=(1, 2, 4),
        regression_ranges=((0, 4), (4, 8), (8, float("inf"))),
        num_classes=2,
        center_radius=1.5,
    )
    batch = sampler.sample(3, np.random.default_rng(0))
    assert batch.inputs.shape == (3, 36, 48) and batch.targets.cls.shape == (3, 56, 2)


def test_thumos_features_train_with_the_cached_features_mode(tmp_path):
    rng = np.random.default_rng(1)
    db = {}
    feats = tmp_path / "f"
    feats.mkdir()
    for i in range(3):
        x = rng.normal(size=(120, 24)).astype(np.float32)
        x[30:60, :8] += 3.0  # an "action" visible in the features
        np.save(feats / f"v{i}.npy", x)
        db[f"v{i}"] = {
            "subset": "validation" if i < 2 else "test",
            "duration": 16.0,
            "fps": 30.0,
            "annotations": [{"segment": [4.27, 8.27], "label": "A", "label_id": 0}],
        }
    (tmp_path / "a.json").write_text(json.dumps({"database": db}))
    config = load_train_config(
        ROOT / "configs" / "train_synthetic.yaml",
        [
            *TINY,
            f"out_dir={tmp_path / 'run'}",
            "data.kind=features",
            f"data.annotations={tmp_path / 'a.json'}",
            f"data.root={feats}",
            "data.file_ext=.npy",
            "data.feature_stride=4",
            "data.num_frames=16",
            "data.train_subset=validation",
            "data.val_subset=test",
            "optim.mode=cached_features",
            "model.classes=[A]",
            "model.backbone.feature_dim=24",
            "optim.steps=30",
            "optim.batch_size=2",
            "optim.eval_every=30",
            "optim.warmup_steps=5",
        ],
    )
    path = train(config, progress=False)
    _, model_config, step = load_checkpoint(path)
    assert step == 30 and model_config.classes == ("A",)
    # eval reads the features' framing from the checkpoint (no silent THUMOS defaults)
    base = [*CMD, "eval", str(path), str(tmp_path / "a.json"), "--features", str(feats)]
    base += ["--subset", "test", "--out", str(tmp_path / "ev"), "--timelines", "0"]
    same = subprocess.run(base, capture_output=True, text=True, timeout=scaled(120), cwd=ROOT)
    assert same.returncode == 0, same.stderr
    assert "warning" not in same.stderr and "skipped for --features" in same.stderr
    other = subprocess.run(
        [*base, "--feature-stride", "8"], capture_output=True, text=True, timeout=scaled(120)
    )
    assert other.returncode == 0, other.stderr
    assert "trained on features with stride 4 and 16 frames each; evaluating with 8" in (
        other.stderr
    )


def test_validation_videos_can_come_from_another_annotation_file(tmp_path):
    rng = np.random.default_rng(2)

    def write(folder: Path, subset: str, n: int) -> Path:
        folder.mkdir()
        db = {}
        for i in range(n):
            x = rng.normal(size=(120, 24)).astype(np.float32)
            x[30:60, :8] += 3.0
            np.save(folder / f"{folder.name}{i}.npy", x)
            db[f"{folder.name}{i}"] = {
                "subset": subset,
                "duration": 16.0,
                "fps": 30.0,
                "annotations": [{"segment": [4.27, 8.27], "label": "A", "label_id": 0}],
            }
        (folder / "annotations.json").write_text(json.dumps({"database": db}))
        return folder / "annotations.json"

    train_json = write(tmp_path / "scenes", "train", 2)  # no validation subset in it
    val_json = write(tmp_path / "val", "validation", 1)
    overrides = [
        *TINY,
        f"out_dir={tmp_path / 'run'}",
        "data.kind=features",
        f"data.annotations={train_json}",
        f"data.root={train_json.parent}",
        "data.feature_stride=4",
        "data.num_frames=16",
        "optim.mode=cached_features",
        "model.classes=[A]",
        "model.backbone.feature_dim=24",
        "optim.steps=10",
        "optim.batch_size=2",
        "optim.eval_every=10",
        "optim.warmup_steps=2",
    ]
    without = load_train_config(ROOT / "configs" / "train_synthetic.yaml", overrides)
    with pytest.raises(ValueError, match="no videos in subset 'validation'"):
        train(without, progress=False)
    config = load_train_config(
        ROOT / "configs" / "train_synthetic.yaml", [*overrides, f"data.val_annotations={val_json}"]
    )
    assert config.data.validation().root == str(val_json.parent)
    path = train(config, progress=False)
    history = json.loads(torch.load(path.parent / "train_state.pt", weights_only=True)["history"])
    assert [h["step"] for h in history if "map" in h] == [10]  # validated on val/


KILLER = """
import sys, torch
from engine.checkpoint import atomic_save, save_checkpoint
from models.action_model import build_model
from tests.engine.test_checkpoint import TINY
save_checkpoint(sys.argv[1], build_model(TINY), TINY, step=1)
print("saved", flush=True)
big = {"model": {"w": torch.zeros(400_000_000, dtype=torch.uint8)}}
while True:
    atomic_save(big, sys.argv[1])
"""


def test_checkpoint_write_killed_midway_leaves_the_previous_checkpoint_loadable(tmp_path):
    path = tmp_path / "ckpt.pt"
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLER, str(path)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "saved"
    deadline = time.monotonic() + scaled(30)
    while time.monotonic() < deadline:  # wait until the big write is under way
        temps = list(tmp_path.glob(".ckpt.pt.*.tmp"))
        if temps and temps[0].stat().st_size > 1_000_000:
            break
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(scaled(10))
    assert list(tmp_path.glob(".ckpt.pt.*.tmp")), "the kill should have hit mid-write"
    _, config, step = load_checkpoint(path)
    assert step == 1 and config.classes == ("a", "b")
    save_checkpoint(path, load_checkpoint(path)[0], config, step=2)  # and it can be replaced
    assert load_checkpoint(path)[2] == 2


@pytest.mark.slow
def test_ddp_training_under_torchrun_with_two_cpu_processes(tiny_data, tmp_path):
    args = [
        *TINY,
        f"out_dir={tmp_path / 'ddp'}",
        f"data.annotations={tiny_data / 'annotations.json'}",
        f"data.root={tiny_data}",
        "data.cache_dir=null",
        "data.val_subset=test",
        "optim.steps=6",
        "optim.batch_size=1",
        "optim.warmup_steps=2",
        "optim.eval_every=6",
        "optim.checkpoint_every=6",
    ]
    sets = [x for a in args for x in ("--set", a)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            str(_free_port()),
            "-m",
            "training.cli",
            "train",
            str(ROOT / "configs" / "train_synthetic.yaml"),
            *sets,
        ],
        capture_output=True,
        text=True,
        timeout=scaled(300),
        cwd=ROOT,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    _, _, step = load_checkpoint(tmp_path / "ddp" / "last.pt")
    assert step == 6


def _free_port() -> int:
    from tests.conftest import free_port

    return free_port()


def test_cached_features_give_the_same_head_output_as_frames(tiny_data):
    from training.detection import WindowModel, cache_backbone_features, context_frames
    from training.evaluate import backbone_features

    config = tiny_config(tiny_data, Path("/nonexistent"))
    from models.action_model import build_model

    model = build_model(config.model).eval()
    videos, classes = load_videos(
        config.data, "train", fps=10.0, image_size=32, classes=config.model.classes
    )
    cached = cache_backbone_features(model, videos, "cpu")
    as_loaded, _ = load_videos(  # what training keeps: each video's features as it loads
        config.data,
        "train",
        fps=10.0,
        image_size=32,
        classes=config.model.classes,
        transform=lambda x: backbone_features(model, x, "cpu").numpy(),
    )
    for one, other in zip(as_loaded, cached, strict=True):
        np.testing.assert_array_equal(one.data, other.data)
        assert one.data.shape == (len(other.data), config.model.backbone.feature_dim)

    def sample(items):
        return WindowSampler(
            items,
            window=32,
            context=context_frames(model),
            strides=(1, 2, 4),
            regression_ranges=config.loss.regression_ranges,
            num_classes=len(classes),
            center_radius=1.5,
        ).sample(3, np.random.default_rng(5))

    frames, feats = sample(videos), sample(cached)
    with torch.no_grad():
        a = WindowModel(model, window=32, from_features=False)(frames.inputs, frames.valid)
        b = WindowModel(model, window=32, from_features=True)(feats.inputs, feats.valid)
    # Equal except where a window starts mid-video (its first frame has no predecessor in
    # the window): compare the last half of each window, far beyond the encoder's reach.
    torch.testing.assert_close(a.cls_logits[:, 16:32], b.cls_logits[:, 16:32], atol=1e-4, rtol=1e-4)


def test_ctrl_c_during_train_saves_what_resume_continues_from(tiny_data, tmp_path):
    import signal
    import time

    import torch

    run = tmp_path / "run"
    sets = [
        *TINY,
        f"out_dir={run}",
        f"data.annotations={tiny_data / 'annotations.json'}",
        f"data.root={tiny_data}",
        "data.cache_dir=null",
        "data.val_subset=test",
        "optim.batch_size=2",
        "optim.eval_every=100000",
        "optim.checkpoint_every=5",
    ]
    args = [x for s in sets for x in ("--set", s)]
    config = str(ROOT / "configs" / "train_synthetic.yaml")
    proc = subprocess.Popen(
        [*CMD, "train", config, *args, "--set", "optim.steps=100000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    state = run / "train_state.pt"
    deadline = time.monotonic() + scaled(240)
    while not state.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)  # polling for the first checkpoint (a condition, bounded)
    assert state.exists(), proc.communicate(timeout=scaled(30))
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=scaled(120))
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "--resume" in err.strip().splitlines()[-1]
    step = int(torch.load(state, weights_only=True)["step"])
    assert step >= 4  # the first checkpoint (5), or the step before it if cut mid-save
    more = subprocess.run(
        [*CMD, "train", config, *args, "--set", f"optim.steps={step + 3}", "--resume"],
        capture_output=True,
        text=True,
        timeout=scaled(300),
    )
    assert more.returncode == 0, more.stderr
    history = json.loads(torch.load(state, weights_only=True)["history"])
    assert [h["step"] for h in history if "loss" in h] == list(range(1, step + 4))


def test_synth_subsets_never_share_a_scene_whatever_the_count_or_split():
    def scenes(videos, seed, split=None):
        return {vid: (sub, sc.seed) for vid, sub, sc in plan_scenes(videos, seed=seed, split=split)}

    big, small = scenes(300, 0), scenes(50, 0)
    # the train scenes are those the bundled model was trained on: synth_0_00000 ... 00209
    assert [v for v, (sub, _) in big.items() if sub == "train"] == [
        f"synth_0_{i:05d}" for i in range(210)
    ]
    assert big["synth_0_00000"][1] == scenes(1, 0, "train")["synth_0_00000"][1]
    every = {**big, **small, **scenes(50, 0, "validation"), **scenes(50, 0, "test")}
    by_seed: dict[int, set[str]] = {}
    for vid, (sub, scene_seed) in every.items():
        by_seed.setdefault(scene_seed, set()).add(sub)
        # an id names one scene whatever --videos or --split made it
        assert all(d[vid][1] == scene_seed for d in (big, small) if vid in d)
    assert all(len(subsets) == 1 for subsets in by_seed.values())
    assert (
        scenes(5, 0, "validation")["synth_0_validation_00004"] == every["synth_0_validation_00004"]
    )
    with pytest.raises(ValueError, match="split must be one of"):
        scenes(3, 0, "val")


def test_onset_windows_end_just_after_an_action_has_begun():
    from training.annotations import VideoAnnotation
    from training.data import VideoItem

    bounds = np.array([[20.0, 60.0], [100.0, 130.0]], np.float32)
    ann = VideoAnnotation("v", "train", 20.0, 10.0, ((2.0, 6.0), (10.0, 13.0)), ("a", "b"))
    video = VideoItem("v", np.zeros((200, 4), np.float32), 0.0, 0.1, bounds, np.array([0, 1]), ann)

    def ends(share, seed=0):
        sampler = WindowSampler(
            [video],
            window=32,
            context=0,
            strides=(1, 2),
            num_classes=2,
            center_radius=1.5,
            regression_ranges=((0, 4), (4, float("inf"))),
            onset_windows=share,
            onset_span_frames=5,
        )
        rng = np.random.default_rng(seed)
        return [sampler._window_end(video, rng) for _ in range(400)]

    onset = ends(1.0)
    # every window ends 1 to 5 frames into one of the two actions
    assert set(onset) <= set(range(21, 26)) | set(range(101, 106))
    assert len(set(onset)) == 10
    anywhere = ends(0.0)
    assert len(set(anywhere)) > 100 and min(anywhere) >= 8
    half = ends(0.5)
    near = sum(e in range(21, 26) or e in range(101, 106) for e in half)
    assert 150 < near < 260  # about half, plus the uniform ends that fall there by chance
    # the default draws the generator exactly as before the option existed
    rng = np.random.default_rng(3)
    assert ends(0.0, seed=3)[:5] == [int(rng.integers(8, 201)) for _ in range(5)]


def test_feature_width_and_unknown_labels_are_said_plainly(tmp_path, caplog):
    feats = tmp_path / "f"
    feats.mkdir()
    np.save(feats / "v0.npy", np.zeros((40, 24), np.float32))
    db = {
        "v0": {
            "subset": "train",
            "duration": 4.0,
            "fps": 10.0,
            "annotations": [
                {"segment": [0.5, 1.5], "label": "A", "label_id": 0},
                {"segment": [2.0, 3.0], "label": "Zed", "label_id": 1},
            ],
        }
    }
    (tmp_path / "a.json").write_text(json.dumps({"database": db}))
    config = DataConfig(
        kind="features", annotations=str(tmp_path / "a.json"), root=str(feats), cache_dir=None
    )
    with pytest.raises(ValueError, match=r"features of shape \(40, 24\), but the model takes"):
        load_videos(config, "train", fps=10.0, image_size=64, classes=("A",), feature_dim=128)
    with caplog.at_level("WARNING"):
        videos, _ = load_videos(config, "train", fps=10.0, image_size=64, classes=("A",))
    assert len(videos[0].labels) == 1
    assert "1 of 2 segments have labels the model does not know (Zed)" in caplog.text
    with pytest.raises(ValueError, match="no segment's label is one of the model's classes"):
        load_videos(config, "train", fps=10.0, image_size=64, classes=("B",))
