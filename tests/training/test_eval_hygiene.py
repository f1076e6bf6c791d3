"""`actstream eval` warns when the videos it is given were in the checkpoint's training set."""

import json
import subprocess
from pathlib import Path

from tests.conftest import CMD, scaled
from training.synth import write_synthetic_dataset

BUNDLED = Path(__file__).resolve().parents[2] / "configs" / "weights" / "demo.pt"


def run_eval(data: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CMD, "eval", str(BUNDLED), str(data), "--subset", "all", "--no-streaming"]
        + ["--timelines", "0", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=scaled(300),
    )


def test_eval_warns_on_videos_the_bundled_model_was_trained_on(tmp_path):
    # seed 0 is the bundled model's training seed: its first train scenes are training videos
    write_synthetic_dataset(tmp_path / "seen", videos=3, seed=0, duration_s=10.0, split="train")
    result = run_eval(tmp_path / "seen", tmp_path / "ev1")
    assert result.returncode == 0, result.stderr
    assert "3 of the 3 evaluated videos are in the checkpoint's training set" in result.stderr
    assert (
        json.loads((tmp_path / "ev1" / "results.json").read_text())["videos_seen_in_training"] == 3
    )
    write_synthetic_dataset(tmp_path / "fresh", videos=2, seed=12, duration_s=10.0)
    result = run_eval(tmp_path / "fresh", tmp_path / "ev2")
    assert result.returncode == 0, result.stderr
    assert "training set" not in result.stderr
