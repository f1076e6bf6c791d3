"""The event store: every onset, offset and stream status change the detector publishes,
kept in a database (`engine/store/events.py`), queried by `actstream events`."""
