# Set-up and everyday commands. `make train` and `make test` create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# CARLA towns used by the tests (CI: the shared folder next to the checkout); users' own towns work too.
CARLA_MAPS_PATH ?= $(abspath ../shared/carla-maps)

.PHONY: install train test server bench clean

install: $(VENV)/.installed

# torch first, pinned: its CPU build is what the machines here carry; unpinned, pip pulls a multi-GB CUDA build.
$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

train: install
	$(BIN)/python dqn_train.py dqn_config.yaml

test: install
	CARLA_MAPS_PATH=$(CARLA_MAPS_PATH) RAY_USAGE_STATS_ENABLED=0 $(BIN)/python -m pytest -q

server: install
	$(BIN)/python -m rllib_integration.embedded

bench: install
	CARLA_MAPS_PATH=$(CARLA_MAPS_PATH) $(BIN)/python benchmarks/server_throughput.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
