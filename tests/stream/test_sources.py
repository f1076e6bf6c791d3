import pytest

from stream.sources import (
    SourceError,
    SourceKind,
    av_open_args,
    parse_source,
    parse_sources,
    redact,
)


def test_file_source_needs_an_existing_non_empty_file(tmp_path):
    with pytest.raises(SourceError, match="no such file"):
        parse_source(str(tmp_path / "missing.mp4"))
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(SourceError, match="file is empty"):
        parse_source(str(empty))
    with pytest.raises(SourceError, match="not a regular file"):
        parse_source(str(tmp_path))


def test_file_source_is_named_after_its_stem(tmp_path):
    f = tmp_path / "front door.mp4"
    f.write_bytes(b"x")
    spec = parse_source(str(f))
    assert spec.kind is SourceKind.FILE and not spec.live and spec.stream_id == "front-door"


@pytest.mark.parametrize(
    "url, kind",
    [
        ("rtsp://cam.local:554/s1", SourceKind.RTSP),
        ("rtmp://host/live/key", SourceKind.RTMP),
        ("https://host/stream.m3u8", SourceKind.HTTP),
        ("udp://127.0.0.1:5000", SourceKind.UDP),
        ("synthetic://demo?seed=3", SourceKind.SYNTHETIC),
        ("/dev/video0", SourceKind.DEVICE),
    ],
)
def test_live_sources_are_recognised(url, kind):
    spec = parse_source(url)
    assert spec.kind is kind and spec.live


def test_explicit_stream_id_prefix():
    spec = parse_source("cam1=rtsp://10.0.0.1/s")
    assert spec.stream_id == "cam1" and spec.url == "rtsp://10.0.0.1/s"


@pytest.mark.parametrize("url", ["rtspx://host/x", "ftp://host/x.mp4", "gopher://x"])
def test_wrong_url_scheme_is_refused_with_the_supported_list(url):
    with pytest.raises(SourceError, match="unsupported URL scheme.*rtsp://"):
        parse_source(url)


def test_url_without_host_is_refused():
    with pytest.raises(SourceError, match="has no host"):
        parse_source("rtsp:///path")


def test_credentials_are_redacted_everywhere_but_the_url_opened():
    spec = parse_source("rtsp://admin:s3cret@10.0.0.5:554/live")
    assert spec.url == "rtsp://admin:s3cret@10.0.0.5:554/live"
    assert "s3cret" not in spec.display and "admin" not in spec.display
    assert spec.display == "rtsp://***@10.0.0.5:554/live"
    assert "s3cret" not in spec.stream_id
    assert redact("rtsp://10.0.0.5/live") == "rtsp://10.0.0.5/live"


def test_camera_options_come_from_the_query():
    spec = parse_source("/dev/video2?video_size=640x480&framerate=30&input_format=mjpeg")
    assert spec.url == "/dev/video2" and spec.stream_id == "video2"
    fmt, opts = av_open_args(spec, timeout_s=5)
    assert fmt == "v4l2"
    assert opts == {"video_size": "640x480", "framerate": "30", "input_format": "mjpeg"}
    with pytest.raises(SourceError, match="unknown camera option"):
        parse_source("/dev/video0?resolution=hd")


def test_rtsp_options_use_tcp_and_a_microsecond_timeout_never_stimeout():
    fmt, opts = av_open_args(parse_source("rtsp://h/s"), timeout_s=2.5)
    assert fmt is None
    assert opts["rtsp_transport"] == "tcp" and opts["timeout"] == "2500000"
    assert "stimeout" not in opts


def test_synthetic_options_are_checked():
    with pytest.raises(SourceError, match="unknown option"):
        parse_source("synthetic://?colour=red")


def test_repeated_names_get_suffixes_and_explicit_duplicates_are_refused():
    specs = parse_sources(["synthetic://", "synthetic://"])
    assert [s.stream_id for s in specs] == ["synthetic", "synthetic-2"]
    with pytest.raises(SourceError, match="used twice"):
        parse_sources(["a=synthetic://", "a=synthetic://?seed=2"])


def test_bad_stream_id_is_refused():
    with pytest.raises(SourceError, match="stream id"):
        parse_source("synthetic://", stream_id="1bad")


def test_stream_id_prefix_works_before_a_relative_file_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "a.mp4").write_bytes(b"x")
    spec = parse_source("door=clips/a.mp4")
    assert spec.stream_id == "door" and spec.url == "clips/a.mp4"


def test_http_urls_may_say_whether_they_are_files_or_live():
    auto = parse_source("http://cam.local/video.mp4")
    assert auto.live and "play" not in auto.params  # decided when opened (its duration)
    file = parse_source("https://u:secret@cam.local/clip.mp4#file")
    assert not file.live and file.url == "https://u:secret@cam.local/clip.mp4"
    assert file.display == "https://***@cam.local/clip.mp4"
    live = parse_source("http://cam.local/stream.ts#live")
    assert live.live and live.url == "http://cam.local/stream.ts"
    other = parse_source("http://cam.local/page#anchor")  # not ours: left as written
    assert other.url.endswith("#anchor") and other.live
