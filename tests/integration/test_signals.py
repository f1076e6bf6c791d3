"""Signal streams end to end: the bundled CSI model on a recording it never saw, through the
real detector and a real ZeroMQ subscriber; training and the start-up errors of the CLI."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import torch
import zmq

from engine.wire.events import EVENT_SCHEMA
from models.intervals import Interval, match_events
from tests.conftest import free_port, run_cli, scaled
from training.synth import write_signal_dataset


def fresh_recordings(tmp_path: Path, n: int = 1) -> tuple[Path, dict]:
    """n synthetic CSI recordings of a seed the bundled model was not trained on."""
    ann = write_signal_dataset(tmp_path / "csi", recordings=n, seed=12, split="test")
    return ann.parent, json.loads(ann.read_text())["database"]


def subscribe(endpoint: str, received: list, ready: threading.Event, stop: threading.Event):
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(endpoint)
    ready.set()
    try:
        while not stop.is_set():
            if sock.poll(100):
                topic, payload = sock.recv_multipart()
                received.append(json.loads(payload))
    finally:
        sock.close()


def test_the_bundled_csi_model_detects_actions_in_a_recording_it_never_saw(tmp_path):
    root, db = fresh_recordings(tmp_path)
    rid = next(iter(db))
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    received: list[dict] = []
    ready, stop = threading.Event(), threading.Event()
    sub = threading.Thread(target=subscribe, args=(endpoint, received, ready, stop), daemon=True)
    sub.start()
    assert ready.wait(scaled(10))
    result = run_cli(
        "run",
        "--config",
        "configs/csi.yaml",
        f"{root / rid}.npy?rate=100",
        "--fast",
        "--no-metrics",
        "--no-store",
        "--zmq",
        endpoint,
        timeout=120,
    )
    stop.set()
    sub.join(scaled(5))
    assert result.returncode == 0, result.stderr
    printed = [json.loads(line.split(" ", 1)[1]) for line in result.stdout.splitlines() if line]
    actions = [m for m in printed if m["type"] in ("onset", "offset")]
    for m in actions:
        jsonschema.validate(m, EVENT_SCHEMA)
        assert m["sample_rate_hz"] == 100.0
        # (the times on the wire are rounded to the millisecond, the sample indices are not)
        assert abs(m["start_sample"] - m["start_s"] * 100) <= 0.6
        assert abs(m["frame_sample"] - m["frame_s"] * 100) <= 0.6
    offsets = [m for m in actions if m["type"] == "offset"]
    assert offsets and all(abs(m["end_sample"] - m["end_s"] * 100) <= 0.6 for m in offsets)
    # the subscriber got what was printed (it may have joined after the first messages)
    got = {(m["type"], m.get("event_id")) for m in received if m["type"] in ("onset", "offset")}
    assert got and got <= {(m["type"], m["event_id"]) for m in actions}
    # and the events are right: most true actions found, most events true (tIoU 0.5)
    truth = [
        Interval(a["segment"][0], a["segment"][1], a["label"], 1.0, rid)
        for a in db[rid]["annotations"]
    ]
    reported = [Interval(m["start_s"], m["end_s"], m["label"], m["score"], rid) for m in offsets]
    matched = match_events(reported, truth, 0.5)
    assert len(matched) >= 0.6 * len(truth), (reported, truth)
    assert len(matched) >= 0.6 * len(reported), (reported, truth)


HAPT = Path(__file__).resolve().parents[2] / "data" / "hapt"


def test_the_bundled_hapt_model_detects_activities_of_a_test_subject():
    """A real recording (UCI HAPT, subject 2: one of UCI's test subjects, never trained on),
    replayed through the detector with the bundled IMU model."""
    if not (HAPT / "annotations.json").exists():
        pytest.fail("no data/hapt: run `actstream datasets hapt data/hapt` (make test does)")
    db = json.loads((HAPT / "annotations.json").read_text())["database"]
    rid = "hapt_s02_r0"
    assert db[rid]["subset"] == "test"
    result = run_cli(
        "run",
        "--config",
        "configs/hapt.yaml",
        f"{HAPT / rid}.npy?rate=50",
        "--fast",
        "--no-metrics",
        "--no-store",
        "--zmq",
        f"tcp://127.0.0.1:{free_port()}",
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    printed = [json.loads(line.split(" ", 1)[1]) for line in result.stdout.splitlines() if line]
    offsets = [m for m in printed if m["type"] == "offset"]
    truth = [
        Interval(a["segment"][0], a["segment"][1], a["label"], 1.0, rid)
        for a in db[rid]["annotations"]
    ]
    reported = [Interval(m["start_s"], m["end_s"], m["label"], m["score"], rid) for m in offsets]
    matched = match_events(reported, truth, 0.5)
    assert len(matched) >= 0.7 * len(truth), (len(matched), len(truth))
    assert len(matched) >= 0.7 * len(reported), (len(matched), len(reported))
    assert all(m["sample_rate_hz"] == 50.0 for m in offsets)


def test_a_signal_model_trains_on_recordings_and_keeps_their_statistics(tmp_path):
    root, _ = fresh_recordings(tmp_path, 4)
    config = tmp_path / "tiny.yaml"
    config.write_text(
        f"""out_dir: {tmp_path / "run"}
model:
  classes: [run, walk, jump, wave, bend, stand, sit]
  input: {{kind: signal, channels: 30, sample_rate_hz: 100.0, window_samples: 20,
           hop_samples: 10, encoder_channels: [16], feature_dim: 16}}
  temporal: {{dim: 16, num_layers: 1, num_lookback_heads: 2, lookback_frames: 8}}
  head: {{window_frames: 32, dim: 16, num_levels: 2, num_heads: 2, attn_window: 3}}
data: {{kind: signals, annotations: {root / "annotations.json"}, root: {root},
        train_subset: test, val_subset: test, cache_dir: null}}
loss: {{regression_ranges: [[0, 8], [8, .inf]]}}
optim: {{steps: 6, batch_size: 2, eval_every: 6, checkpoint_every: 6, warmup_steps: 1}}
"""
    )
    result = run_cli("train", str(config), timeout=180)
    assert result.returncode == 0, result.stderr
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["model"]
    samples = np.concatenate([np.load(p) for p in sorted(root.glob("*.npy"))])
    # the front end's statistics are the training recordings' (every sample, once)
    np.testing.assert_allclose(state["backbone.mean"].float().numpy(), samples.mean(0), rtol=1e-3)
    np.testing.assert_allclose(state["backbone.std"].float().numpy(), samples.std(0), rtol=1e-3)
    assert state["backbone.mean"].shape == (30,)


def test_sources_a_model_cannot_take_are_start_up_errors(tmp_path, clip_mp4):
    root, db = fresh_recordings(tmp_path)
    rec = f"{root / next(iter(db))}.npy"
    cases = [
        (["--config", "configs/csi.yaml", str(clip_mp4)], "this model takes sensor signals"),
        (["--config", "configs/demo.yaml", rec], "a sensor recording needs a signal model"),
        (["--config", "configs/csi.yaml", f"{rec}?rate=50"], "sampled at 50 Hz but the model"),
    ]
    for args, message in cases:
        result = run_cli("run", *args, "--fast", "--no-metrics", "--no-store", timeout=120)
        assert result.returncode == 2, (args, result.stderr)
        lines = [line for line in result.stderr.splitlines() if "error" in line]
        assert len(lines) == 1 and message in lines[0], result.stderr
        assert "Traceback" not in result.stderr


def test_the_detector_reads_a_sensor_on_a_serial_port(tmp_path):
    """The bundled CSI model over `serial://`: a writer thread plays a recording into a real
    pseudo-terminal as a sensor would (a line per sample, at twice its rate), and the
    detector publishes onsets and offsets with the sample fields."""
    pytest.importorskip("serial")
    import os
    import signal
    import tty

    from tests.integration.helpers import Running

    root, db = fresh_recordings(tmp_path)
    rid = next(iter(db))
    x = np.load(root / f"{rid}.npy")
    master, slave = os.openpty()
    tty.setraw(slave)
    stop = threading.Event()

    def sensor() -> None:  # 100 samples (1 s of signal) every 0.5 s
        for i in range(0, len(x), 100):
            if stop.is_set():
                return
            os.write(
                master, b"".join(b",".join(b"%.5f" % v for v in r) + b"\n" for r in x[i : i + 100])
            )
            stop.wait(0.5)  # the sensor's own pace; ends at once when stopped

    run = Running(
        "--config",
        "configs/csi.yaml",
        f"csi=serial://{os.ttyname(slave)}",
        "--no-metrics",
        "--no-store",
        "--zmq",
        f"tcp://127.0.0.1:{free_port()}",
    )
    writer = threading.Thread(target=sensor, daemon=True)
    try:
        writer.start()
        run.wait_until(lambda: "offset" in " ".join(run.topics()), "an offset", 90)
    finally:
        stop.set()
        rc, err, _ = run.stop(signal.SIGINT)
        writer.join(scaled(5))
        os.close(master)
        os.close(slave)
    assert rc == 0, err
    printed = [json.loads(line.split(" ", 1)[1]) for line in run.lines if " " in line]
    actions = [m for m in printed if m.get("type") in ("onset", "offset")]
    assert {"onset", "offset"} <= {m["type"] for m in actions}
    for m in actions:
        jsonschema.validate(m, EVENT_SCHEMA)
        assert m["stream"] == "csi" and m["sample_rate_hz"] == 100.0
        assert abs(m["frame_sample"] - m["frame_s"] * 100) <= 0.6
        assert m.get("source_clock_s") is None  # a serial line has no clock of its own
