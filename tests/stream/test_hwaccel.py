"""Hardware decoding: a device that works decodes frames of the same size and timing as
software; one that does not means software decoding, with the reason logged once."""

import logging

import numpy as np
import pytest

from stream import hwaccel
from stream.frame_sources import decode_file
from stream.settings import ReaderOptions, StreamConfig
from stream.sources import parse_source
from tests.media import scene_frames, write_h264_mp4


@pytest.fixture()
def fresh_choice():
    hwaccel.chosen.cache_clear()
    yield
    hwaccel.chosen.cache_clear()


def frames_with(path, setting: str):
    options = ReaderOptions(
        width=64, height=48, fps=10.0, stream=StreamConfig(realtime=False, hwaccel=setting)
    )
    return decode_file(parse_source(str(path)), options)


@pytest.mark.parametrize("setting", ["cuda", "vaapi", "auto"])
def test_hwaccel_gives_the_frames_of_software_decoding_and_says_once_why_not(
    media_dir, caplog, fresh_choice, setting
):
    path = write_h264_mp4(media_dir / "hw.mp4", scene_frames(30, fps=10, seed=2), fps=10)
    software = frames_with(path, "none")
    with caplog.at_level(logging.INFO, logger="stream.hwaccel"):
        first = frames_with(path, setting)
        again = frames_with(path, setting)
    assert len(first) == len(again) == len(software) == 30
    device = hwaccel.chosen(setting)
    for hw, sw in zip(first, software, strict=True):
        assert hw.image.shape == sw.image.shape == (48, 64, 3) and hw.pts_s == sw.pts_s
        if device is None:  # software both times: the same pixels
            assert np.array_equal(hw.image, sw.image)
        else:  # a device's colour conversion may differ by a level or two
            assert np.abs(hw.image.astype(int) - sw.image.astype(int)).mean() < 2.0
    lines = [r.getMessage() for r in caplog.records if r.name == "stream.hwaccel"]
    assert len(lines) == 1, lines  # decided once per process, whatever the number of sources
    if device is None:
        assert "decoding in software" in lines[0] and setting in lines[0]
        assert (
            ("cuda" in lines[0] and "vaapi" in lines[0])
            if setting == "auto"
            else setting in lines[0]
        )
        if setting != "auto":
            assert caplog.records[-1].levelno == logging.WARNING  # asked for, not given
    else:
        assert f"decoding video on {device}" in lines[0]


def test_none_decodes_in_software_without_probing(fresh_choice):
    assert hwaccel.hwaccel_for("none") is None


@pytest.mark.gpu
def test_nvdec_decodes_on_a_gpu_host(media_dir, fresh_choice):
    assert hwaccel.unavailable("cuda") is None
    assert hwaccel.chosen("auto") == "cuda"


def test_reader_processes_decode_on_the_device_chosen_once_in_the_detectors_process(
    media_dir, caplog, fresh_choice
):
    from stream.buffer import DropPolicy, FrameBuffer
    from stream.frames import Frame
    from stream.reader_process import ReaderProcess
    from tests.conftest import scaled

    path = write_h264_mp4(media_dir / "hwp.mp4", scene_frames(20, fps=10, seed=2), fps=10)
    options = ReaderOptions(
        width=32, height=32, fps=10.0, stream=StreamConfig(realtime=False, hwaccel="auto")
    )
    readers = []
    with caplog.at_level(logging.INFO):
        for i in range(2):
            buf = FrameBuffer(64, DropPolicy.BLOCK, is_frame=lambda x: isinstance(x, Frame))
            reader = ReaderProcess(parse_source(str(path), f"s{i}"), buf, options)
            reader.start()
            readers.append((reader, buf))
        for reader, _ in readers:
            reader.join(scaled(20))
            assert not reader.is_alive() and reader.frames_delivered == 20
    lines = [
        r.getMessage()
        for r in caplog.records
        if "hwaccel" in r.getMessage() or "decoding video on" in r.getMessage()
    ]
    device = hwaccel.chosen("auto")
    # one line from this process; children decoding on a working device each say so
    assert len(lines) == (1 if device is None else 3), lines
