"""The live view's frames: made only while someone watches, at the widest width and the
fastest rate asked for, never after a watcher's interest lapsed."""

import time

import numpy as np

from stream import preview as preview_module
from stream.preview import Previews, scaled_size


def test_nothing_is_due_until_someone_watches_and_then_at_the_widest_width():
    p = Previews()
    assert p.due("cam") is None
    p.watch("cam", "a", width=320, fps=2)
    p.watch("cam", "b", width=640, fps=1)
    assert p.due("cam") == 640
    assert p.due("other") is None


def test_offers_follow_the_fastest_watchers_rate():
    p = Previews()
    p.watch("cam", "a", width=100, fps=10)  # every 0.1 s
    assert p.due("cam") == 100
    p.offer("cam", np.zeros((4, 4, 3), np.uint8), 0.0)
    assert p.due("cam") is None  # just offered
    time.sleep(0.1)
    assert p.due("cam") == 100
    p.offer("cam", np.ones((4, 4, 3), np.uint8), 0.1)
    latest = p.latest("cam")
    assert latest.seq == 2 and latest.t_s == 0.1 and latest.jpeg[:2] == b"\xff\xd8"


def test_interest_lapses_and_unwatch_ends_it(monkeypatch):
    p = Previews()
    monkeypatch.setattr(preview_module, "WATCH_S", 0.05)
    p.watch("cam", "a", width=64, fps=5)
    assert p.due("cam") == 64
    time.sleep(0.08)
    assert p.due("cam") is None  # nobody renewed
    p.watch("cam", "a", width=64, fps=5)
    p.unwatch("cam", "a")
    assert p.due("cam") is None


def test_scaled_size_keeps_the_aspect_never_enlarges_and_is_even():
    assert scaled_size(1920, 1080, 320) == (320, 180)
    assert scaled_size(64, 64, 320) == (64, 64)
    assert scaled_size(333, 201, 101) == (100, 60)
