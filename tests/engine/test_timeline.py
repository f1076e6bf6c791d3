"""A stream's timeline (engine/timeline.py): hand-computed windows, lookahead and countdown."""

import numpy as np
import pytest
import torch

from engine.timeline import StreamTimeline
from stream.frames import Frame


def frame(i: int, period_s: float = 0.1) -> Frame:
    return Frame("s", i, i * period_s, 1000.0 + i * period_s, np.zeros((2, 2, 3), np.uint8))


def make(delay: int = 0, stride: int = 2) -> StreamTimeline:
    tl = StreamTimeline(
        stream_id="s",
        window_frames=4,
        feature_dim=1,
        delay_frames=delay,
        head_stride=stride,
        frame_period_s=0.1,
    )
    tl.start()
    return tl


def test_window_fills_from_the_right_and_a_head_run_is_due_every_stride_frames():
    tl = make(stride=2)
    due = []
    for i in range(5):
        due.append(tl.push(frame(i), torch.tensor([float(i + 1)])))
        if due[-1]:
            tl.head_input()  # the run starts the countdown again
    assert due == [False, True, False, True, False]
    assert tl.window.flatten().tolist() == [2.0, 3.0, 4.0, 5.0]
    window, decision = tl.head_input()
    assert window.valid.tolist() == [True] * 4 and decision.index == 4
    assert window.start_s == pytest.approx(0.1) and window.end_s == pytest.approx(0.5)
    assert tl.since_head == 0


def test_a_young_stream_has_padding_on_the_left():
    tl = make()
    tl.push(frame(0), torch.tensor([7.0]))
    window, _ = tl.head_input()
    assert window.valid.tolist() == [False, False, False, True]
    assert window.features.flatten().tolist() == [0.0, 0.0, 0.0, 7.0]


def test_with_lookahead_the_window_lags_and_the_decision_is_the_newest_frame_received():
    tl = make(delay=2, stride=1)
    assert tl.push(frame(0), torch.tensor([0.0])) is False  # waits for 2 future frames
    assert tl.push(frame(1), torch.tensor([0.0])) is False
    assert tl.head_input() is None  # nothing the window reaches yet
    assert tl.push(frame(2), torch.tensor([1.0])) is True  # the output for frame 0
    window, decision = tl.head_input()
    assert tl.newest.index == 0 and decision.index == 2
    assert window.end_s == pytest.approx(0.1)  # the window ends after frame 0


def test_a_snapshot_is_not_changed_by_later_frames():
    tl = make(stride=1)
    tl.push(frame(0), torch.tensor([1.0]))
    window, _ = tl.head_input()
    tl.push(frame(1), torch.tensor([2.0]))
    assert window.features.flatten().tolist() == [0.0, 0.0, 0.0, 1.0]


def test_end_then_start_is_a_new_timeline():
    tl = make(delay=1, stride=3)
    for i in range(3):
        tl.push(frame(i), torch.tensor([1.0]))
    tl.end()
    assert tl.newest is None and tl.since_head == 0 and tl.head_input() is None
    tl.start()
    assert tl.filled == 0 and not tl.pending and tl.window.abs().sum() == 0


def test_ring_window_equals_the_shifted_window_and_head_runs_keep_their_snapshot():
    """The ring holds exactly what shifting a (T, C) window by one row per frame gives, over
    several wraps and a reconnection; a head input taken earlier is not changed by the
    frames pushed after it."""
    T, C = 5, 3
    tl = StreamTimeline(stream_id="s", window_frames=T, feature_dim=C, delay_frames=1,
                        head_stride=2, frame_period_s=0.1)  # fmt: skip
    gen = torch.Generator().manual_seed(3)
    for connection in range(2):
        tl.start()
        reference = torch.zeros(T, C)
        snapshots = []
        for i in range(3 * T + 2):
            y = torch.randn(1, C, generator=gen)
            due = tl.push(frame(i), y)
            if i >= 1:  # with delay 1 the first output comes with the second frame
                reference = torch.cat([reference[1:], y])
            assert torch.equal(tl.window, reference), (connection, i)
            if due:
                window, _ = tl.head_input()
                snapshots.append((window.features, reference.clone()))
        assert len(snapshots) >= 7
        for features, then in snapshots:
            assert torch.equal(features, then)
