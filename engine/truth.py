"""`actstream run --show-truth`: the ground truth of `synthetic://` streams beside the events.

As each stream's time passes a true action's start and end, one human-readable line says so;
every `summary_every_s` of stream time, one line sums up that stream's events so far against
the truth: reported actions, matched (one-to-one as `actstream eval` matches, same label,
tIoU ≥ 0.5), false, missed
(true actions that ended more than `settle_s` ago without a match). Pure bookkeeping in
stream time; `write` gets each line.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from engine.wire.events import ActionEvent
from models.intervals import Interval, match_events
from stream.synthetic import ActionSegment, SyntheticScene

SETTLE_S = 3.0  # a true action counts as missed this long after its end without a report


@dataclass
class _Stream:
    scene: SyntheticScene
    truth: list[ActionSegment] = field(default_factory=list)
    known_until_s: float = 0.0
    said_start: int = 0  # truth[:said_start] had their start line
    said_end: set[int] = field(default_factory=set)
    reported: list[Interval] = field(default_factory=list)  # closed actions (offsets)
    onsets: int = 0
    next_summary_s: float = 0.0


class TruthMonitor:
    def __init__(
        self,
        scenes: dict[str, SyntheticScene],
        write: Callable[[str], None],
        *,
        summary_every_s: float = 10.0,
    ) -> None:
        self.write, self.summary_every_s = write, summary_every_s
        self.streams = {
            sid: _Stream(scene, next_summary_s=summary_every_s) for sid, scene in scenes.items()
        }
        self.lock = threading.Lock()

    def on_frame(self, stream_id: str, t_s: float) -> None:
        """Stream `stream_id` reached stream time `t_s` (called per processed frame)."""
        st = self.streams.get(stream_id)
        if st is None:
            return
        with self.lock:
            if t_s + 1.0 > st.known_until_s:  # the schedule is drawn lazily, a minute ahead
                st.known_until_s = t_s + 60.0
                st.truth = st.scene.segments(st.known_until_s)
            while st.said_start < len(st.truth) and st.truth[st.said_start].start_s <= t_s:
                a = st.truth[st.said_start]
                self.write(
                    f"truth {stream_id}: {a.label} starts at {a.start_s:.2f} s (actor {a.actor})"
                )
                st.said_start += 1
            for i, a in enumerate(st.truth[: st.said_start]):
                if i not in st.said_end and a.end_s <= t_s:
                    st.said_end.add(i)
                    self.write(
                        f"truth {stream_id}: {a.label} ended at {a.end_s:.2f} s "
                        f"({a.start_s:.2f}-{a.end_s:.2f} s, actor {a.actor})"
                    )
            if t_s >= st.next_summary_s:
                st.next_summary_s += self.summary_every_s
                self.write(self.summary(stream_id, t_s))

    def on_message(self, _topic: str, _payload: bytes, message: object) -> None:
        """The publisher's `on_sent` hook: counts the stream's action events."""
        if not isinstance(message, ActionEvent) or message.stream not in self.streams:
            return
        with self.lock:
            st = self.streams[message.stream]
            if message.type == "onset":
                st.onsets += 1
            else:
                assert message.end_s is not None
                st.reported.append(
                    Interval(message.start_s, message.end_s, message.label, message.score)
                )

    def summary(self, stream_id: str, t_s: float) -> str:
        st = self.streams[stream_id]
        ended = [a for a in st.truth if a.end_s <= t_s]
        truth = [Interval(a.start_s, a.end_s, a.label) for a in ended]
        matched = match_events(st.reported, truth, 0.5)
        settled = [i for i, a in enumerate(ended) if a.end_s <= t_s - SETTLE_S]
        missed = sum(i not in {j for _, j in matched} for i in settled)
        false = len(st.reported) - len(matched)
        return (
            f"summary {stream_id} at {t_s:.0f} s: {len(ended)} true actions ended, "
            f"{st.onsets} onsets, {len(st.reported)} actions closed, {len(matched)} matched, "
            f"{false} false, {missed} missed"
        )
