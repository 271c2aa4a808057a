# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Debian packages the tests start as real peers (prometheus brings promtool; systemd brings
# systemd-analyze and systemd-sysusers for the unit and installer tests; gettext-base brings envsubst;
# faketime brings libfaketime, which steps one agent process's wall clock back in the fault tests).
# iproute2 brings ip, which brings up loopback in the collector tests' own network namespaces.
DEB_PACKAGES := prometheus shellcheck logrotate tmux prometheus-node-exporter systemd gettext-base curl faketime iproute2
DEB_COMMANDS := prometheus shellcheck logrotate tmux prometheus-node-exporter systemd-analyze envsubst curl faketime ip

# Amazon Linux 2023's system Python; CI runs the suite on it as well (make test-py39, separate venv).
PYTHON39 ?= $(firstword $(shell for p in python3.9 $(HOME)/.pyenv/versions/3.9.*/bin/python3.9; do \
  $$p -c 'import sys; sys.exit(sys.version_info[:2] != (3, 9))' >/dev/null 2>&1 && echo $$p; done))

.PHONY: check demo test test-py39 test-collector deps venv test-venv collector bench soak docs clean

# The test collector (adot/collector/): ADOT's upstream components built at each release in
# adot/collector/versions, for the end-to-end tests; never shipped to nodes. Needs Go 1.26 or newer.
GO_PATH_DIRS := $(PATH):/usr/local/go/bin
COLLECTOR_RELEASES := $(shell sed -e 's/\#.*//' adot/collector/versions)
COLLECTORS := $(foreach r,$(COLLECTOR_RELEASES),build/collector/$(r)/otelcol-efa)

build/collector/%/otelcol-efa: adot/collector/build.sh adot/collector/manifest.yaml $(wildcard adot/collector/replaces-*)
	PATH="$(GO_PATH_DIRS)" GOFLAGS=-buildvcs=false adot/collector/build.sh $* build/collector/$*

collector: $(COLLECTORS)

$(BIN)/otel-efa: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $@

venv: $(BIN)/otel-efa

$(VENV)/.test-deps: pyproject.toml $(BIN)/otel-efa
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

test-venv: $(VENV)/.test-deps

# Installs the Debian packages the tests need when a command is missing (root, or sudo).
deps:
	@missing=""; for c in $(DEB_COMMANDS); do command -v $$c >/dev/null 2>&1 || missing=1; done; \
	if [ -n "$$missing" ]; then \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  echo "installing Debian packages: $(DEB_PACKAGES)"; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $(DEB_PACKAGES) >/dev/null; \
	fi

demo: venv
	@echo "otel-efa on a simulated p5en.48xlarge: console + log (demo/efa_monitor.log) + Prometheus on :9464. Ctrl-C stops."
	$(BIN)/otel-efa run --simulate p5en.48xlarge --interval 5 --exporters console,log,prometheus \
	  --log-file demo/efa_monitor.log

# ruff and mypy first (0 findings, configured in pyproject.toml); the Python 3.9 leg skips them (CODE_CHECKS=).
CODE_CHECKS ?= yes
check: test-venv
	$(BIN)/ruff check .
	$(BIN)/mypy

# The suite on four xdist workers, then the end-to-end group in one process: its tests move the test process
# into network namespaces of its own, which an xdist worker does not survive. The 3.9 leg skips that group.
END_TO_END ?= yes
# Python processes start from cached bytecode: the suite starts hundreds of them (workers, agents, the CLI).
# Where the environment turns the caches off (PYTHONDONTWRITEBYTECODE), every one compiled otel_efa again
# and every worker rewrote every test module's asserts (collection: 7.1 s of CPU per worker, 3.3 s from
# the caches). __pycache__ is in .gitignore.
PYTEST := env -u PYTHONDONTWRITEBYTECODE $(BIN)/python -m pytest
test: deps test-venv collector
	$(if $(CODE_CHECKS),$(BIN)/ruff check . && $(BIN)/mypy)
	$(PYTEST) -m "not collector" $(PYTEST_ARGS)
	$(if $(END_TO_END),$(PYTEST) -m collector -n 0 $(PYTEST_ARGS))

# The end-to-end group alone: the agent through the test collector to AMP's and CloudWatch's stand-ins,
# and the head node's Prometheus (each test in a network namespace of its own).
test-collector: deps test-venv collector
	$(PYTEST) -m collector -n 0 $(PYTEST_ARGS)

# Python 3.9 runs the suite without the end-to-end group, which the default Python runs (make test).
test-py39:
	@test -n "$(PYTHON39)" || { echo "no Python 3.9 found: install one (pyenv install 3.9) or set PYTHON39=/path/to/python3.9"; exit 1; }
	$(MAKE) test PYTHON=$(PYTHON39) VENV=.venv39 CODE_CHECKS= END_TO_END= PYTEST_ARGS='$(PYTEST_ARGS)'

# collection_cycle takes seconds, compare_node_exporter about 2 minutes, agent_footprint about 6 (6 agents,
# 4/16/32 devices x 1/60 s, concurrently). node_exporter is a Debian package; the test extra brings the SDK
# exporters collection_cycle compares against and the OTLP receiver the others send to.
bench: deps test-venv
	$(BIN)/python benchmarks/collection_cycle.py
	$(BIN)/python benchmarks/agent_footprint.py
	$(BIN)/python benchmarks/compare_node_exporter.py

# The 10-minute soak at 1 s on a simulated p5.48xlarge (OTLP, Prometheus, log, CloudWatch to moto);
# exits 1 on RSS growth >= 1 MiB, fd growth or a missed interval. make test runs a 45 s form of it (0.25 s).
soak: test-venv
	$(BIN)/python benchmarks/soak.py --minutes 10

# The reference pages generated from the code (docs/metrics.md, docs/configuration.md); tests/test_docs.py
# fails while a committed page differs from what this writes.
docs: venv
	$(BIN)/otel-efa docs --write docs

clean:
	rm -rf $(VENV) .venv39 demo .pytest_cache build *.egg-info  # build/ holds the test collectors too
