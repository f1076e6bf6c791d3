#!/usr/bin/python3
"""A real RTSP server for the integration tests, on GStreamer's gst-rtsp-server.

Runs under the system interpreter (/usr/bin/python3, which has python3-gi), not the venv.
Binds 127.0.0.1 only. Prints `READY rtsp://127.0.0.1:PORT/MOUNT` once listening.

    /usr/bin/python3 tests/rtsp_server.py --port 0 --source file --file clip.mp4
    /usr/bin/python3 tests/rtsp_server.py --port 0 --source testsrc [--user U --password P]

Sources: `file` serves an H.264 mp4 without re-encoding (qtdemux ! h264parse ! rtph264pay),
from its first frame for every client; `testsrc` is a live encoded test pattern.
The payloader uses config-interval=1: with -1, IDR frames made of several slices are split
into separate pictures by FFmpeg clients and every later frame decodes wrong.
"""

import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--mount", default="/test")
    ap.add_argument("--source", choices=["file", "testsrc"], default="testsrc")
    ap.add_argument("--file")
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--height", type=int, default=240)
    ap.add_argument("--fps", type=int, default=25)
    ap.add_argument("--user")
    ap.add_argument("--password", default="")
    a = ap.parse_args()
    Gst.init(None)

    pay = "rtph264pay name=pay0 pt=96 config-interval=1"
    if a.source == "file":
        if not a.file:
            print("ERROR: --source file needs --file", file=sys.stderr, flush=True)
            return 2
        launch = f"( filesrc location={a.file} ! qtdemux ! h264parse ! {pay} )"
    else:
        launch = (
            f"( videotestsrc is-live=true pattern=ball ! "
            f"video/x-raw,width={a.width},height={a.height},framerate={a.fps}/1 ! "
            f"x264enc tune=zerolatency speed-preset=ultrafast key-int-max={a.fps} bframes=0 ! "
            f"video/x-h264,profile=constrained-baseline ! {pay} )"
        )

    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(a.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch)
    factory.set_shared(False)
    if a.user:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "user")
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(a.user, a.password), token)
        server.set_auth(auth)
        perms = GstRtspServer.RTSPPermissions()
        for perm in (
            GstRtspServer.RTSP_PERM_MEDIA_FACTORY_ACCESS,
            GstRtspServer.RTSP_PERM_MEDIA_FACTORY_CONSTRUCT,
        ):
            perms.add_permission_for_role("user", perm, True)
        factory.set_permissions(perms)
    server.get_mount_points().add_factory(a.mount, factory)
    if server.attach(None) == 0:
        print(f"ERROR: cannot bind port {a.port}", file=sys.stderr, flush=True)
        return 2
    loop = GLib.MainLoop()
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, loop.quit)
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGINT, loop.quit)
    print(f"READY rtsp://127.0.0.1:{server.get_bound_port()}{a.mount}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
