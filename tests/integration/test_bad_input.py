"""The rest of the bad-input catalogue (README, "Failure behaviour"): odd but valid media is
decoded and reaches the model; broken configs fail at start-up in one line naming the input.
(Other cases live next to their code: tests/stream/test_sources.py, test_reader.py,
tests/engine/test_checkpoint.py, test_compile.py, tests/integration/test_cli.py.)"""

import logging
import threading
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from stream.frame_sources import decode_file
from stream.settings import ReaderOptions, StreamConfig
from stream.sources import parse_source
from tests.conftest import run_cli
from tests.integration.helpers import ScriptedHead, make_detector, scrape, small_config
from tests.media import damaged_copy, scene_frames, write_h264_mp4

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
OPTIONS = ReaderOptions(width=64, height=64, fps=10.0, stream=StreamConfig(realtime=False))


def write_video(path: Path, frames, *, codec="libx264", pix_fmt="yuv420p", pts=None, rate=10):
    """Frames (RGB arrays) into `path`; `pts` in milliseconds gives variable frame timing."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=rate)
        h, w, _ = frames[0].shape
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        if pts is not None:
            stream.time_base = Fraction(1, 1000)
        if codec == "libx264":
            stream.options = {"preset": "ultrafast", "bf": "0"}
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            if pts is not None:
                frame.pts, frame.time_base = pts[i], Fraction(1, 1000)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def gradient(h: int, w: int, i: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([(x + i) % 256, (y + 2 * i) % 256, np.full_like(x, 128)], -1).astype(np.uint8)


def decoded(path: Path):
    return decode_file(parse_source(str(path)), OPTIONS)


def test_one_by_one_pixel_frames_are_resized_to_the_model_size(tmp_path):
    frames = [gradient(1, 1, i) for i in range(20)]
    path = write_video(tmp_path / "tiny.avi", frames, codec="rawvideo", pix_fmt="rgb24")
    frames = decoded(path)
    assert len(frames) == 20 and frames[0].image.shape == (64, 64, 3)


def test_8k_frames_are_decoded_and_resized(tmp_path):
    path = write_video(tmp_path / "8k.mp4", [gradient(4320, 7680, i) for i in range(3)])
    frames = decoded(path)
    assert len(frames) == 3 and frames[0].image.shape == (64, 64, 3)


def test_variable_frame_rate_keeps_the_files_own_timestamps(tmp_path):
    pts_ms = [0, 40, 250, 260, 700, 1500, 1510, 2300]
    frames = [gradient(48, 64, i) for i in range(8)]
    path = write_video(tmp_path / "vfr.mkv", frames, pts=pts_ms, rate=1000)
    frames = decoded(path)
    times = [f.pts_s for f in frames]
    assert times == sorted(times) and len(set(times)) == len(times)
    assert all(any(abs(t - p / 1000) < 1e-3 for p in pts_ms) for t in times)  # never invented
    assert times[-1] == pytest.approx(2.3, abs=1e-3)


def test_stream_without_timestamps_is_timed_by_frame_index(tmp_path):
    mp4 = write_video(tmp_path / "src.mp4", [gradient(48, 64, i) for i in range(15)])
    raw = tmp_path / "raw.h264"  # an Annex B elementary stream: no container timestamps
    with av.open(str(mp4)) as src, av.open(str(raw), "w", format="h264") as out:
        stream = out.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is None:
                continue
            packet.stream = stream
            out.mux(packet)
    frames = decoded(raw)
    assert len(frames) >= 5  # 15 frames at the stream's nominal 25 fps, sampled to 10 fps
    steps = np.diff([f.pts_s for f in frames])
    assert (steps > 0).all()


def test_unsupported_codec_is_a_one_line_start_up_error(tmp_path):
    mkv = write_video(tmp_path / "h264.mkv", [gradient(32, 32, i) for i in range(5)])
    blob = mkv.read_bytes()
    assert blob.count(b"V_MPEG4/ISO/AVC") == 1
    unknown = tmp_path / "unknown.mkv"  # the same file, its codec renamed to one nobody has
    unknown.write_bytes(blob.replace(b"V_MPEG4/ISO/AVC", b"V_NOSUCH/CODEC1"))
    result = run_cli("run", str(unknown), "--no-metrics", "--backend", "torch", "--fast")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown.mkv: unsupported video codec" in lines[0], lines


@pytest.mark.parametrize(
    "text, message",
    [
        ("model: [unclosed\n", "invalid YAML at line"),
        ("tracker:\n  onset_threshold: 1.5\n", "onset_threshold must be in [0, 1]"),
        ("stream:\n  buffer_frames: -3\n", "buffer_frames must be positive"),
        ("engine:\n  backend: coreml\n", "engine.backend: expected one of"),
        ("- just\n- a list\n", "expected a mapping at the top level"),
    ],
)
def test_broken_configs_fail_at_start_up_in_one_line(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    result = run_cli("run", "--config", str(path), "--no-metrics")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "bad.yaml" in lines[0] and message in lines[0], lines


def test_damaged_file_decodes_what_it_can_counts_what_it_skipped_and_says_so(tmp_path, caplog):
    clip = write_h264_mp4(tmp_path / "clip.mp4", scene_frames(100, fps=25), fps=25)
    damaged = damaged_copy(clip, tmp_path / "damaged.mp4")
    config = small_config("stream.realtime=false")
    detector = make_detector([f"cam={damaged}"], config, ScriptedHead({}), metrics=True)
    port = detector.metrics.serve("127.0.0.1", 0)
    try:
        with caplog.at_level(logging.WARNING, logger="stream.frame_sources"):
            detector.start()
            detector.run(threading.Event(), duration_s=60)  # returns when the file has ended
        skipped = scrape(port)[("actstream_decode_errors_total", (("stream", "cam"),))]
        decoded = scrape(port)[("actstream_frames_decoded_total", (("stream", "cam"),))]
    finally:
        detector.close()
    assert skipped >= 2 and 50 < decoded < 100  # decoded as far as it could
    bursts = [r.getMessage() for r in caplog.records if "could not be decoded" in r.getMessage()]
    assert bursts and all(m.startswith(f"{damaged}: ") for m in bursts)
    assert len(bursts) <= skipped  # one line per burst, not per packet
    assert sum(int(m.split(": ")[1].split()[0]) for m in bursts) == skipped
