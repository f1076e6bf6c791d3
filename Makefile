# Two entry points on a fresh clone: `make run` and `make test` (see README).
PYTHON ?= python3
VENV ?= .venv
CONSTRAINTS ?= constraints.txt
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint rtsp-server-deps clean

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c $(CONSTRAINTS) -e '.[dev,onnx]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/actstream run

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
