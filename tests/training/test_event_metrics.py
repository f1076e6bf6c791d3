"""Event metrics on hand-computed timelines (one video "v", 2 minutes)."""

import math

import pytest

from models.intervals import Interval
from training.event_metrics import ReportedAction, event_metrics, event_table, match_events

TRUTH = [
    Interval(10.0, 20.0, "wave", video_id="v"),
    Interval(30.0, 34.0, "jump", video_id="v"),
    Interval(50.0, 60.0, "wave", video_id="v"),
    Interval(90.0, 100.0, "spin", video_id="v"),
]


def act(s, e, label, onset_s, offset_s, score=0.9, onset_score=None, late=False):
    return ReportedAction(
        Interval(s, e, label, score, "v"), onset_s, offset_s, onset_score or score, late
    )


ACTIONS = [
    act(10.5, 20.0, "wave", 11.0, 20.5),  # tIoU 0.95, onset delay 1.0, offset delay 0.5
    act(30.0, 33.0, "jump", 30.4, 33.6),  # tIoU 0.75
    act(50.0, 54.0, "wave", 50.5, 54.2),  # a fragment: tIoU 0.4 with the truth
    act(56.0, 60.0, "wave", 62.0, 62.0),  # its other half, published 6 s after its start
    act(70.0, 72.0, "dash", 70.3, 72.3),  # a false alarm
    act(92.0, 98.0, "spin", 97.0, 98.5, late=True),  # a late find, marked
]


def test_one_to_one_matching_takes_most_pairs_then_the_best_total_overlap():
    truth = [Interval(0, 10, "a", video_id="v"), Interval(10, 20, "a", video_id="v")]
    # greedy by score would give the wide detection the first truth and leave the second
    reported = [Interval(3, 16, "a", 0.9, "v"), Interval(0, 9, "a", 0.5, "v")]
    assert match_events(reported, truth, 0.3) == [(0, 1), (1, 0)]
    other_video = [Interval(0, 10, "a", 0.9, "w")]
    assert match_events(other_video, truth, 0.3) == []
    other_label = [Interval(0, 10, "b", 0.9, "v")]
    assert match_events(other_label, truth, 0.3) == []


def test_the_event_table_counts_what_a_subscriber_receives():
    m = event_metrics(ACTIONS, TRUTH, minutes=2.0)
    # tIoU 0.5: the first wave, the jump and the spin (6 / 8 = 0.75) match; 3 of 6, 3 of 4
    r = m["by_tiou"]["0.5"]
    assert (r["tp"], r["precision"], r["recall"]) == (3, 0.5, 0.75)
    assert r["f1"] == pytest.approx(2 * 3 / (6 + 4))
    # tIoU 0.3: the fragment [50, 54] (0.4) also matches the second wave
    assert m["by_tiou"]["0.3"]["tp"] == 4
    # tIoU 0.7: wave 0.95, jump 0.75, spin 0.6 → two
    assert m["by_tiou"]["0.7"]["tp"] == 2
    assert m["events_per_true_action"] == 6 / 4
    assert m["split_share"] == 1 / 4  # the second wave came as two events
    assert m["false_per_minute"] == (6 - 3) / 2.0
    assert m["retroactive"] == {"bound_s": 3.0, "count": 1, "late_marked": 1}
    # onset delays of the tIoU-0.5 matches: 11 - 10, 30.4 - 30, 97 - 90
    on = m["onset_delay"]
    assert on["count"] == 3 and on["median_s"] == pytest.approx(1.0)
    assert on["max_s"] == pytest.approx(7.0)
    assert on["p90_s"] == pytest.approx(1.0 + 0.8 * 6.0)
    off = m["offset_delay"]  # 20.5 - 20, 33.6 - 34, 98.5 - 100
    assert off["median_s"] == pytest.approx(-0.4) and off["max_s"] == pytest.approx(0.5)
    assert m["per_class"]["dash"]["precision"] == 0.0 and math.isnan(
        m["per_class"]["dash"]["recall"]
    )
    assert m["per_class"]["jump"]["f1"] == 1.0


def test_map_with_the_score_known_at_onset_can_be_lower():
    good_late = [
        act(10.0, 20.0, "wave", 10.5, 20.5, score=0.9, onset_score=0.31),
        act(40.0, 44.0, "wave", 40.5, 44.5, score=0.5, onset_score=0.5),  # false
    ]
    truth = [Interval(10.0, 20.0, "wave", video_id="v")]
    m = event_metrics(good_late, truth, minutes=1.0)
    assert m["streaming_map"] == pytest.approx(1.0)  # ranked by the final score: TP first
    assert m["onset_score_map"] == pytest.approx(0.5)  # at onset the false one led


def test_nothing_reported_gives_zero_recall_and_nan_delays():
    m = event_metrics([], TRUTH, minutes=2.0)
    assert m["by_tiou"]["0.5"]["recall"] == 0.0 and math.isnan(m["by_tiou"]["0.5"]["precision"])
    assert m["onset_delay"]["count"] == 0 and math.isnan(m["onset_delay"]["median_s"])
    assert event_table(m)[0].startswith("events: 0 reported for 4 true actions")


def test_false_events_and_missed_actions_are_told_apart_by_kind():
    # In the shared timeline, at tIoU 0.5: both halves of the split wave [50, 60] are false
    # and mislocated (each overlaps it, too little), the dash is spurious; the second wave is
    # missed, mislocated (its fragments overlap it).
    m = event_metrics(ACTIONS, TRUTH, minutes=2.0)
    assert m["errors"] == {
        "false": {"mislocated": 2, "wrong_label": 0, "duplicate": 0, "spurious": 1},
        "missed": {"mislocated": 1, "wrong_label": 0, "merged": 0, "not_found": 0},
    }
    truth = [
        Interval(0, 10, "wave", video_id="v"),
        Interval(1, 10, "wave", video_id="v"),  # a second actor waving at once
        Interval(20, 30, "jump", video_id="v"),
        Interval(40, 44, "spin", video_id="v"),
        Interval(50, 52, "flash", video_id="v"),
    ]
    actions = [
        act(0, 10, "wave", 0.5, 10.5),  # one event for both waves: the second is merged
        act(20, 29, "pulse", 20.5, 29.5),  # the jump read as a pulse: a wrong label
        act(40, 44, "spin", 40.5, 44.5),
        act(40.2, 44, "spin", 40.6, 44.4),  # the spin again: a duplicate
    ]  # and the flash is not found
    m = event_metrics(actions, truth, minutes=1.0)
    assert m["by_tiou"]["0.5"]["tp"] == 2
    assert m["errors"] == {
        "false": {"mislocated": 0, "wrong_label": 1, "duplicate": 1, "spurious": 0},
        "missed": {"mislocated": 0, "wrong_label": 1, "merged": 1, "not_found": 1},
    }
    lines = event_table(m)
    assert (
        "  false events (tIoU 0.5): 0 mislocated, 1 wrong label, 1 duplicate, 0 spurious" in lines
    )
    assert (
        "  missed actions (tIoU 0.5): 0 mislocated, 1 wrong label, 1 merged, 1 not found" in lines
    )
