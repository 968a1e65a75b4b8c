# Set-up and everyday commands. `make train` and `make test` create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# CARLA towns used by the tests (CI: the shared folder next to the checkout); users' own towns work too.
CARLA_MAPS_PATH ?= $(abspath ../shared/carla-maps)

.PHONY: install system-deps train test server bench clean

install: $(VENV)/.installed

# torch first, pinned: its CPU build is what the machines here carry; unpinned, pip pulls a multi-GB CUDA build.
$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

# System tools the AWS tests drive for real (sshd and ssh, rsync, shellcheck). apt-get installs the missing
# ones (as root, else with sudo); when all are there this is a quick no-op; without apt, install them by hand.
SYSTEM_PACKAGES := openssh-server openssh-client rsync shellcheck

system-deps:
	@missing=""; for package in $(SYSTEM_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$package 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$package"; \
	done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if ! command -v apt-get >/dev/null; then \
	  echo "make system-deps: install$$missing with your package manager (the AWS tests need them)"; exit 1; fi; \
	sudo=""; [ "$$(id -u)" = 0 ] || sudo="sudo"; \
	echo "make system-deps: installing$$missing"; \
	$$sudo apt-get update -qq && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing

# dqn_config.yaml trains on CARLA's Town01 (from CARLA_MAPS_PATH), else on the generated GridCity (fallback_town).
train: install
	CARLA_MAPS_PATH=$(CARLA_MAPS_PATH) $(BIN)/python dqn_train.py dqn_config.yaml

test: install system-deps
	CARLA_MAPS_PATH=$(CARLA_MAPS_PATH) RAY_USAGE_STATS_ENABLED=0 $(BIN)/python -m pytest -q

server: install
	$(BIN)/python -m rllib_integration.embedded

bench: install
	CARLA_MAPS_PATH=$(CARLA_MAPS_PATH) $(BIN)/python benchmarks/server_throughput.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
