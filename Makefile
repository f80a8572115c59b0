# robot_rl — every install step lives here, so a fresh clone needs only `make demo` / `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export MUJOCO_GL ?= egl
export PYTHONUNBUFFERED := 1

.PHONY: venv demo test bench clean

venv: $(STAMP)

# System libraries first (pyrealsense2 needs libusb; MuJoCo EGL rendering needs Mesa's EGL).
$(STAMP): requirements.txt setup.py setup.cfg
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  pkgs=""; for p in libusb-1.0-0 libegl1 libegl-mesa0 libgl1-mesa-dri; do \
	    dpkg -s $$p >/dev/null 2>&1 || pkgs="$$pkgs $$p"; done; \
	  if [ -n "$$pkgs" ]; then echo "apt: installing$$pkgs"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$pkgs >/dev/null) \
	    || echo "warning: apt install of$$pkgs failed; camera/rendering tests may fail"; fi; \
	fi
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (robot_rl needs Python 3.11)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt 2>&1 | grep -v '^WARNING: Location' ; test $${PIPESTATUS[0]} -eq 0
	$(PY) -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | grep -v '^WARNING: Location' ; test $${PIPESTATUS[0]} -eq 0
	@touch $(STAMP)

demo: venv
	$(VENV)/bin/robot-rl demo

test: venv
	$(PY) -m pytest -q tests

# Benchmarks print JSON lines; results also land in runs/bench/*.jsonl.
BENCHES := stream expert store policy learner control
bench: venv
	@mkdir -p runs/bench
	@set -e; for b in $(BENCHES); do echo "== bench/$$b.py"; $(PY) bench/$$b.py | tee runs/bench/$$b.jsonl; done

# Proves the package also builds as a ROS 2 ament_python package (colcon from the registry).
clean:
	rm -rf $(VENV) build install log *.egg-info
