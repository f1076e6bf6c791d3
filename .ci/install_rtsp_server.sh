#!/usr/bin/env bash
# Installs GStreamer's RTSP server (Debian packages) used by tests/integration, unless present.
# The server runs under the system interpreter /usr/bin/python3, which has python3-gi.
set -euo pipefail
check() {
  /usr/bin/python3 - <<'PY' 2>/dev/null
import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import Gst, GstRtspServer  # noqa: F401
Gst.init(None)
assert Gst.ElementFactory.find("x264enc") and Gst.ElementFactory.find("qtdemux")
PY
}
if check; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
echo "installing the GStreamer RTSP server for the integration tests (about 15 s)..."
$SUDO apt-get update -q >/dev/null
$SUDO apt-get install -y -q --no-install-recommends \
  gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp python3-gi \
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad \
  gstreamer1.0-plugins-ugly >/dev/null
check || { echo "GStreamer RTSP server still unavailable after install" >&2; exit 1; }
