"""Evidence clips and snapshots from a real RTSP stream: every action's clip arrives as a
`clip` message after its offset, decodes with PyAV, holds the source's own packets (codec
parameters equal to the stream's, frames bit-identical to the served file's), and covers
[onset - pre_s, offset + post_s] within one keyframe interval; its snapshot is the decision
frame at the source's resolution; the store and the HTTP API serve both."""

import json
import os
import signal
import urllib.request

import av
import numpy as np
import pytest

from tests.conftest import free_port, scaled, wait_until
from tests.integration.helpers import Running
from tests.integration.test_store import get, stored
from tests.media import scene_frames, write_h264_mp4

pytestmark = pytest.mark.integration

FPS, GOP, PRE_S, POST_S = 25, 25, 2.0, 1.5  # the served file: 1 s between keyframes
WIDTH, HEIGHT = 384, 288  # the source's resolution (the model sees 64 x 64)


def nal_units(extradata: bytes) -> set[bytes]:
    """SPS and PPS from H.264 extradata, either Annex B (RTSP) or avcC (mp4)."""
    if extradata[:1] == b"\x01":  # avcC: counted, 16-bit length-prefixed parameter sets
        units, i = set(), 6
        for count_mask in (0x1F, 0xFF):
            count = extradata[i - 1] & count_mask
            for _ in range(count):
                n = int.from_bytes(extradata[i : i + 2], "big")
                units.add(extradata[i + 2 : i + 2 + n])
                i += 2 + n
            i += 1
        return units
    # a NAL unit never ends in a zero byte: zeros around start codes are padding
    return {u.strip(b"\x00") for u in extradata.split(b"\x00\x00\x01") if u.strip(b"\x00")}


def codec_parameters(stream) -> tuple:
    ctx = stream.codec_context
    return (ctx.name, ctx.profile, ctx.width, ctx.height, ctx.pix_fmt, nal_units(ctx.extradata))


@pytest.fixture(scope="module")
def served_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("clips") / "scene.mp4"
    frames = scene_frames(12 * FPS, fps=FPS, width=WIDTH, height=HEIGHT, seed=5)
    return write_h264_mp4(path, frames, fps=FPS, gop=GOP), frames


def test_clips_and_snapshots_from_a_real_rtsp_stream(tmp_path, rtsp_server, served_file):
    path, _ = served_file
    with av.open(str(path)) as c:
        source_frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    server = rtsp_server("--source", "file", "--file", str(path))
    with av.open(server.url, options={"rtsp_transport": "tcp"}) as c:
        rtsp_codec = codec_parameters(c.streams.video[0])
    db, clips, port = tmp_path / "events.db", tmp_path / "clips", free_port()
    run = Running(
        "--config", "configs/demo.yaml", f"cam={server.url}", "--no-metrics", "--zmq",
        f"tcp://127.0.0.1:{free_port()}", "--store", str(db), "--clips", str(clips),
        "--http-port", str(port), "--set", f"clips.pre_s={PRE_S}", "--set",
        f"clips.post_s={POST_S}",
    )  # fmt: skip
    try:

        def messages() -> list[dict]:
            return [json.loads(line.split(" ", 1)[1]) for line in list(run.lines)]

        def first_pass() -> list[dict]:  # until the file's end, where the server hangs up
            got = messages()
            ends = [i for i, m in enumerate(got) if m.get("state") == "disconnected"]
            return got[: ends[0]] if ends else []

        def first_pass_clipped() -> bool:
            onsets = {m["event_id"] for m in first_pass() if m["type"] == "onset"}
            clipped = {m["event_id"] for m in messages() if m["type"] == "clip"}
            return bool(onsets) and onsets <= clipped

        run.wait_until(first_pass_clipped, "every action of one pass clipped", 180)
        onsets = {m["event_id"] for m in first_pass() if m["type"] == "onset"}
        code, _stderr, _ = run.stop(signal.SIGINT)
        assert code == 0, _stderr
        by_id: dict[str, dict[str, dict]] = {}
        for m in messages():
            if m.get("event_id") not in onsets:
                continue
            if m["type"] in ("onset", "offset", "clip"):
                by_id.setdefault(m["event_id"], {})[m["type"]] = m
        assert len(by_id) >= 4
        for eid, parts in by_id.items():
            onset, offset, clip = parts["onset"], parts["offset"], parts["clip"]
            assert clip["seq"] > offset["seq"], "a clip is announced after its offset"
            assert clip["reencoded"] is False and not list(clips.rglob("*.part"))
            with av.open(clip["clip_path"]) as c:
                stream = c.streams.video[0]
                assert codec_parameters(stream) == rtsp_codec
                frames = [f.to_ndarray(format="rgb24") for f in c.decode(stream)]
            assert frames[0].shape == (HEIGHT, WIDTH, 3)
            # The source's own pictures: the clip's frames are the served file's, bit for bit.
            first = next(i for i, f in enumerate(source_frames) if np.array_equal(f, frames[0]))
            assert first % GOP == 0, "a clip starts at a keyframe"
            for k, frame in enumerate(frames):
                assert np.array_equal(frame, source_frames[first + k]), (eid, k)
            span_s = len(frames) / FPS
            assert abs((clip["clip_end_s"] - clip["clip_start_s"]) - span_s) < 0.05
            want_from = onset["start_s"] - PRE_S
            assert clip["clip_start_s"] <= want_from + 1e-3 or first == 0
            assert clip["clip_start_s"] > want_from - GOP / FPS - 1e-3
            want_to = offset["end_s"] + POST_S
            if clip["ended"] == "complete":
                assert want_to - 0.05 <= clip["clip_end_s"] <= want_to + GOP / FPS
            else:  # the server hung up at the file's end
                assert clip["ended"] == "stream_ended" and first + len(frames) == len(source_frames)
            with av.open(clip["clip_path"]) as c:
                packets = [p for p in c.demux(video=0) if p.size]
            assert packets[0].is_keyframe and len(packets) == len(frames)
            # The snapshot: the decision frame, at the source's resolution.
            with av.open(clip["snapshot_path"]) as c:
                shot = next(c.decode(video=0)).to_ndarray(format="rgb24")
            assert shot.shape == (HEIGHT, WIDTH, 3)
            decision = first + round((onset["frame_s"] - clip["clip_start_s"]) * FPS)
            diffs = [
                np.abs(shot.astype(int) - source_frames[i].astype(int)).mean()
                for i in range(max(0, decision - 3), min(len(source_frames), decision + 4))
            ]
            assert diffs[min(3, decision)] == min(diffs) and min(diffs) < 3.0, diffs
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
    rows = stored(db)
    for eid, parts in by_id.items():
        assert rows[eid]["clip_path"] == parts["clip"]["clip_path"]
        assert rows[eid]["snapshot_path"] == parts["clip"]["snapshot_path"]


def test_the_api_serves_clips_and_snapshots_and_says_why_when_it_cannot(tmp_path, rtsp_server,
                                                                         served_file):  # fmt: skip
    path, _ = served_file
    server = rtsp_server("--source", "file", "--file", str(path))
    db, clips, port = tmp_path / "events.db", tmp_path / "clips", free_port()
    run = Running(
        "--config", "configs/demo.yaml", f"cam={server.url}", "--no-metrics", "--quiet",
        "--zmq", f"tcp://127.0.0.1:{free_port()}", "--store", str(db), "--clips", str(clips),
        "--http-port", str(port), "--set", "clips.post_s=0.5",
    )  # fmt: skip
    try:

        def a_clip_stored():
            try:
                code, rows = get(port, "/api/events?limit=50")
            except OSError:
                return None
            done = [r for r in rows if r["clip_path"]] if code == 200 else []
            return done[0] if done else None

        run.wait_until(a_clip_stored, "a clip in the store", 120)
        row = a_clip_stored()
        url = f"http://127.0.0.1:{port}/api/events/{row['event_id']}"
        with urllib.request.urlopen(f"{url}/clip.mp4", timeout=scaled(10)) as r:
            assert r.headers["content-type"] == "video/mp4"
            body = r.read()
        with open(row["clip_path"], "rb") as f:
            assert body == f.read()
        with urllib.request.urlopen(f"{url}/snapshot.jpg", timeout=scaled(10)) as r:
            assert r.headers["content-type"] == "image/jpeg" and r.read()[:2] == b"\xff\xd8"
        request = urllib.request.Request(f"{url}/clip.mp4", headers={"Range": "bytes=0-99"})
        with urllib.request.urlopen(request, timeout=scaled(10)) as r:  # browsers seek so
            assert r.status == 206 and r.read() == body[:100]
        code, found = get(port, "/api/events/no-such-id/clip.mp4")
        assert code == 404 and "no-such-id" in found["detail"]
        # An onset still open has no clip yet; a deleted clip is gone (410), both said so.
        for r in get(port, "/api/events?open=true")[1]:
            if not r["clip_path"]:
                code, found = get(port, f"/api/events/{r['event_id']}/clip.mp4")
                assert code == 404 and "post-roll" in found["detail"]
                break
        os.unlink(row["clip_path"])
        code, found = get(port, f"/api/events/{row['event_id']}/clip.mp4")
        assert code == 410 and "deleted" in found["detail"]
    finally:
        run.stop(signal.SIGINT)
    wait_until(lambda: run.proc.poll() is not None, "the detector gone")
