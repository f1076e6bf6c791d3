"""Signal sources: framing, recordings on disk, source strings and their errors."""

from __future__ import annotations

import numpy as np
import pytest

from stream.frame_sources import decode_file, open_frame_source
from stream.settings import ReaderOptions, StreamConfig
from stream.signals import SignalFraming, load_signal, signal_frames
from stream.sources import SourceError, SourceKind, parse_source
from stream.synthetic_signal import CSI_CLASSES, SyntheticCsi

FRAMING = SignalFraming(channels=3, sample_rate_hz=50.0, window_samples=8, hop_samples=4)


def options(framing: SignalFraming | None = FRAMING) -> ReaderOptions:
    fps = framing.fps if framing else 10.0
    return ReaderOptions(fps=fps, stream=StreamConfig(realtime=False), signal=framing)


def test_frames_hold_each_hop_and_the_samples_before_it():
    x = np.arange(40 * 3, dtype=np.float32).reshape(40, 3)
    frames = signal_frames(x, FRAMING)
    assert frames.shape == (10, 9, 3)  # 40 // 4 frames of W + 1 samples
    # frame 4 ends at sample 19 and holds samples 11..19
    np.testing.assert_array_equal(frames[4], x[11:20])
    # before the first sample, the first sample repeats (no change at a stream's start)
    np.testing.assert_array_equal(frames[0], np.concatenate([np.repeat(x[:1], 5, 0), x[:4]]))
    assert FRAMING.frame_time_s(4) == pytest.approx(19 / 50)


def test_the_difference_inside_frames_equals_the_recordings_own_difference():
    x = np.random.default_rng(0).normal(size=(200, 3)).astype(np.float32)
    frames = signal_frames(x, FRAMING)
    inside = np.diff(frames, axis=1)  # what the front end computes, frame by frame
    whole = np.diff(np.concatenate([x[:1], x]), axis=0)  # causal difference of the recording
    for i in range(len(frames)):
        end = (i + 1) * 4
        lo = max(0, end - 8)
        np.testing.assert_allclose(inside[i][8 - (end - lo) :], whole[lo:end], atol=1e-6)


def test_recordings_load_from_npy_and_csv(tmp_path):
    x = np.random.default_rng(1).normal(size=(30, 3)).astype(np.float32)
    np.save(tmp_path / "a.npy", x)
    np.testing.assert_array_equal(load_signal(tmp_path / "a.npy"), x)
    rows = "\n".join(",".join(f"{v:.6f}" for v in row) for row in x)
    (tmp_path / "b.csv").write_text("ax,ay,az\n" + rows + "\n")
    np.testing.assert_allclose(load_signal(tmp_path / "b.csv"), x, atol=1e-5)
    (tmp_path / "c.csv").write_text(rows + "\n")  # no header
    np.testing.assert_allclose(load_signal(tmp_path / "c.csv"), x, atol=1e-5)
    np.save(tmp_path / "one.npy", x[:, 0])  # 1-D: one channel
    assert load_signal(tmp_path / "one.npy").shape == (30, 1)


@pytest.mark.parametrize(
    "content, message",
    [
        (np.zeros((2, 3, 4)), "expected samples × channels"),
        (np.array([[1.0, np.nan]]), "sample 0 is not a finite number"),
        (np.array([["a", "b"]]), "expected real numbers"),
        (b"not numpy", "not a NumPy array file"),
    ],
)
def test_bad_recordings_are_refused_with_a_reason(tmp_path, content, message):
    path = tmp_path / "bad.npy"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        np.save(path, content)
    with pytest.raises(ValueError, match=message):
        load_signal(path)


def test_signal_source_strings(tmp_path):
    np.save(tmp_path / "imu.npy", np.zeros((100, 3), np.float32))
    spec = parse_source(f"{tmp_path}/imu.npy?rate=50")
    assert spec.kind is SourceKind.SIGNAL_FILE and spec.signal and not spec.live
    assert spec.stream_id == "imu" and spec.params == {"rate": "50"}
    assert parse_source(f"wrist={tmp_path}/imu.npy").stream_id == "wrist"
    with pytest.raises(SourceError, match="unknown option"):
        parse_source(f"{tmp_path}/imu.npy?hz=50")
    with pytest.raises(SourceError, match="rate must be a positive"):
        parse_source(f"{tmp_path}/imu.npy?rate=-3")
    with pytest.raises(SourceError, match="no such file; give an existing .npy or .csv"):
        parse_source(f"{tmp_path}/missing.csv")


def test_a_source_the_model_cannot_take_is_refused_in_one_line(tmp_path, clip_mp4):
    np.save(tmp_path / "imu.npy", np.zeros((100, 3), np.float32))
    signal = parse_source(str(tmp_path / "imu.npy"))
    with pytest.raises(SourceError, match="needs a signal model"):
        open_frame_source(signal, options(None))
    with pytest.raises(SourceError, match="this model takes sensor signals"):
        open_frame_source(parse_source(str(clip_mp4)), options())
    with pytest.raises(SourceError, match="has 3 channels but the model takes 6"):
        open_frame_source(
            signal,
            options(
                SignalFraming(channels=6, sample_rate_hz=50.0, window_samples=8, hop_samples=4)
            ),
        )
    with pytest.raises(SourceError, match="sampled at 100 Hz but the model takes 50 Hz"):
        open_frame_source(parse_source(f"{tmp_path}/imu.npy?rate=100"), options())


def test_a_recording_decodes_into_the_frames_a_reader_delivers(tmp_path):
    x = np.random.default_rng(2).normal(size=(101, 3)).astype(np.float32)
    np.save(tmp_path / "rec.npy", x)
    frames = decode_file(parse_source(str(tmp_path / "rec.npy")), options())
    assert len(frames) == 25  # every hop, none dropped by the frame-rate sampler
    assert [f.index for f in frames] == list(range(25))
    assert frames[3].pts_s == pytest.approx(15 / 50)
    np.testing.assert_array_equal(frames[3].image, signal_frames(x, FRAMING)[3])


def test_synthetic_csi_is_deterministic_and_annotated():
    a, b = SyntheticCsi(seed=4, duration_s=30), SyntheticCsi(seed=4, duration_s=30)
    np.testing.assert_array_equal(a.samples(), b.samples())
    assert a.samples().shape == (3000, 30)
    segs = a.segments()
    assert segs and all(0 <= s < e <= 30 and label in CSI_CLASSES for s, e, label in segs)
    # one actor: each action ends before the next starts
    assert all(e1 <= s2 for (_, e1, _), (s2, _, _) in zip(segs, segs[1:], strict=False))
    x = a.samples()
    s, e, _ = segs[0]
    acting = np.diff(x[int(s * 100) : int(e * 100)], axis=0).std()
    idle = np.diff(x[: int(s * 100)], axis=0).std()
    assert acting > idle  # an action shows in the signal
