# Two commands on a fresh machine: `make run` and `make test`.
# Each creates .venv and installs the pinned dependencies when they are missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test test-fast lint browser demo-model bench bench-peers reliability clean

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/ecosnap up

# Debian's chromium, which the page's browser test drives (tests/test_page.py).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@command -v chromium >/dev/null || { $(SUDO) apt-get update -qq && \
		$(SUDO) apt-get install -y -qq --no-install-recommends chromium; }

test: $(STAMP) browser
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

test-fast: $(STAMP) browser
	$(BIN)/python -m pytest -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The fault-injection suite, writing what it measured to docs/RELIABILITY.md.
reliability: $(STAMP)
	$(BIN)/python -m pytest tests/test_faults.py --reliability-report docs/RELIABILITY.md

# Rebuilds the shipped demo model from scratch, deterministically.
demo-model: $(STAMP)
	rm -rf var/demo-data
	$(BIN)/ecosnap demo-data var/demo-data
	$(BIN)/ecosnap train var/demo-data --output models/default.h5 --epochs 25 --version demo-1 \
		--description "Demo CNN trained on EcoSnap's procedurally drawn synthetic photos; not a model of real rubbish."

# BentoML, the benchmark's batching peer, in its own environment: never a dependency
# of the service (bench/peers/bentoml_service.py).
PEERS := .venv-bentoml
$(PEERS)/.installed-stamp: bench/peers/bentoml-requirements.lock
	$(PYTHON) -m venv $(PEERS)
	$(PEERS)/bin/pip install --quiet --disable-pip-version-check -r bench/peers/bentoml-requirements.lock
	touch $@

bench-peers: $(PEERS)/.installed-stamp

# The whole benchmark, peers included (see README, Performance).
bench: $(STAMP) bench-peers
	$(BIN)/python -m bench --eval-images 5000 --json var/bench.json

clean:
	rm -rf $(VENV) $(PEERS) var
