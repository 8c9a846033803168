# The two commands: `make demo` runs the whole pipeline, `make test` runs the tests.
# Both install what they need on Debian/Ubuntu: the mosquitto and influxdb packages (and
# victoria-metrics, which backs the InfluxDB v2-API test path; chromium and chromium-driver for the
# edge console's browser tests) and a virtualenv in .venv.

PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEBS := mosquitto influxdb victoria-metrics
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DURATION ?= 0

.PHONY: demo test test-slow test-chaos test-all test-browser lint bench deps venv kernels foreign clean

demo: deps venv kernels
	$(BIN)/plantwire demo configs/demo --duration $(DURATION)

# kernels (CPU) and foreign (npm: network and disk) do not depend on each other: on a clean clone
# they run side by side.
test: deps venv
	$(MAKE) --no-print-directory -j2 kernels foreign
	$(BIN)/ruff check .
	NUMBA_CACHE_DIR=$(CURDIR)/$(NUMBA_CACHE) $(BIN)/python -m pytest -q

test-slow: deps venv foreign
	$(BIN)/python -m pytest -q -m slow

# The edge console in headless Chromium (Debian's chromium + chromium-driver) against a running edge and
# the simulated plant; screenshots land in tests/artifacts/. One short browser smoke is in `make test`.
test-browser: deps venv kernels
	$(BIN)/python -m pytest -q -m browser

test-chaos: deps venv
	$(BIN)/python -m pytest -q tests/chaos -m ''

test-all: deps venv foreign
	$(BIN)/python -m pytest -q -m ''

lint: venv
	$(BIN)/ruff check .

deps:
	@missing=""; \
	command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing="$$missing mosquitto"; \
	command -v influxd >/dev/null 2>&1 || [ -x /usr/bin/influxd ] || missing="$$missing influxdb"; \
	command -v victoria-metrics >/dev/null 2>&1 || [ -x /usr/bin/victoria-metrics ] || missing="$$missing victoria-metrics"; \
	command -v gcc >/dev/null 2>&1 || missing="$$missing gcc"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null 2>&1 || missing="$$missing chromium-driver"; \
	$(PY) -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
	  || missing="$$missing python3-dev"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

# OPC-UA and Modbus servers on other stacks (node-opcua, modbus-serial) that the discovery and edge tests
# run against: npm ci from the committed lock file when node_modules is missing or the lock changed;
# Debian's nodejs and npm when node is not installed. No install scripts run (the TCP servers need none).
FOREIGN := tests/foreign

foreign: $(FOREIGN)/node_modules/.installed

$(FOREIGN)/node_modules/.installed: $(FOREIGN)/package.json $(FOREIGN)/package-lock.json
	@command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || { \
	  echo "installing Debian packages: nodejs npm"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null; }
	cd $(FOREIGN) && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error
	touch $@

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	# The Sparkplug B host library the tests check the edge against pins paho-mqtt<2 but runs on 2.x
	# (tests/sparkplug_host.py); --no-deps keeps our paho-mqtt 2.
	$(BIN)/pip install -q --no-deps 'pysparkplug==0.6.1'
	touch $@

# The edge's kernels compiled ahead of time: the daemon then runs without numba (~145 MB less RSS).
# A failed build is not fatal: the daemon falls back to JIT and says so.
kernels: $(VENV)/.kernels
NUMBA_CACHE := .numba-cache

# The build runs with a numba cache of its own: with a working tree's older cache it exported 20 of the
# 34 signatures the daemon calls (the rest would run under JIT, ~100 MB more resident). That fresh cache,
# JIT code of every kernel the daemon calls, then becomes $(NUMBA_CACHE), which `make test` gives pytest:
# the tests load those kernels instead of compiling them again (~30 s of CPU on a clean clone).
# A reinstalled venv alone (pyproject.toml touched) does not rebuild when edge/_aot already holds the
# build for these sources, numba and Python (edge.jit.aot_module_name hashes them).
$(VENV)/.kernels: $(VENV)/.installed $(wildcard edge/kernels/*.py) edge/jit.py edge/kernelbuild.py
	@if [ "$?" = "$(VENV)/.installed" ] && PLANTWIRE_KERNELS=jit $(BIN)/python -c 'import sys; from edge.jit import \
	  aot_dir, aot_module_name, ARG_SPECS_SUFFIX as A; n = aot_module_name(); \
	  sys.exit(not ((aot_dir() / (n + A)).exists() and any(aot_dir().glob(n + ".cpython*"))))'; then \
	  echo "kernels: edge/_aot already holds the build for these sources"; \
	else \
	  cache=$$(mktemp -d $(CURDIR)/$(NUMBA_CACHE).XXXXXX); \
	  if NUMBA_CACHE_DIR=$$cache $(BIN)/plantwire kernels; then \
	    rm -rf $(NUMBA_CACHE) && mv $$cache $(NUMBA_CACHE); \
	  else \
	    echo "kernels: ahead-of-time build failed; the edge daemon will use numba JIT"; rm -rf $$cache $(NUMBA_CACHE); \
	  fi; \
	fi
	touch $@

bench: deps venv kernels
	$(BIN)/python bench/e2e.py --config configs/demo --duration 180 --rates 1:1,2:1,5:1,10:1 --naive-rates 1:1

clean:
	rm -rf $(VENV) state build *.egg-info edge/_aot $(FOREIGN)/node_modules $(NUMBA_CACHE)
