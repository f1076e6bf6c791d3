"""`actstream run --show-truth`: the synthetic source's ground truth beside the events, and a
periodic summary; the default run uses the bundled model (it publishes actions)."""

import json
import re
import subprocess

from engine.build import reader_options
from engine.config import load_config
from stream.frame_sources import synthetic_scene
from stream.sources import parse_source
from tests.conftest import CMD, scaled

SOURCE = "synthetic://?seed=5&duration_s=30"


def run_synthetic(*options: str) -> subprocess.CompletedProcess:
    """`actstream run SOURCE --fast` on a free port, no metrics endpoint."""
    return subprocess.run(
        [*CMD, "run", SOURCE, "--fast", "--no-metrics", "--zmq", "tcp://127.0.0.1:0", *options],
        capture_output=True,
        text=True,
        timeout=scaled(300),
    )


def test_show_truth_prints_every_true_action_and_a_summary_beside_the_events():
    result = run_synthetic("--show-truth")
    assert result.returncode == 0, result.stderr[-2000:]
    scene = synthetic_scene(parse_source(SOURCE), reader_options(load_config(None)))
    truth = [a for a in scene.segments(30.0) if a.start_s < 29.9]
    starts = re.findall(r"truth synthetic: (\w+) starts at ([\d.]+) s", result.stderr)
    assert [(lab, float(t)) for lab, t in starts] == [(a.label, round(a.start_s, 2)) for a in truth]
    summaries = re.findall(
        r"summary synthetic at (\d+) s: (\d+) true actions ended, (\d+) onsets, (\d+) actions "
        r"closed, (\d+) matched, (\d+) false, (\d+) missed",
        result.stderr,
    )
    # every 10 s of stream time (a live source read --fast drops frames: at the first frame past)
    at = [int(s[0]) for s in summaries]
    assert len(at) == 2 and 10 <= at[0] < 20 <= at[1] < 30
    for _, ended, _, closed, matched, false, _ in summaries:
        assert int(matched) + int(false) == int(closed) and int(matched) <= int(ended)
    # no --weights, no --config: the bundled model, which finds actions
    assert "weights: " in result.stderr and "demo.pt" in result.stderr
    onsets = [
        json.loads(line.split(" ", 1)[1])
        for line in result.stdout.splitlines()
        if ".onset." in line
    ]
    # (how many are right depends on how many frames a loaded machine drops: not asserted)
    assert len(onsets) >= 1 and all(o["late"] in (True, False) for o in onsets)


def test_random_initialisation_only_when_asked_for():
    result = run_synthetic("--random-init", "--backend", "torch", "--quiet", "--duration-s", "3")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "seeded random init" in result.stderr
