import dataclasses
import subprocess
from pathlib import Path

import pytest
import yaml

from engine.config import AppConfig, load_config
from engine.loader import ConfigError, config_to_dict, from_dict
from models.fastback_clip import FastBackConfig
from tests.conftest import CMD, scaled
from training.clips import load_clip_config
from training.config import load_train_config

ALL = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
TRAIN_CONFIGS = [p for p in ALL if p.name.startswith("train_")]
CONFIGS = [p for p in ALL if p not in TRAIN_CONFIGS]


def test_there_are_configs():
    assert {p.name for p in ALL} >= {"demo.yaml", "rtsp.yaml", "train_synthetic.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_file_loads(path):
    assert isinstance(load_config(path), AppConfig)


@pytest.mark.parametrize("path", TRAIN_CONFIGS, ids=lambda p: p.name)
def test_every_training_config_loads_and_trains_the_model_the_detector_runs(path):
    data = yaml.safe_load(path.read_text())
    if data.get("task") == "clips":
        assert isinstance(load_clip_config(data).model.fastback, FastBackConfig)
        return
    config = load_train_config(path)
    if config.model.input is not None:  # a signal model: one of the signal configs' models
        assert config.model in {load_config(p).model for p in CONFIGS}
        return
    demo = load_config(ALL[[p.name for p in ALL].index("demo.yaml")]).model
    if config.model.head.type == "faformer":  # the same model with the other head
        assert dataclasses.replace(config.model, head=demo.head) == demo
    else:
        assert config.model == demo


def test_demo_config_is_the_built_in_default_plus_the_bundled_weights():
    demo = load_config(ALL[[p.name for p in ALL].index("demo.yaml")])
    assert demo == dataclasses.replace(AppConfig(), weights=demo.weights)
    assert demo.weights == "configs/weights/demo.pt"


def test_unknown_key_names_the_key_path_and_the_known_keys(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  temporal:\n    lookbak: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = str(err.value)
    assert text.startswith(f"{path}: model.temporal.lookbak: unknown key; known: ")
    assert "lookback_frames" in text


@pytest.mark.parametrize(
    "override, message",
    [
        ("stream.timeout_s=abc", "stream.timeout_s: expected a number, got str 'abc'"),
        ("stream.realtime=3", "stream.realtime: expected true or false, got int 3"),
        ("model.head.window_frames=100", "model.head: window_frames 100 must be a multiple"),
        ("stream.rtsp_transport=sctp", "stream.rtsp_transport: expected one of ['tcp', 'udp']"),
        ("tracker.onset_threshold=1.5", "tracker: onset_threshold must be in [0, 1], got 1.5"),
        ("metrics.port=70000", "metrics: port must be in 0..65535, got 70000"),
        ("model.classes=[]", "model: classes must not be empty"),
        ("stream.timeout_s=-1", "stream: timeout_s must be positive, got -1.0"),
        ("nosuch=1", "nosuch: unknown key"),
        ("stream=1", "stream: expected a mapping, got int 1"),
        ("novalue", "--set 'novalue': expected KEY=VALUE"),
    ],
)
def test_bad_override_is_refused_with_its_key_path(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert message in str(err.value)


def test_overrides_parse_yaml_values_and_nest():
    c = load_config(
        None,
        [
            "tracker.onset_threshold=0.7",
            "metrics.port=null",
            "sources=[a.mp4, synthetic://x]",
            "model.head.stride_frames=4",
        ],
    )
    assert c.tracker.onset_threshold == 0.7
    assert c.metrics.port is None
    assert c.sources == ("a.mp4", "synthetic://x")
    assert c.model.head.stride_frames == 4


def test_integers_are_accepted_where_floats_are_expected():
    assert load_config(None, ["stream.timeout_s=2"]).stream.timeout_s == 2.0


def test_invalid_yaml_names_the_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  fps: [1,\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: invalid YAML at line \d"):
        load_config(path)


def test_missing_config_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "none.yaml")


def test_config_round_trips_through_plain_data():
    c = load_config(
        None,
        [
            "model.temporal.num_lookback_heads=2",
            "model.temporal.num_lookahead_heads=2",
            "model.temporal.lookahead_frames=3",
        ],
    )
    assert from_dict(AppConfig, config_to_dict(c)) == c


def test_configs_are_frozen():
    c = AppConfig()
    with pytest.raises(AttributeError):
        c.stream.timeout_s = 1.0  # type: ignore[misc]


# ---- #14 rows 2-5, 12, 13: config mistakes refused in one line, never a traceback ----------
@pytest.mark.parametrize(
    "override, message",
    [
        ("stream.timeout_s=.inf", "stream: timeout_s must be finite, got .inf"),
        ("stream.timeout_s=.nan", "stream.timeout_s: expected a number, got .nan"),
        (
            "stream.buffer_frames=99999999999999999999999999999999",
            "stream.buffer_frames: 99999999999999999999999999999999 is out of range",
        ),
    ],
)
def test_non_finite_and_huge_values_are_refused(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert message in str(err.value)


def test_exponent_notation_without_a_dot_is_a_number():
    assert load_config(None, ["stream.timeout_s=1e1"]).stream.timeout_s == 10.0


def test_binary_or_non_utf8_config_is_one_clear_error(tmp_path):
    for name, data in (
        ("bin.yaml", b"\x00\x01\x02stream: {}"),
        ("latin.yaml", "stream: {}  # caf\xe9".encode("latin-1")),
    ):
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(ConfigError, match="not a text config"):
            load_config(path)


def test_a_key_or_section_given_twice_is_refused(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text(
        "stream:\n  timeout_s: 3\ntracker:\n  onset_threshold: 0.4\nstream:\n  buffer_frames: 8\n"
    )
    with pytest.raises(ConfigError, match=r"line 5: 'stream' given twice"):
        load_config(path)
    path.write_text("tracker:\n  onset_threshold: 0.4\n  onset_threshold: 0.6\n")
    with pytest.raises(ConfigError, match="'onset_threshold' given twice"):
        load_config(path)


def test_config_mistakes_exit_2_with_one_line_and_no_traceback(tmp_path):
    path = tmp_path / "bin.yaml"
    path.write_bytes(b"\xff\xfe\x00garbage")
    for args in (["--config", str(path)], ["--set", "stream.timeout_s=.inf"]):
        result = subprocess.run(
            [*CMD, "run", "--random-init", *args],
            capture_output=True,
            text=True,
            timeout=scaled(60),
        )
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_a_broken_set_beside_an_option_names_what_the_user_typed():
    result = subprocess.run(
        [*CMD, "run", "--random-init", "--fast", "--set", "stream=5"],
        capture_output=True,
        text=True,
        timeout=scaled(60),
    )
    assert result.returncode == 2, result.stderr
    assert "stream: expected a mapping, got int 5" in result.stderr
    assert "realtime" not in result.stderr  # --fast's own translation is never blamed
