import random
import threading
from fractions import Fraction

import pytest

from stream.buffer import BufferClosed, DropPolicy, FrameBuffer
from stream.frames import FpsSampler, stream_time_s
from stream.reconnect import Backoff
from tests.conftest import scaled


def test_stream_time_uses_pts_times_time_base():
    assert stream_time_s(3003, Fraction(1, 30000), 7, 25.0) == pytest.approx(0.1001)


def test_stream_time_falls_back_to_index_over_fps():
    assert stream_time_s(None, Fraction(1, 90000), 50, 25.0) == 2.0
    assert stream_time_s(100, None, 5, 10.0) == 0.5
    assert stream_time_s(None, None, 5, None) is None


def keep_pattern(sampler, times):
    return [t for t in times if sampler.keep(t)]


def test_sampler_thins_30fps_to_10fps():
    kept = keep_pattern(FpsSampler(10), [i / 30 for i in range(30)])
    assert len(kept) == 10
    assert kept[:3] == pytest.approx([0.0, 0.1, 0.2], abs=0.02)


def test_sampler_passes_slower_sources_unchanged():
    times = [i / 5 for i in range(10)]
    assert keep_pattern(FpsSampler(10), times) == times


def test_sampler_restarts_after_timestamps_jump_back():
    s = FpsSampler(10)
    keep_pattern(s, [i / 10 for i in range(50)])
    assert s.keep(0.0)  # a restarted camera starts at 0 again


def test_buffer_drops_oldest_when_full_and_counts_drop():
    buf = FrameBuffer(3, DropPolicy.DROP_OLDEST)
    dropped = [buf.put(i) for i in range(5)]
    assert dropped == [0, 0, 0, 1, 1]
    assert buf.dropped == 2
    assert buf.get_many(10) == [2, 3, 4]


def test_status_markers_keep_their_place_and_take_no_capacity():
    buf = FrameBuffer(2, DropPolicy.DROP_OLDEST, is_frame=lambda x: isinstance(x, int))
    for item in ["connected", 1, 2, 3, "disconnected", 4]:
        buf.put(item)
    assert len(buf) == 2 and buf.dropped == 2
    assert buf.get_many(10) == ["connected", 3, "disconnected", 4]


def test_status_marker_never_blocks_a_full_blocking_buffer():
    buf = FrameBuffer(1, DropPolicy.BLOCK, is_frame=lambda x: isinstance(x, int))
    buf.put(1)
    buf.put("ended", timeout_s=0.01)
    assert buf.dropped == 0 and buf.get_many(5) == [1, "ended"]


def test_blocking_buffer_waits_for_the_consumer_and_loses_nothing():
    buf = FrameBuffer(2, DropPolicy.BLOCK)
    got = []

    def produce():
        for i in range(20):
            buf.put(i)

    t = threading.Thread(target=produce)
    t.start()
    while len(got) < 20:
        got += buf.get_many(1)
    t.join(scaled(5))
    assert not t.is_alive()
    assert got == list(range(20)) and buf.dropped == 0


def test_closing_a_buffer_wakes_a_blocked_producer():
    buf = FrameBuffer(1, DropPolicy.BLOCK)
    buf.put(0)
    errors = []

    def produce():
        try:
            buf.put(1)
        except BufferClosed:
            errors.append("closed")

    t = threading.Thread(target=produce)
    t.start()
    buf.close()
    t.join(scaled(5))
    assert not t.is_alive() and errors == ["closed"]


def test_ready_event_is_set_on_put():
    ready = threading.Event()
    buf = FrameBuffer(2, DropPolicy.BLOCK, ready=ready)
    buf.put(1)
    assert ready.is_set()


class FixedRandom:
    def __init__(self, value):
        self.value = value

    def random(self):
        return self.value


def test_backoff_grows_exponentially_and_is_capped():
    b = Backoff(initial_s=0.5, max_s=4.0, factor=2.0, jitter=0.0)
    rng = FixedRandom(0.5)
    assert [b.delay_s(a, rng) for a in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_backoff_jitter_stays_within_its_band_and_never_passes_the_cap():
    b = Backoff(initial_s=1.0, max_s=10.0, jitter=0.2)
    assert b.delay_s(0, FixedRandom(0.0)) == pytest.approx(0.8)
    assert b.delay_s(0, FixedRandom(0.999999)) == pytest.approx(1.2, abs=1e-5)
    # at the cap: spread below it, never above (jitter used to be added after the cap)
    at_cap = [b.delay_s(20, FixedRandom(x)) for x in (0.0, 0.25, 0.5, 0.75, 0.999999)]
    assert at_cap[0] == pytest.approx(8.0) and max(at_cap) == 10.0
    rng = random.Random(1)
    assert max(b.delay_s(a, rng) for a in range(100) for _ in range(20)) <= 10.0


def test_backoff_rejects_nonsense():
    with pytest.raises(ValueError):
        Backoff(initial_s=0)
    with pytest.raises(ValueError):
        Backoff(jitter=1.5)
