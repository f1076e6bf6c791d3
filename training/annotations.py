"""Annotations in the ActivityNet / ActionFormer JSON layout.

{"database": {VIDEO_ID: {"subset": "train" | "validation" | "test", "duration": s,
                         "fps": f, "annotations": [{"segment": [start_s, end_s],
                                                    "label": name, "label_id": i}]}}}
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


class AnnotationError(ValueError):
    """An annotation file that cannot be used; the message names it."""


@dataclass(frozen=True, slots=True)
class VideoAnnotation:
    """One video's ground truth. segments: ((start_s, end_s), ...); labels: class names."""

    video_id: str
    subset: str
    duration_s: float
    fps: float | None
    segments: tuple[tuple[float, float], ...]
    labels: tuple[str, ...]


def load_annotations(path: str | Path) -> tuple[list[VideoAnnotation], tuple[str, ...]]:
    """Reads an annotation file; returns its videos and its class names (by `label_id`)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        database = data["database"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise AnnotationError(f"{path}: not an ActivityNet-style annotation file ({exc})") from None
    videos, names = [], {}
    for vid, entry in sorted(database.items()):
        try:
            segs, labels = [], []
            for ann in entry.get("annotations", []):
                start, end = (float(x) for x in ann["segment"])
                if end <= start:
                    continue  # zero-length annotations exist in public sets; they cannot match
                segs.append((start, end))
                labels.append(str(ann["label"]))
                if "label_id" in ann:
                    names.setdefault(int(ann["label_id"]), str(ann["label"]))
            videos.append(
                VideoAnnotation(
                    video_id=vid,
                    subset=str(entry["subset"]).lower(),
                    duration_s=float(entry["duration"]),
                    fps=float(entry["fps"]) if entry.get("fps") else None,
                    segments=tuple(segs),
                    labels=tuple(labels),
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise AnnotationError(f"{path}: video {vid!r}: bad entry ({exc})") from None
    if names:
        classes = tuple(names[i] for i in sorted(names))
    else:
        classes = tuple(sorted({label for v in videos for label in v.labels}))
    return videos, classes


def write_annotations(
    path: str | Path, videos: list[VideoAnnotation], classes: tuple[str, ...]
) -> None:
    index = {name: i for i, name in enumerate(classes)}
    database = {
        v.video_id: {
            "subset": v.subset,
            "duration": round(v.duration_s, 4),
            "fps": v.fps,
            "annotations": [
                {"segment": [round(s, 4), round(e, 4)], "label": lab, "label_id": index[lab]}
                for (s, e), lab in zip(v.segments, v.labels, strict=True)
            ],
        }
        for v in videos
    }
    Path(path).write_text(json.dumps({"version": "actstream-1", "database": database}, indent=1))
