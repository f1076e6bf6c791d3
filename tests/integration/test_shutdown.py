"""Closing the detector ends every thread it started and closes open actions; the `actstream
run` process exits 0 within 5 s of SIGINT or SIGTERM in every state: importing torch, compiling
on a first start, steady state, a stream stuck on a frozen server."""

import signal
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import free_port, scaled
from tests.integration.helpers import (
    Running,
    ScriptedHead,
    connect_subscriber,
    drain,
    make_detector,
    scrape,
    small_config,
    wait_for_events,
)
from tests.integration.test_cli import SMALL

pytestmark = pytest.mark.integration


def test_close_joins_every_thread_and_ends_open_actions_as_shutdown(clip_mp4, rtsp_server):
    server = rtsp_server("--source", "testsrc")
    before = set(threading.enumerate())
    port = free_port()
    config = small_config(f"metrics.port={port}", "stream.buffer_frames=2")
    long_action = [(0.3, 1000.0, "spin", 0.9)]
    head = ScriptedHead({"file": long_action, "synth": long_action, "cam": long_action})
    # The file plays in real time into a 2-frame blocking buffer: its reader blocks in put().
    detector = make_detector(
        [f"file={clip_mp4}", "synth=synthetic://", f"cam={server.url}"],
        config,
        head,
        run_id="rs",
        metrics=True,
    )
    detector.metrics.serve("127.0.0.1", port)
    sub = connect_subscriber(detector.publisher.bound_endpoint)
    detector.start()
    stop = threading.Event()
    loop = threading.Thread(target=detector.run, args=(stop,))
    loop.start()
    wait_for_events(port, ("file", "synth", "cam"), "onset", "spin", "an action open on each")
    stop.set()
    loop.join(scaled(5))
    t0 = time.monotonic()
    detector.close()
    assert time.monotonic() - t0 < 5.0
    assert detector.threads_alive() == []
    leftover = [t.name for t in set(threading.enumerate()) - before if t.is_alive()]
    assert leftover == []
    messages = drain(sub)
    sub.close()
    for sid in ("file", "synth", "cam"):
        mine = [m for m in messages if m["stream"] == sid]
        onsets = [m for m in mine if m["type"] == "onset"]
        offsets = [m for m in mine if m["type"] == "offset"]
        assert len(onsets) == len(offsets) == 1, sid
        assert (
            offsets[0]["reason"] == "shutdown" and offsets[0]["event_id"] == onsets[0]["event_id"]
        )
        assert mine[-1]["type"] == "status" and mine[-1]["state"] == "stopped"


# ---- the `actstream run` process: SIGINT / SIGTERM exit 0 within 5 s in every state --------


def _loaded(pid: int, library: str) -> bool:
    try:
        return library in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def test_ctrl_c_while_torch_imports_exits_0_without_a_traceback():
    run = Running("--no-metrics", "--zmq", f"tcp://127.0.0.1:{free_port()}", *SMALL)
    # torch's native library is mapped part-way through `import torch`
    run.wait_until(lambda: _loaded(run.proc.pid, "libtorch"), "importing torch", 30)
    code, err, elapsed = run.stop(signal.SIGINT)
    assert code == 0, err
    assert "Traceback" not in err and "interrupted during start-up" in err
    assert elapsed < 5.0


def test_sigterm_during_the_first_start_compile_exits_0_and_leaves_nothing_half_written(
    tmp_path,
):
    engines = tmp_path / "engines"
    run = Running(
        "--no-metrics",
        "--zmq",
        f"tcp://127.0.0.1:{free_port()}",
        "--backend",
        "onnxruntime",
        env={"ACTSTREAM_CACHE_DIR": str(tmp_path)},
    )
    # the compile writes into a hidden folder of the cache, renamed when it is complete
    run.wait_until(
        lambda: engines.is_dir() and any(p.name.startswith(".") for p in engines.iterdir()),
        "compiling",
    )
    code, err, elapsed = run.stop(signal.SIGTERM)
    assert code == 0, err
    assert "Traceback" not in err and elapsed < 5.0
    left = list(engines.iterdir())
    assert all((p / "manifest.json").exists() for p in left), left  # complete, or nothing


def test_sigint_in_steady_state_with_the_bundled_model_exits_0_within_5_s():
    run = Running("--no-metrics", "--zmq", f"tcp://127.0.0.1:{free_port()}", "--backend", "torch")
    run.wait_until(lambda: "heartbeat" in run.topics(), "publishing")
    code, err, elapsed = run.stop(signal.SIGINT)
    assert code == 0, err
    assert elapsed < 5.0, f"exit took {elapsed:.1f} s"  # interpreter teardown included
    assert run.topics()[-1] == "status.demo.stopped"


def _decoded(port: int, stream: str) -> float:
    return scrape(port).get(("actstream_frames_decoded_total", (("stream", stream),)), 0.0)


def test_stop_with_a_stream_stuck_on_a_frozen_rtsp_server_takes_under_5_s(rtsp_server):
    server = rtsp_server("--source", "testsrc")
    port = free_port()
    run = Running(
        f"cam={server.url}",
        "ok=synthetic://",
        "--metrics-port",
        str(port),
        "--zmq",
        f"tcp://127.0.0.1:{free_port()}",
        "--set",
        "stream.timeout_s=20",
        *SMALL,
    )
    try:
        run.wait_until(
            lambda: {"status.cam.connected", "status.ok.connected"} <= set(run.topics()),
            "connected",
        )
        server.proc.send_signal(signal.SIGSTOP)  # the camera hangs, the connection stays open
        # frozen: the camera's decoded count stops moving (its reader now waits in a read)
        last, still = _decoded(port, "cam"), 0
        deadline = time.monotonic() + scaled(30)
        while still < 5 and time.monotonic() < deadline:
            time.sleep(0.1)
            now = _decoded(port, "cam")
            still, last = (still + 1 if now == last else 0), now
        assert still >= 5
        code, err, elapsed = run.stop(signal.SIGINT)
    finally:
        server.proc.send_signal(signal.SIGCONT)
    assert code == 0, err
    assert elapsed < 5.0, f"exit took {elapsed:.1f} s"
    statuses = [t for t in run.topics() if t.startswith("status.")]
    last_of = {t.split(".")[1]: t.split(".")[2] for t in statuses}
    assert last_of == {"cam": "stopped", "ok": "stopped"}, statuses
