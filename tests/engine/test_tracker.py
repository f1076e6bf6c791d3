"""Tracker on hand-written timelines: a scripted head sees each true action clipped to the
window that ends at `e` (the head runs every 0.2 s; frames are 0.1 s; tolerance 2 frames)."""

from engine.tracker import Tracker, TrackerConfig
from models.intervals import Interval
from tests.conftest import scaled

PERIOD = 0.1
WINDOW_S = 12.8


# Every decision on the first sighting: the behaviour each mechanism below is measured against.
IMMEDIATE = dict(
    onset_threshold=0.3,
    keep_threshold=0.3,
    confirm_runs=1,
    offset_confirm_runs=1,
    open_tolerance_frames=2.0,
)


def make(**kw):
    return Tracker(TrackerConfig(**{**IMMEDIATE, **kw}), frame_period_s=PERIOD, id_prefix="r-cam-")


def visible(actions, e):
    """Each (start, end, label, score) as a perfect head would see it at window end e."""
    return [Interval(s, min(x, e), label, score) for s, x, label, score in actions if s < e - 0.05]


def run(tracker, actions, ends):
    out = []
    for e in ends:
        for ev in tracker.update(visible(actions, e), window_start_s=e - WINDOW_S, window_end_s=e):
            out.append((round(e, 3), ev))
    return out


def runs(until, step=0.2):
    return [round(step * i, 3) for i in range(1, int(until / step) + 1)]


def test_one_action_gives_one_onset_then_one_offset_with_the_same_id():
    events = run(make(), [(1.0, 3.0, "wave", 0.9)], runs(6.0))
    assert [(e, ev.type) for e, ev in events] == [(1.2, "onset"), (3.4, "offset")]
    onset, offset = events[0][1], events[1][1]
    assert onset.event_id == offset.event_id == "r-cam-1"
    assert onset.start_s == 1.0 and onset.label == "wave"
    assert (offset.start_s, offset.end_s, offset.reason) == (1.0, 3.0, "ended")


def test_short_action_between_two_head_runs_gets_onset_and_offset_together():
    events = run(make(), [(1.45, 1.55, "jump", 0.8)], [1.4, 1.8, 2.2, 2.6])
    assert [(e, ev.type) for e, ev in events] == [(1.8, "onset"), (1.8, "offset")]
    assert events[0][1].event_id == events[1][1].event_id
    assert (events[1][1].start_s, events[1][1].end_s) == (1.45, 1.55)


def test_overlapping_windows_seeing_a_finished_action_again_add_nothing():
    t = make()
    run(t, [(1.0, 3.0, "wave", 0.9)], runs(4.0))
    later = run(t, [(1.0, 3.0, "wave", 0.9)], [round(4.0 + 0.2 * i, 3) for i in range(1, 40)])
    assert later == []


def test_two_actions_of_different_labels_at_once_are_two_events():
    events = run(make(), [(1.0, 2.0, "wave", 0.9), (1.5, 4.0, "spin", 0.7)], runs(5.0))
    ids = {ev.label: ev.event_id for _, ev in events}
    assert ids == {"wave": "r-cam-1", "spin": "r-cam-2"}
    assert sorted((ev.label, ev.type) for _, ev in events) == [
        ("spin", "offset"),
        ("spin", "onset"),
        ("wave", "offset"),
        ("wave", "onset"),
    ]


def test_same_label_again_after_a_gap_is_a_new_action():
    events = run(make(), [(1.0, 2.0, "wave", 0.9), (4.0, 5.0, "wave", 0.9)], runs(7.0))
    assert [ev.event_id for _, ev in events] == ["r-cam-1", "r-cam-1", "r-cam-2", "r-cam-2"]


def test_score_falling_away_closes_the_action_after_missed_runs():
    t = make(close_after_missed_runs=2)
    events = run(t, [(1.0, 10.0, "pulse", 0.9)], runs(2.0))
    events += run(t, [], [2.2, 2.4, 2.6])
    kinds = [(e, ev.type, ev.reason) for e, ev in events]
    assert kinds == [(1.2, "onset", None), (2.4, "offset", "score_dropped")]
    assert events[1][1].end_s == 2.0  # where it was last seen


def test_one_missed_run_does_not_split_an_action():
    t = make(close_after_missed_runs=2)
    events = run(t, [(1.0, 10.0, "pulse", 0.9)], runs(2.0))
    events += run(t, [], [2.2])
    events += run(t, [(1.0, 10.0, "pulse", 0.9)], [2.4, 2.6])
    assert [ev.type for _, ev in events] == ["onset"]


def test_weak_detections_and_weaker_duplicates_are_ignored():
    t = make(onset_threshold=0.5)
    dets = [Interval(1.0, 2.0, "wave", 0.3)]
    assert t.update(dets, window_start_s=-10, window_end_s=2.0) == []
    dets = [Interval(1.0, 2.0, "wave", 0.9), Interval(1.1, 2.0, "wave", 0.6)]
    events = t.update(dets, window_start_s=-10, window_end_s=2.0)
    assert [ev.type for ev in events] == ["onset"] and events[0].score == 0.9


def test_close_all_ends_open_actions_with_the_reason():
    t = make()
    run(t, [(1.0, 10.0, "dash", 0.9)], runs(2.0))
    events = t.close_all("shutdown", at_s=2.1)
    assert [(ev.type, ev.reason, ev.end_s) for ev in events] == [("offset", "shutdown", 2.1)]
    assert t.close_all("shutdown") == []


def test_action_sliding_out_of_a_short_window_is_not_taken_for_a_new_one():
    t = make()
    short_window_s = 1.6
    events = []
    for e in runs(6.0):
        start = e - short_window_s
        dets = [
            Interval(max(s, start), min(x, e), lab, sc)
            for s, x, lab, sc in [(0.5, 1.45, "wave", 0.9)]
            if s < e - 0.05 and x > start
        ]
        events += t.update(dets, window_start_s=start, window_end_s=e)
    assert [ev.type for ev in events] == ["onset", "offset"]


def test_short_action_first_seen_still_open_is_closed_on_the_next_run():
    # With the default 2-frame tolerance an action that ended 0.12 s before the window's end
    # still looks open; the next run sees it ended: still one onset and one offset.
    events = run(make(), [(2.62, 2.68, "jump", 0.8)], runs(4.0))
    assert [(e, ev.type, ev.reason) for e, ev in events] == [
        (2.8, "onset", None),
        (3.0, "offset", "ended"),
    ]
    assert events[1][1].end_s == 2.68


def test_the_tracker_imports_no_torch():
    import subprocess
    import sys

    code = "import sys, engine.tracker; assert 'torch' not in sys.modules, 'torch imported'"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=scaled(60)
    )
    assert done.returncode == 0, done.stderr[-500:]


# ---- the decision layer's answers to the failures seen in event streams ----------------------
def feed(tracker, script):
    """script: [(window_end, [(start, end, label, score), ...]), ...] with a 12.8 s window."""
    out = []
    for e, dets in script:
        found = tracker.update(
            [Interval(s, x, lab, sc) for s, x, lab, sc in dets],
            window_start_s=e - WINDOW_S,
            window_end_s=e,
        )
        out += [(e, ev) for ev in found]
    return out


def test_a_late_find_is_marked_late_or_dropped_never_a_fresh_onset():
    # The head finds an action 5 s after its start (e.g. the earlier track was pruned).
    script = [(10.0, [(5.0, 10.0, "wave", 0.8)]), (10.2, [(5.0, 10.2, "wave", 0.8)])]
    events = feed(make(), script)
    assert [(ev.type, ev.late) for _, ev in events] == [("onset", True)]
    assert feed(make(late_policy="drop"), script) == []
    # cut by the window's left edge: it began before the window, so it is old
    cut = [(20.0, [(20.0 - WINDOW_S, 20.0, "spin", 0.8)])]
    assert [ev.late for _, ev in feed(make(late_after_s=60.0), cut)] == [True]


def test_one_short_regression_does_not_end_an_action_when_offsets_are_confirmed():
    script = [
        (2.0, [(1.0, 2.0, "pulse", 0.9)]),
        (2.2, [(1.0, 1.6, "pulse", 0.9)]),  # one run regresses the end 0.6 s short
        (2.4, [(1.0, 2.4, "pulse", 0.9)]),
        (2.6, [(1.0, 2.2, "pulse", 0.9)]),  # the action really ends at 2.2
        (2.8, [(1.0, 2.2, "pulse", 0.9)]),
    ]
    old = feed(make(), script)
    assert [(e, ev.type) for e, ev in old] == [(2.0, "onset"), (2.2, "offset")]  # premature
    new = feed(make(offset_confirm_runs=2), script)
    assert [(e, ev.type) for e, ev in new] == [(2.0, "onset"), (2.8, "offset")]
    assert (new[1][1].start_s, new[1][1].end_s, new[1][1].reason) == (1.0, 2.2, "ended")


def test_one_motion_opens_one_label_with_cross_class_suppression():
    script = [
        (8.0, [(7.7, 8.0, "dash", 0.9), (7.7, 8.0, "jump", 0.4), (7.8, 8.0, "wave", 0.35)]),
        (8.2, [(7.7, 8.2, "dash", 0.9), (7.7, 8.1, "flash", 0.4)]),
        (8.4, [(7.7, 8.4, "dash", 0.9)]),
    ]
    burst = feed(make(), script)
    assert sorted({ev.label for _, ev in burst}) == ["dash", "flash", "jump", "wave"]
    one = feed(make(cross_class_iou=0.5), script)
    assert [(ev.type, ev.label) for _, ev in one] == [("onset", "dash")]


def test_a_score_dip_does_not_split_an_action_with_hysteresis():
    script = [
        (round(1.2 + 0.2 * i, 3), [(1.0, round(1.2 + 0.2 * i, 3), "spin", 0.8)]) for i in range(5)
    ]
    dip = [
        (round(2.2 + 0.2 * i, 3), [(1.0, round(2.2 + 0.2 * i, 3), "spin", 0.2)]) for i in range(3)
    ]
    back = [
        (round(2.8 + 0.2 * i, 3), [(1.0, round(2.8 + 0.2 * i, 3), "spin", 0.8)]) for i in range(3)
    ]
    split = feed(make(), script + dip + back)
    assert [ev.type for _, ev in split] == ["onset", "offset"]  # closed in the dip...
    assert split[1][1].reason == "score_dropped"  # ...and the rest is lost
    one = feed(make(keep_threshold=0.15), script + dip + back)
    assert [ev.type for _, ev in one] == ["onset"]


def test_a_one_run_blip_needs_confirmation_to_become_an_onset():
    blip = [(5.0, [(4.8, 5.0, "flash", 0.6)]), (5.2, []), (5.4, [])]
    assert [ev.type for _, ev in feed(make(), blip)] == ["onset", "offset"]
    assert feed(make(confirm_runs=2), blip) == []
    held = [(5.0, [(4.8, 5.0, "flash", 0.6)]), (5.2, [(4.8, 5.2, "flash", 0.6)])]
    events = feed(make(confirm_runs=2), held)
    assert [(e, ev.type, ev.start_s) for e, ev in events] == [(5.2, "onset", 4.8)]


def test_a_clear_sighting_confirms_at_once_and_a_weaker_one_still_waits():
    clear = [(5.0, [(4.8, 5.0, "flash", 0.95)]), (5.2, [(4.8, 5.2, "flash", 0.95)])]
    fast = make(confirm_runs=3, confirm_score=0.9)
    assert [(e, ev.type) for e, ev in feed(fast, clear)] == [(5.0, "onset")]
    weak = [(5.0 + 0.2 * i, [(4.8, 5.0 + 0.2 * i, "flash", 0.6)]) for i in range(3)]
    events = feed(make(confirm_runs=3, confirm_score=0.9), weak)
    assert [(e, ev.type) for e, ev in events] == [(5.4, "onset")]  # the third run in a row
    assert feed(make(confirm_runs=3), clear) == []  # no fast path: two runs are not enough


def test_two_actors_doing_the_same_action_at_once_are_two_events():
    # the head reports both (they overlap little): each is its own action
    script = [
        (3.0, [(1.0, 3.0, "wave", 0.9)]),
        (5.0, [(1.0, 5.0, "wave", 0.9), (4.0, 5.0, "wave", 0.7)]),
        (7.0, [(1.0, 6.0, "wave", 0.9), (4.0, 7.0, "wave", 0.7)]),
        (9.0, [(1.0, 6.0, "wave", 0.9), (4.0, 8.5, "wave", 0.7)]),
    ]
    events = feed(make(), script)
    assert [(ev.type, ev.event_id) for _, ev in events] == [
        ("onset", "r-cam-1"),
        ("onset", "r-cam-2"),
        ("offset", "r-cam-1"),
        ("offset", "r-cam-2"),
    ]


def test_keep_threshold_above_the_onset_threshold_is_refused():
    import pytest

    with pytest.raises(ValueError, match="keep_threshold"):
        TrackerConfig(onset_threshold=0.3, keep_threshold=0.5)


def test_events_are_plain_python_values_whatever_numbers_the_head_gives():
    import json

    import numpy as np

    t = make(late_after_s=0.5)
    d = [Interval(np.float64(1.0), np.float64(2.0), "wave", np.float32(0.9))]
    (onset,) = t.update(d, window_start_s=-10.0, window_end_s=np.float64(2.0))
    assert onset.late is True  # found 1 s after its start: late, as a real bool
    json.dumps({"late": onset.late})
