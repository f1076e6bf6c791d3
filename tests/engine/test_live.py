"""The web view's server-side pieces that are pure: histogram quantiles (as Prometheus's
histogram_quantile interpolates), their window over the last minute, and JPEG encoding."""

import av
import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram

from engine.api.live import HistogramWindow, histogram_quantiles
from stream.preview import rgb_to_jpeg


def test_quantiles_interpolate_within_the_bucket_like_prometheus():
    # 10 observations: 4 in (0, 1], 4 in (1, 2], 2 in (2, 4]
    buckets = [(1.0, 4.0), (2.0, 8.0), (4.0, 10.0), (float("inf"), 10.0)]
    p50, p90, p99 = histogram_quantiles(buckets, (0.5, 0.9, 0.99))
    assert p50 == pytest.approx(1.25)  # rank 5: a quarter into (1, 2]
    assert p90 == pytest.approx(3.0)  # rank 9: half into (2, 4]
    assert p99 == pytest.approx(3.9)
    assert histogram_quantiles([(1.0, 0.0), (float("inf"), 0.0)], (0.5,)) == [None]
    # beyond the last finite bucket: its upper bound, as Prometheus answers
    assert histogram_quantiles([(1.0, 1.0), (float("inf"), 2.0)], (0.99,)) == [1.0]


def test_the_window_counts_only_recent_observations():
    registry = CollectorRegistry()
    h = Histogram("t_seconds", "x", ["stage"], buckets=(0.01, 0.1, 1.0), registry=registry)
    for _ in range(100):
        h.labels("a").observe(0.5)  # old and slow
    window = HistogramWindow(registry, window_s=60.0)
    first = window.quantiles({"t_seconds": "stage"})["t_seconds"]["a"]
    assert first[0] == pytest.approx(0.55) and first[2] == pytest.approx(0.5)  # since start
    for _ in range(10):
        h.labels("a").observe(0.005)  # new and fast
    p50, _p99, mean = window.quantiles({"t_seconds": "stage"})["t_seconds"]["a"]
    assert p50 == pytest.approx(0.005) and mean == pytest.approx(0.005)


def test_rgb_to_jpeg_encodes_any_size_that_decodes_back():
    img = np.zeros((61, 83, 3), np.uint8)
    img[:, :40] = (200, 30, 30)
    data = rgb_to_jpeg(img)
    assert data[:2] == b"\xff\xd8"
    with av.open(__import__("io").BytesIO(data)) as c:
        frame = next(c.decode(video=0)).to_ndarray(format="rgb24")
    assert frame.shape == (60, 82, 3) and abs(int(frame[30, 10, 0]) - 200) < 12
