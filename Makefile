# Two entry points on a fresh clone: `make run` and `make test` (see README).
PYTHON ?= python3
VENV ?= .venv
CONSTRAINTS ?= constraints.txt
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint rtsp-server-deps demo-model event-quality clean

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c $(CONSTRAINTS) -e '.[dev,onnx,backbones]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/actstream run --config configs/demo.yaml --show-truth

# Reproduces the bundled model configs/weights/demo.pt and its evaluation (see README).
demo-model: $(STAMP)
	$(VENV)/bin/actstream synth data/synthetic --videos 300 --seed 0
	$(VENV)/bin/actstream --log-level info train configs/train_synthetic.yaml
	$(VENV)/bin/actstream --log-level info train configs/train_synthetic_head.yaml
	mkdir -p configs/weights && cp runs/stage2/last.pt configs/weights/demo.pt
	$(VENV)/bin/actstream eval configs/weights/demo.pt data/synthetic --no-streaming --out runs/eval_demo

# The decision layer chosen on fresh validation videos and measured on fresh test videos
# (seeds never used in training); see README "Event quality".
event-quality: $(STAMP)
	$(VENV)/bin/actstream synth data/val --videos 50 --seed 11 --split validation
	$(VENV)/bin/actstream synth data/test --videos 50 --seed 12 --split test
	$(VENV)/bin/actstream tune configs/weights/demo.pt data/val --subset all --out runs/tune
	$(VENV)/bin/actstream eval configs/weights/demo.pt data/test --subset all --out runs/eval_test

# The integration tests start a real RTSP server (GStreamer, from Debian packages).
rtsp-server-deps:
	bash .ci/install_rtsp_server.sh

test: $(STAMP) rtsp-server-deps
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
