#!/usr/bin/env bash
# Installs the servers tests/integration starts (Debian packages), unless present: GStreamer's
# RTSP server (it runs under the system interpreter /usr/bin/python3, which has python3-gi)
# the Mosquitto MQTT broker, a PostgreSQL server (the event store's shared database), and
# Chromium with its driver (the web view's browser tests).
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
have_postgres() { compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; }
if check && [ -x /usr/sbin/mosquitto ] && have_postgres && [ -x /usr/bin/chromium ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
echo "installing the GStreamer RTSP server, Mosquitto, PostgreSQL and Chromium for the integration tests (about a minute)..."
$SUDO apt-get update -q >/dev/null
$SUDO apt-get install -y -q --no-install-recommends \
  gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp python3-gi \
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad \
  gstreamer1.0-plugins-ugly mosquitto postgresql chromium >/dev/null
check || { echo "GStreamer RTSP server still unavailable after install" >&2; exit 1; }
[ -x /usr/sbin/mosquitto ] || { echo "mosquitto still unavailable after install" >&2; exit 1; }
have_postgres || { echo "PostgreSQL still unavailable after install" >&2; exit 1; }
[ -x /usr/bin/chromium ] || { echo "chromium still unavailable after install" >&2; exit 1; }
