import numpy as np
import pytest

from stream.synthetic import CLASSES, MAX_ACTION_S, MIN_ACTION_S, SyntheticScene


def test_scene_is_deterministic_by_seed():
    a, b = SyntheticScene(seed=5), SyntheticScene(seed=5)
    assert np.array_equal(a.render(3.3), b.render(3.3))
    assert a.segments(60) == b.segments(60)
    assert not np.array_equal(a.render(3.3), SyntheticScene(seed=6).render(3.3))


def test_schedule_does_not_depend_on_query_order():
    a, b = SyntheticScene(seed=2), SyntheticScene(seed=2)
    b.render(100.0)
    b.segments(10)
    assert a.segments(120) == b.segments(120)


def test_actions_have_valid_durations_labels_and_gaps():
    scene = SyntheticScene(seed=1, num_actors=2)
    segs = scene.segments(600)
    assert len(segs) > 50
    assert {s.label for s in segs} == set(CLASSES)
    for s in segs:
        assert MIN_ACTION_S <= s.end_s - s.start_s <= MAX_ACTION_S + 1e-6
    for actor in (0, 1):
        mine = [s for s in segs if s.actor == actor]
        assert all(a.end_s < b.start_s for a, b in zip(mine, mine[1:], strict=False))
    overlaps = sum(
        1
        for a in segs
        for b in segs
        if a.actor < b.actor and a.start_s < b.end_s and b.start_s < a.end_s
    )
    assert overlaps > 0  # different actors' actions overlap in time


def test_finite_scene_keeps_every_action_inside_its_duration():
    segs = SyntheticScene(seed=4, duration_s=30).segments(1000)
    assert segs and all(s.end_s <= 30 for s in segs)


def test_frames_have_the_requested_shape():
    img = SyntheticScene(seed=0, width=96, height=48).render(1.0)
    assert img.shape == (48, 96, 3) and img.dtype == np.uint8


@pytest.mark.parametrize("label", CLASSES)
def test_each_action_changes_the_picture_over_time_more_than_idling(label):
    # Motion is what defines an action: more pixels change strongly from frame to frame during
    # the action than while the same actor idles (the drifting background changes pixels only
    # a little).
    scene = SyntheticScene(seed=0, num_actors=1, num_distractors=0, noise=0, classes=(label,))
    seg = scene.segments(200)[0]

    def motion(t0, t1):
        ts = np.arange(t0, t1, 0.1)
        frames = [scene.render(t).astype(float) for t in ts]
        return np.mean(
            [(np.abs(a - b).max(-1) > 40).mean() for a, b in zip(frames, frames[1:], strict=False)]
        )

    idle = motion(seg.start_s - 0.35, seg.start_s - 0.05) if seg.start_s > 0.4 else None
    active = motion(seg.start_s + 0.05, min(seg.end_s, seg.start_s + 0.5))
    assert active > 0.002
    if idle is not None:
        assert active > 3 * idle
