"""Tracker on hand-written timelines: a scripted head sees each true action clipped to the
window that ends at `e` (the head runs every 0.2 s; frames are 0.1 s; tolerance 2 frames)."""

from engine.tracker import Tracker, TrackerConfig
from models.intervals import Interval

PERIOD = 0.1
WINDOW_S = 12.8


def make(**kw):
    return Tracker(TrackerConfig(**kw), frame_period_s=PERIOD, id_prefix="r-cam-")


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
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-500:]
